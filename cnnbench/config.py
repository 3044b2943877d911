"""Run configuration: small frozen dataclasses, each field declared once with its default, its
unit and (where the command line sets it) its option; profiles are partial overrides of those
defaults; :func:`make_config` applies a profile and the given options.

Adding an option costs one field here: ``opt(default, "help")`` makes it a ``cnnbench run`` flag
named after the field (``--label-smoothing``), parsed and range-checked by its ``parse``
function, recorded in env.json with the config, and listed among the run's overrides when it
differs from the profile. A field declared with a plain default is configuration without a flag.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "METRICS",
    "DEFAULT_METRICS",
    "DTYPES",
    "TRICKS",
    "CUDA_ONLY_TRICKS",
    "MIN_SEEDS",
    "tricks_for",
    "trick_baseline",
    "trick_of",
    "trick_spec",
    "EQUAL_RESOLUTION",
    "PROFILES",
    "Profile",
    "Option",
    "WorkloadConfig",
    "BatchConfig",
    "TimingConfig",
    "UNIT_TIMEOUT_S",
    "MemoryConfig",
    "TrainConfig",
    "RunConfig",
    "SECTIONS",
    "options",
    "OPTIONS",
    "make_config",
]

METRICS = ("params", "flops", "minsize", "latency", "memory", "roofline", "accuracy", "energy",
           "scaling", "tricks")  # fmt: skip
# what a run measures unless --metrics says otherwise: scaling launches a process group per world
# size, and energy reads a counter most CPUs do not expose (RAPL: root only, absent in VMs, where
# it would add an 'unsupported' record per mode and model); tricks (an experiment: latency and
# accuracy records of each speed trick beside fp32 eager) trains every model once per trick; all
# three are asked for by name
DEFAULT_METRICS = METRICS[:-3]
DTYPES = ("fp32", "bf16", "fp16")
# the speed tricks of `--metrics tricks`, each against fp32 eager at the same seeds: the Spec
# fields each one changes are _TRICK_FIELDS below (trick_spec)
TRICKS = ("channels_last", "compile", "bf16", "fp16", "tf32", "cuda_graphs")
CUDA_ONLY_TRICKS = ("tf32", "cuda_graphs")  # a CPU has no TF32 and no CUDA graphs
# a CPU's default: bf16 autocast runs ~10x slower than fp32 on a CPU without native bf16
# (REFERENCE.md), and fp16 autocast has no fast CPU kernels either; both only when asked
CPU_DEFAULT_TRICKS = ("channels_last", "compile")
# seeds per side before an accuracy difference is judged (MLPerf: several runs): the analysis
# applies it (analysis.noise) and `--metrics tricks` refuses fewer before measuring anything
MIN_SEEDS = 3
# the chapter's AlexNet/VGG/NiN input: where FLOPs are also counted so networks compare alike
EQUAL_RESOLUTION = 224


# --- option values: parse a command-line string, or check a value given in Python -------------


def positive_int(text: str | int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != str(text).strip():
        raise ValueError(f"expected a positive integer, got '{text}'")
    return value


def nonnegative_int(text: str | int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or str(value) != str(text).strip():
        raise ValueError(f"expected an integer ≥ 0, got '{text}'")
    return value


def positive_int_list(text: str | tuple) -> tuple[int, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        return tuple(positive_int(t) for t in items)
    except ValueError:
        raise ValueError(
            f"expected a comma list of positive integers (e.g. 1,32,128), got '{text}'"
        ) from None


def seed_list(text: str | tuple) -> tuple[int, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        return tuple(nonnegative_int(t) for t in items)
    except ValueError:
        raise ValueError(f"expected a comma list of seeds (e.g. 0,1,2), got '{text}'") from None


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = True):
    """A float parser that refuses values outside [low, high) (brackets as given)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def parse(text: str | float) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got '{text}'") from None
        inside = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
        if not inside:
            raise ValueError(f"expected a number in {left}{low:g}, {high:g}{right}, got '{text}'")
        return value

    return parse


positive_float = float_in(0.0, float("inf"), low_open=True)


def trick_list(text: str | tuple) -> tuple[str, ...]:
    """A comma list of TRICKS, each once, in the order given."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    bad = [t for t in items if t not in TRICKS]
    if bad or not items or len(set(items)) != len(items):
        raise ValueError(f"expected a comma list of distinct tricks from {','.join(TRICKS)}, "
                         f"got '{text}'")  # fmt: skip
    return tuple(items)


@dataclass(frozen=True)
class Option:
    """How a config field is set from the command line."""

    name: str  # the flag without dashes ("train_image_size"): the key in overrides
    section: str  # the RunConfig field holding it ("train")
    field: str  # its field there ("image_size")
    flag: str  # "--train-image-size"
    help: str
    parse: Callable[[str], Any] | None  # None: a switch (store_true)
    choices: tuple[str, ...] | None = None
    exclusive: str | None = None  # options sharing a group name exclude each other


def opt(default, help: str, *, flag: str | None = None, parse=None, choices=None, exclusive=None):
    """A config field that is also a ``cnnbench run`` option (see the module docstring)."""
    meta = dict(help=help, flag=flag, parse=parse, choices=choices, exclusive=exclusive)
    return field(default=default, metadata={"option": meta})


# --- the sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadConfig:
    """What is measured: the input size, number format, memory format and compilation."""

    image_size: int | None = opt(
        None, "square input side for every model (default: each model's own)", parse=positive_int
    )
    dtype: str = opt("fp32", "fp32 (default), or bf16/fp16 autocast", choices=DTYPES)
    channels_last: bool = opt(False, "torch.channels_last for model and input")
    compile: bool = opt(False, "torch.compile (latency; compile time recorded apart)")
    threads: int | None = opt(None, "CPU intra-op threads (default: torch's)", parse=positive_int)
    tf32: bool = opt(False, "CUDA fp32: allow TF32 in matmuls and convolutions (cuDNN's "
                     "default is on, cuBLAS's off: cnnbench sets both, recorded)")  # fmt: skip
    cast: str = opt("autocast", "bf16/fp16 inference: autocast (fp32 weights cast on every "
                    "call) or weights (model.to(dtype))", choices=("autocast", "weights"))  # fmt: skip
    cuda_graphs: bool = opt(False, "CUDA inference latency replayed from a captured CUDA graph "
                            "(no launch overhead)")  # fmt: skip
    cudnn_benchmark: bool = True  # cuDNN autotuning on CUDA (its trials are warm-up)
    tricks: tuple[str, ...] | None = opt(
        None, f"--metrics tricks: which of {','.join(TRICKS)} (default: CUDA all, CPU "
        f"{','.join(CPU_DEFAULT_TRICKS)})", parse=trick_list,
    )  # fmt: skip


@dataclass(frozen=True)
class BatchConfig:
    """Which batch sizes the latency, memory and roofline units run at."""

    batch_sizes: tuple[int, ...] = opt(
        (1, 16), "latency and memory batches, e.g. 1,32,128", parse=positive_int_list,
        exclusive="batches",
    )  # fmt: skip
    sweep: bool = opt(False, "double the batch from 1 until out of memory", exclusive="batches")
    # the sweep's last batch; None: 1,024 on CUDA (a ceiling: the sweep may end before it, at out
    # of memory, a plateau in images/s or the tensor-size limit; the reason is recorded; the
    # run plan puts the chapter's networks past their plateau by then, and larger batches only
    # add minutes to the default run), 256 on CPU (time, not memory, ends a CPU sweep)
    sweep_max_batch: int | None = None
    memory_batch_sizes: tuple[int, ...] = (16,)  # batches whose peak memory is measured
    # time a training step at batch 1 too. quick: no. Nobody trains at batch 1 (it times the
    # optimizer's pass over every weight for one image) and it cost a CPU run ~25 s of 5 minutes
    train_at_batch_1: bool = True

    def latency_batches(self, device: str) -> list[int]:
        if not self.sweep:
            return list(self.batch_sizes)
        last = self.sweep_max_batch or (1024 if device.startswith("cuda") else 256)
        out, b = [], 1
        while b <= last:
            out.append(b)
            b *= 2
        return out


@dataclass(frozen=True)
class TimingConfig:
    """How a latency is timed (``measure/latency.py``): ``rounds`` separate worker processes,
    interleaved across the run's models, each warming up and then timing at least ``min_runs``
    iterations and ``min_time_s`` seconds (at most ``max_runs``)."""

    rounds: int = opt(3, "latency rounds, each in a fresh worker process, interleaved across "
                      "models (the spread between them is part of the noise)", parse=positive_int)  # fmt: skip
    warmup_runs: int = opt(2, "untimed iterations first, per round", flag="--warmup",
                           parse=nonnegative_int)  # fmt: skip
    min_runs: int = opt(5, "timed iterations per round, at least", parse=positive_int)
    min_time_s: float = opt(0.35, "seconds timed per round, at least", flag="--min-time",
                            parse=positive_float)  # fmt: skip
    max_runs: int = 200  # timed iterations per round, at most
    unit_timeout_s: float | None = opt(
        None, "seconds one unit may run before it is ended as an error and the run goes on "
        "(default: per profile, see UNIT_TIMEOUT_S)", parse=positive_float,
    )  # fmt: skip
    unstable_iqr_ratio: float = 0.10  # IQR / median above this flags a record unstable
    contended_share: float = 0.10  # other processes' share of CPU time above this: contended


@dataclass(frozen=True)
class MemoryConfig:
    """Peak-memory measurement (``measure/memory.py``)."""

    memory_cap_gb: float | None = opt(
        None, "per-worker memory cap in GiB: address space (CPU) or allocator share (CUDA)",
        parse=positive_float,
    )  # fmt: skip

    @property
    def cap_bytes(self) -> int | None:
        return int(self.memory_cap_gb * 2**30) if self.memory_cap_gb else None


@dataclass(frozen=True)
class TrainConfig:
    """Accuracy after short Fashion-MNIST training; the defaults are the chapter's recipe."""

    epochs: int = opt(10, "training epochs", parse=positive_int)
    train_subset: int | None = opt(None, "class-balanced training images per epoch (default: "
                                   "all 60,000)", parse=positive_int)  # fmt: skip
    test_subset: int | None = opt(None, "class-balanced test images (default: all 10,000)",
                                  parse=positive_int)  # fmt: skip
    batch_size: int = opt(128, "training batch", flag="--train-batch-size", parse=positive_int)
    optimizer: str = opt("sgd", "sgd (the chapter's) or adam", choices=("sgd", "adam"))
    lr: float | None = opt(None, "learning rate (default: the chapter's per model)",
                           parse=positive_float)  # fmt: skip
    momentum: float = opt(0.0, "SGD momentum (0: the chapter's plain SGD)", parse=float_in(0, 1))
    resolution: str = "chapter"  # "chapter": each model's size; "small": train.small_train_size
    image_size: int | None = opt(None, "training input side for every model",
                                 flag="--train-image-size", parse=positive_int)  # fmt: skip
    seeds: tuple[int, ...] = opt((0,), "e.g. 0,1,2: one training run per seed", parse=seed_list)
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing", parse=float_in(0, 1))
    target_accuracy: float | None = opt(
        None, "record the time until test accuracy reaches it",
        parse=float_in(0, 1, low_open=True, high_open=False),
    )  # fmt: skip
    eval_batch_size: int = opt(512, "test-set evaluation batch", parse=positive_int)


# The time limit of one unit where --unit-timeout-s is not given (seconds). Generous on purpose:
# it is there to end a hung CUDA call or a runaway unit, never a slow honest one. The longest
# units are the training runs (accuracy): smoke and quick train seconds to a minute or two on a
# 2-core CPU, full trains 10 epochs of 60,000 images, minutes on a GPU (full on a CPU takes hours
# per model: give --unit-timeout-s there). A unit with an estimate of its own (the run plan) gets
# UNIT_TIMEOUT_FACTOR times it instead, never less than UNIT_TIMEOUT_FLOOR_S.
UNIT_TIMEOUT_S = {"smoke": 300.0, "quick": 900.0, "full": 3600.0}
UNIT_TIMEOUT_FACTOR = 10.0
UNIT_TIMEOUT_FLOOR_S = 180.0


@dataclass(frozen=True)
class ScalingConfig:
    """Data-parallel scaling (``measure/scaling.py``): DDP across world sizes."""

    world_sizes: tuple[int, ...] | None = opt(
        None, "DDP world sizes, e.g. 1,2,4 (default: 1 up to the visible GPUs; CPU: 1,2)",
        parse=positive_int_list,
    )  # fmt: skip
    batch_size: int = opt(16, "per-rank batch of weak scaling", flag="--scaling-batch",
                          parse=positive_int)  # fmt: skip
    global_batch: int | None = opt(None, "global batch of strong scaling (default: the per-rank "
                                   "batch x the largest world size)", parse=positive_int)  # fmt: skip
    threads_per_rank: int = 1  # CPU: each rank one core, so W ranks use W cores
    timeout_s: float = 120.0  # process group and rendezvous
    fail_rank: int | None = None  # tests: this rank raises (the failure path)


# (RunConfig field, its dataclass, the title of its options in --help)
SECTIONS: tuple[tuple[str, type, str], ...] = (
    ("workload", WorkloadConfig, "workload"),
    ("batches", BatchConfig, "batches"),
    ("timing", TimingConfig, "timing"),
    ("memory", MemoryConfig, "memory"),
    ("train", TrainConfig, "accuracy (short Fashion-MNIST training)"),
    ("scaling", ScalingConfig, "scaling (data-parallel, torch.distributed)"),
)


@dataclass(frozen=True)
class Profile:
    """A named set of partial overrides: section → {field: value}."""

    name: str
    description: str
    overrides: dict[str, dict[str, Any]]


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "CI and tests: every path runs, seconds per model; numbers are not for quoting",
        {
            "batches": dict(batch_sizes=(1, 2), memory_batch_sizes=(2,)),
            "timing": dict(rounds=2, warmup_runs=1, min_runs=3, min_time_s=0.05, max_runs=20),
            "train": dict(epochs=1, train_subset=200, test_subset=200, batch_size=16,
                          optimizer="adam", lr=5e-4, resolution="small"),  # fmt: skip
        },
    ),
    "quick": Profile(
        "quick",
        "a CPU user's first run: batch 1 and a mid batch, a few minutes in all",
        {
            # The chapter's recipe (SGD, lr 0.01, batch 128, full size) leaves every model at
            # chance after a few thousand images on a CPU. quick trades it for more, cheaper steps
            # that learn: the smallest workable size, batch 16, Adam at 5e-4, 4,000 images.
            "train": dict(epochs=1, train_subset=4000, test_subset=2000, batch_size=16,
                          optimizer="adam", lr=5e-4, resolution="small"),  # fmt: skip
            "batches": dict(train_at_batch_1=False),
            # Resolution: the replicate is the round, and on 2 cores round medians spread 5-11%
            # while iterations spread 2-4%: many short rounds, not a few long ones. 7 rounds of
            # at least 3 runs and 0.5 s resolve a 10% change between two models at every mode and
            # batch (measured: 8.1, 9.1 and 4.7% at b1, b16 and train b16); 3 rounds of 5 runs
            # and 0.35 s resolved 38, 30 and 15%.
            "timing": dict(rounds=7, warmup_runs=1, min_runs=3, min_time_s=0.5),
        },
    ),
    "full": Profile(
        "full",
        "a GPU: batch sweep, long replicates, the chapter's recipe for 5 epochs on 3 seeds",
        {
            # the plan's cost model (cnnbench/plan.py, data-sheet rates: an estimate until a GPU
            # calibrates it) puts `run --models googlenet,alexnet --device cuda` at about 10 min
            # on an H200 with these: 3 rounds (latency ~2.5 min), sweeps to batch 1,024 at most,
            # and 5 of the chapter's 10 epochs on 3 seeds (~6.5 min; --epochs 10 adds ~6 min)
            "batches": dict(batch_sizes=(1, 8, 32, 128), sweep=True, memory_batch_sizes=(1, 128)),
            "timing": dict(rounds=3, warmup_runs=10, min_runs=10, min_time_s=0.5, max_runs=1000),
            # accuracy after a short training varies with the seed: never one seed alone here
            "train": dict(seeds=(0, 1, 2), epochs=5),
        },
    ),
}


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...]  # registered model names, in run order
    metrics: tuple[str, ...]  # subset of METRICS, in run order
    device: str  # "cpu", "cuda", "cuda:N"
    profile: str  # key of PROFILES
    out_dir: str  # run folder: results.jsonl, env.json
    workload: WorkloadConfig = WorkloadConfig()
    batches: BatchConfig = BatchConfig()
    timing: TimingConfig = TimingConfig()
    memory: MemoryConfig = MemoryConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    data_dir: str | None = None  # where to look for Fashion-MNIST (see data.py)
    isolation: str = "process"  # "process": a fresh worker per model; "none": in this process
    resume: bool = False  # skip what results.jsonl in out_dir already holds
    shard: tuple[int, int] | None = None  # (K, N): measure only shard K of N of the units
    overrides: tuple[str, ...] = ()  # options whose value differs from the profile's
    command_line: str = ""  # what the user typed, for env.json

    def option_value(self, name: str) -> Any:
        o = OPTIONS[name]
        return getattr(getattr(self, o.section), o.field)


def tricks_for(config: RunConfig) -> tuple[str, ...]:
    """The tricks ``--metrics tricks`` measures: ``--tricks``, else the device's default."""
    if config.workload.tricks:
        return config.workload.tricks
    return TRICKS if config.device.startswith("cuda") else CPU_DEFAULT_TRICKS


# each trick as the fields of a results.Spec it changes from fp32 eager (on CUDA the baseline's
# tf32 is False; on a CPU None, which has none)
_TRICK_FIELDS = {
    "channels_last": dict(channels_last=True),
    "compile": dict(compiled=True),
    "bf16": dict(dtype="bf16", cast="autocast"),
    "fp16": dict(dtype="fp16", cast="autocast"),  # a training step scales its loss (GradScaler)
    "tf32": dict(tf32=True),
    "cuda_graphs": dict(cuda_graph=True),  # inference only: a training step is never replayed
}


def trick_baseline(spec):
    """``spec`` (a ``results.Spec``) without any trick: fp32, contiguous, eager, no CUDA graph,
    TF32 off on CUDA: what every trick is measured against."""
    cuda = spec.device.startswith("cuda")
    return dataclasses.replace(spec, dtype="fp32", channels_last=False, compiled=False,
                               tf32=False if cuda else None, cast=None, cuda_graph=False)  # fmt: skip


def trick_spec(baseline, trick: str):
    """``baseline`` with one trick applied."""
    return dataclasses.replace(baseline, **_TRICK_FIELDS[trick])


def trick_of(spec) -> str | None:
    """The one trick ``spec`` applies to its baseline; None for the baseline itself and for a
    spec that combines tricks, which is no single trick's measurement."""
    base = trick_baseline(spec)
    return next((t for t in TRICKS if spec != base and trick_spec(base, t) == spec), None)


def _option_of(section: str, f: dataclasses.Field, hint: Any) -> Option | None:
    meta = f.metadata.get("option")
    if meta is None:
        return None
    is_switch = hint is bool
    parse = meta["parse"] or (None if is_switch or meta["choices"] else str)
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    return Option(
        name=flag[2:].replace("-", "_"),
        section=section,
        field=f.name,
        flag=flag,
        help=meta["help"],
        parse=parse,
        choices=meta["choices"],
        exclusive=meta["exclusive"],
    )


def options() -> Iterator[tuple[str, str, list[Option]]]:
    """(section, title, its options) for every section with command-line options."""
    for section, cls, title in SECTIONS:
        hints = typing.get_type_hints(cls)
        found = [o for f in dataclasses.fields(cls) if (o := _option_of(section, f, hints[f.name]))]
        if found:
            yield section, title, found


OPTIONS: dict[str, Option] = {o.name: o for _, _, opts in options() for o in opts}


def make_config(
    *,
    models: tuple[str, ...],
    metrics: tuple[str, ...],
    device: str,
    profile: str,
    out_dir: str,
    given: dict[str, Any] | None = None,
    **top,
) -> RunConfig:
    """A RunConfig: the dataclass defaults, then the profile's overrides, then ``given`` options
    (name → value; ``None`` means "not given"). ``top`` sets RunConfig's own fields
    (``data_dir``, ``resume``, ``isolation``, ``command_line``)."""
    prof = PROFILES[profile]
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown options: {sorted(unknown)}")
    if "batch_sizes" in given:
        # an explicit batch list replaces the profile's sweep and memory batches too
        given.setdefault("sweep", False)
    sections = {}
    for section, cls, _ in SECTIONS:
        mine = {OPTIONS[k].field: v for k, v in given.items() if OPTIONS[k].section == section}
        sections[section] = cls(**{**prof.overrides.get(section, {}), **mine})
    if "batch_sizes" in given:
        sections["batches"] = dataclasses.replace(
            sections["batches"], memory_batch_sizes=given["batch_sizes"]
        )
    timing = sections["timing"]
    if timing.min_runs > timing.max_runs:  # asked for more runs than the cap: the ask wins
        sections["timing"] = dataclasses.replace(timing, max_runs=timing.min_runs)
    profile_only = {s: cls(**prof.overrides.get(s, {})) for s, cls, _ in SECTIONS}
    overrides = tuple(
        name
        for name, o in OPTIONS.items()
        if getattr(sections[o.section], o.field) != getattr(profile_only[o.section], o.field)
    )
    return RunConfig(
        models=tuple(models),
        metrics=tuple(metrics),
        device=device,
        profile=profile,
        out_dir=str(out_dir),
        **sections,
        **top,
        overrides=overrides,
    )
