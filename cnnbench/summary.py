"""The rich table that ``cnnbench run`` prints at the end, built from the saved records."""

from __future__ import annotations

import math

from rich import box
from rich.markup import escape
from rich.table import Table

from .config import RunConfig
from .report.tables import overview
from .results import Record

__all__ = ["summary_table"]


def _num(value, fmt: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value / scale, fmt)


def _best(row: dict, prefix: str) -> str:
    value = row[f"{prefix}_images_per_s_best"]
    return "—" if value is None else escape(f"{value:,.0f} [{row[f'{prefix}_best_batch']}]")


def _accuracy(row: dict) -> str:
    if row["accuracy_status"] == "diverged":
        return "diverged"
    mean, std = row["test_accuracy_mean"], row["test_accuracy_std"]
    if mean is None:
        return "—"
    return f"{mean:.3f}" + (f"±{std:.3f}" if std else "")


def summary_table(records: list[Record], config: RunConfig) -> Table:
    frame = overview(records)
    dev = config.device + (f", {config.threads} threads" if config.threads else "")
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"cnnbench · {dev} · {config.dtype} · profile {config.profile}",
        caption="GMACs: one fused multiply-add counts once. ms b1: median forward latency at "
        "batch 1. infer/s, train/s: images per second, batch / median latency, at the best "
        "batch \\[in brackets]. MB i/t: inference / training memory at the largest memory "
        "batch, CUDA peak allocated or CPU peak RSS above the worker's baseline. ~ unstable "
        "(IQR > 10% of median), ! contended CPU, — not measured. acc: test accuracy after the "
        "profile's short training (see env.json).",
    )
    columns = ["model", "size", "params", "GMACs", "ms b1", "infer/s", "train/s", "MB i/t"]
    accuracy = "accuracy" in config.metrics
    if accuracy:
        columns.append("acc")
    for col in columns:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    failures = any(frame["not_ok"]) if len(frame) else False
    if failures:
        table.add_column("not ok", justify="left", style="red")
    for row in frame.to_dict("records"):
        flags = row["latency_b1_flags"]
        mark = ("~" if "unstable" in flags else "") + ("!" if "contended" in flags else "")

        table.add_row(
            row["model"],
            str(row["image_size"]),
            _num(row["params"], ".1f", 1e6) + "M",
            _num(row["gmacs"], ".2f"),
            _num(row["latency_ms_p50_b1"], ".2f") + mark,
            _best(row, "infer"),
            _best(row, "train"),
            _num(row["infer_memory_bytes"], ".0f", 2**20)
            + "/"
            + _num(row["train_memory_bytes"], ".0f", 2**20),
            *([_accuracy(row)] if accuracy else []),
            *([row["not_ok"]] if failures else []),
        )
    return table
