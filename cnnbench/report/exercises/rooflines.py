"""Exercise 5, measured, in words: per-layer rooflines and MFU, read from
:func:`cnnbench.analysis.rooflines.rooflines`'s finding. Per-model numbers live in the tables;
the sentences say the pattern once."""

from __future__ import annotations

from ...analysis import rooflines as analysis
from ...analysis.frames import Frames
from ...analysis.rooflines import ModelRoof, ProbeRow, Rooflines, sheet_below_probe
from ..fmt import ABOVE_ROOF, MISSING, fmt, percent
from ..fmt import utilization as utilization_text
from .common import Section

__all__ = ["rooflines", "sheet_below_probe"]  # sheet_below_probe: re-exported for old importers

NAMED_ABOVE = 6  # layers above the roof named in the warning


def rooflines(frames: Frames) -> Section:
    """Exercise 5, measured: per-layer rooflines and MFU; a roof that something ran above is an
    underestimate, and says so."""
    return _section(analysis.rooflines(frames))


def _intro(near_roof: float) -> str:
    return (
        "Per convolution and linear layer of a forward pass: time from torch.profiler, MACs from "
        "fvcore, bytes from the layer's input, output and weights. Peaks measured on the device at "
        "the median iteration, as every latency (compute: the best of a large matmul and unpadded "
        "3x3 and 5x5 convolutions, counting only taps on real data; bandwidth: a large copy); the "
        "data-sheet roof beside them where every factor is known (on a CPU: its maximum clock). "
        "MFU = the work of one forward pass over its median time in the latency table (the same "
        "batch), over the measured peak. A layer is memory- or compute-bound only when it reaches "
        f"at least {100 * near_roof:.0f}% of that roof at its intensity; far below both roofs it is "
        "overhead-bound (launches, framework, small shapes). Time outside conv/linear layers is "
        "taken of the unprofiled pass, the profiler's own cost spread over its ranges and taken "
        "out. A model or layer above the measured roof means the probes underestimate the machine: "
        f"MFU is then '{ABOVE_ROOF}', never a number above 100%."
    )


def _outside(m: ModelRoof) -> str:
    """The share outside conv/linear layers, and whether the profiler's own cost is in it."""
    text = percent(m.other_time_share, suffix="")
    return f"{text} (profiler included)" if m.profiler_included else text


def _model_row(m: ModelRoof) -> dict:
    compute, memory, overhead = m.bounds
    return {
        "model": m.model, "batch": m.batch, "device": m.device,
        "forward ms (latency median)": fmt(m.forward_ms, 2),
        "achieved GFLOP/s": fmt(m.achieved_flops, 1, scale=1e9),
        "peak GFLOP/s (measured)": fmt(m.peak_flops, 1, scale=1e9),
        "peak GB/s (measured)": fmt(m.peak_bytes_per_s, 1, scale=1e9),
        "ridge FLOP/byte": fmt(m.ridge_flop_per_byte, 1),
        "MFU %": utilization_text(m.mfu, m.under, suffix=""),
        "layers above the roof": f"{m.layers_above} of {m.layers_timed}",
        "compute / memory / overhead-bound layers": f"{compute} / {memory} / {overhead}",
        "time outside conv/linear %": _outside(m),
    }  # fmt: skip


def _probe_row(p: ProbeRow) -> dict:
    ratio = MISSING if p.probe_over_sheet is None else f"{p.probe_over_sheet:.2f}" + (
        " (data sheet underestimated)" if p.sheet_below else "")  # fmt: skip
    return {
        "device": p.device, "dtype": p.dtype,
        "probes GFLOP/s": "; ".join(f"{k} {fmt(v, 1, scale=1e9)}" for k, v in p.probes),
        "measured peak GFLOP/s (best probe)": fmt(p.peak_flops, 1, scale=1e9),
        "measured GB/s (copy)": fmt(p.peak_bytes_per_s, 1, scale=1e9),
        "data-sheet GFLOP/s": fmt(p.datasheet_flops, 1, scale=1e9),
        "data-sheet GB/s": fmt(p.datasheet_bytes_per_s, 1, scale=1e9),
        "data-sheet source": p.datasheet_source or MISSING,
        "data-sheet factors": ", ".join(f"{k} {v}" for k, v in p.datasheet_factors) or MISSING,
        "best probe / data sheet": ratio,
    }  # fmt: skip


def _warning(f: Rooflines) -> str:
    """What makes the roof untrustworthy: the layers above it, the worst named."""
    if not f.any_under:
        return ""
    named = ", ".join(f"{lay.model} {lay.name} ({lay.achieved_flops / 1e9:.0f} GFLOP/s against a "
                      f"roof of {lay.roof_flops / 1e9:.0f})" for lay in f.above[:NAMED_ABOVE])  # fmt: skip
    more = " …" if len(f.above) > NAMED_ABOVE else ""
    what = (f"{len(f.above)} layer(s) ran above it — {named}{more}. " if f.above
            else "a model's achieved FLOP/s is above it. ")  # fmt: skip
    return ("The measured roof is underestimated: " + what + "The probes do not reach this "
            "machine's peak; MFU above the roof is not shown as a number, and every 'fraction of "
            "roof' here is a lower bound on the true headroom.")  # fmt: skip


def _mfu_text(f: Rooflines) -> str:
    """'MFU ranges from 19% (googlenet28) to 57% (alexnet) of the measured peak.' ('' without)"""
    if f.mfu_range is None:
        return ""
    lo, hi = f.mfu_range
    valid = sum(not m.under for m in f.models)
    spread = (f"ranges from {100 * lo.mfu:.0f}% ({lo.model}) to {100 * hi.mfu:.0f}% ({hi.model})"
              if valid > 1 else f"is {100 * lo.mfu:.0f}% ({lo.model})")  # fmt: skip
    return f"MFU {spread} of the measured peak" + (
        " — upper bounds, as the true peak is higher." if f.any_under else ".")


def _bounds_text(f: Rooflines) -> str:
    compute, memory, overhead = f.bounds
    total = compute + memory + overhead
    if not total:
        return ""
    return (f"Of {total} timed layers, {compute} are compute-bound, {memory} memory-bound and "
            f"{overhead} reach less than {100 * f.near_roof:.0f}% of either roof: overhead-bound.")


def _sheet_suspect(p: ProbeRow) -> str:
    if p.sheet_suspect == "nominal_clock":
        return f"the clock is {p.clock_source}, and the CPU boosts above it"
    if p.sheet_suspect == "factors":
        return "see the factors below"
    return f"{p.datasheet_source or 'the data sheet'} describes another part or clock"


def _answer(f: Rooflines) -> str:
    answer = [_mfu_text(f)]
    if f.any_under:
        answer.append(f"The measured roof is underestimated — {', '.join(f.under_models)} ran above "
                      "it in places — so it bounds nothing there and those MFUs are not shown as numbers.")  # fmt: skip
    answer.append(_bounds_text(f))
    p = f.low_sheet
    if p is not None:
        answer.append(
            f"The data-sheet roof ({p.datasheet_flops / 1e9:.0f} GFLOP/s) lies below what the "
            f"probes measured ({p.peak_flops / 1e9:.0f}): one of its factors is low "
            f"({_sheet_suspect(p)}), so it is not an upper bound here and no utilization is "
            "given against it."
        )
    return " ".join(a for a in answer if a)


def _summary(f: Rooflines) -> str:
    """MFU's range and the layers' bounds, or that the roof bounds nothing, in one or two sentences."""
    first = _mfu_text(f)
    if f.any_under:
        first = (first + " " if first else "") + "The measured roof is underestimated (a model or layer ran above it)."
    return " ".join(t for t in (first, _bounds_text(f)) if t)


# where the forward time behind an MFU comes from (analysis.frames.Utilization.source)
_FORWARD_SOURCE = {
    "latency": "latency table, median at batch {batch}",
    "roofline": "the roofline's own forward passes (median; no latency record at this batch)",
}


def _section(f: Rooflines) -> Section:
    section = Section("Exercise 5, measured — rooflines", _intro(f.near_roof), figure="roofline")
    section.add_table("Model FLOPs utilization and peaks", [_model_row(m) for m in f.models],
                      "No roofline records in these runs (metric roofline).")  # fmt: skip
    section.add_table("The peaks behind the roof: every probe, and the data sheet",
                      [_probe_row(p) for p in f.probes])  # fmt: skip
    sources = sorted({_FORWARD_SOURCE[m.forward_source].format(batch=m.batch) for m in f.models})
    if sources:
        section.sentences.append(f"Forward time behind each MFU: {'; '.join(sources)}.")
    if not f.models:
        return section
    section.warning = _warning(f)
    section.answer, section.summary = _answer(f), _summary(f)
    return section
