"""When is a latency change a change? One rule for the lineage, the noise control and ``compare``.

Two latency records are compared by the ratio of their medians (B / A). Where both kept their
samples (schema 2), the ratio gets a 95% two-level bootstrap interval (``stats.ratio_interval``)
and a change is called only when that interval excludes 1 *and* the ratio is beyond
``stats.MIN_EFFECT`` (``stats.verdict``); otherwise it is "within noise". Records written before
samples were kept (schema 1) fall back to the earlier rule — a change larger than the larger
IQR/median of the two — and say so (``method``).

The noise control: ``googlenet_ls`` is ``googlenet`` (only its training loss differs), so their
latencies must agree at every mode and batch. If any of their ratios is called a change, the
run's machine noise is larger than the interval says, and no variant's latency change can be
trusted: the report says so in its header.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .. import stats
from ..results import Record
from .fmt import MISSING

__all__ = [
    "BOOTSTRAP",
    "CONTROL_PAIR",
    "IQR_RULE",
    "Change",
    "Control",
    "latency_change",
    "noise_control",
]

BOOTSTRAP = "bootstrap"
IQR_RULE = "IQR rule"
CONTROL_PAIR = ("googlenet", "googlenet_ls")  # the same network: any latency difference is noise


@dataclass(frozen=True)
class Change:
    """B against A for one latency comparison (ratio of median latencies, B / A)."""

    ratio: float
    low: float | None  # 95% bootstrap interval of the ratio; None under the IQR rule
    high: float | None
    verdict: str  # "slower", "faster" or "within noise" (B against A)
    method: str  # BOOTSTRAP, or IQR_RULE for records without samples
    iqr_noise: float | None = None  # IQR rule: the larger IQR/median of the two

    @property
    def significant(self) -> bool:
        return self.verdict != "within noise"

    def throughput(self) -> Change:
        """The same comparison as a ratio of throughputs (images/s, B / A = 1 / latency ratio)."""
        return Change(
            1 / self.ratio,
            None if self.high is None else 1 / self.high,
            None if self.low is None else 1 / self.low,
            self.verdict, self.method, self.iqr_noise,
        )  # fmt: skip

    def interval_text(self) -> str:
        """'95% CI 0.97–1.04' (bootstrap) or 'IQR rule ±3.1%, no samples'."""
        if self.method == BOOTSTRAP:
            return f"95% CI {self.low:.2f}–{self.high:.2f}"
        noise = MISSING if self.iqr_noise is None else f"±{100 * self.iqr_noise:.1f}%"
        return f"{IQR_RULE} {noise}, no samples"

    def short(self) -> str:
        """'slower, CI 1.19–1.31' or 'within noise, IQR ±4.2%': the verdict and its noise, for a
        table cell."""
        if self.method == BOOTSTRAP:
            return f"{self.verdict}, CI {self.low:.2f}–{self.high:.2f}"
        noise = MISSING if self.iqr_noise is None else f"±{100 * self.iqr_noise:.1f}%"
        return f"{self.verdict}, IQR {noise}"

    def text(self) -> str:
        """'x1.25 (95% CI 1.19–1.31): slower' — the ratio, its noise and the verdict."""
        return f"x{self.ratio:.2f} ({self.interval_text()}): {self.verdict}"


def _samples(result) -> bool:
    return bool(getattr(result, "times_ms", None))


@functools.lru_cache(maxsize=4096)
def _bootstrap(a_times, a_rounds, b_times, b_rounds) -> stats.Interval:
    return stats.ratio_interval(a_times, b_times, a_rounds, b_rounds)


def latency_change(a, b) -> Change:
    """B's median latency against A's (two ``LatencyResult``), with its verdict."""
    if _samples(a) and _samples(b):
        iv = _bootstrap(tuple(a.times_ms), a.round_sizes and tuple(a.round_sizes),
                        tuple(b.times_ms), b.round_sizes and tuple(b.round_sizes))  # fmt: skip
        return Change(iv.estimate, iv.low, iv.high, stats.verdict(iv), BOOTSTRAP)
    ratio = b.latency_ms_p50 / a.latency_ms_p50
    noise = max(a.iqr_over_median or 0.0, b.iqr_over_median or 0.0)
    verdict = "within noise"
    if abs(ratio - 1) > noise:
        verdict = "slower" if ratio > 1 else "faster"
    return Change(ratio, None, None, verdict, IQR_RULE, noise)


@dataclass(frozen=True)
class Control:
    """The googlenet_ls / googlenet latency ratios, one per (mode, batch) measured by both."""

    pairs: tuple[tuple[str, int, Change], ...]  # (mode, batch, googlenet_ls against googlenet)

    @property
    def noisy(self) -> bool:
        return any(change.significant for _, _, change in self.pairs)

    @property
    def methods(self) -> set[str]:
        return {change.method for _, _, change in self.pairs}

    def describe(self) -> str:
        """One sentence per pair: 'inference b1 x1.25 (95% CI 1.19–1.31): slower'."""
        return "; ".join(f"{mode} b{batch} {change.text()}" for mode, batch, change in self.pairs)

    def headline(self) -> str:
        a, b = CONTROL_PAIR
        rule = (
            "the IQR rule, as these records kept no samples"
            if self.methods == {IQR_RULE}
            else "a 95% bootstrap interval of the latency ratio and a minimum effect of "
            f"{100 * stats.MIN_EFFECT:.0f}%"
        )
        if self.noisy:
            return (
                f"Too noisy to compare variants: {b} is the same network as {a} (only its "
                f"training loss differs), yet their latencies differ beyond the noise by {rule} "
                f"({self.describe()}). Machine noise here is larger than the within-record "
                "spread, so no variant's latency or throughput change in this report can be "
                "told from noise."
            )
        return (
            f"Noise control passed: {b} is the same network as {a} and their latencies agree "
            f"within the noise by {rule} ({self.describe()})."
        )


def _spec_without_model(r: Record) -> tuple:
    s = r.spec
    return (s.image_size, s.batch_size, s.device, s.dtype, s.channels_last, s.compiled,
            s.threads, s.mode)  # fmt: skip


def noise_control(records: list[Record]) -> Control | None:
    """The control of ``records``; ``None`` unless both networks of the pair have ok latency
    records measured under the same conditions."""
    base, twin = CONTROL_PAIR
    ours = {}
    for r in records:
        if r.metric == "latency" and r.status == "ok" and r.spec.model == base:
            ours.setdefault(_spec_without_model(r), r)
    pairs = []
    for r in records:
        if r.metric == "latency" and r.status == "ok" and r.spec.model == twin:
            other = ours.get(_spec_without_model(r))
            if other is not None:
                pairs.append((r.spec.mode, r.spec.batch_size, latency_change(other.result, r.result)))  # fmt: skip
    pairs.sort(key=lambda p: (p[0] != "inference", p[1]))
    return Control(tuple(pairs)) if pairs else None
