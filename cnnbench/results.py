"""Record types shared by the harnesses, the runner and the reports.

Every number cnnbench produces travels in a frozen dataclass whose field names carry units
(``gmacs``, ``bytes_fp32``, ``latency_ms_p50``), together with the conditions that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEMA_VERSION", "Spec"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Spec:
    """The conditions of one measurement; every record carries one."""

    model: str  # registered model name
    image_size: int  # square input side, pixels
    batch_size: int = 1  # images per forward pass
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    dtype: str = "fp32"  # "fp32", "bf16" or "fp16" (autocast)
    channels_last: bool = False  # torch.channels_last memory format for model and input
    compiled: bool = False  # torch.compile applied (never for counting)
    threads: int | None = None  # torch intra-op threads on CPU; None where irrelevant
