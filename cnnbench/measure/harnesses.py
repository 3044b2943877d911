"""The harness table: for each metric, which units a run plans and the one call that measures
a unit. The runner loops over this table; it has no per-metric branch.

Every harness is ``measure_unit(spec, ctx) -> typed result`` (``cnnbench.results.types``): it
builds what it measures from ``spec`` (through ``workload``), reads the run's options from
``ctx.config`` and raises to fail (out of memory → ``oom``, :class:`train.Unsupported` →
``unsupported``, anything else → ``error``). ``outcome`` turns an ok result into a status when
finishing is not the same as succeeding (a training run whose loss diverged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import EQUAL_RESOLUTION, RunConfig
from ..models import get_spec
from ..results import Spec
from ..results.types import DevicePeaks
from . import energy, flops, latency, memory, params, roofline, scaling, shapes, train

__all__ = ["Context", "Harness", "HARNESSES", "MODES", "EQUAL_RESOLUTION", "in_mode"]

MODES = ("inference", "train")


@dataclass(frozen=True)
class Context:
    """What every unit of a run shares: its config and the device peaks measured once for it."""

    config: RunConfig
    peaks: DevicePeaks | None = None  # None when the run has no roofline, or the probe failed
    peaks_error: str | None = None  # why the probe failed
    # the run plan's expected seconds per unit (cnnbench.plan), which set each unit's time limit;
    # None: a run started without a plan (the library, the tests): the profile's limits
    unit_estimates_s: dict | None = None


@dataclass(frozen=True)
class Harness:
    metric: str
    plan: Callable[[RunConfig, Spec], list[Spec]]  # the model's base spec → its units' specs
    measure_unit: Callable[[Spec, Context], Any]
    sweep: bool = False  # a batch sweep: after an oom, larger batches of that mode are skipped
    outcome: Callable[[Any], tuple[str, str | None]] = lambda result: ("ok", None)
    # measured in config.timing.rounds separate workers, interleaved across models, and pooled
    # into one record: pool(results of the rounds, spec, timing config) -> result
    pool: Callable[..., Any] | None = None
    # spec -> whether each unit starts a process of its own (CPU peak RSS): the runner then runs
    # it from its own process, not inside a model worker (see runner._events)
    own_process: Callable[[Spec], bool] | None = None


def _once(config: RunConfig, base: Spec) -> list[Spec]:
    return [base]  # counts and shapes: device-independent, batch 1, fp32, eager


def _flops_units(config: RunConfig, base: Spec) -> list[Spec]:
    """At the model's own size, and for the chapter's networks also at the equal resolution
    where that differs (GoogLeNet's 96 against AlexNet's 224 compares input sizes as much as
    networks)."""
    if base.image_size == EQUAL_RESOLUTION or get_spec(base.model).section is None:
        return [base]
    return [base, dataclasses.replace(base, image_size=EQUAL_RESOLUTION)]


def in_mode(base: Spec, mode: str, **changes) -> Spec:
    """``base`` in ``mode``: a training step keeps fp32 weights under autocast (a weights cast
    applies to inference only) and is never replayed from a CUDA graph."""
    if mode == "train":
        changes.update(cuda_graph=False, cast=None if base.cast is None else "autocast")
    return dataclasses.replace(base, mode=mode, **changes)


def _latency_units(config: RunConfig, base: Spec) -> list[Spec]:
    batches = config.batches.latency_batches(config.device)
    graph = config.workload.cuda_graphs and config.device.startswith("cuda")
    return [
        in_mode(base, mode, batch_size=b, compiled=config.workload.compile, cuda_graph=graph)
        for mode in MODES
        for b in batches
        if not (mode == "train" and b == 1 and not config.batches.train_at_batch_1)
    ]


def _memory_units(config: RunConfig, base: Spec) -> list[Spec]:
    return [
        in_mode(base, mode, batch_size=b)
        for mode in MODES
        for b in config.batches.memory_batch_sizes
    ]


def _roofline_units(config: RunConfig, base: Spec) -> list[Spec]:
    return [dataclasses.replace(base, batch_size=max(config.batches.memory_batch_sizes))]


def _accuracy_units(config: RunConfig, base: Spec) -> list[Spec]:
    size = train.image_size_for(config, base.model)
    return [
        in_mode(
            base, "train", image_size=size, compiled=config.workload.compile,
            batch_size=train.config_for(config, base.model).batch_size,
        )
    ]  # fmt: skip


def _scaling_units(config: RunConfig, base: Spec) -> list[Spec]:
    """One unit per model: every world size, at the side the network is trained at (the quick
    profile's small networks on a CPU, the chapter's sizes in the full one)."""
    cpu = not config.device.startswith("cuda")
    return [
        in_mode(base, "train", image_size=train.image_size_for(config, base.model),
                batch_size=config.scaling.batch_size,
                threads=config.scaling.threads_per_rank if cpu else None)
    ]  # fmt: skip


def _energy_units(config: RunConfig, base: Spec) -> list[Spec]:
    """Inference and a training step at the accuracy run's batch and input side, compiled as it
    is: the joules per image of the training that was scored, and of inference beside it."""
    size = train.image_size_for(config, base.model)
    batch = train.config_for(config, base.model).batch_size
    return [
        in_mode(base, mode, image_size=size, batch_size=batch, compiled=config.workload.compile)
        for mode in MODES
    ]


def _training_outcome(result) -> tuple[str, str | None]:
    if result.diverged_seeds:
        seeds = ", ".join(map(str, result.diverged_seeds))
        return "diverged", f"loss became NaN or infinite (seed {seeds})"
    return "ok", None


HARNESSES: dict[str, Harness] = {
    h.metric: h
    for h in (
        Harness("params", _once, params.measure_unit),
        Harness("flops", _flops_units, flops.measure_unit),
        Harness("minsize", _once, shapes.measure_unit),
        Harness("latency", _latency_units, latency.measure_unit, sweep=True, pool=latency.pool),
        Harness("memory", _memory_units, memory.measure_unit,
                own_process=lambda spec: not spec.device.startswith("cuda")),
        Harness("roofline", _roofline_units, roofline.measure_unit),
        Harness("accuracy", _accuracy_units, train.measure_unit, outcome=_training_outcome),
        Harness("scaling", _scaling_units, scaling.measure_unit),
        Harness("energy", _energy_units, energy.measure_unit),
    )
}
