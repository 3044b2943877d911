"""Rooflines, measured: per-layer time of a forward pass joined with per-layer MACs and bytes.

- Device peaks come from a short measurement on the device itself: compute is the better of a
  large matrix multiply and a large 3x3 convolution (FLOP/s, 2 per multiply-add; on CPUs oneDNN's
  convolutions outrun the BLAS matmul, ~183 against ~140 GFLOP/s on the reference machine, and
  a peak below what layers reach would make MFU exceed 1), bandwidth a large copy (bytes read +
  written per second), all timed with the latency harness's timer. The data-sheet figure sits beside them
  where one is known (shared/REFERENCE.md).
- Per-layer time: ``torch.profiler`` over a few forward passes, each leaf layer wrapped in a
  ``record_function`` range by forward hooks; CPU time on CPU, the kernels' device time on CUDA.
- Per-layer work: fvcore MACs and the bytes a layer must move (input + output activations at the
  batch, weights once), as in the exercise-5 tables. Achieved FLOP/s = 2 x MACs / time;
  arithmetic intensity = FLOPs / bytes; the roof at that intensity is min(peak, bandwidth x I).
- Model FLOPs utilization (MFU) = the whole forward pass's achieved FLOP/s / the measured peak.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys

import torch
from torch import nn

from ..config import TimingConfig
from ..models import create
from ..results import Spec
from ..results.types import DevicePeaks, LayerRoof, RooflineResult
from . import workload
from .flops import analysis, example_input, layer_table
from .latency import time_iterations

__all__ = [
    "DevicePeaks",
    "RooflineResult",
    "measure_peaks",
    "measure",
    "measure_unit",
    "DATASHEET",
]

# NVIDIA data sheets, dense: name fragment → (FP32 TFLOP/s, BF16 TFLOP/s, TB/s)
DATASHEET = {"H100 80GB HBM3": (67.0, 989.0, 3.35), "H100 SXM": (67.0, 989.0, 3.35),
             "H100 PCIe": (51.0, 756.0, 2.0), "H200": (67.0, 989.0, 4.8)}  # fmt: skip


def measure_peaks(device: torch.device, dtype: str = "fp32") -> DevicePeaks:
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1536
    torch_dtype = workload.TORCH_DTYPES[dtype]
    if not cuda:
        torch_dtype = torch.float32  # reduced-precision matmul on CPU is emulated: not a peak
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    cfg = TimingConfig(warmup_runs=2, min_runs=5, min_time_s=0.3 if not cuda else 0.5, max_runs=200)
    times, _ = time_iterations(lambda: torch.mm(a, b), device, cfg)
    matmul_flops = 2 * n**3 / (statistics.median(times) / 1e3)
    batch, ch, side = (256 if cuda else 32), 256, 28
    x = torch.randn(batch, ch, side, side, device=device, dtype=torch_dtype)
    w = torch.randn(ch, ch, 3, 3, device=device, dtype=torch_dtype)
    with torch.inference_mode():
        times, _ = time_iterations(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, cfg)
    conv_flops = 2 * batch * ch * ch * 9 * side * side / (statistics.median(times) / 1e3)
    elements = (1 << 28) if cuda else (1 << 25)  # 1 GiB / 128 MiB of fp32
    src = torch.empty(elements, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    times, _ = time_iterations(lambda: dst.copy_(src), device, cfg)
    bandwidth = 2 * src.numel() * 4 / (statistics.median(times) / 1e3)
    sheet_flops = sheet_bw = None
    if cuda:
        name = torch.cuda.get_device_name(device)
        for key, (f32, b16, tbs) in DATASHEET.items():
            if key in name:
                sheet_flops = (f32 if dtype == "fp32" else b16) * 1e12
                sheet_bw = tbs * 1e12
                break
    return DevicePeaks(
        device=str(device),
        dtype=dtype,
        matmul_n=n,
        matmul_flops=matmul_flops,
        conv_flops=conv_flops,
        peak_flops=max(matmul_flops, conv_flops),
        copy_bytes=src.numel() * 4,
        peak_bytes_per_s=bandwidth,
        datasheet_flops=sheet_flops,
        datasheet_bytes_per_s=sheet_bw,
    )


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what the profiler's native library (kineto) prints straight to file descriptor 2
    ("profiler_start", "gpuGetDeviceCount failed" on a CUDA build without a GPU): it would land in
    the middle of the progress display. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _profile_layers(
    model: nn.Module, x: torch.Tensor, device: torch.device, runs: int = 5
) -> tuple[dict, str]:
    from torch.profiler import ProfilerActivity, profile, record_function

    names = {m: n for n, m in workload.leaf_modules(model)}
    open_ranges: dict[nn.Module, record_function] = {}

    def pre(module, _inputs):
        rf = record_function(f"layer::{names[module]}")
        rf.__enter__()
        open_ranges[module] = rf

    def post(module, _inputs, _output):
        open_ranges.pop(module).__exit__(None, None, None)

    handles = [m.register_forward_pre_hook(pre) for m in names] + [
        m.register_forward_hook(post) for m in names
    ]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        with torch.inference_mode():
            for _ in range(2):
                model(x)
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            with _quiet_native_stderr(), profile(activities=activities) as prof:
                for _ in range(runs):
                    model(x)
                torch.cuda.synchronize(device) if device.type == "cuda" else None
    finally:
        for h in handles:
            h.remove()
    times: dict[str, float] = {}
    timing = "device_time" if device.type == "cuda" else "cpu_time"
    for evt in prof.key_averages():
        if not evt.key.startswith("layer::"):
            continue
        if device.type == "cuda":
            total_us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        else:
            total_us = evt.cpu_time_total
        times[evt.key[len("layer::") :]] = total_us / runs / 1e3  # ms per forward
    return times, timing


def measure(model: nn.Module, spec: Spec, peaks: DevicePeaks | None = None) -> RooflineResult:
    device = torch.device(spec.device)
    peaks = peaks or measure_peaks(device, spec.dtype)
    forward = workload.build(spec, model=model).forward  # moves the model, eval mode
    times, _ = time_iterations(
        forward, device, TimingConfig(warmup_runs=2, min_runs=5, min_time_s=0.5)
    )
    model_ms = statistics.median(times)
    x = example_input(spec, device)
    with torch.no_grad():
        by_module = analysis(model, x).by_module()
        layers = layer_table(model, x, by_module)
    layer_ms, timing = _profile_layers(model, x, device)
    batch = spec.batch_size
    rows = []
    total_macs = 0
    for lay in layers:
        total_macs += lay.macs
        if not (lay.layer.startswith("Conv") or lay.layer == "Linear"):
            continue
        ms = layer_ms.get(lay.name)
        moved = batch * (lay.input_bytes + lay.output_bytes) + lay.weight_bytes
        flop = 2 * lay.macs * batch
        intensity = flop / moved
        roof = min(peaks.peak_flops, peaks.peak_bytes_per_s * intensity)
        achieved = flop / (ms / 1e3) if ms else None
        rows.append(LayerRoof(
            name=lay.name, layer=lay.layer, kernel=lay.kernel, macs=lay.macs * batch,
            bytes_moved=moved, time_ms=ms, achieved_flops=achieved, intensity=intensity, roof_flops=roof,
            bound="memory" if intensity < peaks.ridge else "compute",
            fraction_of_roof=achieved / roof if achieved else None,
        ))  # fmt: skip
    achieved_model = 2 * total_macs * batch / (model_ms / 1e3)
    return RooflineResult(
        peak_flops=peaks.peak_flops,
        peak_bytes_per_s=peaks.peak_bytes_per_s,
        ridge_flop_per_byte=peaks.ridge,
        datasheet_flops=peaks.datasheet_flops,
        datasheet_bytes_per_s=peaks.datasheet_bytes_per_s,
        peaks=peaks,
        timing=timing,
        model_ms=model_ms,
        model_achieved_flops=achieved_model,
        mfu=achieved_model / peaks.peak_flops,
        layers=tuple(rows),
    )


def measure_unit(spec: Spec, ctx) -> RooflineResult:
    """The harness entry: a fresh model, judged against the peaks measured once for the run."""
    if ctx.peaks is None:
        raise RuntimeError(f"no device peaks for this run: {ctx.peaks_error or 'not measured'}")
    return measure(create(spec.model, image_size=spec.image_size), spec, ctx.peaks)
