"""How fast this CPU runs cnnbench's kind of work, against the machine the run plan's costs were
fitted on: the plan's CPU constants (``plan.CPU_COSTS``) are seconds on one machine, and the CPU
behind a session varies (a Zen 3 AVX2 and an AVX-512 Xeon were ~2x apart in REFERENCE.md).

The probe is what a unit spends its time on, at one thread, small enough for a dry run (~0.5 s, its warm-up included):
a small convolution forward (oneDNN arithmetic), a stretch of tiny tensor operations (Python and
dispatch overhead, which dominates the fixed costs: model builds, short timed units) and a pass
over a 64 MiB tensor (memory bandwidth: an optimizer's step over AlexNet's 47M parameters, which
made its training step 2.5x slower on an AVX2 EPYC than the AVX-512 Xeon the constants were fitted
on, where the arithmetic alone was ~2x). Each block is timed as the best of a few repeats, so a
moment of load from another process does not count (the plan's load factor accounts for a busy
machine separately).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Speed", "probe"]

REPEATS = 10
WARMUP_S = 0.2


@dataclass(frozen=True)
class Speed:
    conv_s: float  # best time of the convolution block, seconds
    dispatch_s: float  # best time of the tiny-operator block, seconds
    stream_s: float  # best time of the 64 MiB pass, seconds

    def slowdown(self, reference: Speed) -> float:
        """How many times longer this machine takes than ``reference``: the geometric mean of
        the three blocks' ratios (a unit's time is part arithmetic, part overhead, part memory
        traffic, in proportions that differ by unit; no one block stands for all)."""
        ratios = (self.conv_s / reference.conv_s, self.dispatch_s / reference.dispatch_s,
                  self.stream_s / reference.stream_s)  # fmt: skip
        return (ratios[0] * ratios[1] * ratios[2]) ** (1 / 3)

    def as_record(self) -> dict:
        return {"conv_s": self.conv_s, "dispatch_s": self.dispatch_s, "stream_s": self.stream_s}


def _best(blocks) -> list[float]:
    """Each block's best time over REPEATS rounds, the blocks interleaved within a round: a
    moment of load, or of a lower clock, hits every block alike and the minimum skips it."""
    best = [float("inf")] * len(blocks)
    for _ in range(REPEATS):
        for i, block in enumerate(blocks):
            t0 = time.perf_counter()
            block()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def probe() -> Speed:
    """Time the three blocks at one thread (the thread count is restored)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, 32, 28, 28, generator=gen)
        w = torch.randn(32, 32, 3, 3, generator=gen)
        small = torch.randn(16, generator=gen)
        big = torch.ones(16 * 2**20)  # 64 MiB of fp32
        conv = torch.nn.functional.conv2d

        def convs():
            for _ in range(4):
                conv(x, w, padding=1)

        def tiny():
            y = small
            for _ in range(600):
                y = (y * 1.0001).add_(0.0001).relu()

        def stream():
            big.mul_(1.0)  # read and write every element once

        # first calls (oneDNN's primitive, page faults), then ~0.2 s of work: a process that was
        # idle read up to 2.5x slower in its first tenth of a second (measured here; the cause,
        # clock or scheduling, not known)
        start = time.perf_counter()
        while time.perf_counter() - start < WARMUP_S:
            convs(), tiny(), stream()
        return Speed(*_best((convs, tiny, stream)))
    finally:
        torch.set_num_threads(threads)
