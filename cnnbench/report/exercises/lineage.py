"""Exercise 1: the GoogLeNet variants as a lineage, each against its parent."""

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


def _headline(row: dict, key: str) -> str:
    """A number in the unit and decimals of its LINEAGE_FIELDS label (any other, such as the
    training time: 1 decimal); accuracy with its status when that is not ok."""
    if key == "test_accuracy_mean":
        return accuracy(row[key], None, row["accuracy_status"])
    f = LINEAGE_FIELDS.get(key)
    return fmt(row[key], f.digits if f else 1, scale=f.scale if f else 1)


def _change_of(row: dict, key: str) -> str:
    value = row[f"{key} change"]
    return points(value) if LINEAGE_FIELDS[key].points else change(value)


# the lineage fields judged beside their change: (key, the row field holding its judgement)
_JUDGED = ("latency_ms_p50_b1", "train_images_per_s", "train_memory_bytes", "test_accuracy_mean")


def _unlike(row: dict, key: str) -> str:
    """Why a size-dependent field gets no change or verdict: '28 vs 96 px'."""
    if LINEAGE_FIELDS[key].points:
        return "trained at other sizes"
    return f"{row['input']} vs {row['parent_input']} px"


def _judged_cell(row: dict, key: str) -> str:
    judged = row[f"{key} noise"]
    if judged is not None:
        return verdicts.short(judged)
    if not (row["trained_alike"] if LINEAGE_FIELDS[key].points else row["alike"]):
        return f"no verdict ({_unlike(row, key)})"
    return MISSING


def lineage(frames: Frames) -> Section:
    """Exercise 1: each variant against its parent, absolute values and change; a change gets a
    verdict only when the pair is alike (one input size; one training size for accuracy) and
    the run resolves it."""
    section = Section(
        "Exercise 1 — GoogLeNet variants as a lineage",
        "Each variant against its parent, measured in the same runs (same profile, same seeds). "
        "Change = (variant − parent) / parent; test accuracy changes in percentage points (pp). "
        "Latency (inference, batch 1) and training throughput (train mode, the largest batch both "
        "measured) are called faster or slower only when the 95% interval of their ratio over the "
        "run's rounds excludes 1 and the change is at least what the run resolves there (see the "
        "header); peak memory beyond the identical pair's spread; test accuracy from "
        f"{MIN_SEEDS} seeds a side, by an interval over the seeds. Otherwise 'not resolved'. A pair "
        "measured at different sizes gets its numbers and no change or verdict.",
        figure="lineage",
    )
    frame = frames.lineage
    if not len(frame):
        section.sentences.append("No variant and its parent were both measured in these runs.")
        return section
    control = frames.control
    if control is not None and not control.passed:
        section.warning = verdicts.control_headline(control)
    rows, called, unlike = [], [], []
    for row in frame.to_dict("records"):
        shown = {"variant": row["variant"], "parent": row["parent"],
                 "input (variant / parent)": f"{row['input']} / {row['parent_input']}"}  # fmt: skip
        for key, f in LINEAGE_FIELDS.items():
            shown[f.label] = _headline(row, key)
            comparable = (row["trained_alike"] if f.points else row["alike"]) or not f.by_size
            shown[f"{f.label} change"] = _change_of(row, key) if comparable else (
                f"— ({_unlike(row, key)}: parent {_headline({**row, key: row[f'{key} parent']}, key)})")  # fmt: skip
            if key in _JUDGED:
                shown[f"{f.label} verdict"] = _judged_cell(row, key)
                judged = row[f"{key} noise"]
                if judged is not None and judged.significant:
                    called.append((row["variant"], f.label, _change_of(row, key), judged.verdict))
        if not row["alike"]:
            unlike.append(row)
        rows.append(shown)
    batches = sorted({b for b in frame["train_batch"] if b is not None})
    section.add_table(
        "Variants against their parents (train images/s at batch "
        f"{', '.join(map(str, batches)) or MISSING})", rows,
    )  # fmt: skip
    section.answer = _lineage_answer(frames, frame, called, unlike)
    return section


def _lineage_answer(frames: Frames, frame: pd.DataFrame, called: list, unlike: list) -> str:
    """What the lineage resolves, first; then what it cannot, and why."""
    control = frames.control
    answer = []
    if called:
        what = "; ".join(f"{v} {label} {c} ({verdict})" for v, label, c, verdict in called[:5])
        more = f" and {len(called) - 5} more (table)" if len(called) > 5 else ""
        answer.append(f"Changes this run resolves: {what}{more}.")
    else:
        answer.append("This run resolves no variant's change of latency, throughput, memory or "
                      "accuracy against its parent.")  # fmt: skip
    if control is not None and not control.passed:
        answer.append("The noise control did not pass (warning above): where it failed, only "
                      "changes beyond its interval are called.")  # fmt: skip
    seeds = [r["seeds"] for r in frame.to_dict("records") if r["seeds"]]
    if seeds and min(seeds) < MIN_SEEDS:
        answer.append(
            f"Accuracy differences are not judged: {min(seeds)} seed(s) per network, and a call "
            f"needs {MIN_SEEDS} a side (the spread from seed to seed is not known from fewer)."
        )
    if unlike:
        names = ", ".join(f"{r['variant']} ({r['input']} vs {r['parent_input']} px)" for r in unlike)
        answer.append(f"No size-dependent verdict for {names}: measured at another input than "
                      "its parent (exercise 3 compares them at one size).")  # fmt: skip
    return " ".join(answer)

