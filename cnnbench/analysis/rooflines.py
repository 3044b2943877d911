"""Exercise 5, measured, as a finding: per-layer rooflines and model FLOPs utilization (MFU).

A roof that something ran above is an underestimate of the machine, never a result: such a model
is flagged (``under``) and its MFU is not a utilization. A layer is compute- or memory-bound only
when it reaches ``NEAR_ROOF`` of its roof (``LayerRoof.bound_at``), else overhead-bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..results.types import NEAR_ROOF, DevicePeaks
from .frames import Frames, above_roof, ok_records, utilization

__all__ = [
    "BOUNDS",
    "LayerAbove",
    "ModelRoof",
    "ProbeRow",
    "Rooflines",
    "rooflines",
    "sheet_below_probe",
]

BOUNDS = ("compute", "memory", "overhead")  # what bounds a layer (LayerRoof.bound_at)


@dataclass(frozen=True)
class ModelRoof:
    """One model's roofline record at its batch."""

    model: str
    batch: int
    device: str
    forward_ms: float  # the median forward pass MFU divides by
    forward_source: str  # where forward_ms comes from: "latency" or "roofline" (frames.Utilization)
    achieved_flops: float
    peak_flops: float  # measured
    peak_bytes_per_s: float  # measured
    ridge_flop_per_byte: float
    mfu: float  # not a utilization where ``under``
    under: bool  # the model or a layer ran above the measured roof: the peak is underestimated
    layers_timed: int
    layers_above: int  # timed layers above the compute roof
    bounds: tuple[int, int, int]  # compute-, memory- and overhead-bound layers (BOUNDS order)
    other_time_share: float | None  # of the forward pass, outside conv/linear layers
    profiler_included: bool  # other_time_share keeps the profiler's own cost (older records)


@dataclass(frozen=True)
class LayerAbove:
    """A layer that ran above the measured compute roof."""

    model: str
    name: str
    achieved_flops: float
    roof_flops: float


@dataclass(frozen=True)
class ProbeRow:
    """One distinct set of peaks: each probe, and the data sheet with its source and factors."""

    device: str
    dtype: str
    probes: tuple[tuple[str, float], ...]  # (probe, FLOP/s)
    peak_flops: float  # the best probe
    peak_bytes_per_s: float  # the copy probe
    datasheet_flops: float | None
    datasheet_bytes_per_s: float | None
    datasheet_source: str | None
    datasheet_factors: tuple[tuple[str, object], ...]
    probe_over_sheet: float | None  # best probe / data sheet; None without a data sheet
    sheet_below: bool  # the data sheet lies below a probe: a factor of it is wrong
    clock_source: str  # the data sheet's clock_source factor ('' where none is given)
    # which factor a data sheet below a probe most likely has wrong: "nominal_clock" (a CPU that
    # boosts above the clock it reports), "factors" (one of those listed), "part" (no factors:
    # the sheet describes another part or clock)
    sheet_suspect: str


@dataclass(frozen=True)
class Rooflines:
    """Exercise 5, measured; ``models`` empty when the run has no roofline records."""

    near_roof: float  # the fraction of a roof at which a layer is bound by it
    models: tuple[ModelRoof, ...]
    above: tuple[LayerAbove, ...]  # every layer above the roof, highest over its roof first
    probes: tuple[ProbeRow, ...]
    any_under: bool  # some model or layer ran above the measured roof
    mfu_range: tuple[ModelRoof, ModelRoof] | None  # lowest and highest MFU among models not under
    bounds: tuple[int, int, int]  # over every model's timed layers (BOUNDS order)
    low_sheet: ProbeRow | None  # the first set of peaks whose data sheet lies below a probe

    @property
    def under_models(self) -> tuple[str, ...]:
        """The models with a layer above the roof or themselves above it, sorted."""
        return tuple(sorted({lay.model for lay in self.above} | {m.model for m in self.models if m.under}))


def sheet_below_probe(p: DevicePeaks) -> bool:
    """The data-sheet figure is below a measured probe: a factor of it is wrong, not the probe."""
    return bool(p.datasheet_flops) and p.peak_flops > p.datasheet_flops


def _bounds(v) -> tuple[int, int, int]:
    """Timed layers per bound, in BOUNDS order."""
    found = [lay.bound_at(v.ridge_flop_per_byte) for lay in v.layers if lay.achieved_flops]
    return tuple(found.count(b) for b in BOUNDS)


def _model(frames: Frames, r) -> ModelRoof:
    v, use = r.result, utilization(frames.records, r)
    timed = [lay for lay in v.layers if lay.achieved_flops]
    return ModelRoof(
        model=r.spec.model, batch=r.spec.batch_size, device=r.spec.device,
        forward_ms=use.forward_ms, forward_source=use.source, achieved_flops=use.achieved_flops,
        peak_flops=v.peak_flops, peak_bytes_per_s=v.peak_bytes_per_s,
        ridge_flop_per_byte=v.ridge_flop_per_byte, mfu=use.mfu,
        under=above_roof(v) or use.mfu > 1, layers_timed=len(timed),
        layers_above=sum(lay.above_compute_roof(v.peak_flops) for lay in timed),
        bounds=_bounds(v), other_time_share=v.other_time_share,
        profiler_included=v.profiled_ms is None and v.other_time_share is not None,
    )  # fmt: skip


def _above(records) -> tuple[LayerAbove, ...]:
    found = [LayerAbove(r.spec.model, lay.name, lay.achieved_flops, lay.roof_flops)
             for r in records for lay in r.result.layers
             if lay.achieved_flops and lay.above_compute_roof(r.result.peak_flops)]  # fmt: skip
    return tuple(sorted(found, key=lambda lay: -lay.achieved_flops / lay.roof_flops))


def _sheet_suspect(factors: dict) -> str:
    if "nominal" in str(factors.get("clock_source", "")):
        return "nominal_clock"
    return "factors" if factors else "part"


def _probe_row(p: DevicePeaks) -> ProbeRow:
    probes = p.probes or {f"matmul {p.matmul_n}": p.matmul_flops, "convolution": p.conv_flops}
    factors = p.datasheet_factors or {}
    return ProbeRow(
        device=p.device, dtype=p.dtype, probes=tuple(probes.items()), peak_flops=p.peak_flops,
        peak_bytes_per_s=p.peak_bytes_per_s, datasheet_flops=p.datasheet_flops,
        datasheet_bytes_per_s=p.datasheet_bytes_per_s, datasheet_source=p.datasheet_source,
        datasheet_factors=tuple(factors.items()),
        probe_over_sheet=p.peak_flops / p.datasheet_flops if p.datasheet_flops else None,
        sheet_below=sheet_below_probe(p), clock_source=str(factors.get("clock_source", "")),
        sheet_suspect=_sheet_suspect(factors),
    )  # fmt: skip


def _probe_rows(records) -> tuple[ProbeRow, ...]:
    """One row per distinct set of peaks, in record order."""
    rows, seen = [], set()
    for r in records:
        p = r.result.peaks
        key = (p.device, p.dtype, p.peak_flops, p.peak_bytes_per_s)
        if key not in seen:
            seen.add(key)
            rows.append(_probe_row(p))
    return tuple(rows)


def _mfu_range(models: tuple[ModelRoof, ...]) -> tuple[ModelRoof, ModelRoof] | None:
    """Lowest and highest MFU among the models whose MFU is a utilization (first on ties)."""
    valid = [m for m in models if not m.under]
    if not valid:
        return None
    return min(valid, key=lambda m: m.mfu), max(valid, key=lambda m: m.mfu)


def rooflines(frames: Frames) -> Rooflines:
    """Exercise 5, measured: MFU per model, what bounds each timed layer, the peaks behind the
    roof, and whether anything ran above it."""
    records = ok_records(frames.records, "roofline")
    models = tuple(_model(frames, r) for r in records)
    probes = _probe_rows(records)
    low_sheet = [r.result.peaks for r in records if r.result.peaks and sheet_below_probe(r.result.peaks)]  # fmt: skip
    return Rooflines(
        near_roof=NEAR_ROOF, models=models, above=_above(records), probes=probes,
        any_under=any(m.under for m in models), mfu_range=_mfu_range(models),
        bounds=tuple(sum(m.bounds[i] for m in models) for i in range(len(BOUNDS))),
        low_sheet=_probe_row(low_sheet[0]) if low_sheet else None,
    )  # fmt: skip
