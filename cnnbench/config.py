"""Run configuration: the profiles (smoke, quick, full) and the frozen :class:`RunConfig`.

One knob, the profile, picks sizes so that the same code serves CI, a laptop and a GPU; every
profile value can be overridden, and the overrides are kept (``RunConfig.overrides``) so that a
report never shows a number without the conditions that produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["METRICS", "DTYPES", "PROFILES", "Profile", "RunConfig", "make_config"]

METRICS = ("params", "flops", "latency", "memory")
DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Profile:
    name: str
    batch_sizes: tuple[int, ...]  # latency batch sizes (ignored when sweep is on)
    sweep: bool  # double the batch from 1 until out of memory (or sweep_max_batch)
    memory_batch_sizes: tuple[int, ...]  # batches whose peak memory is measured
    warmup_runs: int  # untimed iterations first (cuDNN autotuning, allocator warm-up)
    min_runs: int  # at least this many timed iterations...
    min_time_s: float  # ...and at least this much timed wall time
    max_runs: int  # never more iterations than this, however fast
    description: str


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        batch_sizes=(1, 2),
        sweep=False,
        memory_batch_sizes=(2,),
        warmup_runs=1,
        min_runs=3,
        min_time_s=0.05,
        max_runs=20,
        description="CI and tests: every path runs, seconds per model; numbers are not for quoting",
    ),
    "quick": Profile(
        name="quick",
        batch_sizes=(1, 16),
        sweep=False,
        memory_batch_sizes=(16,),
        warmup_runs=2,
        min_runs=5,
        min_time_s=1.0,
        max_runs=200,
        description="a CPU user's first run: batch 1 and a mid batch, a few minutes in all",
    ),
    "full": Profile(
        name="full",
        batch_sizes=(1, 8, 32, 128),
        sweep=True,
        memory_batch_sizes=(1, 128),
        warmup_runs=10,
        min_runs=20,
        min_time_s=2.0,
        max_runs=2000,
        description="a GPU: batch sweep until memory runs out, long replicates",
    ),
}


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...]  # registered model names, in run order
    metrics: tuple[str, ...]  # subset of METRICS, in run order
    device: str  # "cpu", "cuda", "cuda:N"
    profile: str  # key of PROFILES the defaults came from
    out_dir: str  # run folder: results.jsonl, env.json
    batch_sizes: tuple[int, ...]  # latency batch sizes when not sweeping
    sweep: bool  # latency batch sweep: 1, 2, 4, ... until out of memory or sweep_max_batch
    sweep_max_batch: int  # the sweep's last batch if memory never runs out
    memory_batch_sizes: tuple[int, ...]  # batches whose peak memory is measured
    image_size: int | None = None  # None: each model's chapter size
    dtype: str = "fp32"  # fp32, or bf16/fp16 autocast
    channels_last: bool = False
    compile: bool = False  # torch.compile for latency (compile time recorded apart)
    threads: int | None = None  # CPU intra-op threads; None: torch's default, recorded
    warmup_runs: int = 2
    min_runs: int = 5
    min_time_s: float = 1.0
    max_runs: int = 200
    unstable_iqr_ratio: float = 0.10  # IQR / median above this flags a record unstable
    cudnn_benchmark: bool = True  # cuDNN autotuning on CUDA (its trials are warm-up)
    memory_cap_bytes: int | None = None  # per worker: address space (CPU) / allocator (CUDA) cap
    isolation: str = "process"  # "process": a fresh worker per model; "none": in this process
    resume: bool = False  # skip what results.jsonl in out_dir already holds
    overrides: tuple[str, ...] = field(default=())  # fields set explicitly, not by the profile
    command_line: str = ""  # what the user typed, for env.json


def make_config(
    *,
    models: tuple[str, ...],
    metrics: tuple[str, ...],
    device: str,
    profile: str,
    out_dir: str,
    **overrides,
) -> RunConfig:
    """A RunConfig from a profile plus explicit overrides (``None`` values mean "not given")."""
    prof = PROFILES[profile]
    base = dict(
        batch_sizes=prof.batch_sizes,
        sweep=prof.sweep,
        sweep_max_batch=4096 if device.startswith("cuda") else 256,
        memory_batch_sizes=prof.memory_batch_sizes,
        warmup_runs=prof.warmup_runs,
        min_runs=prof.min_runs,
        min_time_s=prof.min_time_s,
        max_runs=prof.max_runs,
    )
    given = {k: v for k, v in overrides.items() if v is not None}
    if "batch_sizes" in given:
        # an explicit batch list replaces the profile's sweep and memory batches too
        given.setdefault("sweep", False)
        given.setdefault("memory_batch_sizes", given["batch_sizes"])
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(given) - known
    if unknown:
        raise TypeError(f"unknown RunConfig fields: {sorted(unknown)}")
    explicit = tuple(k for k in given if k not in ("command_line", "resume"))
    return RunConfig(
        models=tuple(models),
        metrics=tuple(metrics),
        device=device,
        profile=profile,
        out_dir=str(out_dir),
        **{**base, **given},
        overrides=explicit,
    )
