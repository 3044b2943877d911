"""What a resume may change: the settings that differ between a run's saved config (env.json's
``config``) and the config a resume would measure with, less those that change no measurement.

A resumed run appends to the records of the first; env.json keeps the first config, and the
report states it as the conditions of every record. A resume that measured with other settings
would put records beside them that those conditions do not describe, so the runner refuses it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .record import _json_default

__all__ = ["SELECTION_ONLY", "SettingChange", "measurement_changes"]

# RunConfig fields (``section.field``) a resume may change freely. Each either chooses which
# units run, every unit still measured alike (the spec of a record names its batch, so another
# batch list adds or skips records, never alters one), or says where and how the run is driven.
# Every field not listed here is compared, so that a setting added later is guarded by default.
SELECTION_ONLY = frozenset({
    "models", "metrics", "shard",
    "batches.batch_sizes", "batches.sweep", "batches.sweep_max_batch",
    "batches.memory_batch_sizes", "batches.train_at_batch_1",
    "out_dir", "resume", "command_line",
    "timing.unit_timeout_s",  # how long a unit may take before it is ended, not how it is measured
    "workload.tricks",  # which trick units run; each record's spec says how it was measured
    "profile", "overrides",  # names for values; the values themselves are compared
    "data_dir",  # where Fashion-MNIST is found; data.py verifies it is the same data
})  # fmt: skip


@dataclass(frozen=True)
class SettingChange:
    """One setting that a resume would measure with differently."""

    field: str  # RunConfig field, ``section.field`` ("timing.rounds") or top-level ("device")
    was: Any  # the saved config's value (JSON form: a tuple reads back as a list)
    now: Any  # the resume's value, in the same JSON form


def measurement_changes(saved: Mapping[str, Any], config: Any) -> tuple[SettingChange, ...]:
    """The settings, in field order, whose value in ``config`` (a RunConfig or its
    ``dataclasses.asdict``) differs from ``saved`` (env.json's ``config``) and that change a
    measurement. A field only one side has is not compared: the saved run predates it (its
    default keeps the old behaviour) or it was removed; a run with no saved config gives ()."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    was, now = _flat(_as_json(saved)), _flat(_as_json(config))
    return tuple(
        SettingChange(name, was[name], now[name])
        for name in now
        if name in was and name not in SELECTION_ONLY and was[name] != now[name]
    )


def _as_json(value: Any) -> Any:
    """``value`` as env.json would read back: tuples become lists, so equal values compare equal."""
    return json.loads(json.dumps(value, default=_json_default))


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"timing": {"rounds": 3}}`` → ``{"timing.rounds": 3}``; leaves are kept whole."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out
