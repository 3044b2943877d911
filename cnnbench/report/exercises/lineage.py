"""Exercise 1 in words: the GoogLeNet variants as a lineage, each against its parent
(the finding: ``analysis.lineage``)."""

from __future__ import annotations

from ...analysis.frames import LINEAGE_FIELDS, Frames
from ...analysis.lineage import Compared, Lineage, LineagePair
from ...analysis.lineage import lineage as find_lineage
from .. import verdicts
from ..fmt import MISSING, accuracy, change, fmt, points
from .common import Section

_TITLE = "Exercise 1 — GoogLeNet variants as a lineage"


def lineage(frames: Frames) -> Section:
    """Exercise 1: each variant against its parent, absolute values and change; a change gets a
    verdict only when the pair is alike (one input size; one training size for accuracy) and
    the run resolves it."""
    return section(find_lineage(frames))


def _intro(min_seeds: int) -> str:
    return (
        "Each variant against its parent, measured in the same runs (same profile, same seeds). "
        "Change = (variant − parent) / parent; test accuracy changes in percentage points (pp). "
        "Latency (inference, batch 1) and training throughput (train mode, the largest batch both "
        "measured) are called faster or slower only when the 95% interval of their ratio over the "
        "run's rounds excludes 1 and the change is at least what the run resolves there (see the "
        "header); peak memory beyond the identical pair's spread; test accuracy from "
        f"{min_seeds} seeds a side, by an interval over the seeds. Otherwise 'not resolved'. A "
        "pair measured at different sizes gets its numbers and no change or verdict."
    )


def section(finding: Lineage) -> Section:
    """The lineage table, the answer and the summary, from the finding alone."""
    section = Section(_TITLE, _intro(finding.min_seeds), figure="lineage")
    if not finding.pairs:
        section.sentences.append("No variant and its parent were both measured in these runs.")
        section.summary = "No variant and its parent were both measured: no lineage to compare."
        return section
    if finding.control is not None and not finding.control.passed:
        section.warning = verdicts.control_headline(finding.control)
    batches = ", ".join(map(str, finding.train_batches)) or MISSING
    section.add_table(f"Variants against their parents (train images/s at batch {batches})",
                      [_row(pair) for pair in finding.pairs])  # fmt: skip
    section.answer = _answer(finding)
    section.summary = _summary(finding)
    return section


def _value(c: Compared, value, status: str | None) -> str:
    """A number in the unit and decimals of its LINEAGE_FIELDS label; accuracy with its status
    when that is not ok."""
    if c.key == "test_accuracy_mean":
        return accuracy(value, None, status)
    f = LINEAGE_FIELDS[c.key]
    return fmt(value, f.digits, scale=f.scale)


def _change(c: Compared) -> str:
    return points(c.change) if LINEAGE_FIELDS[c.key].points else change(c.change)


def _unlike(pair: LineagePair, c: Compared) -> str:
    """Why a size-dependent number gets no change or verdict: '28 vs 96 px'."""
    if LINEAGE_FIELDS[c.key].points:
        return "trained at other sizes"
    return f"{pair.input_px} vs {pair.parent_input_px} px"


def _verdict_cell(pair: LineagePair, c: Compared) -> str:
    if c.verdict is not None:
        return verdicts.short(c.verdict)
    return MISSING if c.comparable else f"no verdict ({_unlike(pair, c)})"


def _row(pair: LineagePair) -> dict:
    shown = {"variant": pair.variant, "parent": pair.parent,
             "input (variant / parent)": f"{pair.input_px} / {pair.parent_input_px}"}  # fmt: skip
    for c in pair.values:
        label = LINEAGE_FIELDS[c.key].label
        shown[label] = _value(c, c.value, pair.accuracy_status)
        parent = _value(c, c.parent_value, pair.parent_accuracy_status)
        shown[f"{label} change"] = (_change(c) if c.comparable
                                    else f"— ({_unlike(pair, c)}: parent {parent})")  # fmt: skip
        if c.judged:
            shown[f"{label} verdict"] = _verdict_cell(pair, c)
    return shown


def _called_text(pair: LineagePair, c: Compared) -> str:
    """'googlenet_bn latency b1 ms +10.8% (slower)'."""
    return f"{pair.variant} {LINEAGE_FIELDS[c.key].label} {_change(c)} ({c.verdict.verdict})"


def _answer(finding: Lineage) -> str:
    """What the lineage resolves, first; then what it cannot, and why."""
    called = finding.called
    if called:
        what = "; ".join(_called_text(p, c) for p, c in called[:5])
        more = f" and {len(called) - 5} more (table)" if len(called) > 5 else ""
        answer = [f"Changes this run resolves: {what}{more}."]
    else:
        answer = ["This run resolves no variant's change of latency, throughput, memory or "
                  "accuracy against its parent."]  # fmt: skip
    if finding.control is not None and not finding.control.passed:
        answer.append("The noise control did not pass (warning above): where it failed, only "
                      "changes beyond its interval are called.")  # fmt: skip
    fewest = finding.fewest_seeds
    if fewest is not None and fewest < finding.min_seeds:
        answer.append(
            f"Accuracy differences are not judged: {fewest} seed(s) per network, and a call "
            f"needs {finding.min_seeds} a side (the spread from seed to seed is not known from "
            "fewer)."
        )
    if finding.unlike:
        names = ", ".join(f"{p.variant} ({p.input_px} vs {p.parent_input_px} px)"
                          for p in finding.unlike)  # fmt: skip
        answer.append(f"No size-dependent verdict for {names}: measured at another input than "
                      "its parent (exercise 3 compares them at one size).")  # fmt: skip
    return " ".join(answer)


def _summary(finding: Lineage) -> str:
    """How many of the judged changes the run resolves, where, the largest; then what it cannot
    resolve (accuracy with too few seeds, a failed noise control)."""
    called = finding.called
    counts: dict[str, int] = {}
    for pair, _ in called:
        counts[pair.variant] = counts.get(pair.variant, 0) + 1
    text = (f"Against their parents, this run resolves {len(called)} of the {finding.judged} "
            f"changes it judges across {len(finding.pairs)} variants")  # fmt: skip
    if counts:
        text += " — " + ", ".join(f"{n} in {v}" for v, n in counts.items())
    relative = [(p, c) for p, c in called if not LINEAGE_FIELDS[c.key].points]
    if relative:
        top = max(relative, key=lambda pc: abs(pc[1].change or 0.0))
        text += f"; the largest: {_called_text(*top)}"
    notes = []
    fewest = finding.fewest_seeds
    if fewest is not None and fewest < finding.min_seeds:
        notes.append(f"accuracy is not resolved ({fewest} seed(s) per network; a call needs "
                     f"{finding.min_seeds} a side)")  # fmt: skip
    if finding.control is not None and not finding.control.passed:
        notes.append("the noise control did not pass, so only changes beyond its interval are "
                     "called")  # fmt: skip
    if notes:
        first = "; ".join(notes)
        text += f". {first[0].upper()}{first[1:]}"
    return text + "."
