"""``cnnbench history show``: each value followed across the runs of a history.

A *series* is one value (``latency_ms_p50`` of googlenet at 96 px, batch 16, fp32, train, on the
CPU) on one machine (``fingerprint_id``): runs on different hardware are never one series, so a
trend is a trend of the code and the software, not of the machine. Per series the table gives the
latest value with its 95% interval, its change against the earlier runs (the median of the up to
``REFERENCE_RUNS`` ok runs before it) and a verdict:

- counts (``better == "exact"``): any change from the run before is one ("changed");
- measured values: "worse"/"better" by ``stats.call`` on :func:`latest_interval` — the latest
  value against the earlier runs' drift (3 or more runs) or their own intervals (fewer: "drift
  between runs unknown", not counted by a gate) — and at least ``MIN_CHANGE``; else "not
  resolved". One run's interval holds the noise within that run (its rounds); the spread between
  runs — another hour, another neighbour on the host — shows only across runs. "no interval"
  where a run kept none (one seed, one RSS peak): then nothing is called;
- a status that is not ok is a change of its own ("ok → oom").

One figure per value: a panel per configuration, a line per fingerprint, the interval as a band.
"""

from __future__ import annotations

import json
import math
import textwrap
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
from .figures import COLORS, STATUS_MARK, Figure, _save  # noqa: E402
from .fmt import MISSING, change, fmt, is_missing  # noqa: E402
from ..analysis.trend import DRIFT_RUNS, MIN_CHANGE, REFERENCE_RUNS, Step, gate, latest_interval, step  # noqa: E402, F401
from .blocks import Document, Figure as FigureBlock, Heading, Note, Paragraph, Table, Bullets, to_html, to_markdown  # noqa: E402

__all__ = ["DRIFT_RUNS", "PANEL", "REFERENCE_RUNS", "SERIES", "Step", "configuration", "described", "gate",
           "software_change", "series_table", "sparkline", "step", "trend_figure",
           "write_history_report"]  # fmt: skip

PANEL = ("model", "image_size", "batch_size", "dtype", "mode", "device", "options")
SERIES = ("metric", "value_name", *PANEL, "hardware_id")
SPARKS = "▁▂▃▄▅▆▇█"
# how a unit is shown: (scale, label)
_SCALES = {"bytes": (2**20, "MiB"), "FLOP/s": (1e9, "GFLOP/s")}


def configuration(model, px, batch, dtype, mode, options: str = "") -> str:
    """A series' configuration in words, as tables and figure panels name it."""
    return f"{model} {px}px b{batch} {dtype} {mode}" + (f", {options}" if options else "")


def described(unit: str, better: str) -> str:
    """A value's unit and direction in words: "ms, lower is better", "parameters, a count"."""
    if not unit:
        return ""
    return f"{unit}, " + ("a count: any change is one" if better == "exact" else f"{better} is better")


SPARK_RUNS = 24  # the sparkline shows this many newest runs


def sparkline(values: list, statuses: list[str]) -> str:
    """One character per run, oldest first, of the newest ``SPARK_RUNS``: eight levels between
    their min and max, × for a run whose record was not ok."""
    values, statuses = list(values)[-SPARK_RUNS:], list(statuses)[-SPARK_RUNS:]
    ok = [float(v) for v, s in zip(values, statuses) if s == "ok" and not is_missing(v)]
    low, high = (min(ok), max(ok)) if ok else (0.0, 0.0)
    out = []
    for v, s in zip(values, statuses):
        if s != "ok" or is_missing(v):
            out.append("×")
        elif high == low:
            out.append(SPARKS[3])
        else:
            out.append(SPARKS[round((float(v) - low) / (high - low) * (len(SPARKS) - 1))])
    return "".join(out)


def shown(value, unit: str) -> str:
    """A value in its unit: bytes as MiB, FLOP/s as GFLOP/s, counts in full, fractions to 3
    decimals, the rest to 4 significant digits."""
    if is_missing(value):
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
    if is_missing(row["ci_low"]) or is_missing(row["ci_high"]):
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


def software_change(before: dict, after: dict) -> str:
    """The software and math flags that differ between two runs of one machine, in words
    ("torch 2.14.1 → 2.15.0"): a change to read beside a verdict, not another machine."""
    from ..env import is_hardware, label

    fa, fb = (json.loads(r["fingerprint"]) if r.get("fingerprint") else {} for r in (before, after))
    # a field one run did not record (an older env.json, a CPU's CUDA flags) is not a change
    return ", ".join(f"{label(k)} {fa.get(k)} → {fb.get(k)}" for k in sorted(set(fa) | set(fb))
                     if not is_hardware(k) and fa.get(k) is not None and fb.get(k) is not None
                     and fa.get(k) != fb.get(k))  # fmt: skip


def _count_change(a, b) -> str:
    """A count's change as a difference: "+1,000" (a percentage would print +0.0%)."""
    diff = b - a
    return f"{diff:+,}" if isinstance(diff, int) else f"{diff:+,.4g}"


def series_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per series (value × configuration × machine), in metric order: runs, first and
    latest run, the latest value with its interval, the earlier runs' median and the change
    against it, the verdict, what software changed since the run before, and a sparkline.
    ``_current`` marks series whose latest row is from their machine's newest run (what a gate
    judges: a configuration the newest run did not measure is history, not news)."""
    order = {name: i for i, name in enumerate(n for names in VALUE_NAMES.values() for n in names)}
    newest = frame.groupby("hardware_id", sort=False)["run_id"].last().to_dict()  # read() orders by time
    rows = []
    for key, sub in frame.groupby(list(SERIES), sort=False, dropna=False):
        runs = sub.to_dict("records")  # oldest first (history.read orders by run time)
        unit, better = _unit_and_better(runs)
        last = runs[-1]
        s = step(runs[:-1], last, better) if len(runs) > 1 else None
        value = shown(last["value"], unit) if last["status"] == "ok" else last["status"]
        if s and s.reference is not None and better == "exact" and not is_missing(last["value"]):
            shown_change = _count_change(s.reference, last["value"])
        else:
            shown_change = change(s.change) if s else MISSING
        rows.append({
            "metric": last["metric"], "value": last["value_name"], "model": last["model"],
            "px": last["image_size"], "batch": last["batch_size"], "dtype": last["dtype"],
            "mode": last["mode"], "options": last["options"] or "",
            "machine": last["hardware_id"], "runs": len(runs),
            "first": _when(runs[0]["collected_at"]), "latest": _when(last["collected_at"]),
            "commit": _commit(last), "latest value": value, "95% interval": _interval(last, unit),
            "earlier": shown(s.reference, unit) if s and s.reference is not None else MISSING,
            "change": shown_change, "verdict": s.verdict if s else "first run",
            "software": software_change(runs[-2], last) if s else "",
            "trend": sparkline([r["value"] for r in runs], [r["status"] for r in runs]),
            "unit": unit, "better": better,
            "_order": (order.get(last["value_name"], len(order)), last["value_name"]),
            "_called": bool(s and s.called), "_worse": bool(s and s.worse),
            "_judged": bool(s and s.judged), "_change": s.change if s else None,
            "_first": s is None, "_current": newest.get(last["hardware_id"]) == last["run_id"],
        })  # fmt: skip
    table = pd.DataFrame(rows, dtype=object)
    if table.empty:
        return table
    machines = {hw: i for i, hw in enumerate(dict.fromkeys(frame["hardware_id"]))}
    table["_machine"] = table["machine"].map(machines)
    by = ["_order", "model", "px", "batch", "dtype", "mode", "options", "_machine"]
    table = table.sort_values(by, kind="stable").drop(columns=["_order", "_machine"]).reset_index(drop=True)
    return table


def _machine_line(ax, line: pd.DataFrame, color, scale: float) -> None:
    """One machine's runs of one panel: the values, their interval (a band; an error bar where one
    run has it), the software changes along it, and a mark on the axis for a run not ok."""
    # matplotlib's day numbers: what the date locator reads, and what a transform takes
    when = pd.Series(mdates.date2num(pd.to_datetime(line["collected_at"], utc=True)
                                     .dt.tz_localize(None)), index=line.index)  # fmt: skip
    ok = (line["status"] == "ok") & line["value"].notna()
    y = line["value"].where(ok).astype(float) / scale
    ax.plot(when[ok], y[ok], marker="o", ms=3.5, lw=1.3, color=color)
    has = ok & line["ci_low"].notna() & line["ci_high"].notna()
    low = line["ci_low"].where(has).astype(float) / scale
    high = line["ci_high"].where(has).astype(float) / scale
    if has.sum() > 1:
        ax.fill_between(when[has], low[has], high[has], color=color, alpha=0.22, lw=0)
    elif has.sum() == 1:
        ax.errorbar(when[has], y[has], yerr=[y[has] - low[has], high[has] - y[has]],
                    fmt="none", ecolor=color, capsize=3, lw=1)  # fmt: skip
    on_axis = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    # where the software changed on this machine: a dotted line, what changed above it
    records = line.to_dict("records")
    for i in range(1, len(records)):
        what = software_change(records[i - 1], records[i])
        if what:
            ax.axvline(when.iloc[i], color=color, ls=":", lw=1)
            ax.annotate(textwrap.shorten(what, 40), (when.iloc[i], 0.97), xycoords=on_axis,
                        xytext=(2, 0), textcoords="offset points", fontsize=6.5, color=color, va="top")  # fmt: skip
    for t, status in zip(when[~ok], line["status"][~ok], strict=True):
        ax.plot([t], [0.04], marker=STATUS_MARK.get(status, "X"), color="#b00020",
                transform=on_axis, clip_on=False, ms=7)  # fmt: skip
        ax.annotate(status, (t, 0.04), xycoords=on_axis, xytext=(4, 2),
                    textcoords="offset points", fontsize=7, color="#b00020")  # fmt: skip


def _panel_axes(ax, key: tuple, label: str) -> None:
    model, px, batch, dtype, mode, device, options = key
    title = configuration(model, px, batch, dtype, mode, options)
    ax.set_title(title + ("" if device == "cpu" else f" ({device})"), fontsize=8.5)
    ax.set_ylabel(label, fontsize=8)
    ax.set_xlabel("run time (UTC)", fontsize=7.5)
    # the values as the tables print them: 46,764,746 rather than 4.68 with a 1e7 offset
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _pos, ax=ax: f"{v:,.{_decimals(ax)}f}"))
    locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def trend_figure(frame: pd.DataFrame, value_name: str, out: Path, machines: dict[str, str]) -> Figure:
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
    for ax, (key, panel) in zip(axes.flat, panels, strict=False):
        for fp, line in panel.groupby("hardware_id", sort=False):
            _machine_line(ax, line, colors[fp], scale)
        _panel_axes(ax, key, label)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[fp], marker="o", ms=3.5, label=f"{fp}: {machines[fp]}")
               for fp in machines if fp in set(rows["hardware_id"])]  # fmt: skip
    if rows["ci_low"].notna().any():
        handles.append(Patch(color="gray", alpha=0.3, label="95% interval"))
    fig.legend(handles=handles, loc="lower center", ncol=1, fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    fig.tight_layout(rect=(0, 0.05 + 0.035 * len(handles) / nrows, 1, 1))
    figure = Figure(f"trend_{value_name}", f"{value_name} across runs",
                    f"{value_name} in {label} ({described(label, better)}); one line per machine (the "
                    "hardware of the fingerprint), the band its runs' 95% interval; a dotted line where "
                    "the software changed (torch, drivers, math flags), labelled with what changed.")  # fmt: skip
    return _save(fig, out, figure)


def _decimals(ax) -> int:
    """Decimals that tell the y ticks apart: none for a span of 10 or more, else enough."""
    low, high = ax.get_ylim()
    span = abs(high - low) or abs(high) or 1.0
    return max(0, min(6, 1 - math.floor(math.log10(span))))


def _machines(frame: pd.DataFrame) -> dict[str, str]:
    """hardware_id → the machine in words, in order of first run."""
    return dict(zip(frame["hardware_id"], frame["machine"], strict=True))


VERDICT_RULE = (
    "One row per series: a value of one configuration on one machine (the hardware part of the "
    "fingerprint; runs on different hardware are never one series, a software change is shown "
    "along it). 'earlier' is the median of the ok runs among the "
    f"{REFERENCE_RUNS} before the latest, 'change' the latest against it. 'worse'/'better' only "
    f"where the change is at least {MIN_CHANGE:.0%} and the latest lies outside the 95% "
    f"interval of no change: with {DRIFT_RUNS} or more earlier runs the prediction interval of "
    "their drift (Student's t over their log values: it holds each run's own noise and the drift "
    "between runs, which one run's interval cannot); with fewer, the runs' own intervals "
    "combined, and the call says the drift is unknown and a gate does not count it. Else 'not "
    "resolved'; 'no interval' where a run kept none (one seed, one RSS peak, a roofline): "
    "nothing is called. A count changes or not. 'trend': the newest runs, oldest first, × a "
    "record that was not ok."
)


def _conditions(frame: pd.DataFrame, db: Path, machines: dict[str, str]) -> list[str]:
    runs = frame.drop_duplicates("run_id")
    lines = [f"history {db}: {len(runs)} run(s) on {len(machines)} machine(s)"]
    for fp, words in machines.items():
        mine = runs[runs.hardware_id == fp]
        lines.append(f"{fp}: {words} — {len(mine)} run(s), {_when(mine.collected_at.iloc[0])} "
                     f"to {_when(mine.collected_at.iloc[-1])} UTC")  # fmt: skip
    return lines


def _notes(frame: pd.DataFrame) -> list:
    runs = frame.drop_duplicates("run_id")
    notes = runs[runs["notes"].notna() & (runs["notes"] != "")] if "notes" in runs else runs.iloc[0:0]
    return [Note(f"run {r['run_id']} ({r['path']}): {r['notes']}; its values are attributed to "
                 "the commit and machine it began with.", "warning") for r in notes.to_dict("records")]  # fmt: skip


def build_history_report(frame: pd.DataFrame, db: Path, out: Path) -> tuple[Document, pd.DataFrame]:
    table = series_table(frame)
    machines = _machines(frame)
    conditions = _conditions(frame, db, machines)
    blocks: list = [Heading("Conditions"), Bullets(tuple(conditions)), Paragraph(VERDICT_RULE), *_notes(frame)]
    shown_columns = [c for c in table.columns
                     if not c.startswith("_") and c not in ("metric", "value", "unit", "better")]  # fmt: skip
    for value_name, rows in table.groupby("value", sort=False):
        unit, better = _unit_and_better(frame[frame.value_name == value_name].to_dict("records"))
        title = f"{rows['metric'].iloc[0]}: {value_name}" + (f" ({described(unit, better)})" if unit else "")
        worse = int(rows["_worse"].sum())
        caption = f"{value_name}: {len(rows)} series" + (f", {worse} worse in the latest run" if worse else "")
        fig = trend_figure(frame, value_name, out / "figures", machines)
        blocks += [Heading(title), Table(caption, rows[shown_columns].reset_index(drop=True)),
                   FigureBlock(fig.title, fig.caption, fig.png, fig.svg)]  # fmt: skip
    return Document(f"cnnbench history: {db.name}", tuple(blocks)), table


def write_history_report(frame: pd.DataFrame, db: Path, out: Path) -> tuple[dict[str, Path], pd.DataFrame]:
    """history.md, history.html (figures embedded), trend.csv (the series table) and
    figures/trend_<value>.png/.svg in ``out``; returns their paths and the series table."""
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("trend_*.*"):  # an earlier show's figures: not this one's
        old.unlink()
    report, table = build_history_report(frame, db, out)
    paths = {"md": out / "history.md", "html": out / "history.html", "csv": out / "trend.csv",
             "figures": out / "figures"}  # fmt: skip
    paths["md"].write_text(to_markdown(report, out))
    paths["html"].write_text(to_html(report))
    table.drop(columns=[c for c in table.columns if c.startswith("_")]).to_csv(paths["csv"], index=False)
    return paths, table
