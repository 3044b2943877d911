"""Tidy frames built once from records: what every table, figure, section and console view reads.

A report never measures: everything here reads records, through their typed results
(``Record.result``). :class:`Frames` builds each frame on first use and keeps it:

- ``overview`` — one row per model, the headline numbers, each from the record that holds it;
- ``metric(name)`` — one row per record of a metric: its spec, status, reason and result fields;
- ``failures`` — every record that is not ok, with its reason;
- ``lineage`` — each GoogLeNet variant against its parent (exercise 1);
- ``facts`` — per model, the layer-derived quantities of exercises 4 and 5.

The one rule for accuracy: a ``diverged`` record keeps its numbers — the test accuracy of the
seeds that finished and the training time of every seed, the epochs before divergence — and its
status travels beside them (``accuracy_status``); every view shows both (``fmt.accuracy``).

Frames have object dtype, so a missing number stays ``None`` and a count stays an int (pandas
would otherwise turn a column holding one ``None`` into floats: ``5,977,530.000`` and ``nan``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..results import Record
from ..results.types import RESULT_TYPES, LayerCost

__all__ = [
    "Frames",
    "ModelFacts",
    "LINEAGE_FIELDS",
    "first_ok",
    "models_of",
    "ok_records",
    "relative_change",
    "result_of",
    "status_note",
]

# overview column → (label, decimals, scale): the numbers a variant is compared on (exercise 1)
LINEAGE_FIELDS: dict[str, tuple[str, int, float]] = {
    "params": ("parameters", 0, 1),
    "gmacs": ("GMACs", 3, 1),
    "latency_ms_p50_b1": ("latency b1 ms", 2, 1),
    "train_images_per_s_best": ("train images/s", 1, 1),
    "train_memory_bytes": ("train memory MiB", 0, 2**20),
    "test_accuracy_mean": ("test accuracy", 3, 1),
}


def result_of(record: Record) -> Any | None:
    """The record's typed result; ``None`` for a record without values (one that failed)."""
    return record.result if record.values else None


def ok_records(records: Iterable[Record], metric: str, **spec_fields) -> list[Record]:
    """The ``ok`` records of ``metric`` whose spec matches every given field (model=..., mode=...)."""
    return [
        r
        for r in records
        if r.metric == metric
        and r.status == "ok"
        and all(getattr(r.spec, k) == v for k, v in spec_fields.items())
    ]


def first_ok(records: Iterable[Record], metric: str, **spec_fields) -> Record | None:
    return next(iter(ok_records(records, metric, **spec_fields)), None)


def status_note(records: Iterable[Record]) -> str:
    """'2 oom, 1 error' for the records that did not end ok ('' when all did)."""
    counts: dict[str, int] = {}
    for r in records:
        if r.status != "ok":
            counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def models_of(records: Iterable[Record]) -> list[str]:
    """Model names in the order they first appear."""
    return list(dict.fromkeys(r.spec.model for r in records))


def relative_change(base, new) -> float | None:
    """(new − base) / base; ``None`` where either is missing or the base is zero."""
    return (new - base) / base if base and new is not None else None


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=object)


def _flags(result) -> tuple[str, ...]:
    return tuple(k for k in ("unstable", "contended") if getattr(result, k))


def _overview_row(model: str, mine: list[Record]) -> dict:
    def best(metric, key, **spec):
        top = max(ok_records(mine, metric, **spec), key=key, default=None)
        return (top.result, top.spec.batch_size) if top else (None, None)

    row: dict = {"model": model, "image_size": mine[0].spec.image_size}
    p, f, roof = (first_ok(mine, m) for m in ("params", "flops", "roofline"))
    row["params"] = p.result.params_total if p else None
    row["gmacs"] = f.result.gmacs if f else None
    b1 = first_ok(mine, "latency", mode="inference", batch_size=1)
    row["latency_ms_p50_b1"] = b1.result.latency_ms_p50 if b1 else None
    row["latency_b1_flags"] = _flags(b1.result) if b1 else ()
    for mode, prefix in (("inference", "infer"), ("train", "train")):
        lat, batch = best("latency", lambda r: r.result.images_per_s, mode=mode)
        row[f"{prefix}_images_per_s_best"] = lat.images_per_s if lat else None
        row[f"{prefix}_best_batch"] = batch
        mem, batch = best("memory", lambda r: r.spec.batch_size, mode=mode)
        row[f"{prefix}_memory_bytes"] = mem.measured_bytes if mem else None
        row[f"{prefix}_memory_batch"] = batch
    acc = next((r for r in mine if r.metric == "accuracy"), None)
    a = result_of(acc) if acc else None
    row["test_accuracy_mean"] = a.test_accuracy_mean if a else None
    row["test_accuracy_std"] = a.test_accuracy_std if a else None
    row["train_time_s_mean"] = a.train_time_s_mean if a else None
    row["accuracy_status"] = acc.status if acc else None
    row["train_image_size"] = acc.spec.image_size if acc else None
    row["mfu"] = roof.result.mfu if roof else None
    row["not_ok"] = status_note(mine)
    return row


@dataclass(frozen=True)
class ModelFacts:
    """What exercises 4 and 5 derive from one model's params and flops records (per image, fp32)."""

    model: str
    image_size: int
    params: int
    param_bytes: int
    params_by_layer_type: dict[str, int]
    macs: int
    gmacs: float
    layers: tuple[LayerCost, ...]

    @property
    def conv_params(self) -> int:
        return self.params_by_layer_type.get("conv", 0)

    @property
    def linear_params(self) -> int:
        return self.params_by_layer_type.get("linear", 0)

    def _share(self, part: float, whole: float) -> float:
        return part / whole if whole else 0.0

    @property
    def linear_share(self) -> float:
        return self._share(self.linear_params, self.params)

    @property
    def convs(self) -> list[LayerCost]:
        return [lay for lay in self.layers if lay.layer.startswith("Conv")]

    @property
    def one_by_one(self) -> list[LayerCost]:
        return [lay for lay in self.convs if lay.kernel == "1x1"]

    @property
    def one_by_one_param_share(self) -> float:
        return self._share(sum(lay.params for lay in self.one_by_one), self.params)

    @property
    def one_by_one_mac_share(self) -> float:
        return sum(lay.macs for lay in self.one_by_one) / self.macs

    @property
    def conv_mac_share(self) -> float:
        return sum(lay.macs for lay in self.convs) / self.macs

    @property
    def largest(self) -> LayerCost:
        return max(self.layers, key=lambda lay: lay.params)

    @property
    def head(self) -> LayerCost:
        """The classifier: the last linear layer, or the last convolution when there is none."""
        return ([lay for lay in self.layers if lay.layer == "Linear"] or self.convs)[-1]

    @property
    def global_pool(self) -> bool:
        return any(lay.layer.startswith("Adaptive") for lay in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(lay.output_bytes for lay in self.layers)

    @staticmethod
    def working_set_of(lay: LayerCost) -> int:
        """What one layer needs resident: its input, output and weights."""
        return lay.input_bytes + lay.output_bytes + lay.weight_bytes

    @property
    def working_set(self) -> LayerCost:
        """The layer with the largest working set."""
        return max(self.layers, key=self.working_set_of)

    def bytes_moved(self, batch: int) -> float:
        """Bytes a forward pass moves per image at ``batch``: every layer reads its input and
        writes its output once, and reads its weights once per batch (no reuse across layers)."""
        return sum(
            lay.input_bytes + lay.output_bytes + lay.weight_bytes / batch for lay in self.layers
        )

    def intensity(self, batch: int) -> float:
        """FLOPs per byte moved (2 FLOPs per multiply-add)."""
        return 2 * self.macs / self.bytes_moved(batch)

    @property
    def crossover(self) -> int:
        """The smallest batch whose forward activations (per image x batch) exceed the weights."""
        return max(1, int(self.param_bytes // max(self.activation_bytes, 1)) + 1)


class Frames:
    """Every frame of one set of records, each built on first use and kept."""

    def __init__(self, records: Iterable[Record]):
        self.records = list(records)
        self._metrics: dict[str, pd.DataFrame] = {}

    @functools.cached_property
    def models(self) -> list[str]:
        return models_of(self.records)

    @functools.cached_property
    def overview(self) -> pd.DataFrame:
        """One row per model: the headline numbers; ``None`` where no ok record holds one."""
        rows = [
            _overview_row(m, [r for r in self.records if r.spec.model == m]) for m in self.models
        ]
        return _frame(rows)

    def row(self, model: str) -> dict | None:
        """``model``'s overview row as a dict, or ``None`` when no record has it."""
        found = self.overview[self.overview["model"] == model] if len(self.overview) else []
        return found.iloc[0].to_dict() if len(found) else None

    def metric(self, metric: str) -> pd.DataFrame:
        """One row per record of ``metric``: spec, status, reason and every result field
        (``None`` for a record without values)."""
        if metric not in self._metrics:
            self._metrics[metric] = self._metric_frame(metric)
        return self._metrics[metric]

    def _metric_frame(self, metric: str) -> pd.DataFrame:
        names = [f.name for f in dataclasses.fields(RESULT_TYPES[metric])]
        rows = []
        for r in self.records:
            if r.metric != metric:
                continue
            res = result_of(r)
            rows.append({
                **dataclasses.asdict(r.spec), "status": r.status, "reason": r.reason,
                **{n: getattr(res, n) if res else None for n in names},
            })  # fmt: skip
        return _frame(rows)

    @functools.cached_property
    def failures(self) -> pd.DataFrame:
        return _frame([
            {"model": r.spec.model, "metric": r.metric, "mode": r.spec.mode,
             "batch": r.spec.batch_size, "status": r.status, "reason": r.reason}
            for r in self.records if r.status != "ok"
        ])  # fmt: skip

    @functools.cached_property
    def lineage(self) -> pd.DataFrame:
        """Each variant whose parent is in the records: its LINEAGE_FIELDS values, each one's
        change against the parent (``<field> change``) and its accuracy status."""
        from ..models import UnknownModelError, get_spec

        rows = []
        for model in self.models:
            try:
                spec = get_spec(model)
            except UnknownModelError:  # a plugin model this process has not loaded
                continue
            if spec.parent is None or spec.parent not in self.models:
                continue
            mine, theirs = self.row(model), self.row(spec.parent)
            row = {"variant": model, "parent": spec.parent, "what changed": spec.description,
                   "accuracy_status": mine["accuracy_status"]}  # fmt: skip
            for key in LINEAGE_FIELDS:
                row[key] = mine[key]
                row[f"{key} change"] = relative_change(theirs[key], mine[key])
            rows.append(row)
        return _frame(rows)

    @functools.cached_property
    def facts(self) -> dict[str, ModelFacts]:
        """Per model with ok params and flops records (and layers): see :class:`ModelFacts`."""
        facts = {}
        for model in self.models:
            p, f = first_ok(self.records, "params", model=model), first_ok(self.records, "flops", model=model)  # fmt: skip
            if not (p and f and f.result.layers):
                continue
            pc, fc = p.result, f.result
            facts[model] = ModelFacts(
                model=model, image_size=p.spec.image_size, params=pc.params_total,
                param_bytes=pc.bytes_fp32, params_by_layer_type=pc.params_by_layer_type,
                macs=fc.macs, gmacs=fc.gmacs, layers=fc.layers,
            )  # fmt: skip
        return facts
