"""Small device helpers shared by the timing, memory and training harnesses."""

from __future__ import annotations

import contextlib
import gc

import torch

__all__ = ["TORCH_DTYPES", "autocast", "is_oom", "release", "synchronize"]

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16/fp16 autocast, or nothing for fp32 (weights stay fp32 either way)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[dtype])


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
