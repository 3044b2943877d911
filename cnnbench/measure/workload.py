"""The one place that builds what a harness measures: the model on its device, in its dtype and
memory format, compiled or not; its inputs; the loss; the optimizer; the forward pass and the
training step. Latency, memory (measured and analytic), roofline, training, FLOP counting and
the benchmarks all take their workload from here, so they measure the same thing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create, get_spec
from ..results import Spec

__all__ = [
    "TORCH_DTYPES",
    "Workload",
    "autocast",
    "build",
    "build_model",
    "example_input",
    "leaf_modules",
    "loss_fn",
    "make_optimizer",
    "memory_format",
    "train_step",
]

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, dtype: str):
    """bf16/fp16 autocast, or nothing for fp32 (weights stay fp32 either way)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[dtype])


def memory_format(spec: Spec) -> torch.memory_format:
    return torch.channels_last if spec.channels_last else torch.contiguous_format


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of every module without children, in registration order."""
    return [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def build_model(spec: Spec) -> nn.Module:
    """``spec.model`` built at ``spec.image_size``, on its device, in its memory format."""
    model = create(spec.model, image_size=spec.image_size)
    return model.to(device=torch.device(spec.device), memory_format=memory_format(spec))


def example_input(
    spec: Spec, device: str | torch.device | None = None, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A batch of pixels in [0, 1] at ``spec``'s size, channel count and memory format.

    Timing does not depend on pixel values; with a seeded ``generator`` the batch is the same
    on every call (counting wants that).
    """
    channels = get_spec(spec.model).in_channels
    shape = (spec.batch_size, channels, spec.image_size, spec.image_size)
    x = torch.rand(*shape, generator=generator)
    x = x.to(device if device is not None else spec.device)
    return x.contiguous(memory_format=memory_format(spec))


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0):
    """The chapter's loss: cross-entropy on logits (label smoothing where a variant asks)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def make_optimizer(
    params, name: str = "sgd", lr: float = 0.01, momentum: float = 0.0
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def train_step(
    run: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    dtype: str = "fp32",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: forward under autocast, loss, backward, optimizer step; (loss, logits)."""
    opt.zero_grad(set_to_none=True)
    with autocast(x.device, dtype):
        logits = run(x)
        loss = loss_fn(logits, labels, label_smoothing)
    loss.backward()
    opt.step()
    return loss, logits


@dataclass
class Workload:
    """A model ready to run ``spec``: on its device, its inputs beside it, its step chosen by
    ``spec.mode`` ("inference": eval forward under inference_mode; "train": a whole step)."""

    spec: Spec
    model: nn.Module  # eager, on the device, in the memory format
    run: Callable[[torch.Tensor], torch.Tensor]  # the model, or torch.compile of it
    x: torch.Tensor
    labels: torch.Tensor
    optimizer: torch.optim.Optimizer

    @property
    def device(self) -> torch.device:
        return self.x.device

    def forward(self) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.spec.dtype):
            return self.run(self.x)

    def train_step(self) -> torch.Tensor:
        return train_step(self.run, self.optimizer, self.x, self.labels, dtype=self.spec.dtype)[0]

    @property
    def step(self) -> Callable[[], torch.Tensor]:
        """The callable a harness times or runs: forward or train_step, by ``spec.mode``."""
        if self.spec.mode == "inference":
            return self.forward
        if self.spec.mode == "train":
            return self.train_step
        raise ValueError(f"mode must be 'inference' or 'train', got {self.spec.mode!r}")


def build(
    spec: Spec,
    *,
    model: nn.Module | None = None,
    optimizer: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.0,
) -> Workload:
    """The workload of ``spec`` (a given ``model`` is moved in place instead of built afresh).

    The training step uses plain SGD at ``lr`` unless told otherwise. The model is left in the
    mode its step needs (eval for inference, train for a training step).
    """
    device = torch.device(spec.device)
    if model is None:
        model = build_model(spec)
    else:
        model.to(device=device, memory_format=memory_format(spec))
    model.train(spec.mode == "train")
    x = example_input(spec, device)
    labels = torch.randint(0, get_spec(spec.model).num_classes, (spec.batch_size,), device=device)
    run = torch.compile(model) if spec.compiled else model
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum)
    return Workload(spec, model, run, x, labels, opt)
