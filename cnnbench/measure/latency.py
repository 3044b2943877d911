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
  measured (``other_cpu_share``, as a share of all cores' time); where more than 10% of the
  machine was taken from the cores the measurement's threads run on (beyond the cores they leave
  free) the measurement is repeated once and, if still contended, kept and flagged ``contended``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..config import TimingConfig
from ..results import Spec
from ..results.types import LatencyResult
from ..stats import median_interval
from . import workload
from ._device import synchronize

__all__ = [
    "TimingConfig",
    "LatencyResult",
    "CpuContention",
    "time_iterations",
    "timing_stats",
    "measure",
    "measure_unit",
    "pool",
]


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
        # the kernel counts CPU time in ticks (10 ms): over a block of a few tenths of a second a
        # fully busy machine can read a little above all of its cores (1.004 seen); a share of
        # the machine is at most 1
        share = max(0.0, busy - own) / (wall * cpus) if wall > 0 else 0.0
        self.other_share = min(1.0, share)


def _beyond_spare_cores(other_share: float) -> float:
    """The share of the machine that other processes took from the cores this process's threads
    run on: what they used beyond the cores those threads leave free. One thread on two cores
    beside one busy process is not contended (it never wanted the other core); two threads are."""
    cpus = os.cpu_count() or 1
    spare = max(0, cpus - torch.get_num_threads()) / cpus
    return max(0.0, other_share - spare)


HOST_BOUND = 0.9  # host time per iteration / device time per iteration above this: launch-bound
HOST_SAMPLES = 5  # calls timed for the host's issue time


def time_iterations(
    fn: Callable[[], object], device: torch.device, cfg: TimingConfig,
    host_ms: list[float] | None = None,
) -> tuple[list[float], str]:
    """Per-iteration times in milliseconds, after warm-up, and the timer used. On CUDA the
    events are recorded on ``device``'s current stream, and ``host_ms`` (when given) receives
    the host's time to issue each iteration."""  # fmt: skip
    for _ in range(cfg.warmup_runs):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    fn()  # one more warm-up that also estimates the iteration time
    synchronize(device)
    estimate = max(time.perf_counter() - t0, 1e-6)
    n = min(cfg.max_runs, max(cfg.min_runs, math.ceil(cfg.min_time_s / estimate)))
    if device.type == "cuda":
        # the device's own stream: Event.record() without one records on the *current device's*
        # stream, which is not cuda:N's unless N was made current
        stream = torch.cuda.current_stream(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for start, end in zip(starts, ends, strict=True):
            start.record(stream)
            fn()
            end.record(stream)
        torch.cuda.synchronize(device)
        if host_ms is not None:
            # issue time apart, each call from an idle queue: inside the loop above a full launch
            # queue would make the host wait for the GPU and pass the GPU's time off as its own
            for _ in range(HOST_SAMPLES):
                torch.cuda.synchronize(device)
                t = time.perf_counter()
                fn()
                host_ms.append((time.perf_counter() - t) * 1e3)
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


def measure(
    model: nn.Module,
    spec: Spec,
    cfg: TimingConfig = TimingConfig(),
    *,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.0,
) -> LatencyResult:
    """Latency of ``spec``'s step on ``model`` (moved in place), one round; a training step
    uses ``optimizer`` at ``lr`` (plain SGD at 0.01 unless told otherwise)."""
    device = torch.device(spec.device)
    step = workload.build(spec, model=model, optimizer=optimizer, lr=lr, momentum=momentum).step
    compile_s = None
    if spec.compiled:
        t0 = time.perf_counter()
        step()  # compilation happens here, outside any timed region
        synchronize(device)
        compile_s = time.perf_counter() - t0
    attempts = 0
    host: list[float] = []
    while True:
        attempts += 1
        if device.type == "cpu":
            with CpuContention() as load:
                times, timer = time_iterations(step, device, cfg)
            other = load.other_share
        else:
            host.clear()
            times, timer = time_iterations(step, device, cfg, host)
            other = None
        contended = other is not None and _beyond_spare_cores(other) > cfg.contended_share
        if not contended or attempts >= 2:
            break
    times = [round(t, 5) for t in times]  # 10 ns: below any timer's resolution; keeps JSON short
    stats = timing_stats(times, spec.batch_size)  # derived from exactly the samples kept
    interval = median_interval(times)
    # an fp16 training step synchronizes (GradScaler reads found_inf): its host time is not issue time
    syncs = spec.mode == "train" and spec.dtype == "fp16"
    host_p50 = float(np.median(host)) if host and not syncs else None
    return LatencyResult(
        timer=timer,
        warmup_runs=cfg.warmup_runs,
        unstable=bool(stats["iqr_over_median"] > cfg.unstable_iqr_ratio),
        other_cpu_share=other,
        contended=contended,
        attempts=attempts,
        compile_s=compile_s,
        cudnn_benchmark=torch.backends.cudnn.benchmark if device.type == "cuda" else None,
        times_ms=tuple(times),
        round_sizes=(len(times),),
        round_medians_ms=(stats["latency_ms_p50"],),
        latency_ms_p50_ci_low=interval.low,
        latency_ms_p50_ci_high=interval.high,
        host_ms_p50=host_p50,
        host_bound=_host_bound(host_p50, stats["latency_ms_p50"]),
        dynamo=workload.dynamo_counters() if spec.compiled else None,
        **stats,
    )


def measure_unit(spec: Spec, ctx) -> LatencyResult:
    """The harness entry: one round — a fresh model, the run's timing and, for a training step,
    the accuracy run's optimizer (so the step's cost describes the training that was scored)."""
    from .train import optimizer_for

    model = workload.build_model(spec)
    if spec.mode != "train":
        return measure(model, spec, ctx.config.timing)
    opt = optimizer_for(ctx.config, spec.model)
    result = measure(model, spec, ctx.config.timing, lr=opt.lr, optimizer=opt.name,
                     momentum=opt.momentum)  # fmt: skip
    return dataclasses.replace(result, optimizer=opt.label)


def pool(rounds: list[LatencyResult], spec: Spec, cfg: TimingConfig) -> LatencyResult:
    """One record from the rounds of one spec: every sample kept, the statistics recomputed over
    all of them, the median's 95% interval between the rounds' processes (Student's t on their
    log medians, ``cnnbench/stats.py``) and each round's own median beside it."""
    times = [t for r in rounds for t in r.times_ms]
    sizes = tuple(len(r.times_ms) for r in rounds)
    hosts = [r.host_ms_p50 for r in rounds if r.host_ms_p50 is not None]
    host_p50 = float(np.median(hosts)) if hosts else None
    stats = timing_stats(times, spec.batch_size)
    interval = median_interval(times, sizes)
    first = rounds[0]
    others = [r.other_cpu_share for r in rounds if r.other_cpu_share is not None]
    compiles = [r.compile_s for r in rounds if r.compile_s is not None]
    return LatencyResult(
        timer=first.timer,
        warmup_runs=first.warmup_runs,
        unstable=bool(stats["iqr_over_median"] > cfg.unstable_iqr_ratio),
        other_cpu_share=max(others) if others else None,
        contended=any(r.contended for r in rounds),
        attempts=sum(r.attempts for r in rounds),
        compile_s=max(compiles) if compiles else None,
        cudnn_benchmark=first.cudnn_benchmark,
        times_ms=tuple(times),
        rounds=len(rounds),
        round_sizes=sizes,
        round_medians_ms=tuple(float(np.median(r.times_ms)) for r in rounds),
        latency_ms_p50_ci_low=interval.low,
        latency_ms_p50_ci_high=interval.high,
        optimizer=first.optimizer,
        host_ms_p50=host_p50,
        host_bound=_host_bound(host_p50, stats["latency_ms_p50"]),
        dynamo=_sum_counters([r.dynamo for r in rounds]),
        sweep_end=first.sweep_end,
        **stats,
    )


def _host_bound(host_ms_p50: float | None, latency_ms_p50: float) -> bool | None:
    """Whether issuing the step on the host takes about as long as the step itself (GPU only)."""
    return None if host_ms_p50 is None else bool(host_ms_p50 >= HOST_BOUND * latency_ms_p50)


def _sum_counters(counters: list[dict | None]) -> dict | None:
    """Dynamo's counters over the rounds (each round compiled afresh in its own worker)."""
    given = [c for c in counters if c]
    if not given:
        return None
    return {k: sum(c.get(k, 0) for c in given) for k in given[0]}
