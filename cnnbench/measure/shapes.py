"""Layer summaries (the chapter's ``layer_summary``, done properly) and minimum input size.

``summarize`` runs one real forward pass at batch 1 with hooks to record each row's output
shape, and takes each row's MACs from fvcore's per-module count (one fused multiply-add = 1).
``min_input_size`` finds the smallest square input a model accepts by shape inference alone:
the model is built and run on the meta device, so no memory is allocated and nothing computed.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

import torch
from torch import nn

from ..models import InputTooSmallError, create, get_spec
from ..models._common import leaf_tracker
from ..results import Spec
from ..results.types import MinInputSize
from .flops import analysis, example_input
from .workload import leaf_modules

__all__ = [
    "LayerRow",
    "LayerSummary",
    "MinInputSize",
    "summarize",
    "check_input_size",
    "min_input_size",
    "measure_unit",
]


@dataclass(frozen=True)
class LayerRow:
    name: str  # dotted module path ("b3.1")
    layer: str  # module class name ("Inception")
    output_shape: tuple[int, ...]  # per image, batch dimension dropped
    params: int  # parameter elements inside this module
    macs: int  # fvcore MACs inside this module at batch 1
    params_share: float  # params / model total
    macs_share: float  # macs / model total


@dataclass(frozen=True)
class LayerSummary:
    spec: Spec
    depth: int  # 1: top-level blocks; 2: their children; ...
    rows: tuple[LayerRow, ...]  # in execution order
    params_total: int
    macs_total: int  # fvcore, batch 1, one fused multiply-add = 1

    @property
    def gmacs_total(self) -> float:
        return self.macs_total / 1e9


def _rows_at_depth(model: nn.Module, depth: int) -> dict[str, nn.Module]:
    """Modules exactly ``depth`` levels down, plus leaves that end above that depth."""
    chosen = {}
    for name, module in model.named_modules():
        if not name:
            continue
        level = name.count(".") + 1
        is_leaf = not any(True for _ in module.children())
        if level == depth or (level < depth and is_leaf):
            chosen[name] = module
    return chosen


def summarize(model: nn.Module, spec: Spec, depth: int = 1) -> LayerSummary:
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    spec = Spec(**{**spec.__dict__, "batch_size": 1})
    x = example_input(spec, next(model.parameters()).device)
    targets = _rows_at_depth(model, depth)
    shapes: dict[str, tuple[int, ...]] = {}  # insertion order = execution order

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            shapes.pop(name, None)
            shapes[name] = tuple(output.shape[1:])

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in targets.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:  # removed before fvcore traces, or tracing would fire them again
            h.remove()
    try:
        with torch.no_grad():
            by_module = analysis(model, x).by_module()
    finally:
        model.train(was_training)
    params_total = sum(p.numel() for p in model.parameters())
    macs_total = int(by_module[""])
    rows = []
    for name, shape in shapes.items():
        module = targets[name]
        params = sum(p.numel() for p in module.parameters())
        macs = int(by_module.get(name, 0))
        rows.append(
            LayerRow(
                name=name,
                layer=type(module).__name__,
                output_shape=shape,
                params=params,
                macs=macs,
                params_share=params / params_total if params_total else 0.0,
                macs_share=macs / macs_total if macs_total else 0.0,
            )
        )
    return LayerSummary(spec, depth, tuple(rows), params_total, macs_total)


def check_input_size(name: str, size: int, **overrides) -> None:
    """Raise :class:`InputTooSmallError` if ``name`` cannot run on a ``size`` x ``size`` input.

    Built and run on the meta device: shapes are inferred, nothing is allocated or computed.
    """
    channels = overrides.get("in_channels", get_spec(name).in_channels)
    with torch.device("meta"):
        model = create(name, image_size=size, **overrides).eval()  # sized heads may fail here
        x = torch.empty(1, channels, size, size)
        with leaf_tracker(model) as tracker, torch.no_grad():
            try:
                model(x)
            except (RuntimeError, ValueError) as err:
                raise InputTooSmallError(size, tracker.last, str(err)) from None


def _reductions(name: str, size: int, stop_at: str, **overrides) -> tuple[str, ...]:
    """Layers that change the spatial side of a ``size`` input, up to ``stop_at`` (meta device)."""
    channels = overrides.get("in_channels", get_spec(name).in_channels)
    steps: list[str] = []
    with torch.device("meta"):
        model = create(name, image_size=size, **overrides).eval()

        def hook_for(layer_name: str):
            def hook(module, inputs, output):
                side_in, side_out = (
                    inputs[0].shape[-1],
                    output.shape[-1] if output.dim() == 4 else 1,
                )
                if side_in != side_out and inputs[0].dim() == 4:
                    k = getattr(module, "kernel_size", None)
                    st = getattr(module, "stride", None)
                    k = k if isinstance(k, (int, type(None))) else k[0]
                    st = st if isinstance(st, (int, type(None))) else st[0]
                    how = f" {k}x{k}/{st}" if k is not None and st is not None else ""
                    steps.append(f"{layer_name} {type(module).__name__}{how}: {side_in}→{side_out}")

            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in leaf_modules(model)]
        try:
            with torch.no_grad():
                model(torch.empty(1, channels, size, size))
        finally:
            for h in handles:
                h.remove()
    if stop_at:
        cut = next((i for i, s in enumerate(steps) if s.startswith(stop_at + " ")), None)
        steps = steps[: cut + 1] if cut is not None else steps
    return tuple(steps)


def min_input_size(name: str, *, limit: int = 4096, **overrides) -> MinInputSize:
    """Smallest square input ``name`` runs on, by bisection over sizes with shape inference.
    Kept per process for a registered model as registered (a plan asks for each model's twice,
    the run's size check again).

    Valid sizes are upward closed for these networks (every conv and pool output side is a
    non-decreasing function of its input side), which is what makes bisection exact.
    """

    if not overrides:
        return _min_input_size_cached(name, get_spec(name), limit)
    return _min_input_size(name, limit, **overrides)


@functools.lru_cache(maxsize=256)
def _min_input_size_cached(name: str, spec, limit: int) -> MinInputSize:
    # keyed by the spec too: a model registered again under the same name is searched again
    return _min_input_size(name, limit)


def _min_input_size(name: str, limit: int, **overrides) -> MinInputSize:
    def fails(size: int) -> InputTooSmallError | None:
        try:
            check_input_size(name, size, **overrides)
        except InputTooSmallError as err:
            return err
        return None

    hi = get_spec(name).input_size
    while fails(hi):
        if hi >= limit:
            raise ValueError(f"'{name}' runs on no input up to {limit}x{limit}")
        hi *= 2
    lo = 0  # invariant: lo fails (0 by convention), hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            lo = mid
        else:
            hi = mid
    below = fails(hi - 1) if hi > 1 else None
    layer = below.layer if below else ""
    return MinInputSize(
        model=name,
        min_size=hi,
        failing_layer=layer,
        failure=below.detail if below else "",
        reductions=_reductions(name, hi, layer, **overrides),
    )


def measure_unit(spec: Spec, ctx) -> MinInputSize:
    """The harness entry: bisection on the meta device (no memory, no arithmetic)."""
    return min_input_size(spec.model)
