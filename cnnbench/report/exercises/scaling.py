"""Data-parallel scaling in words: efficiency per world size, gradient bytes against compute,
read from :func:`cnnbench.analysis.scaling.scaling`'s finding."""

from __future__ import annotations

from ...analysis import scaling as analysis
from ...analysis.frames import Frames
from ...analysis.scaling import Scaling, ScalingRow, WeakScaling
from ..fmt import change, fmt, percent
from .common import Section

__all__ = ["scaling"]

MiB = 2**20
NOT_MEASURED = "No scaling records in these runs (metric scaling, e.g. --metrics scaling)."
COMM_TEXT = {
    "above": "above what bandwidth alone predicts: per-message latency and synchronisation add to it",
    "close": "close to the bandwidth bound",
    "below": "below it: the buckets' overlap with backward hides part of it",
}
BYTES_TEXT = {
    "yes": "The networks with more parameters (exercise 4) move more bytes per step and scale "
           "worse, beyond the noise of their steps.",
    "no": "Gradient bytes alone (exercise 4's parameters) do not order them here: a network with "
          "more bytes scales better, beyond the noise of their steps.",
    "noise": "Their efficiencies overlap within the noise of their steps, so this run cannot say "
             "whether gradient bytes order them.",
}  # fmt: skip


def scaling(frames: Frames) -> Section:
    """Data-parallel scaling: efficiency per world size, gradient bytes against compute, and
    which networks scale — exercise 4's parameter counts as exercise 5's interconnect traffic."""
    return _section(analysis.scaling(frames))


def _exposed(p) -> str:
    """One rank communicates nothing; a negative difference of medians is noise, not a time."""
    if p.world_size == 1:
        return "— (1 rank)"
    if p.exposed_comm_ms < 0:
        return f"≈0 (−{-p.exposed_comm_ms:.1f}, within noise)"
    return fmt(p.exposed_comm_ms, 1)


def _row(row: ScalingRow) -> dict:
    p = row.point
    return {
        "model": row.model, "input": row.image_size, "backend": row.backend,
        "scaling": p.kind, "ranks": p.world_size, "batch per rank": p.per_rank_batch,
        "global batch": p.global_batch,
        "step ms (95% CI)": f"{fmt(p.step_ms_p50, 1)} ({fmt(p.step_ms_ci_low, 1)}–{fmt(p.step_ms_ci_high, 1)})",
        "no_sync step ms": fmt(p.local_step_ms_p50, 1),
        "images/s": fmt(p.images_per_s, 1), "speed-up": fmt(p.speedup, 2),
        "efficiency %": percent(p.efficiency, suffix=""),
        "gradient MiB / step": fmt(row.grad_bytes / MiB, 1),
        "exposed comm ms": _exposed(p),
        "predicted comm ms": fmt(p.predicted_comm_ms, 1),
    }  # fmt: skip


def _efficiencies(w: WeakScaling) -> str:
    """'Weak scaling to 2 ranks (gloo): small 90% (8.0 MiB of gradients, 110 ms of compute per
    step); big 60% (...).'"""
    listed = "; ".join(
        f"{m.model} {100 * m.point.efficiency:.0f}% ({m.grad_bytes / MiB:.1f} MiB of gradients, "
        f"{m.point.local_step_ms_p50:.0f} ms of compute per step)" for m in w.models
    )
    return f"Weak scaling to {w.world_size} ranks ({w.models[0].backend}): {listed}."


def _costs(w: WeakScaling) -> str:
    share = ", ".join(f"{m.model} {100 * m.exposed_share:.0f}%" for m in w.models)
    compute = ", ".join(f"{m.model} {change(m.compute_change)}" for m in w.models)
    return (f"Exposed communication as a share of the step: {share}; compute per step at "
            f"{w.world_size} ranks against 1 (the no_sync step): {compute}.")


def _heaviest(w: WeakScaling) -> str:
    h, p = w.heaviest, w.heaviest.point
    return (f"{h.model}'s exposed communication, {_exposed(p)} ms per step beyond DDP's own "
            f"{p.ddp_overhead_ms:.1f} ms at one rank, against {p.predicted_comm_ms:.1f} ms "
            f"predicted for a ring all-reduce, is {COMM_TEXT[h.comm]}.")


def _scaling_answer(w: WeakScaling) -> str:
    """Who scales, whether gradient bytes alone (exercise 4's parameters) order them beyond the
    noise, and the heaviest network's communication against the bandwidth bound."""
    out = [_efficiencies(w)]
    if w.bytes_verdict is not None:
        out += [BYTES_TEXT[w.bytes_verdict], _costs(w)]
    out.append(_heaviest(w))
    return " ".join(out)


BYTES_SUMMARY = {
    "yes": "; the networks with more gradient bytes scale worse, beyond the noise",
    "no": "; gradient bytes do not order them: one with more bytes scales better, beyond the noise",
    "noise": "; whether gradient bytes order them is not resolved",
}


def _summary(w: WeakScaling | None) -> str:
    """The efficiency range at the largest world size and the gradient-bytes verdict."""
    if w is None:
        return "No weak scaling beyond one rank in these runs."
    best, worst = w.models[0], w.models[-1]
    if len(w.models) > 1:
        spread = (f"ranges from {100 * worst.point.efficiency:.0f}% ({worst.model}) to "
                  f"{100 * best.point.efficiency:.0f}% ({best.model})")  # fmt: skip
    else:
        spread = f"is {100 * best.point.efficiency:.0f}% ({best.model})"
    verdict = BYTES_SUMMARY.get(w.bytes_verdict, "")
    return f"Weak-scaling efficiency at {w.world_size} ranks {spread}{verdict}."


def _section(f: Scaling) -> Section:
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
    section.add_table("Scaling: every world size, weak and strong", [_row(r) for r in f.rows], NOT_MEASURED)
    section.summary = _summary(f.weak) if f.rows else "Not measured in this run (metric scaling)."
    if f.weak is not None:
        section.answer = _scaling_answer(f.weak)
    return section
