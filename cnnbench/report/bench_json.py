"""A pytest-benchmark ``--benchmark-json`` file as a table, to show beside the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .fmt import fmt

__all__ = ["benchmark_table"]


def benchmark_table(path: str | Path) -> tuple[str, pd.DataFrame]:
    """A pytest-benchmark ``--benchmark-json`` file as a table: one row per benchmark."""

    data = json.loads(Path(path).read_text())
    rows = []
    for b in data.get("benchmarks", []):
        st, info = b["stats"], b.get("extra_info", {})
        rows.append({
            "benchmark": b["name"], "model": info.get("model", ""), "batch": info.get("batch", ""),
            "device": info.get("device", ""), "dtype": info.get("dtype", ""),
            "median ms": fmt(1e3 * st["median"], 3), "IQR ms": fmt(1e3 * st["iqr"], 3),
            "min ms": fmt(1e3 * st["min"], 3), "rounds": fmt(st["rounds"]),
            "images/s": fmt(info["batch"] / st["median"], 1) if info.get("batch") and "mode" in info else "",
        })  # fmt: skip
    machine = data.get("machine_info", {})
    caption = (
        f"pytest-benchmark {Path(path).name}: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', ''))}, "
        f"Python {machine.get('python_version', '?')}, {data.get('datetime', '')}"
    )
    return caption, pd.DataFrame(rows)
