"""Multiply-accumulate counts with fvcore, cross-checked by ``torch.utils.flop_counter``.

Convention (fvcore's, and torchvision's "GFLOPS" column): **one fused multiply-add counts once**,
so the numbers here are MACs and are labelled ``gmacs``. Bias additions, ReLU, pooling and
concatenation count zero; ``aten::max_pool2d`` has no fvcore handler and is kept in
``unsupported_ops`` rather than hidden. Counting runs on an eager, uncompiled model in eval mode
(fvcore traces with TorchScript, which compiled modules break: fvcore#137, #150).

The cross-check: ``FlopCounterMode`` counts 2 FLOPs per multiply-add on convolutions and matrix
products only, so its forward total / 2 must equal fvcore's convolution + linear count. It also
counts a whole training step (forward + backward), which fvcore cannot.
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import create
from ..results import Spec
from ..results.types import FlopCount, LayerCost
from . import workload

with warnings.catch_warnings():
    # fvcore.nn's package import runs torch.jit.script on a focal loss we never use, and
    # torch >= 2.10 warns that TorchScript is deprecated; the FLOP counter itself is unaffected.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

__all__ = [
    "conv_work_macs",
    "count_macs",
    "FlopCount",
    "CONV_LINEAR_OPS",
    "analysis",
    "example_input",
    "layer_table",
    "measure",
    "measure_unit",
    "train_step_flops",
]

# fvcore operator names whose count is a convolution or a matrix product.
CONV_LINEAR_OPS = frozenset({"conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum"})


def example_input(spec: Spec, device: str | torch.device = "cpu") -> torch.Tensor:
    """The same input on every call (seeded): counts and layer tables are reproducible."""
    return workload.example_input(spec, device, generator=torch.Generator().manual_seed(0))


def analysis(model: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    """fvcore's analysis of ``model(x)``; its per-op warnings are off (we keep them as data)."""
    return (
        FlopCountAnalysis(model, x)
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
        .tracer_warnings("none")
    )


def train_step_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's count for forward + cross-entropy + backward (2 FLOPs per MAC).

    Gradients are left in ``model``; callers that care zero them.
    """
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    with FlopCounterMode(display=False) as counter:
        workload.loss_fn(model(x), labels).backward()
    return counter.get_total_flops()


def _kernel(size) -> str | None:
    if isinstance(size, int):
        return f"{size}x{size}"
    return "x".join(map(str, size)) if isinstance(size, tuple) else None


def layer_table(model: nn.Module, x: torch.Tensor, by_module) -> tuple[LayerCost, ...]:
    """Per leaf layer, in execution order: what the roofline and the exercise-5 tables need.

    ``macs`` (fvcore), ``params``, ``weight_bytes``, ``input_bytes`` and ``output_bytes`` are per
    image at fp32 (the batch dimension divided out); ``kernel`` is "KxK" for convolutions.
    """
    batch = x.shape[0]
    rows: dict[str, LayerCost] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            ins = sum(i.numel() for i in inputs if torch.is_tensor(i)) * 4 // batch
            outs = output.numel() * 4 // batch if torch.is_tensor(output) else 0
            params = sum(p.numel() for p in module.parameters(recurse=False))
            kernel = getattr(module, "kernel_size", None)
            rows[name] = LayerCost(
                name=name,
                layer=type(module).__name__,
                kernel=_kernel(kernel),
                macs=int(by_module.get(name, 0)) // batch,
                params=params,
                weight_bytes=4 * params,
                input_bytes=ins,
                output_bytes=outs,
            )

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in workload.leaf_modules(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return tuple(r for r in rows.values() if r.params or r.macs or r.layer.endswith("Pool2d"))


def _taps_in_bounds(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Along one axis: the kernel taps that land on the input (not on padding), summed over every
    output position."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return sum(
        sum(1 for j in range(kernel) if 0 <= o * stride - padding + j * dilation < size)
        for o in range(max(out, 0))
    )


def conv_work_macs(conv: nn.Conv2d, input_shape) -> int:
    """Multiply-adds a 2-D convolution does on real data at ``input_shape`` (N, C, H, W): only the
    taps that touch the input. fvcore counts every tap of every output, padding included, which
    is the model's nominal cost; on small maps with padding 1 a 3x3 kernel does much less (a 7x7
    map: (19/21)^2 = 82% of its taps)."""
    if isinstance(conv.padding, str):  # "same" / "valid": as many as the module pads
        raise ValueError(f"string padding {conv.padding!r} is not counted; give it in pixels")
    n, _, h, w = input_shape
    per_axis = [
        _taps_in_bounds(size, k, s, p, d)
        for size, k, s, p, d in zip((h, w), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                                    strict=True)
    ]  # fmt: skip
    return n * conv.out_channels * (conv.in_channels // conv.groups) * per_axis[0] * per_axis[1]


def count_macs(model: nn.Module, spec: Spec) -> int:
    """fvcore's total alone (eval mode, no cross-check): what a listing needs."""
    was_training = model.training
    try:
        with torch.no_grad():
            return int(analysis(model.eval(), example_input(spec)).total())
    finally:
        model.train(was_training)


def measure(model: nn.Module, spec: Spec) -> FlopCount:
    was_training = model.training
    x = example_input(spec, next(model.parameters()).device)
    try:
        model.eval()
        with torch.no_grad():
            fv = analysis(model, x)
            total = int(fv.total())
            by_operator = dict(fv.by_operator())
            by_module = fv.by_module()
            unsupported = dict(Counter(fv.unsupported_ops()))
            with FlopCounterMode(display=False) as counter:
                model(x)
            layers = layer_table(model, x, by_module)
        forward_flops = counter.get_total_flops()
        model.train()
        train_flops = train_step_flops(model, x)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    conv_linear = sum(v for k, v in by_operator.items() if k in CONV_LINEAR_OPS)
    return FlopCount(
        macs=total,
        gmacs=total / 1e9,
        macs_by_block={name: int(by_module[name]) for name, _ in model.named_children()},
        macs_by_operator={k: int(v) for k, v in by_operator.items()},
        unsupported_ops=unsupported,
        conv_linear_macs=int(conv_linear),
        flopcounter_forward_flops=int(forward_flops),
        flopcounter_train_step_flops=int(train_flops),
        crosscheck_ratio=(forward_flops / 2) / conv_linear if conv_linear else float("nan"),
        layers=layers,
    )


def measure_unit(spec: Spec, ctx) -> FlopCount:
    """The harness entry: a fresh eager model on the CPU (fvcore traces; counts are device-free)."""
    return measure(create(spec.model, image_size=spec.image_size), spec)
