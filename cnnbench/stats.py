"""Noise, and the one rule that decides whether a difference is a change.

The replicate is the round — one worker process — not the iteration. On the 2-core reference
machine the medians of a model's rounds spread 5-11% (their log standard deviation) while the
iterations inside a round spread 2-4%, and most of the between-round spread is drift that hits
every model of a round alike (measured: ``cnnbench calibrate``, README). So:

- A median's interval comes from the round medians alone: Student's t on their logarithms
  (latencies are positive and their noise relative). Its scope is the processes of one run: it
  covers where that run's processes put the median, not the drift between runs, which only a
  history of runs shows (``report/trend.py``). One round has no interval.
- Within a run, rounds are interleaved (A B C A B C ...): round r of every model ran at about the
  same time, so two models' ratio comes from the per-round ratios (paired t), and the drift they
  share cancels. Across runs nothing is paired: Welch's t on the two runs' log round medians.
- Accuracy: seeds are the replicates (t over seeds); one seed has only the test set's binomial
  interval, which holds no training noise.
- A run resolves what its noise allows: :func:`resolution` is the smallest change a comparison
  with that noise can call (the half-width of its interval), with the change it would detect 80%
  of the time beside it. :func:`call` is the rule every comparison uses: a change is called only
  when its interval excludes "no change" *and* it is at least the floor (the run's resolution, a
  user's threshold); anything else is "not resolved".

Method chosen by simulation (tests/test_stats.py, with the noise measured here): at 3 rounds the
two-level bootstrap the report used before covered a known median in about 70% of data sets; t on
the log round medians reaches its nominal 95% at 3, 5 and 8 rounds.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CONFIDENCE",
    "POWER",
    "NOT_RESOLVED",
    "Interval",
    "Resolution",
    "binomial_interval",
    "call",
    "difference_interval",
    "mean_interval",
    "median_interval",
    "paired_difference_interval",
    "ratio_interval",
    "recorded_or_median_interval",
    "resolution",
    "round_medians",
    "split_rounds",
    "t_975",
    "t_quantile",
]

CONFIDENCE = 0.95  # every interval here is two-sided at this level
POWER = 0.80  # the detectable change quoted beside a resolution
NOT_RESOLVED = "not resolved"


# --- Student's t, by its density (numpy has no t quantile; scipy is not a dependency) ------------


def is_missing(value) -> bool:
    """No number: None or NaN (pandas turns a missing value into NaN)."""
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(x: float, dof: float) -> float:
    """P(T <= x) for Student's t: 1 - I_{dof/(dof+x^2)}(dof/2, 1/2) / 2 for x > 0."""
    tail = 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + x * x))
    return 1.0 - tail if x >= 0 else tail


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, dof: float) -> float:
    """The ``p`` quantile of Student's t with ``dof`` (> 0, not necessarily whole) degrees of
    freedom, by bisection on its distribution function."""
    if not 0 < p < 1 or dof <= 0:
        raise ValueError(f"t quantile needs 0 < p < 1 and dof > 0, got p={p}, dof={dof}")
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    low, high = 0.0, 1.0
    while _t_cdf(high, dof) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, dof) < p else (low, mid)
    return (low + high) / 2


def t_975(dof: float) -> float:
    """Student's t 97.5th percentile: the two-sided 95% multiplier."""
    return t_quantile(1 - (1 - CONFIDENCE) / 2, dof)


# --- intervals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided 95% interval and what the interval covers. ``low`` and
    ``high`` are None where the data hold no interval (one round, one seed)."""

    estimate: float
    low: float | None
    high: float | None
    scope: str = ""  # "between the 5 processes of this run", "over 3 seeds", ...

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    def excludes(self, value: float) -> bool:
        return self.known and (value < self.low or value > self.high)


def split_rounds(times: Sequence[float], round_sizes: Sequence[int] | None) -> list[np.ndarray]:
    """``times`` cut into its rounds (one round when the sizes are unknown)."""
    t = np.asarray(times, dtype=np.float64)
    if not round_sizes:
        return [t]
    if sum(round_sizes) != t.size:
        raise ValueError(f"round sizes {list(round_sizes)} do not add up to {t.size} samples")
    return np.split(t, np.cumsum(round_sizes)[:-1])


def round_medians(times: Sequence[float], round_sizes: Sequence[int] | None) -> np.ndarray:
    return np.array([float(np.median(r)) for r in split_rounds(times, round_sizes)])


def _log_t(logs: np.ndarray) -> tuple[float, float, int] | None:
    """(mean, standard error, degrees of freedom) of ``logs``; None below two values."""
    if logs.size < 2:
        return None
    return float(logs.mean()), float(logs.std(ddof=1) / math.sqrt(logs.size)), logs.size - 1


def median_interval(times: Sequence[float], round_sizes: Sequence[int] | None = None) -> Interval:
    """The median of all ``times`` with the 95% interval of its process's median: Student's t on
    the logarithms of the round medians (none with one round)."""
    rounds = split_rounds(times, round_sizes)
    estimate = float(np.median(np.concatenate(rounds)))
    fit = _log_t(np.log([float(np.median(r)) for r in rounds]))
    if fit is None:
        return Interval(estimate, None, None, "one process: no interval between processes")
    mean, se, dof = fit
    h = t_975(dof) * se
    return Interval(estimate, math.exp(mean - h), math.exp(mean + h),
                    f"between the {dof + 1} processes of this run")  # fmt: skip


def recorded_or_median_interval(low: float | None, high: float | None, times: Sequence[float],
                                round_sizes: Sequence[int] | None) -> tuple[float | None, float | None]:  # fmt: skip
    """A latency's 95% interval as its record holds it; where the record holds none but keeps
    its samples (records written before intervals were stored), ``median_interval`` of them."""
    if (low is None or high is None) and times:
        iv = median_interval(times, round_sizes)
        low, high = iv.low, iv.high
    return low, high


@dataclass(frozen=True)
class Resolution:
    """What a comparison with a given noise can call: ``callable`` is the smallest relative
    change whose interval excludes none (the interval's half-width); ``detectable`` the change
    it calls with ``POWER`` probability."""

    callable: float  # e.g. 0.08: changes below 8% are never called
    detectable: float  # e.g. 0.12: a 12% change is called 80% of the time
    se: float  # standard error of the log ratio
    dof: float


def resolution(se: float, dof: float) -> Resolution:
    """For a log-ratio standard error ``se`` with ``dof`` degrees of freedom."""
    t = t_975(dof)
    return Resolution(math.expm1(t * se), math.expm1((t + t_quantile(POWER, dof)) * se), se, dof)


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float] | None:
    """(mean difference b − a, its standard error, Welch-Satterthwaite degrees of freedom)."""
    if a.size < 2 or b.size < 2:
        return None
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return float(b.mean() - a.mean()), 0.0, float(a.size + b.size - 2)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(b.mean() - a.mean()), se, float(dof)


def ratio_interval(
    a_medians: Sequence[float], b_medians: Sequence[float], *, paired: bool,
) -> tuple[Interval, Resolution | None]:  # fmt: skip
    """B / A of two latencies from their round medians, with its 95% interval and the
    resolution of that comparison. ``paired``: round r of A and round r of B ran side by side
    (one run, interleaved), so the per-round log ratios are the replicates; otherwise Welch's t
    on the two sets of log round medians. The estimate is the interval's own centre: the
    geometric mean of the per-round ratios (paired) or the ratio of the geometric means. (A ratio
    of the pooled medians is not: a paired interval cancels a drift that it keeps, and a round
    with more samples weighs more in it; in CI a compile speed-up read 1.125 against its paired
    interval 1.097-1.098.)"""
    la, lb = np.log(np.asarray(a_medians, float)), np.log(np.asarray(b_medians, float))
    if paired and la.size == lb.size:
        fit = _log_t(lb - la)
        scope = f"paired over the {la.size} interleaved rounds of this run"
    else:
        fit = _welch(la, lb)
        scope = f"unpaired, {la.size} and {lb.size} processes"
    if fit is None:
        return Interval(float(np.exp(lb.mean() - la.mean())), None, None, "one process on a side: no interval"), None
    mean, se, dof = fit
    h = t_975(dof) * se
    return Interval(math.exp(mean), math.exp(mean - h), math.exp(mean + h), scope), resolution(se, dof)


def mean_interval(values: Sequence[float]) -> Interval | None:
    """The mean of a few independent replicates (seeds) with its 95% t interval; None for fewer
    than two, which have no spread to judge by (a bootstrap of three seeds would be too narrow)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(x.size)
    t = t_975(x.size - 1)
    return Interval(mean, mean - t * sem, mean + t * sem, f"over {x.size} seeds")


def difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """mean(b) − mean(a) of replicates (seeds) with Welch's 95% interval; None when a side has
    fewer than two."""
    fit = _welch(np.asarray(a, float), np.asarray(b, float))
    if fit is None:
        return None
    diff, se, dof = fit
    h = t_975(dof) * se
    return Interval(diff, diff - h, diff + h, f"over {len(a)} and {len(b)} seeds (Welch)")


def paired_difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """mean(b − a) of replicates paired one to one (the same seed on both sides: the same
    initial weights and data order), with the 95% t interval of the per-pair differences: what
    the pair shares (a lucky seed) cancels, as the rounds of a latency ratio do. None for fewer
    than two pairs; the two sides must be equally long."""
    if len(a) != len(b):
        raise ValueError(f"paired replicates need equal counts, got {len(a)} and {len(b)}")
    found = mean_interval(np.asarray(b, float) - np.asarray(a, float))
    if found is None:
        return None
    return Interval(found.estimate, found.low, found.high, f"paired over {len(a)} seeds")


def binomial_interval(accuracy: float, n: int) -> Interval:
    """Wilson's 95% interval of a proportion measured on ``n`` test images: the noise of the test
    set alone (a different seed would add the training's own)."""
    z = 1.959963984540054
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(accuracy, centre - half, centre + half, f"test set of {n:,} images, one seed")


# --- the rule ---------------------------------------------------------------------------------


def call(iv: Interval, floor: float = 0.0, *, none: float = 1.0, relative: bool = True,
         up: str = "slower", down: str = "faster") -> str:  # fmt: skip
    """The verdict on a difference: ``up``/``down`` when its interval excludes ``none`` (1 for a
    ratio, 0 for a difference) and the change is at least ``floor`` (relative: |log ratio| ≥
    log(1 + floor); absolute: |difference| ≥ floor); otherwise ``NOT_RESOLVED``."""
    if not iv.excludes(none):
        return NOT_RESOLVED
    size = abs(math.log(iv.estimate)) if relative else abs(iv.estimate - none)
    limit = math.log1p(floor) if relative else floor
    if size < limit:
        return NOT_RESOLVED
    return up if iv.estimate > none else down
