"""Exercise 2: the minimum input size of every model, and the layer that sets it.

The ``minsize`` records hold the bisection's result (``measure.shapes``): the smallest square side
a model runs on, the layer that fails one pixel below it, and the chain of size-changing layers
at the minimum. This module orders them into bounded models (a layer runs out of pixels) and
models that run on any size.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Frames, ok_records

__all__ = ["MinimumSize", "MinimumSizes", "minimum_sizes"]


@dataclass(frozen=True)
class MinimumSize:
    """One model's smallest square input."""

    model: str
    min_size_px: int
    failing_layer: str  # the layer that fails at min_size_px - 1; "" when the model runs at 1x1
    failure: str  # the error that layer raises one pixel below
    reductions: tuple[str, ...]  # "stage1.0 Conv2d 11x11/4: 65→15", every size change up to it

    @property
    def bounded(self) -> bool:
        """A layer runs out of pixels below the minimum (else the model runs even at 1x1)."""
        return bool(self.failing_layer)

    @property
    def side_at_failing_layer_px(self) -> int | None:
        """The side the failing layer receives at the minimum: the input of the chain's last
        reduction (that layer itself); None where the chain was not recorded."""
        if not (self.bounded and self.reductions):
            return None
        side = self.reductions[-1].rsplit(": ", 1)[-1].split("→")[0]
        return int(side) if side.isdigit() else None


@dataclass(frozen=True)
class MinimumSizes:
    """Exercise 2's finding: every model's minimum, in record order."""

    sizes: tuple[MinimumSize, ...]

    @property
    def bounded(self) -> tuple[MinimumSize, ...]:
        """Models a layer bounds, smallest minimum first (ties by name)."""
        return tuple(sorted((s for s in self.sizes if s.bounded),
                            key=lambda s: (s.min_size_px, s.model)))  # fmt: skip

    @property
    def unbounded(self) -> tuple[str, ...]:
        """Models that run on any size down to 1x1, in record order."""
        return tuple(s.model for s in self.sizes if not s.bounded)


def minimum_sizes(frames: Frames) -> MinimumSizes:
    """Every ok ``minsize`` record as a :class:`MinimumSize`."""
    return MinimumSizes(tuple(
        MinimumSize(r.spec.model, r.result.min_size, r.result.failing_layer, r.result.failure,
                    tuple(r.result.reductions))
        for r in ok_records(frames.records, "minsize")
    ))  # fmt: skip
