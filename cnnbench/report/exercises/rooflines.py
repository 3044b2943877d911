"""Exercise 5, measured: per-layer rooflines and MFU."""

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


def _probe_rows(frames: Frames) -> list[dict]:
    """One row per distinct set of peaks: each probe, the data sheet with its source and factors."""
    rows, seen = [], set()
    for r in ok_records(frames.records, "roofline"):
        p = r.result.peaks
        key = (p.device, p.dtype, p.peak_flops, p.peak_bytes_per_s)
        if key in seen:
            continue
        seen.add(key)
        probes = p.probes or {f"matmul {p.matmul_n}": p.matmul_flops, "convolution": p.conv_flops}
        factors = p.datasheet_factors or {}
        rows.append({
            "device": p.device, "dtype": p.dtype,
            "probes GFLOP/s": "; ".join(f"{k} {fmt(v, 1, scale=1e9)}" for k, v in probes.items()),
            "measured peak GFLOP/s (best probe)": fmt(p.peak_flops, 1, scale=1e9),
            "measured GB/s (copy)": fmt(p.peak_bytes_per_s, 1, scale=1e9),
            "data-sheet GFLOP/s": fmt(p.datasheet_flops, 1, scale=1e9),
            "data-sheet GB/s": fmt(p.datasheet_bytes_per_s, 1, scale=1e9),
            "data-sheet source": p.datasheet_source or MISSING,
            "data-sheet factors": ", ".join(f"{k} {v}" for k, v in factors.items()) or MISSING,
            "best probe / data sheet": (
                MISSING if not p.datasheet_flops else
                f"{p.peak_flops / p.datasheet_flops:.2f}"
                + (" (data sheet underestimated)" if sheet_below_probe(p) else "")
            ),
        })  # fmt: skip
    return rows


def _outside(v) -> str:
    """The share of the forward pass outside conv/linear layers, and whether the profiler's own
    cost is out of it (records before profiled_ms kept it in)."""
    text = percent(v.other_time_share, suffix="")
    return text if v.profiled_ms is not None or text == MISSING else f"{text} (profiler included)"


def _bounds(v) -> dict[str, int]:
    counts = {"compute": 0, "memory": 0, "overhead": 0}
    for lay in v.layers:
        if lay.achieved_flops:
            counts[lay.bound_at(v.ridge_flop_per_byte)] += 1
    return counts


def rooflines(frames: Frames) -> Section:
    """Exercise 5, measured: per-layer rooflines and MFU; a roof that something ran above is an
    underestimate, and says so."""
    section = Section(
        "Exercise 5, measured — rooflines",
        "Per convolution and linear layer of a forward pass: time from torch.profiler, MACs from "
        "fvcore, bytes from the layer's input, output and weights. Peaks measured on the device at "
        "the median iteration, as every latency (compute: the best of a large matmul and unpadded "
        "3x3 and 5x5 convolutions, counting only taps on real data; bandwidth: a large copy); the "
        "data-sheet roof beside them where every factor is known (on a CPU: its maximum clock). "
        "MFU = the work of one forward pass over its median time in the latency table (the same "
        "batch), over the measured peak. A layer is memory- or compute-bound only when it reaches "
        f"at least {100 * NEAR_ROOF:.0f}% of that roof at its intensity; far below both roofs it is "
        "overhead-bound (launches, framework, small shapes). Time outside conv/linear layers is "
        "taken of the unprofiled pass, the profiler's own cost spread over its ranges and taken "
        f"out. A model or layer above the measured roof means the probes underestimate the machine: "
        f"MFU is then '{ABOVE_ROOF}', never a number above 100%.",
        figure="roofline",
    )
    rows, above, any_under = [], [], False
    records = ok_records(frames.records, "roofline")
    uses = {r.spec.model: utilization(frames.records, r) for r in records}
    for r in records:
        v, use = r.result, uses[r.spec.model]
        timed = [lay for lay in v.layers if lay.achieved_flops]
        over = [lay for lay in timed if lay.above_compute_roof(v.peak_flops)]
        under = above_roof(v) or use.mfu > 1
        any_under |= under
        above += [(r.spec.model, lay) for lay in over]
        bounds = _bounds(v)
        rows.append({
            "model": r.spec.model, "batch": r.spec.batch_size, "device": r.spec.device,
            "forward ms (latency median)": fmt(use.forward_ms, 2),
            "achieved GFLOP/s": fmt(use.achieved_flops, 1, scale=1e9),
            "peak GFLOP/s (measured)": fmt(v.peak_flops, 1, scale=1e9),
            "peak GB/s (measured)": fmt(v.peak_bytes_per_s, 1, scale=1e9),
            "ridge FLOP/byte": fmt(v.ridge_flop_per_byte, 1), "MFU %": utilization_text(use.mfu, under, suffix=""),
            "layers above the roof": f"{len(over)} of {len(timed)}",
            "compute / memory / overhead-bound layers": f"{bounds['compute']} / {bounds['memory']} / {bounds['overhead']}",
            "time outside conv/linear %": _outside(v),
        })  # fmt: skip
    section.add_table("Model FLOPs utilization and peaks", rows,
                      "No roofline records in these runs (metric roofline).")  # fmt: skip
    section.add_table("The peaks behind the roof: every probe, and the data sheet", _probe_rows(frames))  # fmt: skip
    sources = sorted({u.source for u in uses.values()})
    if sources:
        section.sentences.append(f"Forward time behind each MFU: {'; '.join(sources)}.")
    if not records:
        return section
    if any_under:
        worst = sorted(above, key=lambda ml: -ml[1].achieved_flops / ml[1].roof_flops)
        named = ", ".join(
            f"{m} {lay.name} ({lay.achieved_flops / 1e9:.0f} GFLOP/s against a roof of "
            f"{lay.roof_flops / 1e9:.0f})" for m, lay in worst[:6]
        )  # fmt: skip
        section.warning = (
            "The measured roof is underestimated: "
            + (f"{len(above)} layer(s) ran above it — {named}{' …' if len(worst) > 6 else ''}. " if above
               else "a model's achieved FLOP/s is above it. ")
            + "The probes do not reach this machine's peak; MFU above the roof is not shown as a "
            "number, and every 'fraction of roof' here is a lower bound on the true headroom."
        )  # fmt: skip
    section.answer = _rooflines_answer(records, uses, above, any_under)
    return section


def _rooflines_answer(records, uses, above, any_under) -> str:
    answer = []
    mfus = [(r.spec.model, uses[r.spec.model].mfu) for r in records
            if not above_roof(r.result) and uses[r.spec.model].mfu <= 1]  # fmt: skip
    if mfus:
        lo, hi = min(mfus, key=lambda m: m[1]), max(mfus, key=lambda m: m[1])
        spread = (f"ranges from {100 * lo[1]:.0f}% ({lo[0]}) to {100 * hi[1]:.0f}% ({hi[0]})"
                  if len(mfus) > 1 else f"is {100 * lo[1]:.0f}% ({lo[0]})")  # fmt: skip
        answer.append(f"MFU {spread} of the measured peak"
                      + (" — upper bounds, as the true peak is higher." if any_under else "."))  # fmt: skip
    if any_under:
        names = sorted({m for m, _ in above} | {r.spec.model for r in records if above_roof(r.result)})
        answer.append(f"The measured roof is underestimated — {', '.join(names)} ran above it in "
                      "places — so it bounds nothing there and those MFUs are not shown as numbers.")  # fmt: skip
    counts = {"compute": 0, "memory": 0, "overhead": 0}
    for r in records:
        for k, n in _bounds(r.result).items():
            counts[k] += n
    total = sum(counts.values())
    if total:
        answer.append(
            f"Of {total} timed layers, {counts['compute']} are compute-bound, {counts['memory']} "
            f"memory-bound and {counts['overhead']} reach less than {100 * NEAR_ROOF:.0f}% of either "
            "roof: overhead-bound."
        )
    low_sheet = [r.result.peaks for r in records if r.result.peaks and sheet_below_probe(r.result.peaks)]
    if low_sheet:
        p = low_sheet[0]
        answer.append(
            f"The data-sheet roof ({p.datasheet_flops / 1e9:.0f} GFLOP/s) lies below what the "
            f"probes measured ({p.peak_flops / 1e9:.0f}): one of its factors is low "
            f"({_sheet_suspect(p)}), so it is not an upper bound here and no utilization is "
            "given against it."
        )
    return " ".join(answer)


def sheet_below_probe(p) -> bool:
    """The data-sheet figure is below a measured probe: a factor of it is wrong, not the probe."""
    return bool(p.datasheet_flops) and p.peak_flops > p.datasheet_flops


def _sheet_suspect(p) -> str:
    source = (p.datasheet_factors or {}).get("clock_source", "")
    if "nominal" in str(source):
        return f"the clock is {source}, and the CPU boosts above it"
    if p.datasheet_factors:
        return "see the factors below"
    return f"{p.datasheet_source or 'the data sheet'} describes another part or clock"

