"""Figures from records (matplotlib, Agg): each saved as PNG and SVG, each titled with its conditions.

A figure never stands alone: the report puts the numbers it plots in a table beside it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from .fmt import is_missing, percent  # noqa: E402
from .frames import LINEAGE_FIELDS, Frames, first_ok, ok_records  # noqa: E402

__all__ = ["Figure", "make_figures"]

STATUS_MARK = {"oom": "x", "error": "X", "unsupported": "s", "diverged": "v"}


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


def accuracy_vs_gmacs(frames: Frames, out: Path, conditions: str) -> Figure | None:
    """Canziani et al. (2016)'s chart: accuracy against compute, marker area ∝ parameters."""
    frame = frames.overview
    points = [
        r for r in frame.to_dict("records")
        if r["accuracy_status"] is not None and r["gmacs"] is not None and r["params"] is not None
    ] if len(frame) else []  # fmt: skip
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    biggest = max(p["params"] for p in points)
    for p in points:
        model, gmacs, acc, status = p["model"], p["gmacs"], p["test_accuracy_mean"], p["accuracy_status"]  # fmt: skip
        size = 60 + 1400 * p["params"] / biggest
        if acc is None:  # failed, or diverged on every seed: drawn at the bottom with its status
            ax.scatter([gmacs], [0.0], s=80, marker=STATUS_MARK.get(status, "x"), color="crimson")
            ax.annotate(
                f"{model} ({status})", (gmacs, 0.0), textcoords="offset points", xytext=(6, 6)
            )
            continue
        std = p["test_accuracy_std"] or 0.0
        ax.scatter([gmacs], [acc], s=size, alpha=0.45)
        ax.errorbar([gmacs], [acc], yerr=[std], fmt="none", color="black", capsize=3)
        ax.annotate(
            f"{model}"
            + (f" ({status})" if status != "ok" else "")
            + f"\n{p['params'] / 1e6:.1f}M params",
            (gmacs, acc),
            textcoords="offset points",
            xytext=(8, -4),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("GMACs per image at the model's default input (fvcore, 1 multiply-add = 1; log)")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance (0.10)")
    ax.legend(loc="lower right", fontsize=8)
    sizes = sorted({p["train_image_size"] for p in points})
    ax.set_title(
        "Accuracy vs computation; marker area ∝ parameters\n(accuracy trained at "
        f"{', '.join(map(str, sizes))} px: see the table for each model's recipe)",
        fontsize=9,
    )
    fig.text(0.01, -0.04, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("accuracy_vs_gmacs", "Accuracy vs GMACs", conditions))


def latency_vs_batch(frames: Frames, out: Path, conditions: str) -> Figure | None:
    lat = frames.metric("latency")
    if not len(lat):
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, mode in enumerate(("inference", "train")):
        for model in dict.fromkeys(lat["model"]):
            mine = lat[(lat["model"] == model) & (lat["mode"] == mode)].sort_values("batch_size")
            ok = mine[mine["status"] == "ok"]
            if len(ok):
                b = list(ok["batch_size"])
                line = axes[0, col].plot(b, list(ok["latency_ms_p50"]), marker="o", label=model)[0]
                axes[1, col].plot(b, list(ok["images_per_s"]), marker="o", color=line.get_color())
                flagged = ok[[bool(u or c) for u, c in zip(ok["unstable"], ok["contended"], strict=True)]]  # fmt: skip
                for batch, ms in zip(flagged["batch_size"], flagged["latency_ms_p50"], strict=True):
                    axes[0, col].scatter([batch], [ms], s=120, facecolors="none", edgecolors="orange")  # fmt: skip
            for batch, status in zip(mine["batch_size"], mine["status"], strict=True):
                if status != "ok":
                    bottom = axes[1, col].get_ylim()[0] or 1
                    axes[1, col].scatter([batch], [bottom], marker=STATUS_MARK.get(status, "x"), color="crimson")  # fmt: skip
                    axes[1, col].annotate(status, (batch, bottom), fontsize=7, color="crimson")
        axes[0, col].set_title(
            f"{mode}: median latency (orange ring: unstable or contended)", fontsize=9
        )
        axes[1, col].set_title(
            f"{mode}: images/s (batch / median); red marks: oom/error", fontsize=9
        )
        for row in range(2):
            axes[row, col].set_xscale("log", base=2)
            axes[row, col].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axes[row, col].set_yscale("log")
            axes[row, col].grid(alpha=0.3, which="both")
        axes[1, col].set_xlabel("batch size")
    axes[0, 0].set_ylabel("ms per batch")
    axes[1, 0].set_ylabel("images / s")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(conditions, fontsize=8, color="dimgray")
    fig.tight_layout()
    return _save(
        fig, out, Figure("latency_vs_batch", "Latency and throughput vs batch size", conditions)
    )


MEMORY_PARTS = [
    ("param_bytes", "parameters"),
    ("grad_bytes", "gradients"),
    ("optimizer_state_bytes", "optimizer state"),
    ("input_bytes", "input"),
    ("activation_bytes", "activations"),
]


def memory_breakdown(frames: Frames, out: Path, conditions: str) -> Figure | None:
    mem = frames.metric("memory")
    if not len(mem):
        return None
    rows = []  # per model and mode, the record of the largest batch
    for model in dict.fromkeys(mem["model"]):
        for mode in ("inference", "train"):
            mine = mem[(mem["model"] == model) & (mem["mode"] == mode)]
            if len(mine):
                rows.append(mine.loc[mine["batch_size"].astype(int).idxmax()].to_dict())
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.6))
    labels = [f"{r['model']}\n{r['mode']} b{r['batch_size']}" for r in rows]
    xs = range(len(rows))
    bottom = [0.0] * len(rows)
    for key, name in MEMORY_PARTS:
        vals = [r[key] / 2**20 if r["status"] == "ok" else 0 for r in rows]
        ax.bar(xs, vals, bottom=bottom, label=f"analytic: {name}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    measured = [r["measured_bytes"] / 2**20 if r["status"] == "ok" else None for r in rows]
    ax.scatter([x for x, m in zip(xs, measured, strict=True) if m is not None], [m for m in measured if m is not None],
               marker="_", s=900, color="black", linewidths=2.5, label="measured peak", zorder=3)  # fmt: skip
    for x, r in zip(xs, rows, strict=True):
        if r["status"] != "ok":
            ax.annotate(r["status"], (x, 0), ha="center", va="bottom", color="crimson")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("MiB")
    ax.legend(fontsize=7)
    ax.set_title("Memory: analytic breakdown (bars) and measured peak (line)", fontsize=10)
    fig.text(0.01, -0.06, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("memory_breakdown", "Memory breakdown", conditions))


def by_layer_type(frames: Frames, out: Path, conditions: str) -> Figure | None:
    counts = {  # model → (its ParamCount, its FlopCount), for models with both
        m: (p.result, f.result)
        for m in frames.models
        if (p := first_ok(frames.records, "params", model=m))
        and (f := first_ok(frames.records, "flops", model=m))
    }
    if not counts:
        return None
    models = list(counts)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
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
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    a1.set_title("Parameters by layer type", fontsize=10)
    a2.set_title("MACs by layer type (fvcore)", fontsize=10)
    a1.legend(fontsize=8)
    fig.suptitle(conditions, fontsize=8, color="dimgray")
    fig.tight_layout()
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
    acc = frames.metric("accuracy")
    acc = acc[[bool(runs) for runs in acc["runs"]]] if len(acc) else acc
    if not len(acc):
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for model, runs in zip(acc["model"], acc["runs"], strict=True):
        for run in runs:
            ep = [e.epoch for e in run.epochs]
            label = f"{model} seed {run.seed}" + (" (diverged)" if run.diverged else "")
            line = a1.plot(ep, [e.train_loss for e in run.epochs], marker="o", label=label)[0]
            a2.plot(ep, [e.test_accuracy for e in run.epochs], marker="o", color=line.get_color())
            if run.diverged:
                a1.scatter([len(ep) + 1], [a1.get_ylim()[1]], marker="v", color="crimson")
    a1.set_title("Train loss per epoch", fontsize=10)
    a2.set_title("Test accuracy per epoch", fontsize=10)
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    a2.set_ylim(0, 1)
    a1.legend(fontsize=7)
    fig.suptitle(conditions, fontsize=8, color="dimgray")
    fig.tight_layout()
    return _save(fig, out, Figure("training_curves", "Training curves", conditions))


def roofline(frames: Frames, out: Path, conditions: str) -> Figure | None:
    roof = [(r.spec, r.result) for r in ok_records(frames.records, "roofline")]
    if not roof:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.8))
    first = roof[0][1]
    peak, bw = first.peak_flops, first.peak_bytes_per_s
    intensities = [lay.intensity for _, v in roof for lay in v.layers]
    lo, hi = min(intensities + [0.1]) / 2, max(intensities + [peak / bw]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peak, bw * x) / 1e9 for x in xs], color="black", lw=1.5, label="measured roof")
    sheet_f, sheet_b = first.datasheet_flops, first.datasheet_bytes_per_s
    if sheet_f and sheet_b:
        ax.plot(
            xs,
            [min(sheet_f, sheet_b * x) / 1e9 for x in xs],
            color="grey",
            ls="--",
            lw=1,
            label="data-sheet roof",
        )
    for spec, v in roof:
        pts = [lay for lay in v.layers if lay.achieved_flops]
        ax.scatter([p.intensity for p in pts], [p.achieved_flops / 1e9 for p in pts], s=18, alpha=0.7,
                   label=f"{spec.model} b{spec.batch_size} (MFU {percent(v.mfu)})")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Per-layer roofline (conv and linear layers)", fontsize=10)
    fig.text(0.01, -0.04, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("roofline", "Per-layer roofline", conditions))


def lineage(frames: Frames, out: Path, conditions: str) -> Figure | None:
    frame = frames.lineage
    if not len(frame):
        return None
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.9 * len(frame)))
    height = 0.8 / len(LINEAGE_FIELDS)
    for i, (key, (label, _, _)) in enumerate(LINEAGE_FIELDS.items()):
        vals = [0.0 if is_missing(v) else 100 * v for v in frame[f"{key} change"]]
        ax.barh([y + i * height for y in range(len(frame))], vals, height=height, label=label)
    ax.set_yticks(
        [y + 0.4 - height / 2 for y in range(len(frame))],
        [f"{v}\nvs {p}" for v, p in zip(frame["variant"], frame["parent"], strict=True)],
        fontsize=8,
    )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("change against the parent (%)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("GoogLeNet variants against their parents", fontsize=10)
    fig.text(0.01, -0.02, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("lineage", "GoogLeNet lineage", conditions))


def make_figures(frames: Frames, out: Path, conditions: str) -> list[Figure]:
    makers = (accuracy_vs_gmacs, latency_vs_batch, memory_breakdown, by_layer_type, training_curves,
              roofline, lineage)  # fmt: skip
    return [f for f in (m(frames, out, conditions) for m in makers) if f is not None]
