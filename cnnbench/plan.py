"""The run plan: what ``cnnbench run`` will do, and how long it should take, before it starts.

:func:`build` asks the runner for its units (``runner.plan``, the harness table's planning, and
``runner.shard``), orders them as the run measures them (round by round, model by model, round 0
doing every unit and later rounds the latency units pooled over rounds), predicts where a batch
sweep ends (the runner's own tensor-size limit and plateau rule, fed with modelled times) and
gives every step its expected seconds from a cost model:

- the work, counted once per model and side on the meta device (``FlopCounterMode``: forward
  and training-step multiply-adds per image, leaf layers, the largest tensor): no real compute;
- the device's rate: multiply-adds per second and a fixed cost per leaf layer per iteration
  (launch and dispatch), fitted on a real run of this machine (CPU, per thread), or for CUDA
  estimated from the data sheet and a reviewer's step time (labelled as an estimate);
- fixed costs: start-up and checks, the device peaks, each worker start, each unit's model build
  and bookkeeping, the report at the end.

The estimate is an expectation, not a bound: a shared machine runs slower; a sweep can end early
at out of memory, which the plan cannot see.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .config import RunConfig
from .measure.harnesses import HARNESSES
from .measure.roofline import datasheet, math_mode
from .results import Spec
from .runner import ELEMENT_LIMIT, PLATEAU_DOUBLINGS, PLATEAU_GAIN, Unit
from .runner import base_spec as runner_base_spec
from .runner import plan as runner_plan
from .runner import shard as runner_shard
from .speed_probe import Speed, probe

__all__ = ["Costs", "CPU_COSTS", "CUDA_COSTS", "Work", "Step", "Plan", "build", "compile_share_s", "count_work", "machine_load", "machine_speed", "trick_costs"]


@dataclass(frozen=True)
class Costs:
    """The cost model's constants. Rates are multiply-adds per second (one fused multiply-add
    counts once, as fvcore does); on a CPU per thread (a run's rate is this times its threads)."""

    source: str  # how the constants were obtained: the plan prints it beside the estimate
    calibrated: bool  # fitted on a real run of this kind of device (False: an estimate)
    infer_macs_per_s: float  # forward pass, per thread on a CPU
    train_macs_per_s: float  # forward + loss + backward + optimizer step
    infer_layer_s: float  # per leaf layer per forward: dispatch and launch
    train_layer_s: float  # per leaf layer per training step
    train_param_s: float  # per parameter per training step: the optimizer's pass, the grads
    per_thread: bool  # rates scale with the run's threads (CPU)
    startup_s: float  # CLI import, the worker server, preflight (a model's size check apart)
    startup_model_s: float  # preflight per model (its input sizes checked on the meta device)
    env_s: float  # env.json: versions, the flags worker
    peaks_s: float  # the device peaks, measured once when a roofline is planned
    worker_s: float  # one model worker: start, set-up, first import of the model's code
    unit_s: dict  # metric -> fixed seconds per unit (a latency unit: per round)
    param_init_s: float  # params: building the model, per parameter
    minsize_layer_s: float  # minsize: the bisection on the meta device, per leaf layer
    memory_iterations: int  # steps a memory unit runs (warm-up and measured)
    roofline_iterations: int  # forwards a roofline unit runs (bare, profiled, hooked)
    flops_iterations: tuple[int, int]  # (forwards, training steps) at batch 1 of a flops unit
    scaling_steps: int  # training steps a scaling unit times across its world sizes
    compile_s: float  # torch.compile of one unit-round (charged per unit-round: an upper bound, as Dynamo is reset once per model and a shape seen before reuses its graph)
    report_s: float  # rendering the report at the end ...
    report_model_s: float  # ... and per model
    # a unit's iteration time is multiplied by this for its dtype (a CPU without native bf16
    # runs autocast bf16 ~10x slower than fp32); CUDA takes the spec's math mode's data-sheet rate
    dtype_slowdown: dict = dataclasses.field(default_factory=dict)


# Fitted 2026-12-07 on this machine (2 Intel Xeon cores, torch 2.14.1, a shared VM: load 2-4
# from other jobs while measuring). Rates and per-layer costs: least squares, relative error, of
# t = b * work / (rate * threads) + layers * layer_s (+ params * param_s for a training step) on
# the 30 latency medians of reports/cpu-quick (10 models, 2 threads; within 0.5-1.6x of each). Fixed costs: the phases of `cnnbench run --profile smoke --models nin` (import 2.4 s;
# preflight with the worker server 3-6 s; env and flags 1-5 s; peaks 2.2 s alone), the units'
# duration_s in reports/cpu-quick (params 0.02-0.33 s by size, minsize 0.08-0.63 s by layers,
# memory 0.3-0.9 s + its steps, roofline 1.2-3 s) and `cnnbench report` of that smoke run (6 s).
CPU_COSTS = Costs(
    source="calibrated on 2 Intel Xeon cores (2026-12-07: reports/cpu-quick and smoke runs)",
    calibrated=True,
    infer_macs_per_s=33.8e9,
    train_macs_per_s=51.5e9,
    infer_layer_s=0.053e-3,
    train_layer_s=0.476e-3,
    train_param_s=5.94e-9,
    per_thread=True,
    startup_s=6.0,
    startup_model_s=0.4,
    env_s=2.0,
    peaks_s=2.5,
    worker_s=0.45,
    unit_s={"params": 0.02, "flops": 0.15, "minsize": 0.05, "latency": 0.25, "memory": 0.3,
            "roofline": 1.2, "accuracy": 1.5, "scaling": 10.0},  # fmt: skip
    param_init_s=6.5e-9,
    minsize_layer_s=3.0e-3,
    memory_iterations=3,
    roofline_iterations=8,
    flops_iterations=(2, 1),
    scaling_steps=40,
    compile_s=25.0,
    report_s=5.0,
    report_model_s=2.0,
    dtype_slowdown={"bf16": 10.0, "fp16": 10.0},
)

# An ESTIMATE, not a calibration: no GPU has been lent to this project yet. Rates: a fraction of
# the data sheet's rate in the run's math mode (roofline.DATASHEET; default H100 SXM when the
# device is unknown): 30% of the CUDA-core fp32 rate, 4% of the tensor-core rates, which is what
# the review of issue 23 measured in effect (GoogLeNet@96, batch 128, bf16: 5-6 ms a step, 19 TMAC/s
# of 495). Per layer: ~8 us of eager dispatch and launch a forward, ~25 us a training step.
# Fixed: a CUDA context per worker (~2 s), cuDNN autotuning per unit (~0.5 s), compile ~25 s.
CUDA_COSTS = Costs(
    source="ESTIMATE for CUDA (data-sheet peaks and assumed fixed costs; not calibrated on a GPU)",
    calibrated=False,
    infer_macs_per_s=0.0,  # from the data sheet: see _rates
    train_macs_per_s=0.0,
    infer_layer_s=8e-6,
    train_layer_s=25e-6,
    train_param_s=4e-12,  # SGD reads a weight and its grad and writes the weight: 12 B at ~3 TB/s
    per_thread=False,
    startup_s=8.0,
    startup_model_s=0.4,
    env_s=4.0,
    peaks_s=6.0,
    worker_s=2.0,
    unit_s={"params": 0.05, "flops": 0.4, "minsize": 0.05, "latency": 0.6, "memory": 0.8,
            "roofline": 2.5, "accuracy": 4.0, "scaling": 20.0},  # fmt: skip
    param_init_s=6.5e-9,
    minsize_layer_s=3.0e-3,
    memory_iterations=3,
    roofline_iterations=8,
    flops_iterations=(2, 1),
    scaling_steps=40,
    compile_s=25.0,
    report_s=8.0,
    report_model_s=3.0,
)
CUDA_EFFICIENCY = {"fp32": 0.30, "tf32": 0.04, "bf16": 0.04, "fp16": 0.04}
DEFAULT_GPU = "H100 SXM"  # the data-sheet row when the device's name is not known


@dataclass(frozen=True)
class Work:
    """One model at one input side, per image, counted on the meta device."""

    macs: int  # forward multiply-adds (FlopCounterMode's FLOPs / 2)
    train_macs: int  # forward + cross-entropy + backward
    layers: int  # leaf modules
    params: int
    largest_elements: int  # the largest leaf input or output (what the sweep's limit checks)


def _count_one(model: str, size: int) -> Work:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import models
    from .measure.workload import leaf_modules

    in_channels = models.get_spec(model).in_channels
    with torch.device("meta"):
        net = models.create(model, image_size=size)
        x = torch.empty(2, in_channels, size, size)  # 2: batch norm needs two values a channel
    largest = 0

    def hook(_m, inputs, output):
        nonlocal largest
        largest = max([largest] + [t[0].numel() for t in (*inputs, output) if torch.is_tensor(t)])

    leaves = leaf_modules(net)
    handles = [m.register_forward_hook(hook) for _, m in leaves]
    with FlopCounterMode(display=False) as forward:
        net.eval()(x)
    for h in handles:
        h.remove()
    labels = torch.zeros(2, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as step:
        torch.nn.functional.cross_entropy(net.train()(x), labels).backward()
    params = sum(p.numel() for p in net.parameters())
    # FLOPs at batch 2, 2 per multiply-add: / 4 is multiply-adds per image
    return Work(forward.get_total_flops() // 4, step.get_total_flops() // 4, len(leaves), params,
                largest)  # fmt: skip


def _count_all(pairs: list[tuple[str, int]]) -> dict[tuple[str, int], Work | str]:
    out: dict[tuple[str, int], Work | str] = {}
    for model, size in pairs:
        try:
            out[model, size] = _count_one(model, size)
        except Exception as exc:  # noqa: BLE001 - the plan says which model it could not count
            out[model, size] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return out


COUNT_LIMIT_S = 30.0  # counting every model on the meta device takes ~0.05 s each; a hang: uncounted


def count_work(pairs: Iterable[tuple[str, int]], isolation: str = "process") -> dict:
    """(model, side) -> :class:`Work`, or the line saying why it could not be counted. Counted in
    a worker, like the runner's size checks: a model's own code never runs in the parent."""
    from .measure.worker import WorkerError, call_in_worker

    todo = sorted(set(pairs))
    if isolation != "process":
        return _count_all(todo)
    try:  # a model whose forward hangs must not hang the plan (the run's own limits come later)
        return call_in_worker(_count_all, todo, name="cnnbench-plan", limit_s=COUNT_LIMIT_S)
    except WorkerError as exc:
        return {p: f"counting died: {exc}" for p in todo}


@dataclass(frozen=True)
class Step:
    """One unit in one round, in the order the run measures it."""

    unit: Unit
    round: int
    seconds: float  # expected wall time, the worker start before it included
    expected: bool = True  # False: its sweep is expected to end before it (skipped, 0 s)


@dataclass(frozen=True)
class Plan:
    """What a run will do and how long it should take (see the module docstring)."""

    config: RunConfig
    steps: tuple[Step, ...]  # in run order
    before_s: tuple[tuple[str, float], ...]  # run-level costs before the first unit
    after_s: tuple[tuple[str, float], ...]  # ... and after the last (the report)
    sweep_ends: tuple[tuple[str, str, int, str], ...]  # (model, mode, last batch, why)
    uncounted: tuple[tuple[str, str], ...]  # (model, why): estimated from fixed costs only
    costs: Costs
    device_name: str  # the device the rates are for
    load_factor: float = 1.0  # CPU: every step's time is multiplied by it (a busy machine)
    load: float | None = None  # the 1-minute load average it came from
    # CPU: every step's time is multiplied by it too: how much slower this CPU runs the speed
    # probe than CPU_REFERENCE_SPEED (a CPU slower or faster than the constants' own)
    slowdown: float = 1.0
    speed: dict | None = None  # the probe's readings (speed_probe.Speed.as_record)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.unit.spec.model for s in self.steps))

    @property
    def units(self) -> tuple[Unit, ...]:
        """Every unit the run plans, once, in the runner's order (model by model)."""
        seen = dict.fromkeys(s.unit for s in self.steps if s.round == 0)
        return tuple(seen)

    @property
    def measured_units(self) -> tuple[Unit, ...]:
        """The units expected to be measured (a sweep's expected end excluded)."""
        return tuple(s.unit for s in self.steps if s.round == 0 and s.expected)

    @property
    def total_s(self) -> float:
        return sum(s for _, s in self.before_s + self.after_s) + self.units_s

    @property
    def units_s(self) -> float:
        return sum(s.seconds for s in self.steps)

    def by_metric(self) -> dict[str, float]:
        """Expected seconds by part: each metric, then the run-level costs."""
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.unit.metric] = out.get(s.unit.metric, 0.0) + s.seconds
        for name, seconds in self.before_s + self.after_s:
            out[name] = out.get(name, 0.0) + seconds
        return out

    def by_model(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.unit.spec.model] = out.get(s.unit.spec.model, 0.0) + s.seconds
        return out

    def _outside_run_s(self) -> float:
        return sum(v for k, v in self.before_s if k == "start-up and checks") + sum(v for _, v in self.after_s)

    def unit_seconds(self) -> dict:
        """Unit → its longest planned step: what sets its time limit (runner.unit_limit_s)."""
        out: dict = {}
        for step in self.steps:
            out[step.unit] = max(out.get(step.unit, 0.0), step.seconds)
        return out

    def remaining_s(self, done: int) -> float:
        """Expected seconds left once the first ``done`` steps are finished (the ETA): the
        steps after them and the report."""
        done = max(0, min(done, len(self.steps)))
        return sum(s.seconds for s in self.steps[done:]) + sum(s for _, s in self.after_s)

    def summary(self) -> dict:
        """What env.json records of the plan: the estimate, its parts and its source."""
        return {
            "estimate_s": round(self.total_s, 1),
            # what runner.run's own clock (env.json "wall_s") covers: the units, env.json and the
            # device peaks; not the start-up and checks before it, nor the report after it
            "in_run_s": round(self.total_s - self._outside_run_s(), 1),
            "by_part_s": {k: round(v, 1) for k, v in self.by_metric().items()},
            "by_model_s": {k: round(v, 1) for k, v in self.by_model().items()},
            "units": len(self.units),
            "measured_units": len(self.measured_units),
            "steps": len(self.steps),
            "sweep_ends": [list(e) for e in self.sweep_ends],
            "uncounted": [list(u) for u in self.uncounted],
            "device": self.device_name,
            "load_factor": round(self.load_factor, 2),
            "load": self.load,
            "slowdown": round(self.slowdown, 2),
            "speed_probe_s": self.speed,
            "calibrated": self.costs.calibrated,
            "source": self.costs.source,
            # --metrics tricks: seconds per trick and for the fp32 baseline (trick_costs)
            "tricks_s": {k: round(v, 1) for k, v in trick_costs(self).items()},
        }


@dataclass(frozen=True)
class _Rates:
    """The cost model on one device: seconds of one iteration of a spec's work."""

    costs: Costs
    infer_macs_per_s: float  # the device's, per thread on a CPU
    train_macs_per_s: float
    # CUDA: each math mode's rate against the run's (a tricks run times bf16 and TF32 units
    # beside fp32 ones); None on a CPU, where Costs.dtype_slowdown applies
    mode_speed: dict | None = None

    def _scale(self, spec: Spec) -> float:
        if self.mode_speed is not None:  # CUDA
            import torch

            return self.mode_speed.get(math_mode(torch.device("cuda"), spec.dtype, spec.tf32), 1.0)
        threads = (spec.threads or 1) if self.costs.per_thread else 1
        return threads / self.costs.dtype_slowdown.get(spec.dtype, 1.0)

    def forward_s(self, work: Work, spec: Spec, batch: int | None = None) -> float:
        b = spec.batch_size if batch is None else batch
        rate = self.infer_macs_per_s * self._scale(spec)
        return b * work.macs / rate + work.layers * self.costs.infer_layer_s

    def step_s(self, work: Work, spec: Spec, batch: int | None = None) -> float:
        b = spec.batch_size if batch is None else batch
        rate = self.train_macs_per_s * self._scale(spec)
        c = self.costs
        return b * work.train_macs / rate + work.layers * c.train_layer_s + work.params * c.train_param_s

    def iteration_s(self, work: Work, spec: Spec) -> float:
        return self.step_s(work, spec) if spec.mode == "train" else self.forward_s(work, spec)


def _rates(config: RunConfig, costs: Costs, device_name: str) -> _Rates:
    if not config.device.startswith("cuda"):
        return _Rates(costs, costs.infer_macs_per_s, costs.train_macs_per_s)
    import torch

    def rate(mode: str) -> float:
        sheet = datasheet(device_name, mode) or datasheet(DEFAULT_GPU, mode)
        return sheet[0] / 2 * CUDA_EFFICIENCY[mode]  # 2 FLOPs a multiply-add

    macs_per_s = rate(math_mode(torch.device("cuda"), config.workload.dtype, config.workload.tf32))
    speed = {m: rate(m) / macs_per_s for m in CUDA_EFFICIENCY}
    return _Rates(costs, macs_per_s, macs_per_s, speed)


def _timed_s(iteration_s: float, timing) -> float:
    """A latency round's iterations, as latency.time_iterations chooses them: the warm-ups, one
    estimating iteration, then enough for min_runs and min_time_s (at most max_runs)."""
    n = min(timing.max_runs, max(timing.min_runs, math.ceil(timing.min_time_s / iteration_s)))
    return (timing.warmup_runs + 1 + n) * iteration_s


def _accuracy_s(unit: Unit, work: Work, rates: _Rates, config: RunConfig) -> float:
    from .measure.train import config_for

    cfg = config_for(config, unit.spec.model)
    steps = math.ceil((cfg.train_subset or 60_000) / cfg.batch_size)
    evals = math.ceil((cfg.test_subset or 10_000) / cfg.eval_batch_size)
    epoch = steps * rates.step_s(work, unit.spec) + evals * rates.forward_s(
        work, unit.spec, cfg.eval_batch_size
    )
    compile_s = rates.costs.compile_s if unit.spec.compiled else 0.0
    return len(cfg.seeds) * (cfg.epochs * epoch + compile_s)


def _unit_s(unit: Unit, work: Work | None, rates: _Rates, config: RunConfig) -> float:
    """One round of ``unit`` (latency) or the whole unit (every other metric)."""
    c, spec, metric = rates.costs, unit.spec, unit.metric
    fixed = c.unit_s.get(metric, 0.0)
    if work is None:  # not counted: the fixed cost alone (the plan names the model)
        return fixed
    if metric == "params":
        return fixed + work.params * c.param_init_s
    if metric == "minsize":
        return fixed + work.layers * c.minsize_layer_s
    if metric == "flops":
        forwards, steps = c.flops_iterations
        return fixed + forwards * rates.forward_s(work, spec, 1) + steps * rates.step_s(work, spec, 1)
    if metric == "latency":
        compile_s = c.compile_s if spec.compiled else 0.0
        return fixed + compile_s + _timed_s(rates.iteration_s(work, spec), config.timing)
    if metric == "memory":
        return fixed + c.memory_iterations * rates.iteration_s(work, spec)
    if metric == "roofline":
        return fixed + c.roofline_iterations * rates.forward_s(work, spec)
    if metric == "accuracy":
        return fixed + _accuracy_s(unit, work, rates, config)
    if metric == "scaling":
        return fixed + c.scaling_steps * rates.step_s(work, spec)
    if metric == "energy":  # warm-up, then a block of at least MIN_BLOCK_S between counter updates
        from .measure.energy import MIN_BLOCK_S

        warmup = (config.timing.warmup_runs + 1) * rates.iteration_s(work, spec)
        return fixed + warmup + MIN_BLOCK_S + 2 * rates.iteration_s(work, spec)
    return fixed


def _sweep_ends(
    units: list[Unit], work: dict, rates: _Rates, config: RunConfig
) -> tuple[set[Unit], set[Unit], list[tuple[str, str, int, str]]]:
    """Where each latency sweep is expected to end, by the runner's rules (``runner._execute``)
    fed with modelled times: (units not expected to run, units ending a sweep at the tensor-size
    limit (recorded, not timed), the ends)."""
    skipped: set[Unit] = set()
    refused: set[Unit] = set()
    ends = []
    if not config.batches.sweep:
        return skipped, refused, ends
    sweeps = [u for u in units if HARNESSES[u.metric].sweep]
    for (model, mode), group in itertools.groupby(sweeps, key=lambda u: (u.spec.model, u.spec.mode)):
        rates_seen: list[float] = []
        stopped = None
        for u in group:
            w = work.get((model, u.spec.image_size))
            if stopped is not None or not isinstance(w, Work):
                if stopped is not None:
                    skipped.add(u)
                continue
            if w.largest_elements * u.spec.batch_size > ELEMENT_LIMIT:
                refused.add(u)
                stopped = (model, mode, u.spec.batch_size, "tensor-size limit")
                continue
            rates_seen.append(u.spec.batch_size / rates.iteration_s(w, u.spec))
            gains = [b / a - 1 for a, b in zip(rates_seen, rates_seen[1:], strict=False)]
            gains = gains[-PLATEAU_DOUBLINGS:]
            if len(gains) == PLATEAU_DOUBLINGS and all(g < PLATEAU_GAIN for g in gains):
                stopped = (model, mode, u.spec.batch_size, "images/s plateau")
        if stopped is not None:
            ends.append(stopped)
    return skipped, refused, ends


def _own_process(config: RunConfig, unit: Unit) -> bool:
    own = HARNESSES[unit.metric].own_process
    return config.isolation == "process" and own is not None and own(unit.spec)


def _round_steps(config: RunConfig, r: int, units: list[Unit], seconds: dict, costs: Costs,
                 skipped: set[Unit]) -> list[Step]:  # fmt: skip
    """Round ``r`` of one model, as runner._run_round does it: a worker per run of units that
    are not measured in a process of their own, its start charged to its first unit."""
    steps = []
    for own, segment in itertools.groupby(units, key=lambda u: _own_process(config, u)):
        for i, u in enumerate(segment):
            if u in skipped:
                steps.append(Step(u, r, 0.0, expected=False))
                continue
            start = costs.worker_s if i == 0 and not own and config.isolation == "process" else 0.0
            steps.append(Step(u, r, seconds[u] + start))
    return steps


def _steps(config: RunConfig, by_model: dict[str, list[Unit]], seconds: dict, costs: Costs,
           skipped: set[Unit], refused: set[Unit]) -> list[Step]:  # fmt: skip
    """Every step in run order: round r of every model, then round r + 1; round 0 measures every
    unit, later rounds only those pooled over rounds that are expected to be measured."""
    out: list[Step] = []
    for r in range(config.timing.rounds):
        for units in by_model.values():
            mine = units if r == 0 else [
                u for u in units
                if HARNESSES[u.metric].pool is not None and u not in skipped | refused
            ]  # fmt: skip
            out += _round_steps(config, r, mine, seconds, costs, skipped)
    return out


def _device_name(config: RunConfig) -> str:
    if not config.device.startswith("cuda"):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(config.device))
    return DEFAULT_GPU


def machine_load(config: RunConfig) -> tuple[float, float | None]:
    """(factor, load): a CPU run on a machine that other processes keep busy gets its share of
    the CPUs, so every step takes load / CPUs times longer (1-minute load average; never below 1).
    Measured: a smoke run of nin took 21.7 s at load 3 and 127.6 s at load 8-10 on 2 cores."""
    import os

    if config.device.startswith("cuda") or not hasattr(os, "getloadavg"):
        return 1.0, None
    load = os.getloadavg()[0]
    return max(1.0, load / (os.cpu_count() or 1)), round(load, 2)


# The machine CPU_COSTS were fitted on was never probed. These are the probe's readings on a
# 2-core AMD EPYC (AVX2; 2026-12-07, quiet: conv 20 ms, dispatch 10 ms — 5.5 to 13 ms from one
# process to the next —, stream 7 ms) divided by how much longer that machine's quiet runs took
# than CPU_COSTS planned, 2.5x: a smoke run of the four chapter models took 155.5 s in the run
# against 62.7 s planned, the default run's first 28 units 316 s against 125 s.
CPU_REFERENCE_SPEED = Speed(conv_s=8.0e-3, dispatch_s=4.0e-3, stream_s=2.8e-3)


@functools.lru_cache(maxsize=1)
def _probe() -> Speed:
    return probe()  # once per process: the CPU does not change while a process plans


def machine_speed(config: RunConfig, costs: Costs) -> tuple[float, dict | None]:
    """(slowdown, the probe's readings): how many times longer this CPU takes than the one
    ``CPU_COSTS`` describe, by :mod:`cnnbench.speed_probe` (~0.5 s); (1.0, None) on CUDA and for
    constants given by the caller."""
    if config.device.startswith("cuda") or costs is not CPU_COSTS:
        return 1.0, None
    speed = _probe()
    return speed.slowdown(CPU_REFERENCE_SPEED), speed.as_record()


def _fixed(config: RunConfig, costs: Costs, n_models: int, steps: list[Step], report: bool):
    before = [("start-up and checks", costs.startup_s + costs.startup_model_s * n_models),
              ("env.json", costs.env_s)]  # fmt: skip
    if any(s.unit.metric == "roofline" for s in steps):
        before.append(("device peaks", costs.peaks_s))
    after = [("report", costs.report_s + costs.report_model_s * n_models)] if report else []
    return tuple(before), tuple(after)


def build(
    config: RunConfig,
    models: Iterable[str] | None = None,
    *,
    work: dict | None = None,
    device_name: str | None = None,
    costs: Costs | None = None,
    report: bool = True,
    load_factor: float | None = None,
    slowdown: float | None = None,
) -> Plan:
    """The plan of ``config`` for ``models`` (default: the config's), with its estimate.

    ``work``: (model, side) -> :class:`Work` counted before (default: counted now, in a
    worker); ``device_name``: the device the CUDA rates are for (default: the one present, else
    the data sheet's H100 SXM); ``report``: the run renders its report at the end;
    ``load_factor``: the slowdown of a busy machine (default: :func:`machine_load`);
    ``slowdown``: of this CPU against the constants' (default: :func:`machine_speed`)."""
    models = tuple(config.models if models is None else models)
    by_model = {m: runner_plan(config, m) for m in models}
    if config.shard:
        by_model = runner_shard(by_model, config)
    units = [u for us in by_model.values() for u in us]
    if work is None:
        work = count_work(((u.spec.model, u.spec.image_size) for u in units), config.isolation)
    cuda = config.device.startswith("cuda")
    costs = costs or (CUDA_COSTS if cuda else CPU_COSTS)
    device_name = device_name or _device_name(config)
    rates = _rates(config, costs, device_name)
    counted = {k: v for k, v in work.items() if isinstance(v, Work)}
    seconds = {u: _unit_s(u, counted.get((u.spec.model, u.spec.image_size)), rates, config)
               for u in units}  # fmt: skip
    skipped, refused, ends = _sweep_ends(units, work, rates, config)
    seconds.update({u: 0.0 for u in refused})  # recorded as unsupported, never timed
    steps = _steps(config, by_model, seconds, costs, skipped, refused)
    before, after = _fixed(config, costs, len(by_model), steps, report)
    load = speed = None
    if load_factor is None:
        load_factor, load = machine_load(config)
    if slowdown is None:
        slowdown, speed = machine_speed(config, costs)
    factor = load_factor * slowdown
    steps = [dataclasses.replace(s, seconds=s.seconds * factor) for s in steps]
    before = tuple((name, s * factor) for name, s in before)
    after = tuple((name, s * factor) for name, s in after)
    uncounted = tuple(sorted({(m, why) for (m, _), why in work.items() if isinstance(why, str)}))
    return Plan(config, tuple(steps), before, after, tuple(ends), uncounted, costs, device_name,
                load_factor, load, slowdown, speed)  # fmt: skip


def trick_costs(plan: Plan) -> dict[str, float]:
    """Expected seconds of each trick of a tricks run (``config.TRICKS`` name → its units'
    steps, every round) and of their fp32 eager baseline ("baseline"); {} without tricks. A
    baseline unit that another metric plans too (the accuracy metric's training) is counted here
    and measured once."""
    if "tricks" not in plan.config.metrics:
        return {}
    from .config import trick_baseline, trick_of
    from .measure.harnesses import trick_units

    planned = set()
    for model in plan.models:
        base = trick_baseline(runner_base_spec(plan.config, model))
        planned |= {Unit(m, spec) for m, spec in trick_units(plan.config, base)}
    out: dict[str, float] = {}
    for step in plan.steps:
        if step.unit in planned:
            name = trick_of(step.unit.spec) or "baseline"
            out[name] = out.get(name, 0.0) + step.seconds
    return out


def compile_share_s(plan: Plan) -> float:
    """Seconds that torch.compile adds to ``plan`` (compiled), or would add (not compiled): one
    compile per latency round and per seed of each training."""
    c = plan.costs
    rounds = sum(1 for s in plan.steps if s.expected and s.unit.metric == "latency")
    seeds = sum(len(plan.config.train.seeds) for s in plan.steps
                if s.expected and s.unit.metric == "accuracy")  # fmt: skip
    return c.compile_s * (rounds + seeds)
