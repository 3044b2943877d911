"""The chapter's GoogLeNet exercises, answered from the records: one :class:`Section` each, an
answer of one to three sentences that cites its numbers, then tables and sentences whose every
number is read from the frames (no fixed prose about a model's results).

1. the variants as a lineage, each against its parent, latency changes called only beyond noise;
2. the minimum input size of every model, and the layer that sets it;
3. GoogLeNet at Fashion-MNIST's native 28x28 against googlenet, both at the same input;
4. where the parameters sit, and how NiN and GoogLeNet cut them;
5. computation, memory, bandwidth and cache per image and per layer — at the chapter's sizes and
   at equal resolution — and the measured rooflines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .. import stats
from ..results.types import NEAR_ROOF
from .fmt import (
    ABOVE_ROOF,
    MISSING,
    accuracy,
    change,
    fmt,
    percent,
    points,
)
from .fmt import utilization as utilization_text
from .frames import (
    EQUAL_RESOLUTION,
    LINEAGE_FIELDS,
    Frames,
    ModelFacts,
    above_roof,
    first_ok,
    ok_records,
    relative_change,
    result_of,
    trained_counts,
    utilization,
)
from .noise import MIN_SEEDS, accuracy_change

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
    answer: str = ""  # one to three sentences that answer the exercise, citing its numbers
    warning: str = ""  # what makes the section's comparisons untrustworthy, if anything

    def add_table(self, caption: str, rows: list[dict], empty: str | None = None) -> None:
        """A table of ``rows``; when there are none, the sentence ``empty`` (if given) instead."""
        if rows:
            self.tables.append((caption, pd.DataFrame(rows)))
        elif empty:
            self.sentences.append(empty)


def _headline(row: dict, key: str) -> str:
    """A number in the unit and decimals of its LINEAGE_FIELDS label (any other, such as the
    training time: 1 decimal); accuracy with its status when that is not ok."""
    if key == "test_accuracy_mean":
        return accuracy(row[key], None, row["accuracy_status"])
    f = LINEAGE_FIELDS.get(key)
    return fmt(row[key], f.digits if f else 1, scale=f.scale if f else 1)


def _change_of(row: dict, key: str) -> str:
    value = row[f"{key} change"]
    return points(value) if LINEAGE_FIELDS[key].points else change(value)


def _ratio(x: float, y: float) -> str:
    """x against y in words: '3.4x fewer than' / '1.60x'."""
    return f"{y / x:.1f}x fewer than" if x < y else f"{x / y:.2f}x"


def resolution_text(frames: Frames) -> str:
    """What the run's latencies resolve, per mode and batch, in one paragraph ('' without
    latencies measured in rounds)."""
    noise = frames.noise
    if not noise.by_key:
        return ""
    keys = sorted(noise.by_key, key=lambda k: (k[0] != "inference", k[1]))
    parts = []
    for mode, batch in keys:
        res = noise.by_key[(mode, batch)]
        floor = frames.floor(mode, batch)
        text = (f"{mode} b{batch}: {100 * res.callable:.1f}% (a {100 * res.detectable:.1f}% change "
                f"is called 80% of the time; {noise.rounds[(mode, batch)]} rounds)")  # fmt: skip
        if floor > res.callable:
            text += f", raised to {100 * floor:.1f}% by the noise control" if floor != float("inf") else ", nothing: the noise control has no interval"  # fmt: skip
        parts.append(text)
    how = ("paired round by round (one run, interleaved rounds)" if noise.paired else
           "unpaired (shards or a resumed run: their rounds did not run side by side)")  # fmt: skip
    text = (f"What this run resolves: the smallest latency change it calls between two models, "
            f"{how} — {'; '.join(parts)}. A smaller difference is 'not resolved' everywhere in "
            "this report.")
    mem = frames.memory_noise
    if mem is not None:
        diffs = ", ".join(f"{100 * math.expm1(d):+.1f}%" for d in mem.log_differences)
        text += (f" Peak memory is measured once per unit: the identical pair (googlenet_ls, "
                 f"googlenet) differs by {diffs}, so memory changes within ±{100 * mem.threshold:.0f}% "
                 "are not resolved.")  # fmt: skip
    return text


# the lineage fields judged beside their change: (key, the row field holding its judgement)
_JUDGED = ("latency_ms_p50_b1", "train_images_per_s", "train_memory_bytes", "test_accuracy_mean")


def _unlike(row: dict, key: str) -> str:
    """Why a size-dependent field gets no change or verdict: '28 vs 96 px'."""
    if LINEAGE_FIELDS[key].points:
        return "trained at other sizes"
    return f"{row['input']} vs {row['parent_input']} px"


def _judged_cell(row: dict, key: str) -> str:
    judged = row[f"{key} noise"]
    if judged is not None:
        return judged.short()
    if not (row["trained_alike"] if LINEAGE_FIELDS[key].points else row["alike"]):
        return f"no verdict ({_unlike(row, key)})"
    return MISSING


def lineage(frames: Frames) -> Section:
    """Exercise 1: each variant against its parent, absolute values and change; a change gets a
    verdict only when the pair is alike (one input size; one training size for accuracy) and
    the run resolves it."""
    section = Section(
        "Exercise 1 — GoogLeNet variants as a lineage",
        "Each variant against its parent, measured in the same runs (same profile, same seeds). "
        "Change = (variant − parent) / parent; test accuracy changes in percentage points (pp). "
        "Latency (inference, batch 1) and training throughput (train mode, the largest batch both "
        "measured) are called faster or slower only when the 95% interval of their ratio over the "
        "run's rounds excludes 1 and the change is at least what the run resolves there (see the "
        "header); peak memory beyond the identical pair's spread; test accuracy from "
        f"{MIN_SEEDS} seeds a side, by an interval over the seeds. Otherwise 'not resolved'. A pair "
        "measured at different sizes gets its numbers and no change or verdict.",
        figure="lineage",
    )
    frame = frames.lineage
    if not len(frame):
        section.sentences.append("No variant and its parent were both measured in these runs.")
        return section
    control = frames.control
    if control is not None and not control.passed:
        section.warning = control.headline()
    rows, called, unlike = [], [], []
    for row in frame.to_dict("records"):
        shown = {"variant": row["variant"], "parent": row["parent"],
                 "input (variant / parent)": f"{row['input']} / {row['parent_input']}"}  # fmt: skip
        for key, f in LINEAGE_FIELDS.items():
            shown[f.label] = _headline(row, key)
            comparable = (row["trained_alike"] if f.points else row["alike"]) or not f.by_size
            shown[f"{f.label} change"] = _change_of(row, key) if comparable else (
                f"— ({_unlike(row, key)}: parent {_headline({**row, key: row[f'{key} parent']}, key)})")  # fmt: skip
            if key in _JUDGED:
                shown[f"{f.label} verdict"] = _judged_cell(row, key)
                judged = row[f"{key} noise"]
                if judged is not None and judged.significant:
                    called.append((row["variant"], f.label, _change_of(row, key), judged.verdict))
        if not row["alike"]:
            unlike.append(row)
        rows.append(shown)
    batches = sorted({b for b in frame["train_batch"] if b is not None})
    section.add_table(
        "Variants against their parents (train images/s at batch "
        f"{', '.join(map(str, batches)) or MISSING})", rows,
    )  # fmt: skip
    section.answer = _lineage_answer(frames, frame, called, unlike)
    return section


def _lineage_answer(frames: Frames, frame: pd.DataFrame, called: list, unlike: list) -> str:
    """What the lineage resolves, first; then what it cannot, and why."""
    control = frames.control
    answer = []
    if called:
        what = "; ".join(f"{v} {label} {c} ({verdict})" for v, label, c, verdict in called[:5])
        more = f" and {len(called) - 5} more (table)" if len(called) > 5 else ""
        answer.append(f"Changes this run resolves: {what}{more}.")
    else:
        answer.append("This run resolves no variant's change of latency, throughput, memory or "
                      "accuracy against its parent.")  # fmt: skip
    if control is not None and not control.passed:
        answer.append("The noise control did not pass (warning above): where it failed, only "
                      "changes beyond its interval are called.")  # fmt: skip
    seeds = [r["seeds"] for r in frame.to_dict("records") if r["seeds"]]
    if seeds and min(seeds) < MIN_SEEDS:
        answer.append(
            f"Accuracy differences are not judged: {min(seeds)} seed(s) per network, and a call "
            f"needs {MIN_SEEDS} a side (the spread from seed to seed is not known from fewer)."
        )
    if unlike:
        names = ", ".join(f"{r['variant']} ({r['input']} vs {r['parent_input']} px)" for r in unlike)
        answer.append(f"No size-dependent verdict for {names}: measured at another input than "
                      "its parent (exercise 3 compares them at one size).")  # fmt: skip
    return " ".join(answer)


def minimum_sizes(frames: Frames) -> Section:
    """Exercise 2: the smallest square input of every model, and why."""
    section = Section(
        "Exercise 2 — the minimum image size",
        "The smallest square input each model runs on, found by bisection over sizes with shape "
        "inference on the meta device (no arithmetic), and the layer that fails one pixel below "
        "it. The chain lists, at the minimum size, every layer that shrinks the map up to that one.",
    )
    rows, found = [], []
    for r in ok_records(frames.records, "minsize"):
        v = r.result
        found.append((r.spec.model, v))
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
    if found:
        bounded = sorted((v.min_size, m, v.failing_layer) for m, v in found if v.failing_layer)
        free = [m for m, v in found if not v.failing_layer]
        parts = []
        if len(bounded) == 1:
            size, model, where = bounded[0]
            parts.append(
                f"{model} needs at least {size}x{size}: its chain of strides and pools, not its "
                f"classifier, sets the bound ({where} runs out of pixels below it)."
            )
        elif bounded:
            hi = bounded[-1]
            parts.append(
                "The minimum input is set by each model's chain of strides and pools, not by its "
                f"classifier: from {bounded[0][0]}x{bounded[0][0]} ({bounded[0][1]}) up to "
                f"{hi[0]}x{hi[0]} ({hi[1]}, whose {hi[2]} runs out of pixels below it)."
            )
        if free:
            parts.append(
                f"{', '.join(free)} run{'s' if len(free) == 1 else ''} on any size down to 1x1: "
                "padding keeps every map at least 1x1 and global average pooling takes any size."
            )
        section.answer = " ".join(parts)
    return section


def _same_input(frames: Frames, model: str, size: int, metric: str, **spec):
    return first_ok(frames.records, metric, model=model, image_size=size, **spec)


def native_28(frames: Frames) -> Section:
    """Exercise 3: googlenet28 against googlenet, both at googlenet28's input in every row."""
    section = Section(
        "Exercise 3 — GoogLeNet at Fashion-MNIST's native 28x28",
        "googlenet28 replaces only the stem: a 3x3/1 convolution and one 3x3/2 max-pool (14x14 "
        "out) instead of the 7x7/2 convolution and max-pool that bring 96x96 to 24x24; body and "
        "head are unchanged (see cnnbench/models/googlenet.py). Every row compares the two at the "
        "same input: googlenet28's own size. googlenet's counts there are those of the network "
        "it trained; a row with no measurement of both at that input says so instead of mixing "
        "sizes.",
    )
    a, b = frames.row("googlenet"), frames.row("googlenet28")
    if a is None or b is None:
        section.sentences.append("googlenet and googlenet28 were not both measured in these runs.")
        return section
    size = b["image_size"]
    acc_a = next((r for r in frames.mine("googlenet") if r.metric == "accuracy"), None)
    acc_b = next((r for r in frames.mine("googlenet28") if r.metric == "accuracy"), None)
    rows = []

    def add(quantity, va, vb, shown, rel=True, why=""):
        if why:
            rows.append({"quantity": quantity, "input": size, "googlenet": MISSING,
                         "googlenet28": MISSING, "change": why})  # fmt: skip
            return
        diff = (points(vb - va) if not rel else change(relative_change(va, vb))) if va is not None and vb is not None else MISSING  # fmt: skip
        rows.append({"quantity": quantity, "input": size, "googlenet": shown(va),
                     "googlenet28": shown(vb), "change": diff})  # fmt: skip

    # counts: googlenet28's own records; googlenet's as trained at that size (or a count there)
    count = lambda v: fmt(v)  # noqa: E731
    g3 = lambda v: fmt(v, 3)  # noqa: E731
    pa, ga = (None, None)
    if acc_a is not None and acc_a.spec.image_size == size:
        pa, ga, _ = trained_counts(frames.records, acc_a)
    if pa is None and (p := _same_input(frames, "googlenet", size, "params")):
        pa = p.result.params_total
    if ga is None and (f := _same_input(frames, "googlenet", size, "flops")):
        ga = f.result.gmacs
    for label, va, vb, shown in (("parameters", pa, b["params"], count), ("GMACs per image", ga, b["gmacs"], g3)):  # fmt: skip
        if va is None or vb is None:
            add(label, None, None, shown, why=f"no count of googlenet at {size} in these runs")
        else:
            add(label, va, vb, shown)
    same_acc = (
        acc_a is not None and acc_b is not None
        and acc_a.spec.image_size == acc_b.spec.image_size == size
    )  # fmt: skip
    if same_acc:
        add("test accuracy", a["test_accuracy_mean"], b["test_accuracy_mean"],
            lambda v: accuracy(v, None, None), rel=False)  # fmt: skip
        add("training time s", a["train_time_s_mean"], b["train_time_s_mean"], lambda v: fmt(v, 1))
        ra, rb = acc_a.result if acc_a.values else None, acc_b.result if acc_b.values else None
        add("training images/s (end to end)", ra and ra.images_per_s_mean,
            rb and rb.images_per_s_mean, lambda v: fmt(v, 1))  # fmt: skip
    else:
        trained = ", ".join(f"{n} at {r.spec.image_size}" for n, r in (("googlenet", acc_a), ("googlenet28", acc_b)) if r)  # fmt: skip
        add("test accuracy", None, None, None, why=f"not both trained at {size} ({trained or 'no accuracy records'})")  # fmt: skip
    for label, metric, mode, key, digits in (
        ("latency b1 ms", "latency", "inference", "latency_ms_p50", 2),
        ("peak memory training MiB", "memory", "train", "measured_bytes", 0),
    ):
        ours = ok_records(frames.mine("googlenet28"), metric, mode=mode, image_size=size)
        theirs = {r.spec.batch_size: r for r in ok_records(frames.mine("googlenet"), metric, mode=mode, image_size=size)}  # fmt: skip
        both = [r for r in ours if r.spec.batch_size in theirs and (metric != "latency" or r.spec.batch_size == 1)]  # fmt: skip
        if not both:
            measured = sorted({r.spec.image_size for r in ok_records(frames.mine("googlenet"), metric, mode=mode)})  # fmt: skip
            add(label, None, None, None,
                why=f"no same-input measurement: googlenet measured at {', '.join(map(str, measured)) or 'no size'} only")  # fmt: skip
            continue
        rb_, ra_ = both[-1], theirs[both[-1].spec.batch_size]
        scale = 2**20 if metric == "memory" else 1
        add(label, getattr(ra_.result, key), getattr(rb_.result, key),
            lambda v, d=digits, s=scale: fmt(v, d, scale=s))  # fmt: skip
    section.add_table(f"googlenet against googlenet28, both at {size}x{size}", rows)
    section.answer = _native_28_answer(size, ga, b["gmacs"], acc_a if same_acc else None,
                                       acc_b if same_acc else None)  # fmt: skip
    return section


def _native_28_answer(size: int, ga, gb, acc_a, acc_b) -> str:
    """Counts first (exact), then the accuracy difference only as far as the seeds resolve it."""
    parts = []
    if ga is not None and gb is not None:
        parts.append(
            f"At {size}x{size} googlenet28 needs {gb:.3f} GMACs per image, {_ratio(gb, ga)} "
            f"googlenet's {ga:.3f}"
            + (": its stem keeps a 14x14 map where googlenet's shrinks the input to 7x7." if gb > ga else ".")
        )  # fmt: skip
    if acc_a is None or acc_b is None:
        parts.append(f"These runs hold no like-with-like comparison of accuracy at {size}x{size}.")
        return " ".join(parts)
    judged = accuracy_change(result_of(acc_a), result_of(acc_b))
    if judged is None:
        parts.append("No accuracy to compare: a training did not finish a seed.")
    elif judged.significant:
        parts.append(
            f"Trained at {size}x{size} with the same recipe, googlenet28's test accuracy is "
            f"{judged.verdict} by {points(judged.difference)} (95% CI {100 * judged.low:+.1f} to "
            f"{100 * judged.high:+.1f} pp over {judged.seeds[0]} and {judged.seeds[1]} seeds)."
        )
    else:
        rb = result_of(acc_b)
        mean_a, mean_b = judged.means
        test = stats.binomial_interval(mean_b, rb.test_images) if rb.test_images else None
        parts.append(
            f"Their accuracies ({mean_b:.3f} and {mean_a:.3f}, "
            f"{points(judged.difference)}) are not resolved: {judged.why or 'the interval over seeds includes no change'}"
            + (f"; the test set alone spreads ±{100 * (test.high - test.low) / 2:.1f} pp, and "
               "seeds spread more." if judged.low is None and test is not None else ".")
        )  # fmt: skip
    return " ".join(parts)


def _no_facts(section: Section, frames: Frames) -> bool:
    if not frames.facts:
        section.sentences.append("No model in these runs has both params and flops records.")
    return not frames.facts


def exercise4(frames: Frames) -> Section:
    """Exercise 4: where the parameters sit, and how NiN and GoogLeNet cut them."""
    section = Section(
        "Exercise 4 — parameter sizes, and how NiN and GoogLeNet cut them",
        "Parameters by where they sit, counted from each model's records at its own input (fp32 "
        "bytes: 4 per parameter).",
    )
    if _no_facts(section, frames):
        return section
    facts = frames.facts
    rows = [{
        "model": model, "input": f.image_size, "parameters": fmt(f.params),
        "MiB (fp32)": fmt(f.param_bytes, 1, scale=2**20), "in convolutions": fmt(f.conv_params),
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
    pooled = [(m, f) for m, f in facts.items() if f.global_pool and m != heaviest]
    answer = (
        f"{heaviest} holds {top.params / 1e6:.1f}M parameters, {100 * top.linear_share:.0f}% of "
        "them in fully connected layers."
    )
    if pooled:
        answer += (
            " Global average pooling replaces that head: "
            + ", ".join(f"{m} has {f.params / 1e6:.2f}M ({top.params / f.params:.0f}x fewer)" for m, f in pooled[:3])
            + ", with 1x1 convolutions reducing channels before the wider kernels."
        )  # fmt: skip
    section.answer = answer
    return section


def _pairs(frames: Frames) -> list[tuple[str, ModelFacts, ModelFacts]]:
    """(label, alexnet, googlenet) facts: at the chapter's (own) sizes, and at equal resolution
    where both have flops records at that size."""
    found = []
    a, g = frames.facts.get("alexnet"), frames.facts.get("googlenet")
    if a and g:
        found.append(("at the chapter's sizes", a, g))
    a2, g2 = (frames.facts_at(m, EQUAL_RESOLUTION) for m in ("alexnet", "googlenet"))
    if a2 and g2 and (not (a and g) or (a.image_size, g.image_size) != (a2.image_size, g2.image_size)):
        found.append((f"at equal resolution ({EQUAL_RESOLUTION}x{EQUAL_RESOLUTION})", a2, g2))
    return found


def _other_share(frames: Frames, model: str) -> tuple[float | None, int | None]:
    r = first_ok(frames.mine(model), "roofline", image_size=frames.sizes.get(model))
    return (r.result.other_time_share, r.spec.batch_size) if r else (None, None)


def exercise5(frames: Frames, batches: tuple[int, ...] = (1, 128)) -> Section:
    """Exercise 5: what GoogLeNet and AlexNet ask of an accelerator, per image and per layer, at
    the chapter's sizes and at equal resolution."""
    section = Section(
        "Exercise 5 — computation of GoogLeNet vs AlexNet, and what it asks of an accelerator",
        "Per image, forward pass, fp32, at each model's own input and — where the run counted it "
        f"— at equal resolution ({EQUAL_RESOLUTION}x{EQUAL_RESOLUTION}). MACs from fvcore (one "
        "fused multiply-add = 1); FLOPs = 2 x MACs. Forward outputs per image: every counted "
        "layer's output, summed. Bytes moved: each layer reads its input and weights and writes "
        "its output (weights read once per batch). Arithmetic intensity = FLOPs / bytes moved. "
        "Working set of a layer = its input + output + weights.",
    )
    if _no_facts(section, frames):
        return section
    facts = frames.facts
    rows = []
    listed = [(m, f, "own") for m, f in facts.items()]
    for model in facts:
        extra = frames.facts_at(model, EQUAL_RESOLUTION)
        if extra is not None and extra.image_size != facts[model].image_size:
            listed.append((model, extra, "equal resolution"))
    for model, f, which in listed:
        row = {"model": model, "input": f"{f.image_size} ({which})", "GMACs": fmt(f.gmacs, 3),
               "parameter MiB": fmt(f.param_bytes, 1, scale=2**20),
               "forward outputs per image MiB": fmt(f.forward_output_bytes, 2, scale=2**20)}  # fmt: skip
        for b in batches:
            row[f"MiB moved b{b}"] = fmt(f.bytes_moved(b), 1, scale=2**20)
            row[f"FLOP/byte b{b}"] = fmt(f.intensity(b), 1)
        ws = f.working_set
        row["largest working set"] = f"{ws.name} {fmt(f.working_set_of(ws), 1, scale=2**20)} MiB"
        row["% MACs in 1x1 conv"] = percent(f.one_by_one_mac_share, suffix="")
        row["% MACs in conv"] = percent(f.conv_mac_share, suffix="")
        rows.append(row)
    section.add_table("Computation, memory and traffic per image", rows)
    layer_rows = []
    for model, f in facts.items():
        for lay in sorted(f.layers, key=lambda lay: -lay.macs)[:6]:
            moved = f.working_set_of(lay)
            layer_rows.append({
                "model": model, "input": f.image_size, "layer": lay.name, "type": lay.layer,
                "kernel": lay.kernel or "", "MMACs": fmt(lay.macs, 1, scale=1e6),
                "KiB moved (b1)": fmt(moved, 1, scale=1024),
                "FLOP/byte (b1)": fmt(2 * lay.macs / moved, 1) if moved else MISSING,
            })  # fmt: skip
    section.add_table("The six costliest layers of each model at its own input, batch 1", layer_rows)
    pairs = _pairs(frames)
    fp32, bf16, bw = DATASHEET_PEAKS["H100 SXM"]
    if not pairs:
        missing = [m for m in ("alexnet", "googlenet") if m not in facts]
        section.sentences.append(
            f"The comparison needs both alexnet and googlenet; these runs lack {', '.join(missing)}."
        )
        return section

    def sizes(a, g):
        return f"googlenet at {g.image_size}x{g.image_size}, alexnet at {a.image_size}x{a.image_size}"

    comp = "; ".join(
        f"{label}{'' if label.startswith('at equal') else f' ({sizes(a, g)})'} googlenet needs {g.gmacs:.3f} GMACs per image, "
        f"{_ratio(g.gmacs, a.gmacs)} alexnet" + (f"'s ({a.gmacs:.3f})" if g.gmacs >= a.gmacs else f" ({a.gmacs:.3f})")
        for label, a, g in pairs
    )  # fmt: skip
    outputs = "; ".join(
        f"{label} {a.forward_output_bytes / 2**20:.2f} MiB for alexnet and "
        f"{g.forward_output_bytes / 2**20:.2f} MiB for googlenet ({g.forward_output_bytes / a.forward_output_bytes:.1f}x), "
        f"outweighing the weights from batch {a.crossover} and {g.crossover}"
        for label, a, g in pairs
    )  # fmt: skip
    intensity = "; ".join(
        f"{label} alexnet does {a.intensity(1):.1f} FLOPs per byte moved at batch 1 and "
        f"{a.intensity(128):.1f} at batch 128, googlenet {g.intensity(1):.1f} and {g.intensity(128):.1f}"
        for label, a, g in pairs
    )  # fmt: skip
    cache = "; ".join(
        f"{label} {a.working_set.name} in alexnet ({a.working_set_of(a.working_set) / 2**20:.1f} MiB) "
        f"and {g.working_set.name} in googlenet ({g.working_set_of(g.working_set) / 2**20:.1f} MiB)"
        for label, a, g in pairs
    )  # fmt: skip
    _, a0, g0 = pairs[0]
    share_g, batch_g = _other_share(frames, "googlenet")
    share_a, batch_a = _other_share(frames, "alexnet")
    measured = ""
    if share_g is not None and share_a is not None:
        measured = (
            f" Measured (roofline profile): {100 * share_g:.0f}% of googlenet's forward time at "
            f"batch {batch_g} is spent outside convolution and linear layers, against "
            f"{100 * share_a:.0f}% for alexnet at batch {batch_a}."
        )
    section.sentences += [
        f"Computation: {comp}: the amount of computation an accelerator must supply per image.",
        f"Memory size: alexnet's weights take {a0.param_bytes / 2**20:.0f} MiB against googlenet's "
        f"{g0.param_bytes / 2**20:.0f} MiB, while their forward outputs per image are: {outputs}: "
        "googlenet's memory need is set by batch size and resolution rather than by its weights.",
        f"Memory bandwidth: {intensity}. The H100 SXM data sheet gives {fp32:.0f} TFLOP/s fp32 and "
        f"{bw} TB/s, a ridge point of {fp32 / bw:.0f} FLOP/byte (bf16 tensor cores: {bf16 / bw:.0f}); "
        "below it a layer waits on memory.",
        f"Cache size: the largest single-layer working set is, {cache}: an on-chip buffer of that "
        "size keeps a whole layer resident.",
        f"Specialized operations: {100 * g0.conv_mac_share:.0f}% of googlenet's MACs are "
        f"convolutions and {100 * g0.one_by_one_mac_share:.0f}% are 1x1 convolutions, which are "
        f"plain matrix multiplications (alexnet: {100 * a0.conv_mac_share:.0f}% convolutions, "
        f"{100 * a0.one_by_one_mac_share:.0f}% 1x1) — matrix units serve both; googlenet's many "
        "small branches, concatenations and 3x3/1 max-pools add memory traffic with no MACs."
        + measured,
    ]  # fmt: skip
    answer = []
    eq = next(((a, g) for label, a, g in pairs if label.startswith("at equal")), None)
    if eq:
        a, g = eq
        answer.append(
            f"At equal resolution ({a.image_size}x{a.image_size}) googlenet needs "
            f"{g.gmacs / a.gmacs:.2f}x alexnet's MACs ({g.gmacs:.3f} against {a.gmacs:.3f} GMACs) and "
            f"{g.forward_output_bytes / a.forward_output_bytes:.1f}x its forward outputs per image, "
            f"at {g.intensity(1):.1f} against {a.intensity(1):.1f} FLOP/byte at batch 1; the "
            f"chapter's comparison (googlenet at {g0.image_size}, alexnet at {a0.image_size}: "
            f"{a0.gmacs / g0.gmacs:.1f}x fewer MACs) owes its saving to the smaller input."
        )
    else:
        answer.append(
            f"At the chapter's sizes googlenet ({g0.image_size}x{g0.image_size}) needs "
            f"{g0.gmacs:.3f} GMACs per image against alexnet's {a0.gmacs:.3f} "
            f"({a0.image_size}x{a0.image_size}) and {g0.forward_output_bytes / a0.forward_output_bytes:.1f}x "
            "its forward outputs per image; these runs counted no equal-resolution pair."
        )
    if measured:
        answer.append(
            f"Measured, {100 * share_g:.0f}% of googlenet's forward time goes outside convolution "
            f"and linear layers against {100 * share_a:.0f}% for alexnet: the strongest argument in "
            "this run for fused and specialised operations (concatenation, pooling, small kernels)."
        )
    section.answer = " ".join(answer)
    return section


def _probe_rows(frames: Frames) -> list[dict]:
    """One row per distinct set of peaks: each probe, the data sheet with its source and factors."""
    rows, seen = [], set()
    for r in ok_records(frames.records, "roofline"):
        p = r.result.peaks
        key = (p.device, p.dtype, p.peak_flops, p.peak_bytes_per_s)
        if key in seen:
            continue
        seen.add(key)
        probes = p.probes or {f"matmul {p.matmul_n}": p.matmul_flops, "convolution": p.conv_flops}
        factors = p.datasheet_factors or {}
        rows.append({
            "device": p.device, "dtype": p.dtype,
            "probes GFLOP/s": "; ".join(f"{k} {fmt(v, 1, scale=1e9)}" for k, v in probes.items()),
            "measured peak GFLOP/s (best probe)": fmt(p.peak_flops, 1, scale=1e9),
            "measured GB/s (copy)": fmt(p.peak_bytes_per_s, 1, scale=1e9),
            "data-sheet GFLOP/s": fmt(p.datasheet_flops, 1, scale=1e9),
            "data-sheet GB/s": fmt(p.datasheet_bytes_per_s, 1, scale=1e9),
            "data-sheet source": p.datasheet_source or MISSING,
            "data-sheet factors": ", ".join(f"{k} {v}" for k, v in factors.items()) or MISSING,
            "best probe / data sheet": (
                MISSING if not p.datasheet_flops else
                f"{p.peak_flops / p.datasheet_flops:.2f}"
                + (" (data sheet underestimated)" if sheet_below_probe(p) else "")
            ),
        })  # fmt: skip
    return rows


def _outside(v) -> str:
    """The share of the forward pass outside conv/linear layers, and whether the profiler's own
    cost is out of it (records before profiled_ms kept it in)."""
    text = percent(v.other_time_share, suffix="")
    return text if v.profiled_ms is not None or text == MISSING else f"{text} (profiler included)"


def _bounds(v) -> dict[str, int]:
    counts = {"compute": 0, "memory": 0, "overhead": 0}
    for lay in v.layers:
        if lay.achieved_flops:
            counts[lay.bound_at(v.ridge_flop_per_byte)] += 1
    return counts


def rooflines(frames: Frames) -> Section:
    """Exercise 5, measured: per-layer rooflines and MFU; a roof that something ran above is an
    underestimate, and says so."""
    section = Section(
        "Exercise 5, measured — rooflines",
        "Per convolution and linear layer of a forward pass: time from torch.profiler, MACs from "
        "fvcore, bytes from the layer's input, output and weights. Peaks measured on the device at "
        "the median iteration, as every latency (compute: the best of a large matmul and unpadded "
        "3x3 and 5x5 convolutions, counting only taps on real data; bandwidth: a large copy); the "
        "data-sheet roof beside them where every factor is known (on a CPU: its maximum clock). "
        "MFU = the work of one forward pass over its median time in the latency table (the same "
        "batch), over the measured peak. A layer is memory- or compute-bound only when it reaches "
        f"at least {100 * NEAR_ROOF:.0f}% of that roof at its intensity; far below both roofs it is "
        "overhead-bound (launches, framework, small shapes). Time outside conv/linear layers is "
        "taken of the unprofiled pass, the profiler's own cost spread over its ranges and taken "
        f"out. A model or layer above the measured roof means the probes underestimate the machine: "
        f"MFU is then '{ABOVE_ROOF}', never a number above 100%.",
        figure="roofline",
    )
    rows, above, any_under = [], [], False
    records = ok_records(frames.records, "roofline")
    uses = {r.spec.model: utilization(frames.records, r) for r in records}
    for r in records:
        v, use = r.result, uses[r.spec.model]
        timed = [lay for lay in v.layers if lay.achieved_flops]
        over = [lay for lay in timed if lay.above_compute_roof(v.peak_flops)]
        under = above_roof(v) or use.mfu > 1
        any_under |= under
        above += [(r.spec.model, lay) for lay in over]
        bounds = _bounds(v)
        rows.append({
            "model": r.spec.model, "batch": r.spec.batch_size, "device": r.spec.device,
            "forward ms (latency median)": fmt(use.forward_ms, 2),
            "achieved GFLOP/s": fmt(use.achieved_flops, 1, scale=1e9),
            "peak GFLOP/s (measured)": fmt(v.peak_flops, 1, scale=1e9),
            "peak GB/s (measured)": fmt(v.peak_bytes_per_s, 1, scale=1e9),
            "ridge FLOP/byte": fmt(v.ridge_flop_per_byte, 1), "MFU %": utilization_text(use.mfu, under, suffix=""),
            "layers above the roof": f"{len(over)} of {len(timed)}",
            "compute / memory / overhead-bound layers": f"{bounds['compute']} / {bounds['memory']} / {bounds['overhead']}",
            "time outside conv/linear %": _outside(v),
        })  # fmt: skip
    section.add_table("Model FLOPs utilization and peaks", rows,
                      "No roofline records in these runs (metric roofline).")  # fmt: skip
    section.add_table("The peaks behind the roof: every probe, and the data sheet", _probe_rows(frames))  # fmt: skip
    sources = sorted({u.source for u in uses.values()})
    if sources:
        section.sentences.append(f"Forward time behind each MFU: {'; '.join(sources)}.")
    if not records:
        return section
    if any_under:
        worst = sorted(above, key=lambda ml: -ml[1].achieved_flops / ml[1].roof_flops)
        named = ", ".join(
            f"{m} {lay.name} ({lay.achieved_flops / 1e9:.0f} GFLOP/s against a roof of "
            f"{lay.roof_flops / 1e9:.0f})" for m, lay in worst[:6]
        )  # fmt: skip
        section.warning = (
            "The measured roof is underestimated: "
            + (f"{len(above)} layer(s) ran above it — {named}{' …' if len(worst) > 6 else ''}. " if above
               else "a model's achieved FLOP/s is above it. ")
            + "The probes do not reach this machine's peak; MFU above the roof is not shown as a "
            "number, and every 'fraction of roof' here is a lower bound on the true headroom."
        )  # fmt: skip
    section.answer = _rooflines_answer(records, uses, above, any_under)
    return section


def _rooflines_answer(records, uses, above, any_under) -> str:
    answer = []
    mfus = [(r.spec.model, uses[r.spec.model].mfu) for r in records
            if not above_roof(r.result) and uses[r.spec.model].mfu <= 1]  # fmt: skip
    if mfus:
        lo, hi = min(mfus, key=lambda m: m[1]), max(mfus, key=lambda m: m[1])
        spread = (f"ranges from {100 * lo[1]:.0f}% ({lo[0]}) to {100 * hi[1]:.0f}% ({hi[0]})"
                  if len(mfus) > 1 else f"is {100 * lo[1]:.0f}% ({lo[0]})")  # fmt: skip
        answer.append(f"MFU {spread} of the measured peak"
                      + (" — upper bounds, as the true peak is higher." if any_under else "."))  # fmt: skip
    if any_under:
        names = sorted({m for m, _ in above} | {r.spec.model for r in records if above_roof(r.result)})
        answer.append(f"The measured roof is underestimated — {', '.join(names)} ran above it in "
                      "places — so it bounds nothing there and those MFUs are not shown as numbers.")  # fmt: skip
    counts = {"compute": 0, "memory": 0, "overhead": 0}
    for r in records:
        for k, n in _bounds(r.result).items():
            counts[k] += n
    total = sum(counts.values())
    if total:
        answer.append(
            f"Of {total} timed layers, {counts['compute']} are compute-bound, {counts['memory']} "
            f"memory-bound and {counts['overhead']} reach less than {100 * NEAR_ROOF:.0f}% of either "
            "roof: overhead-bound."
        )
    low_sheet = [r.result.peaks for r in records if r.result.peaks and sheet_below_probe(r.result.peaks)]
    if low_sheet:
        p = low_sheet[0]
        answer.append(
            f"The data-sheet roof ({p.datasheet_flops / 1e9:.0f} GFLOP/s) lies below what the "
            f"probes measured ({p.peak_flops / 1e9:.0f}): one of its factors is low "
            f"({_sheet_suspect(p)}), so it is not an upper bound here and no utilization is "
            "given against it."
        )
    return " ".join(answer)


def sheet_below_probe(p) -> bool:
    """The data-sheet figure is below a measured probe: a factor of it is wrong, not the probe."""
    return bool(p.datasheet_flops) and p.peak_flops > p.datasheet_flops


def _sheet_suspect(p) -> str:
    source = (p.datasheet_factors or {}).get("clock_source", "")
    if "nominal" in str(source):
        return f"the clock is {source}, and the CPU boosts above it"
    if p.datasheet_factors:
        return "see the factors below"
    return f"{p.datasheet_source or 'the data sheet'} describes another part or clock"


def _exposed(p) -> str:
    """One rank communicates nothing; a negative difference of medians is noise, not a time."""
    if p.world_size == 1:
        return "— (1 rank)"
    if p.exposed_comm_ms < 0:
        return f"≈0 (−{-p.exposed_comm_ms:.1f}, within noise)"
    return fmt(p.exposed_comm_ms, 1)


def _comm_verdict(p) -> str:
    """Exposed communication against the ring all-reduce's bandwidth prediction."""
    if p.exposed_comm_ms > 1.3 * p.predicted_comm_ms:
        return "above what bandwidth alone predicts: per-message latency and synchronisation add to it"
    if p.exposed_comm_ms >= 0.7 * p.predicted_comm_ms:
        return "close to the bandwidth bound"
    return "below it: the buckets' overlap with backward hides part of it"


def _compute_change(v, p) -> str:
    one = next((q for q in v.points if q.kind == p.kind and q.world_size == 1), None)
    return change(p.local_step_ms_p50 / one.local_step_ms_p50 - 1) if one else MISSING


def _efficiency_interval(v, p) -> tuple[float, float]:
    """Bounds of ``p``'s efficiency from the 95% intervals of its median step and of the median
    step at one rank; unbounded when an interval is missing (each world size is timed in one
    process, which holds no interval between processes): no ordering is then claimed."""
    one = next((q for q in v.points if q.kind == p.kind and q.world_size == 1), None)
    parts = (p.step_ms_ci_low, p.step_ms_ci_high, getattr(one, "step_ms_ci_low", None),
             getattr(one, "step_ms_ci_high", None))  # fmt: skip
    if one is None or any(x is None for x in parts):
        return -math.inf, math.inf
    return (p.efficiency * p.step_ms_p50 / p.step_ms_ci_high * one.step_ms_ci_low / one.step_ms_p50,
            p.efficiency * p.step_ms_p50 / p.step_ms_ci_low * one.step_ms_ci_high / one.step_ms_p50)  # fmt: skip


def _bytes_verdict(best: list) -> str:
    """Do gradient bytes order the efficiencies? "yes" only when every network with more bytes
    is less efficient beyond both intervals, "no" when one with more bytes is more efficient
    beyond them, else "noise"."""
    ranked = sorted(best, key=lambda t: t[1].grad_bytes)
    bounds = [_efficiency_interval(v, p) for _, v, p in ranked]
    pairs = [(bounds[i], bounds[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))
             if ranked[i][1].grad_bytes < ranked[j][1].grad_bytes]  # fmt: skip
    if any(more[0] > fewer[1] for fewer, more in pairs):
        return "no"
    if pairs and all(fewer[0] > more[1] for fewer, more in pairs):
        return "yes"
    return "noise"


def _scaling_answer(best: list) -> str:
    """From (model, result, its weak point at the largest world size): who scales, and whether
    gradient bytes alone (exercise 4's parameters) order them beyond the noise."""
    best = sorted(best, key=lambda t: -t[2].efficiency)
    w = best[0][2].world_size
    listed = "; ".join(
        f"{m} {100 * p.efficiency:.0f}% ({v.grad_bytes / 2**20:.1f} MiB of gradients, "
        f"{p.local_step_ms_p50:.0f} ms of compute per step)" for m, v, p in best
    )
    out = [f"Weak scaling to {w} ranks ({best[0][1].backend}): {listed}."]
    if len(best) > 1:
        share = ", ".join(
            f"{m} {100 * max(p.exposed_comm_ms, 0) / p.step_ms_p50:.0f}%" for m, _, p in best
        )
        compute = ", ".join(f"{m} {_compute_change(v, p)}" for m, v, p in best)
        costs = (
            f"Exposed communication as a share of the step: {share}; compute per step at {w} "
            f"ranks against 1 (the no_sync step): {compute}."
        )
        verdict = _bytes_verdict(best)
        if verdict == "yes":
            out.append("The networks with more parameters (exercise 4) move more bytes per step "
                       "and scale worse, beyond the noise of their steps.")  # fmt: skip
        elif verdict == "no":
            out.append("Gradient bytes alone (exercise 4's parameters) do not order them here: a "
                       "network with more bytes scales better, beyond the noise of their steps.")  # fmt: skip
        else:
            out.append("Their efficiencies overlap within the noise of their steps, so this run "
                       "cannot say whether gradient bytes order them.")  # fmt: skip
        out.append(costs)
    heavy = max(best, key=lambda t: t[1].grad_bytes)
    out.append(
        f"{heavy[0]}'s exposed communication, {_exposed(heavy[2])} ms per step beyond DDP's own "
        f"{heavy[2].ddp_overhead_ms:.1f} ms at one rank, against {heavy[2].predicted_comm_ms:.1f} "
        f"ms predicted for a ring all-reduce, is {_comm_verdict(heavy[2])}."
    )
    return " ".join(out)


def scaling(frames: Frames) -> Section:
    """Data-parallel scaling: efficiency per world size, gradient bytes against compute, and
    which networks scale — exercise 4's parameter counts as exercise 5's interconnect traffic."""
    section = Section(
        "Scaling — data-parallel training (DDP)",
        "The training step under DistributedDataParallel, one process per rank (torch.distributed's "
        "elastic launcher), timed on rank 0 after a barrier, alternating with the same step under "
        "no_sync() (no gradient all-reduce). Weak scaling keeps the per-rank batch, strong scaling "
        "the global batch; efficiency = images/s at W ranks / (W x images/s at 1 rank), from the "
        "same unit. Exposed communication = median step − median no_sync step; predicted = a ring "
        "all-reduce, 2(W−1)/W x gradient bytes / the bus bandwidth a timed all-reduce of a large "
        "tensor reached on the same group. On a CPU each rank has one thread: W ranks, W cores.",
        figure="scaling",
    )
    records = ok_records(frames.records, "scaling")
    rows, best = [], []
    for r in records:
        v = r.result
        for p in sorted(v.points, key=lambda p: (p.kind, p.world_size)):
            rows.append({
                "model": r.spec.model, "input": r.spec.image_size, "backend": v.backend,
                "scaling": p.kind, "ranks": p.world_size, "batch per rank": p.per_rank_batch,
                "global batch": p.global_batch,
                "step ms (95% CI)": f"{fmt(p.step_ms_p50, 1)} ({fmt(p.step_ms_ci_low, 1)}–{fmt(p.step_ms_ci_high, 1)})",
                "no_sync step ms": fmt(p.local_step_ms_p50, 1),
                "images/s": fmt(p.images_per_s, 1), "speed-up": fmt(p.speedup, 2),
                "efficiency %": percent(p.efficiency, suffix=""),
                "gradient MiB / step": fmt(v.grad_bytes / 2**20, 1),
                "exposed comm ms": _exposed(p),
                "predicted comm ms": fmt(p.predicted_comm_ms, 1),
            })  # fmt: skip
        weak = [p for p in v.points if p.kind == "weak" and p.world_size > 1]
        if weak:
            top = max(weak, key=lambda p: p.world_size)
            best.append((r.spec.model, v, top))
    section.add_table("Scaling: every world size, weak and strong", rows,
                      "No scaling records in these runs (metric scaling, e.g. --metrics scaling).")  # fmt: skip
    if best:
        section.answer = _scaling_answer(best)
    return section


def sections(frames: Frames) -> list[Section]:
    """Every exercise section, in report order."""
    makers = (lineage, minimum_sizes, native_28, exercise4, exercise5, rooflines, scaling)
    return [make(frames) for make in makers]
