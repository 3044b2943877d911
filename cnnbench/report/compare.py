"""``cnnbench compare RUN_A RUN_B``: every shared metric side by side, with its relative change
and whether that change is larger than the runs' own noise.

Records are paired on what they measured — metric, model, input size, batch, dtype, memory
format, compile flag and mode — but not on device or threads, so a CPU run can be compared with
a GPU run, or two machines with each other. Noise: for latency and throughput the larger of the
two records' IQR relative to its median; for accuracy the larger seed standard deviation; a CPU
RSS peak is a single measurement, given a 5% allowance; counts (parameters, MACs), analytic
bytes and CUDA allocator peaks are deterministic, so any change is flagged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results import Record, RunStore
from .fmt import change, fmt, percent

__all__ = ["HEADLINES", "compare_runs", "write_compare"]

# metric → the values compared, in display order
HEADLINES = {
    "params": ("params_total",),
    "flops": ("gmacs",),
    "latency": ("latency_ms_p50", "images_per_s"),
    "memory": ("measured_bytes", "analytic_bytes"),
    "accuracy": ("test_accuracy_mean", "train_time_s_mean"),
}


def _pair_key(r: Record) -> tuple:
    s = r.spec
    return (
        r.metric,
        s.model,
        s.image_size,
        s.batch_size,
        s.dtype,
        s.channels_last,
        s.compiled,
        s.mode,
    )


def _noise(a: Record, b: Record, field: str) -> float:
    """Relative noise of a comparison (0 for deterministic quantities)."""
    ra, rb = a.result, b.result
    if a.metric == "latency":
        return max(ra.iqr_over_median or 0.0, rb.iqr_over_median or 0.0)
    if a.metric == "accuracy" and field == "test_accuracy_mean":
        stds = [r.test_accuracy_std or 0.0 for r in (ra, rb)]
        means = [r.test_accuracy_mean or 0.0 for r in (ra, rb)]
        return max(stds) / max(max(means), 1e-9)
    if a.metric == "accuracy":
        return 0.05  # wall time of training: no replicate spread recorded; 5% as timing noise
    if a.metric == "memory" and field == "measured_bytes" and ra.source != "cuda_allocator":
        return 0.05  # one CPU RSS peak, no replicates: 5% allowance (runs here differ by 3-5%)
    return 0.0


def compare_runs(run_a: str | Path, run_b: str | Path) -> pd.DataFrame:
    a_records = {_pair_key(r): r for r in RunStore(run_a).records()}
    b_records = {_pair_key(r): r for r in RunStore(run_b).records()}
    rows = []
    for key in (k for k in a_records if k in b_records):
        a, b = a_records[key], b_records[key]
        base = {
            "metric": a.metric, "model": a.spec.model, "mode": a.spec.mode, "batch": a.spec.batch_size,
            "input": a.spec.image_size, "dtype": a.spec.dtype,
        }  # fmt: skip
        if a.status != "ok" or b.status != "ok":
            rows.append({**base, "value": "status", "A": a.status, "B": b.status, "change": None,
                         "noise": None, "significant": a.status != b.status})  # fmt: skip
            continue
        for field in HEADLINES.get(a.metric, ()):
            va, vb = getattr(a.result, field), getattr(b.result, field)
            if va is None or vb is None:
                continue
            change = (vb - va) / va if va else float("inf") if vb else 0.0
            noise = _noise(a, b, field)
            rows.append({**base, "value": field, "A": va, "B": vb, "change": change, "noise": noise,
                         "significant": abs(change) > noise})  # fmt: skip
    # object dtype: a count stays an int (a float64 column would print 46,764,746 as 4.676e+07)
    return pd.DataFrame(rows, dtype=object)


def shown(value) -> str:
    """A compared value (or status): counts in full, measurements to 4 significant digits."""
    return fmt(value, 4, significant=True)


def write_compare(frame: pd.DataFrame, out: Path, run_a: Path, run_b: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "compare.md", "csv": out / "compare.csv"}
    frame.to_csv(paths["csv"], index=False)
    lines = [
        f"# cnnbench compare: A = `{run_a}`, B = `{run_b}`",
        "",
        "change = (B − A) / A. Flagged (**!**) when larger than the runs' own noise: the larger "
        "IQR/median for latency, the larger seed std for accuracy, 5% for a CPU RSS peak, zero for "
        "counts and the rest of memory.",
        "",
        "| metric | model | mode | batch | input | value | A | B | change | noise | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in frame.to_dict("records"):
        lines.append(
            f"| {r['metric']} | {r['model']} | {r['mode']} | {r['batch']} | {r['input']} | {r['value']} "
            f"| {shown(r['A'])} | {shown(r['B'])} | {change(r['change'])} | {percent(r['noise'])} | {'**!**' if r['significant'] else ''} |"
        )
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths
