"""A history's rule: is the latest run of a series a change against the runs before it?

One rule for every value a history follows (``stats.call`` on an interval of "no change" that
holds the drift between runs where enough runs show it), and the gate that turns the calls of the
newest run into regressions. ``report.trend`` words and draws what this decides."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import pandas as pd

from .. import stats
from .compare import beyond

__all__ = ["DRIFT_RUNS", "MIN_CHANGE", "REFERENCE_RUNS", "Step", "gate", "latest_interval", "step"]


REFERENCE_RUNS = 5  # the latest run is judged against the ok runs among the five before it


DRIFT_RUNS = 3  # earlier ok runs needed to estimate the drift between runs


@dataclass(frozen=True)
class Step:
    """The latest run of a series against the runs before it."""

    change: float | None  # (latest − reference) / reference
    reference: float | None  # median of the earlier ok values (a count: the last one)
    verdict: str  # "worse", "better", "not resolved", "no interval", "same", "changed", ...
    called: bool  # a change beyond the noise (or of a count, or of status)
    worse: bool
    # the call accounts for every noise the history can see: a count, a status, or a value
    # judged with the drift between runs known (DRIFT_RUNS earlier runs); a gate counts only these
    judged: bool = True


# the least a history call can be (and `history show --fail-on regression`'s default threshold):
# a history compares runs hours or commits apart, where a few per cent is the machine's drift
MIN_CHANGE = 0.05


def _log_half_width(row: dict) -> float | None:
    """A run's own 95% interval as a half-width on the log scale (its larger side)."""
    low, high, value = float(row["ci_low"]), float(row["ci_high"]), float(row["value"])
    if min(low, high, value) <= 0:
        return None
    return max(math.log(value / low), math.log(high / value))


def latest_interval(earlier: list[dict], last: dict) -> tuple[stats.Interval, bool] | None:
    """The latest run's value over the earlier runs' centre, as a ratio with the 95% interval of
    "no change", and whether that interval holds the drift between runs.

    With ``DRIFT_RUNS`` or more earlier runs: Student's t prediction interval of one more run from
    their log centres, which holds everything that moves a run's centre — its own rounds and the
    drift between runs. With fewer: the runs' own intervals combined (the medians of the earlier
    runs' half-widths and the latest's, in quadrature), which hold no drift between runs. None
    where a run kept no interval."""
    values = [float(r["value"]) for r in earlier]
    b = float(last["value"])
    if min(values) <= 0 or b <= 0:
        return None
    logs = [math.log(v) for v in values]
    if len(values) >= DRIFT_RUNS:
        mean, sd, n = statistics.fmean(logs), statistics.stdev(logs), len(logs)
        h, drift = stats.t_975(n - 1) * sd * math.sqrt(1 + 1 / n), True
    else:
        widths = [_log_half_width(r) for r in [*earlier, last]]
        if any(w is None for w in widths):
            return None
        mean = math.log(statistics.median(values))
        h, drift = math.hypot(statistics.median(widths[:-1]), widths[-1]), False
    r = math.log(b) - mean
    return stats.Interval(math.exp(r), math.exp(r - h), math.exp(r + h),
                          "the earlier runs' drift" if drift else "the runs' own intervals"), drift  # fmt: skip


def step(earlier: list[dict], last: dict, better: str) -> Step:
    """Judge ``last`` against ``earlier`` (rows of one series, oldest first; ``better``: lower,
    higher or exact) by ``stats.call``: worse or better only where :func:`latest_interval`
    excludes no change and the change is at least ``MIN_CHANGE``. With fewer than
    ``DRIFT_RUNS`` earlier runs the call says that the drift is unknown and is not ``judged``."""
    prev = earlier[-1]
    if last["status"] != "ok":
        if prev["status"] == last["status"]:
            return Step(None, None, f"still {last['status']}", False, False)
        return Step(None, None, f"{prev['status']} → {last['status']}", True, True)
    ref = [r for r in earlier[-REFERENCE_RUNS:] if r["status"] == "ok" and not stats.is_missing(r["value"])]
    after = f" (after {prev['status']})" if prev["status"] != "ok" else ""
    if stats.is_missing(last["value"]):
        return Step(None, None, "no value" + after, False, False)
    if not ref:
        return Step(None, None, f"{prev['status']} → ok", True, False)
    b = float(last["value"])
    if better == "exact":
        a = float(ref[-1]["value"])
        return Step((b - a) / a if a else None, a, ("same" if a == b else "changed") + after, a != b, a != b)
    center = float(statistics.median(float(r["value"]) for r in ref))
    rel = (b - center) / center if center else None
    # a value a run measured without an interval (one seed, one RSS peak) is never called
    if any(stats.is_missing(r[k]) for r in [*ref, last] for k in ("ci_low", "ci_high")):
        return Step(rel, center, "no interval" + after, False, False)
    found = latest_interval(ref, last)
    if found is None:
        return Step(rel, center, "no interval" + after, False, False)
    iv, drift = found
    verdict = stats.call(iv, MIN_CHANGE, up="up", down="down")
    if verdict == stats.NOT_RESOLVED:
        return Step(rel, center, verdict + after, False, False)
    worse = (verdict == "up") == (better == "lower")
    verdict = "worse" if worse else "better"
    if not drift:
        verdict += f" ({len(ref)} earlier run{'s' if len(ref) > 1 else ''}: drift between runs unknown)"
    return Step(rel, center, verdict + after, True, worse, judged=drift)


def gate(table: pd.DataFrame, threshold: float) -> tuple[list[dict], list[dict]]:
    """(regressions, not judged) among the series the newest run of each machine measured: a
    judged "worse" beyond ``threshold`` (a count: any change; a status: ok → not ok), and the
    calls that could not be judged (drift unknown) or series with no earlier run."""
    worse, unjudged = [], []
    for r in table.to_dict("records"):
        if not r["_current"]:
            continue
        if r["_first"] or (r["_called"] and not r["_judged"]):
            unjudged.append(r)
        elif r["_worse"] and r["_judged"] and beyond(r["_change"], r["better"], threshold):
            worse.append(r)
    return worse, unjudged
