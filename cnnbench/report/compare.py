"""``cnnbench compare RUN_A RUN_B``: every shared metric side by side, with its change and whether
that change lies outside the runs' own noise.

Records are paired on what they measured — metric, model, input size, batch, dtype, memory
format, compile flag and mode — but not on device or threads, so a CPU run can be compared with
a GPU run, or two machines with each other. Noise:

- latency and throughput: where both records kept their samples, the 95% bootstrap interval of
  the ratio of medians; a change is called only when it excludes 1 and is beyond the minimum
  effect (``stats.verdict``), else "within noise". Records without samples (schema 1) fall back
  to the IQR rule — a change larger than the larger IQR/median — labelled as such;
- accuracy: a difference in percentage points against the larger sample std over seeds. With
  fewer than ``FEW_SEEDS`` seeds on either side the std says little (one seed has none, and GPU
  training is not deterministic run to run), so a change is called only beyond
  ``ACCURACY_FLOOR`` as well;
- a CPU RSS peak is one measurement, given a 5% allowance; counts (parameters, MACs), analytic
  bytes and CUDA allocator peaks are deterministic, so any change is flagged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results import Record, RunStore
from .fmt import MISSING, change, fmt, percent, points
from .frames import finished_seeds, seed_std
from .noise import latency_change

__all__ = ["ACCURACY_FLOOR", "FEW_SEEDS", "HEADLINES", "compare_runs", "regressions",
           "write_compare"]

FEW_SEEDS = 3  # fewer seeds than this on either side: the floor below applies
# 2 pp: the seed-to-seed spread of a short Fashion-MNIST training is about 1 pp (the full
# profile's seeds), and a single GPU run is not reproducible to the last image either
ACCURACY_FLOOR = 0.02

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
    """Relative noise of a comparison without a bootstrap (0 for deterministic quantities)."""
    ra, rb = a.result, b.result
    if a.metric == "accuracy":
        return 0.05  # wall time of training: no replicate spread recorded; 5% as timing noise
    if a.metric == "memory" and field == "measured_bytes" and ra.source != "cuda_allocator":
        return 0.05  # one CPU RSS peak, no replicates: 5% allowance (runs here differ by 3-5%)
    return 0.0


def _row(a: Record, b: Record, field: str, va, vb) -> dict:
    """One compared value: its relative change, how the change is shown, the noise it is judged
    against (shown), whether it is called a change, and the verdict in words."""
    rel = (vb - va) / va if va else float("inf") if vb else 0.0
    row = {"value": field, "A": va, "B": vb, "change": rel, "change_shown": change(rel)}
    if a.metric == "latency":
        c = latency_change(a.result, b.result)
        c = c.throughput() if field == "images_per_s" else c
        row.update(noise=c.iqr_noise, noise_shown=c.interval_text(), significant=c.significant,
                   verdict=c.verdict, method=c.method)  # fmt: skip
    elif a.metric == "accuracy" and field == "test_accuracy_mean":
        stds = [seed_std(r.result) for r in (a, b)]
        seeds = min(finished_seeds(a.result), finished_seeds(b.result))
        spread = max((s for s in stds if s is not None), default=0.0)
        few = seeds < FEW_SEEDS
        noise = max(spread, ACCURACY_FLOOR) if few else spread
        shown = f"std {points(spread)[1:]}" if seeds > 1 else "1 seed: no spread"
        if few:
            shown += f"; floor {points(ACCURACY_FLOOR)[1:]} (< {FEW_SEEDS} seeds)"
        row.update(change_shown=points(vb - va), noise=noise, method="seed std",
                   noise_shown=shown, significant=abs(vb - va) > noise)  # fmt: skip
        row["verdict"] = ("higher" if vb > va else "lower") if row["significant"] else "within noise"
    else:
        noise = _noise(a, b, field)
        significant = abs(rel) > noise
        row.update(noise=noise, noise_shown=percent(noise), significant=significant,
                   method="exact" if noise == 0 else "allowance",
                   verdict=("changed" if significant else "within noise") if noise else ("changed" if significant else ""))  # fmt: skip
    return row


# what a change of hardware changes: times, rates and measured memory (counts, analytic bytes
# and test accuracy do not depend on the machine)
SPEED_VALUES = ("latency_ms_p50", "images_per_s", "measured_bytes", "train_time_s_mean")


def hardware_differences(run_a: str | Path, run_b: str | Path) -> tuple[str | None, list]:
    """(the hardware sentence or None, every fingerprint field that differs) of two runs."""
    from ..env import differences, hardware_sentence

    diffs = differences(RunStore(run_a).read_env(), RunStore(run_b).read_env())
    return hardware_sentence(diffs), diffs


def compare_runs(
    run_a: str | Path, run_b: str | Path, *, across_hardware: bool = False
) -> pd.DataFrame:
    """Every shared value side by side. Where the runs measured different hardware, speed
    values are shown but not called changes unless ``across_hardware``; counts and accuracies
    are compared either way."""
    hardware, _ = hardware_differences(run_a, run_b)
    hold = hardware is not None and not across_hardware
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
                         "change_shown": MISSING, "noise": None, "noise_shown": MISSING,
                         "significant": a.status != b.status,
                         "verdict": "changed" if a.status != b.status else "", "method": "status"})  # fmt: skip
            continue
        for field in HEADLINES.get(a.metric, ()):
            va, vb = getattr(a.result, field), getattr(b.result, field)
            if va is None or vb is None:
                continue
            row = {**base, **_row(a, b, field, va, vb)}
            if hold and field in SPEED_VALUES:
                row.update(significant=False, verdict="different hardware")
            rows.append(row)
    # object dtype: a count stays an int (a float64 column would print 46,764,746 as 4.676e+07)
    return pd.DataFrame(rows, dtype=object)


def shown(value) -> str:
    """A compared value (or status): counts in full, measurements to 4 significant digits."""
    return fmt(value, 4, significant=True)


def flag(row: dict) -> str:
    """The last column: '**!** slower' for a called change, 'within noise' where a noise rule
    applied and found none, '' for an unchanged count."""
    if row["significant"]:
        return "**!**" + (f" {row['verdict']}" if row["verdict"] not in ("", "changed") else "")
    shown_verdicts = ("within noise", "no spread to judge by", "different hardware")
    return row["verdict"] if row["verdict"] in shown_verdicts else ""


def regressions(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The called changes that are worse: slower or less throughput beyond ``threshold`` (a
    fraction), lower accuracy, longer training beyond it, any changed count, a record that is
    ok in A and not in B. Changes
    not called (within noise, or across hardware unless asked) are never regressions."""
    worse = []
    for r in frame.to_dict("records"):
        if not r["significant"]:
            continue
        change_, value = r.get("change"), r["value"]
        if value in ("latency_ms_p50", "train_time_s_mean", "measured_bytes"):
            bad = change_ is not None and change_ > threshold
        elif value == "images_per_s":
            bad = change_ is not None and change_ < -threshold
        elif value == "test_accuracy_mean":
            bad = r["B"] < r["A"]
        elif value == "status":  # B failed where A did not; a failure that B fixed is no regression
            bad = r["A"] == "ok" and r["B"] != "ok"
        else:  # counts, analytic bytes: any called change
            bad = True
        if bad:
            worse.append(r)
    return pd.DataFrame(worse, columns=frame.columns, dtype=object)


def write_compare(frame: pd.DataFrame, out: Path, run_a: Path, run_b: Path) -> dict[str, Path]:
    from ..env import label

    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "compare.md", "csv": out / "compare.csv"}
    frame.to_csv(paths["csv"], index=False)
    hardware, diffs = hardware_differences(run_a, run_b)
    lines = [f"# cnnbench compare: A = `{run_a}`, B = `{run_b}`", ""]
    if hardware:
        lines += [f"> **Warning**: {hardware[0].upper()}{hardware[1:]}.", ""]
    if diffs:
        lines += ["Fingerprint fields that differ (A → B): "
                  + "; ".join(f"{label(k)} {a} → {b}" for k, a, b in diffs) + ".", ""]  # fmt: skip
    lines += [
        "change = (B − A) / A; test accuracy in percentage points (pp). Flagged (**!**) only "
        "outside the runs' own noise: for latency and images/s the 95% bootstrap interval of the "
        "ratio of medians must exclude 1 and the change exceed the minimum effect (else 'within "
        "noise'; records without kept samples: the IQR rule, labelled); for accuracy the larger "
        f"sample std over seeds, and with fewer than {FEW_SEEDS} seeds at least {ACCURACY_FLOOR * 100:g} "
        "pp (one seed has no spread; GPU training is not deterministic); 5% for a CPU RSS peak; zero for "
        "counts and the rest of memory.",
        "",
        "| metric | model | mode | batch | input | value | A | B | change | noise | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in frame.to_dict("records"):
        lines.append(
            f"| {r['metric']} | {r['model']} | {r['mode']} | {r['batch']} | {r['input']} | {r['value']} "
            f"| {shown(r['A'])} | {shown(r['B'])} | {r['change_shown']} | {r['noise_shown']} | {flag(r)} |"
        )
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths
