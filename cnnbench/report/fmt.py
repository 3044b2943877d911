"""The one way a number becomes text, for every table: Markdown, HTML, compare and the console.

- missing (``None`` or NaN) → ``—``, never ``nan`` or ``None``; text passes through;
- a count (an int, unscaled) keeps every digit, with thousands separators: ``5,977,530``;
- anything else is a measurement: ``fmt(value, digits, scale=...)`` divides by ``scale`` (2**20
  for MiB, 1e6 for millions) and prints ``digits`` decimals with thousands separators, or
  ``digits`` significant digits with ``significant=True`` (compare, whose rows mix units).

- a change is relative (``change``: ``+12.5%``), except an accuracy change, which is a difference
  in percentage points (``points``: ``+4.7 pp``);
- a utilization above 100% is not a utilization: ``utilization`` prints ``ABOVE_ROOF`` instead.

Sentences in the exercise sections keep their own f-strings: their precision is part of the prose.
"""

from __future__ import annotations

import numbers

from ..stats import is_missing

__all__ = [
    "ABOVE_ROOF",
    "MISSING",
    "is_missing",
    "fmt",
    "change",
    "points",
    "percent",
    "utilization",
    "accuracy",
    "shape",
]

MISSING = "—"
ABOVE_ROOF = "above roof (peak underestimated)"


def fmt(value, digits: int = 3, *, scale: float = 1, significant: bool = False) -> str:
    if is_missing(value):
        return MISSING
    if isinstance(value, (str, bool)):
        return str(value)
    if isinstance(value, numbers.Integral) and scale == 1:
        return f"{value:,}"
    return f"{value / scale:,.{digits}{'g' if significant else 'f'}}"


def change(value) -> str:
    """A relative change as a signed percentage: ``+1.2%``."""
    return MISSING if is_missing(value) else f"{100 * value:+.1f}%"


def points(value) -> str:
    """A difference of two accuracies (fractions) in percentage points: ``+4.7 pp``."""
    return MISSING if is_missing(value) else f"{100 * value:+.1f} pp"


def percent(value, digits: int = 1, *, suffix: str = "%") -> str:
    """A share as a percentage (``suffix=""`` where the column label says %)."""
    return MISSING if is_missing(value) else f"{100 * value:.{digits}f}{suffix}"


def utilization(value, above_roof: bool = False, *, suffix: str = "%") -> str:
    """MFU or a fraction of a roof: a percentage up to 100%; above it (or when the record says the
    roof was underestimated) ``ABOVE_ROOF`` — a broken peak, never a result."""
    if is_missing(value):
        return MISSING
    if above_roof or value > 1.0:
        return ABOVE_ROOF
    return percent(value, suffix=suffix)


def accuracy(mean, std, status: str | None, *, sep: str = " ± ") -> str:
    """A test accuracy with its seed std, and the record's status when it is not ok.

    A diverged record keeps its number (the mean over the seeds that finished) beside the mark;
    a record with no number shows its status alone.
    """
    if is_missing(mean):
        return status if status not in (None, "ok") else MISSING
    text = fmt(mean) + (f"{sep}{fmt(std)}" if not is_missing(std) and std else "")
    return text if status in (None, "ok") else f"{text} ({status})"


def shape(dims) -> str:
    """A tensor shape without the batch: ``3x96x96``."""
    return "x".join(str(d) for d in dims)
