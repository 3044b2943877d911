"""Exercise 5 as a finding: what GoogLeNet and AlexNet ask of an accelerator — computation,
memory, bandwidth and cache per image and per layer, at the chapter's sizes and at equal
resolution — counted from the params and flops records (fp32, one fused multiply-add = 1 MAC,
2 FLOPs), and the batches those per-image figures are given at, taken from what the run measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import EQUAL_RESOLUTION, Frames, ModelFacts, first_ok, ok_records

__all__ = [
    "DATASHEET_PEAKS",
    "Computation",
    "CostlyLayer",
    "DataSheet",
    "FactsRow",
    "OutsideShare",
    "Pair",
    "computation",
    "measured_batches",
]

# NVIDIA data sheets (dense): (FP32 TFLOP/s, BF16 TFLOP/s, memory TB/s); see shared/REFERENCE.md
DATASHEET_PEAKS = {"H100 SXM": (67.0, 989.0, 3.35), "H200": (67.0, 989.0, 4.8)}

PAIR = ("alexnet", "googlenet")  # the two networks exercise 5 compares
COSTLY_LAYERS = 6  # layers listed per model, by MACs
SHEET_PART = "H100 SXM"  # the accelerator whose ridge point the bandwidth answer cites


@dataclass(frozen=True)
class FactsRow:
    """One model at one input: per image, fp32, at each of the finding's batches."""

    model: str
    image_size: int
    equal_resolution: bool  # counted at EQUAL_RESOLUTION besides its own (different) size
    gmacs: float
    param_bytes: int
    forward_output_bytes: int  # every counted layer's output, summed
    bytes_moved: tuple[float, ...]  # per image, one per batch (weights read once per batch)
    flop_per_byte: tuple[float, ...]  # arithmetic intensity, one per batch
    working_set_layer: str  # the layer whose input + output + weights is largest
    working_set_bytes: int
    one_by_one_mac_share: float
    conv_mac_share: float
    crossover_batch: int  # the smallest batch whose forward outputs exceed the weights


@dataclass(frozen=True)
class CostlyLayer:
    """One of a model's costliest layers at its own input, batch 1."""

    model: str
    image_size: int
    name: str
    layer_type: str
    kernel: str | None
    macs: int
    working_set_bytes: int
    flop_per_byte: float | None  # None for a layer that moves nothing


@dataclass(frozen=True)
class Pair:
    """alexnet and googlenet at one pair of inputs."""

    equal_resolution: bool  # False: each at the chapter's (its own) size
    alexnet: FactsRow
    googlenet: FactsRow

    @property
    def mac_ratio(self) -> float:
        """googlenet's MACs per image over alexnet's."""
        return self.googlenet.gmacs / self.alexnet.gmacs

    @property
    def output_ratio(self) -> float:
        """googlenet's forward outputs per image over alexnet's."""
        return self.googlenet.forward_output_bytes / self.alexnet.forward_output_bytes


@dataclass(frozen=True)
class OutsideShare:
    """Measured (roofline profile): the share of a forward pass outside conv and linear layers."""

    model: str
    share: float
    batch: int


@dataclass(frozen=True)
class DataSheet:
    """An accelerator's data-sheet peaks and the ridge points they put the roofline's knee at."""

    part: str
    fp32_tflops: float
    bf16_tflops: float
    tb_per_s: float

    @property
    def ridge_fp32(self) -> float:
        """FLOP/byte below which an fp32 layer waits on memory."""
        return self.fp32_tflops / self.tb_per_s

    @property
    def ridge_bf16(self) -> float:
        return self.bf16_tflops / self.tb_per_s


@dataclass(frozen=True)
class Computation:
    """Exercise 5's finding; ``rows`` empty when no model has both params and flops records."""

    batches: tuple[int, ...]  # the batches bytes moved and intensity are given at
    batch_models: tuple[str, ...]  # the models whose latency/memory records gave the batches
    equal_resolution: int
    rows: tuple[FactsRow, ...]  # every model at its own input, then at equal resolution
    costly_layers: tuple[CostlyLayer, ...]
    pairs: tuple[Pair, ...]  # at the chapter's sizes first, then at equal resolution
    missing: tuple[str, ...]  # of alexnet and googlenet, those without counts
    outside: tuple[OutsideShare, OutsideShare] | None  # (googlenet, alexnet), both or neither
    sheet: DataSheet


def measured_batches(frames: Frames, models: tuple[str, ...]) -> tuple[int, ...]:
    """Batch 1 and the largest batch every one of ``models`` was measured at (ok latency or
    memory records, any mode), so the per-image traffic is given at batches the run timed;
    (1,) when they share no batch above 1."""
    shared: set[int] | None = None
    for model in models:
        mine = frames.mine(model)
        sizes = {r.spec.batch_size for m in ("latency", "memory") for r in ok_records(mine, m)}
        shared = sizes if shared is None else shared & sizes
    larger = sorted(b for b in shared or () if b > 1)
    return (1, larger[-1]) if larger else (1,)


def _row(f: ModelFacts, batches: tuple[int, ...], equal: bool) -> FactsRow:
    ws = f.working_set
    return FactsRow(
        model=f.model, image_size=f.image_size, equal_resolution=equal, gmacs=f.gmacs,
        param_bytes=f.param_bytes, forward_output_bytes=f.forward_output_bytes,
        bytes_moved=tuple(f.bytes_moved(b) for b in batches),
        flop_per_byte=tuple(f.intensity(b) for b in batches),
        working_set_layer=ws.name, working_set_bytes=f.working_set_of(ws),
        one_by_one_mac_share=f.one_by_one_mac_share, conv_mac_share=f.conv_mac_share,
        crossover_batch=f.crossover,
    )  # fmt: skip


def _rows(frames: Frames, batches: tuple[int, ...]) -> tuple[FactsRow, ...]:
    """Every model at its own input, then those also counted at equal resolution."""
    own = [_row(f, batches, False) for f in frames.facts.values()]
    equal = []
    for model, f in frames.facts.items():
        extra = frames.facts_at(model, EQUAL_RESOLUTION)
        if extra is not None and extra.image_size != f.image_size:
            equal.append(_row(extra, batches, True))
    return tuple(own + equal)


def _costly_layers(frames: Frames) -> tuple[CostlyLayer, ...]:
    found = []
    for model, f in frames.facts.items():
        for lay in sorted(f.layers, key=lambda lay: -lay.macs)[:COSTLY_LAYERS]:
            moved = f.working_set_of(lay)
            found.append(CostlyLayer(
                model=model, image_size=f.image_size, name=lay.name, layer_type=lay.layer,
                kernel=lay.kernel, macs=lay.macs, working_set_bytes=moved,
                flop_per_byte=2 * lay.macs / moved if moved else None,
            ))  # fmt: skip
    return tuple(found)


def _pairs(frames: Frames, batches: tuple[int, ...]) -> tuple[Pair, ...]:
    """At the chapter's (own) sizes, and at equal resolution where both have flops records at
    that size and it is not the same pair of sizes again."""
    found = []
    a, g = (frames.facts.get(m) for m in PAIR)
    if a and g:
        found.append(Pair(False, _row(a, batches, False), _row(g, batches, False)))
    a2, g2 = (frames.facts_at(m, EQUAL_RESOLUTION) for m in PAIR)
    if a2 and g2 and (not (a and g) or (a.image_size, g.image_size) != (a2.image_size, g2.image_size)):
        found.append(Pair(True, _row(a2, batches, a2.image_size != frames.sizes.get("alexnet")),
                          _row(g2, batches, g2.image_size != frames.sizes.get("googlenet"))))  # fmt: skip
    return tuple(found)


def _outside(frames: Frames, model: str) -> OutsideShare | None:
    r = first_ok(frames.mine(model), "roofline", image_size=frames.sizes.get(model))
    if r is None or r.result.other_time_share is None:
        return None
    return OutsideShare(model, r.result.other_time_share, r.spec.batch_size)


def computation(frames: Frames) -> Computation:
    """Exercise 5: per image and per layer, at the chapter's sizes and at equal resolution."""
    pair_present = tuple(m for m in PAIR if m in frames.facts)
    batch_models = pair_present if len(pair_present) == len(PAIR) else tuple(frames.facts)
    batches = measured_batches(frames, batch_models) if batch_models else (1,)
    g, a = _outside(frames, "googlenet"), _outside(frames, "alexnet")
    return Computation(
        batches=batches, batch_models=batch_models, equal_resolution=EQUAL_RESOLUTION,
        rows=_rows(frames, batches), costly_layers=_costly_layers(frames),
        pairs=_pairs(frames, batches), missing=tuple(m for m in PAIR if m not in frames.facts),
        outside=(g, a) if g and a else None, sheet=DataSheet(SHEET_PART, *DATASHEET_PEAKS[SHEET_PART]),
    )  # fmt: skip
