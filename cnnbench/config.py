"""Run configuration: the profiles (smoke, quick, full) and the frozen :class:`RunConfig`.

One knob, the profile, picks sizes so that the same code serves CI, a laptop and a GPU; every
profile value can be overridden, and the overrides are kept (``RunConfig.overrides``) so that a
report never shows a number without the conditions that produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["METRICS", "DTYPES", "PROFILES", "Profile", "RunConfig", "make_config"]

METRICS = ("params", "flops", "minsize", "latency", "memory", "roofline", "accuracy")
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
    # accuracy (short Fashion-MNIST training); see measure/train.py and the README's table
    train_epochs: int
    train_subset: int | None  # class-balanced training images per epoch; None: all 60,000
    test_subset: int | None  # class-balanced test images; None: all 10,000
    train_batch_size: int
    train_optimizer: str  # "sgd" (the chapter's) or "adam"
    train_lr: float | None  # None: each model's chapter learning rate
    train_resolution: str  # "chapter": the model's size; "small": see small_train_size()
    seeds: tuple[int, ...]
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
        train_epochs=1,
        train_subset=200,
        test_subset=200,
        train_batch_size=16,
        train_optimizer="adam",
        train_lr=5e-4,
        train_resolution="small",
        seeds=(0,),
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
        # The chapter's recipe (SGD, lr 0.01, batch 128, full size) leaves every model at chance
        # after a few thousand images on a CPU. quick trades it for more, cheaper steps that
        # learn: the smallest workable size, batch 16, Adam at 5e-4, 4,000 images, one epoch.
        train_epochs=1,
        train_subset=4000,
        test_subset=2000,
        train_batch_size=16,
        train_optimizer="adam",
        train_lr=5e-4,
        train_resolution="small",
        seeds=(0,),
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
        train_epochs=10,  # the chapter's recipe, all of it
        train_subset=None,
        test_subset=None,
        train_batch_size=128,
        train_optimizer="sgd",
        train_lr=None,
        train_resolution="chapter",
        seeds=(0,),
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
    train_epochs: int = 1
    train_subset: int | None = None
    test_subset: int | None = None
    train_batch_size: int = 128
    train_optimizer: str = "sgd"
    train_lr: float | None = None  # None: the model's chapter learning rate
    train_momentum: float = 0.0
    train_resolution: str = "chapter"  # "chapter" or "small"
    train_image_size: int | None = None  # overrides train_resolution for every model
    seeds: tuple[int, ...] = (0,)
    label_smoothing: float = 0.0
    target_accuracy: float | None = None
    data_dir: str | None = None  # where to look first for Fashion-MNIST
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
        train_epochs=prof.train_epochs,
        train_subset=prof.train_subset,
        test_subset=prof.test_subset,
        train_batch_size=prof.train_batch_size,
        train_optimizer=prof.train_optimizer,
        train_lr=prof.train_lr,
        train_resolution=prof.train_resolution,
        seeds=prof.seeds,
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
    explicit = tuple(k for k in given if k not in ("command_line", "resume", "data_dir"))
    return RunConfig(
        models=tuple(models),
        metrics=tuple(metrics),
        device=device,
        profile=profile,
        out_dir=str(out_dir),
        **{**base, **given},
        overrides=explicit,
    )
