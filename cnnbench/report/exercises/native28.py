"""Exercise 3 in words: GoogLeNet at Fashion-MNIST's native 28x28 against googlenet, at one
input (the finding: ``native28``)."""

from __future__ import annotations

from ...analysis.frames import Frames
from ...analysis.native28 import NO_COUNT, NOT_TRAINED_ALIKE, Native28, SameInput
from ...analysis.native28 import native_28 as find_native_28
from .. import verdicts
from ..fmt import MISSING, accuracy, change, fmt, points
from .common import Section, _ratio

_TITLE = "Exercise 3 — GoogLeNet at Fashion-MNIST's native 28x28"
_INTRO = (
    "googlenet28 replaces only the stem: a 3x3/1 convolution and one 3x3/2 max-pool (14x14 "
    "out) instead of the 7x7/2 convolution and max-pool that bring 96x96 to 24x24; body and "
    "head are unchanged (see cnnbench/models/googlenet.py). Every row compares the two at the "
    "same input: googlenet28's own size. googlenet's counts there are those of the network "
    "it trained; a row with no measurement of both at that input says so instead of mixing "
    "sizes."
)
# quantity → (its label in the table, how a value is shown)
_SHOWN = {
    "parameters": ("parameters", fmt),
    "gmacs_per_image": ("GMACs per image", lambda v: fmt(v, 3)),
    "test_accuracy": ("test accuracy", lambda v: accuracy(v, None, None)),
    "train_time_s": ("training time s", lambda v: fmt(v, 1)),
    "train_images_per_s": ("training images/s (end to end)", lambda v: fmt(v, 1)),
    "latency_ms_b1": ("latency b1 ms", lambda v: fmt(v, 2)),
    "train_peak_bytes": ("peak memory training MiB", lambda v: fmt(v, 0, scale=2**20)),
}


def native_28(frames: Frames) -> Section:
    """Exercise 3: googlenet28 against googlenet, both at googlenet28's input in every row."""
    return section(find_native_28(frames))


def section(finding: Native28) -> Section:
    section = Section(_TITLE, _INTRO)
    if not finding.measured:
        section.sentences.append("googlenet and googlenet28 were not both measured in these runs.")
        section.summary = "googlenet and googlenet28 were not both measured: no comparison."
        return section
    size = finding.size_px
    section.add_table(f"googlenet against googlenet28, both at {size}x{size}",
                      [_row(finding, r) for r in finding.rows])  # fmt: skip
    section.answer = " ".join(filter(None, (_macs_sentence(finding), _accuracy_sentence(finding))))
    section.summary = _summary(finding)
    return section


def _missing_why(finding: Native28, r: SameInput) -> str:
    size = finding.size_px
    if r.missing == NO_COUNT:
        return f"no count of googlenet at {size} in these runs"
    if r.missing == NOT_TRAINED_ALIKE:
        trained = ", ".join(f"{m} at {s}" for m, s in finding.trained_at)
        return f"not both trained at {size} ({trained or 'no accuracy records'})"
    sizes = ", ".join(map(str, r.googlenet_sizes)) or "no size"
    return f"no same-input measurement: googlenet measured at {sizes} only"


def _row(finding: Native28, r: SameInput) -> dict:
    label, shown = _SHOWN[r.quantity]
    if r.missing:
        return {"quantity": label, "input": finding.size_px, "googlenet": MISSING,
                "googlenet28": MISSING, "change": _missing_why(finding, r)}  # fmt: skip
    diff = points(r.change) if r.quantity == "test_accuracy" else change(r.change)
    return {"quantity": label, "input": finding.size_px, "googlenet": shown(r.googlenet),
            "googlenet28": shown(r.googlenet28), "change": diff}  # fmt: skip


def _gmacs(finding: Native28) -> tuple[float, float] | None:
    """(googlenet's, googlenet28's) GMACs per image at the size, when both were counted."""
    r = finding.row("gmacs_per_image")
    if r is None or r.googlenet is None or r.googlenet28 is None:
        return None
    return r.googlenet, r.googlenet28


def _macs_sentence(finding: Native28) -> str:
    """Counts first: they are exact."""
    if (pair := _gmacs(finding)) is None:
        return ""
    ga, gb = pair
    size = finding.size_px
    stem = (": its stem keeps a 14x14 map where googlenet's shrinks the input to 7x7."
            if gb > ga else ".")  # fmt: skip
    return (f"At {size}x{size} googlenet28 needs {gb:.3f} GMACs per image, {_ratio(gb, ga)} "
            f"googlenet's {ga:.3f}{stem}")  # fmt: skip


def _accuracy_sentence(finding: Native28) -> str:
    """The accuracy difference only as far as the seeds resolve it (analysis.noise's verdict)."""
    size, judged = finding.size_px, finding.accuracy
    if not finding.trained_alike:
        return f"These runs hold no like-with-like comparison of accuracy at {size}x{size}."
    if judged is None:
        return "No accuracy to compare: a training did not finish a seed."
    if judged.significant:
        return (
            f"Trained at {size}x{size} with the same recipe, googlenet28's test accuracy is "
            f"{judged.verdict} by {points(judged.difference)} (95% CI {100 * judged.low:+.1f} to "
            f"{100 * judged.high:+.1f} pp over {judged.seeds[0]} and {judged.seeds[1]} seeds)."
        )
    mean_a, mean_b = judged.means
    half = finding.test_set_half_width
    tail = (f"; the test set alone spreads ±{100 * half:.1f} pp, and seeds spread more."
            if judged.low is None and half is not None else ".")  # fmt: skip
    return (f"Their accuracies ({mean_b:.3f} and {mean_a:.3f}, {points(judged.difference)}) "
            f"are not resolved: {verdicts.not_called_why(judged)}{tail}")  # fmt: skip


def _summary(finding: Native28) -> str:
    """The MACs ratio and the accuracy verdict at the one size, in one sentence."""
    size, judged = finding.size_px, finding.accuracy
    parts = []
    if (pair := _gmacs(finding)) is not None:
        ga, gb = pair
        parts.append(f"googlenet28 needs {gb:.3f} GMACs per image, {_ratio(gb, ga)} googlenet's "
                     f"{ga:.3f}")  # fmt: skip
    if judged is not None:
        parts.append(f"test accuracy {points(judged.difference)} ({verdicts.short(judged)})")
    elif finding.trained_alike:
        parts.append("no accuracy to compare (a training finished no seed)")
    else:
        parts.append("accuracy not compared (not both trained at this size)")
    return f"At {size}x{size}, " + "; ".join(parts or ["no quantity measured of both"]) + "."
