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

from ...analysis.frames import Frames
from ...analysis.rooflines import sheet_below_probe
from ...analysis.time_to_accuracy import NO_TARGET
from ...analysis.time_to_accuracy import time_to_accuracy as find_time_to_accuracy
from ...analysis.tricks import tricks as find_tricks
from .common import DATASHEET_PEAKS, Section, resolution_text
from .computation import exercise5
from .frontier import frontier
from .lineage import lineage
from .minsize import minimum_sizes
from .native28 import native_28
from .parameters import exercise4
from .rooflines import rooflines
from .scaling import scaling
from .time_to_accuracy import section as time_to_accuracy_section
from .tricks import section as tricks_section

__all__ = ["DATASHEET_PEAKS", "Section", "resolution_text", "sections", "sheet_below_probe"]


def sections(frames: Frames) -> list[Section]:
    """Every exercise section, in report order, then the questions beyond the chapter (a
    question that the run did not ask, such as a time to a target it set none for, is left out)."""
    makers = (lineage, minimum_sizes, native_28, exercise4, exercise5, rooflines, scaling, frontier,
              _tricks, _time_to_accuracy)  # fmt: skip
    return [s for s in (make(frames) for make in makers) if s is not None]


def _time_to_accuracy(frames: Frames) -> Section | None:
    found = find_time_to_accuracy(frames)
    return time_to_accuracy_section(found) if any(f.verdict != NO_TARGET for f in found) else None


def _tricks(frames: Frames) -> Section | None:
    found = find_tricks(frames)
    return tricks_section(found) if found.rows else None
