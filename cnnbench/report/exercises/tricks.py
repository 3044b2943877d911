"""Does a speed trick cost accuracy? In words (the finding: ``analysis.tricks``)."""

from __future__ import annotations

from ...analysis.frames import Frames
from ...analysis.tricks import (
    COSTS_ACCURACY,
    FREE,
    NO_BASELINE,
    NOT_COMPARABLE,
    SEEDS_DIFFER,
    TRAINING_UNCHANGED,
    AccuracyDifference,
    SpeedUp,
    TrickRow,
    Tricks,
)
from ...analysis.tricks import tricks as find_tricks
from ..fmt import MISSING, points
from .common import Section

_TITLE = "Does a speed trick cost accuracy?"
_NOT_MEASURED = ("No speed trick was measured beside its fp32 eager baseline in these runs "
                 "(cnnbench run --metrics tricks).")  # fmt: skip
_LABELS = {"channels_last": "channels_last", "compile": "torch.compile", "bf16": "bf16 autocast",
           "fp16": "fp16 autocast + GradScaler", "tf32": "TF32", "cuda_graphs": "CUDA graphs"}  # fmt: skip


def tricks(frames: Frames) -> Section:
    """Each trick against fp32 eager: speed-up, accuracy difference paired by seed, verdict."""
    return section(find_tricks(frames))


def section(finding: Tricks) -> Section:
    margin = 100 * finding.margin
    intro = (
        "Each trick is timed (inference and a training step) and trained against fp32 eager "
        "(contiguous memory, no compilation) at the same input side, batch and seeds. Speed-up: "
        "the baseline's median latency over the trick's, with the 95% interval of the run's "
        "interleaved rounds, called only beyond what the run resolves. Accuracy: the trick's test "
        "accuracy minus the baseline's, seed by seed (the same seed: the same initial weights "
        "and data order), with a t interval over the seeds. Free: faster, and the accuracy "
        f"interval rules out a loss of more than {margin:g} pp; costs accuracy: the interval lies "
        f"below 0 and reaches past -{margin:g} pp; refused (not comparable) when the sides trained "
        f"other seeds or fewer than {finding.min_seeds}. A trick's inference and training rows "
        "share one accuracy: the network trained and evaluated with the trick against the one "
        "trained and evaluated without; it does not say what the trick does to a network "
        "trained in fp32 and only run with it."
    )
    out = Section(_TITLE, intro)
    if not finding.measured:
        out.sentences.append(_NOT_MEASURED)
        out.summary = "Speed tricks: not measured."
        return out
    out.add_table("each trick against fp32 eager, at the training run's input and batch",
                  [_table_row(r) for r in finding.rows])  # fmt: skip
    out.sentences += [_sentence(r, finding) for r in finding.rows]
    out.answer = _answer(finding)
    out.summary = "Speed tricks: " + _answer(finding)
    return out


def _interval(low, high, shown) -> str:
    return "" if low is None or high is None else f" ({shown(low)} to {shown(high)})"


def _speed_text(s: SpeedUp | None) -> str:
    if s is None:
        return MISSING
    return f"{s.speedup:.2f}x{_interval(s.low, s.high, lambda v: f'{v:.2f}')}"


def _accuracy_text(a: AccuracyDifference | None) -> str:
    if a is None or a.difference is None:
        return MISSING
    return f"{points(a.difference)}{_interval(a.low, a.high, points)}"


def _why(r: TrickRow) -> str:
    """What the verdict rests on, or what kept it from being made."""
    if r.verdict == NOT_COMPARABLE:
        a = r.accuracy
        if a.refused == SEEDS_DIFFER:
            return (f"seeds differ: baseline {_seeds(a.baseline_seeds)}, trick "
                    f"{_seeds(a.trick_seeds)}")  # fmt: skip
        return f"too few finished seeds: {a.finished[0]} and {a.finished[1]}"
    parts = []
    if r.speed is None:
        parts.append("speed " + ("no baseline timed" if r.speed_missing == NO_BASELINE else "not timed"))
    elif r.speed.verdict == "slower":
        parts.append("the trick is slower")
    elif "speed" in r.unresolved:
        parts.append(f"speed-up within the run's resolution ({100 * r.speed.floor:.1f}%)")
    if r.accuracy_missing == TRAINING_UNCHANGED:
        parts.append("training unchanged (inference only)")
    elif r.accuracy is None:
        parts.append("accuracy " + ("no baseline trained" if r.accuracy_missing == NO_BASELINE else "not trained"))
    elif "accuracy" in r.unresolved and r.accuracy.at_chance:
        parts.append("both sides at chance: equal accuracies there say nothing about the trick")
    elif "accuracy" in r.unresolved:
        parts.append("accuracy interval reaches below the margin")
    parts += list(r.failures)
    return "; ".join(parts)


def _seeds(seeds) -> str:
    return ",".join(map(str, seeds)) or "none"


def _table_row(r: TrickRow) -> dict:
    a = r.accuracy
    return {
        "model": r.model, "trick": _LABELS.get(r.trick, r.trick), "mode": r.mode,
        "input": r.image_size, "batch": r.batch_size,
        "speed-up (95% CI)": _speed_text(r.speed),
        "speed": r.speed.verdict if r.speed else MISSING,
        "accuracy Δ (95% CI)": _accuracy_text(a),
        "seeds": len(a.seeds) if a is not None and a.seeds else MISSING,
        "verdict": r.verdict, "why": _why(r),
    }  # fmt: skip


def _sentence(r: TrickRow, finding: Tricks) -> str:
    """One sentence per row, its numbers from the finding."""
    what = f"{r.model}, {_LABELS.get(r.trick, r.trick)}, {r.mode} b{r.batch_size} at {r.image_size}px"
    speed = "speed not measured" if r.speed is None else f"{_speed_text(r.speed)} ({r.speed.verdict})"
    if r.speed is not None and r.speed.compile_s is not None:
        speed += f" after {r.speed.compile_s:.0f} s of compiling"
    a = r.accuracy
    if r.accuracy_missing == TRAINING_UNCHANGED:
        acc = "training unchanged"
    elif a is None or a.difference is None:
        acc = "accuracy not compared"
    else:
        per_seed = ", ".join(points(d) for d in a.per_seed)
        acc = f"accuracy {_accuracy_text(a)} over seeds {_seeds(a.seeds)} ({per_seed})"
    tail = f": {_why(r)}" if r.verdict != FREE and _why(r) else ""
    return f"{what}: {speed}; {acc} — {r.verdict}{tail}."


def _answer(finding: Tricks) -> str:
    """The verdicts counted, and the tricks that cost accuracy or are free, by name."""
    counts: dict[str, int] = {}
    for r in finding.rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    said = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    named = []
    for v in (FREE, COSTS_ACCURACY):
        rows = sorted({f"{r.model} {_LABELS.get(r.trick, r.trick)} ({r.mode})" for r in finding.rows
                       if r.verdict == v})  # fmt: skip
        if rows:
            named.append(f"{v}: {', '.join(rows)}")
    return f"{len(finding.rows)} model × trick × mode comparisons: {said}" + (
        f" — {'; '.join(named)}." if named else ".")
