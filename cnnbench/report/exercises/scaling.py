"""Data-parallel scaling: efficiency per world size, gradient bytes against compute."""

from __future__ import annotations

import math

import pandas as pd

from ... import stats
from ...analysis.frames import (
    EQUAL_RESOLUTION,
    LINEAGE_FIELDS,
    Frames,
    ModelFacts,
    above_roof,
    first_ok,
    ok_records,
    relative_change,
    result_of,
    trained_counts,
    utilization,
)
from ...analysis.noise import MIN_SEEDS, accuracy_change
from ...results.types import NEAR_ROOF
from ..fmt import ABOVE_ROOF, MISSING, accuracy, change, fmt, percent, points
from ..fmt import utilization as utilization_text
from .. import verdicts
from .common import DATASHEET_PEAKS, Section, _no_facts, _ratio


def _exposed(p) -> str:
    """One rank communicates nothing; a negative difference of medians is noise, not a time."""
    if p.world_size == 1:
        return "— (1 rank)"
    if p.exposed_comm_ms < 0:
        return f"≈0 (−{-p.exposed_comm_ms:.1f}, within noise)"
    return fmt(p.exposed_comm_ms, 1)


def _comm_verdict(p) -> str:
    """Exposed communication against the ring all-reduce's bandwidth prediction."""
    if p.exposed_comm_ms > 1.3 * p.predicted_comm_ms:
        return "above what bandwidth alone predicts: per-message latency and synchronisation add to it"
    if p.exposed_comm_ms >= 0.7 * p.predicted_comm_ms:
        return "close to the bandwidth bound"
    return "below it: the buckets' overlap with backward hides part of it"


def _compute_change(v, p) -> str:
    one = next((q for q in v.points if q.kind == p.kind and q.world_size == 1), None)
    return change(p.local_step_ms_p50 / one.local_step_ms_p50 - 1) if one else MISSING


def _efficiency_interval(v, p) -> tuple[float, float]:
    """Bounds of ``p``'s efficiency from the 95% intervals of its median step and of the median
    step at one rank; unbounded when an interval is missing (each world size is timed in one
    process, which holds no interval between processes): no ordering is then claimed."""
    one = next((q for q in v.points if q.kind == p.kind and q.world_size == 1), None)
    parts = (p.step_ms_ci_low, p.step_ms_ci_high, getattr(one, "step_ms_ci_low", None),
             getattr(one, "step_ms_ci_high", None))  # fmt: skip
    if one is None or any(x is None for x in parts):
        return -math.inf, math.inf
    return (p.efficiency * p.step_ms_p50 / p.step_ms_ci_high * one.step_ms_ci_low / one.step_ms_p50,
            p.efficiency * p.step_ms_p50 / p.step_ms_ci_low * one.step_ms_ci_high / one.step_ms_p50)  # fmt: skip


def _bytes_verdict(best: list) -> str:
    """Do gradient bytes order the efficiencies? "yes" only when every network with more bytes
    is less efficient beyond both intervals, "no" when one with more bytes is more efficient
    beyond them, else "noise"."""
    ranked = sorted(best, key=lambda t: t[1].grad_bytes)
    bounds = [_efficiency_interval(v, p) for _, v, p in ranked]
    pairs = [(bounds[i], bounds[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))
             if ranked[i][1].grad_bytes < ranked[j][1].grad_bytes]  # fmt: skip
    if any(more[0] > fewer[1] for fewer, more in pairs):
        return "no"
    if pairs and all(fewer[0] > more[1] for fewer, more in pairs):
        return "yes"
    return "noise"


def _scaling_answer(best: list) -> str:
    """From (model, result, its weak point at the largest world size): who scales, and whether
    gradient bytes alone (exercise 4's parameters) order them beyond the noise."""
    best = sorted(best, key=lambda t: -t[2].efficiency)
    w = best[0][2].world_size
    listed = "; ".join(
        f"{m} {100 * p.efficiency:.0f}% ({v.grad_bytes / 2**20:.1f} MiB of gradients, "
        f"{p.local_step_ms_p50:.0f} ms of compute per step)" for m, v, p in best
    )
    out = [f"Weak scaling to {w} ranks ({best[0][1].backend}): {listed}."]
    if len(best) > 1:
        share = ", ".join(
            f"{m} {100 * max(p.exposed_comm_ms, 0) / p.step_ms_p50:.0f}%" for m, _, p in best
        )
        compute = ", ".join(f"{m} {_compute_change(v, p)}" for m, v, p in best)
        costs = (
            f"Exposed communication as a share of the step: {share}; compute per step at {w} "
            f"ranks against 1 (the no_sync step): {compute}."
        )
        verdict = _bytes_verdict(best)
        if verdict == "yes":
            out.append("The networks with more parameters (exercise 4) move more bytes per step "
                       "and scale worse, beyond the noise of their steps.")  # fmt: skip
        elif verdict == "no":
            out.append("Gradient bytes alone (exercise 4's parameters) do not order them here: a "
                       "network with more bytes scales better, beyond the noise of their steps.")  # fmt: skip
        else:
            out.append("Their efficiencies overlap within the noise of their steps, so this run "
                       "cannot say whether gradient bytes order them.")  # fmt: skip
        out.append(costs)
    heavy = max(best, key=lambda t: t[1].grad_bytes)
    out.append(
        f"{heavy[0]}'s exposed communication, {_exposed(heavy[2])} ms per step beyond DDP's own "
        f"{heavy[2].ddp_overhead_ms:.1f} ms at one rank, against {heavy[2].predicted_comm_ms:.1f} "
        f"ms predicted for a ring all-reduce, is {_comm_verdict(heavy[2])}."
    )
    return " ".join(out)


def scaling(frames: Frames) -> Section:
    """Data-parallel scaling: efficiency per world size, gradient bytes against compute, and
    which networks scale — exercise 4's parameter counts as exercise 5's interconnect traffic."""
    section = Section(
        "Scaling — data-parallel training (DDP)",
        "The training step under DistributedDataParallel, one process per rank (torch.distributed's "
        "elastic launcher), timed on rank 0 after a barrier, alternating with the same step under "
        "no_sync() (no gradient all-reduce). Weak scaling keeps the per-rank batch, strong scaling "
        "the global batch; efficiency = images/s at W ranks / (W x images/s at 1 rank), from the "
        "same unit. Exposed communication = median step − median no_sync step; predicted = a ring "
        "all-reduce, 2(W−1)/W x gradient bytes / the bus bandwidth a timed all-reduce of a large "
        "tensor reached on the same group. On a CPU each rank has one thread: W ranks, W cores.",
        figure="scaling",
    )
    records = ok_records(frames.records, "scaling")
    rows, best = [], []
    for r in records:
        v = r.result
        for p in sorted(v.points, key=lambda p: (p.kind, p.world_size)):
            rows.append({
                "model": r.spec.model, "input": r.spec.image_size, "backend": v.backend,
                "scaling": p.kind, "ranks": p.world_size, "batch per rank": p.per_rank_batch,
                "global batch": p.global_batch,
                "step ms (95% CI)": f"{fmt(p.step_ms_p50, 1)} ({fmt(p.step_ms_ci_low, 1)}–{fmt(p.step_ms_ci_high, 1)})",
                "no_sync step ms": fmt(p.local_step_ms_p50, 1),
                "images/s": fmt(p.images_per_s, 1), "speed-up": fmt(p.speedup, 2),
                "efficiency %": percent(p.efficiency, suffix=""),
                "gradient MiB / step": fmt(v.grad_bytes / 2**20, 1),
                "exposed comm ms": _exposed(p),
                "predicted comm ms": fmt(p.predicted_comm_ms, 1),
            })  # fmt: skip
        weak = [p for p in v.points if p.kind == "weak" and p.world_size > 1]
        if weak:
            top = max(weak, key=lambda p: p.world_size)
            best.append((r.spec.model, v, top))
    section.add_table("Scaling: every world size, weak and strong", rows,
                      "No scaling records in these runs (metric scaling, e.g. --metrics scaling).")  # fmt: skip
    if best:
        section.answer = _scaling_answer(best)
    return section

