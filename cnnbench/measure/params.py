"""Parameter counts: total, trainable, per top-level block, per layer type, and bytes."""

from __future__ import annotations

from torch import nn

from ..models import create
from ..results import Spec
from ..results.types import ParamCount

__all__ = ["ParamCount", "layer_type", "measure", "measure_unit"]

_NORM = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def layer_type(module: nn.Module) -> str:
    """The coarse kind of a leaf layer used in per-type breakdowns."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORM):
        return "norm"
    return "other"


def measure(model: nn.Module, spec: Spec) -> ParamCount:
    total = sum(p.numel() for p in model.parameters())
    by_block = {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }
    by_type = {"conv": 0, "linear": 0, "norm": 0, "other": 0}
    for module in model.modules():
        by_type[layer_type(module)] += sum(p.numel() for p in module.parameters(recurse=False))
    return ParamCount(
        params_total=total,
        params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        params_by_block=by_block,
        params_by_layer_type=by_type,
        bytes_fp32=4 * total,
        bytes_bf16=2 * total,
    )


def measure_unit(spec: Spec, ctx) -> ParamCount:
    """The harness entry: counted on a fresh eager model on the CPU (counts are device-free)."""
    return measure(create(spec.model, image_size=spec.image_size), spec)
