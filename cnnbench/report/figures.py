"""Figures from records (matplotlib, Agg): each saved as PNG and SVG, each titled with its conditions.

A figure never stands alone: the report puts the numbers it plots in a table beside it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from ..results import Record  # noqa: E402
from .tables import ok_records  # noqa: E402

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


def _models(records):
    return list(dict.fromkeys(r.spec.model for r in records))


def accuracy_vs_gmacs(records: list[Record], out: Path, conditions: str) -> Figure | None:
    """Canziani et al. (2016)'s chart: accuracy against compute, marker area ∝ parameters."""
    points = []
    for model in _models(records):
        acc = [r for r in records if r.spec.model == model and r.metric == "accuracy"]
        flops = ok_records(records, "flops", model=model)
        params = ok_records(records, "params", model=model)
        if not (acc and flops and params):
            continue
        a = acc[0]
        value = a.values.get("test_accuracy_mean") if a.status == "ok" else None
        points.append((model, flops[0].values["gmacs"], value, params[0].values["params_total"], a))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    biggest = max(p[3] for p in points)
    for model, gmacs, acc, nparams, rec in points:
        size = 60 + 1400 * nparams / biggest
        if acc is None:  # failed or diverged: drawn at the bottom with its status
            ax.scatter(
                [gmacs], [0.0], s=80, marker=STATUS_MARK.get(rec.status, "x"), color="crimson"
            )
            ax.annotate(
                f"{model} ({rec.status})", (gmacs, 0.0), textcoords="offset points", xytext=(6, 6)
            )
            continue
        std = rec.values.get("test_accuracy_std") or 0.0
        ax.scatter([gmacs], [acc], s=size, alpha=0.45)
        ax.errorbar([gmacs], [acc], yerr=[std], fmt="none", color="black", capsize=3)
        ax.annotate(
            f"{model}\n{nparams / 1e6:.1f}M params",
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
    sizes = sorted({p[4].spec.image_size for p in points})
    ax.set_title(
        "Accuracy vs computation; marker area ∝ parameters\n(accuracy trained at "
        f"{', '.join(map(str, sizes))} px: see the table for each model's recipe)",
        fontsize=9,
    )
    fig.text(0.01, -0.04, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("accuracy_vs_gmacs", "Accuracy vs GMACs", conditions))


def latency_vs_batch(records: list[Record], out: Path, conditions: str) -> Figure | None:
    lat = [r for r in records if r.metric == "latency"]
    if not lat:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, mode in enumerate(("inference", "train")):
        for model in _models(lat):
            mine = sorted(
                (r for r in lat if r.spec.model == model and r.spec.mode == mode),
                key=lambda r: r.spec.batch_size,
            )
            ok = [r for r in mine if r.status == "ok"]
            if ok:
                b = [r.spec.batch_size for r in ok]
                line = axes[0, col].plot(
                    b, [r.values["latency_ms_p50"] for r in ok], marker="o", label=model
                )[0]
                axes[1, col].plot(
                    b, [r.values["images_per_s"] for r in ok], marker="o", color=line.get_color()
                )
                for r in ok:
                    if r.values.get("unstable") or r.values.get("contended"):
                        axes[0, col].scatter(
                            [r.spec.batch_size],
                            [r.values["latency_ms_p50"]],
                            s=120,
                            facecolors="none",
                            edgecolors="orange",
                        )
            for r in mine:
                if r.status != "ok":
                    axes[1, col].scatter(
                        [r.spec.batch_size],
                        [axes[1, col].get_ylim()[0] or 1],
                        marker=STATUS_MARK.get(r.status, "x"),
                        color="crimson",
                    )
                    axes[1, col].annotate(
                        r.status,
                        (r.spec.batch_size, axes[1, col].get_ylim()[0] or 1),
                        fontsize=7,
                        color="crimson",
                    )
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


def memory_breakdown(records: list[Record], out: Path, conditions: str) -> Figure | None:
    mem = [r for r in records if r.metric == "memory"]
    if not mem:
        return None
    rows = []
    for model in _models(mem):
        for mode in ("inference", "train"):
            mine = [r for r in mem if r.spec.model == model and r.spec.mode == mode]
            if mine:
                rows.append(max(mine, key=lambda r: r.spec.batch_size))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.6))
    labels = [f"{r.spec.model}\n{r.spec.mode} b{r.spec.batch_size}" for r in rows]
    xs = range(len(rows))
    bottom = [0.0] * len(rows)
    for key, name in MEMORY_PARTS:
        vals = [r.values.get(key, 0) / 2**20 if r.status == "ok" else 0 for r in rows]
        ax.bar(xs, vals, bottom=bottom, label=f"analytic: {name}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    measured = [r.values["measured_bytes"] / 2**20 if r.status == "ok" else None for r in rows]
    ax.scatter([x for x, m in zip(xs, measured, strict=True) if m is not None], [m for m in measured if m is not None],
               marker="_", s=900, color="black", linewidths=2.5, label="measured peak", zorder=3)  # fmt: skip
    for x, r in zip(xs, rows, strict=True):
        if r.status != "ok":
            ax.annotate(r.status, (x, 0), ha="center", va="bottom", color="crimson")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("MiB")
    ax.legend(fontsize=7)
    ax.set_title("Memory: analytic breakdown (bars) and measured peak (line)", fontsize=10)
    fig.text(0.01, -0.06, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("memory_breakdown", "Memory breakdown", conditions))


def by_layer_type(records: list[Record], out: Path, conditions: str) -> Figure | None:
    models = [
        m
        for m in _models(records)
        if ok_records(records, "params", model=m) and ok_records(records, "flops", model=m)
    ]
    if not models:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    kinds = ["conv", "linear", "norm", "other"]
    for ax, what in ((a1, "params"), (a2, "macs")):
        bottom = [0.0] * len(models)
        for kind in kinds:
            vals = []
            for m in models:
                if what == "params":
                    vals.append(
                        ok_records(records, "params", model=m)[0]
                        .values["params_by_layer_type"]
                        .get(kind, 0)
                        / 1e6
                    )
                else:
                    ops = ok_records(records, "flops", model=m)[0].values["macs_by_operator"]
                    vals.append(_macs_of_kind(ops, kind) / 1e9)
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


def training_curves(records: list[Record], out: Path, conditions: str) -> Figure | None:
    acc = [r for r in records if r.metric == "accuracy" and r.values.get("runs")]
    if not acc:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in acc:
        for run in r.values["runs"]:
            ep = [e["epoch"] for e in run["epochs"]]
            label = f"{r.spec.model} seed {run['seed']}" + (
                " (diverged)" if run["diverged"] else ""
            )
            line = a1.plot(ep, [e["train_loss"] for e in run["epochs"]], marker="o", label=label)[0]
            a2.plot(
                ep, [e["test_accuracy"] for e in run["epochs"]], marker="o", color=line.get_color()
            )
            if run["diverged"]:
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


def roofline(records: list[Record], out: Path, conditions: str) -> Figure | None:
    roof = [r for r in records if r.metric == "roofline" and r.status == "ok"]
    if not roof:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.8))
    peak, bw = roof[0].values["peak_flops"], roof[0].values["peak_bytes_per_s"]
    intensities = [lay["intensity"] for r in roof for lay in r.values["layers"]]
    lo, hi = min(intensities + [0.1]) / 2, max(intensities + [peak / bw]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peak, bw * x) / 1e9 for x in xs], color="black", lw=1.5, label="measured roof")
    sheet_f, sheet_b = (
        roof[0].values.get("datasheet_flops"),
        roof[0].values.get("datasheet_bytes_per_s"),
    )
    if sheet_f and sheet_b:
        ax.plot(
            xs,
            [min(sheet_f, sheet_b * x) / 1e9 for x in xs],
            color="grey",
            ls="--",
            lw=1,
            label="data-sheet roof",
        )
    for r in roof:
        pts = [lay for lay in r.values["layers"] if lay["achieved_flops"]]
        ax.scatter([p["intensity"] for p in pts], [p["achieved_flops"] / 1e9 for p in pts], s=18, alpha=0.7,
                   label=f"{r.spec.model} b{r.spec.batch_size} (MFU {100 * r.values['mfu']:.1f}%)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Per-layer roofline (conv and linear layers)", fontsize=10)
    fig.text(0.01, -0.04, conditions, fontsize=7, color="dimgray")
    return _save(fig, out, Figure("roofline", "Per-layer roofline", conditions))


def lineage(records: list[Record], out: Path, conditions: str) -> Figure | None:
    from .experiments import LINEAGE_FIELDS
    from .experiments import lineage as lineage_table

    _, frame = lineage_table(records)
    if not len(frame):
        return None
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.9 * len(frame)))
    labels = [label for _, label in LINEAGE_FIELDS]
    height = 0.8 / len(labels)
    for i, label in enumerate(labels):
        vals = [0.0 if v is None or v != v else 100 * v for v in frame[f"{label} change"]]
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


def make_figures(records: list[Record], out: Path, conditions: str) -> list[Figure]:
    makers = (accuracy_vs_gmacs, latency_vs_batch, memory_breakdown, by_layer_type, training_curves,
              roofline, lineage)  # fmt: skip
    return [f for f in (m(records, out, conditions) for m in makers) if f is not None]
