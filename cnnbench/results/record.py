"""What every number travels in: the :class:`Spec` of a measurement and its :class:`Record`.

Every number cnnbench produces travels in a :class:`Record`: the conditions that produced it
(:class:`Spec`), a ``status`` (``ok``, ``oom``, ``unsupported``, ``diverged``, ``error``) with a
reason when it is not ``ok``, and the metric's values, whose names carry their units
(``latency_ms_p50``, ``gmacs``, ``peak_bytes``). A failed measurement is a record that says so,
never a missing row and never a made-up number.

``Record.values`` is the JSON form (what ``results.jsonl`` holds); ``Record.result`` is the same
values rebuilt into the metric's typed dataclass (:mod:`cnnbench.results.types`), which is what
code reads. Schema 2 added the per-iteration times of latency records (``times_ms``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "STATUSES", "Spec", "Record", "values_of"]

SCHEMA_VERSION = 2
STATUSES = ("ok", "oom", "unsupported", "diverged", "error")


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
    threads: int | None = None  # torch intra-op threads on CPU; None on CUDA
    mode: str = "inference"  # "inference" (eval, no grad) or "train" (forward + backward + step)
    # CUDA fp32: whether TF32 was allowed for matmuls and convolutions (both flags); None on CPU
    tf32: bool | None = None
    # bf16/fp16: "autocast" (fp32 weights, cast on each call) or "weights" (model.to(dtype));
    # None for fp32
    cast: str | None = None
    cuda_graph: bool = False  # inference replayed from a captured CUDA graph


@dataclass(frozen=True)
class Record:
    metric: str  # "params", "flops", "latency", "memory", "accuracy"
    spec: Spec
    status: str  # one of STATUSES
    values: dict[str, Any] = field(default_factory=dict)  # unit-named numbers; empty unless ok
    reason: str | None = None  # why status is not "ok"
    duration_s: float = 0.0  # wall time spent producing this record
    schema: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a '{self.status}' record needs a reason")

    @property
    def key(self) -> tuple:
        """What makes two records measure the same thing (used by resume and de-duplication)."""
        return (self.metric, *dataclasses.astuple(self.spec))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=_json_default, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        data["spec"] = Spec(**data["spec"])
        return cls(**data)

    @classmethod
    def failed(cls, metric: str, spec: Spec, status: str, reason: str, duration_s: float = 0.0):
        return cls(metric=metric, spec=spec, status=status, reason=reason, duration_s=duration_s)

    @classmethod
    def of(cls, metric: str, spec: Spec, result: Any, *, status: str = "ok",
           reason: str | None = None, duration_s: float = 0.0) -> Record:
        """A record holding a typed ``result`` (its JSON form goes into ``values``)."""
        return cls(metric, spec, status, values_of(result), reason, duration_s)  # fmt: skip

    @functools.cached_property
    def result(self) -> Any:
        """``values`` rebuilt into the metric's dataclass (``LatencyResult``, ``TrainResult``, ...).

        Raises ``ValueError`` for a record without values (one that is not ok) or whose values do
        not fit the metric's type.
        """
        from .types import from_values

        if not self.values:
            raise ValueError(f"a '{self.status}' {self.metric} record has no values")
        return from_values(self.metric, self.values)


def _json_default(obj):
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _clean(value):
    """NaN and infinities become None: JSON has no spelling for them and we never invent one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def values_of(result: Any) -> dict[str, Any]:
    """A typed result as record values: plain JSON types, NaN and infinities as None."""
    return _clean(dataclasses.asdict(result))


