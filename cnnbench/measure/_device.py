"""Small device helpers shared by the timing, memory and training harnesses."""

from __future__ import annotations

import gc

import torch

__all__ = ["is_oom", "release", "synchronize"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error or a CPU allocation refused by the OS or a cap."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def release(device: torch.device) -> None:
    """Give back what a failed or finished measurement held, so the next starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
