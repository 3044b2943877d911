"""The GoogLeNet exercise sections: lineage of variants (ex. 1), minimum input size (ex. 2),
the 28x28 design (ex. 3) and rooflines (ex. 5, measured). Tables and sentences from records."""

from __future__ import annotations

import pandas as pd

from ..models import get_spec
from ..results import Record
from .exercises import Section
from .tables import ok_records

__all__ = ["lineage", "minimum_sizes", "native_28", "rooflines", "headline"]


def headline(records: list[Record], model: str) -> dict:
    """The numbers a lineage row compares, each None when its record is missing or not ok."""
    out = {}
    p = ok_records(records, "params", model=model)
    out["params"] = p[0].values["params_total"] if p else None
    f = ok_records(records, "flops", model=model)
    out["gmacs"] = f[0].values["gmacs"] if f else None
    lat = ok_records(records, "latency", model=model, mode="inference", batch_size=1)
    out["latency_ms_p50_b1"] = lat[0].values["latency_ms_p50"] if lat else None
    tr = ok_records(records, "latency", model=model, mode="train")
    best = max(tr, key=lambda r: r.values["images_per_s"], default=None)
    out["train_images_per_s"] = best.values["images_per_s"] if best else None
    mem = ok_records(records, "memory", model=model, mode="train")
    top = max(mem, key=lambda r: r.spec.batch_size, default=None)
    out["train_memory_bytes"] = top.values["measured_bytes"] if top else None
    acc = [r for r in records if r.metric == "accuracy" and r.spec.model == model]
    out["test_accuracy"] = (
        acc[0].values.get("test_accuracy_mean") if acc and acc[0].status == "ok" else None
    )
    out["accuracy_status"] = acc[0].status if acc else None
    out["train_time_s"] = (
        acc[0].values.get("train_time_s_mean") if acc and acc[0].status == "ok" else None
    )
    out["train_size"] = acc[0].spec.image_size if acc else None
    out["size"] = p[0].spec.image_size if p else None
    return out


def shown(key: str, value) -> str:
    """A headline value for a table cell, in the unit its label says."""
    if value is None or value != value:
        return "—"
    if isinstance(value, str):
        return value
    if key == "params":
        return f"{value:,.0f}"
    if key == "train_memory_bytes":
        return f"{value / 2**20:,.0f}"
    digits = {"gmacs": 3, "test_accuracy": 3, "latency_ms_p50_b1": 2}.get(key, 1)
    return f"{value:,.{digits}f}"


LINEAGE_FIELDS = [
    ("params", "parameters"),
    ("gmacs", "GMACs"),
    ("latency_ms_p50_b1", "latency b1 ms"),
    ("train_images_per_s", "train images/s"),
    ("train_memory_bytes", "train memory MiB"),
    ("test_accuracy", "test accuracy"),
]


def lineage(records: list[Record]) -> tuple[Section, pd.DataFrame]:
    """Each variant against its parent: absolute values and relative change per metric."""
    models = list(dict.fromkeys(r.spec.model for r in records))
    section = Section(
        "Exercise 1 — GoogLeNet variants as a lineage",
        "Each variant against its parent, measured in the same runs (same profile, same seeds). "
        "Change = (variant − parent) / parent; — where either record is missing or not ok.",
    )
    rows = []
    for model in models:
        try:
            spec = get_spec(model)
        except ValueError:
            continue
        parent = spec.parent
        if parent is None or parent not in models:
            continue
        mine, theirs = headline(records, model), headline(records, parent)
        row = {"variant": model, "parent": parent, "what changed": spec.description}
        for key, label in LINEAGE_FIELDS:
            a, b = theirs[key], mine[key]
            row[label] = b
            row[f"{label} change"] = (b - a) / a if a and b is not None else None
        if mine["accuracy_status"] not in (None, "ok"):
            row["test accuracy"] = mine["accuracy_status"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not rows:
        section.sentences.append("No variant and its parent were both measured in these runs.")
        return section, frame
    table = frame.copy()
    for key, label in LINEAGE_FIELDS:
        table[label] = [shown(key, v) for v in frame[label]]
        table[f"{label} change"] = [
            "—" if v is None or v != v else f"{100 * v:+.1f}%" for v in frame[f"{label} change"]
        ]
    section.tables.append(("Variants against their parents", table))
    for row in rows:
        parts = []
        for _, label in LINEAGE_FIELDS:
            change = row[f"{label} change"]
            if change is not None and change == change and abs(change) >= 0.005:
                parts.append(f"{label} {100 * change:+.1f}%")
        section.sentences.append(
            f"{row['variant']} ({row['what changed']}) against {row['parent']}: "
            + (", ".join(parts) if parts else "no measured change above 0.5%")
            + "."
        )
    return section, frame


def minimum_sizes(records: list[Record]) -> Section:
    section = Section(
        "Exercise 2 — the minimum image size",
        "The smallest square input each model runs on, found by bisection over sizes with shape "
        "inference on the meta device (no arithmetic), and the layer that fails one pixel below "
        "it. The chain lists, at the minimum size, every layer that shrinks the map up to that one.",
    )
    rows = []
    for r in records:
        if r.metric != "minsize" or r.status != "ok":
            continue
        v = r.values
        rows.append({"model": r.spec.model, "minimum size": v["min_size"],
                     "fails below it": v["failing_layer"] or "— (runs at 1x1)",
                     "size chain at the minimum": "; ".join(v["reductions"]) or "—"})  # fmt: skip
        if v["failing_layer"]:
            last = v["reductions"][-1] if v["reductions"] else v["failing_layer"]
            section.sentences.append(
                f"{r.spec.model} needs at least {v['min_size']}x{v['min_size']}: its downsampling "
                f"chain ({len(v['reductions'])} size-changing layers) leaves {last.split(': ')[-1].split('→')[0]} "
                f"pixels at {v['failing_layer']}, and one pixel less leaves that layer's window "
                f"larger than its input ({v['failure']})."
            )
        else:
            section.sentences.append(
                f"{r.spec.model} runs even on a 1x1 input: every convolution and max-pool is padded "
                "so that a map never shrinks below 1x1, and global average pooling accepts any size."
            )
    if rows:
        section.tables.append(("Minimum input size per model", pd.DataFrame(rows)))
    else:
        section.sentences.append("No minsize records in these runs (metric minsize).")
    return section


def native_28(records: list[Record]) -> Section:
    section = Section(
        "Exercise 3 — GoogLeNet at Fashion-MNIST's native 28x28",
        "googlenet28 replaces only the stem: a 3x3/1 convolution and one 3x3/2 max-pool (14x14 "
        "out) instead of the 7x7/2 convolution and max-pool that bring 96x96 to 24x24; body and "
        "head are unchanged (see cnnbench/models/googlenet.py). Both trained with the same recipe.",
    )
    a, b = headline(records, "googlenet"), headline(records, "googlenet28")
    if b["params"] is None or a["params"] is None:
        section.sentences.append("googlenet and googlenet28 were not both measured in these runs.")
        return section
    rows = []
    col_a = f"googlenet (counted at {a['size']}, trained at {a['train_size']})"
    col_b = f"googlenet28 (counted at {b['size']}, trained at {b['train_size']})"
    for key, label in LINEAGE_FIELDS + [("train_time_s", "training time s")]:
        rows.append({"quantity": label, col_a: shown(key, a[key]), col_b: shown(key, b[key]),
                     "change": "—" if not a[key] or b[key] is None else f"{100 * (b[key] - a[key]) / a[key]:+.1f}%"})  # fmt: skip
    section.tables.append(("The trade at 28x28", pd.DataFrame(rows)))
    if a["gmacs"] and b["gmacs"]:
        section.sentences.append(
            f"At {b['size']}x{b['size']} googlenet28 needs {b['gmacs']:.3f} GMACs per image against "
            f"googlenet's {a['gmacs']:.3f} at {a['size']}x{a['size']} ({b['gmacs'] / a['gmacs']:.2f}x) "
            f"with {b['params'] - a['params']:+,} parameters"
            + (f"; trained at {b['train_size']} it reached {b['test_accuracy']:.3f} test accuracy against "
               f"{a['test_accuracy']:.3f} for googlenet trained at {a['train_size']}"
               if b["test_accuracy"] is not None and a["test_accuracy"] is not None else "")
            + (f", training in {b['train_time_s']:.0f} s against {a['train_time_s']:.0f} s."
               if b["train_time_s"] and a["train_time_s"] else ".")
        )  # fmt: skip
    return section


def rooflines(records: list[Record]) -> Section:
    section = Section(
        "Exercise 5, measured — rooflines",
        "Per convolution and linear layer of a forward pass: time from torch.profiler, MACs from "
        "fvcore, bytes from the layer's input, output and weights. Peaks measured on the device "
        "(compute: the better of a large matmul and a large 3x3 convolution; bandwidth: a large "
        "copy), data-sheet figures beside them where known; a layer can outrun the probes and sit "
        "above the roof. MFU = the "
        "whole forward pass's achieved FLOP/s over the measured peak.",
    )
    rows = []
    for r in records:
        if r.metric != "roofline" or r.status != "ok":
            continue
        v = r.values
        timed = [lay for lay in v["layers"] if lay["achieved_flops"]]
        memory_bound = sum(1 for lay in timed if lay["bound"] == "memory")
        rows.append({
            "model": r.spec.model, "batch": r.spec.batch_size, "device": r.spec.device,
            "forward ms": round(v["model_ms"], 2), "achieved GFLOP/s": round(v["model_achieved_flops"] / 1e9, 1),
            "peak GFLOP/s (measured)": round(v["peak_flops"] / 1e9, 1),
            "peak GB/s (measured)": round(v["peak_bytes_per_s"] / 1e9, 1),
            "ridge FLOP/byte": round(v["ridge_flop_per_byte"], 1), "MFU %": round(100 * v["mfu"], 1),
            "memory-bound layers": f"{memory_bound} of {len(timed)}",
        })  # fmt: skip
        section.sentences.append(
            f"{r.spec.model} at batch {r.spec.batch_size} ran at {v['model_achieved_flops'] / 1e9:.1f} "
            f"GFLOP/s, {100 * v['mfu']:.1f}% of the measured peak; {memory_bound} of its {len(timed)} "
            f"timed layers sit left of the ridge ({v['ridge_flop_per_byte']:.1f} FLOP/byte), where "
            "bandwidth, not arithmetic, bounds them."
        )
    if rows:
        section.tables.append(("Model FLOPs utilization and peaks", pd.DataFrame(rows)))
    else:
        section.sentences.append("No roofline records in these runs (metric roofline).")
    return section
