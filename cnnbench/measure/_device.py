"""Small device helpers shared by the timing, memory and training harnesses."""

from __future__ import annotations

import gc

import torch

__all__ = ["is_oom", "release", "synchronize"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error or a CPU allocation refused by the OS or a cap.

    Under an address-space cap (``--memory-cap-gb`` on CPU) oneDNN reports a refused allocation
    as "could not create a primitive": with a cap set, that is the cap."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    if not isinstance(exc, RuntimeError):
        return False
    if "can't allocate memory" in text or "out of memory" in text.lower():
        return True
    return "could not create a primitive" in text and _address_space_capped()


def _address_space_capped() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY


def release(device: torch.device) -> None:
    """Give back what a failed or finished measurement held, so the next starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
