"""``cnnbench history show``: each value followed across the runs of a history.

A *series* is one value (``latency_ms_p50`` of googlenet at 96 px, batch 16, fp32, train, on the
CPU) on one machine (``fingerprint_id``): runs on different hardware are never one series, so a
trend is a trend of the code and the software, not of the machine. Per series the table gives the
latest value with its 95% interval, its change against the earlier runs (the median of the up to
``REFERENCE_RUNS`` ok runs before it) and a verdict:

- counts (``better == "exact"``): any change from the run before is one ("changed");
- measured values: "worse"/"better" only when the latest interval lies outside *every* earlier
  run's interval (above the highest upper bound, or below the lowest lower bound) and the change
  exceeds ``stats.MIN_EFFECT``; else "within noise". One run's interval holds the noise within
  that run (its rounds); the spread between runs — another hour, another neighbour on the host —
  shows only across runs, so the more earlier runs there are, the more of it the test sees. With
  one earlier run a call says so ("worse, 1 earlier run"). "no interval" where a run kept none
  (one seed, one RSS peak): then nothing is called;
- a status that is not ok is a change of its own ("ok → oom").

One figure per value: a panel per configuration, a line per fingerprint, the interval as a band.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .. import stats  # noqa: E402
from ..results.history import VALUE_NAMES  # noqa: E402
from .figures import COLORS, STATUS_MARK, Figure, _save, _stamp  # noqa: E402
from .fmt import MISSING, change, fmt  # noqa: E402
from .render import Report, render_html, render_markdown  # noqa: E402

__all__ = ["PANEL", "REFERENCE_RUNS", "SERIES", "Step", "described", "series_table", "sparkline", "step", "trend_figure",
           "write_history_report"]  # fmt: skip

PANEL = ("model", "image_size", "batch_size", "dtype", "mode", "device", "options")
SERIES = ("metric", "value_name", *PANEL, "fingerprint_id")
SPARKS = "▁▂▃▄▅▆▇█"
# how a unit is shown: (scale, label)
_SCALES = {"bytes": (2**20, "MiB"), "FLOP/s": (1e9, "GFLOP/s")}


REFERENCE_RUNS = 5  # the latest run is judged against the ok runs among the five before it


@dataclass(frozen=True)
class Step:
    """The latest run of a series against the runs before it."""

    change: float | None  # (latest − reference) / reference; reference: median of earlier values
    reference: float | None  # that median (a count: the run before's value)
    verdict: str  # "worse", "better", "within noise", "no interval", "same", "changed", ...
    called: bool  # a change beyond the noise (or of a count, or of status)
    worse: bool


def step(earlier: list[dict], last: dict, better: str) -> Step:
    """Judge ``last`` against ``earlier`` (rows of one series, oldest first; ``better``: lower,
    higher or exact)."""
    prev = earlier[-1]
    if prev["status"] != "ok" or last["status"] != "ok":
        if prev["status"] == last["status"]:
            return Step(None, None, f"still {last['status']}", False, False)
        return Step(None, None, f"{prev['status']} → {last['status']}", True, last["status"] != "ok")
    b = float(last["value"])
    if better == "exact":
        a = float(prev["value"])
        return Step((b - a) / a if a else None, a, "same" if a == b else "changed", a != b, a != b)
    ref = [r for r in earlier[-REFERENCE_RUNS:] if r["status"] == "ok" and not _missing(r["value"])]
    center = float(statistics.median(float(r["value"]) for r in ref))
    rel = (b - center) / center if center else None
    bounds = [(r["ci_low"], r["ci_high"]) for r in [*ref, last]]
    if any(_missing(x) for pair in bounds for x in pair):
        return Step(rel, center, "no interval", False, False)
    highest = max(float(hi) for _, hi in bounds[:-1])
    lowest = min(float(lo) for lo, _ in bounds[:-1])
    outside = float(last["ci_low"]) > highest or float(last["ci_high"]) < lowest
    if outside and rel is not None and abs(rel) > stats.MIN_EFFECT:
        worse = (b > center) == (better == "lower")
        verdict = "worse" if worse else "better"
        return Step(rel, center, verdict + (", 1 earlier run" if len(ref) == 1 else ""), True, worse)
    return Step(rel, center, "within noise", False, False)


def described(unit: str, better: str) -> str:
    """A value's unit and direction in words: "ms, lower is better", "parameters, a count"."""
    if not unit:
        return ""
    return f"{unit}, " + ("a count: any change is one" if better == "exact" else f"{better} is better")


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def sparkline(values: list, statuses: list[str]) -> str:
    """One character per run, oldest first: eight levels between the series' min and max, ×
    for a run whose record was not ok."""
    ok = [float(v) for v, s in zip(values, statuses) if s == "ok" and not _missing(v)]
    low, high = (min(ok), max(ok)) if ok else (0.0, 0.0)
    out = []
    for v, s in zip(values, statuses):
        if s != "ok" or _missing(v):
            out.append("×")
        elif high == low:
            out.append(SPARKS[3])
        else:
            out.append(SPARKS[round((float(v) - low) / (high - low) * (len(SPARKS) - 1))])
    return "".join(out)


def shown(value, unit: str) -> str:
    """A value in its unit: bytes as MiB, FLOP/s as GFLOP/s, counts in full, fractions to 3
    decimals, the rest to 4 significant digits."""
    if _missing(value):
        return MISSING
    if unit in _SCALES:
        scale, label = _SCALES[unit]
        return f"{fmt(float(value), 1, scale=scale)} {label}"
    if unit in ("parameters", "px"):
        return fmt(int(value))
    if unit == "fraction":
        return fmt(float(value), 3)
    return fmt(float(value), 4, significant=True)


def _interval(row: dict, unit: str) -> str:
    if _missing(row["ci_low"]) or _missing(row["ci_high"]):
        return MISSING
    return f"{shown(row['ci_low'], unit)} – {shown(row['ci_high'], unit)}"


def _commit(row: dict) -> str:
    commit = row["git_commit"] or "?"
    return commit[:8] + ("+" if row["git_dirty"] else "")


def _when(stamp) -> str:
    return str(stamp or "?")[:16].replace("T", " ")


def _unit_and_better(rows: list[dict]) -> tuple[str, str]:
    """A series' unit and direction, from its ok rows (a failed record has neither)."""
    for r in rows:
        if r["unit"]:
            return r["unit"], r["better"]
    return "", ""


def series_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per series (value × configuration × machine), in metric order: runs, first and
    latest run, the latest value with its interval, the change against the run before, the
    verdict and a sparkline of every run."""
    order = {name: i for i, name in enumerate(n for names in VALUE_NAMES.values() for n in names)}
    rows = []
    for key, sub in frame.groupby(list(SERIES), sort=False, dropna=False):
        runs = sub.to_dict("records")  # oldest first (history.read orders by run time)
        unit, better = _unit_and_better(runs)
        last = runs[-1]
        s = step(runs[:-1], last, better) if len(runs) > 1 else None
        value = shown(last["value"], unit) if last["status"] == "ok" else last["status"]
        rows.append({
            "metric": last["metric"], "value": last["value_name"], "model": last["model"],
            "px": last["image_size"], "batch": last["batch_size"], "dtype": last["dtype"],
            "mode": last["mode"], "options": last["options"] or "",
            "machine": last["fingerprint_id"], "runs": len(runs),
            "first": _when(runs[0]["collected_at"]), "latest": _when(last["collected_at"]),
            "commit": _commit(last), "latest value": value, "95% interval": _interval(last, unit),
            "earlier": shown(s.reference, unit) if s and s.reference is not None else MISSING,
            "change": change(s.change) if s else MISSING,
            "verdict": s.verdict if s else "first run",
            "trend": sparkline([r["value"] for r in runs], [r["status"] for r in runs]),
            "unit": unit, "better": better,
            "_order": (order.get(last["value_name"], len(order)), last["value_name"]),
            "_called": bool(s and s.called), "_worse": bool(s and s.worse),
            "_change": s.change if s else None,
        })  # fmt: skip
    table = pd.DataFrame(rows, dtype=object)
    if table.empty:
        return table
    machines = {fp: i for i, fp in enumerate(dict.fromkeys(frame["fingerprint_id"]))}
    table["_machine"] = table["machine"].map(machines)
    by = ["_order", "model", "px", "batch", "dtype", "mode", "options", "_machine"]
    table = table.sort_values(by, kind="stable").drop(columns=["_order", "_machine"]).reset_index(drop=True)
    return table


def trend_figure(frame: pd.DataFrame, value_name: str, out: Path, machines: dict[str, str],
                 conditions: str) -> Figure:  # fmt: skip
    """``value_name`` across runs: a panel per configuration, a line per fingerprint (colours as
    in ``machines``' order), the 95% interval as a band (error bars where a line has one run),
    a mark on the axis for a run whose record was not ok."""
    rows = frame[frame.value_name == value_name]
    unit, better = _unit_and_better(rows.to_dict("records"))
    scale, label = _SCALES.get(unit, (1, unit))
    colors = {fp: COLORS[i % len(COLORS)] for i, fp in enumerate(machines)}
    panels = list(rows.groupby(list(PANEL), sort=False, dropna=False))
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 2.7 * nrows + 0.9), squeeze=False)
    for ax, (key, panel) in zip(axes.flat, panels):
        model, px, batch, dtype, mode, device, options = key
        for fp, line in panel.groupby("fingerprint_id", sort=False):
            # matplotlib's day numbers: what the date locator reads, and what a transform takes
            when = pd.Series(mdates.date2num(pd.to_datetime(line["collected_at"], utc=True)
                                             .dt.tz_localize(None)), index=line.index)  # fmt: skip
            ok = (line["status"] == "ok") & line["value"].notna()
            y = line["value"].where(ok).astype(float) / scale
            ax.plot(when[ok], y[ok], marker="o", ms=3.5, lw=1.3, color=colors[fp])
            has = ok & line["ci_low"].notna() & line["ci_high"].notna()
            low = line["ci_low"].where(has).astype(float) / scale
            high = line["ci_high"].where(has).astype(float) / scale
            if has.sum() > 1:
                ax.fill_between(when[has], low[has], high[has], color=colors[fp], alpha=0.22, lw=0)
            elif has.sum() == 1:
                ax.errorbar(when[has], y[has], yerr=[y[has] - low[has], high[has] - y[has]],
                            fmt="none", ecolor=colors[fp], capsize=3, lw=1)  # fmt: skip
            on_axis = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            for t, status in zip(when[~ok], line["status"][~ok]):
                ax.plot([t], [0.04], marker=STATUS_MARK.get(status, "X"), color="#b00020",
                        transform=on_axis, clip_on=False, ms=7)  # fmt: skip
                ax.annotate(status, (t, 0.04), xycoords=on_axis, xytext=(4, 2),
                            textcoords="offset points", fontsize=7, color="#b00020")  # fmt: skip
        title = f"{model} {px}px b{batch} {dtype} {mode}" + (f", {options}" if options else "")
        ax.set_title(title + ("" if device == "cpu" else f" ({device})"), fontsize=8.5)
        ax.set_ylabel(label, fontsize=8)
        # the values as the tables print them: 46,764,746 rather than 4.68 with a 1e7 offset
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _pos, ax=ax: f"{v:,.{_decimals(ax)}f}"))
        locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[fp], marker="o", ms=3.5, label=f"{fp}: {machines[fp]}")
               for fp in machines if fp in set(rows["fingerprint_id"])]  # fmt: skip
    if rows["ci_low"].notna().any():
        handles.append(Patch(color="gray", alpha=0.3, label="95% interval"))
    fig.legend(handles=handles, loc="lower center", ncol=1, fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    fig.tight_layout(rect=(0, 0.05 + 0.035 * len(handles) / nrows, 1, 1))
    _stamp(fig, conditions, f"{value_name} ({described(label, better)}) by run time (UTC)")
    figure = Figure(f"trend_{value_name}", f"{value_name} across runs",
                    f"{label}; one line per machine (fingerprint), the band its runs' 95% interval.")  # fmt: skip
    return _save(fig, out, figure)


def _decimals(ax) -> int:
    """Decimals that tell the y ticks apart: none for a span of 10 or more, else enough."""
    low, high = ax.get_ylim()
    span = abs(high - low) or abs(high) or 1.0
    return max(0, min(6, 1 - math.floor(math.log10(span))))


def _machines(frame: pd.DataFrame) -> dict[str, str]:
    """fingerprint_id → its machine in words, in order of first run."""
    return dict(zip(frame["fingerprint_id"], frame["machine"], strict=True))


def build_history_report(frame: pd.DataFrame, db: Path, out: Path) -> tuple[Report, pd.DataFrame]:
    table = series_table(frame)
    machines = _machines(frame)
    runs = frame.drop_duplicates("run_id")
    conditions = [f"history {db}: {len(runs)} run(s) on {len(machines)} machine(s)"]
    for fp, words in machines.items():
        mine = runs[runs.fingerprint_id == fp]
        conditions.append(f"{fp}: {words} — {len(mine)} run(s), {_when(mine.collected_at.iloc[0])} "
                          f"to {_when(mine.collected_at.iloc[-1])} UTC")  # fmt: skip
    blocks: list[tuple] = [("p", (
        "One row per series: a value of one configuration on one machine (its fingerprint; runs on "
        "different hardware are never compared). 'earlier' is the median of the up to "
        f"{REFERENCE_RUNS} ok runs before the latest, 'change' the latest against it. 'worse'/"
        "'better' only where the latest 95% interval lies outside every one of those runs' "
        f"intervals and the change exceeds {stats.MIN_EFFECT:.0%}, else 'within noise'; a run's "
        "interval holds the noise within that run, the spread between runs shows only across "
        "runs, so a call against a single earlier run says so. 'no interval' where a run kept "
        "none (one seed, one RSS peak): then nothing is called. A count changes or not. 'trend': "
        "every run, oldest first, × a record that was not ok."))]  # fmt: skip
    figures_dir = out / "figures"
    shown_columns = [c for c in table.columns
                     if not c.startswith("_") and c not in ("metric", "value", "unit", "better")]  # fmt: skip
    for value_name, rows in table.groupby("value", sort=False):
        metric = rows["metric"].iloc[0]
        unit, better = _unit_and_better(frame[frame.value_name == value_name].to_dict("records"))
        blocks.append(("h2", f"{metric}: {value_name}" + (f" ({described(unit, better)})" if unit else "")))
        worse = int(rows["_worse"].sum())
        caption = f"{value_name}: {len(rows)} series" + (f", {worse} worse in the latest run" if worse else "")
        blocks.append(("table", caption, rows[shown_columns].reset_index(drop=True)))
        blocks.append(("figure", trend_figure(frame, value_name, figures_dir, machines, conditions[0])))
    return Report(f"cnnbench history: {db.name}", conditions, blocks), table


def write_history_report(frame: pd.DataFrame, db: Path, out: Path) -> tuple[dict[str, Path], pd.DataFrame]:
    """history.md, history.html (figures embedded), trend.csv (the series table) and
    figures/trend_<value>.png/.svg in ``out``; returns their paths and the series table."""
    out.mkdir(parents=True, exist_ok=True)
    report, table = build_history_report(frame, db, out)
    paths = {"md": out / "history.md", "html": out / "history.html", "csv": out / "trend.csv",
             "figures": out / "figures"}  # fmt: skip
    paths["md"].write_text(render_markdown(report, out))
    paths["html"].write_text(render_html(report))
    table.drop(columns=[c for c in table.columns if c.startswith("_")]).to_csv(paths["csv"], index=False)
    return paths, table
