"""Exercise 3: GoogLeNet at Fashion-MNIST's native 28x28 (googlenet28) against googlenet, both
at googlenet28's input in every row.

googlenet's counts there are those of the network it trained (``trained_counts``), else its
params/flops records at that size; a quantity with no measurement of both at that input keeps
the reason instead of a number from another size. The accuracy verdict is
``analysis.noise.accuracy_change``'s, given only when both trained at that size.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import stats
from ..results import Record
from .frames import Frames, first_ok, ok_records, relative_change, result_of, trained_counts
from .noise import AccuracyChange, accuracy_change

__all__ = [
    "NOT_TRAINED_ALIKE",
    "NO_COUNT",
    "NO_SAME_INPUT",
    "QUANTITIES",
    "Native28",
    "SameInput",
    "native_28",
]

BASE, NATIVE = "googlenet", "googlenet28"
# why a quantity has no pair: no count of googlenet at the size; the two did not both train at
# it; no latency/memory record of googlenet at it
NO_COUNT, NOT_TRAINED_ALIKE, NO_SAME_INPUT = "no count", "not trained alike", "no same input"
# every quantity a row may hold, in table order
QUANTITIES = ("parameters", "gmacs_per_image", "test_accuracy", "train_time_s",
              "train_images_per_s", "latency_ms_b1", "train_peak_bytes")  # fmt: skip
# (quantity, metric, mode, result field) of the timed rows: latency at batch 1, training memory
_TIMED = (("latency_ms_b1", "latency", "inference", "latency_ms_p50"),
          ("train_peak_bytes", "memory", "train", "measured_bytes"))  # fmt: skip


@dataclass(frozen=True)
class SameInput:
    """One quantity of googlenet and googlenet28, both at googlenet28's input."""

    quantity: str  # one of QUANTITIES
    googlenet: float | None
    googlenet28: float | None
    change: float | None  # relative; for test_accuracy the difference of fractions (pp)
    missing: str = ""  # why no pair (NO_COUNT, NOT_TRAINED_ALIKE, NO_SAME_INPUT); "" when paired
    googlenet_sizes: tuple[int, ...] = ()  # NO_SAME_INPUT: the sizes googlenet was measured at


@dataclass(frozen=True)
class Native28:
    """Exercise 3's finding."""

    measured: bool  # both models are in the records
    size_px: int | None  # googlenet28's own input: every row's
    rows: tuple[SameInput, ...] = ()
    trained_at: tuple[tuple[str, int], ...] = ()  # (model, training size) of each accuracy record
    trained_alike: bool = False  # both trained at size_px: the accuracy is compared
    accuracy: AccuracyChange | None = None  # googlenet28 against googlenet, when trained alike
    test_set_half_width: float | None = None  # googlenet28's test-set binomial 95% half width

    def row(self, quantity: str) -> SameInput | None:
        return next((r for r in self.rows if r.quantity == quantity), None)


def _paired(quantity: str, a, b, *, points: bool = False) -> SameInput:
    if a is None or b is None:
        return SameInput(quantity, a, b, None)
    return SameInput(quantity, a, b, b - a if points else relative_change(a, b))


def _counts(frames: Frames, acc_a: Record | None, size: int, native: dict) -> list[SameInput]:
    """Parameters and GMACs per image: googlenet as trained at ``size``, else counted there."""
    params, gmacs = None, None
    if acc_a is not None and acc_a.spec.image_size == size:
        params, gmacs, _ = trained_counts(frames.records, acc_a)
    if params is None and (p := first_ok(frames.records, "params", model=BASE, image_size=size)):
        params = p.result.params_total
    if gmacs is None and (f := first_ok(frames.records, "flops", model=BASE, image_size=size)):
        gmacs = f.result.gmacs
    rows = []
    for quantity, a, b in (("parameters", params, native["params"]),
                           ("gmacs_per_image", gmacs, native["gmacs"])):  # fmt: skip
        rows.append(SameInput(quantity, None, None, None, NO_COUNT) if a is None or b is None
                    else _paired(quantity, a, b))  # fmt: skip
    return rows


def _trained(base: dict, native: dict, acc_a: Record, acc_b: Record) -> list[SameInput]:
    """Accuracy (a difference), training time and end-to-end training throughput."""
    ra, rb = result_of(acc_a), result_of(acc_b)
    return [
        _paired("test_accuracy", base["test_accuracy_mean"], native["test_accuracy_mean"],
                points=True),
        _paired("train_time_s", base["train_time_s_mean"], native["train_time_s_mean"]),
        _paired("train_images_per_s", ra and ra.images_per_s_mean, rb and rb.images_per_s_mean),
    ]  # fmt: skip


def _timed(frames: Frames, size: int) -> list[SameInput]:
    """Latency at batch 1 and training peak memory at the largest batch both measured at
    ``size``; where googlenet has none there, the sizes it was measured at."""
    rows = []
    for quantity, metric, mode, key in _TIMED:
        ours = ok_records(frames.mine(NATIVE), metric, mode=mode, image_size=size)
        base = ok_records(frames.mine(BASE), metric, mode=mode)
        theirs = {r.spec.batch_size: r for r in base if r.spec.image_size == size}
        both = [r for r in ours if r.spec.batch_size in theirs
                and (metric != "latency" or r.spec.batch_size == 1)]  # fmt: skip
        if not both:
            measured = tuple(sorted({r.spec.image_size for r in base}))
            rows.append(SameInput(quantity, None, None, None, NO_SAME_INPUT, measured))
            continue
        b = both[-1]
        a = theirs[b.spec.batch_size]
        rows.append(_paired(quantity, getattr(a.result, key), getattr(b.result, key)))
    return rows


def _half_width(judged: AccuracyChange | None, acc_b: Record) -> float | None:
    """The test set's own binomial 95% half width around googlenet28's mean accuracy."""
    rb = result_of(acc_b)
    if judged is None or rb is None or not rb.test_images:
        return None
    test = stats.binomial_interval(judged.means[1], rb.test_images)
    return (test.high - test.low) / 2


def native_28(frames: Frames) -> Native28:
    """googlenet28 against googlenet, every quantity at googlenet28's own input."""
    base, native = frames.row(BASE), frames.row(NATIVE)
    if base is None or native is None:
        return Native28(measured=False, size_px=None)
    size = native["image_size"]
    acc_a, acc_b = (next((r for r in frames.mine(m) if r.metric == "accuracy"), None)
                    for m in (BASE, NATIVE))  # fmt: skip
    trained_at = tuple((r.spec.model, r.spec.image_size) for r in (acc_a, acc_b) if r)
    alike = (acc_a is not None and acc_b is not None
             and acc_a.spec.image_size == acc_b.spec.image_size == size)  # fmt: skip
    rows = _counts(frames, acc_a, size, native)
    if alike:
        rows += _trained(base, native, acc_a, acc_b)
    else:
        rows.append(SameInput("test_accuracy", None, None, None, NOT_TRAINED_ALIKE))
    rows += _timed(frames, size)
    judged = accuracy_change(result_of(acc_a), result_of(acc_b)) if alike else None
    return Native28(
        measured=True, size_px=size, rows=tuple(rows), trained_at=trained_at,
        trained_alike=alike, accuracy=judged,
        test_set_half_width=_half_width(judged, acc_b) if alike else None,
    )  # fmt: skip
