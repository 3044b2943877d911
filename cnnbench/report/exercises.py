"""The chapter's GoogLeNet exercises, answered from the records: one :class:`Section` each, of
tables and sentences whose every number is read from the frames (no fixed prose about a model).

1. the variants as a lineage, each against its parent;
2. the minimum input size of every model, and the layer that sets it;
3. GoogLeNet at Fashion-MNIST's native 28x28 against 96x96;
4. where the parameters sit, and how NiN and GoogLeNet cut them;
5. computation, memory, bandwidth and cache per image and per layer, and the measured rooflines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .fmt import MISSING, accuracy, change, fmt, is_missing, percent
from .frames import LINEAGE_FIELDS, Frames, ok_records, relative_change

__all__ = ["DATASHEET_PEAKS", "Section", "sections"]

# NVIDIA data sheets (dense): (FP32 TFLOP/s, BF16 TFLOP/s, memory TB/s); see shared/REFERENCE.md
DATASHEET_PEAKS = {"H100 SXM": (67.0, 989.0, 3.35), "H200": (67.0, 989.0, 4.8)}


@dataclass
class Section:
    title: str
    intro: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    sentences: list[str] = field(default_factory=list)
    figure: str | None = None  # stem of the figure that belongs to it (figures.py)

    def add_table(self, caption: str, rows: list[dict], empty: str | None = None) -> None:
        """A table of ``rows``; when there are none, the sentence ``empty`` (if given) instead."""
        if rows:
            self.tables.append((caption, pd.DataFrame(rows)))
        elif empty:
            self.sentences.append(empty)


def _headline(row: dict, key: str) -> str:
    """An overview number in the unit and decimals of its LINEAGE_FIELDS label (any other, such
    as the training time: 1 decimal); accuracy with its status when that is not ok."""
    if key == "test_accuracy_mean":
        return accuracy(row[key], None, row["accuracy_status"])
    _, digits, scale = LINEAGE_FIELDS.get(key, ("", 1, 1))
    return fmt(row[key], digits, scale=scale)


def lineage(frames: Frames) -> Section:
    """Exercise 1: each variant against its parent, absolute values and relative change."""
    section = Section(
        "Exercise 1 — GoogLeNet variants as a lineage",
        "Each variant against its parent, measured in the same runs (same profile, same seeds). "
        "Change = (variant − parent) / parent; — where either record is missing or not ok.",
        figure="lineage",
    )
    frame = frames.lineage
    if not len(frame):
        section.sentences.append("No variant and its parent were both measured in these runs.")
        return section
    rows = []
    for row in frame.to_dict("records"):
        shown = {"variant": row["variant"], "parent": row["parent"], "what changed": row["what changed"]}  # fmt: skip
        parts = []
        for key, (label, _, _) in LINEAGE_FIELDS.items():
            shown[label] = _headline(row, key)
            shown[f"{label} change"] = change(row[f"{key} change"])
            if not is_missing(row[f"{key} change"]) and abs(row[f"{key} change"]) >= 0.005:
                mark = "" if key != "test_accuracy_mean" or row["accuracy_status"] == "ok" else f" ({row['accuracy_status']})"  # fmt: skip
                parts.append(f"{label} {change(row[f'{key} change'])}{mark}")
        rows.append(shown)
        section.sentences.append(
            f"{row['variant']} ({row['what changed']}) against {row['parent']}: "
            + (", ".join(parts) if parts else "no measured change above 0.5%")
            + "."
        )
    section.add_table("Variants against their parents", rows)
    return section


def minimum_sizes(frames: Frames) -> Section:
    """Exercise 2: the smallest square input of every model, and why."""
    section = Section(
        "Exercise 2 — the minimum image size",
        "The smallest square input each model runs on, found by bisection over sizes with shape "
        "inference on the meta device (no arithmetic), and the layer that fails one pixel below "
        "it. The chain lists, at the minimum size, every layer that shrinks the map up to that one.",
    )
    rows = []
    for r in ok_records(frames.records, "minsize"):
        v = r.result
        rows.append({"model": r.spec.model, "minimum size": fmt(v.min_size),
                     "fails below it": v.failing_layer or "— (runs at 1x1)",
                     "size chain at the minimum": "; ".join(v.reductions) or MISSING})  # fmt: skip
        if v.failing_layer:
            last = v.reductions[-1] if v.reductions else v.failing_layer
            section.sentences.append(
                f"{r.spec.model} needs at least {v.min_size}x{v.min_size}: its downsampling "
                f"chain ({len(v.reductions)} size-changing layers) leaves {last.split(': ')[-1].split('→')[0]} "
                f"pixels at {v.failing_layer}, and one pixel less leaves that layer's window "
                f"larger than its input ({v.failure})."
            )  # fmt: skip
        else:
            section.sentences.append(
                f"{r.spec.model} runs even on a 1x1 input: every convolution and max-pool is padded "
                "so that a map never shrinks below 1x1, and global average pooling accepts any size."
            )
    section.add_table("Minimum input size per model", rows,
                      "No minsize records in these runs (metric minsize).")  # fmt: skip
    return section


def native_28(frames: Frames) -> Section:
    """Exercise 3: googlenet28 against googlenet."""
    section = Section(
        "Exercise 3 — GoogLeNet at Fashion-MNIST's native 28x28",
        "googlenet28 replaces only the stem: a 3x3/1 convolution and one 3x3/2 max-pool (14x14 "
        "out) instead of the 7x7/2 convolution and max-pool that bring 96x96 to 24x24; body and "
        "head are unchanged (see cnnbench/models/googlenet.py). Both trained with the same recipe.",
    )
    a, b = frames.row("googlenet"), frames.row("googlenet28")
    if a is None or b is None or a["params"] is None or b["params"] is None:
        section.sentences.append("googlenet and googlenet28 were not both measured in these runs.")
        return section
    col_a = f"googlenet (counted at {a['image_size']}, trained at {a['train_image_size']})"
    col_b = f"googlenet28 (counted at {b['image_size']}, trained at {b['train_image_size']})"
    quantities = {**{k: label for k, (label, _, _) in LINEAGE_FIELDS.items()},
                  "train_time_s_mean": "training time s"}  # fmt: skip
    rows = [{"quantity": label, col_a: _headline(a, key), col_b: _headline(b, key),
             "change": change(relative_change(a[key], b[key]))}
            for key, label in quantities.items()]  # fmt: skip
    section.add_table("The trade at 28x28", rows)
    if a["gmacs"] and b["gmacs"]:
        acc_a, acc_b = _headline(a, "test_accuracy_mean"), _headline(b, "test_accuracy_mean")
        section.sentences.append(
            f"At {b['image_size']}x{b['image_size']} googlenet28 needs {b['gmacs']:.3f} GMACs per image against "
            f"googlenet's {a['gmacs']:.3f} at {a['image_size']}x{a['image_size']} ({b['gmacs'] / a['gmacs']:.2f}x) "
            f"with {b['params'] - a['params']:+,} parameters"
            + (f"; trained at {b['train_image_size']} it reached {acc_b} test accuracy against "
               f"{acc_a} for googlenet trained at {a['train_image_size']}"
               if not is_missing(b["test_accuracy_mean"]) and not is_missing(a["test_accuracy_mean"]) else "")
            + (f", training in {b['train_time_s_mean']:.0f} s against {a['train_time_s_mean']:.0f} s."
               if b["train_time_s_mean"] and a["train_time_s_mean"] else ".")
        )  # fmt: skip
    return section


def _no_facts(section: Section, frames: Frames) -> bool:
    if not frames.facts:
        section.sentences.append("No model in these runs has both params and flops records.")
    return not frames.facts


def exercise4(frames: Frames) -> Section:
    """Exercise 4: where the parameters sit, and how NiN and GoogLeNet cut them."""
    section = Section(
        "Exercise 4 — parameter sizes, and how NiN and GoogLeNet cut them",
        "Parameters by where they sit, counted from each model's records (fp32 bytes: 4 per "
        "parameter).",
    )
    if _no_facts(section, frames):
        return section
    facts = frames.facts
    rows = [{
        "model": model, "input": f.image_size, "parameters": fmt(f.params),
        "MB (fp32)": fmt(f.param_bytes, 1, scale=2**20), "in convolutions": fmt(f.conv_params),
        "in fully connected": fmt(f.linear_params),
        "% fully connected": percent(f.linear_share, suffix=""),
        "% in 1x1 convolutions": percent(f.one_by_one_param_share, suffix=""),
        "largest layer": f"{f.largest.name} ({f.largest.layer}, {fmt(f.largest.params)})",
        "global average pooling": "yes" if f.global_pool else "no",
    } for model, f in facts.items()]  # fmt: skip
    section.add_table("Where the parameters are", rows)
    heaviest = max(facts, key=lambda m: facts[m].params)
    top = facts[heaviest]
    for model, f in facts.items():
        m = f.params / 1e6
        if f.linear_share > 0.5:
            section.sentences.append(
                f"{model} holds {m:.1f}M parameters, {100 * f.linear_share:.0f}% of them in fully "
                f"connected layers; the largest, {f.largest.name}, alone holds "
                f"{f.largest.params / 1e6:.1f}M ({100 * f.largest.params / f.params:.0f}%)."
            )
        elif f.linear_params == 0:
            section.sentences.append(
                f"{model} has no fully connected layer at all: its last convolution outputs one channel "
                f"per class ({f.head.name}, {f.head.params:,} parameters) and global average "
                f"pooling turns those maps into logits; {100 * f.one_by_one_param_share:.0f}% of its "
                f"{m:.2f}M parameters are 1x1 convolutions, {top.params / f.params:.0f}x fewer "
                f"parameters than {heaviest}."
            )
        else:
            pooled = "after global average pooling " if f.global_pool else ""
            section.sentences.append(
                f"{model} keeps {100 * (1 - f.linear_share):.0f}% of its {m:.2f}M parameters in "
                f"convolutions; its classifier {f.head.name} {pooled}has only {f.head.params:,}. "
                f"1x1 convolutions hold {100 * f.one_by_one_param_share:.0f}% of the parameters "
                f"(they reduce channels before the wider kernels), and the model has "
                f"{top.params / f.params:.1f}x fewer parameters than {heaviest}."
            )
    return section


def exercise5(frames: Frames, batches: tuple[int, ...] = (1, 128)) -> Section:
    """Exercise 5: what GoogLeNet and AlexNet ask of an accelerator, per image and per layer."""
    section = Section(
        "Exercise 5 — computation of GoogLeNet vs AlexNet, and what it asks of an accelerator",
        "Per image, forward pass, fp32. MACs from fvcore (one fused multiply-add = 1); FLOPs = 2 x "
        "MACs. Bytes moved: each layer reads its input and weights and writes its output (weights "
        "read once per batch). Arithmetic intensity = FLOPs / bytes moved. Working set of a layer "
        "= its input + output + weights.",
    )
    if _no_facts(section, frames):
        return section
    facts = frames.facts
    rows = []
    for model, f in facts.items():
        row = {"model": model, "GMACs": fmt(f.gmacs, 3),
               "parameter MB": fmt(f.param_bytes, 1, scale=2**20),
               "activation MB": fmt(f.activation_bytes, 2, scale=2**20)}  # fmt: skip
        for b in batches:
            row[f"MB moved b{b}"] = fmt(f.bytes_moved(b), 1, scale=2**20)
            row[f"FLOP/byte b{b}"] = fmt(f.intensity(b), 1)
        ws = f.working_set
        row["largest working set"] = f"{ws.name} {fmt(f.working_set_of(ws), 1, scale=2**20)} MB"
        row["% MACs in 1x1 conv"] = percent(f.one_by_one_mac_share, suffix="")
        row["% MACs in conv"] = percent(f.conv_mac_share, suffix="")
        rows.append(row)
    section.add_table("Computation, memory and traffic per image", rows)
    layer_rows = []
    for model, f in facts.items():
        for lay in sorted(f.layers, key=lambda lay: -lay.macs)[:6]:
            moved = f.working_set_of(lay)
            layer_rows.append({
                "model": model, "layer": lay.name, "type": lay.layer, "kernel": lay.kernel or "",
                "MMACs": fmt(lay.macs, 1, scale=1e6), "KB moved (b1)": fmt(moved, 1, scale=1024),
                "FLOP/byte (b1)": fmt(2 * lay.macs / moved, 1) if moved else MISSING,
            })  # fmt: skip
    section.add_table("The six costliest layers of each model, batch 1", layer_rows)
    a, g = facts.get("alexnet"), facts.get("googlenet")
    fp32, bf16, bw = DATASHEET_PEAKS["H100 SXM"]
    if a and g:
        section.sentences += [
            f"Computation: googlenet at {g.image_size}x{g.image_size} needs {g.gmacs:.3f} GMACs per "
            f"image, {a.gmacs / g.gmacs:.1f}x fewer than alexnet at {a.image_size}x{a.image_size} "
            f"({a.gmacs:.3f}): the amount of computation an accelerator must supply per image.",
            f"Memory size: alexnet's weights take {a.param_bytes / 2**20:.0f} MB against googlenet's "
            f"{g.param_bytes / 2**20:.0f} MB, while their forward activations per image are "
            f"{a.activation_bytes / 2**20:.2f} and {g.activation_bytes / 2**20:.2f} MB: the activations "
            f"outweigh the weights from batch {a.crossover} for alexnet but from batch {g.crossover} for "
            "googlenet, whose memory need is set by batch size rather than by its weights.",
            f"Memory bandwidth: at batch 1 alexnet does {a.intensity(1):.1f} FLOPs per byte moved and "
            f"googlenet {g.intensity(1):.1f}. The H100 SXM data sheet gives {fp32:.0f} TFLOP/s fp32 and "
            f"{bw} TB/s, a ridge point of {fp32 / bw:.0f} FLOP/byte (bf16 tensor cores: {bf16 / bw:.0f}); "
            "below it a layer waits on memory. At batch 128 the weights are amortised: alexnet "
            f"{a.intensity(128):.1f}, googlenet {g.intensity(128):.1f} FLOP/byte.",
            f"Cache size: the largest single-layer working set is {a.working_set.name} in alexnet "
            f"({a.working_set_of(a.working_set) / 2**20:.1f} MB) "
            f"and {g.working_set.name} in googlenet "
            f"({g.working_set_of(g.working_set) / 2**20:.1f} MB): "
            "an on-chip buffer of that size keeps a whole layer resident.",
            f"Specialized operations: {100 * g.conv_mac_share:.0f}% of googlenet's MACs are "
            f"convolutions and {100 * g.one_by_one_mac_share:.0f}% are 1x1 convolutions, which are "
            f"plain matrix multiplications (alexnet: {100 * a.conv_mac_share:.0f}% convolutions, "
            f"{100 * a.one_by_one_mac_share:.0f}% 1x1) — matrix units serve both; googlenet's many "
            "small branches, concatenations and 3x3/1 max-pools add memory traffic with no MACs.",
        ]  # fmt: skip
    else:
        missing = [m for m, f in (("alexnet", a), ("googlenet", g)) if not f]
        section.sentences.append(
            f"The comparison needs both alexnet and googlenet; these runs lack {', '.join(missing)}."
        )
    return section


def rooflines(frames: Frames) -> Section:
    """Exercise 5, measured: per-layer rooflines and MFU."""
    section = Section(
        "Exercise 5, measured — rooflines",
        "Per convolution and linear layer of a forward pass: time from torch.profiler, MACs from "
        "fvcore, bytes from the layer's input, output and weights. Peaks measured on the device "
        "(compute: the better of a large matmul and a large 3x3 convolution; bandwidth: a large "
        "copy), data-sheet figures beside them where known; a layer can outrun the probes and sit "
        "above the roof. MFU = the "
        "whole forward pass's achieved FLOP/s over the measured peak.",
        figure="roofline",
    )
    rows = []
    for r in ok_records(frames.records, "roofline"):
        v = r.result
        timed = [lay for lay in v.layers if lay.achieved_flops]
        memory_bound = sum(1 for lay in timed if lay.bound == "memory")
        rows.append({
            "model": r.spec.model, "batch": r.spec.batch_size, "device": r.spec.device,
            "forward ms": fmt(v.model_ms, 2), "achieved GFLOP/s": fmt(v.model_achieved_flops, 1, scale=1e9),
            "peak GFLOP/s (measured)": fmt(v.peak_flops, 1, scale=1e9),
            "peak GB/s (measured)": fmt(v.peak_bytes_per_s, 1, scale=1e9),
            "ridge FLOP/byte": fmt(v.ridge_flop_per_byte, 1), "MFU %": percent(v.mfu, suffix=""),
            "memory-bound layers": f"{memory_bound} of {len(timed)}",
        })  # fmt: skip
        section.sentences.append(
            f"{r.spec.model} at batch {r.spec.batch_size} ran at {v.model_achieved_flops / 1e9:.1f} "
            f"GFLOP/s, {100 * v.mfu:.1f}% of the measured peak; {memory_bound} of its {len(timed)} "
            f"timed layers sit left of the ridge ({v.ridge_flop_per_byte:.1f} FLOP/byte), where "
            "bandwidth, not arithmetic, bounds them."
        )
    section.add_table("Model FLOPs utilization and peaks", rows,
                      "No roofline records in these runs (metric roofline).")  # fmt: skip
    return section


def sections(frames: Frames) -> list[Section]:
    """Every exercise section, in report order."""
    makers = (lineage, minimum_sizes, native_28, exercise4, exercise5, rooflines)
    return [make(frames) for make in makers]
