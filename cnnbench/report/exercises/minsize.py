"""Exercise 2 in words: the minimum input size of every model, and the layer that sets it
(the finding: ``sizes``)."""

from __future__ import annotations

from ...analysis.frames import Frames
from ...analysis.sizes import MinimumSize, MinimumSizes
from ...analysis.sizes import minimum_sizes as find_minimum_sizes
from ..fmt import MISSING, fmt
from .common import Section

_TITLE = "Exercise 2 — the minimum image size"
_INTRO = (
    "The smallest square input each model runs on, found by bisection over sizes with shape "
    "inference on the meta device (no arithmetic), and the layer that fails one pixel below "
    "it. The chain lists, at the minimum size, every layer that shrinks the map up to that one."
)


def minimum_sizes(frames: Frames) -> Section:
    """Exercise 2: the smallest square input of every model, and why."""
    return section(find_minimum_sizes(frames))


def section(finding: MinimumSizes) -> Section:
    """One table row per model, one sentence for the bounded models, the answer, the summary."""
    section = Section(_TITLE, _INTRO)
    section.add_table("Minimum input size per model", [_row(s) for s in finding.sizes],
                      "No minsize records in these runs (metric minsize).")  # fmt: skip
    if finding.bounded:
        section.sentences.append(_chain_sentence(finding.bounded))
    if finding.sizes:
        section.answer = _answer(finding)
        section.summary = _summary(finding)
    return section


def _row(s: MinimumSize) -> dict:
    return {
        "model": s.model, "minimum size": fmt(s.min_size_px),
        "fails below it": s.failing_layer or "— (runs at 1x1)",
        "side there at the minimum (px)": fmt(s.side_at_failing_layer_px),
        "size-changing layers": fmt(len(s.reductions)) if s.bounded else MISSING,
        "size chain at the minimum": "; ".join(s.reductions) or MISSING,
        "error one pixel below": s.failure if s.bounded else MISSING,
    }  # fmt: skip


def _listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _span(values: list[int]) -> str:
    """'4 to 5', or '4' when they agree."""
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo} to {hi}"


def _chain_sentence(bounded: tuple[MinimumSize, ...]) -> str:
    """The bound's mechanism, once for every bounded model; their numbers are the table's."""
    names = _listed([s.model for s in bounded])
    layers = _span([len(s.reductions) for s in bounded])
    sides = [s.side_at_failing_layer_px for s in bounded if s.side_at_failing_layer_px is not None]
    left = f"leaves {_span(sides)} pixels" if sides else "leaves a few pixels"
    return (
        f"In {names}, the downsampling chain ({layers} size-changing layers) {left} at the failing "
        "layer at the minimum size; one pixel less and that layer's window is larger than its "
        "input (the error is in the table)."
    )


def _answer(finding: MinimumSizes) -> str:
    bounded, free = finding.bounded, finding.unbounded
    parts = []
    if len(bounded) == 1:
        s = bounded[0]
        parts.append(
            f"{s.model} needs at least {s.min_size_px}x{s.min_size_px}: its chain of strides and "
            f"pools, not its classifier, sets the bound ({s.failing_layer} runs out of pixels "
            "below it)."
        )  # fmt: skip
    elif bounded:
        lo, hi = bounded[0], bounded[-1]
        parts.append(
            "The minimum input is set by each model's chain of strides and pools, not by its "
            f"classifier: from {lo.min_size_px}x{lo.min_size_px} ({lo.model}) up to "
            f"{hi.min_size_px}x{hi.min_size_px} ({hi.model}, whose {hi.failing_layer} runs out of "
            "pixels below it)."
        )  # fmt: skip
    if free:
        parts.append(
            f"{', '.join(free)} run{'s' if len(free) == 1 else ''} on any size down to 1x1: "
            "padding keeps every map at least 1x1 and global average pooling takes any size."
        )
    return " ".join(parts)


def _summary(finding: MinimumSizes) -> str:
    bounded, free = finding.bounded, finding.unbounded
    parts = []
    if bounded:
        lo, hi = bounded[0], bounded[-1]
        span = (f"{lo.min_size_px}x{lo.min_size_px} ({lo.model})" if lo is hi else
                f"from {lo.min_size_px}x{lo.min_size_px} ({lo.model}) to "
                f"{hi.min_size_px}x{hi.min_size_px} ({hi.model})")  # fmt: skip
        parts.append(f"Minimum input {span}, set by the chain of strides and pools")
    if free:
        which = free[0] if len(free) == 1 else f"{len(free)} models ({', '.join(free)})"
        parts.append(f"{which} run{'s' if len(free) == 1 else ''} on any size down to 1x1")
    return "; ".join(parts) + "."  # a model name opens it lowercase, as everywhere
