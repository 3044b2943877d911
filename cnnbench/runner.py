"""The run loop: each selected model × each requested metric → records in a run folder.

Isolation: every model is measured in a fresh worker process (``spawn``), so that one model's
allocator state, cuDNN autotuning cache, oneDNN primitive cache and resident memory cannot
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
import multiprocessing as mp
import os
import queue as queue_mod
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import models
from .config import RunConfig
from .env import collect_env
from .measure import flops, latency, memory, params, roofline, shapes, train
from .measure._device import is_oom, release
from .results import Record, RunStore, Spec, values_of

__all__ = ["Unit", "RunResult", "plan", "run", "ResumeMismatch"]


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


class ResumeMismatch(ValueError):
    """--resume on a folder whose env.json describes another machine or software stack."""


def _base_spec(config: RunConfig, model: str) -> Spec:
    size = config.image_size or models.get_spec(model).input_size
    return Spec(
        model=model,
        image_size=size,
        batch_size=1,
        device=config.device,
        dtype=config.dtype,
        channels_last=config.channels_last,
        compiled=False,
        # CPU: the thread count every worker uses (set from config.threads, else torch's default)
        threads=None
        if config.device.startswith("cuda")
        else config.threads or torch.get_num_threads(),
    )


def _sweep_batches(config: RunConfig) -> list[int]:
    if not config.sweep:
        return list(config.batch_sizes)
    out, b = [], 1
    while b <= config.sweep_max_batch:
        out.append(b)
        b *= 2
    return out


def _train_size(config: RunConfig, model: str) -> int:
    if config.train_image_size:
        return config.train_image_size
    if config.image_size:
        return config.image_size
    if config.train_resolution == "small":
        try:
            return train.small_train_size(model)
        except ValueError:
            pass  # runs on no size we tried: train at its own size and let that unit fail there
    return models.get_spec(model).input_size


def train_config(config: RunConfig, model: str | None = None) -> train.TrainConfig:
    """The training options of ``config``; a variant's own options (``googlenet_ls``'s label
    smoothing) apply unless the command line set the same option."""
    variant = models.get_spec(model).train_overrides if model else {}
    explicit = set(config.overrides)
    pick = {k: v for k, v in variant.items() if k not in explicit and f"train_{k}" not in explicit}
    cfg = train.TrainConfig(
        epochs=config.train_epochs,
        batch_size=config.train_batch_size,
        optimizer=config.train_optimizer,
        lr=config.train_lr,
        momentum=config.train_momentum,
        train_subset=config.train_subset,
        test_subset=config.test_subset,
        seeds=config.seeds,
        label_smoothing=config.label_smoothing,
        target_accuracy=config.target_accuracy,
    )
    return dataclasses.replace(cfg, **pick)


def _measure_accuracy(spec: Spec, config: RunConfig, t0: float) -> Record:
    from .data import DataNotFound, load_fashion_mnist

    try:
        data = load_fashion_mnist(config.data_dir)
    except DataNotFound as exc:
        return Record.failed("accuracy", spec, "unsupported", str(exc), time.perf_counter() - t0)
    result = train.train(spec, train_config(config, spec.model), data)
    values = values_of(result)
    values["data_dir"] = str(data.location.root)
    values["data_verified"] = data.verified
    duration = time.perf_counter() - t0
    if result.diverged_seeds:
        reason = f"loss became NaN or infinite (seed {', '.join(map(str, result.diverged_seeds))})"
        return Record("accuracy", spec, "diverged", values, reason, duration)
    return Record("accuracy", spec, "ok", values, duration_s=duration)


def plan(config: RunConfig, model: str) -> list[Unit]:
    """Every unit the run will attempt for ``model``, in order (a sweep may end early on OOM)."""
    base = _base_spec(config, model)
    units: list[Unit] = []
    for metric in config.metrics:
        if metric in ("params", "flops", "minsize"):
            units.append(Unit(metric, base))  # device-independent counts, batch 1, fp32, eager
        elif metric == "roofline":
            batch = max(config.memory_batch_sizes)
            units.append(Unit(metric, dataclasses.replace(base, batch_size=batch)))
        elif metric == "latency":
            for mode in ("inference", "train"):
                for b in _sweep_batches(config):
                    spec = dataclasses.replace(
                        base, batch_size=b, mode=mode, compiled=config.compile
                    )
                    units.append(Unit(metric, spec))
        elif metric == "memory":
            for mode in ("inference", "train"):
                for b in config.memory_batch_sizes:
                    units.append(Unit(metric, dataclasses.replace(base, batch_size=b, mode=mode)))
        elif metric == "accuracy":
            size = _train_size(config, model)
            spec = dataclasses.replace(
                base, image_size=size, batch_size=config.train_batch_size, mode="train",
                compiled=config.compile,
            )  # fmt: skip
            units.append(Unit(metric, spec))
        else:
            raise ValueError(f"unknown metric {metric!r}")
    return units


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:500]


def _measure_unit(unit: Unit, config: RunConfig) -> Record:
    spec = unit.spec
    lr = models.get_spec(spec.model).lr or 0.01
    t0 = time.perf_counter()
    device = torch.device(spec.device)
    try:
        if unit.metric == "accuracy":
            return _measure_accuracy(spec, config, t0)
        if unit.metric == "memory":  # builds its own model, in a process of its own on CPU
            result = memory.measure(spec, lr=lr, cap_bytes=config.memory_cap_bytes)
        elif unit.metric == "minsize":  # builds on the meta device, size by size
            result = shapes.min_input_size(spec.model)
        else:
            model = models.create(spec.model, image_size=spec.image_size)
            if unit.metric == "params":
                result = params.measure(model, spec)
            elif unit.metric == "roofline":
                result = roofline.measure(model, spec, _run_peaks(config, spec))
            elif unit.metric == "flops":
                result = flops.measure(model, spec)
            else:
                timing = latency.TimingConfig(
                    warmup_runs=config.warmup_runs,
                    min_runs=config.min_runs,
                    min_time_s=config.min_time_s,
                    max_runs=config.max_runs,
                    unstable_iqr_ratio=config.unstable_iqr_ratio,
                    lr=lr,
                )
                result = latency.measure(model, spec, timing)
        return Record(
            unit.metric, spec, "ok", values_of(result), duration_s=time.perf_counter() - t0
        )
    except (Exception, MemoryError) as exc:
        status = "oom" if is_oom(exc) or isinstance(exc, MemoryError) else "error"
        reason = _first_line(exc)
        if status == "error" and os.environ.get("CNNBENCH_DEBUG"):
            traceback.print_exc()
        return Record.failed(unit.metric, spec, status, reason, time.perf_counter() - t0)
    finally:
        model = None  # noqa: F841  (drop the last reference before releasing)
        release(device)


def _setup_process(config: RunConfig) -> None:
    """Per-process settings every measurement depends on (recorded in the spec and env.json)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
        memory.set_memory_cap(config.memory_cap_bytes, config.device)
    elif config.memory_cap_bytes:
        memory.set_memory_cap(config.memory_cap_bytes, "cpu")


def _execute(config: RunConfig, units: list[Unit]) -> Iterator[tuple[str, object]]:
    """Measure ``units`` in order, yielding ``start``/``skip``/``record`` events; a latency sweep
    stops at its first OOM for that mode."""
    stopped: set[tuple[str, str]] = set()  # (metric, mode) sweeps that ran out of memory
    for unit in units:
        sweep_key = (unit.metric, unit.spec.mode)
        if config.sweep and unit.metric == "latency" and sweep_key in stopped:
            yield "skip", unit  # larger batches of a sweep that already ran out of memory
            continue
        yield "start", unit
        record = _measure_unit(unit, config)
        if record.status == "oom" and unit.metric == "latency":
            stopped.add(sweep_key)
        yield "record", record


def _worker_main(config: RunConfig, units: list[Unit], events) -> None:
    try:
        _setup_process(config)
        for kind, payload in _execute(config, units):
            events.put((kind, _wire(payload)))
    except BaseException as exc:  # anything outside a measurement: say so and end
        events.put(("crash", _first_line(exc)))
    finally:
        events.put(("done", None))


def _wire(payload):
    return payload.to_json() if isinstance(payload, Record) else payload


def _unwire(kind, payload):
    if kind == "record":
        import json

        return Record.from_dict(json.loads(payload))
    return payload


def _events_in_worker(config: RunConfig, units: list[Unit]) -> Iterator[tuple[str, object]]:
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    proc = ctx.Process(target=_worker_main, args=(config, units, events), name="cnnbench-worker")
    proc.start()
    try:
        while True:
            try:
                kind, payload = events.get(timeout=1.0)
            except queue_mod.Empty:
                if not proc.is_alive():
                    yield "died", f"worker process died with exit code {proc.exitcode}"
                    return
                continue
            if kind == "done":
                return
            yield kind, _unwire(kind, payload)
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=10)


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


def _peaks_key(spec: Spec) -> str:
    return f"{spec.device} {spec.dtype}"


def _run_peaks(config: RunConfig, spec: Spec) -> roofline.DevicePeaks | None:
    """The peaks this run already measured (env.json), so that every model's MFU shares one
    denominator; None for the first roofline of the run, which measures them."""
    known = RunStore(config.out_dir).read_env().get("peaks", {}).get(_peaks_key(spec))
    return roofline.DevicePeaks(**known) if known else None


def _record_peaks(store: RunStore, record: Record) -> None:
    """The first roofline's measured peaks go into env.json, the place for machine facts."""
    env = store.read_env()
    key = _peaks_key(record.spec)
    if key in env.get("peaks", {}):
        return
    env.setdefault("peaks", {})[key] = dict(record.values["peaks"])
    store.write_env(env)


def run(
    config: RunConfig,
    on_event: Callable[[str, object], None] | None = None,
) -> RunResult:
    """Run ``config``; ``on_event(kind, payload)`` sees ``plan`` (list of units), ``start`` and
    ``skip`` (a :class:`Unit`), ``record`` (a :class:`Record`)."""
    notify = on_event or (lambda kind, payload: None)
    store = RunStore(config.out_dir).create()
    env = collect_env(config.device)
    env["config"] = dataclasses.asdict(config)
    done_keys: set[tuple] = set()
    if config.resume:
        _check_resume(store, env)
        # error records are retried; every other status is a result and is kept
        done_keys = {r.key for r in store.records() if r.status != "error"}
        previous = store.read_env()
        if previous:
            env = {**previous, "resumed": previous.get("resumed", []) + [env]}
    store.write_env(env)

    written: list[Record] = []
    skipped = 0
    all_units = {m: plan(config, m) for m in config.models}
    notify("plan", [u for units in all_units.values() for u in units])
    for units in all_units.values():
        todo = []
        for u in units:
            if Record(u.metric, u.spec, "ok").key in done_keys:
                skipped += 1
                notify("skip", u)
            else:
                todo.append(u)
        if not todo:
            continue
        source = _events_in_worker if config.isolation == "process" else _execute
        pending = list(todo)
        for kind, payload in source(config, todo):
            if kind == "record":
                store.append(payload)
                written.append(payload)
                if payload.metric == "roofline" and payload.status == "ok":
                    _record_peaks(store, payload)
                pending = [
                    u for u in pending if (u.metric, u.spec) != (payload.metric, payload.spec)
                ]
            elif kind == "skip":
                pending = [u for u in pending if u != payload]
            elif kind in ("died", "crash"):
                for u in pending:  # the worker is gone: say what it did not finish
                    rec = Record.failed(u.metric, u.spec, "error", f"not measured: {payload}")
                    store.append(rec)
                    written.append(rec)
                    notify("record", rec)
                pending = []
                continue
            notify(kind, payload)
    return RunResult(str(store.root), tuple(written), skipped)
