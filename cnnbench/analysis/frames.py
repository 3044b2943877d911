"""Tidy frames built once from records: what every table, figure, section and console view reads.

A report never measures: everything here reads records, through their typed results
(``Record.result``). :class:`Frames` builds each frame on first use and keeps it:

- ``overview`` — one row per model, the headline numbers, each from the record that holds it, at
  the model's own input size; its accuracy beside the network *as trained* (its size, its head);
- ``metric(name)`` — one row per record of a metric: its spec, status, reason and result fields;
- ``failures`` — every record that is not ok, with its reason;
- ``lineage`` — each GoogLeNet variant against its parent (exercise 1);
- ``facts`` — per model, the layer-derived quantities of exercises 4 and 5.

Like with like: a model's own size is the size of its run's measurements (its params record; a
flops record may also exist at 224, "equal resolution"). An accuracy pairs with the parameters
and MACs of the network as trained — ``TrainResult.trained_params``/``trained_macs``, or for
records written before they existed the params/flops record at the trained size — and with
nothing (``None``) when neither exists: never with the counts of the network at another size.

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

from ..config import EQUAL_RESOLUTION, trick_baseline
from ..results import Record
from ..results.types import RESULT_TYPES, LayerCost, Value, value_info
from .noise import (
    Control,
    MemoryNoise,
    RunNoise,
    accuracy_change,
    latency_change,
    memory_noise,
    noise_control,
    run_noise,
)

__all__ = [
    "EQUAL_RESOLUTION",
    "Frames",
    "LineageField",
    "Utilization",
    "ModelFacts",
    "LINEAGE_FIELDS",
    "above_roof",
    "finished_seeds",
    "first_ok",
    "models_of",
    "ok_records",
    "own_size",
    "relative_change",
    "result_of",
    "seed_std",
    "status_note",
    "utilization",
]



@dataclass(frozen=True)
class LineageField:
    """One number a variant is compared on (exercise 1): an overview column, the declared value it
    holds (its unit, better direction and digits live on the result type), and the column's label,
    which names its context (batch 1, train mode) as well as the value."""

    label: str
    value: str  # the declared value name (results.types.value_info)
    by_size: bool = True  # depends on the input size: compared only at one size

    @property
    def _info(self) -> Value:
        return value_info(self.value)

    @property
    def digits(self) -> int:
        return self._info.digits

    @property
    def scale(self) -> float:
        return self._info.scale

    @property
    def lower_is_better(self) -> bool:
        return self._info.better in ("lower", "exact")  # fewer parameters and MACs: cheaper

    @property
    def points(self) -> bool:
        """The change is a difference in percentage points, not relative."""
        return self._info.points


# overview column → the value it holds and its label: the numbers a variant is compared on
LINEAGE_FIELDS: dict[str, LineageField] = {
    "params": LineageField("parameters", "params_total", by_size=False),
    "gmacs": LineageField("GMACs", "gmacs"),
    "latency_ms_p50_b1": LineageField("latency b1 ms", "latency_ms_p50"),
    "train_images_per_s": LineageField("train images/s", "images_per_s"),
    "train_memory_bytes": LineageField("train memory MiB", "measured_bytes"),
    "test_accuracy_mean": LineageField("test accuracy", "test_accuracy_mean"),
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


def own_size(mine: list[Record]) -> int | None:
    """A model's own input size in a run: the size its params (else latency, memory, roofline,
    minsize) records were measured at — the run's size for it — and only then the registry's.
    Its flops may also be counted at 224 and its accuracy trained at another size."""
    for metric in ("params", "latency", "memory", "roofline", "minsize"):
        sizes = [r.spec.image_size for r in mine if r.metric == metric]
        if sizes:
            return sizes[0]
    if mine:
        from ..models import UnknownModelError, get_spec

        try:
            return get_spec(mine[0].spec.model).input_size
        except UnknownModelError:
            flops = [r.spec.image_size for r in mine if r.metric == "flops"]
            return flops[0] if flops else mine[0].spec.image_size
    return None


def finished_seeds(result) -> int:
    """Seeds of a TrainResult that finished (have a final test accuracy)."""
    return sum(1 for run in result.runs if run.final_test_accuracy is not None)


def seed_std(result) -> float | None:
    """The sample standard deviation of the test accuracy over seeds; ``None`` (shown "—")
    with fewer than two finished seeds, where no spread can be estimated."""
    if result is None or result.test_accuracy_std is None:
        return None
    return result.test_accuracy_std if finished_seeds(result) >= 2 else None


def above_roof(result) -> bool:
    """A roofline whose model or layers ran above the measured compute roof: the peak is an
    underestimate and its MFU is not a utilization."""
    return (bool(result.roof_underestimated) or result.mfu > 1
            or any(lay.above_compute_roof(result.peak_flops) for lay in result.layers))  # fmt: skip


@dataclass(frozen=True)
class Utilization:
    """A model's FLOPs utilization at its roofline's batch, numerator and denominator of one
    statistic: the work of one forward pass over its median time, over the median-rate peak."""

    mfu: float
    forward_ms: float  # the median forward pass the numerator divides by
    achieved_flops: float
    source: str  # where forward_ms comes from: "latency" (the latency table at the same spec)
    # or "roofline" (the roofline worker's own forward passes: no latency record at its batch)
    batch: int = 0  # the batch both are at


def utilization(records: Iterable[Record], roof: Record) -> Utilization:
    """MFU of a roofline record against the latency table's median forward pass at the same
    spec (the number the report shows as that model's latency), else the
    roofline worker's own median, and which it is."""
    v = roof.result
    work = v.model_achieved_flops * v.model_ms / 1e3  # FLOPs of one forward pass at the batch
    # the same forward pass: every condition of the spec (dtype, memory format, compile, device,
    # threads, ...), not only model, size and batch
    lat = first_ok(records, "latency", **dataclasses.asdict(dataclasses.replace(roof.spec, mode="inference")))
    if lat is not None:
        ms, source = lat.result.latency_ms_p50, "latency"
    else:
        ms, source = v.model_ms, "roofline"
    achieved = work / (ms / 1e3)
    return Utilization(achieved / v.peak_flops, ms, achieved, source, roof.spec.batch_size)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=object)


def _flags(result) -> tuple[str, ...]:
    return tuple(k for k in ("unstable", "contended") if getattr(result, k))


def trained_counts(records: list[Record], acc: Record) -> tuple[int | None, float | None, str | None]:
    """(parameters, GMACs per image, source: "accuracy" or "counts") of the network an accuracy
    record trained: its
    own counts (``trained_params``/``trained_macs``), else the params/flops records of the same
    model at the trained size; ``None`` for what neither has."""
    a = result_of(acc)
    size, model = acc.spec.image_size, acc.spec.model
    params = a.trained_params if a else None
    gmacs = a.trained_macs / 1e9 if a and a.trained_macs is not None else None
    source = "accuracy" if params is not None or gmacs is not None else None
    if params is None and (p := first_ok(records, "params", model=model, image_size=size)):
        params, source = p.result.params_total, source or "counts"
    f = first_ok(records, "flops", model=model, image_size=size)
    if f is not None and gmacs is None:
        gmacs, source = f.result.gmacs / max(f.spec.batch_size, 1), source or "counts"  # fmt: skip
    if f is not None and params is None and f.result.layers:  # every leaf with parameters is listed
        params = sum(lay.params for lay in f.result.layers)
    return params, gmacs, source


def _without_trick_variants(mine: list[Record]) -> list[Record]:
    """``mine`` less the records of a speed trick measured beside its own baseline (the tricks
    experiment): a model's headline is its baseline's, not a compiled or bf16 variant's. A run
    that set ``--channels-last`` or ``--compile`` for everything has no baseline beside them, so
    its records all stay."""
    specs = {(r.metric, r.spec) for r in mine}
    return [r for r in mine
            if trick_baseline(r.spec) == r.spec or (r.metric, trick_baseline(r.spec)) not in specs]  # fmt: skip


def _overview_row(model: str, mine: list[Record]) -> dict:
    size = own_size(mine)
    at_size = [r for r in mine if r.spec.image_size == size]

    def best(metric, key, **spec):
        top = max(ok_records(at_size, metric, **spec), key=key, default=None)
        return (top.result, top.spec.batch_size) if top else (None, None)

    row: dict = {"model": model, "image_size": size}
    p, f, roof = (first_ok(at_size, m) for m in ("params", "flops", "roofline"))
    row["params"] = p.result.params_total if p else None
    row["gmacs"] = f.result.gmacs if f else None
    b1 = first_ok(at_size, "latency", mode="inference", batch_size=1)
    row["latency_ms_p50_b1"] = b1.result.latency_ms_p50 if b1 else None
    row["latency_b1_flags"] = _flags(b1.result) if b1 else ()
    for mode, prefix in (("inference", "infer"), ("train", "train")):
        lat, batch = best("latency", lambda r: r.result.images_per_s or 0.0, mode=mode)
        row[f"{prefix}_images_per_s_best"] = lat.images_per_s if lat else None
        row[f"{prefix}_best_batch"] = batch
        mem, batch = best("memory", lambda r: r.spec.batch_size, mode=mode)
        row[f"{prefix}_memory_bytes"] = mem.measured_bytes if mem else None
        row[f"{prefix}_memory_batch"] = batch
    acc = next((r for r in mine if r.metric == "accuracy"), None)
    a = result_of(acc) if acc else None
    row["test_accuracy_mean"] = a.test_accuracy_mean if a else None
    row["test_accuracy_std"] = seed_std(a)
    row["seeds_finished"] = finished_seeds(a) if a else None
    row["train_time_s_mean"] = a.train_time_s_mean if a else None
    row["accuracy_status"] = acc.status if acc else None
    row["train_image_size"] = acc.spec.image_size if acc else None
    tp, tg, source = trained_counts(mine, acc) if acc else (None, None, None)
    row["trained_params"], row["trained_gmacs"], row["trained_source"] = tp, tg, source
    use = utilization(at_size, roof) if roof else None
    row["mfu"] = use.mfu if use else None
    row["above_roof"] = (above_roof(roof.result) or use.mfu > 1) if roof else None
    row["other_time_share"] = roof.result.other_time_share if roof else None
    row["roofline_batch"] = roof.spec.batch_size if roof else None
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
    def forward_output_bytes(self) -> int:
        """Forward outputs per image: every counted layer's output, summed (fp32)."""
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
        """The smallest batch whose forward outputs (per image x batch) exceed the weights."""
        return max(1, int(self.param_bytes // max(self.forward_output_bytes, 1)) + 1)


def _layer_kind(layer: str) -> str:
    if layer.startswith("Conv"):
        return "conv"
    if layer == "Linear":
        return "linear"
    return "norm" if "Norm" in layer else "other"


class Frames:
    """Every frame of one set of records, each built on first use and kept."""

    def __init__(self, records: Iterable[Record], *, paired: bool = True):
        """``paired``: the records come from one run whose rounds interleaved its models (not
        shards merged, not a resumed run), so latency comparisons may pair them round by round."""
        self.records = list(records)
        self.paired = paired
        self._metrics: dict[str, pd.DataFrame] = {}

    @functools.cached_property
    def models(self) -> list[str]:
        return models_of(self.records)

    def mine(self, model: str) -> list[Record]:
        """``model``'s records, less a speed trick's measured beside its own baseline (the
        tricks experiment, which reads ``records`` itself): every finding per model — the
        overview, the lineage, exercise 3, the frontier — compares a model's baseline, never
        one of its compiled or bf16 variants picked by the order of the records."""
        return _without_trick_variants([r for r in self.records if r.spec.model == model])

    @functools.cached_property
    def sizes(self) -> dict[str, int | None]:
        """Each model's own input size (:func:`own_size`)."""
        return {m: own_size(self.mine(m)) for m in self.models}

    @functools.cached_property
    def overview(self) -> pd.DataFrame:
        """One row per model: the headline numbers; ``None`` where no ok record holds one."""
        return _frame([_overview_row(m, self.mine(m)) for m in self.models])

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
    def noise(self) -> RunNoise:
        """What the run's latencies resolve, per mode and batch (``noise.run_noise``)."""
        return run_noise(self.records, paired=self.paired)

    @functools.cached_property
    def control(self) -> Control | None:
        """The googlenet_ls / googlenet noise control (``noise.noise_control``)."""
        return noise_control(self.records, self.noise)

    def floor(self, mode: str, batch: int) -> float:
        """The smallest latency change called at (mode, batch): what the run resolves there,
        or the noise control's interval where the control failed."""
        control = self.control.floor(mode, batch) if self.control else 0.0
        return max(self.noise.floor(mode, batch), control)

    @functools.cached_property
    def memory_noise(self) -> MemoryNoise | None:
        """The identical pair's peak-memory spread (``noise.memory_noise``)."""
        return memory_noise(self.records)

    def latency_pair(self, a: str, b: str, mode: str, batch: int | None = None):
        """(A's record, B's record, B against A) for latency at ``batch`` — by default the
        largest batch both measured ok in ``mode`` at their own sizes — or ``None``."""
        def by_batch(model):
            size = self.sizes.get(model)
            return {r.spec.batch_size: r for r in ok_records(self.mine(model), "latency", mode=mode, image_size=size)}  # fmt: skip

        ours, theirs = by_batch(a), by_batch(b)
        common = sorted(set(ours) & set(theirs))
        if batch is None:
            batch = common[-1] if common else None
        if batch not in ours or batch not in theirs:
            return None
        ra, rb = ours[batch], theirs[batch]
        return ra, rb, latency_change(ra.result, rb.result, paired=self.paired,
                                      floor=self.floor(mode, batch))  # fmt: skip

    @functools.cached_property
    def lineage(self) -> pd.DataFrame:
        """Each variant whose parent is in the records: its LINEAGE_FIELDS values, each one's
        change against the parent (``<field> change``: relative, or percentage points for
        accuracy), the latency and throughput verdicts (``<field> noise``: a
        :class:`noise.Change`) and its accuracy status."""
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
            # like with like: at different inputs a pair gets numbers, never a verdict
            alike = mine["image_size"] == theirs["image_size"]
            trained_alike = mine["train_image_size"] == theirs["train_image_size"]
            row = {"variant": model, "parent": spec.parent, "what changed": spec.description,
                   "accuracy_status": mine["accuracy_status"],
                   "input": mine["image_size"], "parent_input": theirs["image_size"],
                   "alike": alike, "trained_alike": trained_alike,
                   "seeds": min(mine["seeds_finished"] or 0, theirs["seeds_finished"] or 0)}  # fmt: skip
            b1 = self.latency_pair(spec.parent, model, "inference", 1) if alike else None
            train = self.latency_pair(spec.parent, model, "train") if alike else None
            row["train_batch"] = train[0].spec.batch_size if train else None
            values = {
                "params": (theirs["params"], mine["params"]),
                "gmacs": (theirs["gmacs"], mine["gmacs"]),
                "latency_ms_p50_b1": (theirs["latency_ms_p50_b1"], mine["latency_ms_p50_b1"]),
                "train_images_per_s": (train[0].result.images_per_s, train[1].result.images_per_s) if train
                else (theirs["train_images_per_s_best"], mine["train_images_per_s_best"]) if not alike
                else (None, None),  # unlike: each one's own best, shown, never compared  # fmt: skip
                "train_memory_bytes": (theirs["train_memory_bytes"], mine["train_memory_bytes"]),
                "test_accuracy_mean": (theirs["test_accuracy_mean"], mine["test_accuracy_mean"]),
            }
            for key, field in LINEAGE_FIELDS.items():
                base, new = values[key]
                row[key], row[f"{key} parent"] = new, base
                comparable = (trained_alike if field.points else alike) or not field.by_size
                if not comparable:
                    row[f"{key} change"] = None
                elif field.points:
                    row[f"{key} change"] = None if base is None or new is None else new - base
                else:
                    row[f"{key} change"] = relative_change(base, new)
                row[f"{key} noise"] = None
            row["latency_ms_p50_b1 noise"] = b1[2] if b1 else None
            row["train_images_per_s noise"] = train[2].throughput() if train else None
            if alike and self.memory_noise is not None:
                row["train_memory_bytes noise"] = self.memory_noise.judge(row["train_memory_bytes change"])
            if trained_alike:
                acc = [next((result_of(r) for r in self.mine(m) if r.metric == "accuracy"), None)
                       for m in (spec.parent, model)]  # fmt: skip
                row["test_accuracy_mean noise"] = accuracy_change(*acc)
            rows.append(row)
        return _frame(rows)

    def facts_at(self, model: str, size: int | None = None) -> ModelFacts | None:
        """``model``'s :class:`ModelFacts` from its flops record at ``size`` (default: its own);
        parameters from its params record at that size, else summed from the flops layers."""
        size = size or self.sizes.get(model)
        f = first_ok(self.records, "flops", model=model, image_size=size)
        if not (f and f.result.layers):
            return None
        fc = f.result
        p = first_ok(self.records, "params", model=model, image_size=size)
        if p:
            pc = p.result
            params, param_bytes, by_type = pc.params_total, pc.bytes_fp32, pc.params_by_layer_type
        else:
            by_type: dict[str, int] = {}
            for lay in fc.layers:
                by_type[_layer_kind(lay.layer)] = by_type.get(_layer_kind(lay.layer), 0) + lay.params  # fmt: skip
            params = sum(lay.params for lay in fc.layers)
            param_bytes = sum(lay.weight_bytes for lay in fc.layers)
        return ModelFacts(
            model=model, image_size=size, params=params, param_bytes=param_bytes,
            params_by_layer_type=by_type, macs=fc.macs // max(f.spec.batch_size, 1),
            gmacs=fc.gmacs / max(f.spec.batch_size, 1), layers=fc.layers,
        )  # fmt: skip

    @functools.cached_property
    def facts(self) -> dict[str, ModelFacts]:
        """Per model with ok params and flops records (and layers) at its own size: see
        :class:`ModelFacts`."""
        facts = {}
        for model in self.models:
            if not first_ok(self.records, "params", model=model, image_size=self.sizes[model]):
                continue
            found = self.facts_at(model)
            if found is not None:
                facts[model] = found
        return facts
