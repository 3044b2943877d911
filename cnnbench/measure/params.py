"""Parameter counts: total, trainable, per top-level block, per layer type, and bytes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..results import Spec

__all__ = ["ParamCount", "layer_type", "measure"]

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


@dataclass(frozen=True)
class ParamCount:
    spec: Spec
    params_total: int  # every parameter element
    params_trainable: int  # elements with requires_grad
    params_by_block: dict[str, int]  # top-level child name → elements, in forward order
    params_by_layer_type: dict[str, int]  # "conv", "linear", "norm", "other" → elements
    bytes_fp32: int  # parameter storage at 4 bytes per element
    bytes_bf16: int  # parameter storage at 2 bytes per element


def measure(model: nn.Module, spec: Spec) -> ParamCount:
    total = sum(p.numel() for p in model.parameters())
    by_block = {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }
    by_type = {"conv": 0, "linear": 0, "norm": 0, "other": 0}
    for module in model.modules():
        by_type[layer_type(module)] += sum(p.numel() for p in module.parameters(recurse=False))
    return ParamCount(
        spec=spec,
        params_total=total,
        params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        params_by_block=by_block,
        params_by_layer_type=by_type,
        bytes_fp32=4 * total,
        bytes_bf16=2 * total,
    )
