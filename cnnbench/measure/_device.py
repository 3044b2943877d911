"""Small device helpers shared by the timing, memory and training harnesses."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch

from ..env import has_fp32_precision_api, tf32_state

__all__ = ["is_oom", "release", "set_tf32", "synchronize", "tf32_mode"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# cuBLAS and cuDNN failing to get their workspace, and cuDNN's v8/v9 frontend finding no engine
# whose workspace fits (what it reports when every candidate's allocation failed): out of memory
# as much as torch's own error, though they surface as RuntimeErrors of another wording
ALLOC_FAILURES = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                  "FIND was unable to find an engine")  # fmt: skip


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
    if any(m in text for m in ALLOC_FAILURES):
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


# the new API's settings (torch >= 2.9); torch keeps the legacy allow_tf32 flags apart from them
_NEW_API = ("cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn")


def _owner(path: str):
    owner = torch.backends
    for part in path.split("."):
        owner = getattr(owner, part)
    return owner


def set_tf32(enabled: bool) -> dict:
    """Allow (or forbid) TF32 in fp32 matmuls and convolutions, then return what torch reports
    (``env.tf32_state``), which is what a record must hold.

    Through ``fp32_precision`` where torch has it (>= 2.9): the legacy ``allow_tf32`` warns
    there, and raises once anything in the process has used the new API. Older torch: both
    ``allow_tf32`` flags. Both backends are always set, never left to defaults that differ
    (cuDNN allows TF32 by default, cuBLAS does not)."""
    if has_fp32_precision_api():
        value = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = value
        # cuDNN's own, its convolutions' and its RNNs': a child set before keeps its value when
        # the parent changes, and a legacy read raises where conv and rnn differ
        for owner in (torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn):
            owner.fp32_precision = value
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    return tf32_state()


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[dict]:
    """:func:`set_tf32` for the block, yielding torch's state; TF32 as it was afterwards.

    torch raises on a legacy read where the legacy flags and the new strings disagree, so both
    are restored: the legacy flags first (setting them rewrites the strings), then the strings.
    A reader of either API then sees what it saw before the block."""
    state = tf32_state()
    saved = [(p, _owner(p).fp32_precision) for p in _NEW_API] if has_fp32_precision_api() else []
    try:
        yield set_tf32(enabled)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = state["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = state["cudnn_allow_tf32"]
        for path, value in saved:
            _owner(path).fp32_precision = value
