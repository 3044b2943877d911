"""Record types, the schema version and the run store.

Every number cnnbench produces travels in a :class:`Record`: the conditions that produced it
(:class:`Spec`), a ``status`` (``ok``, ``oom``, ``unsupported``, ``diverged``, ``error``) with a
reason when it is not ``ok``, and the metric's values, whose names carry their units
(``latency_ms_p50``, ``gmacs``, ``peak_bytes``). A failed measurement is a record that says so,
never a missing row and never a made-up number.

A run folder holds ``results.jsonl`` (one record per line, appended as each finishes) and
``env.json``; everything else (CSV, reports) is derived from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Spec",
    "Record",
    "RunStore",
    "load_records",
    "records_frame",
    "values_of",
]

SCHEMA_VERSION = 1
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
    """A harness result dataclass as record values (its ``spec`` field dropped)."""
    data = dataclasses.asdict(result)
    data.pop("spec", None)
    return _clean(data)


class RunStore:
    """A run folder: ``results.jsonl`` appended one finished record at a time, and ``env.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.results_path = self.root / "results.jsonl"
        self.env_path = self.root / "env.json"

    def create(self) -> RunStore:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def append(self, record: Record) -> None:
        # One write() of one whole line on an O_APPEND descriptor, then fsync: a crash or Ctrl-C
        # leaves every finished record intact and at worst no partial line of the one in flight.
        line = (record.to_json() + "\n").encode()
        fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[Record]:
        return load_records(self.results_path) if self.results_path.exists() else []

    def write_env(self, env: dict[str, Any]) -> None:
        tmp = self.env_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(env, indent=2, default=_json_default) + "\n")
        os.replace(tmp, self.env_path)  # atomic: readers see the old or the new file, not half

    def read_env(self) -> dict[str, Any]:
        return json.loads(self.env_path.read_text()) if self.env_path.exists() else {}


def load_records(path: str | os.PathLike, *, latest_only: bool = True) -> list[Record]:
    """Records of a ``results.jsonl``; with ``latest_only`` a re-measured key keeps its last record.

    A last line cut short by a crash is skipped (every complete line before it is kept).
    """
    records: list[Record] = []
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(Record.from_dict(json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise
    if latest_only:
        by_key = {r.key: r for r in records}
        records = list(by_key.values())
    return records


def records_frame(records: Iterable[Record]):
    """One tidy pandas row per record: ``spec`` and ``values`` flattened beside status/reason."""
    import pandas as pd

    rows = []
    for r in records:
        row = {
            "metric": r.metric,
            "status": r.status,
            "reason": r.reason,
            "duration_s": r.duration_s,
        }
        row.update(dataclasses.asdict(r.spec))
        for k, v in r.values.items():
            if not isinstance(v, (dict, list)):
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)
