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

from ..config import (
    CUDA_ONLY_TRICKS,
    EQUAL_RESOLUTION,
    MIN_SEEDS,
    RunConfig,
    trick_baseline,
    trick_spec,
    tricks_for,
)
from ..models import get_spec
from ..results import Spec
from ..results.types import DevicePeaks
from . import energy, flops, latency, memory, params, roofline, scaling, shapes, train

__all__ = ["Context", "Harness", "HARNESSES", "EXPERIMENTS", "MODES", "EQUAL_RESOLUTION", "in_mode",
           "trick_refusal", "trick_units"]

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


# --- the tricks experiment: records of other harnesses, planned side by side ----------------------

def trick_units(config: RunConfig, base: Spec) -> list[tuple[str, Spec]]:
    """(metric, spec) of every unit of ``--metrics tricks`` for one model: the baseline, then
    each trick of :func:`config.tricks_for`, each timed (inference and a training step) and
    trained, all at the training run's input side and batch, so the speed-up and the accuracy
    describe one workload. The seeds are the run's (``train.seeds``), alike on both sides. The
    run's own dtype, memory format and compile flags do not apply: the baseline is fp32 eager."""
    batch = train.config_for(config, base.model).batch_size
    baseline = trick_baseline(dataclasses.replace(
        base, image_size=train.image_size_for(config, base.model), batch_size=batch))  # fmt: skip
    units: list[tuple[str, Spec]] = []
    for spec in [baseline] + [trick_spec(baseline, t) for t in tricks_for(config)]:
        units += [("latency", in_mode(spec, mode)) for mode in MODES]
        units.append(("accuracy", in_mode(spec, "train")))
    # a trick that leaves a mode as it was (CUDA graphs: training) plans the baseline's unit
    return list(dict.fromkeys(units))


def trick_refusal(config: RunConfig, field: Callable[[str], str]) -> str | None:
    """Why ``--metrics tricks`` cannot run as configured (a CUDA-only trick on a CPU, fewer seeds
    than an accuracy difference is judged from), naming settings by ``field`` (the runner's
    ``{section.field}``); None when it can."""
    asked = [t for t in tricks_for(config) if t in CUDA_ONLY_TRICKS]
    if asked and not config.device.startswith("cuda"):
        return (f"{field('workload.tricks')} {','.join(asked)} needs {field('device')} cuda "
                "(a CPU has no TF32 or CUDA graphs)")  # fmt: skip
    seeds, least = config.train.seeds, MIN_SEEDS
    if len(seeds) < least:
        return (f"{field('metrics')} tricks judges accuracy from {least} or more seeds a side; "
                f"{field('train.seeds')} {','.join(map(str, seeds))} gives {len(seeds)} (e.g. "
                f"{field('train.seeds')} {','.join(map(str, range(least)))})")  # fmt: skip
    return None


# metric → an experiment: units of the harnesses above, (metric, spec), planned from its base
EXPERIMENTS: dict[str, Callable[[RunConfig, Spec], list[tuple[str, Spec]]]] = {
    "tricks": trick_units,
}


def _in_spec_tf32(measure_unit: Callable[[Spec, Context], Any]) -> Callable[[Spec, Context], Any]:
    """``measure_unit`` with TF32 as the unit's spec says (CUDA): the process is set up with the
    run's ``--tf32`` (runner.setup_process), and the tricks experiment times and trains TF32 and
    its fp32 baseline in one worker; TF32 is put back afterwards. A spec with ``tf32`` None (a
    CPU, reduced precision) runs as the process is."""

    def measure(spec: Spec, ctx: Context):
        if spec.tf32 is None or not spec.device.startswith("cuda"):
            return measure_unit(spec, ctx)
        from ._device import tf32_mode

        with tf32_mode(spec.tf32):
            return measure_unit(spec, ctx)

    return measure


HARNESSES: dict[str, Harness] = {
    h.metric: dataclasses.replace(h, measure_unit=_in_spec_tf32(h.measure_unit))
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
