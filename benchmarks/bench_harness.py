"""The latency harness's own cost per timed iteration, next to the cheapest chapter forward pass.

``time_iterations`` wraps each iteration in two ``perf_counter`` calls and a list append (CPU) or
two CUDA event records (CUDA). Timing a no-op with it gives that overhead per iteration; it must
be a small fraction (< 1%) of the fastest forward pass in the chapter's zoo at batch 1, or the
harness would be measuring itself.
"""

from __future__ import annotations

import pytest
import torch

from cnnbench import models
from cnnbench.measure import workload
from cnnbench.measure.latency import TimingConfig, time_iterations
from cnnbench.results import Spec

NOOP_RUNS = 20_000


def _noop():
    return None


@pytest.mark.serial  # a ratio of two timings
def test_harness_overhead_per_iteration(benchmark):
    cfg = TimingConfig(warmup_runs=0, min_runs=NOOP_RUNS, min_time_s=0, max_runs=NOOP_RUNS)
    cpu = torch.device("cpu")
    result = benchmark(time_iterations, _noop, cpu, cfg)
    times_ms, _ = result
    overhead_ms = sorted(times_ms)[len(times_ms) // 2]
    benchmark.extra_info.update(overhead_ms_p50=overhead_ms, iterations=NOOP_RUNS)
    # the cheapest chapter forward pass at batch 1, timed by the same harness
    fastest_ms = min(
        sorted(
            time_iterations(
                workload.build(Spec(name, models.get_spec(name).input_size)).step,
                cpu,
                TimingConfig(warmup_runs=1, min_runs=5, min_time_s=0.2, max_runs=50),
            )[0]
        )[2]
        for name in ("nin", "googlenet")
    )
    benchmark.extra_info["fastest_forward_ms"] = fastest_ms
    assert overhead_ms < 0.01 * fastest_ms, (overhead_ms, fastest_ms)
