"""Noise, from kept samples: bootstrap intervals of a median and of a ratio of medians.

Latency samples come in rounds (separate worker processes, interleaved across models); the
spread between rounds is usually larger than within one (other processes, frequency, caches), so
the bootstrap is two-level: draw rounds with replacement, then iterations with replacement inside
each drawn round, and take the median of what was drawn. The interval is the 2.5th and 97.5th
percentile of those medians (percentile bootstrap, 2,000 draws, a fixed seed so that a report
renders the same twice). With one round it is the ordinary bootstrap over iterations.

A change is called only when the interval of the ratio excludes 1 *and* the ratio is beyond a
minimum effect: below that, two identical networks measured apart differ by machine noise alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DRAWS",
    "MIN_EFFECT",
    "Interval",
    "split_rounds",
    "bootstrap_medians",
    "median_interval",
    "mean_interval",
    "t_975",
    "ratio_interval",
    "verdict",
]

DRAWS = 2000
SEED = 20261128
MIN_EFFECT = 0.05  # a latency ratio within 5% of 1 is not called a change, whatever its interval


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float  # 2.5th percentile of the bootstrap distribution
    high: float  # 97.5th percentile

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def split_rounds(times: Sequence[float], round_sizes: Sequence[int] | None) -> list[np.ndarray]:
    """``times`` cut into its rounds (one round when the sizes are unknown)."""
    t = np.asarray(times, dtype=np.float64)
    if not round_sizes:
        return [t]
    if sum(round_sizes) != t.size:
        raise ValueError(f"round sizes {list(round_sizes)} do not add up to {t.size} samples")
    return np.split(t, np.cumsum(round_sizes)[:-1])


def bootstrap_medians(
    rounds: list[np.ndarray], draws: int = DRAWS, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``draws`` medians of two-level bootstrap resamples of ``rounds``."""
    rng = rng or np.random.default_rng(SEED)
    out = np.empty(draws)
    n_rounds = len(rounds)
    for i in range(draws):
        picked = rng.integers(0, n_rounds, n_rounds) if n_rounds > 1 else [0]
        sample = np.concatenate([rounds[j][rng.integers(0, rounds[j].size, rounds[j].size)]
                                 for j in picked])  # fmt: skip
        out[i] = np.median(sample)
    return out


def median_interval(times: Sequence[float], round_sizes: Sequence[int] | None = None) -> Interval:
    """The median of ``times`` with its 95% two-level bootstrap interval."""
    rounds = split_rounds(times, round_sizes)
    meds = bootstrap_medians(rounds)
    low, high = np.percentile(meds, [2.5, 97.5])
    return Interval(float(np.median(np.concatenate(rounds))), float(low), float(high))


def ratio_interval(
    a: Sequence[float],
    b: Sequence[float],
    a_rounds: Sequence[int] | None = None,
    b_rounds: Sequence[int] | None = None,
) -> Interval:
    """median(b) / median(a) with a 95% interval, both sides resampled independently."""
    ra, rb = split_rounds(a, a_rounds), split_rounds(b, b_rounds)
    rng = np.random.default_rng(SEED)
    ratios = bootstrap_medians(rb, rng=rng) / bootstrap_medians(ra, rng=rng)
    low, high = np.percentile(ratios, [2.5, 97.5])
    estimate = float(np.median(np.concatenate(rb)) / np.median(np.concatenate(ra)))
    return Interval(estimate, float(low), float(high))


def verdict(ratio: Interval, min_effect: float = MIN_EFFECT) -> str:
    """"faster"/"slower" (b against a) when the interval excludes 1 and the effect is beyond
    ``min_effect``; else "within noise"."""
    if ratio.excludes(1.0) and abs(ratio.estimate - 1.0) > min_effect:
        return "slower" if ratio.estimate > 1.0 else "faster"
    return "within noise"


# Student's t, two-sided 95% (the 97.5th percentile), by degrees of freedom 1..30; beyond 30 the
# normal 1.96 is within 4% of it. (numpy has no t quantile and scipy is not a dependency.)
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t_975(dof: int) -> float:
    """Student's t 97.5th percentile for ``dof`` degrees of freedom (the normal's beyond 30)."""
    return T_975[dof - 1] if dof <= len(T_975) else 1.96


def mean_interval(values: Sequence[float]) -> Interval | None:
    """The mean of a few independent replicates (seeds) with its 95% t interval; None for fewer
    than two, which have no spread to judge by (a bootstrap of three seeds would be too narrow)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / np.sqrt(x.size)
    t = t_975(x.size - 1)
    return Interval(mean, mean - t * sem, mean + t * sem)
