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
    "compiled",
    "dynamo_counters",
    "grad_scaler",
    "largest_tensor_elements",
    "reset_compiler",
    "build_model",
    "example_input",
    "leaf_modules",
    "loss_fn",
    "make_optimizer",
    "memory_format",
    "train_step",
]

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, dtype: str, cast: str | None = "autocast"):
    """bf16/fp16 autocast, or nothing: for fp32, and for a model whose weights were cast
    (``cast="weights"``: the model and its input are already in ``dtype``)."""
    if dtype == "fp32" or cast == "weights":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[dtype])


def grad_scaler(device: torch.device, dtype: str):
    """fp16 training needs loss scaling (small gradients underflow in fp16); bf16 and fp32 do
    not. A ``torch.amp.GradScaler`` for fp16, else None."""
    if dtype != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def memory_format(spec: Spec) -> torch.memory_format:
    return torch.channels_last if spec.channels_last else torch.contiguous_format


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of every module without children, in registration order."""
    return [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def _weights_dtype(spec: Spec) -> torch.dtype:
    return TORCH_DTYPES[spec.dtype] if spec.cast == "weights" else torch.float32


def build_model(spec: Spec) -> nn.Module:
    """``spec.model`` built at ``spec.image_size``, on its device, in its memory format (and its
    dtype when the spec casts weights)."""
    model = create(spec.model, image_size=spec.image_size)
    return model.to(device=torch.device(spec.device), dtype=_weights_dtype(spec),
                    memory_format=memory_format(spec))  # fmt: skip


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
    x = x.to(device if device is not None else spec.device, dtype=_weights_dtype(spec))
    return x.contiguous(memory_format=memory_format(spec))


def largest_tensor_elements(spec: Spec) -> int:
    """Elements per image of the largest tensor a forward pass of ``spec.model`` builds (a leaf
    layer's input or output), from one forward at batch 1."""
    import dataclasses

    one = dataclasses.replace(spec, batch_size=1, mode="inference", cuda_graph=False, compiled=False)
    w = build(one)
    largest = 0

    def hook(_m, inputs, output):
        nonlocal largest
        for t in (*inputs, output):
            if torch.is_tensor(t):
                largest = max(largest, t.numel())

    handles = [m.register_forward_hook(hook) for _, m in leaf_modules(w.model)]
    try:
        w.forward()
    finally:
        for h in handles:
            h.remove()
    return largest


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
    scaler=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: forward under autocast, loss, backward, optimizer step; (loss, logits). With a
    ``scaler`` (fp16: :func:`grad_scaler`) the loss is scaled for backward and the step skipped
    where gradients overflowed, as ``torch.amp`` prescribes."""
    opt.zero_grad(set_to_none=True)
    with autocast(x.device, dtype):
        logits = run(x)
        loss = loss_fn(logits, labels, label_smoothing)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
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
    scaler: torch.amp.GradScaler | None = None  # fp16 training: loss scaling
    _replay: Callable[[], torch.Tensor] | None = None  # the captured CUDA graph's replay

    @property
    def device(self) -> torch.device:
        return self.x.device

    def forward(self) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.spec.dtype, self.spec.cast):
            return self.run(self.x)

    def train_step(self) -> torch.Tensor:
        return train_step(self.run, self.optimizer, self.x, self.labels, dtype=self.spec.dtype,
                          scaler=self.scaler)[0]  # fmt: skip

    def graph_forward(self) -> Callable[[], torch.Tensor]:
        """The forward captured once into a CUDA graph; the callable replays it (same input
        buffer, no per-kernel launch from Python). Warm-up runs on a side stream first, as
        ``torch.cuda.graphs`` requires."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.forward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.forward()

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay

    @property
    def step(self) -> Callable[[], torch.Tensor]:
        """The callable a harness times or runs: forward or train_step, by ``spec.mode``."""
        if self.spec.mode == "inference" and self.spec.cuda_graph:
            if self._replay is None:  # captured once per workload
                self._replay = self.graph_forward()
            return self._replay
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
        model.to(device=device, dtype=_weights_dtype(spec), memory_format=memory_format(spec))
    model.train(spec.mode == "train")
    x = example_input(spec, device)
    labels = torch.randint(0, get_spec(spec.model).num_classes, (spec.batch_size,), device=device)
    run = compiled(model) if spec.compiled else model
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum)
    scaler = grad_scaler(device, spec.dtype) if spec.mode == "train" else None
    return Workload(spec, model, run, x, labels, opt, scaler)


def compiled(model: nn.Module) -> Callable:
    """``torch.compile`` for one unit, static (``dynamic=False``): a batch that Dynamo has not
    seen fails its shape guard and compiles a graph of its own (never a dynamic-shape graph that
    later batches reuse); a new copy of a model at a shape seen before reuses that graph (Dynamo
    inlines nn.Module and guards on the class, not the instance). Dynamo is reset once per model
    by :func:`reset_compiler`, not here. Its counters (and the log of failed guards) are cleared,
    so that :func:`dynamo_counters` says afterwards what this unit made Dynamo do."""
    import torch._dynamo
    from torch._dynamo import utils

    utils.counters.clear()
    utils.guard_failures.clear()
    return torch.compile(model, dynamic=False)


# each batch × mode a model worker compiles is one more entry in the cache of the model's frame;
# past torch's default limit (8) Dynamo would run the frame eagerly while the record says compiled
RECOMPILE_LIMIT = 1024


def reset_compiler() -> None:
    """A model worker's fresh start for ``torch.compile``: Dynamo's caches emptied (a new model
    needs its own graphs), and its per-frame cache limit raised past the shapes one model's
    units compile (a full sweep: ~17 batches in each mode). Should a frame still reach the
    limit, compiling fails (an error record) rather than silently falling back to eager."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    torch._dynamo.config.accumulated_recompile_limit = RECOMPILE_LIMIT
    torch._dynamo.config.fail_on_recompile_limit_hit = True


def dynamo_counters() -> dict[str, int]:
    """What Dynamo did since :func:`compiled`: frames it compiled and gave up on (a frame it gave
    up on runs eagerly), graphs, graph breaks, and recompilations (each failed guard of a cached
    frame is one; past the cache-size limit a frame stops being compiled)."""
    from torch._dynamo import utils

    frames = utils.counters["frames"]
    return {
        "frames_compiled": int(frames.get("ok", 0)),
        "frames_failed": int(frames.get("total", 0) - frames.get("ok", 0)),
        "graphs": int(utils.counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(utils.counters["graph_break"].values())),
        "recompiles": int(sum(len(v) for v in getattr(utils, "guard_failures", {}).values())),
    }
