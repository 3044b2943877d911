"""Verdicts in words: the findings of ``analysis.noise`` (a latency, memory or accuracy change, the
noise control) as table cells and clauses. The rule that decided them lives in analysis/; this
module only says what it decided."""

from __future__ import annotations

import math

from ..analysis.noise import (
    CONTROL_PAIR,
    IQR_RULE,
    MIN_SEEDS,
    AccuracyChange,
    Change,
    Control,
    MemoryChange,
)
from .fmt import MISSING

__all__ = ["control_describe", "control_headline", "interval_text", "not_called_why", "short", "text"]


def _iqr(c: Change) -> str:
    return MISSING if c.iqr_noise is None else f"±{100 * c.iqr_noise:.1f}%"


def _noise(c: Change, *, long: bool) -> str:
    """What a latency verdict rests on: the IQR rule's spread, no interval, or the interval."""
    if c.method == IQR_RULE:
        return f"{IQR_RULE} {_iqr(c)}, no samples" if long else f"IQR {_iqr(c)}"
    if not c.known:
        return f"no interval ({c.scope})" if long else "no interval"
    return f"95% CI {c.low:.2f}–{c.high:.2f}, {c.method}" if long else f"CI {c.low:.2f}–{c.high:.2f}"


def interval_text(c: Change) -> str:
    """'95% CI 0.97–1.04, paired' or 'IQR rule ±3.1%, no samples'."""
    return _noise(c, long=True)


def text(c: Change) -> str:
    """'x1.25 (95% CI 1.19–1.31, paired): slower' — the ratio, its noise and the verdict."""
    return f"x{c.ratio:.2f} ({interval_text(c)}): {c.verdict}"


def not_called_why(a: AccuracyChange) -> str:
    """Why an accuracy difference got no call: too few seeds, or an interval that includes 0."""
    if a.fewest_seeds is not None:
        return f"{a.fewest_seeds} seed{'s' if a.fewest_seeds > 1 else ''}: a call needs {MIN_SEEDS} a side"
    return "the interval over seeds includes no change"


def short(v: Change | MemoryChange | AccuracyChange) -> str:
    """A verdict and its noise for a table cell: 'slower, CI 1.19–1.31', 'more, beyond ±4%',
    'higher, CI +1.2 to +3.4 pp'."""
    if isinstance(v, MemoryChange):
        if v.threshold is None:
            return f"{v.verdict}, no noise estimate"
        side = "beyond" if v.significant else "within"
        return f"{v.verdict}, {side} ±{100 * v.threshold:.0f}%"
    if isinstance(v, AccuracyChange):
        if v.low is None:
            return f"{v.verdict}, {not_called_why(v)}"
        return f"{v.verdict}, CI {100 * v.low:+.1f} to {100 * v.high:+.1f} pp"
    return f"{v.verdict}, {_noise(v, long=False)}"


def control_describe(control: Control) -> str:
    """One clause per pair: 'inference b1 x1.02 (95% CI 0.95–1.09, paired): not resolved'."""
    return "; ".join(f"{p.mode} b{p.batch} {text(p.change)}" for p in control.pairs)


def control_headline(control: Control) -> str:
    """The noise control's outcome in one or two sentences: failed, without power, or passed."""
    a, b = CONTROL_PAIR
    if control.noisy:
        return (
            f"Noise control failed: {b} is the same network as {a} (only its training loss "
            f"differs), yet their latencies differ beyond the interval ({control_describe(control)}). "
            "The noise is larger than the intervals say: where it failed, no change smaller "
            "than the control's own is called in this report."
        )
    if not control.passed:
        parts = "; ".join(
            f"{p.mode} b{p.batch}: its interval reaches ±{100 * (p.change.half_width or math.inf):.1f}%"
            + (f", the run states {100 * p.stated.detectable:.1f}%" if p.stated else "")
            for p in control.pairs if not p.powered
        )  # fmt: skip
        return (
            f"Noise control without power: {b} and {a} agree ({control_describe(control)}), but the "
            f"interval is too wide to have seen the change the run says it detects ({parts}); "
            "there, no change smaller than the control's interval is called."
        )
    return (
        f"Noise control passed: {b} is the same network as {a}, their latencies agree, and "
        f"each interval is narrow enough to have seen the change the run detects "
        f"({control_describe(control)})."
    )
