"""Does a speed trick cost accuracy? Each trick (channels_last, torch.compile, bf16/fp16
autocast, TF32, CUDA graphs) against fp32 eager, per model and mode, from ordinary records:
latency (inference and a training step) and accuracy, at the trick's spec and at its baseline's
(``config.trick_baseline``: the same spec in fp32, contiguous, eager; ``--metrics tricks`` plans
both at the training run's input side and batch).

- Speed-up: baseline latency / trick latency, from ``noise.latency_change`` (paired round by round
  when the records come from one run, floored at what the run resolves there) with its interval
  inverted; its verdict is the rule's: "faster", "slower" or not resolved.
- Accuracy: paired by seed. The same seed gives both sides the same initial weights and data
  order, so the per-seed differences (trick − baseline) are the replicates, and a t interval
  over them (``stats.paired_difference_interval``) holds the trick's effect without the
  seed-to-seed spread the two sides share. Refused (:data:`NOT_COMPARABLE`) when the two sides
  trained different seeds, or either finished fewer than ``noise.MIN_SEEDS``.
- Verdict: :data:`COSTS_ACCURACY` when the accuracy interval lies below 0 (``stats.call``) and
  reaches past :data:`EQUIVALENCE_MARGIN` (a resolved loss within it is negligible, as for FREE);
  :data:`FREE` when the speed-up is called "faster" and the accuracy interval rules out a loss
  larger than :data:`EQUIVALENCE_MARGIN` (an equivalence bound); otherwise not resolved, with the
  side (speed, accuracy) that did not resolve. CUDA graphs change no training (the trained
  network is the baseline's own record): their verdict is the speed's alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import stats
from ..config import TRICKS, trick_baseline, trick_of, trick_spec
from ..results import Record, Spec
from .frames import Frames, result_of
from .noise import MIN_SEEDS, finals_by_seed, latency_change

__all__ = [
    "COSTS_ACCURACY",
    "EQUIVALENCE_MARGIN",
    "FREE",
    "NOT_COMPARABLE",
    "NOT_MEASURED",
    "NO_BASELINE",
    "SEEDS_DIFFER",
    "TOO_FEW_SEEDS",
    "TRAINING_UNCHANGED",
    "AccuracyDifference",
    "SpeedUp",
    "TrickRow",
    "Tricks",
    "accuracy_difference",
    "speed_up",
    "tricks",
    "verdict",
]

FREE, COSTS_ACCURACY, NOT_COMPARABLE = "free", "costs accuracy", "not comparable"
# The loss of accuracy a trick may cost and still be called free: 1 pp of test accuracy. An
# equivalence bound, not a test of "no change": with 3 seeds of a short training the interval of
# a difference is a few pp wide, and "no difference resolved" would call a trick free because the
# run was too noisy to see its cost. 1 pp is below the seed-to-seed spread of the chapter's short
# trainings (REFERENCE.md: 0.847-0.885 across builds for one network), so a trick within it
# changes nothing a reader of this benchmark would act on; a wider interval is not resolved.
EQUIVALENCE_MARGIN = 0.01
# why a side has no number: no record of the trick's or the baseline's spec with values (its
# status and reason are kept beside); the trick changes no training (CUDA graphs)
NOT_MEASURED, NO_BASELINE, TRAINING_UNCHANGED = "not measured", "no baseline", "training unchanged"
# why an accuracy difference was refused
SEEDS_DIFFER, TOO_FEW_SEEDS = "seeds differ", "too few seeds"
_INFERENCE_ONLY = ("cuda_graphs",)
CHANCE = 0.1  # Fashion-MNIST's 10 classes


@dataclass(frozen=True)
class SpeedUp:
    """The trick's speed against its baseline in one mode (images/s ratio: > 1 is faster)."""

    speedup: float  # baseline latency / trick latency
    low: float | None  # its 95% interval (the latency ratio's, inverted); None without one
    high: float | None
    verdict: str  # "faster", "slower" or stats.NOT_RESOLVED: the trick against the baseline
    floor: float  # the smallest change the run calls here (relative)
    method: str  # noise.PAIRED, UNPAIRED or IQR_RULE
    baseline_ms: float  # median latencies
    trick_ms: float
    compile_s: float | None = None  # the trick's compile time (torch.compile), slowest round

    @property
    def called(self) -> bool:
        return self.verdict == "faster"


@dataclass(frozen=True)
class AccuracyDifference:
    """Trick − baseline test accuracy, paired by seed (fractions: 0.01 is 1 pp)."""

    baseline_seeds: tuple[int, ...]  # the seeds each side trained
    trick_seeds: tuple[int, ...]
    seeds: tuple[int, ...] = ()  # paired: finished on both sides
    per_seed: tuple[float, ...] = ()  # trick − baseline, per paired seed
    difference: float | None = None  # their mean
    low: float | None = None  # its 95% t interval over the paired seeds
    high: float | None = None
    verdict: str = stats.NOT_RESOLVED  # "higher", "lower", NOT_RESOLVED or NOT_COMPARABLE
    refused: str = ""  # SEEDS_DIFFER or TOO_FEW_SEEDS; "" when judged
    finished: tuple[int, int] = (0, 0)  # finished seeds of the baseline and of the trick
    means: tuple[float | None, float | None] = (None, None)  # over each side's finished seeds
    # both sides no better than guessing (within the test set's 95% interval of 1 in 10 classes):
    # equal accuracies there say nothing about the trick, so it is never called free on them
    at_chance: bool = False


@dataclass(frozen=True)
class TrickRow:
    """One model × trick × mode, at one input side and batch."""

    model: str
    trick: str  # one of config.TRICKS
    mode: str  # "inference" or "train" (the timed step; the accuracy is the training's)
    image_size: int
    batch_size: int
    speed: SpeedUp | None
    accuracy: AccuracyDifference | None
    verdict: str  # FREE, COSTS_ACCURACY, stats.NOT_RESOLVED or NOT_COMPARABLE
    unresolved: tuple[str, ...] = ()  # not resolved: "speed" and/or "accuracy"
    speed_missing: str = ""  # NOT_MEASURED or NO_BASELINE where speed is None
    accuracy_missing: str = ""  # NOT_MEASURED, NO_BASELINE or TRAINING_UNCHANGED
    failures: tuple[str, ...] = ()  # "status: reason" of the records behind a missing side


@dataclass(frozen=True)
class Tricks:
    """The finding: one row per model × trick × mode found in the records."""

    rows: tuple[TrickRow, ...]
    margin: float = EQUIVALENCE_MARGIN  # the equivalence bound of FREE (fraction)
    min_seeds: int = MIN_SEEDS

    @property
    def measured(self) -> bool:
        return bool(self.rows)


def speed_up(baseline, trick, *, paired: bool, floor: float) -> SpeedUp:
    """The trick's ``LatencyResult`` against the baseline's, by the run's rule."""
    change = latency_change(baseline, trick, paired=paired, floor=floor).throughput()
    return SpeedUp(change.ratio, change.low, change.high, change.verdict, change.floor,
                   change.method, baseline.latency_ms_p50, trick.latency_ms_p50,
                   trick.compile_s)  # fmt: skip


def accuracy_difference(baseline, trick) -> AccuracyDifference:
    """Trick − baseline (two ``TrainResult``), paired by seed; refused when the seed tuples
    differ or a side finished fewer than ``MIN_SEEDS`` seeds."""
    a, b = finals_by_seed(baseline), finals_by_seed(trick)
    means = tuple(sum(f.values()) / len(f) if f else None for f in (a, b))
    found = AccuracyDifference(tuple(baseline.seeds), tuple(trick.seeds),
                               finished=(len(a), len(b)), means=means)  # fmt: skip
    if sorted(baseline.seeds) != sorted(trick.seeds):  # paired by seed below, in any order
        return dataclasses.replace(found, verdict=NOT_COMPARABLE, refused=SEEDS_DIFFER)
    seeds = tuple(s for s in baseline.seeds if s in a and s in b)
    if min(len(a), len(b), len(seeds)) < MIN_SEEDS:
        return dataclasses.replace(found, seeds=seeds, verdict=NOT_COMPARABLE, refused=TOO_FEW_SEEDS)
    base, ours = [a[s] for s in seeds], [b[s] for s in seeds]
    guessing = stats.binomial_interval(CHANCE, max(1, min(baseline.test_images, trick.test_images))).high
    found = dataclasses.replace(found, at_chance=max(means) <= guessing)
    iv = stats.paired_difference_interval(base, ours)
    judged = stats.call(iv, none=0.0, relative=False, up="higher", down="lower")
    return dataclasses.replace(found, seeds=seeds, per_seed=tuple(y - x for x, y in zip(base, ours)),
                               difference=iv.estimate, low=iv.low, high=iv.high, verdict=judged)  # fmt: skip


def verdict(speed: SpeedUp | None, accuracy: AccuracyDifference | None, *,
            training_unchanged: bool = False, margin: float = EQUIVALENCE_MARGIN
            ) -> tuple[str, tuple[str, ...]]:  # fmt: skip
    """(the verdict, the sides that did not resolve) by the module docstring's rule."""
    if accuracy is not None and accuracy.refused:
        return NOT_COMPARABLE, ()
    # a loss is a cost only where it may pass the margin: a resolved loss of 0.2 pp (paired
    # seeds resolve that small a change) is as negligible as the margin says "free" tolerates
    if accuracy is not None and accuracy.verdict == "lower" and accuracy.low < -margin:
        return COSTS_ACCURACY, ()
    unresolved = []
    if speed is None or not speed.called:
        unresolved.append("speed")
    if not training_unchanged and (accuracy is None or accuracy.low is None or accuracy.at_chance
                                   or accuracy.low < -margin):  # fmt: skip
        unresolved.append("accuracy")
    return (stats.NOT_RESOLVED, tuple(unresolved)) if unresolved else (FREE, ())


def _index(records: list[Record]) -> dict[tuple[str, Spec], Record]:
    """(metric, spec) → its record (the first with values, else the first at all)."""
    out: dict[tuple[str, Spec], Record] = {}
    for r in records:
        if r.metric in ("latency", "accuracy"):
            held = out.get((r.metric, r.spec))
            if held is None or (not held.values and r.values):
                out[(r.metric, r.spec)] = r
    return out


def _usable(r: Record | None, metric: str) -> bool:
    """A record whose values can be read: a latency that is ok; a training with its seeds (a
    diverged one too: its finished seeds count, the diverged ones do not)."""
    return r is not None and bool(r.values) and (metric == "accuracy" or r.status == "ok")


def _pair(index: dict, metric: str, spec: Spec) -> tuple[object | None, object | None, str, tuple]:
    """(baseline result, trick result, why a side is missing, failed records' "status: reason")."""
    ours, theirs = index.get((metric, spec)), index.get((metric, trick_baseline(spec)))
    failed = tuple(f"{r.status}: {r.reason}" for r in (theirs, ours) if r is not None and r.status != "ok")
    if not _usable(ours, metric):
        return None, None, NOT_MEASURED, failed
    if not _usable(theirs, metric):
        return None, None, NO_BASELINE, failed
    return result_of(theirs), result_of(ours), "", failed


def _row(frames: Frames, index: dict, spec: Spec, trick: str, mode: str) -> TrickRow | None:
    """The row of ``trick`` at ``spec``'s model, size and batch in ``mode``; None when neither
    the trick nor its baseline was measured there in that mode."""
    at = trick_spec(trick_baseline(dataclasses.replace(spec, mode=mode)), trick)
    trained = trick_spec(trick_baseline(dataclasses.replace(spec, mode="train")), trick)
    base_lat, lat, speed_missing, failed = _pair(index, "latency", at)
    speed = None
    if lat is not None:
        speed = speed_up(base_lat, lat, paired=frames.paired,
                         floor=frames.floor(mode, spec.batch_size))  # fmt: skip
    unchanged = trick in _INFERENCE_ONLY
    accuracy, accuracy_missing = None, TRAINING_UNCHANGED if unchanged else ""
    if not unchanged:
        base_acc, acc, accuracy_missing, acc_failed = _pair(index, "accuracy", trained)
        failed += acc_failed
        accuracy = accuracy_difference(base_acc, acc) if acc is not None else None
    if speed is None and accuracy is None and (("latency", at) not in index):
        return None
    judged, unresolved = verdict(speed, accuracy, training_unchanged=unchanged)
    return TrickRow(spec.model, trick, mode, spec.image_size, spec.batch_size, speed, accuracy,
                    judged, unresolved, speed_missing, accuracy_missing, failed)  # fmt: skip


def tricks(frames: Frames) -> Tricks:
    """Every model × trick × mode whose trick or baseline records are in ``frames``, in model,
    trick (``config.TRICKS``) and mode order."""
    index = _index(frames.records)
    # where a baseline was measured: a trick record elsewhere (a run's --channels-last at its own
    # sizes) is no experiment of this finding
    baselines = {(s.model, s.image_size, s.batch_size) for _, s in index if trick_baseline(s) == s}
    found = {}  # (model, trick, size, batch) → a spec of it
    for _, spec in index:
        trick, where = trick_of(spec), (spec.model, spec.image_size, spec.batch_size)
        if trick is not None and where in baselines:
            found.setdefault((spec.model, trick, spec.image_size, spec.batch_size), spec)
    order = {m: i for i, m in enumerate(frames.models)}
    rows = []
    for key in sorted(found, key=lambda k: (order.get(k[0], 0), TRICKS.index(k[1]), k[2], k[3])):
        trick = key[1]
        for mode in ("inference",) if trick in _INFERENCE_ONLY else ("inference", "train"):
            row = _row(frames, index, found[key], trick, mode)
            if row is not None:
                rows.append(row)
    return Tricks(tuple(rows))
