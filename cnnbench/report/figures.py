"""Figures from records (matplotlib, Agg): each saved as PNG and SVG.

A figure never stands alone: the report puts the numbers it plots in a table beside it, and the
run's conditions once at its top (not under every figure). Every figure is drawn for the report's
width (about 1,100 px): data only where it was measured (markers), every axis labelled with its
unit, log axes with plain tick labels (1, 2, 4, 16), names in a column beside the axes that never
overlap and whose leader lines never cross, and the noise band where there is one (a band joins
measured points: a series of one point has a whisker, never a band).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .. import stats  # noqa: E402
from ..analysis.frames import LINEAGE_FIELDS, Frames, above_roof, first_ok, ok_records  # noqa: E402
from ..analysis.frames import utilization as frame_utilization  # noqa: E402
from ..analysis.frontier import SEEDS  # noqa: E402
from ..analysis.frontier import frontier as frontier_finding  # noqa: E402
from .fmt import is_missing, points, utilization  # noqa: E402

__all__ = ["Figure", "make_figures"]

STATUS_MARK = {"oom": "x", "error": "X", "unsupported": "s", "diverged": "v"}
COLORS = plt.get_cmap("tab10").colors
# The roofline names these models' costliest layers (AlexNet: the chapter's first network;
# GoogLeNet: exercise 5's subject); every other model's layers are drawn faint and unnamed.
ROOFLINE_FOCUS = ("alexnet", "googlenet")
NAMED_PER_MODEL = 4  # costliest layers named per focus model on the roofline
LABEL_LINE = 1.35  # a label's line height, in font sizes: the least distance between two names


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
    """Notes above the figure (the key to its marks), wrapped to its width so that they neither
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


# --- names in a column beside the axes ----------------------------------------------------------


def _isotonic(values: list[float]) -> list[float]:
    """The non-decreasing sequence nearest to ``values`` in least squares (pool adjacent
    violators: a run that decreases is replaced by its mean)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            before, n = blocks.pop()
            blocks.append([(before * n + mean * count) / (n + count), n + count])
    return [mean for mean, count in blocks for _ in range(int(count))]


def _spread(wanted: list[float], gap: float) -> list[float]:
    """Positions (axes fraction) nearest to ``wanted`` (ascending) with at least ``gap`` between
    neighbours: a crowd spreads about its centre rather than upwards; kept within half a line of
    the axes' ends when they fit there, else centred on the axes and reaching past both ends."""
    n = len(wanted)
    span = (n - 1) * gap
    # half a line inside the axes' ends, so that a name at either end stays beside the axes
    lo, hi = min(gap / 2, 0.5 - span / 2), max(1.0 - gap / 2, 0.5 + span / 2)
    # q_i = p_i - i * gap must not decrease: then neighbours are at least gap apart
    shifted = _isotonic([w - i * gap for i, w in enumerate(wanted)])
    return [min(max(q + i * gap, lo + i * gap), hi - (n - 1 - i) * gap) for i, q in enumerate(shifted)]  # fmt: skip


def _segments_cross(a, b, c, d) -> bool:
    """Whether segments ab and cd cross at a point inside both (touching ends do not count)."""

    def side(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def _uncross(starts: list, ends: list) -> list:
    """Ends reassigned until no two segments start→end cross: swapping the ends of two crossing
    segments shortens their total length, so this stops, at worst at the shortest assignment,
    which has no crossings."""
    ends = list(ends)
    n = len(ends)
    for _ in range(n**3 + 1):
        pair = next(((i, j) for i in range(n) for j in range(i + 1, n)
                     if _segments_cross(starts[i], ends[i], starts[j], ends[j])), None)  # fmt: skip
        if pair is None:
            break
        i, j = pair
        ends[i], ends[j] = ends[j], ends[i]
    return ends


def _label_column(ax, labelled, *, x=1.03, fontsize=7.5) -> list:
    """Each (x, y, text) named in a column right of the axes, a line apart, nearest to its
    point's height, with a straight leader line to its point; leader lines never cross. Call it
    once the axes' scales and limits are final (it freezes the limits) and do not resize the
    axes afterwards (tight_layout): the spacing is computed for the axes' height."""
    if not labelled:
        return []
    ax.set_xlim(ax.get_xlim())  # freeze autoscaling: the layout holds for these limits only
    ax.set_ylim(ax.get_ylim())
    to_axes = ax.transData + ax.transAxes.inverted()
    starts = [tuple(to_axes.transform((px, py))) for px, py, _ in labelled]
    height_pt = ax.get_window_extent().height * 72 / ax.figure.dpi
    order = sorted(range(len(labelled)), key=lambda i: starts[i][1])
    wanted = [min(max(starts[i][1], 0.0), 1.0) for i in order]  # a point off the axes: its edge
    heights = _spread(wanted, LABEL_LINE * fontsize / height_pt)
    ends = [(x, 0.0)] * len(labelled)
    for i, h in zip(order, heights, strict=True):
        ends[i] = (x, h)
    # crossings are the same in axes fraction as on screen (an affine map keeps them)
    ends = _uncross(starts, ends)
    return [
        ax.annotate(text, (px, py), xytext=end, textcoords="axes fraction", fontsize=fontsize,
                    va="center", ha="left", annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="grey", alpha=0.8, relpos=(0, 0.5),
                                    shrinkA=1, shrinkB=3))  # fmt: skip
        for (px, py, text), end in zip(labelled, ends, strict=True)
    ]


# --- accuracy against computation ----------------------------------------------------------------


def _accuracy_point(ax, p: dict, color, biggest: int) -> tuple[float, float, str]:
    """One network's marker (area ∝ its parameters) and its spread; returns what names it."""
    model, gmacs, acc, status = p["model"], p["trained_gmacs"], p["test_accuracy_mean"], p["accuracy_status"]  # fmt: skip
    if acc is None:  # failed, or diverged on every seed: drawn at the bottom with its status
        ax.scatter([gmacs], [0.0], s=80, marker=STATUS_MARK.get(status, "x"), color="crimson")
        return gmacs, 0.0, f"{model} ({status}) @{p['train_image_size']} px"
    ax.scatter([gmacs], [acc], s=60 + 1400 * p["trained_params"] / biggest, alpha=0.45, color=color)  # fmt: skip
    if p["test_accuracy_std"] is not None:
        ax.errorbar([gmacs], [acc], yerr=[p["test_accuracy_std"]], fmt="none", color="black", capsize=3)  # fmt: skip
    flag = f" ({status})" if status != "ok" else ""
    return gmacs, acc, f"{model}{flag} @{p['train_image_size']} px, {p['trained_params'] / 1e6:.2f}M params"  # fmt: skip


def accuracy_vs_gmacs(frames: Frames, out: Path) -> Figure | None:
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
    labelled = [_accuracy_point(ax, p, COLORS[i % len(COLORS)], biggest) for i, p in enumerate(points_)]  # fmt: skip
    ax.set_xscale("log")
    xs = [p["trained_gmacs"] for p in points_]
    ax.set_xlim(min(xs) / 1.8, max(xs) * 1.8)
    _plain_log(ax.xaxis)
    ax.set_xlabel("compute per image of the network as trained, at its training size (GMACs, log scale)")  # fmt: skip
    ax.set_ylabel("test accuracy (fraction correct)")
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
    caption = "Marker area ∝ the parameters of the network as trained; error bar: sample std over seeds"  # fmt: skip
    if left_out:
        caption += f". Not plotted (no count of the network as trained): {', '.join(left_out)}"
    return _save(fig, out, Figure("accuracy_vs_gmacs", "Accuracy vs GMACs (networks as trained)", caption))  # fmt: skip


# --- latency and throughput against batch --------------------------------------------------------


def _band(r) -> tuple[float, float] | None:
    """The noise band of a latency row: its 95% CI (recorded, or from its samples)."""
    low, high = stats.recorded_or_median_interval(r["latency_ms_p50_ci_low"], r["latency_ms_p50_ci_high"],
                                                  r["times_ms"], r["round_sizes"])  # fmt: skip
    return None if low is None or high is None else (low, high)


def _series(ax, xs, ys, intervals, color, label=None) -> None:
    """Measured points; where there are several, a dotted line and the interval as a band
    between them; the interval as whiskers on every point. One point: no line, no band."""
    ax.scatter(xs, ys, s=22, color=color, label=label, zorder=3)
    joined = len(xs) > 1  # a band or a line needs two measured batches to join
    if joined:
        ax.plot(xs, ys, ls=":", lw=0.8, color=color, alpha=0.6)
    if intervals is None:
        return
    lo, hi = [a for a, _ in intervals], [b for _, b in intervals]
    if joined:
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
    whiskers = [[y - a for y, a in zip(ys, lo, strict=True)], [b - y for y, b in zip(ys, hi, strict=True)]]  # fmt: skip
    ax.errorbar(xs, ys, yerr=whiskers, fmt="none", color=color, lw=0.8, capsize=2)


def _latency_model(axes, rows: list[dict], dodge: float, color, model: str) -> bool:
    """One model's latency (top) and throughput (bottom) at its measured batches, its failures
    marked at the foot of the throughput panel; True when it drew an interval."""
    for r in rows:
        if r["status"] != "ok":
            x, foot = r["batch_size"] * dodge, axes[1].get_xaxis_transform()
            axes[1].scatter([x], [0.02], marker=STATUS_MARK.get(r["status"], "x"), color="crimson",
                            transform=foot, clip_on=False)  # fmt: skip
            axes[1].annotate(r["status"], (x, 0.05), xycoords=foot, fontsize=7, color="crimson")
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return False
    xs = [r["batch_size"] * dodge for r in ok]
    bands = [_band(r) for r in ok]
    kept = all(b is not None for b in bands)
    per_s = [(r["batch_size"] / (hi / 1e3), r["batch_size"] / (lo / 1e3)) for r, (lo, hi) in zip(ok, bands, strict=True)] if kept else None  # fmt: skip
    _series(axes[0], xs, [r["latency_ms_p50"] for r in ok], bands if kept else None, color, model)
    _series(axes[1], xs, [r["images_per_s"] for r in ok], per_s, color)
    for r, x in zip(ok, xs, strict=True):
        if r["unstable"] or r["contended"]:
            axes[0].scatter([x], [r["latency_ms_p50"]], s=110, facecolors="none", edgecolors="orange", zorder=4)  # fmt: skip
    return kept


def _no_ok_panels(axes, mode: str, failed) -> None:
    """A mode with no ok record: its failures written where its panels would be."""
    what = "; ".join(f"{m} b{b}: {st}" for m, b, st in zip(failed["model"], failed["batch_size"], failed["status"], strict=True))  # fmt: skip
    for ax in axes:
        ax.text(0.5, 0.5, textwrap.fill(f"no ok {mode} record" + (f" ({what})" if what else ""), 50),
                ha="center", va="center", transform=ax.transAxes,
                color="crimson" if what else "dimgray", fontsize=8)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])


def _latency_axes(axes, mode: str, measured: list[int]) -> None:
    axes[0].set_title(f"{mode}: median latency per batch", fontsize=9)
    axes[1].set_title(f"{mode}: throughput (batch / median latency)", fontsize=9)
    axes[0].set_ylabel("median latency (ms per batch, log scale)")
    axes[1].set_ylabel("throughput (images/s, log scale)")
    for ax in axes:
        ax.set_xlabel("batch size (images; measured batches only)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _batch_axis(ax.xaxis, measured)
        _plain_log(ax.yaxis)
        ax.grid(alpha=0.3, which="major")
        ax.set_xlim(min(measured) / 1.35, max(measured) * 1.35)


def latency_vs_batch(frames: Frames, out: Path) -> Figure | None:
    lat = frames.metric("latency")
    if not len(lat) or not any(lat["status"] == "ok"):
        return None  # nothing to put on a log axis; the table lists the failures
    models = list(dict.fromkeys(lat["model"]))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    banded = False
    for col, mode in enumerate(("inference", "train")):
        mine = lat[lat["mode"] == mode]
        if not any(mine["status"] == "ok"):
            _no_ok_panels(axes[:, col], mode, mine)
            continue
        for i, model in enumerate(models):
            dodge = 2 ** ((i - (len(models) - 1) / 2) * 0.035)  # side by side at each measured batch
            rows = mine[mine["model"] == model].sort_values("batch_size").to_dict("records")
            banded |= _latency_model(axes[:, col], rows, dodge, COLORS[i % len(COLORS)], model)
        _latency_axes(axes[:, col], mode, sorted({int(b) for b in mine["batch_size"]}))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)  # fmt: skip
    note = ("Markers: measured batches (models side by side); band and whiskers: 95% CI of the "
            "median (a single batch: whiskers only, no band)" if banded else
            "Markers: measured batches (models side by side); no band: these records kept no samples")  # fmt: skip
    fig.tight_layout()
    _stamp(fig, f"{note}; orange ring: unstable or contended; red: oom/error", fontsize=7.5)
    return _save(fig, out, Figure("latency_vs_batch", "Latency and throughput vs batch size", note))


# --- memory and layer types ----------------------------------------------------------------------

MEMORY_PARTS = [
    ("param_bytes", "parameters", None),
    ("grad_bytes", "gradients", "train"),
    ("optimizer_state_bytes", "optimizer state", "train"),
    ("input_bytes", "input tensor", None),
    ("activation_bytes", "saved for backward (train)", "train"),
    ("activation_bytes", "largest layer in+out (inference)", "inference"),
]


def memory_breakdown(frames: Frames, out: Path) -> Figure | None:
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
    ax.set_xlabel("memory (MiB)")
    ax.set_ylabel("model, mode and batch")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Memory at the largest measured batch: analytic breakdown (bars), measured peak (|)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    caption = "Bars: the analytic breakdown at the largest measured batch; |: the measured peak"
    return _save(fig, out, Figure("memory_breakdown", "Memory breakdown", caption))


def by_layer_type(frames: Frames, out: Path) -> Figure | None:
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
        ax.set_ylabel("parameters (millions)" if what == "params" else "compute per image (GMACs)")
        ax.set_xlabel("model")
        ax.tick_params(axis="x", labelrotation=35, labelsize=8)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
        ax.grid(axis="y", alpha=0.3)
    a1.set_title("Parameters by layer type", fontsize=10)
    a2.set_title("MACs by layer type, each model at its own input (fvcore)", fontsize=10)
    a1.legend(fontsize=8)
    fig.tight_layout()
    caption = "Each model at its own input size; MACs counted by fvcore (one multiply-add = one MAC)"
    return _save(fig, out, Figure("by_layer_type", "Parameters and MACs by layer type", caption))


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


# --- training curves -----------------------------------------------------------------------------


def _training_run(loss_ax, acc_ax, run, per_epoch: bool, style: dict) -> None:
    """One seed's loss (on ``loss_ax``) and accuracy: per epoch, or the single epoch's curve
    points with the end-of-epoch test accuracy as a star where the curve ends."""
    if per_epoch:
        ep = [e.epoch for e in run.epochs]
        loss_ax.plot(ep, [e.train_loss for e in run.epochs], marker="o", ms=4, **style)
        acc_ax.plot(ep, [e.test_accuracy for e in run.epochs], marker="o", ms=4, **{**style, "label": None})  # fmt: skip
    elif run.curve:
        xs = [p.images for p in run.curve]
        loss_ax.plot(xs, [p.train_loss for p in run.curve], lw=1.2, **style)
        acc_ax.plot(xs, [p.train_accuracy for p in run.curve], lw=1.2, **{**style, "label": None})
        if run.epochs:
            acc_ax.scatter([xs[-1]], [run.epochs[-1].test_accuracy], marker="*", s=70, color=style["color"], zorder=3)  # fmt: skip
    if run.diverged:
        loss_ax.annotate("diverged", (1.0, 0.98), xycoords="axes fraction", ha="right", va="top", color="crimson", fontsize=8)  # fmt: skip


def _training_axes(loss_axes: dict, acc_ax, per_epoch: bool) -> None:
    span = "per epoch (mean over the epoch)" if per_epoch else "during the single epoch (mean since the previous point)"  # fmt: skip
    for smoothing, ax in loss_axes.items():
        if smoothing:
            ax.set_title(f"Label-smoothed loss (ε={smoothing:g}): not comparable with cross-entropy", fontsize=9)  # fmt: skip
            ax.set_ylabel(f"train loss, smoothed {smoothing:g} (nats)")
        else:
            ax.set_title(f"Train loss {span}", fontsize=9)
            ax.set_ylabel("train loss, cross-entropy (nats)")
    if per_epoch:
        acc_ax.set_title("Test accuracy per epoch", fontsize=9)
        acc_ax.set_ylabel("test accuracy (fraction correct)")
    else:
        acc_ax.set_title("Train accuracy during the epoch; ★ test accuracy at its end", fontsize=9)
        acc_ax.set_ylabel("accuracy (fraction correct)")
    for ax in (*loss_axes.values(), acc_ax):
        ax.grid(alpha=0.3)
        if per_epoch:
            ax.set_xlabel("epoch (passes over the training images)")
            ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        else:
            ax.set_xlabel("training images seen (images)")
            ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    acc_ax.set_ylim(0, 1)


def training_curves(frames: Frames, out: Path) -> Figure | None:
    """Per epoch when any run trained more than one; else the per-step curve points of the
    single epoch; no figure when a single epoch left no curve points (never an empty plot). A
    label-smoothed loss is not cross-entropy (its floor is above 0): it gets its own panel."""
    acc = frames.metric("accuracy")
    acc = acc[[bool(runs) for runs in acc["runs"]]] if len(acc) else acc
    if not len(acc):
        return None
    smoothing = [0.0 if is_missing(s) else float(s) for s in acc["label_smoothing"]]
    runs = [(m, run, s) for m, rs, s in zip(acc["model"], acc["runs"], smoothing, strict=True) for run in rs]  # fmt: skip
    per_epoch = any(len(run.epochs) > 1 for _, run, _ in runs)
    if not per_epoch and not any(run.curve for _, run, _ in runs):
        return None
    kinds = sorted({s for _, _, s in runs})  # 0.0 (plain cross-entropy) first
    # losses stacked on the left (a label-smoothed one in a shorter panel below), accuracy right
    fig = plt.figure(figsize=(11, 4.2 + 2.6 * (len(kinds) - 1)))
    grid = fig.add_gridspec(len(kinds), 2, height_ratios=[2.0] + [1.4] * (len(kinds) - 1))
    loss_axes = {s: fig.add_subplot(grid[row, 0]) for row, s in enumerate(kinds)}
    acc_ax = fig.add_subplot(grid[:, 1])
    order = list(dict.fromkeys(m for m, _, _ in runs))
    seen: dict[str, int] = {}
    for model, run, s in runs:  # a colour per model, a line style per seed
        ls = ("-", "--", ":", "-.")[seen.setdefault(model, 0) % 4]
        seen[model] += 1
        label = f"{model} seed {run.seed}" + (" (diverged)" if run.diverged else "")
        label += f" (label-smoothed loss {s:g}, not comparable)" if s else ""
        style = {"color": COLORS[order.index(model) % len(COLORS)], "ls": ls, "label": label}
        _training_run(loss_axes[s], acc_ax, run, per_epoch, style)
    _training_axes(loss_axes, acc_ax, per_epoch)
    handles = [h for ax in loss_axes.values() for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in loss_axes.values() for lab in ax.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7.5, frameon=False)  # fmt: skip
    fig.tight_layout()
    caption = "Train loss and accuracy of every seed, a colour per model and a line style per seed"
    if len(kinds) > 1 or kinds[0]:
        caption += "; a label-smoothed loss on its own panel (not comparable with cross-entropy)"
    return _save(fig, out, Figure("training_curves", "Training curves", caption))


# --- roofline ------------------------------------------------------------------------------------


def _roofs(ax, first, xs: list[float], under: bool) -> None:
    """The measured roof (and the data sheet's, where known) over intensities ``xs``."""
    peak, bw = first.peak_flops, first.peak_bytes_per_s
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


def _costliest(record, n: int) -> list[tuple[float, float, str]]:
    """The ``n`` layers of a roofline record that took the most time, named with their share of
    the profiled forward pass."""
    timed = [lay for lay in record.result.layers if lay.achieved_flops and lay.time_ms]
    total_ms = sum(lay.time_ms for lay in timed)
    top = sorted(timed, key=lambda lay: -lay.time_ms)[:n]
    return [(lay.intensity, lay.achieved_flops / 1e9,
             f"{record.spec.model} {lay.name} ({lay.kernel or ''} {lay.layer}".replace("( ", "(")
             + f"): {lay.time_ms:.1f} ms, {lay.time_ms / total_ms:.0%}")
            for lay in top]  # fmt: skip


def _layer_points(ax, records, focus) -> None:
    """The focus models' layers in colour, with their MFU in the legend; every other model's
    layers small and faint under them (they show the spread, not one model)."""
    faint = [lay for r in records if r not in focus for lay in r.result.layers if lay.achieved_flops]
    if faint:
        others = len(records) - len(focus)
        ax.scatter([lay.intensity for lay in faint], [lay.achieved_flops / 1e9 for lay in faint],
                   s=6, color="grey", alpha=0.3, lw=0, zorder=2,
                   label=f"the other {others} model{'s' if others > 1 else ''}' layers (unnamed)")  # fmt: skip
    for i, r in enumerate(focus):
        pts = [lay for lay in r.result.layers if lay.achieved_flops]
        use = frame_utilization(records, r)
        mfu = utilization(use.mfu, above_roof(r.result) or use.mfu > 1)
        ax.scatter([p.intensity for p in pts], [p.achieved_flops / 1e9 for p in pts], s=18, alpha=0.8,
                   color=COLORS[i % len(COLORS)], zorder=3,
                   label=f"{r.spec.model} b{r.spec.batch_size} (MFU {mfu})")  # fmt: skip


def roofline(frames: Frames, out: Path) -> Figure | None:
    records = ok_records(frames.records, "roofline")
    if not records:
        return None
    focus = [r for r in records if r.spec.model in ROOFLINE_FOCUS] or records[:1]
    fig, ax = plt.subplots(figsize=(8.4, 5.2))
    first = records[0].result
    intensities = [lay.intensity for r in records for lay in r.result.layers]
    lo, hi = min(intensities + [0.5]) / 2, max(intensities + [first.peak_flops / first.peak_bytes_per_s]) * 2  # fmt: skip
    _roofs(ax, first, [lo * (hi / lo) ** (i / 200) for i in range(201)], any(above_roof(r.result) for r in records))  # fmt: skip
    _layer_points(ax, records, focus)
    over = [(r.spec.model, lay) for r in records for lay in r.result.layers if lay.above_compute_roof(r.result.peak_flops)]  # fmt: skip
    if over:
        ax.scatter([lay.intensity for _, lay in over], [lay.achieved_flops / 1e9 for _, lay in over], s=70,
                   facecolors="none", edgecolors="crimson", linewidths=1.2, zorder=4,
                   label="above the measured roof (peak underestimated)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax.xaxis, subs=(1.0,))
    _plain_log(ax.yaxis)
    ax.set_xlabel("arithmetic intensity (FLOP/byte moved, log scale)")
    ax.set_ylabel("achieved throughput (GFLOP/s, log scale)")
    ax.grid(alpha=0.3, which="major")
    named = [p for r in focus for p in _costliest(r, NAMED_PER_MODEL)]
    ax.scatter([x for x, _, _ in named], [y for _, y, _ in named], s=55, facecolors="none",
               edgecolors="black", linewidths=0.8, zorder=4, label="named: the costliest layers")  # fmt: skip
    named += [(lay.intensity, lay.achieved_flops / 1e9, f"{m} {lay.name} (above roof)") for m, lay in over[:5]]  # fmt: skip
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    _label_column(ax, named, fontsize=7)
    who = " and ".join(r.spec.model for r in focus)
    ax.set_title(f"Per-layer roofline (conv and linear layers); named: the {NAMED_PER_MODEL} costliest of {who}"
                 + (" and those above the roof" if over else ""), fontsize=9)  # fmt: skip
    caption = (f"Named: the {NAMED_PER_MODEL} layers of {who} that took the most time per forward pass "
               "(ms, share of the pass); the other models' layers faint")  # fmt: skip
    return _save(fig, out, Figure("roofline", "Per-layer roofline", caption))


# --- GoogLeNet lineage ---------------------------------------------------------------------------


def _ratio_interval(key: str, change) -> tuple[float, float] | None:
    """The 95% CI of a timed change as an improvement in % (right = better), where known."""
    if key not in ("latency_ms_p50_b1", "train_images_per_s") or change is None or not change.known:
        return None
    if key == "latency_ms_p50_b1":  # improvement = 1 - ratio of latencies
        return 100 * (1 - change.high), 100 * (1 - change.low)
    return 100 * (change.low - 1), 100 * (change.high - 1)  # ratio of throughputs - 1


def _cost_bars(ax, records: list[dict], cost, height: float) -> bool:
    """A bar per cost field and variant, signed so that right is better; faded and hatched
    when the run does not resolve it; True when any was faded."""
    faded_any = False
    for i, (key, f) in enumerate(cost):
        sign = -1 if f.lower_is_better else 1
        ys = [y + i * height for y in range(len(records))]
        vals = [0.0 if is_missing(r[f"{key} change"]) else sign * 100 * r[f"{key} change"] for r in records]  # fmt: skip
        noise = [r[f"{key} noise"] for r in records]
        for bar, c in zip(ax.barh(ys, vals, height=height, color=COLORS[i]), noise, strict=True):
            if c is not None and not c.significant:
                faded_any = True
                bar.set_alpha(0.35)
                bar.set_hatch("///")
        for y, c in zip(ys, noise, strict=True):
            if (iv := _ratio_interval(key, c)) is not None:
                ax.plot(list(iv), [y, y], color="black", lw=1)
    return faded_any


def _accuracy_bars(axp, records: list[dict], ys: list[float], color) -> None:
    for y, r in zip(ys, records, strict=True):
        v = r["test_accuracy_mean change"]
        if is_missing(v):
            axp.annotate(r["accuracy_status"] or "—", (0, y), fontsize=7, ha="center", va="center")
            continue
        axp.barh([y], [100 * v], height=0.5, color=color)
        axp.annotate(points(v), (100 * v, y), xytext=(3 if v >= 0 else -3, 0), textcoords="offset points",
                     ha="left" if v >= 0 else "right", va="center", fontsize=7)  # fmt: skip


def _variant_name(r: dict) -> str:
    sizes = f"\n({r['input']} vs {r['parent_input']} px)" if r["input"] != r["parent_input"] else ""
    return f"{r['variant']}\nvs {r['parent']}{sizes}"


def lineage(frames: Frames, out: Path) -> Figure | None:
    """Each variant against its parent, every bar signed so that right is better; accuracy in
    percentage points on its own axis; a change the run does not resolve is faded."""
    frame = frames.lineage
    if not len(frame):
        return None
    cost = [(k, f) for k, f in LINEAGE_FIELDS.items() if not f.points]
    records = frame.to_dict("records")
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(10.5, 1.0 + 1.0 * len(records)), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1]})  # fmt: skip
    height = 0.8 / len(cost)
    faded_any = _cost_bars(ax, records, cost, height)
    centres = [y + 0.4 - height / 2 for y in range(len(records))]
    _accuracy_bars(axp, records, centres, COLORS[len(cost) % len(COLORS)])
    ax.set_yticks(centres, [_variant_name(r) for r in records], fontsize=8)
    ax.invert_yaxis()  # the first variant on top; within it, bars in legend order
    for a in (ax, axp):
        a.axvline(0, color="black", lw=0.8)
        a.grid(axis="x", alpha=0.3)
    ax.set_xlabel("improvement against the parent (%); right = better for every bar")
    ax.set_ylabel("variant vs its parent")
    axp.set_xlabel("test accuracy change (pp); right = better")
    axp.margins(x=0.45)
    labels = [f"{f.label} ({'lower' if f.lower_is_better else 'higher'} is better)" for _, f in cost]
    handles = [Patch(color=COLORS[i]) for i in range(len(cost))]  # solid: a faded bar must not style the key  # fmt: skip
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=7.5, frameon=False,
               title="bars, top to bottom", title_fontsize=7.5)  # fmt: skip
    note = ("Hatched, faded: not resolved (95% CI of the ratio includes 1, or the change is below "
            "what the run resolves; memory: within the identical pair's spread); black line: 95% CI "
            "over the rounds") if faded_any else "Black line: 95% CI over the rounds where samples were kept"  # fmt: skip
    ax.set_title("GoogLeNet variants against their parents — right is better", fontsize=10)
    fig.tight_layout()
    _stamp(fig, note)
    return _save(fig, out, Figure("lineage", "GoogLeNet lineage", note))


# --- data-parallel scaling -----------------------------------------------------------------------


def scaling(frames: Frames, out: Path) -> Figure | None:
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
    a1.set_ylabel("scaling efficiency (%)")
    a1.axhline(100, color="grey", lw=0.8)
    a1.set_title("Efficiency = images/s ÷ (W × images/s at W=1)\nsolid: weak, dashed: strong", fontsize=9)  # fmt: skip
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.set_xlabel("compute per step (ms; no_sync step, per-rank batch)")
    a2.set_ylabel("gradient all-reduced per step (MiB)")
    a2.set_title("What each step must move against what it computes", fontsize=10)
    a2.margins(x=0.3)  # room for the names right of the points
    a2.grid(alpha=0.3)
    fig.tight_layout()
    caption = "Solid: weak scaling (fixed per-rank batch); dashed: strong (fixed global batch)"
    return _save(fig, out, Figure("scaling", "Data-parallel scaling", caption))


# --- the accuracy–speed frontier -----------------------------------------------------------------


def _whisker(value: float, low, high) -> list[list[float]] | None:
    return None if low is None or high is None else [[value - low], [high - value]]


def _frontier_point(ax, p, color) -> tuple[float, float, str]:
    """One model: filled on the frontier, hollow when beaten; whiskers on both axes (95%)."""
    x, y = p.latency_ms_per_image, p.accuracy
    ax.errorbar([x], [y], xerr=_whisker(x, p.latency_low_ms_per_image, p.latency_high_ms_per_image),
                yerr=_whisker(y, p.accuracy_low, p.accuracy_high), fmt="o", ms=6, color=color,
                mfc=color if p.on_frontier else "white", mec=color, lw=0.8, capsize=2, zorder=3)  # fmt: skip
    sizes = f"@{p.trained_px} px" + ("" if p.latency_at_trained_size else f", timed @{p.latency_px} px")
    beaten = "" if p.on_frontier else f" — beaten by {', '.join(p.beaten_by)}"
    seeds = f", {p.seeds} seed{'s' if p.seeds != 1 else ''}"
    return x, y, f"{p.model} {sizes}{seeds}{beaten}"


def _frontier_panel(ax, group) -> None:
    labelled = [_frontier_point(ax, p, COLORS[i % len(COLORS)]) for i, p in enumerate(group.points)]
    front = group.frontier
    ax.step([p.latency_ms_per_image for p in front], [p.accuracy for p in front], where="post",
            color="black", lw=1.0, zorder=2, label="frontier: no model beats these beyond noise")  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    ax.autoscale_view()
    _plain_log(ax.xaxis)
    lo, hi = ax.get_xlim()
    for budget in (g.budget_ms_per_image for g in group.budgets):
        if lo < budget < hi:  # a budget off the axes would stretch them
            ax.axvline(budget, color="grey", lw=0.8, ls=":", zorder=1)
    ax.set_xlabel(f"latency per image (ms, median / batch {group.batch}, log scale)")
    ax.set_ylabel("test accuracy (fraction correct)")
    ax.grid(alpha=0.3, which="major")
    ax.set_title(f"{group.device}, batch {group.batch}: {len(front)} of {len(group.points)} models "
                 "on the frontier (filled)", fontsize=9)  # fmt: skip
    ax.legend(loc="lower right", fontsize=7.5)
    _label_column(ax, labelled)


def frontier(frames: Frames, out: Path) -> Figure | None:
    """Bianco et al.'s accuracy against inference time, one panel per device and batch: the
    frontier as a step line, every point with its 95% intervals on both axes."""
    finding = frontier_finding(frames)
    if not finding.groups:
        return None
    n = len(finding.groups)
    fig, axes = plt.subplots(n, 1, figsize=(7.6, 4.4 * n), squeeze=False)
    # before the names (their layout is for these axes): room for each title, half an inch on top
    fig.subplots_adjust(hspace=0.45, top=1 - 0.5 / fig.get_figheight())
    for ax, group in zip(axes[:, 0], finding.groups, strict=True):
        _frontier_panel(ax, group)
    kinds = {p.accuracy_interval for g in finding.groups for p in g.points}
    accuracy_note = "; ".join(
        (["accuracy over seeds"] if SEEDS in kinds else [])
        + (["accuracy of a single seed: the test set's binomial interval alone, no training "
            "noise in it"] if kinds - {SEEDS} else []))  # fmt: skip
    note = ("Filled: on the frontier; hollow: beaten beyond noise on both axes. Whiskers: 95% "
            f"intervals — latency between the run's processes; {accuracy_note}. Dotted: the 1, "
            "10 and 100 ms per image budgets (batch 1)")  # fmt: skip
    _stamp(fig, note)
    return _save(fig, out, Figure("frontier", "Accuracy–speed frontier", note))


def make_figures(frames: Frames, out: Path) -> list[Figure]:
    makers = (accuracy_vs_gmacs, latency_vs_batch, memory_breakdown, by_layer_type, training_curves,
              roofline, lineage, scaling, frontier)  # fmt: skip
    return [f for f in (m(frames, out) for m in makers) if f is not None]
