"""One frozen dataclass per metric: what a harness returns and what ``Record.result`` rebuilds.

The harnesses (``cnnbench/measure/``) fill these; the report and the console read them. Field
names carry their units. ``from_values`` rebuilds a type from a record's saved values (nested
dataclasses and tuples included) and refuses keys the type does not know, so a schema drift
fails loudly instead of dropping a number.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ParamCount",
    "LayerCost",
    "FlopCount",
    "MinInputSize",
    "LatencyResult",
    "MemoryResult",
    "EpochStats",
    "CurvePoint",
    "SeedRun",
    "TrainResult",
    "DevicePeaks",
    "LayerRoof",
    "RooflineResult",
    "ScalingPoint",
    "ScalingResult",
    "EnergyResult",
    "RESULT_TYPES",
    "Optimizer",
    "Value",
    "declared_values",
    "from_values",
    "value_info",
]


# --- a value's unit, better direction and name, declared once on its field ----------------------


@dataclass(frozen=True)
class Value:
    """What a reader and a judge need to know of one measured value: its unit, which direction is
    better ("lower", "higher", or "exact" for a count that changes or not), its display name and
    how it is shown (``digits`` after dividing by ``scale``: bytes shown as MiB have 2**20)."""

    unit: str
    better: str
    label: str
    digits: int = 3
    scale: float = 1
    machine: bool = False  # depends on the machine (a time, a rate, a measured peak): another
    # machine's value is not a change of the model
    points: bool = False  # a fraction whose difference is read in percentage points
    headline: bool = True  # followed by compare and history (the metric's headline values)


def value(unit: str, better: str, label: str, **how) -> Any:
    """A result field that is a headline value: its :class:`Value` rides on the field's metadata,
    as ``config.opt()`` declares a command-line flag on its field."""
    return dataclasses.field(metadata={"value": Value(unit, better, label, **how)})


@dataclass(frozen=True)
class Optimizer:
    """The optimizer of a model's training in this run: its name, learning rate, momentum. Records
    keep its ``label`` ("sgd 0.01 momentum 0.9"); compare the objects, never the labels."""

    name: str
    lr: float
    momentum: float

    @property
    def label(self) -> str:
        return f"{self.name} {self.lr:g}" + (f" momentum {self.momentum:g}" if self.momentum else "")

    @classmethod
    def of(cls, name: str | None, lr: float | None, momentum: float | None) -> Optimizer | None:
        """From a record's fields (a TrainResult's optimizer, lr, momentum); None without a name."""
        return cls(name, lr or 0.0, momentum or 0.0) if name else None

    @classmethod
    def parse(cls, label: str | None) -> Optimizer | None:
        """From a label as records keep it ("adam 0.0005", "sgd 0.01 momentum 0.9"); None for
        None or a label of another shape."""
        words = (label or "").lower().split()
        try:
            if len(words) == 2:
                return cls(words[0], float(words[1]), 0.0)
            if len(words) == 4 and words[2] == "momentum":
                return cls(words[0], float(words[1]), float(words[3]))
        except ValueError:
            return None
        return None


@dataclass(frozen=True)
class ParamCount:
    params_total: int = value("parameters", "exact", "parameters", digits=0)  # every parameter element
    params_trainable: int  # elements with requires_grad
    params_by_block: dict[str, int]  # top-level child name → elements, in forward order
    params_by_layer_type: dict[str, int]  # "conv", "linear", "norm", "other" → elements
    bytes_fp32: int  # parameter storage at 4 bytes per element
    bytes_bf16: int  # parameter storage at 2 bytes per element


@dataclass(frozen=True)
class LayerCost:
    """One leaf layer of a forward pass, per image at fp32 (batch dimension divided out)."""

    name: str  # dotted module path
    layer: str  # module class name
    kernel: str | None  # "KxK" for convolutions and pools
    macs: int  # fvcore, one fused multiply-add = 1
    params: int
    weight_bytes: int
    input_bytes: int
    output_bytes: int


@dataclass(frozen=True)
class FlopCount:
    macs: int  # fvcore total at spec.batch_size; one fused multiply-add = 1
    gmacs: float = value("GMAC", "exact", "GMACs", digits=3)  # macs / 1e9
    macs_by_block: dict[str, int]  # top-level child → MACs, in forward order
    macs_by_operator: dict[str, int]  # fvcore operator name ("conv", "linear", ...) → MACs
    unsupported_ops: dict[str, int]  # operators fvcore did not count → occurrences
    conv_linear_macs: int  # fvcore's convolution + linear part of ``macs``
    flopcounter_forward_flops: int  # FlopCounterMode, forward, 2 per multiply-add
    flopcounter_train_step_flops: int  # FlopCounterMode, forward + backward of one step
    crosscheck_ratio: float | None  # (flopcounter_forward_flops / 2) / conv_linear_macs
    layers: tuple[LayerCost, ...]  # leaves with parameters, MACs or pooling, in execution order


@dataclass(frozen=True)
class MinInputSize:
    model: str
    min_size: int = value("px", "exact", "minimum input", digits=0)  # smallest square side the model runs on
    failing_layer: str  # the layer that fails at min_size - 1 ("" when min_size is 1)
    failure: str  # the error that layer raises at min_size - 1
    # at min_size, every layer up to the failing one that changes the spatial side, in order:
    # "stage1.0 Conv2d 11x11/4: 65→15" — the stride and pooling chain that sets the bound
    reductions: tuple[str, ...] = ()


@dataclass(frozen=True)
class LatencyResult:
    timer: str  # "cuda_event" or "perf_counter"
    warmup_runs: int
    n_runs: int  # timed iterations behind the statistics
    latency_ms_min: float
    latency_ms_p50: float = value("ms", "lower", "latency p50", digits=2, machine=True)
    latency_ms_mean: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_iqr: float
    latency_ms_std: float  # sample standard deviation (ddof 1)
    iqr_over_median: float | None
    images_per_s: float | None = value("images/s", "higher", "images/s", digits=1, machine=True)  # batch / median
    unstable: bool  # iqr_over_median above the threshold
    other_cpu_share: float | None  # CPU: other processes' share of all cores during timing
    contended: bool  # other_cpu_share above the threshold even after one repeat
    attempts: int  # 1, or 2 when the first attempt was contended
    compile_s: float | None  # first call with torch.compile, compilation included
    cudnn_benchmark: bool | None  # CUDA only
    # the per-iteration times the statistics above derive from (ms, in timing order); None in
    # records written before schema 2, which kept only the statistics
    times_ms: tuple[float, ...] | None = None
    # rounds: the times come from this many separate worker processes, interleaved across the
    # run's models (A B C A B C ...); round_sizes[i] iterations of times_ms belong to round i
    rounds: int = 1
    round_sizes: tuple[int, ...] | None = None
    round_medians_ms: tuple[float, ...] | None = None
    # 95% interval of the median between processes: Student's t on the logs of the round
    # medians (stats.median_interval); None with one round or no samples (schema 1). Records
    # written before held a two-level bootstrap of times_ms here, which did not cover
    latency_ms_p50_ci_low: float | None = None
    latency_ms_p50_ci_high: float | None = None
    # the training step's optimizer ("sgd 0.01", "adam 0.0005"): the accuracy run's, so that
    # a step's cost and the accuracy describe the same training; None for inference
    optimizer: str | None = None
    # CUDA: the host's time per iteration to issue the work (perf_counter around the call,
    # without synchronizing), median; at ~the event-timed latency the GPU waited for Python
    # (launch-bound: a CUDA graph or torch.compile helps, a faster GPU does not)
    host_ms_p50: float | None = None
    host_bound: bool | None = None
    # torch.compile: what Dynamo did (workload.dynamo_counters): frames compiled and failed,
    # graphs, graph breaks, recompiles; a failed frame ran eagerly
    dynamo: dict | None = None
    # a batch sweep that ended here, and why (the first round decides: "images/s plateaued ...")
    sweep_end: str | None = None


@dataclass(frozen=True)
class MemoryResult:
    source: str  # "cuda_allocator", "rss_worker" (peak reset after imports) or "rss_worker_maxrss"
    measured_bytes: int = value("bytes", "lower", "peak memory", digits=0, scale=2**20, machine=True)  # peak above baseline_bytes (CUDA: allocated, after a warm-up step;
    # CPU: anonymous RSS)
    peak_bytes: int  # CUDA: peak allocated; CPU: peak anonymous RSS of the worker, absolute
    baseline_bytes: int  # CUDA: allocated before the model; CPU: anonymous RSS before it
    reserved_bytes: int | None  # CUDA: peak reserved by the caching allocator
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    input_bytes: int
    activation_bytes: int  # train: saved for backward; inference: the largest layer's in + out
    analytic_bytes: int = value("bytes", "exact", "analytic memory", digits=0, scale=2**20)  # the five above
    measured_over_analytic: float | None
    optimizer: str | None = None  # the training step's optimizer, as in LatencyResult
    cuda_warmup: dict[str, Any] | None = None  # CUDA: what ran before the baseline was read (cuBLAS,
    # cuDNN forward and backward) and the bytes it left allocated (their workspaces)
    conv_scratch_bytes: int | None = None  # CUDA: the most one convolution call held beyond its
    # inputs and outputs (cuDNN's workspace): part of measured_bytes, in no analytic term


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches, weighted by batch size
    train_accuracy: float  # on the batches as they were trained (dropout on)
    test_accuracy: float
    wall_s: float  # the training pass, data preparation included; evaluation excluded
    eval_s: float
    images_per_s: float  # training images / wall_s


@dataclass(frozen=True)
class CurvePoint:
    """Training progress inside an epoch: the mean over the steps since the previous point."""

    step: int  # optimizer steps taken so far (1-based, across epochs)
    images: int  # training images seen so far
    train_loss: float
    train_accuracy: float


@dataclass(frozen=True)
class SeedRun:
    seed: int
    epochs: tuple[EpochStats, ...]
    diverged: bool  # a NaN or infinite loss ended it
    final_test_accuracy: float | None  # None when it diverged before finishing an epoch
    train_time_s: float  # sum of the epochs' wall_s
    time_to_target_s: float | None  # training time until test accuracy first reached the target
    compile_s: float | None  # first step with torch.compile, compilation included
    curve: tuple[CurvePoint, ...] = ()  # about 20 points per epoch (schema 2)
    dynamo: dict | None = None  # torch.compile: what Dynamo did (workload.dynamo_counters)
    # the untimed steps before epoch 1's clock (cuDNN autotuning, compile for the training and
    # evaluation shapes), with every state they touched restored: {"train_batches",
    # "eval_batches", "s", "state": "restored"}
    warmup: dict | None = None
    # MLPerf Training's clock (run_start→run_stop): from the start of epoch 1's training pass,
    # after the warm-up (its untimed initialization), to the end of the evaluation that first
    # reached the target; training passes (data preparation inside) and every evaluation count.
    # None when the target was not reached or not set, and in records written before it
    mlperf_time_to_target_s: float | None = None
    epochs_to_target: int | None = None  # the epoch whose evaluation first reached the target


@dataclass(frozen=True)
class TrainResult:
    recipe: str  # "d2l" when every recipe field is the chapter's, else "modified"
    epochs: int
    optimizer: str
    lr: float
    momentum: float
    label_smoothing: float
    train_images: int  # images per epoch
    test_images: int
    target_accuracy: float | None
    seeds: tuple[int, ...]
    runs: tuple[SeedRun, ...]
    diverged_seeds: tuple[int, ...]
    test_accuracy_mean: float | None = value("fraction", "higher", "test accuracy", digits=3, points=True)  # seeds that did not diverge
    test_accuracy_std: float | None  # sample std; 0.0 for one seed
    test_accuracy_min: float | None
    test_accuracy_max: float | None
    train_time_s_mean: float | None = value("s", "lower", "training time", digits=1, machine=True)
    images_per_s_mean: float | None  # end to end, over every epoch of every seed
    data_dir: str | None = None  # where the Fashion-MNIST files were read
    data_verified: bool | None = None  # sizes, magic numbers and SHA-256 checked
    # the network as trained (its input size, its head sized for it): what the accuracy pairs
    # with; None in records written before schema 2
    trained_params: int | None = None
    trained_macs: int | None = None  # fvcore, per image at spec.image_size
    trained_step_flops: int | None = None  # FlopCounterMode, forward + backward, per image


@dataclass(frozen=True)
class DevicePeaks:
    device: str
    dtype: str
    matmul_n: int  # square matrix side of the matmul probe
    matmul_flops: float  # measured by the matmul probe, FLOP/s
    conv_flops: float  # measured by the convolution probe, FLOP/s
    peak_flops: float  # the better of the two, FLOP/s (2 per multiply-add)
    copy_bytes: int  # size of the bandwidth probe's source tensor
    peak_bytes_per_s: float  # measured, bytes read + written per second
    datasheet_flops: float | None  # FLOP/s from the data sheet for this dtype, where known
    datasheet_bytes_per_s: float | None
    # how datasheet_flops was found: "NVIDIA data sheet", or on a CPU the product of the factors
    # below ("cores x FMA units x lanes x 2 x clock"); "unknown" where a factor is not readable
    datasheet_source: str | None = None
    datasheet_factors: dict[str, Any] | None = None
    probes: dict[str, float] | None = None  # every probe shape → FLOP/s; peak_flops is the best
    # the math the probes ran in: "fp32" (CUDA: TF32 off), "tf32", "bf16" or "fp16"; a layer is
    # judged against the peak of the mode it ran in (None: records before the mode was kept)
    math_mode: str | None = None
    tf32_flags: dict[str, bool] | None = None  # CUDA: cuBLAS and cuDNN TF32 flags while probing

    @property
    def ridge(self) -> float:
        return self.peak_flops / self.peak_bytes_per_s


@dataclass(frozen=True)
class LayerRoof:
    """One convolution or linear layer of the profiled forward pass, at the record's batch."""

    name: str
    layer: str
    kernel: str | None
    macs: int  # at the batch
    bytes_moved: int  # batch x (input + output) + weights once
    time_ms: float | None  # profiler time per forward pass
    achieved_flops: float | None  # 2 x MACs / time
    intensity: float  # FLOPs / bytes moved
    roof_flops: float  # min(peak, bandwidth x intensity)
    # what bounds it (:meth:`bound_at`): "memory" or "compute" near that roof, "overhead" far below
    # both; records before the overhead label said "memory" or "compute" by the ridge alone
    bound: str
    fraction_of_roof: float | None
    # multiply-adds on real data at the batch: a convolution's taps on padding excluded, the
    # convention of the probes (achieved_flops and intensity use it); None in records before it,
    # whose achieved_flops counted fvcore's nominal MACs
    work_macs: int | None = None

    def bound_at(self, ridge: float) -> str:
        """'memory' or 'compute' only for a layer that reaches at least ``NEAR_ROOF`` of the roof
        at its intensity (left or right of the ridge); below both roofs it is bound by neither,
        but by launch, framework and small-shape overhead: 'overhead'."""
        if self.fraction_of_roof is None or self.fraction_of_roof < NEAR_ROOF:
            return "overhead"
        return "memory" if self.intensity < ridge else "compute"

    def above_compute_roof(self, peak_flops: float) -> bool:
        """Above the compute roof by more than the timings' noise (``ROOF_TOLERANCE``): the
        measured peak underestimates the machine. (Above the bandwidth roof alone is not: a
        working set that sits in cache beats the copy probe's DRAM rate.)"""
        return bool(self.achieved_flops) and self.achieved_flops > peak_flops * (1 + ROOF_TOLERANCE)


NEAR_ROOF = 0.5  # a layer at half its roof or more is bound by that roof
# A layer's rate is its profiler time over 5 passes, the roof a probe's median iteration: each
# carries a few per cent of noise (the conv probes' shapes agree within 1%, their iterations
# within 2-3% IQR on the reference machine), so a layer up to 5% above the roof is at it
ROOF_TOLERANCE = 0.05


@dataclass(frozen=True)
class RooflineResult:
    peak_flops: float  # measured on this device (see DevicePeaks)
    peak_bytes_per_s: float
    ridge_flop_per_byte: float
    datasheet_flops: float | None
    datasheet_bytes_per_s: float | None
    peaks: DevicePeaks  # measured once per run, handed to every model's roofline
    timing: str  # "cpu_time" or "device_time" (profiler)
    model_ms: float  # median forward pass, latency harness
    model_achieved_flops: float = value("FLOP/s", "higher", "achieved FLOP/s", digits=1, scale=1e9)  # 2 x MACs on real data / model time
    mfu: float  # model_achieved_flops / peak_flops
    layers: tuple[LayerRoof, ...]
    # True when the model or a layer ran above the compute roof: the peak is an underestimate,
    # and MFU is not a utilization (the report never shows it as a number above 100%). A
    # memory-bound layer above the bandwidth roof is cache-resident, not a broken peak.
    roof_underestimated: bool = False
    # share of the forward pass's time spent outside convolution and linear layers, with the
    # profiler's own cost taken out (measure/roofline.py); records before profiled_ms: the
    # profiled pass's share, overhead included
    other_time_share: float | None = None
    # model_achieved_flops / the data sheet's figure (PaLM's MFU); None where none is known
    mfu_datasheet: float | None = None
    profiled_ms: float | None = None  # the whole forward pass as the profiler timed it (hooks in)
    profiler_overhead_ms: float | None = None  # profiled_ms − model_ms: what the profiling added
    profiler_steps: int | None = None  # counted passes, after the schedule's wait 1 and warm-up 2
    # layer → events recorded, where that is not steps x calls per pass: its time is the mean
    # over the events there were (Kineto can drop the first kernels of a session)
    layers_short_of_events: dict[str, int] | None = None
    profiler_messages: tuple[str, ...] = ()  # what the native profiler printed, minus Kineto's noise


@dataclass(frozen=True)
class ScalingPoint:
    """One world size of weak or strong scaling, timed on rank 0 (ms per step)."""

    world_size: int
    kind: str  # "weak" (per-rank batch fixed) or "strong" (global batch fixed)
    per_rank_batch: int
    global_batch: int
    step_ms_p50: float = value("ms", "lower", "DDP step", digits=1, machine=True, headline=False)  # the DDP step: forward, backward with the bucketed all-reduce, optimizer
    step_ms_ci_low: float | None
    step_ms_ci_high: float | None
    local_step_ms_p50: float  # the same step under no_sync(): no gradient all-reduce
    local_step_ms_ci_low: float | None
    local_step_ms_ci_high: float | None
    # (step − local step) − the same at one rank (medians): communication the overlap left
    # exposed; 0 at one rank
    exposed_comm_ms: float
    images_per_s: float  # global batch / median step
    speedup: float  # images/s over images/s at world size 1, same kind
    efficiency: float = value("fraction", "higher", "scaling efficiency", digits=3)  # speedup / world size
    times_ms: tuple[float, ...]
    local_times_ms: tuple[float, ...]
    allreduce_bus_bytes_per_s: float | None  # ring all-reduce bus bandwidth on this group
    predicted_comm_ms: float  # 2(W-1)/W x gradient bytes / that bandwidth (0 at W = 1)
    ddp_overhead_ms: float = 0.0  # step − local step at one rank: DDP's cost without traffic


@dataclass(frozen=True)
class ScalingResult:
    grad_bytes: int  # all-reduced per step: trainable parameters x gradient element size
    trainable_params: int
    backend: str  # "gloo" or "nccl"
    ddp: dict[str, Any]  # bucket size, gradient_as_bucket_view, static_graph, ranks per node, ...
    hosts: tuple[str, ...]
    global_batch: int  # strong scaling's
    points: tuple[ScalingPoint, ...]


@dataclass(frozen=True)
class EnergyResult:
    """Energy of one mode's step, read from the device's own counter over one block of steps that
    starts and ends on counter updates (``measure/energy.py``); never estimated."""

    source: str  # "nvml_total_energy" (CUDA: the board) or "rapl_powercap" (CPU packages)
    scope: str  # what the counter covers: the board or packages, every process on them
    joules_per_image: float = value("J", "lower", "energy per image", digits=4, machine=True)  # energy_j / images
    energy_j: float  # the counter's difference over the block
    block_s: float  # the block's wall time, counter update to counter update
    images: int  # every image of every step in the block (steps x batch)
    steps: int
    mean_power_w: float  # energy_j / block_s
    images_per_s: float  # images / block_s (the counter's polling included)
    update_period_ms: float  # the counter's, timed just before the block (NVML: 20-100 ms)
    min_block_s: float  # the block was to last at least this long ...
    min_counter_updates: int  # ... and span this many update periods
    short: bool  # it could not within its time cap: the energy is coarse (off by up to an update)
    warmup_steps: int  # untimed steps before the block (autotuning, compilation)
    other_cpu_share: float | None = None  # CPU: others' share of all cores (RAPL counts them too)
    optimizer: str | None = None  # the training step's optimizer, as in LatencyResult
    rapl_wraps: int = 0  # RAPL counter wrap-arounds undone during the block


RESULT_TYPES: dict[str, type] = {
    "params": ParamCount,
    "flops": FlopCount,
    "minsize": MinInputSize,
    "latency": LatencyResult,
    "memory": MemoryResult,
    "accuracy": TrainResult,
    "roofline": RooflineResult,
    "scaling": ScalingResult,
    "energy": EnergyResult,
}


# where each metric's values are declared (scaling's live on its points, one per world size)
_VALUE_TYPES = {**RESULT_TYPES, "scaling": ScalingPoint}


def declared_values(metric: str, *, headline_only: bool = True) -> dict[str, Value]:
    """``metric``'s declared values in field order: name → :class:`Value`."""
    cls = _VALUE_TYPES.get(metric)
    if cls is None:
        return {}
    found = {f.name: f.metadata["value"] for f in dataclasses.fields(cls) if "value" in f.metadata}
    return {n: v for n, v in found.items() if v.headline or not headline_only}


def value_info(name: str) -> Value | None:
    """The declaration of the value called ``name`` in any metric (value names are unique)."""
    for metric in _VALUE_TYPES:
        found = declared_values(metric, headline_only=False).get(name)
        if found is not None:
            return found
    return None


def _rebuild(hint: Any, value: Any) -> Any:
    """``value`` (plain JSON) as ``hint`` says: dataclasses and tuples rebuilt, the rest as is."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _rebuild(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_rebuild(item, v) for v in value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)
    return value


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**{k: _rebuild(hints[k], v) for k, v in data.items()})


def from_values(metric: str, values: dict[str, Any]) -> Any:
    """A record's ``values`` rebuilt into the dataclass of ``metric``."""
    try:
        cls = RESULT_TYPES[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}") from None
    return _build(cls, values)
