"""Exercise 3: GoogLeNet at Fashion-MNIST's native 28x28 against googlenet, at one input."""

from __future__ import annotations

import math

import pandas as pd

from ... import stats
from ...analysis.frames import (
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
from ...analysis.noise import MIN_SEEDS, accuracy_change
from ...results.types import NEAR_ROOF
from ..fmt import ABOVE_ROOF, MISSING, accuracy, change, fmt, percent, points
from ..fmt import utilization as utilization_text
from .. import verdicts
from .common import DATASHEET_PEAKS, Section, _no_facts, _ratio


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
            f"{points(judged.difference)}) are not resolved: {verdicts.not_called_why(judged)}"
            + (f"; the test set alone spreads ±{100 * (test.high - test.low) / 2:.1f} pp, and "
               "seeds spread more." if judged.low is None and test is not None else ".")
        )  # fmt: skip
    return " ".join(parts)

