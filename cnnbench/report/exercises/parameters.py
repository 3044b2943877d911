"""Exercise 4: where the parameters sit, and how NiN and GoogLeNet cut them."""

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


def exercise4(frames: Frames) -> Section:
    """Exercise 4: where the parameters sit, and how NiN and GoogLeNet cut them."""
    section = Section(
        "Exercise 4 — parameter sizes, and how NiN and GoogLeNet cut them",
        "Parameters by where they sit, counted from each model's records at its own input (fp32 "
        "bytes: 4 per parameter).",
    )
    if _no_facts(section, frames):
        return section
    facts = frames.facts
    rows = [{
        "model": model, "input": f.image_size, "parameters": fmt(f.params),
        "MiB (fp32)": fmt(f.param_bytes, 1, scale=2**20), "in convolutions": fmt(f.conv_params),
        "in fully connected": fmt(f.linear_params),
        "% fully connected": percent(f.linear_share, suffix=""),
        "% in 1x1 convolutions": percent(f.one_by_one_param_share, suffix=""),
        "largest layer": f"{f.largest.name} ({f.largest.layer}, {fmt(f.largest.params)})",
        "global average pooling": "yes" if f.global_pool else "no",
    } for model, f in facts.items()]  # fmt: skip
    section.add_table("Where the parameters are", rows)
    heaviest = max(facts, key=lambda m: facts[m].params)
    top = facts[heaviest]
    for model, f in facts.items():
        m = f.params / 1e6
        if f.linear_share > 0.5:
            section.sentences.append(
                f"{model} holds {m:.1f}M parameters, {100 * f.linear_share:.0f}% of them in fully "
                f"connected layers; the largest, {f.largest.name}, alone holds "
                f"{f.largest.params / 1e6:.1f}M ({100 * f.largest.params / f.params:.0f}%)."
            )
        elif f.linear_params == 0:
            section.sentences.append(
                f"{model} has no fully connected layer at all: its last convolution outputs one channel "
                f"per class ({f.head.name}, {f.head.params:,} parameters) and global average "
                f"pooling turns those maps into logits; {100 * f.one_by_one_param_share:.0f}% of its "
                f"{m:.2f}M parameters are 1x1 convolutions, {top.params / f.params:.0f}x fewer "
                f"parameters than {heaviest}."
            )
        else:
            pooled = "after global average pooling " if f.global_pool else ""
            section.sentences.append(
                f"{model} keeps {100 * (1 - f.linear_share):.0f}% of its {m:.2f}M parameters in "
                f"convolutions; its classifier {f.head.name} {pooled}has only {f.head.params:,}. "
                f"1x1 convolutions hold {100 * f.one_by_one_param_share:.0f}% of the parameters "
                f"(they reduce channels before the wider kernels), and the model has "
                f"{top.params / f.params:.1f}x fewer parameters than {heaviest}."
            )
    pooled = [(m, f) for m, f in facts.items() if f.global_pool and m != heaviest]
    answer = (
        f"{heaviest} holds {top.params / 1e6:.1f}M parameters, {100 * top.linear_share:.0f}% of "
        "them in fully connected layers."
    )
    if pooled:
        answer += (
            " Global average pooling replaces that head: "
            + ", ".join(f"{m} has {f.params / 1e6:.2f}M ({top.params / f.params:.0f}x fewer)" for m, f in pooled[:3])
            + ", with 1x1 convolutions reducing channels before the wider kernels."
        )  # fmt: skip
    section.answer = answer
    return section

