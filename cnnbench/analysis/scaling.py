"""Data-parallel scaling as a finding: efficiency per world size, exposed communication against
a ring all-reduce's prediction, and whether gradient bytes (exercise 4's parameters as exercise
5's interconnect traffic) order the networks' efficiencies beyond the noise of their steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..results.types import ScalingPoint, ScalingResult
from .frames import Frames, ok_records, relative_change

__all__ = ["ScaledModel", "Scaling", "ScalingRow", "WeakScaling", "scaling", "weak_scaling"]

# exposed communication within this factor of the bandwidth prediction is "close" to it
COMM_CLOSE = (0.7, 1.3)


@dataclass(frozen=True)
class ScalingRow:
    """One world size of one model's scaling record."""

    model: str
    image_size: int
    backend: str
    grad_bytes: int
    point: ScalingPoint


@dataclass(frozen=True)
class ScaledModel:
    """A model's weak-scaling point at its largest world size, and what it costs."""

    model: str
    backend: str
    grad_bytes: int
    point: ScalingPoint
    efficiency_bounds: tuple[float, float]  # from both medians' 95% intervals; ±inf: unknown
    compute_change: float | None  # no_sync step at this size against one rank; None: no 1 rank
    exposed_share: float  # exposed communication (at least 0) over the step
    comm: str  # exposed against predicted: "above", "close" (COMM_CLOSE) or "below"


@dataclass(frozen=True)
class WeakScaling:
    """Every network's weak scaling at its largest world size, most efficient first."""

    models: tuple[ScaledModel, ...]
    bytes_verdict: str | None  # "yes", "no", "noise" (:func:`_bytes_verdict`); None: one network
    heaviest: ScaledModel  # the network with the most gradient bytes

    @property
    def world_size(self) -> int:
        """The most efficient network's largest world size (the one the answer names)."""
        return self.models[0].point.world_size


@dataclass(frozen=True)
class Scaling:
    """The scaling finding; ``rows`` empty without scaling records, ``weak`` None without a weak
    point beyond one rank."""

    rows: tuple[ScalingRow, ...]
    weak: WeakScaling | None


def _one_rank(v: ScalingResult, p: ScalingPoint) -> ScalingPoint | None:
    return next((q for q in v.points if q.kind == p.kind and q.world_size == 1), None)


def _efficiency_interval(v, p) -> tuple[float, float]:
    """Bounds of ``p``'s efficiency from the 95% intervals of its median step and of the median
    step at one rank; unbounded when an interval is missing (each world size is timed in one
    process, which holds no interval between processes): no ordering is then claimed."""
    one = _one_rank(v, p)
    parts = (p.step_ms_ci_low, p.step_ms_ci_high, getattr(one, "step_ms_ci_low", None),
             getattr(one, "step_ms_ci_high", None))  # fmt: skip
    if one is None or any(x is None for x in parts):
        return -math.inf, math.inf
    return (p.efficiency * p.step_ms_p50 / p.step_ms_ci_high * one.step_ms_ci_low / one.step_ms_p50,
            p.efficiency * p.step_ms_p50 / p.step_ms_ci_low * one.step_ms_ci_high / one.step_ms_p50)  # fmt: skip


def _bytes_verdict(best: list) -> str:
    """Do gradient bytes order the efficiencies of (model, result, point)? "yes" only when every
    network with more bytes is less efficient beyond both intervals, "no" when one with more
    bytes is more efficient beyond them, else "noise"."""
    ranked = sorted(best, key=lambda t: t[1].grad_bytes)
    bounds = [_efficiency_interval(v, p) for _, v, p in ranked]
    pairs = [(bounds[i], bounds[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))
             if ranked[i][1].grad_bytes < ranked[j][1].grad_bytes]  # fmt: skip
    if any(more[0] > fewer[1] for fewer, more in pairs):
        return "no"
    if pairs and all(fewer[0] > more[1] for fewer, more in pairs):
        return "yes"
    return "noise"


def _comm(p: ScalingPoint) -> str:
    """Exposed communication against the ring all-reduce's bandwidth prediction."""
    low, high = COMM_CLOSE
    if p.exposed_comm_ms > high * p.predicted_comm_ms:
        return "above"  # per-message latency and synchronisation add to the bandwidth bound
    return "close" if p.exposed_comm_ms >= low * p.predicted_comm_ms else "below"


def _scaled(model: str, v: ScalingResult, p: ScalingPoint) -> ScaledModel:
    one = _one_rank(v, p)
    return ScaledModel(
        model=model, backend=v.backend, grad_bytes=v.grad_bytes, point=p,
        efficiency_bounds=_efficiency_interval(v, p),
        compute_change=relative_change(one.local_step_ms_p50, p.local_step_ms_p50) if one else None,
        exposed_share=max(p.exposed_comm_ms, 0) / p.step_ms_p50, comm=_comm(p),
    )  # fmt: skip


def weak_scaling(best: list[tuple[str, ScalingResult, ScalingPoint]]) -> WeakScaling:
    """From (model, result, its weak point at the largest world size): who scales, and whether
    gradient bytes alone order them beyond the noise."""
    models = tuple(sorted((_scaled(*t) for t in best), key=lambda s: -s.point.efficiency))
    return WeakScaling(
        models=models, bytes_verdict=_bytes_verdict(best) if len(best) > 1 else None,
        heaviest=max(models, key=lambda s: s.grad_bytes),
    )  # fmt: skip


def scaling(frames: Frames) -> Scaling:
    """Every world size of every ok scaling record, and weak scaling at the largest sizes."""
    rows, best = [], []
    for r in ok_records(frames.records, "scaling"):
        v = r.result
        for p in sorted(v.points, key=lambda p: (p.kind, p.world_size)):
            rows.append(ScalingRow(r.spec.model, r.spec.image_size, v.backend, v.grad_bytes, p))
        weak = [p for p in v.points if p.kind == "weak" and p.world_size > 1]
        if weak:
            best.append((r.spec.model, v, max(weak, key=lambda p: p.world_size)))
    return Scaling(rows=tuple(rows), weak=weak_scaling(best) if best else None)
