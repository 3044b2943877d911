"""Exercise 5: what GoogLeNet and AlexNet ask of an accelerator, per image and per layer."""

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


def _pairs(frames: Frames) -> list[tuple[str, ModelFacts, ModelFacts]]:
    """(label, alexnet, googlenet) facts: at the chapter's (own) sizes, and at equal resolution
    where both have flops records at that size."""
    found = []
    a, g = frames.facts.get("alexnet"), frames.facts.get("googlenet")
    if a and g:
        found.append(("at the chapter's sizes", a, g))
    a2, g2 = (frames.facts_at(m, EQUAL_RESOLUTION) for m in ("alexnet", "googlenet"))
    if a2 and g2 and (not (a and g) or (a.image_size, g.image_size) != (a2.image_size, g2.image_size)):
        found.append((f"at equal resolution ({EQUAL_RESOLUTION}x{EQUAL_RESOLUTION})", a2, g2))
    return found


def _other_share(frames: Frames, model: str) -> tuple[float | None, int | None]:
    r = first_ok(frames.mine(model), "roofline", image_size=frames.sizes.get(model))
    return (r.result.other_time_share, r.spec.batch_size) if r else (None, None)


def exercise5(frames: Frames, batches: tuple[int, ...] = (1, 128)) -> Section:
    """Exercise 5: what GoogLeNet and AlexNet ask of an accelerator, per image and per layer, at
    the chapter's sizes and at equal resolution."""
    section = Section(
        "Exercise 5 — computation of GoogLeNet vs AlexNet, and what it asks of an accelerator",
        "Per image, forward pass, fp32, at each model's own input and — where the run counted it "
        f"— at equal resolution ({EQUAL_RESOLUTION}x{EQUAL_RESOLUTION}). MACs from fvcore (one "
        "fused multiply-add = 1); FLOPs = 2 x MACs. Forward outputs per image: every counted "
        "layer's output, summed. Bytes moved: each layer reads its input and weights and writes "
        "its output (weights read once per batch). Arithmetic intensity = FLOPs / bytes moved. "
        "Working set of a layer = its input + output + weights.",
    )
    if _no_facts(section, frames):
        return section
    facts = frames.facts
    rows = []
    listed = [(m, f, "own") for m, f in facts.items()]
    for model in facts:
        extra = frames.facts_at(model, EQUAL_RESOLUTION)
        if extra is not None and extra.image_size != facts[model].image_size:
            listed.append((model, extra, "equal resolution"))
    for model, f, which in listed:
        row = {"model": model, "input": f"{f.image_size} ({which})", "GMACs": fmt(f.gmacs, 3),
               "parameter MiB": fmt(f.param_bytes, 1, scale=2**20),
               "forward outputs per image MiB": fmt(f.forward_output_bytes, 2, scale=2**20)}  # fmt: skip
        for b in batches:
            row[f"MiB moved b{b}"] = fmt(f.bytes_moved(b), 1, scale=2**20)
            row[f"FLOP/byte b{b}"] = fmt(f.intensity(b), 1)
        ws = f.working_set
        row["largest working set"] = f"{ws.name} {fmt(f.working_set_of(ws), 1, scale=2**20)} MiB"
        row["% MACs in 1x1 conv"] = percent(f.one_by_one_mac_share, suffix="")
        row["% MACs in conv"] = percent(f.conv_mac_share, suffix="")
        rows.append(row)
    section.add_table("Computation, memory and traffic per image", rows)
    layer_rows = []
    for model, f in facts.items():
        for lay in sorted(f.layers, key=lambda lay: -lay.macs)[:6]:
            moved = f.working_set_of(lay)
            layer_rows.append({
                "model": model, "input": f.image_size, "layer": lay.name, "type": lay.layer,
                "kernel": lay.kernel or "", "MMACs": fmt(lay.macs, 1, scale=1e6),
                "KiB moved (b1)": fmt(moved, 1, scale=1024),
                "FLOP/byte (b1)": fmt(2 * lay.macs / moved, 1) if moved else MISSING,
            })  # fmt: skip
    section.add_table("The six costliest layers of each model at its own input, batch 1", layer_rows)
    pairs = _pairs(frames)
    fp32, bf16, bw = DATASHEET_PEAKS["H100 SXM"]
    if not pairs:
        missing = [m for m in ("alexnet", "googlenet") if m not in facts]
        section.sentences.append(
            f"The comparison needs both alexnet and googlenet; these runs lack {', '.join(missing)}."
        )
        return section

    def sizes(a, g):
        return f"googlenet at {g.image_size}x{g.image_size}, alexnet at {a.image_size}x{a.image_size}"

    comp = "; ".join(
        f"{label}{'' if label.startswith('at equal') else f' ({sizes(a, g)})'} googlenet needs {g.gmacs:.3f} GMACs per image, "
        f"{_ratio(g.gmacs, a.gmacs)} alexnet" + (f"'s ({a.gmacs:.3f})" if g.gmacs >= a.gmacs else f" ({a.gmacs:.3f})")
        for label, a, g in pairs
    )  # fmt: skip
    outputs = "; ".join(
        f"{label} {a.forward_output_bytes / 2**20:.2f} MiB for alexnet and "
        f"{g.forward_output_bytes / 2**20:.2f} MiB for googlenet ({g.forward_output_bytes / a.forward_output_bytes:.1f}x), "
        f"outweighing the weights from batch {a.crossover} and {g.crossover}"
        for label, a, g in pairs
    )  # fmt: skip
    intensity = "; ".join(
        f"{label} alexnet does {a.intensity(1):.1f} FLOPs per byte moved at batch 1 and "
        f"{a.intensity(128):.1f} at batch 128, googlenet {g.intensity(1):.1f} and {g.intensity(128):.1f}"
        for label, a, g in pairs
    )  # fmt: skip
    cache = "; ".join(
        f"{label} {a.working_set.name} in alexnet ({a.working_set_of(a.working_set) / 2**20:.1f} MiB) "
        f"and {g.working_set.name} in googlenet ({g.working_set_of(g.working_set) / 2**20:.1f} MiB)"
        for label, a, g in pairs
    )  # fmt: skip
    _, a0, g0 = pairs[0]
    share_g, batch_g = _other_share(frames, "googlenet")
    share_a, batch_a = _other_share(frames, "alexnet")
    measured = ""
    if share_g is not None and share_a is not None:
        measured = (
            f" Measured (roofline profile): {100 * share_g:.0f}% of googlenet's forward time at "
            f"batch {batch_g} is spent outside convolution and linear layers, against "
            f"{100 * share_a:.0f}% for alexnet at batch {batch_a}."
        )
    section.sentences += [
        f"Computation: {comp}: the amount of computation an accelerator must supply per image.",
        f"Memory size: alexnet's weights take {a0.param_bytes / 2**20:.0f} MiB against googlenet's "
        f"{g0.param_bytes / 2**20:.0f} MiB, while their forward outputs per image are: {outputs}: "
        "googlenet's memory need is set by batch size and resolution rather than by its weights.",
        f"Memory bandwidth: {intensity}. The H100 SXM data sheet gives {fp32:.0f} TFLOP/s fp32 and "
        f"{bw} TB/s, a ridge point of {fp32 / bw:.0f} FLOP/byte (bf16 tensor cores: {bf16 / bw:.0f}); "
        "below it a layer waits on memory.",
        f"Cache size: the largest single-layer working set is, {cache}: an on-chip buffer of that "
        "size keeps a whole layer resident.",
        f"Specialized operations: {100 * g0.conv_mac_share:.0f}% of googlenet's MACs are "
        f"convolutions and {100 * g0.one_by_one_mac_share:.0f}% are 1x1 convolutions, which are "
        f"plain matrix multiplications (alexnet: {100 * a0.conv_mac_share:.0f}% convolutions, "
        f"{100 * a0.one_by_one_mac_share:.0f}% 1x1) — matrix units serve both; googlenet's many "
        "small branches, concatenations and 3x3/1 max-pools add memory traffic with no MACs."
        + measured,
    ]  # fmt: skip
    answer = []
    eq = next(((a, g) for label, a, g in pairs if label.startswith("at equal")), None)
    if eq:
        a, g = eq
        answer.append(
            f"At equal resolution ({a.image_size}x{a.image_size}) googlenet needs "
            f"{g.gmacs / a.gmacs:.2f}x alexnet's MACs ({g.gmacs:.3f} against {a.gmacs:.3f} GMACs) and "
            f"{g.forward_output_bytes / a.forward_output_bytes:.1f}x its forward outputs per image, "
            f"at {g.intensity(1):.1f} against {a.intensity(1):.1f} FLOP/byte at batch 1; the "
            f"chapter's comparison (googlenet at {g0.image_size}, alexnet at {a0.image_size}: "
            f"{a0.gmacs / g0.gmacs:.1f}x fewer MACs) owes its saving to the smaller input."
        )
    else:
        answer.append(
            f"At the chapter's sizes googlenet ({g0.image_size}x{g0.image_size}) needs "
            f"{g0.gmacs:.3f} GMACs per image against alexnet's {a0.gmacs:.3f} "
            f"({a0.image_size}x{a0.image_size}) and {g0.forward_output_bytes / a0.forward_output_bytes:.1f}x "
            "its forward outputs per image; these runs counted no equal-resolution pair."
        )
    if measured:
        answer.append(
            f"Measured, {100 * share_g:.0f}% of googlenet's forward time goes outside convolution "
            f"and linear layers against {100 * share_a:.0f}% for alexnet: the strongest argument in "
            "this run for fused and specialised operations (concatenation, pooling, small kernels)."
        )
    section.answer = " ".join(answer)
    return section

