"""The chapter's GoogLeNet exercises 4 and 5, answered from the records: tables plus sentences
whose every number is read from the data (nothing here is fixed prose about a model by name).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..results import Record
from .tables import ok_records

__all__ = ["Section", "exercise4", "exercise5", "model_facts", "DATASHEET_PEAKS"]

# NVIDIA data sheets (dense): (FP32 TFLOP/s, BF16 TFLOP/s, memory TB/s); see shared/REFERENCE.md
DATASHEET_PEAKS = {"H100 SXM": (67.0, 989.0, 3.35), "H200": (67.0, 989.0, 4.8)}


@dataclass
class Section:
    title: str
    intro: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    sentences: list[str] = field(default_factory=list)


def _ok(records, metric, model):
    """The first ok record of ``metric`` for ``model``, or None."""
    return next(iter(ok_records(records, metric, model=model)), None)


def model_facts(records: list[Record]) -> dict[str, dict]:
    """Per model with params and flops records: the derived quantities both exercises use."""
    facts = {}
    for model in dict.fromkeys(r.spec.model for r in records):
        p, f = _ok(records, "params", model), _ok(records, "flops", model)
        if not (p and f and f.values.get("layers")):
            continue
        layers = f.values["layers"]
        total = p.values["params_total"]
        by_type = p.values["params_by_layer_type"]
        convs = [lay for lay in layers if lay["layer"].startswith("Conv")]
        linears = [lay for lay in layers if lay["layer"] == "Linear"]
        one_by_one = [lay for lay in convs if lay["kernel"] == "1x1"]
        largest = max(layers, key=lambda lay: lay["params"])
        head = (linears or convs)[-1]
        conv_macs = sum(lay["macs"] for lay in convs)
        facts[model] = dict(
            image_size=p.spec.image_size,
            params=total,
            param_bytes=p.values["bytes_fp32"],
            conv_params=by_type.get("conv", 0),
            linear_params=by_type.get("linear", 0),
            linear_share=by_type.get("linear", 0) / total if total else 0.0,
            largest_layer=largest["name"],
            largest_layer_type=largest["layer"],
            largest_layer_params=largest["params"],
            one_by_one_param_share=sum(lay["params"] for lay in one_by_one) / total
            if total
            else 0.0,
            one_by_one_mac_share=sum(lay["macs"] for lay in one_by_one) / f.values["macs"],
            conv_mac_share=conv_macs / f.values["macs"],
            global_pool=any(lay["layer"].startswith("Adaptive") for lay in layers),
            head_layer=head["name"],
            head_params=head["params"],
            macs=f.values["macs"],
            gmacs=f.values["gmacs"],
            layers=layers,
        )
    return facts


def exercise4(records: list[Record]) -> Section:
    facts = model_facts(records)
    section = Section(
        "Exercise 4 — parameter sizes, and how NiN and GoogLeNet cut them",
        "Parameters by where they sit, counted from each model's records (fp32 bytes: 4 per "
        "parameter).",
    )
    if not facts:
        section.sentences.append("No model in these runs has both params and flops records.")
        return section
    rows = []
    for model, f in facts.items():
        rows.append({
            "model": model,
            "input": f["image_size"],
            "parameters": f"{f['params']:,}",
            "MB (fp32)": round(f["param_bytes"] / 2**20, 1),
            "in convolutions": f"{f['conv_params']:,}",
            "in fully connected": f"{f['linear_params']:,}",
            "% fully connected": round(100 * f["linear_share"], 1),
            "% in 1x1 convolutions": round(100 * f["one_by_one_param_share"], 1),
            "largest layer": f"{f['largest_layer']} ({f['largest_layer_type']}, {f['largest_layer_params']:,})",
            "global average pooling": "yes" if f["global_pool"] else "no",
        })  # fmt: skip
    section.tables.append(("Where the parameters are", pd.DataFrame(rows)))
    heaviest = max(facts, key=lambda m: facts[m]["params"])
    top = facts[heaviest]
    for model, f in facts.items():
        m = f["params"] / 1e6
        if f["linear_share"] > 0.5:
            section.sentences.append(
                f"{model} holds {m:.1f}M parameters, {100 * f['linear_share']:.0f}% of them in fully "
                f"connected layers; the largest, {f['largest_layer']}, alone holds "
                f"{f['largest_layer_params'] / 1e6:.1f}M ({100 * f['largest_layer_params'] / f['params']:.0f}%)."
            )
        elif f["linear_params"] == 0:
            section.sentences.append(
                f"{model} has no fully connected layer at all: its last convolution outputs one channel "
                f"per class ({f['head_layer']}, {f['head_params']:,} parameters) and global average "
                f"pooling turns those maps into logits; {100 * f['one_by_one_param_share']:.0f}% of its "
                f"{m:.2f}M parameters are 1x1 convolutions, {top['params'] / f['params']:.0f}x fewer "
                f"parameters than {heaviest}."
            )
        else:
            pooled = "after global average pooling " if f["global_pool"] else ""
            section.sentences.append(
                f"{model} keeps {100 * (1 - f['linear_share']):.0f}% of its {m:.2f}M parameters in "
                f"convolutions; its classifier {f['head_layer']} {pooled}has only {f['head_params']:,}. "
                f"1x1 convolutions hold {100 * f['one_by_one_param_share']:.0f}% of the parameters "
                f"(they reduce channels before the wider kernels), and the model has "
                f"{top['params'] / f['params']:.1f}x fewer parameters than {heaviest}."
            )
    return section


def _bytes_moved(f: dict, batch: int) -> float:
    """Bytes a forward pass moves per image at ``batch``: every layer reads its input and writes
    its output once, and reads its weights once per batch (no reuse across layers assumed)."""
    return sum(
        lay["input_bytes"] + lay["output_bytes"] + lay["weight_bytes"] / batch
        for lay in f["layers"]
    )


def _intensity(f: dict, batch: int) -> float:
    return 2 * f["macs"] / _bytes_moved(f, batch)


def _crossover(f: dict) -> int:
    """The smallest batch whose forward activations (per image x batch) exceed the weights."""
    return max(1, int(f["param_bytes"] // max(f["activation_bytes"], 1)) + 1)


def exercise5(records: list[Record], batches: tuple[int, ...] = (1, 128)) -> Section:
    facts = model_facts(records)
    section = Section(
        "Exercise 5 — computation of GoogLeNet vs AlexNet, and what it asks of an accelerator",
        "Per image, forward pass, fp32. MACs from fvcore (one fused multiply-add = 1); FLOPs = 2 x "
        "MACs. Bytes moved: each layer reads its input and weights and writes its output (weights "
        "read once per batch). Arithmetic intensity = FLOPs / bytes moved. Working set of a layer "
        "= its input + output + weights.",
    )
    if not facts:
        section.sentences.append("No model in these runs has both params and flops records.")
        return section
    rows = []
    for model, f in facts.items():
        act = sum(lay["output_bytes"] for lay in f["layers"])
        ws = max(
            f["layers"],
            key=lambda lay: lay["input_bytes"] + lay["output_bytes"] + lay["weight_bytes"],
        )
        row = {
            "model": model,
            "GMACs": round(f["gmacs"], 3),
            "parameter MB": round(f["param_bytes"] / 2**20, 1),
            "activation MB": round(act / 2**20, 2),
        }
        for b in batches:
            moved = _bytes_moved(f, b)
            row[f"MB moved b{b}"] = round(moved / 2**20, 1)
            row[f"FLOP/byte b{b}"] = round(2 * f["macs"] / moved, 1)
        row["largest working set"] = (
            f"{ws['name']} {(ws['input_bytes'] + ws['output_bytes'] + ws['weight_bytes']) / 2**20:.1f} MB"
        )
        row["% MACs in 1x1 conv"] = round(100 * f["one_by_one_mac_share"], 1)
        row["% MACs in conv"] = round(100 * f["conv_mac_share"], 1)
        f["activation_bytes"], f["working_set"] = act, ws
        rows.append(row)
    section.tables.append(("Computation, memory and traffic per image", pd.DataFrame(rows)))
    layer_rows = []
    for model, f in facts.items():
        for lay in sorted(f["layers"], key=lambda lay: -lay["macs"])[:6]:
            moved = lay["input_bytes"] + lay["output_bytes"] + lay["weight_bytes"]
            layer_rows.append({
                "model": model, "layer": lay["name"], "type": lay["layer"], "kernel": lay["kernel"] or "",
                "MMACs": round(lay["macs"] / 1e6, 1), "KB moved (b1)": round(moved / 1024, 1),
                "FLOP/byte (b1)": round(2 * lay["macs"] / moved, 1) if moved else None,
            })  # fmt: skip
    section.tables.append(
        ("The six costliest layers of each model, batch 1", pd.DataFrame(layer_rows))
    )

    a, g = facts.get("alexnet"), facts.get("googlenet")
    fp32, bf16, bw = DATASHEET_PEAKS["H100 SXM"]
    if a and g:
        section.sentences += [
            f"Computation: googlenet at {g['image_size']}x{g['image_size']} needs {g['gmacs']:.3f} GMACs per "
            f"image, {a['gmacs'] / g['gmacs']:.1f}x fewer than alexnet at {a['image_size']}x{a['image_size']} "
            f"({a['gmacs']:.3f}): the amount of computation an accelerator must supply per image.",
            f"Memory size: alexnet's weights take {a['param_bytes'] / 2**20:.0f} MB against googlenet's "
            f"{g['param_bytes'] / 2**20:.0f} MB, while their forward activations per image are "
            f"{a['activation_bytes'] / 2**20:.2f} and {g['activation_bytes'] / 2**20:.2f} MB: the activations "
            f"outweigh the weights from batch {_crossover(a)} for alexnet but from batch {_crossover(g)} for "
            "googlenet, whose memory need is set by batch size rather than by its weights.",
            f"Memory bandwidth: at batch 1 alexnet does {_intensity(a, 1):.1f} FLOPs per byte moved and "
            f"googlenet {_intensity(g, 1):.1f}. The H100 SXM data sheet gives {fp32:.0f} TFLOP/s fp32 and "
            f"{bw} TB/s, a ridge point of {fp32 / bw:.0f} FLOP/byte (bf16 tensor cores: {bf16 / bw:.0f}); "
            "below it a layer waits on memory. At batch 128 the weights are amortised: alexnet "
            f"{_intensity(a, 128):.1f}, googlenet {_intensity(g, 128):.1f} FLOP/byte.",
            f"Cache size: the largest single-layer working set is {a['working_set']['name']} in alexnet "
            f"({(a['working_set']['input_bytes'] + a['working_set']['output_bytes'] + a['working_set']['weight_bytes']) / 2**20:.1f} MB) "
            f"and {g['working_set']['name']} in googlenet "
            f"({(g['working_set']['input_bytes'] + g['working_set']['output_bytes'] + g['working_set']['weight_bytes']) / 2**20:.1f} MB): "
            "an on-chip buffer of that size keeps a whole layer resident.",
            f"Specialized operations: {100 * g['conv_mac_share']:.0f}% of googlenet's MACs are "
            f"convolutions and {100 * g['one_by_one_mac_share']:.0f}% are 1x1 convolutions, which are "
            f"plain matrix multiplications (alexnet: {100 * a['conv_mac_share']:.0f}% convolutions, "
            f"{100 * a['one_by_one_mac_share']:.0f}% 1x1) — matrix units serve both; googlenet's many "
            "small branches, concatenations and 3x3/1 max-pools add memory traffic with no MACs.",
        ]  # fmt: skip
    else:
        missing = [m for m, f in (("alexnet", a), ("googlenet", g)) if not f]
        section.sentences.append(
            f"The comparison needs both alexnet and googlenet; these runs lack {', '.join(missing)}."
        )
    return section
