"""The report's tables of records: the overview (one row per model) and the latency, memory and
accuracy tables (one row per record), every cell formatted, every status shown."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import stats
from ..results.types import Optimizer
from ..analysis.frames import Frames, finished_seeds, result_of, seed_std, trained_counts
from .fmt import MISSING, accuracy, fmt, utilization

__all__ = ["MEMORY_PARTS", "accuracy_table", "energy_table", "latency_table", "memory_caption",
           "memory_table", "overview_table"]  # fmt: skip


def _with_batch(value, batch, digits: int, scale: float = 1) -> str:
    """'1,234.5 (16)': a best or peak number and the batch it was measured at."""
    return MISSING if value is None else f"{fmt(value, digits, scale=scale)} ({batch})"


def overview_table(frames: Frames) -> pd.DataFrame:
    """One row per model, its headline numbers; what an accuracy was trained as (its size, its
    network's counts, the training time) is in the accuracy table, peaks per batch in the memory
    table."""
    rows = []
    for r in frames.overview.to_dict("records"):
        flags = " ".join(r["latency_b1_flags"])
        trained = r["test_accuracy_mean"] is not None or r["accuracy_status"] is not None
        rows.append({
            "model": r["model"],
            "input": r["image_size"],
            "parameters": fmt(r["params"]),
            "GMACs": fmt(r["gmacs"]),
            "latency p50 b1 (ms)": fmt(r["latency_ms_p50_b1"], 2) + (f" ({flags})" if flags else ""),
            "best inference images/s (batch)": _with_batch(r["infer_images_per_s_best"], r["infer_best_batch"], 1),
            "best training images/s (batch)": _with_batch(r["train_images_per_s_best"], r["train_best_batch"], 1),
            "peak memory training MiB (batch)": _with_batch(r["train_memory_bytes"], r["train_memory_batch"], 0, 2**20),
            "test accuracy": accuracy(r["test_accuracy_mean"], r["test_accuracy_std"], r["accuracy_status"]),
            "trained at": fmt(r["train_image_size"]) if trained else MISSING,
            "MFU % (roofline batch)": utilization(r["mfu"], bool(r["above_roof"]), suffix="")
            + (f" ({r['roofline_batch']})" if r["mfu"] is not None and not r["above_roof"] else ""),
            "not ok": r["not_ok"] or "",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table) and not any(table["not ok"]):
        table = table.drop(columns="not ok")  # every record ok: the section at the end says so
    return table


def _as_is(value):
    return MISSING if value is None else value


@dataclass(frozen=True)
class _Trained:
    """What a model's accuracy run trained: the optimizer labelled as a training step's
    ('adam 0.0005', 'sgd 0.01 momentum 0.9'), the side and the parameters of the network."""

    optimizer: Optimizer
    image_size: int
    params: int | None


def _accuracy_optimizers(frames: Frames) -> dict[str, _Trained]:
    """model → what its accuracy run trained."""
    found = {}
    for rec in frames.records:
        if rec.metric != "accuracy" or rec.spec.model in found:
            continue
        res = result_of(rec)
        if res is None or res.optimizer is None or res.lr is None:
            continue
        params, _, _ = trained_counts(frames.records, rec)
        found[rec.spec.model] = _Trained(Optimizer.of(res.optimizer, res.lr, res.momentum),
                                         rec.spec.image_size, params)  # fmt: skip
    return found


def _step_optimizer(r: dict, theirs: dict[str, _Trained]) -> str:
    """A training step's optimizer beside the accuracy run's: 'adam 0.0005 (= accuracy run)' only
    where the timed step trains the network that was trained — the same side (so the same head
    and parameters) and the same optimizer; otherwise what differs."""
    if r["mode"] != "train" or r["status"] != "ok":
        return ""
    acc = theirs.get(r["model"])
    if r["optimizer"] is None:
        return MISSING + (f" (accuracy run: {acc.optimizer.label})" if acc else " (not recorded)")
    if acc is None:
        return r["optimizer"]
    differs = []
    if Optimizer.parse(r["optimizer"]) != acc.optimizer:  # the objects, not their spelling
        differs.append(f"optimizer {acc.optimizer.label}")
    if r["image_size"] != acc.image_size:
        net = f", {acc.params / 1e6:.1f}M parameters" if acc.params else ""
        differs.append(f"trained at {acc.image_size} px{net}")
    if not differs:
        return f"{r['optimizer']} (= accuracy run)"
    return f"{r['optimizer']} (accuracy run: {'; '.join(differs)})"


def _ci_text(r: dict) -> str:
    """The 95% interval of a latency record's median: recorded, else computed from its kept
    samples, else — (schema 1 kept none)."""
    if r["status"] != "ok":
        return ""
    low, high = r["latency_ms_p50_ci_low"], r["latency_ms_p50_ci_high"]
    if (low is None or high is None) and r["times_ms"]:
        iv = stats.median_interval(r["times_ms"], r["round_sizes"])
        low, high = iv.low, iv.high
    return MISSING + " (no samples)" if low is None else f"{fmt(low, 2)}–{fmt(high, 2)}"


def latency_table(frames: Frames) -> pd.DataFrame:
    theirs = _accuracy_optimizers(frames)
    return pd.DataFrame([{
        "model": r["model"], "input": r["image_size"], "mode": r["mode"], "batch": r["batch_size"],
        "status": r["status"], "p50 ms": fmt(r["latency_ms_p50"], 2), "p50 95% CI ms": _ci_text(r),
        "rounds": fmt(r["rounds"]) if r["status"] == "ok" else "",
        "IQR ms": fmt(r["latency_ms_iqr"], 2), "p90 ms": fmt(r["latency_ms_p90"], 2),
        "n": fmt(r["n_runs"]), "images/s": fmt(r["images_per_s"], 1),
        "step optimizer": _step_optimizer(r, theirs),
        "flags": " ".join(k for k in ("unstable", "contended") if r[k]) or ("" if r["status"] == "ok" else r["reason"]),
    } for r in frames.metric("latency").to_dict("records")])  # fmt: skip


def memory_table(frames: Frames) -> pd.DataFrame:
    theirs = _accuracy_optimizers(frames)

    def mib(value) -> str:
        return fmt(value, 1, scale=2**20)

    def part(r, mode) -> str:
        return mib(r["activation_bytes"]) if r["mode"] == mode else ""

    table = pd.DataFrame([{
        "model": r["model"], "input": r["image_size"], "mode": r["mode"], "batch": r["batch_size"],
        "status": r["status"], "measured MiB": mib(r["measured_bytes"]), "parameters": mib(r["param_bytes"]),
        "gradients": mib(r["grad_bytes"]), "optimizer state": mib(r["optimizer_state_bytes"]),
        "input tensor": mib(r["input_bytes"]), "saved for backward (train)": part(r, "train"),
        "largest layer in+out (inference)": part(r, "inference"), "analytic sum": mib(r["analytic_bytes"]),
        "measured / analytic": fmt(r["measured_over_analytic"], 2),
        "not in the analytic sum": mib(None if r["measured_bytes"] is None else r["measured_bytes"] - r["analytic_bytes"]),
        "step optimizer": _step_optimizer(r, theirs), "source": r["source"] or r["reason"],
    } for r in frames.metric("memory").to_dict("records")])  # fmt: skip
    if len(table) and table["source"].nunique() == 1 and all(table["status"] == "ok"):
        table = table.drop(columns="source")  # one source for all: the caption names it
    return table


def memory_caption(frames: Frames) -> str:
    sources = sorted({s for s in frames.metric("memory").get("source", []) if s})
    return "Memory (MiB): measured peak beside the analytic breakdown" + (
        f" (measured: {', '.join(sources)})" if sources else ""
    )


MEMORY_PARTS = (
    "The measured peak is above the process's baseline (Python and torch are loaded before it "
    "and not counted); the analytic sum counts parameters, gradients, optimizer state, the input "
    "and, in training, the tensors autograd saves for backward — in inference only the largest "
    "layer's input and output, a lower bound. What the sum leaves out ('not in the analytic "
    "sum') is what this run cannot take apart: tensors alive during the step but not saved (a "
    "layer's output before the next layer reads it, gradients of activations during backward), "
    "library workspaces (oneDNN's scratchpads; cuDNN and cuBLAS workspaces on CUDA) and the "
    "allocator's own slack (glibc's arenas and free lists on CPU; the caching allocator's rounding "
    "on CUDA). An inference ratio well above 1 is mostly the first: its sum is a lower bound."
)


def accuracy_table(frames: Frames) -> pd.DataFrame:
    rows = []
    records = [r for r in frames.records if r.metric == "accuracy"]
    for rec, r in zip(records, frames.metric("accuracy").to_dict("records"), strict=True):
        res = result_of(rec)
        params, gmacs, _ = trained_counts(frames.records, rec)
        step = res.trained_step_flops if res else None
        rows.append({
            "model": r["model"], "status": r["status"], "recipe": _as_is(r["recipe"]),
            "as": _trained_as(rec.spec),
            "trained at": r["image_size"], "parameters as trained": fmt(params),
            "GMACs as trained": fmt(gmacs), "train step GFLOPs / image": fmt(step, 3, scale=1e9),
            "optimizer, lr": f"{_as_is(r['optimizer'])} {_as_is(r['lr'])}",
            "batch": r["batch_size"], "epochs": _as_is(r["epochs"]),
            "train / test images": f"{_as_is(r['train_images'])} / {_as_is(r['test_images'])}",
            "seed ids": ",".join(map(str, r["seeds"] or ())) or MISSING,
            "test accuracy mean": fmt(r["test_accuracy_mean"]), "95% interval": _accuracy_interval(res),
            "std": fmt(seed_std(res)),
            "min–max": f"{fmt(r['test_accuracy_min'])}–{fmt(r['test_accuracy_max'])}" if res and finished_seeds(res) > 1 else MISSING,
            "train time s": fmt(r["train_time_s_mean"], 1), "images/s": fmt(r["images_per_s_mean"], 1),
            "reason": r["reason"] or "",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table) and not any(table["reason"]):
        table = table.drop(columns="reason")
    if len(table) and (table["as"] == "fp32").all():  # one way of training: nothing to tell apart
        table = table.drop(columns="as")
    return table


def _trained_as(spec) -> str:
    """How a training ran beyond its recipe: dtype, memory format, compiled (the tricks
    experiment trains one model several ways: its rows must be told apart)."""
    return " + ".join([spec.dtype] + [w for w, on in (("channels_last", spec.channels_last),
                                                      ("compiled", spec.compiled)) if on])  # fmt: skip


def _accuracy_interval(res) -> str:
    """Over the seeds (t), or with one seed the test set's own binomial interval, which holds no
    training noise: said so."""
    if res is None or res.test_accuracy_mean is None:
        return MISSING
    finals = [run.final_test_accuracy for run in res.runs if run.final_test_accuracy is not None]
    if len(finals) >= 2:
        iv = stats.mean_interval(finals)
        return f"{fmt(iv.low)}–{fmt(iv.high)} ({len(finals)} seeds)"
    if not finals or not res.test_images:  # a diverged seed, or a record without its test size
        return MISSING
    iv = stats.binomial_interval(finals[0], res.test_images)
    return f"{fmt(iv.low)}–{fmt(iv.high)} (test set only: no training noise)"


def energy_table(frames: Frames) -> pd.DataFrame:
    """Energy per image by mode, from the device's own counter; an ``unsupported`` record with the
    reason where the machine has none (never an estimate)."""
    return pd.DataFrame([{
        "model": r["model"], "input": r["image_size"], "mode": r["mode"], "batch": r["batch_size"],
        "status": r["status"], "J / image": fmt(r["joules_per_image"], 4),
        "mean power W": fmt(r["mean_power_w"], 1), "images/s": fmt(r["images_per_s"], 1),
        "block s": fmt(r["block_s"], 2), "counter": _as_is(r["source"]) if r["status"] == "ok" else "",
        "covers": _as_is(r["scope"]) if r["status"] == "ok" else "",
        "flags": ("short block: coarse" if r["short"] else "") if r["status"] == "ok" else r["reason"],
    } for r in frames.metric("energy").to_dict("records")])  # fmt: skip
