"""``cnnbench compare RUN_A RUN_B``: every shared value side by side, with its change and whether
the two runs resolve it — by the rule every comparison in cnnbench uses (``stats.call``).

Records are paired on what they measured — metric, model, input size, batch, dtype, memory
format, compile flag and mode — but not on device or threads, so a CPU run can be compared with
a GPU run, or two machines with each other. Nothing is paired across runs:

- latency and images/s: Welch's t on the two records' log round medians; a change is called only
  when the interval excludes 1 and the change is at least what the two runs resolve at that mode
  and batch (their pooled round-to-round spread, :func:`resolution`). The interval covers the
  processes of these two runs, not the drift between runs, which only a history of runs shows
  (``cnnbench history show``, whose gate also allows for it). Records without samples (schema
  1) fall back to the IQR rule, labelled;
- accuracy: Welch's t over the seeds, called only with ``noise.MIN_SEEDS`` a side; training time
  the same over the seeds' times (a ratio);
- a CPU RSS peak is one measurement per run: judged against the identical pair's spread
  (``noise.memory_noise``) where either run measured googlenet and googlenet_ls, else not
  resolved; counts (parameters, MACs), analytic bytes and CUDA allocator peaks are
  deterministic, so any change is one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import stats
from ..analysis.compare import regressions
from ..results import Record, RunStore
from ..results.types import declared_values, value_info
from . import verdicts
from .blocks import Document, Note, Paragraph, Table, to_markdown
from .fmt import MISSING, change, fmt, points
from ..analysis.noise import MemoryNoise, RunNoise, accuracy_change, latency_change, memory_noise, run_noise

__all__ = ["HEADLINES", "compare_runs", "regressions", "resolution", "write_compare"]  # regressions: analysis.compare

# metric → the values compared, in display order: each metric's headline values, as declared
# on its result type (minimum sizes, rooflines and scaling are compared by their own sections)
HEADLINES = {m: tuple(declared_values(m)) for m in ("params", "flops", "latency", "memory", "accuracy")}


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


def resolution(a_records: list[Record], b_records: list[Record]) -> RunNoise:
    """What a comparison of the two runs resolves per mode and batch: their latencies' round
    spread pooled, unpaired."""
    return run_noise([*a_records, *b_records], paired=False)


def _train_time(a, b) -> tuple[stats.Interval, str]:
    """B's training time against A's over the seeds that ran (a ratio, Welch on logs)."""
    ta = [r.train_time_s for r in a.runs if r.train_time_s]
    tb = [r.train_time_s for r in b.runs if r.train_time_s]
    if len(ta) < 2 or len(tb) < 2:
        ratio = (sum(tb) / len(tb)) / (sum(ta) / len(ta)) if ta and tb else float("nan")
        return stats.Interval(ratio, None, None, "one seed a side"), "one seed a side: no spread"
    iv, _ = stats.ratio_interval(ta, tb, paired=False)  # the ratio of geometric means
    return iv, f"95% CI {iv.low:.2f}–{iv.high:.2f}, {len(ta)} and {len(tb)} seeds"


def _row(a: Record, b: Record, field: str, va, vb, noise: RunNoise, memory: MemoryNoise | None) -> dict:
    """One compared value: its relative change, how the change is shown, the noise it is judged
    against (shown), whether it is called a change, and the verdict in words."""
    rel = (vb - va) / va if va else float("inf") if vb else 0.0
    row = {"value": field, "A": va, "B": vb, "change": rel, "change_shown": change(rel)}
    if a.metric == "latency":
        floor = noise.floor(a.spec.mode, a.spec.batch_size)
        c = latency_change(a.result, b.result, paired=False, floor=floor)
        c = c.throughput() if field == "images_per_s" else c
        row.update(change=c.ratio - 1, change_shown=change(c.ratio - 1))  # the centre of c's interval
        shown = verdicts.interval_text(c) + (f"; resolves {100 * floor:.1f}%" if floor else "")
        row.update(noise=c.iqr_noise, noise_shown=shown, significant=c.significant,
                   verdict=c.verdict, method=c.method)  # fmt: skip
    elif a.metric == "accuracy" and field == "test_accuracy_mean":
        judged = accuracy_change(a.result, b.result)
        row.update(change_shown=points(vb - va), noise=None, method="seeds (Welch)",
                   noise_shown=verdicts.short(judged) if judged else MISSING,
                   significant=bool(judged and judged.significant),
                   verdict=judged.verdict if judged else stats.NOT_RESOLVED)  # fmt: skip
    elif a.metric == "accuracy":  # training time: over the seeds' own times
        iv, shown = _train_time(a.result, b.result)
        verdict = stats.call(iv)
        if iv.known:  # the centre of its interval: the ratio of the seeds' geometric means
            row.update(change=iv.estimate - 1, change_shown=change(iv.estimate - 1))
        row.update(noise=None, noise_shown=shown, method="seeds (Welch)",
                   significant=verdict != stats.NOT_RESOLVED, verdict=verdict)  # fmt: skip
    elif a.metric == "memory" and field == "measured_bytes" and a.result.source != "cuda_allocator":
        judged = memory.judge(rel) if memory is not None else None
        row.update(noise=judged.threshold if judged else None, method="identical pair",
                   noise_shown=verdicts.short(judged) if judged else "no noise estimate (no googlenet_ls beside googlenet)",
                   significant=bool(judged and judged.significant),
                   verdict=judged.verdict if judged else stats.NOT_RESOLVED)  # fmt: skip
    else:  # deterministic: counts, analytic bytes, CUDA allocator peaks
        significant = rel != 0
        row.update(noise=0.0, noise_shown="exact", significant=significant, method="exact",
                   verdict="changed" if significant else "")  # fmt: skip
    return row


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
    a_list, b_list = RunStore(run_a).records(), RunStore(run_b).records()
    noise = resolution(a_list, b_list)
    memory = memory_noise(a_list, b_list)  # both runs' identical pairs, pooled
    a_records = {_pair_key(r): r for r in a_list}
    b_records = {_pair_key(r): r for r in b_list}
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
            row = {**base, **_row(a, b, field, va, vb, noise, memory)}
            if hold and value_info(field).machine:  # a time, a rate, a peak: the machine's
                row.update(significant=False, verdict="different hardware")
            rows.append(row)
    # object dtype: a count stays an int (a float64 column would print 46,764,746 as 4.676e+07)
    return pd.DataFrame(rows, dtype=object)


def shown(value) -> str:
    """A compared value (or status): counts in full, measurements to 4 significant digits."""
    return fmt(value, 4, significant=True)


def flag(row: dict) -> str:
    """The last column: '**!** slower' for a called change, 'not resolved' where a noise rule
    applied and found none, '' for an unchanged count."""
    if row["significant"]:
        return "**!**" + (f" {row['verdict']}" if row["verdict"] not in ("", "changed") else "")
    shown_verdicts = (stats.NOT_RESOLVED, "different hardware")
    return row["verdict"] if row["verdict"] in shown_verdicts else ""


_COMPARE_COLUMNS = ("metric", "model", "mode", "batch", "input", "value", "A", "B", "change", "noise", "")

COMPARE_RULE = (
    "change = (B − A) / A; test accuracy in percentage points (pp). Flagged (**!**) only "
    "where the two runs resolve it: for latency and images/s Welch's 95% interval of the ratio "
    "over the runs' round medians must exclude 1 and the change reach what the runs resolve "
    "(shown per row); the interval covers these runs' processes, not the drift between runs "
    "(`cnnbench history show` judges that). Accuracy over seeds, with "
    "at least 3 a side; a CPU RSS peak against the identical pair's spread; counts and the "
    "rest of memory exactly. Anything else is 'not resolved'."
)


def write_compare(frame: pd.DataFrame, out: Path, run_a: Path, run_b: Path) -> dict[str, Path]:
    from ..env import label

    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "compare.md", "csv": out / "compare.csv"}
    frame.to_csv(paths["csv"], index=False)
    hardware, diffs = hardware_differences(run_a, run_b)
    blocks: list = []
    if hardware:
        blocks.append(Note(f"{hardware[0].upper()}{hardware[1:]}.", "warning"))
    if diffs:
        blocks.append(Paragraph("Fingerprint fields that differ (A → B): "
                                + "; ".join(f"{label(k)} {a} → {b}" for k, a, b in diffs) + "."))  # fmt: skip
    blocks += [Paragraph(COMPARE_RULE), Table("Every shared value, A against B", pd.DataFrame([{
        "metric": r["metric"], "model": r["model"], "mode": r["mode"], "batch": r["batch"],
        "input": r["input"], "value": r["value"], "A": shown(r["A"]), "B": shown(r["B"]),
        "change": r["change_shown"], "noise": r["noise_shown"], "": flag(r),
    } for r in frame.to_dict("records")], columns=_COMPARE_COLUMNS))]  # fmt: skip
    doc = Document(f"cnnbench compare: A = `{run_a}`, B = `{run_b}`", tuple(blocks))
    paths["md"].write_text(to_markdown(doc, out))
    return paths
