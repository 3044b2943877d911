"""Time to accuracy, scored as MLPerf Training scores it (issue 24, part 3).

The clock is ``SeedRun.mlperf_time_to_target_s`` (measure/train.py): from the start of epoch 1's
training pass — after the untimed warm-up, which plays MLPerf's untimed initialization — to the
end of the evaluation that first reaches the target; training passes (data preparation inside)
and every evaluation count. Each seed is one run.

The score (MLPerf Training rules, "Benchmark results": olympic scoring): with at least
``MIN_RUNS`` runs, drop the fastest and the slowest and average the rest. A run that never
reaches the target counts as the slowest (an infinite time); two or more such runs make the
result invalid. Fewer runs: not scored.

The spread of the kept runs is their min–max, and a 95% interval of the trimmed mean by
Tukey and McLaughlin's rule (Wilcox's ``trimci``): the winsorized standard deviation over
(1 − 2γ)√n, Student's t with n − 2g − 1 degrees of freedom (g runs trimmed a side, γ = g / n).
A plain t over the kept runs would be too narrow: they are the middle of the sample, not a
sample. Winsorizing uses only the rank of an extreme, so one run that never reached the target
(infinite) does not break it: it is pulled in to the slowest kept run, as for any slowest run.

A run that converges much faster than the others is flagged (:func:`fast_runs`), in the spirit
of MLPerf's reference convergence points, which reject a submission whose runs need fewer epochs
than the reference runs allow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import stats
from ..results import Record, Spec
from .frames import Frames, result_of

__all__ = [
    "INVALID",
    "MIN_RUNS",
    "NO_CLOCK",
    "NO_TARGET",
    "NOT_MEASURED",
    "SCORED",
    "TOO_FEW_RUNS",
    "Olympic",
    "RunTime",
    "TimeToAccuracy",
    "fast_runs",
    "olympic_score",
    "time_to_accuracy",
    "trimmed_mean_interval",
]

# MLPerf Training scores image classification over 5 runs (other benchmarks over more); the
# olympic mean needs at least 3 left after dropping two, and 5 is MLPerf's own minimum
MIN_RUNS = 5
# verdicts (codes, not prose: report/ words them)
SCORED = "scored"
INVALID = "invalid"  # two or more runs never reached the target
TOO_FEW_RUNS = "too few runs"  # fewer than MIN_RUNS seeds
NO_TARGET = "no target"  # the run set no --target-accuracy
NO_CLOCK = "no MLPerf clock"  # a record written before the clock existed
NOT_MEASURED = "not measured"  # the accuracy record holds no values (error, unsupported)


@dataclass(frozen=True)
class Olympic:
    """MLPerf's olympic score of a set of runs' times (``None``: never reached the target)."""

    verdict: str  # SCORED, INVALID or TOO_FEW_RUNS
    score_s: float | None  # mean of the kept runs; None unless SCORED
    kept: tuple[int, ...] = ()  # indices (into the times given) of the runs averaged
    fastest: int | None = None  # index of the run dropped as the fastest
    slowest: int | None = None  # index of the run dropped as the slowest (a not-reached one first)
    not_reached: tuple[int, ...] = ()  # indices of the runs that never reached the target
    kept_min_s: float | None = None
    kept_max_s: float | None = None
    interval: stats.Interval | None = None  # the trimmed mean's 95% interval (module docstring)


def _order(times: Sequence[float | None]) -> list[int]:
    """Indices from fastest to slowest; a run that never reached the target is infinitely slow
    (ties keep the given order, so the choice of which equal run is dropped is stable)."""
    return sorted(range(len(times)), key=lambda i: math.inf if times[i] is None else times[i])


def trimmed_mean_interval(values: Sequence[float | None], trim: int = 1) -> stats.Interval | None:
    """The mean of ``values`` with ``trim`` dropped from each end, and its 95% interval by
    Tukey–McLaughlin (Wilcox's ``trimci``); ``None`` (a not-reached run) sorts as the largest.
    None when fewer than two values are kept or a kept value is missing."""
    n = len(values)
    order = _order(values)
    kept = [values[i] for i in order[trim : n - trim]]
    if len(kept) < 2 or any(v is None for v in kept):
        return None
    # winsorize: each trimmed value becomes the nearest kept one (a None among them included)
    wins = np.array([kept[0]] * trim + kept + [kept[-1]] * trim, dtype=np.float64)
    se = float(wins.std(ddof=1)) / ((1 - 2 * trim / n) * math.sqrt(n))
    mean = float(np.mean(kept))
    h = stats.t_975(len(kept) - 1) * se
    return stats.Interval(mean, mean - h, mean + h,
                          f"trimmed mean of {n} runs, {trim} dropped a side, Tukey-McLaughlin")  # fmt: skip


def olympic_score(times: Sequence[float | None]) -> Olympic:
    """MLPerf Training's score of the runs' ``times`` (``None``: never reached the target)."""
    not_reached = tuple(i for i, t in enumerate(times) if t is None)
    if len(times) < MIN_RUNS:
        return Olympic(TOO_FEW_RUNS, None, not_reached=not_reached)
    order = _order(times)
    fastest, slowest, kept = order[0], order[-1], tuple(sorted(order[1:-1]))
    if len(not_reached) >= 2:  # MLPerf: more than one run that does not converge voids it
        return Olympic(INVALID, None, fastest=fastest, slowest=slowest, not_reached=not_reached)
    middle = [times[i] for i in kept]
    return Olympic(SCORED, float(np.mean(middle)), kept, fastest, slowest, not_reached,
                   min(middle), max(middle), trimmed_mean_interval(times))  # fmt: skip


def fast_runs(epochs: Sequence[int | None]) -> tuple[bool, ...]:
    """Which runs converged much faster than the others: a run's epochs to target fewer than
    the others' 95% prediction bound allows, by more than one epoch.

    The others (the runs that reached the target, this one left out) give mean m and standard
    deviation s over k runs; a further run like them needs at least m − t(k−1)·s·√(1 + 1/k)
    epochs 97.5% of the time (Student's prediction interval). Epochs are whole: a run that
    reached the target at epoch e crossed it somewhere in (e − 1, e], so one epoch fewer is
    within the clock's own granularity, and only a run more than one epoch below the bound is
    flagged. With fewer than two others there is no spread to judge by, and nothing is flagged.
    Runs that never reached the target are left out of the others: their epochs are unknown
    (only more than the run's), and leaving them out can only flag fewer."""
    flags = []
    for i, e in enumerate(epochs):
        others = np.array([o for j, o in enumerate(epochs) if j != i and o is not None], float)
        if e is None or others.size < 2:
            flags.append(False)
            continue
        k = others.size
        bound = others.mean() - stats.t_975(k - 1) * others.std(ddof=1) * math.sqrt(1 + 1 / k)
        flags.append(bool(e < bound - 1))
    return tuple(flags)


@dataclass(frozen=True)
class RunTime:
    """One seed's run to the target."""

    seed: int
    reached: bool  # an epoch's test accuracy reached the target
    mlperf_s: float | None  # MLPerf's clock: passes and evaluations up to the target
    train_s: float | None  # the training passes alone up to the target (time_to_target_s)
    epochs_to_target: int | None
    epochs_run: int  # epochs trained (all, or up to divergence)
    diverged: bool
    best_test_accuracy: float | None  # the highest epoch's, to say how near a miss was
    fast: bool = False  # converged much faster than the others (:func:`fast_runs`)
    role: str = ""  # "kept", "fastest" or "slowest" (dropped) once scored; "" otherwise


@dataclass(frozen=True)
class TimeToAccuracy:
    """Time to accuracy of one model at one spec (device, size, dtype, ...): one accuracy
    record's seeds, scored as MLPerf Training does."""

    model: str
    spec: Spec
    verdict: str  # SCORED, INVALID, TOO_FEW_RUNS, NO_TARGET, NO_CLOCK, NOT_MEASURED
    target_accuracy: float | None
    runs: tuple[RunTime, ...] = ()
    score: Olympic | None = None  # None unless the runs have a clock to score
    epochs: int | None = None  # the most epochs a run had to reach the target
    train_images: int | None = None  # per epoch
    test_images: int | None = None  # each evaluation's
    reason: str | None = None  # NOT_MEASURED: the record's own reason
    # the median epoch's pass + evaluation over every run: the clock's step, since a run is
    # timed up to the end of a whole epoch's evaluation
    epoch_s_median: float | None = None

    @property
    def fast_seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs if r.fast)

    @property
    def not_reached_seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs if not r.reached)


def _run_time(run, target: float) -> RunTime:
    first = next((e for e in run.epochs if e.test_accuracy >= target), None)
    best = max((e.test_accuracy for e in run.epochs), default=None)
    return RunTime(
        seed=run.seed, reached=first is not None, mlperf_s=run.mlperf_time_to_target_s,
        train_s=run.time_to_target_s,
        epochs_to_target=run.epochs_to_target if first is not None else None,
        epochs_run=len(run.epochs), diverged=run.diverged, best_test_accuracy=best,
    )  # fmt: skip


def _roles(runs: list[RunTime], score: Olympic) -> tuple[RunTime, ...]:
    fast = fast_runs([r.epochs_to_target for r in runs])
    role = {i: "kept" for i in score.kept}
    if score.verdict == SCORED:
        role |= {score.fastest: "fastest", score.slowest: "slowest"}
    return tuple(dataclasses.replace(r, fast=fast[i], role=role.get(i, ""))
                 for i, r in enumerate(runs))  # fmt: skip


def _finding(record: Record) -> TimeToAccuracy:
    res, spec = result_of(record), record.spec
    if res is None:
        return TimeToAccuracy(spec.model, spec, NOT_MEASURED, None, reason=record.reason)
    sizes = dict(epochs=res.epochs, train_images=res.train_images, test_images=res.test_images)
    if res.target_accuracy is None:
        return TimeToAccuracy(spec.model, spec, NO_TARGET, None, **sizes)
    runs = [_run_time(r, res.target_accuracy) for r in res.runs]
    steps = [e.wall_s + e.eval_s for r in res.runs for e in r.epochs]
    sizes["epoch_s_median"] = float(np.median(steps)) if steps else None
    if any(r.reached and r.mlperf_s is None for r in runs):  # written before the clock
        return TimeToAccuracy(spec.model, spec, NO_CLOCK, res.target_accuracy, tuple(runs), **sizes)
    score = olympic_score([r.mlperf_s if r.reached else None for r in runs])
    return TimeToAccuracy(spec.model, spec, score.verdict, res.target_accuracy,
                          _roles(runs, score), score, **sizes)  # fmt: skip


def time_to_accuracy(frames: Frames) -> tuple[TimeToAccuracy, ...]:
    """One finding per accuracy record (a model at one spec), in the records' order."""
    return tuple(_finding(r) for r in frames.records if r.metric == "accuracy")
