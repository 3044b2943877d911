"""A fake of the CUDA caching allocator's counters, for the memory tests that run on a CPU."""

from __future__ import annotations

import torch


class FakeAllocator:
    """The caching allocator's counters, driven by the test."""

    def __init__(self, leftover: int):
        self.allocated = self.peak = leftover

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def free(self, n: int) -> None:
        self.allocated -= n


def patch_cuda_memory(monkeypatch, mem: FakeAllocator, on_read=None) -> None:
    """torch.cuda's memory counters read ``mem``; ``on_read()`` runs at each read of the
    allocated bytes (a test that checks what ran before the baseline was read)."""

    def allocated(d=None):
        if on_read is not None:
            on_read()
        return mem.allocated

    for name, fn in {
        "memory_allocated": allocated,
        "max_memory_allocated": lambda d=None: mem.peak,
        "max_memory_reserved": lambda d=None: mem.peak,
        "reset_peak_memory_stats": lambda d=None: setattr(mem, "peak", mem.allocated),
        "synchronize": lambda d=None: None,
        "empty_cache": lambda: None,
    }.items():
        monkeypatch.setattr(torch.cuda, name, fn)
