"""When is a change a change? The lineage, the noise control and ``compare`` ask here; the rule
itself is ``stats.call``.

Latency: two records are compared by the ratio of their medians (B / A) with the 95% interval of
their round medians' ratio (``stats.ratio_interval``): paired round by round when both come from
one run whose rounds interleaved them, unpaired (Welch) otherwise. A change is called only when
that interval excludes 1 and the change is at least the floor — the smallest change the run can
resolve there (:class:`RunNoise`), raised where the noise control says the run resolves less.
Records written before samples were kept (schema 1) fall back to the IQR rule, and say so.

The noise control: ``googlenet_ls`` is ``googlenet`` (only its training loss differs), so their
latencies must agree at every mode and batch. It passes only when every ratio is not called *and*
its interval is narrow enough to have seen a change of the size the run says it detects; where it
does not, the run resolves no better than the control's interval, and that becomes the floor.

Memory is measured once per unit: the identical pair's peaks (one per mode) are its only noise
sample, and a memory change is called only beyond Student's t times their spread.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .. import stats
from ..config import MIN_SEEDS  # seeds per side before an accuracy difference is judged
from ..results import Record

__all__ = [
    "CONTROL_PAIR",
    "IQR_RULE",
    "PAIRED",
    "UNPAIRED",
    "MIN_SEEDS",
    "AccuracyChange",
    "Change",
    "Control",
    "ControlPair",
    "MemoryNoise",
    "RunNoise",
    "accuracy_change",
    "latency_change",
    "memory_noise",
    "noise_control",
    "round_medians",
    "run_noise",
    "table_resolution",
]

PAIRED, UNPAIRED, IQR_RULE = "paired", "unpaired", "IQR rule"
CONTROL_PAIR = ("googlenet", "googlenet_ls")  # the same network: any latency difference is noise


@dataclass(frozen=True)
class Change:
    """B against A for one latency comparison (ratio of median latencies, B / A)."""

    ratio: float
    low: float | None  # 95% interval of the ratio; None without one (IQR rule, one round)
    high: float | None
    verdict: str  # "slower", "faster" or stats.NOT_RESOLVED (B against A)
    method: str  # PAIRED, UNPAIRED or IQR_RULE
    floor: float = 0.0  # the smallest change this comparison could be called at
    scope: str = ""  # what the interval covers
    iqr_noise: float | None = None  # IQR rule: the larger IQR/median of the two

    @property
    def significant(self) -> bool:
        return self.verdict != stats.NOT_RESOLVED

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        """The interval's larger distance from 1 in log terms, as a relative change (0.08: 8%)."""
        if not self.known:
            return None
        return math.expm1(max(abs(math.log(self.low)), abs(math.log(self.high))))

    def throughput(self) -> Change:
        """The same comparison as a ratio of throughputs (images/s, B / A = 1 / latency ratio)."""
        return Change(
            1 / self.ratio,
            None if self.high is None else 1 / self.high,
            None if self.low is None else 1 / self.low,
            self.verdict, self.method, self.floor, self.scope, self.iqr_noise,
        )  # fmt: skip


def round_medians(result) -> tuple[float, ...] | None:
    """A latency result's round medians (kept, or from its samples); None without samples."""
    if getattr(result, "round_medians_ms", None):
        return tuple(result.round_medians_ms)
    if getattr(result, "times_ms", None):
        return tuple(stats.round_medians(result.times_ms, result.round_sizes))
    return None


@functools.lru_cache(maxsize=4096)
def _interval(a: tuple, b: tuple, paired: bool):
    return stats.ratio_interval(a, b, paired=paired)


def latency_change(a, b, *, paired: bool, floor: float = 0.0) -> Change:
    """B's median latency against A's (two ``LatencyResult``), with its verdict. ``paired``:
    the two come from one run whose rounds interleaved them; ``floor``: the smallest change to
    call (the run's resolution there). With rounds, the ratio is the centre of its interval
    (``stats.ratio_interval``), not the ratio of the two pooled medians; without, it is that."""
    ma, mb = round_medians(a), round_medians(b)
    ratio = b.latency_ms_p50 / a.latency_ms_p50
    if ma is not None and mb is not None:
        pairs = paired and len(ma) == len(mb)
        iv, _ = _interval(ma, mb, pairs)
        return Change(iv.estimate, iv.low, iv.high, stats.call(iv, floor), PAIRED if pairs else UNPAIRED,
                      floor, iv.scope)  # fmt: skip
    noise = max(a.iqr_over_median or 0.0, b.iqr_over_median or 0.0)
    verdict = stats.NOT_RESOLVED
    if abs(ratio - 1) > max(noise, floor):
        verdict = "slower" if ratio > 1 else "faster"
    return Change(ratio, None, None, verdict, IQR_RULE, floor, "records without samples", noise)


# --- what a run resolves ----------------------------------------------------------------------


def _key(r: Record) -> tuple[str, int]:
    return r.spec.mode, r.spec.batch_size


@dataclass(frozen=True)
class RunNoise:
    """What one run's latencies resolve, per (mode, batch): the smallest change a comparison of
    two of its models can call there, from the noise of every model it measured there."""

    by_key: dict[tuple[str, int], stats.Resolution]
    paired: bool
    rounds: dict[tuple[str, int], int]

    def floor(self, mode: str, batch: int) -> float:
        found = self.by_key.get((mode, batch))
        return found.callable if found else 0.0


def run_noise(records: Iterable[Record], *, paired: bool) -> RunNoise:
    """The run's resolution at each (mode, batch) where at least one model has two rounds.

    The log round medians of the M models measured there with R rounds each form an M x R table.
    Paired (one run, interleaved rounds), a round's shared drift cancels in a ratio: the
    residual of a two-way fit (model + round) is the noise a pair sees, and a ratio of two models
    has standard error sqrt(2/R) times it, with R - 1 degrees of freedom, as each comparison's
    own paired t has. Unpaired (or one model), the spread of each model's rounds around its own
    mean, pooled, gives the same standard error with 2(R - 1) degrees of freedom (Welch's, for
    equal variances)."""
    tables: dict[tuple[str, int], dict[int, list[np.ndarray]]] = {}
    for r in records:
        if r.metric != "latency" or r.status != "ok":
            continue
        meds = round_medians(r.result)
        if meds is not None and len(meds) >= 2:
            tables.setdefault(_key(r), {}).setdefault(len(meds), []).append(np.log(meds))
    by_key, rounds = {}, {}
    for key, by_r in tables.items():
        r_count, rows = max(by_r.items(), key=lambda kv: len(kv[1]))  # the commonest R
        by_key[key] = table_resolution(np.array(rows), paired=paired)
        rounds[key] = r_count
    return RunNoise(by_key, paired, rounds)


def table_resolution(table: np.ndarray, *, paired: bool) -> stats.Resolution:
    """The resolution of an M x R table of log round medians (models x rounds, R >= 2), as
    :func:`run_noise` defines it."""
    m, r_count = table.shape
    resid = table - table.mean(axis=1, keepdims=True)
    if paired and m >= 2:
        resid = resid - resid.mean(axis=0, keepdims=True)
        sigma = math.sqrt((resid**2).sum() / ((m - 1) * (r_count - 1)))
        dof = r_count - 1
    else:
        sigma = math.sqrt((resid**2).sum() / (m * (r_count - 1)))
        dof = 2 * (r_count - 1)
    return stats.resolution(sigma * math.sqrt(2 / r_count), dof)


# --- the noise control ------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlPair:
    mode: str
    batch: int
    change: Change  # googlenet_ls against googlenet
    stated: stats.Resolution | None  # what the run says it detects here

    @property
    def noisy(self) -> bool:
        """The identical pair is called a change: the noise is larger than its interval says."""
        return self.change.significant

    @property
    def powered(self) -> bool:
        """Its interval is narrow enough to have seen a change of the size the run says it
        detects (80% of the time): no wider than ``stated.detectable``."""
        width = self.change.half_width
        return width is not None and self.stated is not None and width <= self.stated.detectable

    @property
    def floor(self) -> float:
        """The smallest change the run resolves here by this control: its interval's reach
        where it failed (noisy or without power), else nothing beyond the run's own."""
        if self.noisy or not self.powered:
            width = self.change.half_width
            return math.inf if width is None else max(width, abs(self.change.ratio - 1))
        return 0.0


@dataclass(frozen=True)
class Control:
    """The googlenet_ls / googlenet latency ratios, one per (mode, batch) measured by both."""

    pairs: tuple[ControlPair, ...]

    @property
    def noisy(self) -> bool:
        return any(p.noisy for p in self.pairs)

    @property
    def passed(self) -> bool:
        return not self.noisy and all(p.powered for p in self.pairs)

    @property
    def methods(self) -> set[str]:
        return {p.change.method for p in self.pairs}

    def floor(self, mode: str, batch: int) -> float:
        return max((p.floor for p in self.pairs if (p.mode, p.batch) == (mode, batch)), default=0.0)


def _spec_without_model(r: Record) -> tuple:
    s = r.spec
    return (s.image_size, s.batch_size, s.device, s.dtype, s.channels_last, s.compiled,
            s.threads, s.mode)  # fmt: skip


def _control_records(records: list[Record], metric: str) -> list[tuple[Record, Record]]:
    base, twin = CONTROL_PAIR
    ours = {}
    for r in records:
        if r.metric == metric and r.status == "ok" and r.spec.model == base:
            ours.setdefault(_spec_without_model(r), r)
    pairs = []
    for r in records:
        if r.metric == metric and r.status == "ok" and r.spec.model == twin:
            other = ours.get(_spec_without_model(r))
            if other is not None:
                pairs.append((other, r))
    pairs.sort(key=lambda p: (p[0].spec.mode != "inference", p[0].spec.batch_size))
    return pairs


def noise_control(records: list[Record], run: RunNoise | None = None) -> Control | None:
    """The control of ``records``, judged against what ``run`` says it resolves (computed from
    the records, paired, when not given); ``None`` unless both networks of the pair have ok
    latency records measured under the same conditions."""
    records = list(records)
    run = run if run is not None else run_noise(records, paired=True)
    pairs = []
    for a, b in _control_records(records, "latency"):
        key = _key(a)
        change = latency_change(a.result, b.result, paired=run.paired, floor=run.floor(*key))
        pairs.append(ControlPair(key[0], key[1], change, run.by_key.get(key)))
    return Control(tuple(pairs)) if pairs else None


# --- memory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryChange:
    """B against A for one peak-memory comparison, judged against the identical pair's spread."""

    change: float  # (B − A) / A
    verdict: str  # "more", "less" or stats.NOT_RESOLVED
    threshold: float | None  # the smallest change called; None: no noise estimate in the run

    @property
    def significant(self) -> bool:
        return self.verdict != stats.NOT_RESOLVED


@dataclass(frozen=True)
class MemoryNoise:
    """The identical pair's peak-memory differences, the only noise sample of a measurement made
    once per unit: a change is called beyond ``threshold`` (relative)."""

    log_differences: tuple[float, ...]  # log(googlenet_ls / googlenet), one per mode and batch
    threshold: float  # t(n) x their root mean square, as a relative change

    def judge(self, change: float | None) -> MemoryChange | None:
        if change is None or change <= -1:
            return None
        if abs(math.log1p(change)) <= math.log1p(self.threshold):
            return MemoryChange(change, stats.NOT_RESOLVED, self.threshold)
        return MemoryChange(change, "more" if change > 0 else "less", self.threshold)


def memory_noise(*runs: Iterable[Record]) -> MemoryNoise | None:
    """From the control pair's ok memory records at the same mode and batch, in each of ``runs``
    (pooled): their log differences d (each a draw of the noise of one difference, mean 0),
    their root mean square s with n degrees of freedom, and the threshold t_975(n) x s; None
    without two such pairs, or when every pair agreed to the byte: page-sized RSS steps can make
    two peaks equal, and a spread of 0 from so few draws would call every difference."""
    diffs = [math.log(b.result.measured_bytes / a.result.measured_bytes)
             for records in runs for a, b in _control_records(list(records), "memory")
             if a.result.measured_bytes > 0 and b.result.measured_bytes > 0]  # fmt: skip
    rms = math.sqrt(sum(d * d for d in diffs) / len(diffs)) if diffs else 0.0
    if len(diffs) < 2 or rms == 0:
        return None
    return MemoryNoise(tuple(diffs), math.expm1(stats.t_975(len(diffs)) * rms))


# --- accuracy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyChange:
    """B's mean test accuracy against A's, over their finished seeds."""

    difference: float  # mean(B) − mean(A), a fraction (0.05: +5 pp)
    low: float | None  # Welch's 95% interval, with MIN_SEEDS seeds a side
    high: float | None
    verdict: str  # "higher", "lower" or stats.NOT_RESOLVED
    seeds: tuple[int, int]  # finished seeds of A and of B
    fewest_seeds: int | None = None  # too few finished seeds a side to call: how many
    means: tuple[float, float] = (math.nan, math.nan)  # over the finished seeds of A and of B

    @property
    def significant(self) -> bool:
        return self.verdict != stats.NOT_RESOLVED


def finals_by_seed(result) -> dict[int, float]:
    """A ``TrainResult``'s final test accuracy per finished seed (a diverged seed has none)."""
    return {r.seed: r.final_test_accuracy for r in result.runs if r.final_test_accuracy is not None}


def _finals(result) -> list[float]:
    return list(finals_by_seed(result).values())


def accuracy_change(a, b) -> AccuracyChange | None:
    """B against A (two ``TrainResult``): judged only from ``MIN_SEEDS`` finished seeds a side,
    with an interval that holds the spread from seed to seed (Welch); None where a side has no
    finished seed."""
    if a is None or b is None:
        return None
    fa, fb = _finals(a), _finals(b)
    if not fa or not fb:
        return None
    means = (sum(fa) / len(fa), sum(fb) / len(fb))
    diff = means[1] - means[0]
    if min(len(fa), len(fb)) < MIN_SEEDS:
        fewest = min(len(fa), len(fb))
        return AccuracyChange(diff, None, None, stats.NOT_RESOLVED, (len(fa), len(fb)), fewest, means)
    iv = stats.difference_interval(fa, fb)
    verdict = stats.call(iv, none=0.0, relative=False, up="higher", down="lower")
    return AccuracyChange(diff, iv.low, iv.high, verdict, (len(fa), len(fb)), means=means)
