"""Exercise 4: where the parameters sit, and how NiN and GoogLeNet cut them.

Every number comes from a model's :class:`~.frames.ModelFacts` (its params and flops records at
its own input). Each model falls in one of three head kinds — most parameters in fully connected
layers; no fully connected layer at all; a small classifier after convolutions — and is set
against the model with the most parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Frames, ModelFacts

__all__ = ["CONV_BODY", "FC_HEAVY", "NO_FC", "ParameterSplit", "Parameters", "parameters"]

# head kinds: most parameters in fully connected layers; none at all (one channel per class and
# global average pooling); convolutions with a small fully connected classifier
FC_HEAVY, NO_FC, CONV_BODY = "fc_heavy", "no_fc", "conv_body"


@dataclass(frozen=True)
class ParameterSplit:
    """One model's parameters by where they sit (fp32 bytes: 4 per parameter)."""

    model: str
    image_size_px: int
    params: int
    param_bytes: int
    conv_params: int
    linear_params: int
    linear_share: float  # of params, in fully connected layers
    one_by_one_share: float  # of params, in 1x1 convolutions
    largest_name: str  # the layer with the most parameters
    largest_layer: str  # its class
    largest_params: int
    head_name: str  # the classifier: the last linear layer, else the last convolution
    head_layer: str
    head_params: int
    global_pool: bool  # an adaptive (global) average pooling layer feeds the classifier
    times_fewer_than_heaviest: float  # the heaviest model's params / this model's

    @property
    def largest_share(self) -> float:
        return self.largest_params / self.params if self.params else 0.0

    @property
    def kind(self) -> str:
        if self.linear_share > 0.5:
            return FC_HEAVY
        return NO_FC if self.linear_params == 0 else CONV_BODY


@dataclass(frozen=True)
class Parameters:
    """Exercise 4's finding: every model with params and flops records, in record order."""

    models: tuple[ParameterSplit, ...]
    heaviest: str | None  # the model with the most parameters

    def of_kind(self, kind: str) -> tuple[ParameterSplit, ...]:
        return tuple(m for m in self.models if m.kind == kind)

    @property
    def top(self) -> ParameterSplit | None:
        return next((m for m in self.models if m.model == self.heaviest), None)

    @property
    def pooled(self) -> tuple[ParameterSplit, ...]:
        """Models whose classifier follows global average pooling, the heaviest aside."""
        return tuple(m for m in self.models if m.global_pool and m.model != self.heaviest)


def _split(f: ModelFacts, heaviest_params: int) -> ParameterSplit:
    largest, head = f.largest, f.head
    return ParameterSplit(
        model=f.model, image_size_px=f.image_size, params=f.params, param_bytes=f.param_bytes,
        conv_params=f.conv_params, linear_params=f.linear_params, linear_share=f.linear_share,
        one_by_one_share=f.one_by_one_param_share, largest_name=largest.name,
        largest_layer=largest.layer, largest_params=largest.params, head_name=head.name,
        head_layer=head.layer, head_params=head.params, global_pool=f.global_pool,
        times_fewer_than_heaviest=heaviest_params / f.params,
    )  # fmt: skip


def parameters(frames: Frames) -> Parameters:
    """Where each model's parameters sit, against the model with the most."""
    facts = frames.facts
    if not facts:
        return Parameters((), None)
    heaviest = max(facts, key=lambda m: facts[m].params)
    top = facts[heaviest].params
    return Parameters(tuple(_split(f, top) for f in facts.values()), heaviest)
