"""Latency of inference and of a training step, per batch size.

Method (``torch.utils.benchmark`` and airbench/nanoGPT habits):

- warm-up iterations first, never timed (on CUDA they include cuDNN's autotuning trials when
  ``cudnn.benchmark`` is on, and ``torch.compile``'s compilation, which is timed apart as
  ``compile_s``);
- one synchronized call estimates the iteration time; then ``n`` iterations are timed, ``n``
  chosen so that both ``min_runs`` and ``min_time_s`` are reached (capped at ``max_runs``);
- CUDA: a pair of CUDA events around each iteration and a single synchronize at the end, so that
  the host never stalls the queue inside the measurement; CPU: ``time.perf_counter`` around each
  iteration, with torch's thread count fixed by the runner and recorded in the spec;
- statistics over the per-iteration times: min, median, mean, p90, p99, IQR, standard deviation;
  ``images_per_s = batch / median``. IQR / median above 10% marks the record ``unstable``.
- CPU machines are shared: the CPU time that *other* processes used during the timed loop is
  measured (``other_cpu_share``, as a share of all cores' time); above 10% the measurement is
  repeated once and, if still contended, kept and flagged ``contended``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import get_spec
from ..results import Spec
from ._device import autocast, synchronize

__all__ = [
    "TimingConfig",
    "LatencyResult",
    "CpuContention",
    "time_iterations",
    "timing_stats",
    "make_step",
    "measure",
]


@dataclass(frozen=True)
class TimingConfig:
    warmup_runs: int = 2  # untimed iterations before the estimate
    min_runs: int = 5  # timed iterations, at least
    min_time_s: float = 1.0  # timed wall time, at least
    max_runs: int = 200  # timed iterations, at most
    unstable_iqr_ratio: float = 0.10  # IQR / median above this → unstable
    contended_share: float = 0.10  # other processes' share of CPU time above this → contended
    lr: float = 0.01  # SGD learning rate of the timed training step


@dataclass(frozen=True)
class LatencyResult:
    spec: Spec
    timer: str  # "cuda_event" or "perf_counter"
    warmup_runs: int
    n_runs: int  # timed iterations behind the statistics
    latency_ms_min: float
    latency_ms_p50: float
    latency_ms_mean: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_iqr: float
    latency_ms_std: float
    iqr_over_median: float
    images_per_s: float  # batch_size / median latency
    unstable: bool  # iqr_over_median above the threshold
    other_cpu_share: float | None  # CPU: other processes' share of all cores during timing
    contended: bool  # other_cpu_share above the threshold even after one repeat
    attempts: int  # 1, or 2 when the first attempt was contended
    compile_s: float | None  # first call with torch.compile, compilation included
    cudnn_benchmark: bool | None  # CUDA only


class CpuContention:
    """Measures the CPU time other processes use while the block runs, as a share of all cores."""

    def __enter__(self) -> CpuContention:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self._sys0 = psutil.cpu_times()
        self._own0 = self._own()
        self._t0 = time.perf_counter()
        return self

    def _own(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _busy(t) -> float:
        return (
            sum(t)
            - t.idle
            - getattr(t, "iowait", 0.0)
            - getattr(t, "guest", 0.0)
            - getattr(t, "guest_nice", 0.0)
        )

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t0
        busy = self._busy(self._psutil.cpu_times()) - self._busy(self._sys0)
        own = self._own() - self._own0
        cpus = os.cpu_count() or 1
        self.other_share = max(0.0, busy - own) / (wall * cpus) if wall > 0 else 0.0


def time_iterations(
    fn: Callable[[], object], device: torch.device, cfg: TimingConfig
) -> tuple[list[float], str]:
    """Per-iteration times in milliseconds, after warm-up, and the timer used."""
    for _ in range(cfg.warmup_runs):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    fn()  # one more warm-up that also estimates the iteration time
    synchronize(device)
    estimate = max(time.perf_counter() - t0, 1e-6)
    n = min(cfg.max_runs, max(cfg.min_runs, math.ceil(cfg.min_time_s / estimate)))
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for start, end in zip(starts, ends, strict=True):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)], "cuda_event"
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times, "perf_counter"


def timing_stats(times_ms: list[float], batch_size: int) -> dict[str, float]:
    t = np.asarray(times_ms, dtype=np.float64)
    p25, p50, p75, p90, p99 = np.percentile(t, [25, 50, 75, 90, 99])
    return dict(
        n_runs=int(t.size),
        latency_ms_min=float(t.min()),
        latency_ms_p50=float(p50),
        latency_ms_mean=float(t.mean()),
        latency_ms_p90=float(p90),
        latency_ms_p99=float(p99),
        latency_ms_iqr=float(p75 - p25),
        latency_ms_std=float(t.std(ddof=1)) if t.size > 1 else 0.0,
        iqr_over_median=float((p75 - p25) / p50) if p50 > 0 else float("nan"),
        images_per_s=float(batch_size / (p50 / 1e3)) if p50 > 0 else float("nan"),
    )


def make_step(model: nn.Module, spec: Spec, lr: float = 0.01) -> Callable[[], object]:
    """The callable timed for ``spec``: an inference forward or a whole SGD training step.

    The model is moved to the device and memory format in place; inputs are random (timing does
    not depend on pixel values) and live on the device already.
    """
    device = torch.device(spec.device)
    fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
    channels = get_spec(spec.model).in_channels
    num_classes = get_spec(spec.model).num_classes
    model.to(device=device, memory_format=fmt)
    x = torch.rand(spec.batch_size, channels, spec.image_size, spec.image_size, device=device)
    x = x.contiguous(memory_format=fmt)
    run = torch.compile(model) if spec.compiled else model
    if spec.mode == "inference":
        model.eval()

        def forward():
            with torch.inference_mode(), autocast(device, spec.dtype):
                return run(x)

        return forward
    if spec.mode != "train":
        raise ValueError(f"mode must be 'inference' or 'train', got {spec.mode!r}")
    model.train()
    labels = torch.randint(0, num_classes, (spec.batch_size,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, spec.dtype):
            loss = F.cross_entropy(run(x), labels)
        loss.backward()
        opt.step()
        return loss

    return train_step


def measure(model: nn.Module, spec: Spec, cfg: TimingConfig = TimingConfig()) -> LatencyResult:
    device = torch.device(spec.device)
    step = make_step(model, spec, cfg.lr)
    compile_s = None
    if spec.compiled:
        t0 = time.perf_counter()
        step()  # compilation happens here, outside any timed region
        synchronize(device)
        compile_s = time.perf_counter() - t0
    attempts = 0
    while True:
        attempts += 1
        if device.type == "cpu":
            with CpuContention() as load:
                times, timer = time_iterations(step, device, cfg)
            other = load.other_share
        else:
            times, timer = time_iterations(step, device, cfg)
            other = None
        contended = other is not None and other > cfg.contended_share
        if not contended or attempts >= 2:
            break
    stats = timing_stats(times, spec.batch_size)
    return LatencyResult(
        spec=spec,
        timer=timer,
        warmup_runs=cfg.warmup_runs,
        unstable=bool(stats["iqr_over_median"] > cfg.unstable_iqr_ratio),
        other_cpu_share=other,
        contended=contended,
        attempts=attempts,
        compile_s=compile_s,
        cudnn_benchmark=torch.backends.cudnn.benchmark if device.type == "cuda" else None,
        **stats,
    )
