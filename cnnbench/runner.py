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
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import models
from .config import RunConfig
from .env import collect_env
from .measure import memory, roofline
from .measure._device import is_oom, release
from .measure.harnesses import HARNESSES, Context
from .measure.train import Unsupported
from .measure.worker import WorkerError, call_in_worker, error_line, run_in_worker
from .results import Record, RunStore, Spec

__all__ = ["Unit", "RunResult", "plan", "preflight", "run", "RunRefused", "ResumeMismatch"]


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


class RunRefused(ValueError):
    """The run cannot start as configured: one line saying what is wrong and what would be right.
    Raised by :func:`preflight` before anything is measured or any folder is created."""


class ResumeMismatch(RunRefused):
    """--resume on a folder whose env.json describes another machine or software stack."""


def _base_spec(config: RunConfig, model: str) -> Spec:
    wl = config.workload
    return Spec(
        model=model,
        image_size=wl.image_size or models.get_spec(model).input_size,
        batch_size=1,
        device=config.device,
        dtype=wl.dtype,
        channels_last=wl.channels_last,
        compiled=False,
        # CPU: the thread count every worker uses (set from --threads, else torch's default)
        threads=None if config.device.startswith("cuda") else wl.threads or torch.get_num_threads(),
    )


def plan(config: RunConfig, model: str) -> list[Unit]:
    """Every unit the run will attempt for ``model``, in order (a sweep may end early on OOM)."""
    base = _base_spec(config, model)
    units = []
    for metric in config.metrics:
        if metric not in HARNESSES:
            raise ValueError(f"unknown metric {metric!r}")
        units += [Unit(metric, spec) for spec in HARNESSES[metric].plan(config, base)]
    return units


def _measure_unit(unit: Unit, ctx: Context) -> Record:
    harness = HARNESSES[unit.metric]
    t0 = time.perf_counter()
    try:
        result = harness.measure_unit(unit.spec, ctx)
        status, reason = harness.outcome(result)
        return Record.of(unit.metric, unit.spec, result, status=status, reason=reason,
                         duration_s=time.perf_counter() - t0)  # fmt: skip
    except Unsupported as exc:
        return Record.failed(unit.metric, unit.spec, "unsupported", str(exc),
                             time.perf_counter() - t0)  # fmt: skip
    except (Exception, MemoryError) as exc:
        status = "oom" if is_oom(exc) or isinstance(exc, MemoryError) else "error"
        if status == "error" and os.environ.get("CNNBENCH_DEBUG"):
            traceback.print_exc()
        return Record.failed(unit.metric, unit.spec, status, error_line(exc),
                             time.perf_counter() - t0)  # fmt: skip
    finally:
        release(torch.device(unit.spec.device))


def _setup_process(config: RunConfig) -> None:
    """Per-process settings every measurement depends on (recorded in the spec and env.json)."""
    if config.workload.threads:
        torch.set_num_threads(config.workload.threads)
    if config.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = config.workload.cudnn_benchmark
    memory.set_memory_cap(config.memory.cap_bytes, config.device)


def _execute(ctx: Context, units: list[Unit]) -> Iterator[tuple[str, object]]:
    """Measure ``units`` in order, yielding ``start``/``skip``/``record`` events; a batch sweep
    stops at its first OOM for that mode."""
    sweeping = ctx.config.batches.sweep
    stopped: set[tuple[str, str]] = set()  # (metric, mode) sweeps that ran out of memory
    for unit in units:
        key = (unit.metric, unit.spec.mode)
        if sweeping and HARNESSES[unit.metric].sweep and key in stopped:
            yield "skip", unit  # larger batches of a sweep that already ran out of memory
            continue
        yield "start", unit
        record = _measure_unit(unit, ctx)
        if record.status == "oom":
            stopped.add(key)
        yield "record", record


def _worker(emit, ctx: Context, units: list[Unit]) -> None:
    """A model's worker process: set up like every worker, then measure its units."""
    _setup_process(ctx.config)
    for kind, payload in _execute(ctx, units):
        emit(kind, payload)


def _events(ctx: Context, units: list[Unit]) -> Iterator[tuple[str, object]]:
    if ctx.config.isolation == "process":
        return run_in_worker(_worker, ctx, units)
    return _execute(ctx, units)  # this process was set up once, by run()


def _pooled(harness, unit: Unit, rounds: list[Record], config: RunConfig) -> Record:
    """One record from the ok records of every round of ``unit``."""
    result = harness.pool([r.result for r in rounds], unit.spec, config.timing)
    return Record.of(unit.metric, unit.spec, result,
                     duration_s=sum(r.duration_s for r in rounds))  # fmt: skip


def _peaks_worker(config: RunConfig):
    _setup_process(config)
    return _measure_peaks_here(config)


def _measure_peaks_here(config: RunConfig):
    return roofline.measure_peaks(torch.device(config.device), config.workload.dtype)


def _measure_peaks(config: RunConfig) -> Context:
    """The device peaks every roofline of the run is judged against, measured once up front
    (in a worker of its own, set up like the others) so that no model's MFU depends on another
    model having run first."""
    try:
        if config.isolation == "process":
            peaks = call_in_worker(_peaks_worker, config, name="cnnbench-peaks")
        else:
            peaks = _measure_peaks_here(config)
    except Exception as exc:
        return Context(config, None, error_line(exc))
    return Context(config, peaks)


def _check_resume(store: RunStore, env: dict) -> None:
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


def _check_out_dir(config: RunConfig) -> None:
    out = Path(config.out_dir)
    store = RunStore(out)
    if config.resume:
        if not out.is_dir():
            raise RunRefused(f"--resume {out}: no such folder; start a run with --out {out}")
        missing = [p.name for p in (store.env_path, store.results_path) if not p.is_file()]
        if missing:
            raise RunRefused(
                f"--resume {out}: not a cnnbench run folder (no {' or '.join(missing)}); "
                f"start a new run with --out {out}"
            )
        return
    if out.exists() and not out.is_dir():
        raise RunRefused(f"--out {out}: exists and is not a folder; choose another --out")
    if store.results_path.exists():
        raise RunRefused(
            f"--out {out}: already holds a run (results.jsonl); continue it with --resume {out} "
            "or choose another --out"
        )
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunRefused(f"--out {out}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunRefused(f"--out {out}: cannot be written ({ancestor} is not writable)")


def _first_too_small(checks: list[tuple[str, int, str]]) -> str | None:
    """The refusal for the first (model, size, flag) whose model cannot take that input."""
    from .measure.shapes import check_input_size, min_input_size

    for model, size, flag in checks:
        try:
            check_input_size(model, size)
        except models.InputTooSmallError as exc:
            try:
                smallest = min_input_size(model).min_size
            except ValueError:
                continue  # fails at every size: not a size problem; its units record why
            return (
                f"{flag} {size} is too small for '{model}' (layer '{exc.layer}' fails); the "
                f"smallest input it runs on is {smallest}"
            )
    return None


def _check_sizes(config: RunConfig) -> None:
    """Every unit that runs the model gets an input it accepts. The check runs each model on the
    meta device (shapes only), in a worker like the measurements: a model's own code never runs
    in this process."""
    checks: dict[tuple[str, int], str] = {}
    for model in config.models:
        for unit in plan(config, model):
            if unit.metric != "minsize":
                explicit_train = unit.metric == "accuracy" and config.train.image_size
                flag = "--train-image-size" if explicit_train else "--image-size"
                checks.setdefault((model, unit.spec.image_size), flag)
    todo = [(m, size, flag) for (m, size), flag in checks.items()]
    if config.isolation == "process":
        try:
            refusal = call_in_worker(_first_too_small, todo, name="cnnbench-sizes")
        except WorkerError:
            return  # a model that kills its process: its units will record that
    else:
        refusal = _first_too_small(todo)
    if refusal:
        raise RunRefused(refusal)


def preflight(config: RunConfig) -> None:
    """Refuse a run that cannot work, before anything is measured or any folder is created:
    the run folder (``--out`` creatable and free, ``--resume`` a run of this machine and torch,
    its results.jsonl readable), option combinations, input sizes against each model's minimum,
    and a named data folder that holds no data. Raises :class:`RunRefused` (or
    :class:`~cnnbench.results.CorruptStore`) with one line."""
    if not config.models:
        raise RunRefused("the selection holds no model; see: cnnbench list")
    if not config.metrics:
        raise RunRefused("no metric selected")
    _check_out_dir(config)
    if config.resume:
        store = RunStore(config.out_dir)
        _check_resume(store, collect_env(config.device))
        store.records()  # a corrupt line refuses the resume here (CorruptStore), file untouched
    tr, wl = config.train, config.workload
    for name, value in (("--seeds", tr.seeds), ("--batch-sizes", config.batches.batch_sizes)):
        if len(set(value)) != len(value):
            raise RunRefused(f"{name} {','.join(map(str, value))} repeats a value; give each once")
    for name, n in (("--train-subset", tr.train_subset), ("--test-subset", tr.test_subset)):
        if n is not None and n % 10:
            raise RunRefused(f"{name} {n} is not a multiple of the 10 classes (balanced subsets)")
    if tr.optimizer != "sgd" and tr.momentum:
        raise RunRefused(f"--momentum applies to SGD; --optimizer {tr.optimizer} has its own")
    cpus = os.cpu_count() or 1
    if wl.threads and wl.threads > cpus and not config.device.startswith("cuda"):
        raise RunRefused(f"--threads {wl.threads}: this machine has {cpus} CPU(s)")
    _check_sizes(config)
    if "accuracy" in config.metrics:
        from .data import DataNotFound, locate, named_dir

        if named_dir(config.data_dir) is not None:
            try:
                locate(config.data_dir)
            except DataNotFound as exc:
                raise RunRefused(str(exc).splitlines()[0]) from None


def run(
    config: RunConfig,
    on_event: Callable[[str, object], None] | None = None,
) -> RunResult:
    """Run ``config``; ``on_event(kind, payload)`` sees ``plan`` (list of units), ``start`` and
    ``skip`` (a :class:`Unit`), ``record`` (a :class:`Record`) and ``warning`` (a message: a
    torn last line of results.jsonl that was cut away).

    Raises :class:`ResumeMismatch` or :class:`~cnnbench.results.CorruptStore` before anything is
    measured or rewritten when a folder to resume cannot be resumed."""
    notify = on_event or (lambda kind, payload: None)
    store = RunStore(config.out_dir).create()
    env = collect_env(config.device)
    env["config"] = dataclasses.asdict(config)
    done_keys: set[tuple] = set()
    previous = {}
    if config.resume:
        _check_resume(store, env)
        # error records are retried; every other status is a result and is kept. Reading first
        # refuses a corrupt file (CorruptStore) before anything in the folder is rewritten.
        done_keys = {r.key for r in store.records() if r.status != "error"}
        previous = store.read_env()
    repaired = store.repair_torn_tail()
    if repaired:
        notify("warning", repaired)

    all_units = {m: plan(config, m) for m in config.models}
    todo: dict[str, list[Unit]] = {}
    skipped: list[Unit] = []
    for model, units in all_units.items():
        for u in units:
            if Record(u.metric, u.spec, "ok").key in done_keys:
                skipped.append(u)
            else:
                todo.setdefault(model, []).append(u)
    if config.isolation != "process":
        _setup_process(config)  # once: threads, cuDNN autotuning, the memory cap
    ctx = Context(config)
    if any(u.metric == "roofline" for units in todo.values() for u in units):
        ctx = _measure_peaks(config)
        if ctx.peaks is not None:  # a fact about the machine: recorded, never read back
            env["peaks"] = {f"{config.device} {config.workload.dtype}": dataclasses.asdict(ctx.peaks)}
    if previous:
        env = {**previous, "resumed": previous.get("resumed", []) + [env]}
    store.write_env(env)

    notify("plan", [u for units in all_units.values() for u in units])
    for u in skipped:
        notify("skip", u)
    written: list[Record] = []

    def write(record: Record) -> None:
        store.append(record)
        written.append(record)
        notify("record", record)

    # Round r of every model, then round r + 1 (A B C A B C ...): drift over time hits every
    # model alike. Round 0 also measures the units that are measured once.
    rounds = config.timing.rounds
    partial: dict[Unit, list[Record]] = {}  # pooled units: the ok records of finished rounds
    for r in range(rounds):
        for model, units in todo.items():
            mine = [u for u in units if r == 0 or (u in partial and len(partial[u]) == r)]
            if not mine:
                continue  # nothing of this model is timed in rounds: no worker to start
            pending = list(mine)
            for kind, payload in _events(ctx, mine):
                if kind == "record":
                    unit = Unit(payload.metric, payload.spec)
                    pending.remove(unit)
                    harness = HARNESSES[unit.metric]
                    if harness.pool is None or payload.status != "ok":
                        partial.pop(unit, None)  # a failed round ends the unit
                        write(payload)
                    else:
                        partial.setdefault(unit, []).append(payload)
                        if len(partial[unit]) == rounds:
                            write(_pooled(harness, unit, partial.pop(unit), config))
                elif kind == "skip":
                    pending.remove(payload)
                    partial.pop(payload, None)
                    notify(kind, payload)
                elif kind in ("died", "raised"):
                    why = payload if kind == "died" else payload[0]
                    for u in pending:  # the worker is gone: say what it did not finish
                        partial.pop(u, None)
                        write(Record.failed(u.metric, u.spec, "error", f"not measured: {why}"))
                    pending = []
                else:
                    notify(kind, payload)
    return RunResult(str(store.root), tuple(written), len(skipped))
