"""Which called changes are regressions: one predicate for ``cnnbench compare --fail-on`` and for a
history's gate, so that "worse beyond the threshold" means the same thing in both."""

from __future__ import annotations

import pandas as pd

from ..results.types import value_info

__all__ = ["beyond", "regressions"]


def beyond(change: float | None, better: str, threshold: float) -> bool:
    """A change (relative, B against A) that is worse by more than ``threshold``: a lower-is-better
    value rising, a higher-is-better one falling; any change of an exact count (or one whose size
    is unknown) counts."""
    if better == "exact" or change is None:
        return True
    return change > threshold if better == "lower" else change < -threshold


def _worse(row: dict, threshold: float) -> bool:
    value = row["value"]
    if value == "status":  # B failed where A did not; a failure that B fixed is no regression
        return row["A"] == "ok" and row["B"] != "ok"
    info = value_info(value)
    if info is not None and info.points:  # an accuracy: any called drop, in points not per cent
        return row["B"] < row["A"]
    return beyond(row.get("change"), info.better if info else "exact", threshold)


def regressions(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The called changes of a compare frame that are worse (:func:`beyond` ``threshold``, a
    fraction), a lower accuracy, a record ok in A and not in B. Changes not called (not
    resolved, or across hardware unless asked) are never regressions."""
    worse = [r for r in frame.to_dict("records") if r["significant"] and _worse(r, threshold)]
    return pd.DataFrame(worse, columns=frame.columns, dtype=object)
