"""Rooflines, measured: per-layer time of a forward pass joined with per-layer MACs and bytes.

- Device peaks come from a short measurement on the device itself: compute is the best of a
  large matrix multiply and a few unpadded 3x3 and 5x5 convolutions (FLOP/s, 2 per multiply-add, only
  taps that touch real data; on CPUs oneDNN's convolutions outrun the BLAS matmul, ~210
  against ~180 GFLOP/s on two Zen 4 cores, and a peak below what layers reach would make MFU
  exceed 1), bandwidth a large copy (bytes read + written per second), all timed with the
  latency harness's timer and taken at the median iteration, as every latency is. The data-sheet figure sits beside them
  where one is known (shared/REFERENCE.md).
- Per-layer time: ``torch.profiler`` on a schedule (a pass unprofiled, two profiled and thrown
  away, five counted), each leaf layer wrapped in a ``record_function`` range by forward hooks;
  CPU time on CPU, the kernels' device time on CUDA, divided by the events each layer has.
- Per-layer work: fvcore MACs and the bytes a layer must move (input + output activations at the
  batch, weights once), as in the exercise-5 tables. Achieved FLOP/s = 2 x MACs / time;
  arithmetic intensity = FLOPs / bytes; the roof at that intensity is min(peak, bandwidth x I).
- Model FLOPs utilization (MFU) = the whole forward pass's achieved FLOP/s / the measured peak.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..config import TimingConfig
from ..models import create
from ..results import Spec
from ..results.types import DevicePeaks, LayerRoof, RooflineResult
from . import workload
from ._device import synchronize, tf32_mode
from .flops import analysis, conv_work_macs, layer_table
from .latency import time_iterations

__all__ = [
    "DevicePeaks",
    "RooflineResult",
    "measure_peaks",
    "measure",
    "measure_unit",
    "DATASHEET",
    "datasheet",
    "layer_times",
    "math_mode",
]

# NVIDIA data sheets, dense (no sparsity): name fragment → TFLOP/s by math mode, and TB/s.
# fp16 equals bf16 on these parts; TF32 is the tensor-core rate, FP32 the CUDA-core rate.
DATASHEET = {
    "H100 80GB HBM3": ({"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}, 3.35),
    "H100 SXM": ({"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}, 3.35),
    "H100 PCIe": ({"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}, 2.0),
    "H200": ({"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}, 4.8),
}


def math_mode(device: torch.device, dtype: str, tf32: bool | None = None) -> str:
    """The math a step runs in: the dtype, except CUDA fp32 with TF32 allowed, which is "tf32"
    (the tensor cores, ~7x the fp32 data-sheet figure on an H100). CPU fp32 is fp32."""
    if device.type == "cuda" and dtype == "fp32" and tf32:
        return "tf32"
    return dtype


def datasheet(device_name: str, mode: str) -> tuple[float, float, str] | None:
    """(FLOP/s in ``mode``, bytes/s, source) from NVIDIA's data sheet, or None when unknown."""
    if "NVL" in device_name:  # H100 NVL / H200 NVL: other clocks and power, not in this table
        return None
    for key, (flops, tbs) in DATASHEET.items():
        if key in device_name and mode in flops:
            return flops[mode] * 1e12, tbs * 1e12, f"NVIDIA data sheet ({key}, {mode}, dense)"
    return None


# FMA pipes per core and their datapath width in bits, by CPU vendor and family: what the CPU's
# data sheet says a core retires per cycle (AMD Zen 3 and Zen 4: two 256-bit FMA pipes, Zen 4
# running AVX-512 through them in two halves; Zen 5: two 512-bit pipes; Intel cores with AVX-512:
# two 512-bit FMA ports on server parts, which is what this table assumes).
FMA_PIPES = {("AuthenticAMD", 23): (2, 256), ("AuthenticAMD", 25): (2, 256),
             ("AuthenticAMD", 26): (2, 512)}  # fmt: skip


MAX_CLOCK_SOURCE = "cpufreq cpuinfo_max_freq"  # the one clock reading that bounds the CPU


def cpu_roof(threads: int | None = None) -> tuple[float | None, dict, str]:
    """The fp32 data-sheet roof of this CPU for ``threads`` cores: cores x FMA pipes x fp32 lanes
    per pipe x 2 (multiply and add) x clock. Every factor is recorded, "unknown" where the
    machine does not say, and the roof is None when any factor is unknown. The clock is the one
    the kernel reports (cpufreq's maximum, else /proc/cpuinfo's "cpu MHz", which on a VM is the
    nominal one). A roof must bound what the CPU can do, so only a known maximum clock makes one
    (cpufreq's ``cpuinfo_max_freq``): with the nominal clock alone there is no data-sheet roof,
    because the CPU may boost above it."""
    from ..env import cpu_facts

    facts = cpu_facts()
    flags = set(facts.get("flags") or ())
    pipes = FMA_PIPES.get((facts.get("vendor"), facts.get("family")))
    if pipes is None and facts.get("vendor") == "GenuineIntel" and "avx512f" in flags:
        pipes = (2, 512)
    elif pipes is None and "fma" in flags:
        pipes = (2, 256)
    lanes = "unknown"
    if "fma" in flags and pipes:
        isa = 512 if "avx512f" in flags else 256
        lanes = min(isa, pipes[1]) // 32
    cores = facts.get("physical_cores") or "unknown"
    if threads and isinstance(cores, int):
        cores = min(cores, threads)
    factors = {
        "cores": cores,
        "fma_pipes_per_core": pipes[0] if pipes else "unknown",
        "fp32_lanes_per_pipe": lanes,
        "flop_per_fma": 2,
        "clock_hz": facts.get("clock_hz") or "unknown",
        "clock_source": facts.get("clock_source") or "unknown",
        "cpu": f"{facts.get('vendor')} family {facts.get('family')} model {facts.get('model')}",
    }
    numbers = [factors[k] for k in ("cores", "fma_pipes_per_core", "fp32_lanes_per_pipe", "clock_hz")]
    if any(not isinstance(v, (int, float)) for v in numbers):
        return None, factors, "unknown (a factor is not readable)"
    if factors["clock_source"] != MAX_CLOCK_SOURCE:
        return None, factors, ("unknown: no maximum clock (only the nominal one, "
                               f"{factors['clock_source']}; the CPU may boost above it)")  # fmt: skip
    roof = float(numbers[0] * numbers[1] * numbers[2] * 2 * numbers[3])
    return roof, factors, "cores x FMA pipes x fp32 lanes x 2 x clock"


# Probe shapes. Convolutions without padding, so that every tap multiplies real data and the
# count below is exact: a padded 3x3 on a 7x7 map does (7 / 9)^2 = 60% of the work a tap count
# at the map's size says, and its "rate" would overstate the machine by the rest. Wide channels on
# small maps are where a CNN's costliest layers sit and where oneDNN and cuDNN reach their best
# (two Zen 4 cores: 203-212 GFLOP/s for these, medians, against 141-179 for BLAS matmuls). A 5x5
# too: AlexNet's 5x5 layer (stage2.0, 96 -> 256 channels on 26x26) ran at 219 GFLOP/s there,
# above every 3x3 probe (207-209), and a peak below a layer is not a peak.
MATMUL_SIDES = {"cpu": (2048,), "cuda": (4096, 8192)}
CONV_SHAPES = {  # (batch, channels, input side, kernel); the output side is kernel - 1 less
    "cpu": ((16, 256, 16, 3), (16, 512, 9, 3), (8, 512, 16, 3), (16, 256, 16, 5)),
    "cuda": ((256, 256, 30, 3), (256, 512, 16, 3), (512, 512, 9, 3), (256, 256, 30, 5)),
}


def conv_flops(batch: int, channels: int, side: int, kernel: int = 3) -> int:
    """FLOPs of an unpadded ``kernel`` x ``kernel`` convolution, ``channels`` in and out: 2 per
    multiply-add, one multiply-add per tap, kernel^2 taps per output element and input channel."""
    return 2 * batch * channels * channels * kernel**2 * (side - kernel + 1) ** 2


def _rate(work: float, times_ms: list[float]) -> float:
    """Work per second at the median iteration: the statistic every latency in a run has, so that
    a utilization divides like by like (a fastest iteration would be a peak the machine reached
    once, not a rate it runs at)."""
    return work / (statistics.median(times_ms) / 1e3)


def _probe_flops(device: torch.device, torch_dtype, cuda: bool) -> dict[str, float]:
    """FLOP/s of large matmuls and unpadded convolutions (2 per multiply-add), each at its
    median iteration: oneDNN's convolutions outrun the BLAS matmul on some CPUs and not on
    others, and one shape can miss the best blocking, so the best of several is the peak."""
    kind = "cuda" if cuda else "cpu"
    cfg = TimingConfig(warmup_runs=2, min_runs=5, min_time_s=0.5 if cuda else 0.2, max_runs=200)
    out: dict[str, float] = {}
    for n in MATMUL_SIDES[kind]:
        a = torch.randn(n, n, device=device, dtype=torch_dtype)
        b = torch.randn(n, n, device=device, dtype=torch_dtype)
        times, _ = time_iterations(lambda a=a, b=b: torch.mm(a, b), device, cfg)
        out[f"matmul {n}"] = _rate(2 * n**3, times)
    for batch, ch, side, k in CONV_SHAPES[kind]:
        x = torch.randn(batch, ch, side, side, device=device, dtype=torch_dtype)
        w = torch.randn(ch, ch, k, k, device=device, dtype=torch_dtype)
        with torch.inference_mode():
            conv = lambda x=x, w=w: torch.nn.functional.conv2d(x, w)  # noqa: E731
            times, _ = time_iterations(conv, device, cfg)
        out[f"conv{k}x{k} {batch}x{ch}x{side}"] = _rate(conv_flops(batch, ch, side, k), times)
    return out


def _probe_at_cores(
    device: torch.device, torch_dtype, probes: dict[str, float], peak: float
) -> float:
    """CPU: the probes again at one thread per core, added to ``probes`` (named so); the peak they
    give. When the run oversubscribes the cores, that is the machine's peak; when the run uses
    fewer threads than cores, its own probes are its peak (these are recorded beside, never its
    roof)."""
    from ..env import cpu_facts

    run_threads = torch.get_num_threads()
    cores = cpu_facts().get("physical_cores")
    if not cores or cores == run_threads:
        return peak
    torch.set_num_threads(cores)
    try:
        at_cores = _probe_flops(device, torch_dtype, False)
    finally:
        torch.set_num_threads(run_threads)
    probes.update({f"{k}, {cores} threads": v for k, v in at_cores.items()})
    return max(peak, *at_cores.values()) if cores < run_threads else peak


def _probe_bandwidth(device: torch.device, cuda: bool) -> tuple[float, int]:
    """(bytes/s of a large fp32 copy, read + written, at the median iteration; bytes copied)."""
    cfg = TimingConfig(warmup_runs=2, min_runs=5, min_time_s=0.3 if not cuda else 0.5, max_runs=200)
    elements = (1 << 28) if cuda else (1 << 25)  # 1 GiB / 128 MiB of fp32
    src = torch.empty(elements, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    times, _ = time_iterations(lambda: dst.copy_(src), device, cfg)
    return _rate(2 * src.numel() * 4, times), src.numel() * 4


def _sheet(device: torch.device, mode: str):
    """(data-sheet FLOP/s, bytes/s, source, the CPU roof's factors): NVIDIA's table on CUDA,
    :func:`cpu_roof` on a CPU; None where unknown."""
    if device.type != "cuda":
        flops, factors, source = cpu_roof(torch.get_num_threads())
        return flops, None, source, factors
    found = datasheet(torch.cuda.get_device_name(device), mode)
    return (*found, None) if found else (None, None, None, None)


def measure_peaks(device: torch.device, dtype: str = "fp32", tf32: bool = False) -> DevicePeaks:
    """The device's peaks in the math mode of ``dtype`` (and, CUDA fp32, ``tf32``)."""
    cuda = device.type == "cuda"
    torch_dtype = workload.TORCH_DTYPES[dtype]
    if not cuda:
        torch_dtype = torch.float32  # reduced-precision matmul on CPU is emulated: not a peak
    # a CPU is probed in fp32 whatever the run's dtype: say so (its bf16 rooflines are refused)
    mode = math_mode(device, dtype, tf32) if cuda else "fp32"
    # TF32 set through the API this torch has; the record holds what torch reports inside the
    # block (cuBLAS's default is off, cuDNN's on: left to the defaults a probe would measure its
    # matmul in fp32 and its convolution in TF32)
    with tf32_mode(mode == "tf32") as flags:
        probes = _probe_flops(device, torch_dtype, cuda)
    peak = max(probes.values())
    if not cuda:
        peak = _probe_at_cores(device, torch_dtype, probes, peak)
    bandwidth, copy_bytes = _probe_bandwidth(device, cuda)
    sheet_flops, sheet_bw, source, factors = _sheet(device, mode)
    mine = {k: v for k, v in probes.items() if "threads" not in k}
    matmuls = {k: v for k, v in mine.items() if k.startswith("matmul")}
    convs = {k: v for k, v in mine.items() if k.startswith("conv")}
    return DevicePeaks(
        device=str(device),
        dtype=dtype,
        matmul_n=int(max(matmuls, key=matmuls.get).split()[1].rstrip(",")),
        matmul_flops=max(matmuls.values()),
        conv_flops=max(convs.values()),
        peak_flops=peak,
        copy_bytes=copy_bytes,
        peak_bytes_per_s=bandwidth,
        datasheet_flops=sheet_flops,
        datasheet_bytes_per_s=sheet_bw,
        datasheet_source=source,
        datasheet_factors=factors,
        probes=probes,
        math_mode=mode,
        tf32_flags={"matmul": flags["matmul_allow_tf32"], "cudnn": flags["cudnn_allow_tf32"]}
        if cuda
        else None,
    )


WHOLE = "<forward>"  # the profiler range around a whole forward pass

# torch.profiler's schedule, in forward passes: ``wait`` run unprofiled, ``warmup`` run under the
# profiler and thrown away (Kineto can drop kernels at the start of a session: CUPTI's buffers
# and callbacks are still being set up), ``active`` counted. A layer's time is divided by the
# events it actually has, and a layer with other than ``active`` x its calls per pass is flagged.
PROFILE_WAIT, PROFILE_WARMUP, PROFILE_ACTIVE = 1, 2, 5

# what Kineto prints to file descriptor 2 on every session, whatever happened ("profiler_start",
# "gpuGetDeviceCount failed" on a CUDA build without a GPU, its stage lines): dropped so it does
# not land in the progress display. Any other line, and any line that names CUPTI (why kernels
# are missing: "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES", a CUPTI that failed to start), is kept.
KINETO_NOISE = ("profiler_start", "profiler_stop", "gpuGetDeviceCount failed", "Completed Stage:")


def profiler_messages(text: str) -> list[str]:
    """The lines of what the profiler's native library printed that are not Kineto's known
    noise; a line naming CUPTI is always kept."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines
            if line and ("cupti" in line.lower() or not any(n in line for n in KINETO_NOISE))]  # fmt: skip


@contextlib.contextmanager
def _native_stderr(messages: list[str]):
    """Capture file descriptor 2 for the block (Kineto writes there directly, past Python);
    afterwards the lines that :func:`profiler_messages` keeps go to ``messages`` and to stderr.
    Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    sink = tempfile.TemporaryFile()
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        kept = profiler_messages(sink.read().decode(errors="replace"))
        sink.close()
        messages.extend(kept)
        for line in kept:
            print(f"torch.profiler: {line}", file=sys.stderr)


EMPTY = "<empty range>"  # a range around nothing, timed as the layers are: the profiler's own cost
EMPTY_CALLS = 200


@dataclass(frozen=True)
class _Profiled:
    layer_ms: dict[str, float]  # ms per forward pass of each leaf layer, and WHOLE
    timing: str  # "cpu_time" or "device_time"
    ranges: float  # leaf-layer ranges per forward pass
    range_inside_ms: float  # what one range adds to its own layer's time
    range_ms: float  # what one range adds to the pass: entering and leaving it, hooks included
    active_steps: int = 0  # forward passes the profiler counted (the schedule's ``active``)
    # layer → events recorded, for each layer with other than active_steps x its calls per pass
    short_of_events: dict[str, int] = dataclasses.field(default_factory=dict)
    messages: tuple[str, ...] = ()  # what the native profiler printed, Kineto's noise left out


class _Ranges:
    """A ``record_function`` range around every leaf layer of ``model`` (and ``self.empty``, an
    identity layer that times the ranges' own cost), opened and closed by forward hooks while
    the object is entered; ``calls`` counts the ranges opened per layer."""

    def __init__(self, model: nn.Module):
        self.names = {m: n for n, m in workload.leaf_modules(model)}
        self.empty = nn.Identity()
        self.names[self.empty] = EMPTY
        self.calls: collections.Counter[str] = collections.Counter()
        self._open: dict[nn.Module, object] = {}
        self._handles: list = []

    def _pre(self, module, _inputs):
        from torch.profiler import record_function

        self.calls[self.names[module]] += 1
        rf = record_function(f"layer::{self.names[module]}")
        rf.__enter__()
        self._open[module] = rf

    def _post(self, module, _inputs, _output):
        self._open.pop(module).__exit__(None, None, None)

    def __enter__(self) -> _Ranges:
        self._handles = [m.register_forward_pre_hook(self._pre) for m in self.names]
        self._handles += [m.register_forward_hook(self._post) for m in self.names]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def empty_ms(self) -> float:
        """ms per call of the identity layer, over ``EMPTY_CALLS`` calls."""
        x = torch.empty(1)
        t0 = time.perf_counter()
        for _ in range(EMPTY_CALLS):
            self.empty(x)
        return (time.perf_counter() - t0) * 1e3 / EMPTY_CALLS


def _scheduled_passes(forward, device: torch.device, ranges: _Ranges, active: int,
                      messages: list[str]):  # fmt: skip
    """(the profiler, ms per hooked empty range) over PROFILE_WAIT + PROFILE_WARMUP + ``active``
    forward passes; the empty ranges run in the last counted step, in the same session."""
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = PROFILE_WAIT + PROFILE_WARMUP + active
    plan = schedule(wait=PROFILE_WAIT, warmup=PROFILE_WARMUP, active=active, repeat=1)
    hooked_ms = 0.0
    with _native_stderr(messages), profile(activities=activities, schedule=plan) as prof:
        for step in range(steps):
            with record_function(f"layer::{WHOLE}"):
                forward()
            synchronize(device)  # a step's kernels end inside its step: none is cut off
            if step == steps - 1:
                hooked_ms = ranges.empty_ms()
            prof.step()
    return prof, hooked_ms


def _profile_layers(model: nn.Module, forward, device: torch.device,
                    active: int = PROFILE_ACTIVE) -> _Profiled:  # fmt: skip
    """ms per forward pass of each leaf layer of ``model`` while ``forward()`` runs (the measured
    step: its dtype, cast and memory format), and of the whole forward (``WHOLE``), over
    ``active`` profiled passes after the schedule's wait and warm-up; then, in the same session,
    the cost of one range: an identity layer with the same hooks, called ``EMPTY_CALLS`` times,
    against the same calls without hooks or profiler."""
    ranges = _Ranges(model)
    bare_ms = min(ranges.empty_ms() for _ in range(3))  # no hooks, no profiler
    messages: list[str] = []
    with ranges:
        forward()  # unprofiled: how many times each layer runs in one pass
        synchronize(device)
        per_pass = dict(ranges.calls)
        prof, hooked_ms = _scheduled_passes(forward, device, ranges, active, messages)
    totals = layer_totals(prof.key_averages(), device.type)
    empty_us, empty_events = totals.pop(EMPTY, (0.0, 0))
    short = short_of_events(totals, per_pass, active)
    if short:
        warnings.warn(f"the profiler recorded other than {active} passes of layers {short}: "
                      "their times are means over the events it has", stacklevel=2)  # fmt: skip
    return _Profiled(
        layer_times(totals, per_pass), "device_time" if device.type == "cuda" else "cpu_time",
        float(sum(per_pass.values())), empty_us / empty_events / 1e3 if empty_events else 0.0,
        max(0.0, hooked_ms - bare_ms), active, short, tuple(messages),
    )  # fmt: skip


def layer_totals(events, device_type: str) -> dict[str, tuple[float, int]]:
    """(total µs, events) of each ``layer::`` range from the profiler's averaged events: CPU
    time on a CPU, the kernels' device time on CUDA.

    Only the CPU-side row of a range counts: on CUDA a ``record_function`` range yields a CPU row,
    whose device time is its kernels' time joined by correlation id, and a GPU-annotation row
    spanning the range on the GPU timeline (gaps included); the latter must not overwrite it."""
    from torch.autograd import DeviceType

    totals: dict[str, tuple[float, int]] = {}
    for evt in events:
        if not evt.key.startswith("layer::") or evt.device_type != DeviceType.CPU:
            continue
        if device_type == "cuda":
            total_us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        else:
            total_us = evt.cpu_time_total
        totals[evt.key[len("layer::") :]] = (total_us, evt.count)
    return totals


def layer_times(totals: dict[str, tuple[float, int]],
                per_pass: dict[str, int] | None = None) -> dict[str, float]:  # fmt: skip
    """ms per forward pass of each range in ``totals`` (:func:`layer_totals`): its total over the
    passes it was recorded in, its events / its calls per pass (1 where not given: WHOLE)."""
    per_pass = per_pass or {}
    return {name: total_us / (count / per_pass.get(name, 1)) / 1e3
            for name, (total_us, count) in totals.items() if count}  # fmt: skip


def short_of_events(totals: dict[str, tuple[float, int]], per_pass: dict[str, int],
                    active: int) -> dict[str, int]:  # fmt: skip
    """layer → events recorded, for each layer (and WHOLE) whose events are not ``active`` x
    its calls per pass; a layer that ran but has no event at all is there with 0."""
    expected = {WHOLE: 1, **per_pass}
    return {name: totals.get(name, (0.0, 0))[1] for name, calls in expected.items()
            if totals.get(name, (0.0, 0))[1] != active * calls}  # fmt: skip


def _moved(t: torch.Tensor, size: int) -> int:
    """Bytes a layer computing in ``size``-byte elements moves for tensor ``t``: ``t`` itself, and
    where autocast must cast it first (a wider tensor: fp32 weights or input into a bf16 layer),
    the cast too — read at its size, write and read again at ``size`` — inside the layer's time."""
    wide = t.element_size()
    return t.numel() * (wide + 2 * size if wide > size else wide)


def _layer_bytes(model: nn.Module, forward) -> dict[str, tuple[int, int, int, int | None]]:
    """(input, output, weight) bytes of each leaf layer in one call of ``forward``, from the
    tensors' own element sizes: bf16/fp16 activations are 2 bytes, not 4. Under autocast a layer
    casts its fp32 weights (and an fp32 input) on every call, and those bytes count; with cast
    weights there is nothing to cast. Fourth: a convolution's multiply-adds on real data at its
    input (``flops.conv_work_macs``), None for any other layer."""
    out: dict[str, tuple[int, int, int, int | None]] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            size = output.element_size() if torch.is_tensor(output) else 4
            ins = sum(_moved(i, size) for i in inputs if torch.is_tensor(i))
            outs = output.numel() * output.element_size() if torch.is_tensor(output) else 0
            weights = sum(_moved(p, size) for p in module.parameters(recurse=False))
            work = conv_work_macs(module, inputs[0].shape) if isinstance(module, nn.Conv2d) else None
            out[name] = (ins, outs, weights, work)

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in workload.leaf_modules(model)]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return out


def _peaks_for(spec: Spec, peaks: DevicePeaks | None) -> DevicePeaks:
    """``peaks`` (measured here when None), refused unless in the math mode ``spec`` runs in."""
    device = torch.device(spec.device)
    if device.type == "cpu" and spec.dtype != "fp32":
        from .train import Unsupported

        raise Unsupported(f"no {spec.dtype} peak on a CPU (reduced-precision probes are emulated "
                          "there): a roofline would judge these layers against fp32")  # fmt: skip
    mode = math_mode(device, spec.dtype, spec.tf32)
    peaks = peaks or measure_peaks(device, spec.dtype, tf32=bool(spec.tf32))
    if peaks.math_mode is not None and peaks.math_mode != mode:
        raise ValueError(f"peaks measured in {peaks.math_mode}, the layers run in {mode}")
    return peaks


def _layer_rows(layers, moved_by_layer, profiled: _Profiled, batch: int,
                peaks: DevicePeaks) -> tuple[list[LayerRoof], int]:  # fmt: skip
    """(a roofline row per convolution and linear layer, multiply-adds of the whole pass: fvcore's
    count, a convolution's only on real data)."""
    layer_ms, timing = profiled.layer_ms, profiled.timing
    rows = []
    work_macs = 0
    for lay in layers:
        is_layer = lay.layer.startswith("Conv") or lay.layer == "Linear"
        ins, outs, weights, work = moved_by_layer.get(lay.name, (0, 0, 0, None))
        work = lay.macs * batch if work is None else work  # fvcore's count is per image
        work_macs += work
        if not is_layer:
            continue
        ms = layer_ms.get(lay.name)
        if not ms:  # a layer that ran has a time: none means the join or the profiler broke
            raise RuntimeError(f"the profiler gave layer {lay.name} no {timing} ({ms!r})")
        moved = ins + outs + weights
        flop = 2 * work
        intensity = flop / moved
        roof = min(peaks.peak_flops, peaks.peak_bytes_per_s * intensity)
        achieved = flop / (ms / 1e3)
        rows.append(LayerRoof(
            name=lay.name, layer=lay.layer, kernel=lay.kernel, macs=lay.macs * batch,
            bytes_moved=moved, time_ms=ms, achieved_flops=achieved, intensity=intensity, roof_flops=roof,
            bound="", fraction_of_roof=achieved / roof, work_macs=work,
        ))  # fmt: skip
        rows[-1] = dataclasses.replace(rows[-1], bound=rows[-1].bound_at(peaks.ridge))
    return rows, work_macs


def measure(model: nn.Module, spec: Spec, peaks: DevicePeaks | None = None) -> RooflineResult:
    """The roofline of ``spec``'s forward pass as measured (dtype, cast, memory format), judged
    against ``peaks``, which must be of the same math mode."""
    device = torch.device(spec.device)
    peaks = _peaks_for(spec, peaks)
    w = workload.build(spec, model=model)  # moves (and casts) the model, eval mode
    times, _ = time_iterations(
        w.forward, device, TimingConfig(warmup_runs=1, min_runs=3, min_time_s=0.3)
    )
    model_ms = statistics.median(times)
    with torch.no_grad():
        by_module = analysis(model, w.x).by_module()
        layers = layer_table(model, w.x, by_module)
    moved_by_layer = _layer_bytes(model, w.forward)
    profiled = _profile_layers(model, w.forward, device)
    rows, work_macs = _layer_rows(layers, moved_by_layer, profiled, spec.batch_size, peaks)
    # the same convention as the probes: work done on real data, 2 FLOPs per multiply-add
    achieved_model = 2 * work_macs / (model_ms / 1e3)
    mfu = achieved_model / peaks.peak_flops
    # above the compute roof: the peak is broken. (A memory-bound layer above the bandwidth roof
    # is not: its working set sits in cache, and the copy probe measures DRAM.)
    above = mfu > 1 or any(r.above_compute_roof(peaks.peak_flops) for r in rows)
    whole = profiled.layer_ms.get(WHOLE)
    share, overhead = _outside_share(rows, whole, profiled)
    return RooflineResult(
        peak_flops=peaks.peak_flops,
        peak_bytes_per_s=peaks.peak_bytes_per_s,
        ridge_flop_per_byte=peaks.ridge,
        datasheet_flops=peaks.datasheet_flops,
        datasheet_bytes_per_s=peaks.datasheet_bytes_per_s,
        peaks=peaks,
        timing=profiled.timing,
        model_ms=model_ms,
        model_achieved_flops=achieved_model,
        mfu=mfu,
        layers=tuple(rows),
        roof_underestimated=above,
        other_time_share=share,
        mfu_datasheet=achieved_model / peaks.datasheet_flops if peaks.datasheet_flops else None,
        profiled_ms=whole,
        profiler_overhead_ms=overhead,
        profiler_steps=profiled.active_steps,
        layers_short_of_events=profiled.short_of_events or None,
        profiler_messages=tuple(profiled.messages),
    )


def _outside_share(rows: list[LayerRoof], whole_ms: float | None,
                   p: _Profiled) -> tuple[float | None, float | None]:  # fmt: skip
    """(share of the forward pass outside convolution and linear layers, profiler overhead ms),
    the profiler's own cost taken out, both as measured in the same session: each leaf range
    adds ``range_ms`` to the pass and ``range_inside_ms`` to its own layer, so

        outside = 1 - (conv/linear ms - n_conv_linear x inside) / (whole ms - ranges x range_ms).

    On CUDA the layers' device time holds no host overhead: nothing is taken out there."""
    if not whole_ms:
        return None, None
    if p.timing != "cpu_time":
        return max(0.0, 1 - sum(r.time_ms or 0.0 for r in rows) / whole_ms), 0.0
    overhead = p.ranges * p.range_ms
    in_conv_linear = sum(r.time_ms or 0.0 for r in rows) - len(rows) * p.range_inside_ms
    return min(1.0, max(0.0, 1 - in_conv_linear / max(whole_ms - overhead, 1e-9))), overhead


def measure_unit(spec: Spec, ctx) -> RooflineResult:
    """The harness entry: a fresh model, judged against the peaks measured once for the run."""
    if ctx.peaks is None:
        raise RuntimeError(f"no device peaks for this run: {ctx.peaks_error or 'not measured'}")
    return measure(create(spec.model, image_size=spec.image_size), spec, ctx.peaks)
