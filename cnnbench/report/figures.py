"""Figures from records (matplotlib, Agg): each saved as PNG and SVG, each titled with its conditions.

A figure never stands alone: the report puts the numbers it plots in a table beside it. Every
figure is drawn for the report's width (about 1,100 px): data only where it was measured
(markers), log axes with plain tick labels (1, 2, 4, 16), labels that do not overlap (a column
of names with leader lines where points crowd), and the noise band where there is one.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402

from .. import stats  # noqa: E402
from .fmt import is_missing, points, utilization  # noqa: E402
from ..analysis.frames import LINEAGE_FIELDS, Frames, above_roof, first_ok, ok_records  # noqa: E402
from ..analysis.frames import utilization as frame_utilization  # noqa: E402

__all__ = ["Figure", "make_figures"]

STATUS_MARK = {"oom": "x", "error": "X", "unsupported": "s", "diverged": "v"}
COLORS = plt.get_cmap("tab10").colors


class Figure:
    def __init__(self, stem: str, title: str, caption: str):
        self.stem = stem
        self.title = title
        self.caption = caption
        self.png: Path | None = None
        self.svg: Path | None = None


def _save(fig, out: Path, figure: Figure) -> Figure:
    out.mkdir(parents=True, exist_ok=True)
    figure.png = out / f"{figure.stem}.png"
    figure.svg = out / f"{figure.stem}.svg"
    fig.savefig(figure.png, dpi=110, bbox_inches="tight")
    fig.savefig(figure.svg, bbox_inches="tight")
    plt.close(fig)
    return figure


def _stamp(fig, *lines: str, fontsize: float = 7.0) -> None:
    """The conditions (and notes) above the figure, wrapped to its width so that they neither
    widen the image nor overlap a label."""
    chars = int(fig.get_figwidth() * 72 / (fontsize * 0.55))
    text = "\n".join(textwrap.fill(line, chars) for line in lines if line)
    fig.text(0.01, 1.0, text, fontsize=fontsize, color="dimgray", va="bottom", ha="left")


def _plain(value, _pos=None) -> str:
    """A tick label without powers of ten: 1, 2, 16, 0.5, 1,000."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _plain_log(axis, subs=None) -> None:
    """Log ticks with plain labels and no minor labels: at 1-2-5 over a wide range, denser over
    a narrow one (call it once the data is drawn)."""
    if subs is None:
        lo, hi = sorted(axis.get_view_interval())
        decades = np.log10(hi / lo) if lo > 0 and hi > 0 else 2.0
        if decades < 0.6:  # less than a factor of 4: evenly spaced round numbers read best
            axis.set_major_locator(mticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
            axis.set_minor_locator(mticker.NullLocator())
            axis.set_major_formatter(mticker.FuncFormatter(_plain))
            return
        subs = (1.0, 2.0, 5.0) if decades > 1.3 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(mticker.FuncFormatter(_plain))
    axis.set_minor_formatter(mticker.NullFormatter())


def _batch_axis(axis, batches) -> None:
    """A log2 batch axis with ticks only at the measured batches."""
    axis.set_major_locator(mticker.FixedLocator(sorted(batches)))
    axis.set_major_formatter(mticker.FuncFormatter(_plain))
    axis.set_minor_locator(mticker.NullLocator())


def _label_column(ax, labelled, *, x=1.03, fontsize=7.5, gap=0.055) -> None:
    """Each (x, y, text) named in a column right of the axes, sorted by y and spread so that no
    two names overlap, with a thin leader line to its point (data coordinates)."""
    if not labelled:
        return
    to_axes = ax.transAxes.inverted()
    placed = []
    for px, py, text in labelled:
        ax_y = to_axes.transform(ax.transData.transform((px, py)))[1]
        placed.append([min(max(ax_y, 0.0), 1.0), px, py, text])
    placed.sort(key=lambda p: p[0])
    gap = min(gap, 1.0 / max(len(placed), 1))
    for i in range(1, len(placed)):
        placed[i][0] = max(placed[i][0], placed[i - 1][0] + gap)
    overflow = placed[-1][0] - 1.0
    if overflow > 0:
        for p in placed:
            p[0] -= overflow
        for i in range(len(placed) - 2, -1, -1):  # keep the gaps after shifting down
            placed[i][0] = min(placed[i][0], placed[i + 1][0] - gap)
    for ty, px, py, text in placed:
        ax.annotate(text, (px, py), xytext=(x, ty), textcoords="axes fraction", fontsize=fontsize,
                    va="center", ha="left", annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="grey", alpha=0.8,
                                    shrinkA=0, shrinkB=3))  # fmt: skip


def accuracy_vs_gmacs(frames: Frames, out: Path, conditions: str) -> Figure | None:
    """Canziani et al. (2016)'s chart: accuracy against the compute of the network as trained,
    marker area ∝ its parameters; an accuracy with no count of its trained network is listed,
    not plotted against another network's counts."""
    frame = frames.overview
    rows = [r for r in frame.to_dict("records") if r["accuracy_status"] is not None] if len(frame) else []  # fmt: skip
    points_ = [r for r in rows if r["trained_gmacs"] is not None and r["trained_params"] is not None]
    left_out = [r["model"] for r in rows if r not in points_]
    if not points_:
        return None
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    biggest = max(p["trained_params"] for p in points_)
    labelled = []
    for i, p in enumerate(points_):
        model, gmacs, acc, status = p["model"], p["trained_gmacs"], p["test_accuracy_mean"], p["accuracy_status"]  # fmt: skip
        color = COLORS[i % len(COLORS)]
        if acc is None:  # failed, or diverged on every seed: drawn at the bottom with its status
            ax.scatter([gmacs], [0.0], s=80, marker=STATUS_MARK.get(status, "x"), color="crimson")
            labelled.append((gmacs, 0.0, f"{model} ({status}) @{p['train_image_size']}"))
            continue
        ax.scatter([gmacs], [acc], s=60 + 1400 * p["trained_params"] / biggest, alpha=0.45, color=color)  # fmt: skip
        if p["test_accuracy_std"] is not None:
            ax.errorbar([gmacs], [acc], yerr=[p["test_accuracy_std"]], fmt="none", color="black", capsize=3)  # fmt: skip
        labelled.append((gmacs, acc, f"{model}{f' ({status})' if status != 'ok' else ''} @{p['train_image_size']} px, "
                                     f"{p['trained_params'] / 1e6:.2f}M params"))  # fmt: skip
    ax.set_xscale("log")
    xs = [p["trained_gmacs"] for p in points_]
    ax.set_xlim(min(xs) / 1.8, max(xs) * 1.8)
    _plain_log(ax.xaxis)
    ax.set_xlabel("GMACs per image of the network as trained, at its training size (log)")
    ax.set_ylabel("test accuracy (± sample std over seeds)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="major")
    ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance (0.10)")
    ax.legend(loc="lower left", fontsize=8)
    _label_column(ax, labelled)
    sizes = sorted({p["train_image_size"] for p in points_})
    ax.set_title(
        "Accuracy vs computation of the network as trained; marker area ∝ its parameters\n"
        f"(trained at {', '.join(map(str, sizes))} px; error bar: sample std over seeds, none with one seed)",
        fontsize=9,
    )
    caption = conditions + (
        f". Not plotted (no count of the network as trained): {', '.join(left_out)}" if left_out else ""
    )
    _stamp(fig, caption)
    return _save(fig, out, Figure("accuracy_vs_gmacs", "Accuracy vs GMACs (networks as trained)", caption))  # fmt: skip


def _band(r) -> tuple[float, float] | None:
    """The noise band of a latency row: its 95% CI (recorded, or from its samples)."""
    low, high = r["latency_ms_p50_ci_low"], r["latency_ms_p50_ci_high"]
    if (low is None or high is None) and r["times_ms"]:
        iv = stats.median_interval(r["times_ms"], r["round_sizes"])
        low, high = iv.low, iv.high
    return None if low is None or high is None else (low, high)


def latency_vs_batch(frames: Frames, out: Path, conditions: str) -> Figure | None:
    lat = frames.metric("latency")
    if not len(lat) or not any(lat["status"] == "ok"):
        return None  # nothing to put on a log axis; the table lists the failures
    models = list(dict.fromkeys(lat["model"]))
    batches = sorted({int(b) for b in lat["batch_size"]})
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    n = len(models)
    banded = False
    for col, mode in enumerate(("inference", "train")):
        if not any((lat["mode"] == mode) & (lat["status"] == "ok")):
            failed = lat[lat["mode"] == mode]
            what = "; ".join(f"{m} b{b}: {st}" for m, b, st in zip(failed["model"], failed["batch_size"], failed["status"], strict=True))  # fmt: skip
            for row in range(2):
                axes[row, col].text(0.5, 0.5, textwrap.fill(f"no ok {mode} record" + (f" ({what})" if what else ""), 50),
                                    ha="center", va="center", transform=axes[row, col].transAxes,
                                    color="crimson" if what else "dimgray", fontsize=8)  # fmt: skip
                axes[row, col].set_xticks([])
                axes[row, col].set_yticks([])
            continue
        for i, model in enumerate(models):
            color = COLORS[i % len(COLORS)]
            dodge = 2 ** ((i - (n - 1) / 2) * 0.035)  # side by side at each measured batch
            mine = lat[(lat["model"] == model) & (lat["mode"] == mode)].sort_values("batch_size")
            ok = [r for r in mine.to_dict("records") if r["status"] == "ok"]
            if ok:
                xs = [r["batch_size"] * dodge for r in ok]
                ms = [r["latency_ms_p50"] for r in ok]
                ips = [r["images_per_s"] for r in ok]
                bands = [_band(r) for r in ok]
                axes[0, col].plot(xs, ms, ls=":", lw=0.8, color=color, alpha=0.6)
                axes[1, col].plot(xs, ips, ls=":", lw=0.8, color=color, alpha=0.6)
                axes[0, col].scatter(xs, ms, s=22, color=color, label=model, zorder=3)
                axes[1, col].scatter(xs, ips, s=22, color=color, zorder=3)
                if all(b is not None for b in bands):
                    banded = True
                    lo, hi = [b[0] for b in bands], [b[1] for b in bands]
                    axes[0, col].fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
                    axes[0, col].errorbar(xs, ms, yerr=[[m - a for m, a in zip(ms, lo, strict=True)], [b - m for m, b in zip(ms, hi, strict=True)]],
                                          fmt="none", color=color, lw=0.8, capsize=2)  # fmt: skip
                    ilo = [r["batch_size"] / (h / 1e3) for r, h in zip(ok, hi, strict=True)]
                    ihi = [r["batch_size"] / (a / 1e3) for r, a in zip(ok, lo, strict=True)]
                    axes[1, col].fill_between(xs, ilo, ihi, color=color, alpha=0.15, lw=0)
                    axes[1, col].errorbar(xs, ips, yerr=[[v - a for v, a in zip(ips, ilo, strict=True)], [b - v for v, b in zip(ips, ihi, strict=True)]],
                                          fmt="none", color=color, lw=0.8, capsize=2)  # fmt: skip
                for r, x in zip(ok, xs, strict=True):
                    if r["unstable"] or r["contended"]:
                        axes[0, col].scatter([x], [r["latency_ms_p50"]], s=110, facecolors="none", edgecolors="orange", zorder=4)  # fmt: skip
            for r in mine.to_dict("records"):
                if r["status"] != "ok":
                    axes[1, col].scatter([r["batch_size"] * dodge], [0.02], marker=STATUS_MARK.get(r["status"], "x"),
                                         color="crimson", transform=axes[1, col].get_xaxis_transform(), clip_on=False)  # fmt: skip
                    axes[1, col].annotate(r["status"], (r["batch_size"] * dodge, 0.05), xycoords=axes[1, col].get_xaxis_transform(),
                                          fontsize=7, color="crimson")  # fmt: skip
        axes[0, col].set_title(f"{mode}: median latency per batch (ms)", fontsize=9)
        axes[1, col].set_title(f"{mode}: images/s (batch / median)", fontsize=9)
        measured = sorted({int(b) for b in lat[lat["mode"] == mode]["batch_size"]}) or batches
        for row in range(2):
            ax = axes[row, col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _batch_axis(ax.xaxis, measured)
            _plain_log(ax.yaxis)
            ax.grid(alpha=0.3, which="major")
            ax.set_xlim(min(measured) / 1.35, max(measured) * 1.35)
        axes[1, col].set_xlabel("batch size (measured batches only)")
    axes[0, 0].set_ylabel("ms per batch")
    axes[1, 0].set_ylabel("images / s")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    note = ("markers: measured batches (models side by side); band and whiskers: 95% CI of the median"
            if banded else "markers: measured batches (models side by side); no band: these records kept no samples")  # fmt: skip
    fig.tight_layout()
    _stamp(fig, f"{note}; orange ring: unstable or contended; red: oom/error", conditions, fontsize=7.5)
    return _save(fig, out, Figure("latency_vs_batch", "Latency and throughput vs batch size", f"{note}. {conditions}"))  # fmt: skip


MEMORY_PARTS = [
    ("param_bytes", "parameters", None),
    ("grad_bytes", "gradients", "train"),
    ("optimizer_state_bytes", "optimizer state", "train"),
    ("input_bytes", "input tensor", None),
    ("activation_bytes", "saved for backward (train)", "train"),
    ("activation_bytes", "largest layer in+out (inference)", "inference"),
]


def memory_breakdown(frames: Frames, out: Path, conditions: str) -> Figure | None:
    mem = frames.metric("memory")
    if not len(mem):
        return None
    rows = []  # per model and mode, the record of the largest batch at the model's own size
    for model in dict.fromkeys(mem["model"]):
        for mode in ("inference", "train"):
            mine = mem[(mem["model"] == model) & (mem["mode"] == mode) & (mem["image_size"] == frames.sizes.get(model))]  # fmt: skip
            if len(mine):
                rows.append(mine.loc[mine["batch_size"].astype(int).idxmax()].to_dict())
    if not any(r["status"] == "ok" for r in rows):
        return None  # nothing measured to draw; the table lists the failures
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.32 * len(rows)))
    labels = [f"{r['model']} {r['mode']} b{r['batch_size']}" for r in rows]
    ys = list(range(len(rows)))
    left = [0.0] * len(rows)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#b39ddb"]
    for (key, name, mode), color in zip(MEMORY_PARTS, colors, strict=True):
        vals = [r[key] / 2**20 if r["status"] == "ok" and (mode is None or r["mode"] == mode) else 0 for r in rows]  # fmt: skip
        ax.barh(ys, vals, left=left, label=f"analytic: {name}", color=color, height=0.7)
        left = [a + v for a, v in zip(left, vals, strict=True)]
    measured = [(y, r["measured_bytes"] / 2**20) for y, r in zip(ys, rows, strict=True) if r["status"] == "ok"]  # fmt: skip
    ax.scatter([m for _, m in measured], [y for y, _ in measured], marker="|", s=260, color="black",
               linewidths=2.2, label="measured peak", zorder=3)  # fmt: skip
    for y, r in zip(ys, rows, strict=True):
        if r["status"] != "ok":
            ax.annotate(r["status"], (0, y), va="center", color="crimson", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MiB")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Memory at the largest measured batch: analytic breakdown (bars), measured peak (|)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    _stamp(fig, conditions)
    return _save(fig, out, Figure("memory_breakdown", "Memory breakdown", conditions))


def by_layer_type(frames: Frames, out: Path, conditions: str) -> Figure | None:
    counts = {  # model → (its ParamCount, its FlopCount) at its own size, for models with both
        m: (p.result, f.result)
        for m in frames.models
        if (p := first_ok(frames.records, "params", model=m, image_size=frames.sizes[m]))
        and (f := first_ok(frames.records, "flops", model=m, image_size=frames.sizes[m]))
    }
    if not counts:
        return None
    models = list(counts)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    kinds = ["conv", "linear", "norm", "other"]
    for ax, what in ((a1, "params"), (a2, "macs")):
        bottom = [0.0] * len(models)
        for kind in kinds:
            if what == "params":
                vals = [p.params_by_layer_type.get(kind, 0) / 1e6 for p, _ in counts.values()]
            else:
                vals = [_macs_of_kind(f.macs_by_operator, kind) / 1e9 for _, f in counts.values()]
            ax.bar(models, vals, bottom=bottom, label=kind)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_ylabel("parameters (millions)" if what == "params" else "GMACs per image")
        ax.tick_params(axis="x", labelrotation=35, labelsize=8)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
        ax.grid(axis="y", alpha=0.3)
    a1.set_title("Parameters by layer type", fontsize=10)
    a2.set_title("MACs by layer type, each model at its own input (fvcore)", fontsize=10)
    a1.legend(fontsize=8)
    fig.tight_layout()
    _stamp(fig, conditions)
    return _save(fig, out, Figure("by_layer_type", "Parameters and MACs by layer type", conditions))


def _macs_of_kind(ops: dict, kind: str) -> float:
    groups = {
        "conv": ("conv",),
        "linear": ("linear", "addmm", "matmul", "mm", "bmm", "einsum"),
        "norm": ("batch_norm", "group_norm", "layer_norm", "instance_norm"),
    }
    if kind in groups:
        return sum(v for k, v in ops.items() if k in groups[kind])
    known = {k for g in groups.values() for k in g}
    return sum(v for k, v in ops.items() if k not in known)


def training_curves(frames: Frames, out: Path, conditions: str) -> Figure | None:
    """Per epoch when any run trained more than one; else the per-step curve points of the
    single epoch; no figure when a single epoch left no curve points (never an empty plot)."""
    acc = frames.metric("accuracy")
    acc = acc[[bool(runs) for runs in acc["runs"]]] if len(acc) else acc
    if not len(acc):
        return None
    runs = [(m, run) for m, rs in zip(acc["model"], acc["runs"], strict=True) for run in rs]
    per_epoch = any(len(run.epochs) > 1 for _, run in runs)
    if not per_epoch and not any(run.curve for _, run in runs):
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    order = list(dict.fromkeys(m for m, _ in runs))
    seen: dict[str, int] = {}
    for model, run in runs:  # a colour per model, a line style per seed
        color = COLORS[order.index(model) % len(COLORS)]
        ls = ("-", "--", ":", "-.")[seen.setdefault(model, 0) % 4]
        seen[model] += 1
        label = f"{model} seed {run.seed}" + (" (diverged)" if run.diverged else "")
        if per_epoch:
            ep = [e.epoch for e in run.epochs]
            a1.plot(ep, [e.train_loss for e in run.epochs], marker="o", ms=4, color=color, ls=ls, label=label)  # fmt: skip
            a2.plot(ep, [e.test_accuracy for e in run.epochs], marker="o", ms=4, color=color, ls=ls)
        elif run.curve:
            xs = [p.images for p in run.curve]
            a1.plot(xs, [p.train_loss for p in run.curve], color=color, ls=ls, lw=1.2, label=label)
            a2.plot(xs, [p.train_accuracy for p in run.curve], color=color, ls=ls, lw=1.2)
            if run.epochs:  # the end-of-epoch test accuracy, where the curve ends
                a2.scatter([xs[-1]], [run.epochs[-1].test_accuracy], marker="*", s=70, color=color, zorder=3)  # fmt: skip
        if run.diverged:
            a1.annotate("diverged", (1.0, 0.98), xycoords="axes fraction", ha="right", va="top", color="crimson", fontsize=8)  # fmt: skip
    if per_epoch:
        a1.set_title("Train loss per epoch", fontsize=10)
        a2.set_title("Test accuracy per epoch", fontsize=10)
        for ax in (a1, a2):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    else:
        a1.set_title("Train loss during the single epoch (mean since the previous point)", fontsize=9)  # fmt: skip
        a2.set_title("Train accuracy during the epoch; ★ test accuracy at its end", fontsize=9)
        for ax in (a1, a2):
            ax.set_xlabel("training images seen")
            ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    a2.set_ylim(0, 1)
    fig.legend(*a1.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7.5, frameon=False)  # fmt: skip
    fig.tight_layout()
    _stamp(fig, conditions)
    return _save(fig, out, Figure("training_curves", "Training curves", conditions))


def roofline(frames: Frames, out: Path, conditions: str) -> Figure | None:
    roof_records = ok_records(frames.records, "roofline")
    roof = [(r.spec, r.result) for r in roof_records]
    if not roof:
        return None
    uses = {r.spec.model: frame_utilization(frames.records, r) for r in roof_records}
    fig, ax = plt.subplots(figsize=(8.4, 5.2))
    first = roof[0][1]
    peak, bw = first.peak_flops, first.peak_bytes_per_s
    intensities = [lay.intensity for _, v in roof for lay in v.layers]
    lo, hi = min(intensities + [0.5]) / 2, max(intensities + [peak / bw]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    under = any(above_roof(v) for _, v in roof)
    ax.plot(xs, [min(peak, bw * x) / 1e9 for x in xs], color="black", lw=1.5,
            label="measured roof" + (" (underestimated: points above it)" if under else ""))  # fmt: skip
    sheet_f, sheet_b = first.datasheet_flops, first.datasheet_bytes_per_s
    source = first.peaks.datasheet_source if first.peaks else None
    if sheet_f:
        ys = [min(sheet_f, sheet_b * x) if sheet_b else sheet_f for x in xs]
        low = sheet_f < peak  # a probe ran above it: one of its factors (the clock) is low
        ax.plot(xs, [y / 1e9 for y in ys], color="grey", ls="--", lw=1,
                label=f"data-sheet roof{f' ({source})' if source else ''}"
                + ("" if sheet_b else ", compute only")
                + (": below the measured peak, underestimated" if low else ""))  # fmt: skip
    for i, (spec, v) in enumerate(roof):
        pts = [lay for lay in v.layers if lay.achieved_flops]
        use = uses[spec.model]
        mfu = utilization(use.mfu, above_roof(v) or use.mfu > 1)
        ax.scatter([p.intensity for p in pts], [p.achieved_flops / 1e9 for p in pts], s=16, alpha=0.65,
                   color=COLORS[i % len(COLORS)], label=f"{spec.model} b{spec.batch_size} (MFU {mfu})")  # fmt: skip
    # name the layers that cost the most time, and every one above the roof (at most 10)
    timed = [(spec.model, lay) for spec, v in roof for lay in v.layers if lay.achieved_flops]
    over = [(spec.model, lay) for spec, v in roof for lay in v.layers if lay.above_compute_roof(v.peak_flops)]
    top = sorted(timed, key=lambda ml: -(ml[1].time_ms or 0))
    if over:
        ax.scatter([lay.intensity for _, lay in over], [lay.achieved_flops / 1e9 for _, lay in over], s=70,
                   facecolors="none", edgecolors="crimson", linewidths=1.2, zorder=4,
                   label="above the measured roof (peak underestimated)")  # fmt: skip
    chosen = list(dict.fromkeys([*over[:5], *top]))[:10]
    _label_column(ax, [
        (lay.intensity, lay.achieved_flops / 1e9,
         f"{m} {lay.name} ({lay.kernel or lay.layer}{', above roof' if (m, lay) in over else ''})")
        for m, lay in chosen
    ], fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax.xaxis, subs=(1.0,))
    _plain_log(ax.yaxis)
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.set_title("Per-layer roofline (conv and linear layers); named: the most time-consuming"
                 + (" and those above the roof" if over else ""), fontsize=9)  # fmt: skip
    _stamp(fig, conditions)
    return _save(fig, out, Figure("roofline", "Per-layer roofline", conditions))


def lineage(frames: Frames, out: Path, conditions: str) -> Figure | None:
    """Each variant against its parent, every bar signed so that right is better; accuracy in
    percentage points on its own axis; a change the run does not resolve is faded."""
    frame = frames.lineage
    if not len(frame):
        return None
    cost = [(k, f) for k, f in LINEAGE_FIELDS.items() if not f.points]
    n = len(frame)
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(10.5, 1.0 + 1.0 * n), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1]})  # fmt: skip
    height = 0.8 / len(cost)
    faded_any = False
    records = frame.to_dict("records")
    for i, (key, f) in enumerate(cost):
        sign = -1 if f.lower_is_better else 1
        ys = [y + i * height for y in range(n)]
        vals = [0.0 if is_missing(r[f"{key} change"]) else sign * 100 * r[f"{key} change"] for r in records]  # fmt: skip
        noise = [r[f"{key} noise"] for r in records]
        faded = [c is not None and not c.significant for c in noise]
        faded_any |= any(faded)
        better = "lower" if f.lower_is_better else "higher"
        bars = ax.barh(ys, vals, height=height, color=COLORS[i], label=f"{f.label} ({better} is better)")  # fmt: skip
        for bar, fade in zip(bars, faded, strict=True):
            if fade:
                bar.set_alpha(0.35)
                bar.set_hatch("///")
        for y, c in zip(ys, noise, strict=True):
            if key in ("latency_ms_p50_b1", "train_images_per_s") and c is not None and c.known:
                if key == "latency_ms_p50_b1":  # improvement = 1 - ratio of latencies
                    a, b = 100 * (1 - c.high), 100 * (1 - c.low)
                else:  # improvement = ratio of throughputs - 1
                    a, b = 100 * (c.low - 1), 100 * (c.high - 1)
                ax.plot([a, b], [y, y], color="black", lw=1)
    for y, r in enumerate(records):
        v = r["test_accuracy_mean change"]
        if not is_missing(v):
            axp.barh([y + 0.4 - height / 2], [100 * v], height=0.5, color=COLORS[len(cost) % len(COLORS)])  # fmt: skip
            axp.annotate(points(v), (100 * v, y + 0.4 - height / 2), xytext=(3 if v >= 0 else -3, 0),
                         textcoords="offset points", ha="left" if v >= 0 else "right", va="center", fontsize=7)  # fmt: skip
        else:
            axp.annotate(r["accuracy_status"] or "—", (0, y + 0.4 - height / 2), fontsize=7, ha="center", va="center")  # fmt: skip
    def name(r):
        sizes = f"\n({r['input']} vs {r['parent_input']} px)" if r["input"] != r["parent_input"] else ""
        return f"{r['variant']}\nvs {r['parent']}{sizes}"

    ax.set_yticks([y + 0.4 - height / 2 for y in range(n)], [name(r) for r in records], fontsize=8)
    ax.invert_yaxis()  # the first variant on top; within it, bars in legend order
    for a in (ax, axp):
        a.axvline(0, color="black", lw=0.8)
        a.grid(axis="x", alpha=0.3)
    ax.set_xlabel("improvement against the parent (%); right = better for every bar")
    axp.set_xlabel("test accuracy change (pp); right = better")
    axp.margins(x=0.45)
    from matplotlib.patches import Patch  # solid swatches: a faded first bar must not style the key

    labels = [f"{f.label} ({'lower' if f.lower_is_better else 'higher'} is better)" for _, f in cost]
    handles = [Patch(color=COLORS[i]) for i in range(len(cost))]  # top to bottom = bar order
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=7.5, frameon=False,
               title="bars, top to bottom", title_fontsize=7.5)  # fmt: skip
    note = ("hatched, faded: not resolved (95% CI of the ratio includes 1, or the change is below "
            "what the run resolves; memory: within the identical pair's spread); black line: 95% CI "
            "over the rounds") if faded_any else "black line: 95% CI over the rounds where samples were kept"  # fmt: skip
    ax.set_title("GoogLeNet variants against their parents — right is better", fontsize=10)
    fig.tight_layout()
    _stamp(fig, note, conditions)
    return _save(fig, out, Figure("lineage", "GoogLeNet lineage", f"{note}. {conditions}"))


def scaling(frames: Frames, out: Path, conditions: str) -> Figure | None:
    """Efficiency against world size (weak and strong), and per step the gradient bytes against
    the compute time (the no_sync step) at the largest world size."""
    records = ok_records(frames.records, "scaling")
    if not records:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, r in enumerate(records):
        color = COLORS[i % len(COLORS)]
        for kind, style in (("weak", "-"), ("strong", "--")):
            pts = sorted((p for p in r.result.points if p.kind == kind), key=lambda p: p.world_size)
            a1.plot([p.world_size for p in pts], [100 * p.efficiency for p in pts], style,
                    marker="o", color=color, label=f"{r.spec.model} {kind}")  # fmt: skip
        top = max((p for p in r.result.points if p.kind == "weak"), key=lambda p: p.world_size)
        a2.scatter(top.local_step_ms_p50, r.result.grad_bytes / 2**20, color=color, s=40)
        a2.annotate(f"{r.spec.model} (W={top.world_size}: {100 * top.efficiency:.0f}%)",
                    (top.local_step_ms_p50, r.result.grad_bytes / 2**20), fontsize=8,
                    xytext=(5, 3), textcoords="offset points")  # fmt: skip
    sizes = sorted({p.world_size for r in records for p in r.result.points})
    a1.set_xticks(sizes)
    a1.set_xticklabels([str(s) for s in sizes])
    a1.set_xlabel("world size (ranks)")
    a1.set_ylabel("efficiency % (images/s / (W x images/s at 1))")
    a1.axhline(100, color="grey", lw=0.8)
    a1.set_title("Scaling efficiency; solid: weak, dashed: strong", fontsize=10)
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.set_xlabel("compute per step, ms (no_sync step, per-rank batch)")
    a2.set_ylabel("gradient MiB all-reduced per step")
    a2.set_title("What each step must move against what it computes", fontsize=10)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    _stamp(fig, conditions)
    return _save(fig, out, Figure("scaling", "Data-parallel scaling", conditions))


def make_figures(frames: Frames, out: Path, conditions: str) -> list[Figure]:
    makers = (accuracy_vs_gmacs, latency_vs_batch, memory_breakdown, by_layer_type, training_curves,
              roofline, lineage, scaling)  # fmt: skip
    return [f for f in (m(frames, out, conditions) for m in makers) if f is not None]
