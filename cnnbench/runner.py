"""The run loop: each selected model × each requested metric → records in a run folder.

:func:`preflight` refuses a run that cannot work before anything is measured or created.
:func:`plan` asks the harness table (``measure/harnesses.py``) for each metric's units; no
metric has a branch of its own here. The device peaks that rooflines are judged against are
measured once, up front, and handed to every unit (and recorded in env.json, never read back).

Isolation: every model is measured in a fresh worker process (``measure/worker.py``), so that one
model's allocator state, cuDNN autotuning cache, oneDNN primitive cache and resident memory cannot
change another's numbers; CPU peak-memory measurements go one step further and get a process of
their own (see ``measure/memory.py``). ``isolation="none"`` runs everything in this process (for
debugging; the records say so through ``env.json``'s config).

Failures never stop a run: an out-of-memory step becomes an ``oom`` record (memory is released and
the run goes on, a batch sweep ends there), an exception becomes an ``error`` record with its
message, and a worker that dies leaves ``error`` records for what it had not finished. Each record
is appended to ``results.jsonl`` the moment it exists, so Ctrl-C or a crash loses nothing finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import models
from .config import UNIT_TIMEOUT_FACTOR, UNIT_TIMEOUT_FLOOR_S, UNIT_TIMEOUT_S, RunConfig
from .env import collect_env, fingerprint, fingerprint_id, tf32_state
from .measure import _device, memory, roofline, workload
from .measure._device import release
from .measure.harnesses import EXPERIMENTS, HARNESSES, Context, trick_refusal
from .measure.train import Unsupported
from .measure.worker import (
    WorkerError,
    call_in_worker,
    error_line,
    is_out_of_memory,
    run_in_worker,
    time_limit,
)
from .results import Record, RunStore, Spec
from .results.resume import measurement_changes
from .results.store import RunLocked

__all__ = ["Unit", "RunResult", "plan", "preflight", "run", "shard", "unit_limit_s", "RunRefused",
           "ResumeMismatch"]


@dataclass(frozen=True)
class Unit:
    """One planned measurement: a metric at one spec."""

    metric: str
    spec: Spec

    @property
    def label(self) -> str:
        s = self.spec
        extra = f" {s.mode} b{s.batch_size}" if self.metric in ("latency", "memory") else ""
        return f"{s.model} · {self.metric}{extra}"


@dataclass(frozen=True)
class RunResult:
    out_dir: str
    records: tuple[Record, ...]  # written by this invocation (resume: the new ones only)
    skipped: int  # units already recorded (resume)

    @property
    def failed(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.status == "error")


_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)\}")  # {train.seeds}


class RunRefused(ValueError):
    """The run cannot start as configured: one line saying what is wrong and what would be right.
    Raised by :func:`preflight` before anything is measured or any folder is created.

    The line names a setting by its :class:`RunConfig` field in braces (``{batches.batch_sizes}``,
    ``{out_dir}``; see :func:`_field`): ``str()`` shows the field's name, :meth:`naming` whatever
    the caller calls it (the command line: its flag). The runner knows fields, not flags."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.naming(lambda field: field))

    def naming(self, name: Callable[[str], str]) -> str:
        """The line with each ``{field}`` replaced by ``name(field)``."""
        return _FIELD.sub(lambda m: name(m.group(1)), self.template)


def _field(path: str) -> str:
    """A setting in a refusal: its RunConfig field (``"train.seeds"``), for :class:`RunRefused`."""
    return "{" + path + "}"


class ResumeMismatch(RunRefused):
    """A resumed run folder whose env.json describes another machine or software stack."""


def base_spec(config: RunConfig, model: str) -> Spec:
    wl = config.workload
    return Spec(
        model=model,
        image_size=wl.image_size or models.get_spec(model).input_size,
        batch_size=1,
        device=config.device,
        dtype=wl.dtype,
        channels_last=wl.channels_last,
        compiled=False,
        # CPU: the thread count every worker uses (workload.threads, else torch's default)
        threads=None if config.device.startswith("cuda") else wl.threads or torch.get_num_threads(),
        tf32=wl.tf32 if config.device.startswith("cuda") and wl.dtype == "fp32" else None,
        cast=None if wl.dtype == "fp32" else wl.cast,
    )


def plan(config: RunConfig, model: str) -> list[Unit]:
    """Every unit the run will attempt for ``model``, in order (a sweep may end early on OOM).
    An experiment (``EXPERIMENTS``: tricks) plans units of the harnesses; a unit that two
    metrics plan alike (the tricks' fp32 baseline and the accuracy metric's training) is planned
    once, where it first comes: one record per key (``Record.key``)."""
    base = base_spec(config, model)
    units = []
    for metric in config.metrics:
        if metric in EXPERIMENTS:
            units += [Unit(m, spec) for m, spec in EXPERIMENTS[metric](config, base)]
        elif metric in HARNESSES:
            units += [Unit(metric, spec) for spec in HARNESSES[metric].plan(config, base)]
        else:
            raise ValueError(f"unknown metric {metric!r}")
    return list(dict.fromkeys(units))


def unit_limit_s(config: RunConfig, estimate_s: float | None = None) -> float:
    """The most seconds one unit may run before it is ended as an ``error`` record: the
    configured ``timing.unit_timeout_s``; else ``UNIT_TIMEOUT_FACTOR`` times the unit's estimate,
    at least ``UNIT_TIMEOUT_FLOOR_S``; else (no estimate) the profile's generous default."""
    if config.timing.unit_timeout_s:
        return config.timing.unit_timeout_s
    if estimate_s is not None:
        return max(UNIT_TIMEOUT_FLOOR_S, UNIT_TIMEOUT_FACTOR * estimate_s)
    return UNIT_TIMEOUT_S.get(config.profile, max(UNIT_TIMEOUT_S.values()))


def _limit_of(ctx: Context, unit: Unit | None) -> float:
    """``unit``'s time limit: from its planned seconds where the run has a plan."""
    return unit_limit_s(ctx.config, (ctx.unit_estimates_s or {}).get(unit))


def _event_limit(ctx: Context) -> Callable[[str, object], float]:
    """How long to wait for a worker's next event, given its last ``(kind, payload)``: after a
    unit's ``start``, that unit's limit; otherwise (the worker starting, between units) the
    profile's."""
    return lambda kind, payload: _limit_of(ctx, payload if kind == "start" else None)


def _measure_unit(unit: Unit, ctx: Context) -> Record:
    harness = HARNESSES[unit.metric]
    t0 = time.perf_counter()
    try:
        with time_limit(_limit_of(ctx, unit)):  # a harness's own worker (CPU peak RSS)
            result = harness.measure_unit(unit.spec, ctx)
        status, reason = harness.outcome(result)
        return Record.of(unit.metric, unit.spec, result, status=status, reason=reason,
                         duration_s=time.perf_counter() - t0)  # fmt: skip
    except Unsupported as exc:
        return Record.failed(unit.metric, unit.spec, "unsupported", str(exc),
                             time.perf_counter() - t0)  # fmt: skip
    except (Exception, MemoryError) as exc:
        # cuBLAS/cuDNN allocation failures too: a sweep ends there, as at any out of memory
        status = "oom" if is_out_of_memory(exc) else "error"
        if status == "error" and os.environ.get("CNNBENCH_DEBUG"):
            traceback.print_exc()
        return Record.failed(unit.metric, unit.spec, status, error_line(exc),
                             time.perf_counter() - t0)  # fmt: skip
    finally:
        release(torch.device(unit.spec.device))


def setup_process(config: RunConfig, *, memory_cap: bool = True) -> None:
    """Per-process settings every measurement depends on (recorded in the spec and env.json).

    TF32 is set for both cuBLAS and cuDNN, never left to the defaults (cuDNN allows it by
    default, cuBLAS does not), through torch's ``fp32_precision`` API where it has one (the
    legacy flags warn there, and raise once the new API is used). ``cuda:N`` becomes the current
    device, so that streams and events are N's. ``memory_cap=False``: the process measures the
    device, not a model (the peaks probes), and ``--memory-cap-gb`` does not apply to it."""
    wl = config.workload
    if wl.threads:
        torch.set_num_threads(wl.threads)
    _device.set_tf32(wl.tf32)
    if config.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = wl.cudnn_benchmark
        torch.cuda.set_device(torch.device(config.device).index or 0)  # "cuda" has no index
    if memory_cap:
        memory.set_memory_cap(config.memory.cap_bytes, config.device)


def process_flags() -> dict:
    """The settings of this process that decide speed, as a worker runs with them (env.json)."""
    return {
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        **tf32_state(),  # what torch reports (the legacy flags raise once the new API is used)
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "current_cuda_device": torch.cuda.current_device() if torch.cuda.is_initialized() else None,
    }


def _worker_flags(config: RunConfig) -> dict:
    setup_process(config)
    return process_flags()


ELEMENT_LIMIT = 2**31 - 1  # past this many elements in one tensor, kernels index with 64 bits
# or not at all; a sweep does not build such tensors
PLATEAU_GAIN = 0.03  # a doubling that adds less images/s than this ...
PLATEAU_DOUBLINGS = 2  # ... this many times in a row ends a sweep: the device is saturated


def _execute(
    ctx: Context, units: list[Unit], first_round: bool = True, seen_rates: dict | None = None
) -> Iterator[tuple[str, object]]:
    """Measure ``units`` in order, yielding ``start``/``skip``/``record`` events.

    A batch sweep ends at its first out-of-memory batch; in the first round (which decides how
    far a sweep goes) also where images/s has plateaued (the last record says so in
    ``sweep_end``) and before a batch whose largest tensor would pass ``ELEMENT_LIMIT`` (an
    ``unsupported`` record says so). ``seen_rates``: images/s of a resumed sweep's batches
    measured before, so that a plateau that began there still ends it."""
    sweeping = ctx.config.batches.sweep
    # sweeps that ended, by _sweep_key (the spec but its batch): a unit of another spec (a
    # trick's, one batch each) is no doubling of this sweep, and never skipped with it
    stopped: set[tuple] = set()
    # images/s along each latency sweep
    rates: dict[tuple, list[float]] = {k: list(v) for k, v in (seen_rates or {}).items()}
    largest: dict[str, int] = {}  # model → elements of its largest tensor per image
    compiling: str | None = None  # the model Dynamo was last reset for
    for unit in units:
        key = _sweep_key(unit.metric, unit.spec)
        in_sweep = sweeping and HARNESSES[unit.metric].sweep
        if in_sweep and key in stopped:
            yield "skip", unit  # larger batches of a sweep that already ended
            continue
        if in_sweep and first_round:
            too_large = _past_element_limit(unit, largest)
            if too_large is not None:
                stopped.add(key)
                yield "record", too_large
                continue
        if unit.spec.compiled and unit.spec.model != compiling and not _own_process(ctx, unit):
            workload.reset_compiler()  # once per model: its units' shapes compile alongside
            compiling = unit.spec.model
        yield "start", unit
        record = _measure_unit(unit, ctx)
        if record.status == "oom":
            stopped.add(key)
        elif in_sweep and first_round and record.status == "ok" and unit.metric == "latency":
            seen = rates.setdefault(key, [])
            seen.append(record.values["images_per_s"])
            gains = [b / a - 1 for a, b in zip(seen, seen[1:], strict=False)][-PLATEAU_DOUBLINGS:]
            if len(gains) == PLATEAU_DOUBLINGS and all(g < PLATEAU_GAIN for g in gains):
                stopped.add(key)
                why = (f"images/s plateaued: {', '.join(f'{g:+.1%}' for g in gains)} over the "
                       f"last {PLATEAU_DOUBLINGS} doublings")  # fmt: skip
                record = dataclasses.replace(record, values={**record.values, "sweep_end": why})
        yield "record", record


def _past_element_limit(unit: Unit, largest: dict[str, int]) -> Record | None:
    """The record that ends a sweep before ``unit`` (its largest tensor would pass
    ``ELEMENT_LIMIT``, or the model could not be sized), else None. ``largest``: elements of
    each model's largest tensor per image, filled as models are sized."""
    spec = unit.spec
    if spec.model not in largest:
        try:
            largest[spec.model] = workload.largest_tensor_elements(spec)
        except Exception as exc:  # noqa: BLE001 - the sweep's record says why
            return Record.failed(unit.metric, spec, "error", f"sizing the sweep: {error_line(exc)}")
        finally:
            release(torch.device(spec.device))
    elements = largest[spec.model] * spec.batch_size
    if elements <= ELEMENT_LIMIT:
        return None
    return Record.failed(unit.metric, spec, "unsupported",
                         f"sweep ends before batch {spec.batch_size}: its largest tensor would "
                         f"hold {elements:,} elements, past 2^31 - 1")  # fmt: skip


def _worker(emit, ctx: Context, units: list[Unit], first_round: bool, seen: dict) -> None:
    """A model's worker process: set up like every worker, then measure its units."""
    setup_process(ctx.config)
    for kind, payload in _execute(ctx, units, first_round, seen):
        emit(kind, payload)


def _own_process(ctx: Context, unit: Unit) -> bool:
    own = HARNESSES[unit.metric].own_process
    return ctx.config.isolation == "process" and own is not None and own(unit.spec)


def _events(
    ctx: Context, units: list[Unit], first_round: bool, seen: dict | None = None
) -> Iterator[tuple[str, object]]:
    """The events of measuring ``units`` in order: in a model worker, except the units whose
    harness starts a process of its own for each (CPU peak RSS), which run from here. This
    process's forkserver starts such a process in ~0.03 s; from inside a model worker the first
    would start a forkserver of its own, importing torch again (~3 s per model)."""
    if ctx.config.isolation != "process":
        yield from _execute(ctx, units, first_round, seen)  # this process was set up by run()
        return
    for own, segment in itertools.groupby(units, key=lambda u: _own_process(ctx, u)):
        segment = list(segment)
        if own:
            yield from _execute(ctx, segment, first_round, seen)
        else:
            yield from run_in_worker(_worker, ctx, segment, first_round, seen or {},
                                     limit_s=_event_limit(ctx))  # fmt: skip


def _seen_rates(kept: list[Record], units: list[Unit]) -> dict[tuple, list[float]]:
    """images/s of each latency sweep of ``units`` as recorded before, in batch order, by
    _sweep_key."""
    keys = {_sweep_key(u.metric, u.spec) for u in units if u.metric == "latency"}
    out: dict[tuple, list[tuple[int, float]]] = {}
    for r in kept:
        key = _sweep_key(r.metric, r.spec)
        if key in keys and r.status == "ok":
            out.setdefault(key, []).append((r.spec.batch_size, r.values["images_per_s"]))
    return {k: [rate for _, rate in sorted(v)] for k, v in out.items()}


def _pooled(harness, unit: Unit, rounds: list[Record], config: RunConfig) -> Record:
    """One record from the ok records of every round of ``unit``."""
    result = harness.pool([r.result for r in rounds], unit.spec, config.timing)
    return Record.of(unit.metric, unit.spec, result,
                     duration_s=sum(r.duration_s for r in rounds))  # fmt: skip


def _peaks_worker(config: RunConfig):
    # no memory cap: the copy and matmul probes size themselves to the device and would run
    # out of memory under a model's cap (every roofline then had no device peaks)
    setup_process(config, memory_cap=False)
    return _measure_peaks_here(config)


def _measure_peaks_here(config: RunConfig):
    return roofline.measure_peaks(torch.device(config.device), config.workload.dtype,
                                  tf32=config.workload.tf32)  # fmt: skip


def _measure_peaks(config: RunConfig) -> Context:
    """The device peaks every roofline of the run is judged against, measured once up front
    (in a worker of its own, set up like the others) so that no model's MFU depends on another
    model having run first."""
    try:
        if config.isolation == "process":
            peaks = call_in_worker(_peaks_worker, config, name="cnnbench-peaks",
                                   limit_s=unit_limit_s(config))  # fmt: skip
        else:
            peaks = _measure_peaks_here(config)
    except Exception as exc:
        return Context(config, None, error_line(exc))
    return Context(config, peaks)


def _sweep_key(metric: str, spec: Spec) -> tuple:
    """What identifies one batch sweep: the spec without its batch."""
    return (metric, dataclasses.replace(spec, batch_size=0))


def _ends_sweep(r: Record) -> bool:
    return (
        r.status == "oom"
        or (r.status == "unsupported" and (r.reason or "").startswith("sweep ends"))
        or (r.status == "ok" and bool(r.values.get("sweep_end")))
    )


def _sweep_stops(records) -> dict[tuple, int]:
    """For each sweep that ended (out of memory, the tensor-size limit, a plateau): the batch
    where it ended. A resumed sweep does not go past it, as the sweep itself did not."""
    stops: dict[tuple, int] = {}
    for r in records:
        if HARNESSES.get(r.metric) and HARNESSES[r.metric].sweep and _ends_sweep(r):
            key = _sweep_key(r.metric, r.spec)
            stops[key] = min(stops.get(key, r.spec.batch_size), r.spec.batch_size)
    return stops


def shard(units: dict[str, list[Unit]], config: RunConfig) -> dict[str, list[Unit]]:
    """Shard K of N of the run's units: groups in plan order, group i to shard i mod N. A group
    is one unit, except that a batch sweep (model, metric, mode) stays whole, since where it
    ends depends on its smaller batches. Deterministic: every shard computes the same plan."""
    k, n = config.shard
    groups: dict[tuple, int] = {}
    mine: dict[str, list[Unit]] = {}
    for model, planned in units.items():
        for u in planned:
            sweeping = config.batches.sweep and HARNESSES[u.metric].sweep
            key = _sweep_key(u.metric, u.spec) if sweeping else (u.metric, u.spec)
            index = groups.setdefault(key, len(groups))
            if index % n == k:
                mine.setdefault(model, []).append(u)
    return mine


def _check_resume(store: RunStore, env: dict, config: RunConfig) -> None:
    """A resume measures on the machine, the torch and the settings of the run it continues
    (settings that only select units, such as models or batches, may differ)."""
    old = store.read_env()
    if not old:
        return
    for key in ("device_name",):
        if old.get(key) != env.get(key):
            raise ResumeMismatch(f"cannot resume: {key} was {old.get(key)!r}, now {env.get(key)!r}")
    if old.get("versions", {}).get("torch") != env["versions"]["torch"]:
        raise ResumeMismatch(
            f"cannot resume: torch was {old['versions']['torch']}, now {env['versions']['torch']}"
        )
    changes = measurement_changes(old.get("config") or {}, config)
    if changes:
        listed = "; ".join(f"{_field(c.field)} was {c.was!r}, now {c.now!r}" for c in changes)
        raise ResumeMismatch(
            f"cannot resume {store.root}: it was measured with other settings ({listed}); give "
            f"the settings it was run with, or start a new run with {_field('out_dir')}"
        )


def _check_out_dir(config: RunConfig) -> None:
    out = Path(config.out_dir)
    store = RunStore(out)
    resume, out_dir = _field("resume"), _field("out_dir")
    holder = store.held_by() if out.is_dir() else None
    if holder is not None:  # another run is writing there now (a new run or a resume alike)
        raise RunLocked(store.root, holder)
    if config.resume:
        if not out.is_dir():
            raise RunRefused(f"{resume} {out}: no such folder; start a run with {out_dir} {out}")
        missing = [p.name for p in (store.env_path, store.results_path) if not p.is_file()]
        if missing:
            raise RunRefused(
                f"{resume} {out}: not a cnnbench run folder (no {' or '.join(missing)}); "
                f"start a new run with {out_dir} {out}"
            )
        return
    if out.exists() and not out.is_dir():
        raise RunRefused(f"{out_dir} {out}: exists and is not a folder; choose another {out_dir}")
    if store.results_path.exists():
        raise RunRefused(
            f"{out_dir} {out}: already holds a run (results.jsonl); continue it with {resume} "
            f"{out} or choose another {out_dir}"
        )
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunRefused(f"{out_dir} {out}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunRefused(f"{out_dir} {out}: cannot be written ({ancestor} is not writable)")


def _first_too_small(checks: list[tuple[str, int, str]]) -> str | None:
    """The refusal for the first (model, size, setting) whose model cannot take that input."""
    from .measure.shapes import check_input_size, min_input_size

    for model, size, setting in checks:
        try:
            check_input_size(model, size)
        except models.InputTooSmallError as exc:
            try:
                smallest = min_input_size(model).min_size
            except ValueError:
                continue  # fails at every size: not a size problem; its units record why
            return (
                f"{setting} {size} is too small for '{model}' (layer '{exc.layer}' fails); the "
                f"smallest input it runs on is {smallest}"
            )
    return None


def _sizes_and_work(checks: list[tuple[str, int, str]], pairs: list[tuple[str, int]]):
    """The size refusal (:func:`_first_too_small`) and the plan's counted work
    (``plan.count_work``) in one call: one worker start for both (a worker's start, torch's import
    included, is most of a dry run's time)."""
    from .plan import count_work

    return _first_too_small(checks), count_work(pairs, "none")


def _check_sizes(config: RunConfig) -> dict | None:
    """Every unit that runs the model gets an input it accepts. The check runs each model on the
    meta device (shapes only), in a worker like the measurements: a model's own code never runs
    in this process. The same worker counts each (model, side)'s work for the run plan; returns
    it (``None`` where the worker died: the plan counts again, and says what it could not)."""
    checks: dict[tuple[str, int], str] = {}
    pairs: set[tuple[str, int]] = set()
    sized_by = (_field("workload.image_size"), _field("train.image_size"))  # (every unit, training)
    for model in config.models:
        for unit in plan(config, model):
            pairs.add((model, unit.spec.image_size))
            if unit.metric != "minsize":
                explicit_train = unit.metric == "accuracy" and bool(config.train.image_size)
                checks.setdefault((model, unit.spec.image_size), sized_by[explicit_train])
    todo = [(m, size, setting) for (m, size), setting in checks.items()]
    if config.isolation == "process":
        try:
            refusal, work = call_in_worker(_sizes_and_work, todo, sorted(pairs),
                                           name="cnnbench-sizes", limit_s=unit_limit_s(config))  # fmt: skip
        except WorkerError:
            return None  # a model that kills its process: its units will record that
    else:
        refusal, work = _sizes_and_work(todo, sorted(pairs))
    if refusal:
        raise RunRefused(refusal)
    return work


def preflight(config: RunConfig) -> dict | None:
    """Refuse a run that cannot work, before anything is measured or any folder is created:
    the run folder (``out_dir`` creatable and free; resumed: a run of this machine and torch,
    its results.jsonl readable), option combinations, input sizes against each model's minimum,
    and a named data folder that holds no data. Raises :class:`RunRefused` (or
    :class:`~cnnbench.results.CorruptStore`) with one line. Returns the work of every (model,
    side) that the run plan costs (``plan.count_work``), counted by the size check's worker, or
    ``None`` where that worker died."""
    if not config.models:
        raise RunRefused("the selection holds no model; see: cnnbench list")
    if not config.metrics:
        raise RunRefused("no metric selected")
    _check_out_dir(config)
    if config.resume:
        store = RunStore(config.out_dir)
        _check_resume(store, collect_env(config.device), config)
        store.records()  # a corrupt line refuses the resume here (CorruptStore), file untouched
    _check_options(config)
    work = _check_sizes(config)
    if {"accuracy", "tricks"} & set(config.metrics):  # both train on Fashion-MNIST
        from .data import DataNotFound, locate, named_dir

        if named_dir(config.data_dir) is not None:
            try:
                locate(config.data_dir)
            except DataNotFound as exc:
                raise RunRefused(str(exc).splitlines()[0]) from None
    return work


def _check_options(config: RunConfig) -> None:
    """Values and combinations of settings that cannot work (a repeated seed, momentum for Adam,
    TF32 on a CPU, more threads than CPUs, ...)."""
    tr, wl = config.train, config.workload
    for name, value in ((_field("train.seeds"), tr.seeds),
                        (_field("batches.batch_sizes"), config.batches.batch_sizes)):  # fmt: skip
        if len(set(value)) != len(value):
            raise RunRefused(f"{name} {','.join(map(str, value))} repeats a value; give each once")
    for name, n in ((_field("train.train_subset"), tr.train_subset),
                    (_field("train.test_subset"), tr.test_subset)):  # fmt: skip
        if n is not None and n % 10:
            raise RunRefused(f"{name} {n} is not a multiple of the 10 classes (balanced subsets)")
    if tr.optimizer != "sgd" and tr.momentum:
        raise RunRefused(f"{_field('train.momentum')} applies to SGD; "
                         f"{_field('train.optimizer')} {tr.optimizer} has its own")  # fmt: skip
    cuda = config.device.startswith("cuda")
    tf32, dtype = _field("workload.tf32"), _field("workload.dtype")
    graphs = _field("workload.cuda_graphs")
    for flag, given, why in (
        (tf32, wl.tf32 and not cuda, "applies to CUDA (a CPU has no TF32)"),
        (tf32, wl.tf32 and wl.dtype != "fp32", f"applies to fp32; {dtype} {wl.dtype} is "
         "reduced precision already"),
        (graphs, wl.cuda_graphs and not cuda, f"needs {_field('device')} cuda"),
        (graphs, wl.cuda_graphs and wl.compile, f"and {_field('workload.compile')}: choose one "
         "(torch.compile with mode='reduce-overhead' captures graphs itself)"),
        (f"{_field('workload.cast')} weights", wl.cast == "weights" and wl.dtype == "fp32",
         f"needs {dtype} bf16 or fp16"),
    ):  # fmt: skip
        if given:
            raise RunRefused(f"{flag} {why}")
    if "tricks" in config.metrics:
        tricks_refused = trick_refusal(config, _field)
        if tricks_refused:
            raise RunRefused(tricks_refused)
    cpus = os.cpu_count() or 1
    if wl.threads and wl.threads > cpus and not cuda:
        raise RunRefused(
            f"{_field('workload.threads')} {wl.threads}: this machine has {cpus} CPU(s)"
        )


@dataclass(frozen=True)
class _Resumed:
    """What a resumed run folder holds already (empty for a new run)."""

    kept: tuple[Record, ...] = ()  # every record but the errors, which are retried
    done: frozenset = frozenset()  # their keys: units not measured again
    stopped_at: dict = dataclasses.field(default_factory=dict)  # sweep → the batch it ended at
    env: dict = dataclasses.field(default_factory=dict)  # env.json as it was


def _resume_state(config: RunConfig, store: RunStore, env: dict) -> _Resumed:
    """The records a resumed run keeps. Reading first refuses a corrupt file (CorruptStore), and
    another machine or torch (ResumeMismatch), before anything in the folder is rewritten."""
    if not config.resume:
        return _Resumed()
    _check_resume(store, env, config)
    # error records are retried; every other status is a result and is kept
    kept = tuple(r for r in store.records() if r.status != "error")
    stops = _sweep_stops(kept) if config.batches.sweep else {}
    return _Resumed(kept, frozenset(r.key for r in kept), stops, store.read_env())


def _pending(
    config: RunConfig, resumed: _Resumed
) -> tuple[dict[str, list[Unit]], dict[str, list[Unit]], list[Unit]]:
    """(every unit of the run or its shard by model, those still to measure by model, those
    skipped: recorded already, or past where their sweep ended last time)."""
    all_units = {m: plan(config, m) for m in config.models}
    if config.shard:
        all_units = shard(all_units, config)
    todo: dict[str, list[Unit]] = {}
    skipped: list[Unit] = []
    for model, units in all_units.items():
        for u in units:
            ended = resumed.stopped_at.get(_sweep_key(u.metric, u.spec), u.spec.batch_size)
            if Record(u.metric, u.spec, "ok").key in resumed.done or u.spec.batch_size > ended:
                skipped.append(u)
            else:
                todo.setdefault(model, []).append(u)
    return all_units, todo, skipped


def _context(config: RunConfig, todo: dict[str, list[Unit]], env: dict) -> Context:
    """What every unit is measured with: the device peaks when a roofline is to be measured
    (recorded in ``env`` as a fact about the machine, never read back)."""
    if not any(u.metric == "roofline" for units in todo.values() for u in units):
        return Context(config)
    ctx = _measure_peaks(config)
    if ctx.peaks is not None:
        env["peaks"] = {f"{config.device} {ctx.peaks.math_mode}": dataclasses.asdict(ctx.peaks)}
    return ctx


def _env_json(config: RunConfig, env: dict, previous: dict) -> dict:
    """env.json: ``env`` with what the workers run with (the parent is not set up like them) and
    the fingerprint of what decides speed (compare checks it before calling a speed change); a
    resumed run keeps the first env and appends this one under ``resumed``."""
    try:
        env["worker_flags"] = (
            call_in_worker(_worker_flags, config, name="cnnbench-flags",
                           limit_s=unit_limit_s(config))  # fmt: skip
            if config.isolation == "process"
            else process_flags()
        )
    except Exception as exc:
        env["worker_flags"] = {"error": error_line(exc)}
    env["fingerprint"] = fingerprint(env)
    env["fingerprint_id"] = fingerprint_id(env)
    if previous:
        return {**previous, "resumed": previous.get("resumed", []) + [env]}
    return env


@dataclass
class _Recorder:
    """Appends each finished record to the store and reports it; keeps the ok records of the
    rounds so far of each unit that is pooled over rounds."""

    store: RunStore
    notify: Callable[[str, object], None]
    rounds: int  # latency rounds of the run
    written: list[Record] = dataclasses.field(default_factory=list)
    partial: dict[Unit, list[Record]] = dataclasses.field(default_factory=dict)

    def write(self, record: Record) -> None:
        self.store.append(record)
        self.written.append(record)
        self.notify("record", record)

    def record(self, record: Record, config: RunConfig) -> None:
        """A round's record: written at once, or kept until its unit's last round is pooled."""
        unit = Unit(record.metric, record.spec)
        harness = HARNESSES[unit.metric]
        if harness.pool is None or record.status != "ok":
            self.partial.pop(unit, None)  # a failed round ends the unit
            self.write(record)
            return
        self.partial.setdefault(unit, []).append(record)
        if len(self.partial[unit]) == self.rounds:
            self.write(_pooled(harness, unit, self.partial.pop(unit), config))

    def skip(self, unit: Unit, r: int) -> None:
        if self.partial.pop(unit, None):  # measured in earlier rounds, not in this one
            self.write(Record.failed(unit.metric, unit.spec, "oom",
                                     f"not measured in round {r + 1} of {self.rounds}: a smaller "
                                     "batch of this sweep ran out of memory in that round"))  # fmt: skip
        else:
            self.notify("skip", unit)

    def lost(self, pending: list[Unit], why: str) -> None:
        """The worker is gone: an error record for each unit it did not finish."""
        for u in pending:
            self.partial.pop(u, None)
            self.write(Record.failed(u.metric, u.spec, "error", f"not measured: {why}"))

    def timed_out(self, hung: Unit, pending: list[Unit], limit_s: float) -> list[Unit]:
        """``hung`` ran past its time limit and its worker was killed: an error record for it
        and for the larger batches of the same kind, which would run longer still. Returns the
        units that go on (in a fresh worker)."""
        limit = f"the unit time limit of {limit_s:g} s (timing.unit_timeout_s)"
        self.partial.pop(hung, None)
        self.write(Record.failed(hung.metric, hung.spec, "error",
                                 f"ran past {limit}; its worker was killed", limit_s))  # fmt: skip
        key, batch = _sweep_key(hung.metric, hung.spec), hung.spec.batch_size
        larger = [u for u in pending
                  if _sweep_key(u.metric, u.spec) == key and u.spec.batch_size > batch]  # fmt: skip
        self.lost(larger, f"batch {batch} of the same measurement ran past {limit}")
        return [u for u in pending if u != hung and u not in larger]


def _run_round(ctx: Context, out: _Recorder, r: int, units: list[Unit], seen: dict | None) -> None:
    """Round ``r`` of one model: every unit in round 0, then the units still pooling rounds (none:
    no worker is started). A unit that runs past its time limit ends as an error record, and the
    units after it go on in a fresh worker."""
    pending = [u for u in units if r == 0 or (u in out.partial and len(out.partial[u]) == r)]
    while pending:
        pending = _run_stream(ctx, out, r, pending, seen)


def _run_stream(ctx: Context, out: _Recorder, r: int, units: list[Unit], seen: dict | None
                ) -> list[Unit]:  # fmt: skip
    """Measure ``units`` in one stream of events (one model worker); returns the units still to
    measure after a timeout (else none)."""
    pending, started = list(units), None
    for kind, payload in _events(ctx, units, r == 0, seen):
        if kind == "record":
            pending.remove(Unit(payload.metric, payload.spec))
            out.record(payload, ctx.config)
        elif kind == "skip":
            pending.remove(payload)
            out.skip(payload, r)
        elif kind in ("died", "raised"):
            out.lost(pending, payload if kind == "died" else payload[0])
            return []
        elif kind == "timeout":  # silent in a unit, or between two (sizing the next one)
            return out.timed_out(started if started in pending else pending[0], pending, payload)
        else:
            started = payload if kind == "start" else started
            out.notify(kind, payload)
    return []


def run(
    config: RunConfig,
    on_event: Callable[[str, object], None] | None = None,
    *,
    estimate: dict | None = None,
    unit_estimates_s: dict | None = None,
) -> RunResult:
    """Run ``config``; ``on_event(kind, payload)`` sees ``plan`` (list of units), ``start`` and
    ``skip`` (a :class:`Unit`), ``record`` (a :class:`Record`) and ``warning`` (a message: a
    torn last line of results.jsonl that was cut away).

    Raises :class:`ResumeMismatch` or :class:`~cnnbench.results.CorruptStore` before anything is
    measured or rewritten when a folder to resume cannot be resumed, and
    :class:`~cnnbench.results.store.RunLocked` naming the holder when another run is writing
    into the folder (a lock left by a run that died is taken over, with a warning). A write that
    fails (a full disk) raises :class:`~cnnbench.results.store.StoreError`; every record written
    before it is whole. ``estimate`` (``plan.Plan.summary()``) goes into env.json beside the
    run's own wall time, so a report can show the one against the other; ``unit_estimates_s``
    (``plan.Plan.unit_seconds()``) sets each unit's time limit (:func:`unit_limit_s`)."""
    notify = on_event or (lambda kind, payload: None)
    store = RunStore(config.out_dir)
    with store.lock(config.command_line) as lock:
        if lock.warning:
            notify("warning", lock.warning)
        if not config.resume and store.has_records():  # written between preflight and the lock
            raise RunRefused(f"{_field('out_dir')} {store.root}: another run wrote into it as "
                             f"this one started; choose another {_field('out_dir')}")  # fmt: skip
        return _run_locked(config, store.create(), notify, estimate, unit_estimates_s)


def _run_locked(config: RunConfig, store: RunStore, notify: Callable[[str, object], None],
                estimate: dict | None = None, unit_estimates_s: dict | None = None
                ) -> RunResult:  # fmt: skip
    """:func:`run`, holding the run folder's lock."""
    started = time.perf_counter()
    env = collect_env(config.device)
    env["config"] = dataclasses.asdict(config)
    if estimate:
        env["plan"] = estimate
    resumed = _resume_state(config, store, env)
    repaired = store.repair_torn_tail()
    if repaired:
        notify("warning", repaired)
    all_units, todo, skipped = _pending(config, resumed)
    if config.isolation != "process":
        setup_process(config)  # once: threads, cuDNN autotuning, the memory cap
    ctx = dataclasses.replace(_context(config, todo, env), unit_estimates_s=unit_estimates_s)
    written = _env_json(config, env, resumed.env)
    store.write_env(written)
    notify("plan", [u for units in all_units.values() for u in units])
    for u in skipped:
        notify("skip", u)
    out = _Recorder(store, notify, config.timing.rounds)
    # Round r of every model, then round r + 1 (A B C A B C ...): drift over time hits every
    # model alike. Round 0 also measures the units that are measured once.
    kept = list(resumed.kept)
    for r in range(config.timing.rounds):
        for model, units in todo.items():
            seen = _seen_rates(kept, all_units[model]) if config.batches.sweep and kept else None
            _run_round(ctx, out, r, units, seen)
    env["wall_s"] = round(time.perf_counter() - started, 1)  # this session's, beside its estimate
    store.write_env(written)  # env is this session's entry of ``written`` (resumed: the last)
    return RunResult(str(store.root), tuple(out.written), len(skipped))
