"""Exercise 1: the GoogLeNet variants as a lineage, each against its parent.

Every number comes from ``Frames.lineage`` (one row per variant whose parent was measured); this
module only decides, per number, whether the pair may be compared (like with like: one input
size, one training size for accuracy) and keeps the verdicts that ``analysis.noise`` reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .frames import LINEAGE_FIELDS, Frames
from .noise import MIN_SEEDS, AccuracyChange, Change, Control, MemoryChange

__all__ = ["JUDGED_FIELDS", "Compared", "Lineage", "LineagePair", "lineage"]

# the LINEAGE_FIELDS keys that get a verdict beside their change (parameters and GMACs are exact
# counts: their change needs no noise rule)
JUDGED_FIELDS = ("latency_ms_p50_b1", "train_images_per_s", "train_memory_bytes",
                 "test_accuracy_mean")  # fmt: skip


@dataclass(frozen=True)
class Compared:
    """One LINEAGE_FIELDS number of a variant beside its parent's."""

    key: str  # a LINEAGE_FIELDS key
    value: Any  # the variant's (None: not measured)
    parent_value: Any
    change: float | None  # relative, or a difference of fractions for a points field
    comparable: bool  # like with like: same input (same training size), or size-independent
    judged: bool  # one of JUDGED_FIELDS: a verdict column exists for it
    verdict: Change | MemoryChange | AccuracyChange | None  # analysis.noise's, where it judged

    @property
    def called(self) -> bool:
        """A change the run resolves (beyond its noise)."""
        return self.verdict is not None and self.verdict.significant


@dataclass(frozen=True)
class LineagePair:
    """A variant against its parent, measured in the same runs."""

    variant: str
    parent: str
    input_px: int | None
    parent_input_px: int | None
    alike: bool  # both measured at one input size
    trained_alike: bool  # both trained at one size
    accuracy_status: str | None  # the variant's accuracy record status
    parent_accuracy_status: str | None
    seeds: int  # finished seeds of the side with fewer
    train_batch: int | None  # the batch of the training-throughput comparison
    values: tuple[Compared, ...]  # in LINEAGE_FIELDS order

    def of(self, key: str) -> Compared:
        return next(c for c in self.values if c.key == key)


@dataclass(frozen=True)
class Lineage:
    """Exercise 1's finding: every pair, the noise control beside them, the seeds rule."""

    pairs: tuple[LineagePair, ...]
    control: Control | None  # googlenet_ls / googlenet; None where the pair was not measured
    min_seeds: int = MIN_SEEDS  # finished seeds a side an accuracy call needs

    @property
    def called(self) -> tuple[tuple[LineagePair, Compared], ...]:
        """Every resolved change, pair by pair, in LINEAGE_FIELDS order."""
        return tuple((p, c) for p in self.pairs for c in p.values if c.called)

    @property
    def judged(self) -> int:
        """How many changes got a verdict (resolved or not)."""
        return sum(c.verdict is not None for p in self.pairs for c in p.values)

    @property
    def unlike(self) -> tuple[LineagePair, ...]:
        """Pairs measured at different inputs: numbers, no size-dependent verdict."""
        return tuple(p for p in self.pairs if not p.alike)

    @property
    def fewest_seeds(self) -> int | None:
        """The fewest finished seeds of any pair that trained at all; None without training."""
        return min((p.seeds for p in self.pairs if p.seeds), default=None)

    @property
    def train_batches(self) -> tuple[int, ...]:
        return tuple(sorted({p.train_batch for p in self.pairs if p.train_batch is not None}))


def _compared(row: dict, key: str) -> Compared:
    field = LINEAGE_FIELDS[key]
    like = row["trained_alike"] if field.points else row["alike"]
    return Compared(
        key=key, value=row[key], parent_value=row[f"{key} parent"], change=row[f"{key} change"],
        comparable=bool(like) or not field.by_size, judged=key in JUDGED_FIELDS,
        verdict=row[f"{key} noise"],
    )  # fmt: skip


def _pair(row: dict, parent_status: str | None) -> LineagePair:
    return LineagePair(
        variant=row["variant"], parent=row["parent"], input_px=row["input"],
        parent_input_px=row["parent_input"], alike=bool(row["alike"]),
        trained_alike=bool(row["trained_alike"]), accuracy_status=row["accuracy_status"],
        parent_accuracy_status=parent_status, seeds=row["seeds"], train_batch=row["train_batch"],
        values=tuple(_compared(row, key) for key in LINEAGE_FIELDS),
    )  # fmt: skip


def lineage(frames: Frames) -> Lineage:
    """Each variant against its parent: values, changes, verdicts (``Frames.lineage``)."""
    pairs = []
    for row in frames.lineage.to_dict("records"):
        parent = frames.row(row["parent"])
        pairs.append(_pair(row, parent["accuracy_status"] if parent else None))
    return Lineage(tuple(pairs), frames.control)
