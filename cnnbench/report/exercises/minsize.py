"""Exercise 2: the minimum input size of every model, and the layer that sets it."""

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


def minimum_sizes(frames: Frames) -> Section:
    """Exercise 2: the smallest square input of every model, and why."""
    section = Section(
        "Exercise 2 — the minimum image size",
        "The smallest square input each model runs on, found by bisection over sizes with shape "
        "inference on the meta device (no arithmetic), and the layer that fails one pixel below "
        "it. The chain lists, at the minimum size, every layer that shrinks the map up to that one.",
    )
    rows, found = [], []
    for r in ok_records(frames.records, "minsize"):
        v = r.result
        found.append((r.spec.model, v))
        rows.append({"model": r.spec.model, "minimum size": fmt(v.min_size),
                     "fails below it": v.failing_layer or "— (runs at 1x1)",
                     "size chain at the minimum": "; ".join(v.reductions) or MISSING})  # fmt: skip
        if v.failing_layer:
            last = v.reductions[-1] if v.reductions else v.failing_layer
            section.sentences.append(
                f"{r.spec.model} needs at least {v.min_size}x{v.min_size}: its downsampling "
                f"chain ({len(v.reductions)} size-changing layers) leaves {last.split(': ')[-1].split('→')[0]} "
                f"pixels at {v.failing_layer}, and one pixel less leaves that layer's window "
                f"larger than its input ({v.failure})."
            )  # fmt: skip
        else:
            section.sentences.append(
                f"{r.spec.model} runs even on a 1x1 input: every convolution and max-pool is padded "
                "so that a map never shrinks below 1x1, and global average pooling accepts any size."
            )
    section.add_table("Minimum input size per model", rows,
                      "No minsize records in these runs (metric minsize).")  # fmt: skip
    if found:
        bounded = sorted((v.min_size, m, v.failing_layer) for m, v in found if v.failing_layer)
        free = [m for m, v in found if not v.failing_layer]
        parts = []
        if len(bounded) == 1:
            size, model, where = bounded[0]
            parts.append(
                f"{model} needs at least {size}x{size}: its chain of strides and pools, not its "
                f"classifier, sets the bound ({where} runs out of pixels below it)."
            )
        elif bounded:
            hi = bounded[-1]
            parts.append(
                "The minimum input is set by each model's chain of strides and pools, not by its "
                f"classifier: from {bounded[0][0]}x{bounded[0][0]} ({bounded[0][1]}) up to "
                f"{hi[0]}x{hi[0]} ({hi[1]}, whose {hi[2]} runs out of pixels below it)."
            )
        if free:
            parts.append(
                f"{', '.join(free)} run{'s' if len(free) == 1 else ''} on any size down to 1x1: "
                "padding keeps every map at least 1x1 and global average pooling takes any size."
            )
        section.answer = " ".join(parts)
    return section

