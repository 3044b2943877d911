"""One-call acceptance run of cnnbench on one H100/H200: eleven stages, each a function, each
check a verdict, everything written under one folder and packed into one archive.

    python benchmarks/gpu_acceptance.py --out DIR [--device cuda] [--dry-run] [--only STAGE[,...]]
        [--deadline SECONDS] [--archive PATH]

Writes ``DIR/verdicts.json`` (a list of {stage, check, goal, measured, unit, verdict, seconds,
note}), ``DIR/verdicts.md`` (the same as a table, the device's name in its title), ``DIR/env.json``
(``cnnbench.env.collect_env``), ``DIR/run/`` (a cnnbench run folder with its report), the other
run folders the stages make (``oom/``, ``recipe/``), ``DIR/log.txt`` (every subprocess's output
and every traceback) and ``DIR/acceptance.tar.gz`` (all of these; ``--archive`` puts it elsewhere).
The verdicts and the archive are written again after every stage, the stages still to run marked
"not reached", so that a command cut short (the device tool's 600 s) returns what it finished;
the device tool returns a few files, so the archive is the one to ask for.

``--deadline SECONDS`` (counted from the start of ``main``, after the imports): the stages run in
``STAGES``' order, most informative first, and one whose estimate (``Sizes.estimate_s``) exceeds
the time left is not run and reads "not reached (deadline)". A stage that started is never
stopped, but its subprocesses and workers are given the time left as their limit.

Exit status 0 when no check failed or errored (stages not reached do not count), 1 otherwise, 2
for bad usage. The real run needs CUDA and is estimated at about 8 minutes on an H200 (never
measured yet); on the device, ``--deadline 540`` fits it inside a 600 s command.

``--dry-run`` runs every stage's code at tiny sizes (on the CPU unless ``--device`` says
otherwise; minutes on 2 cores, over 10 where other jobs share them; ``--deadline 25`` ends within
about a minute, 40 s seen at load average 11) and judges no performance goal: a check that ran
and produced finite, positive numbers is "ran (dry run)"; structural checks (exit statuses,
records, files) are still judged there. Every stage's sizes sit in ``SIZES`` below, every goal in
``GOALS``.

A stage that raises becomes one "error" verdict with the message; the other stages still run.
Specs, process settings, number formatting and the verdict page are the library's
(``runner.base_spec``, ``runner.setup_process``, ``report.fmt``, ``report.blocks``), so that what
is accepted here is what a ``cnnbench run`` measures and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: benchmarks/ is on sys.path, the package is not
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cnnbench import models  # noqa: E402
from cnnbench.config import RunConfig, TimingConfig, make_config  # noqa: E402
from cnnbench.env import collect_env  # noqa: E402
from cnnbench.measure import energy, latency, memory, roofline, workload  # noqa: E402
from cnnbench.measure._device import is_oom, release, synchronize  # noqa: E402
from cnnbench.measure.harnesses import in_mode  # noqa: E402
from cnnbench.measure.train import Unsupported  # noqa: E402
from cnnbench.measure.worker import call_in_worker, error_line  # noqa: E402
from cnnbench.report.blocks import (  # noqa: E402
    Bullets,
    Document,
    Heading,
    Note,
    Paragraph,
    Table,
    to_markdown,
)
from cnnbench.report.fmt import fmt, is_missing  # noqa: E402
from cnnbench.results import RunStore, Spec  # noqa: E402
from cnnbench.results.types import EnergyResult  # noqa: E402
from cnnbench.runner import base_spec, setup_process  # noqa: E402

# --- the sizes: one frozen table per stage -------------------------------------------------------
# (the peaks stage has none: roofline.measure_peaks sizes its own probes for the device)


@dataclass(frozen=True)
class TimingSizes:
    """timing: a busy workload, so that the queue never drains between iterations."""

    model: str
    image: int  # input side, pixels
    batch: int
    timing_config: TimingConfig  # warm-up and iterations of the event-timed loop


@dataclass(frozen=True)
class RooflineSizes:
    """roofline: per-layer rooflines in fp32 (TF32 off) and bf16."""

    model: str
    image: int
    batch: int


@dataclass(frozen=True)
class MemorySizes:
    """memory: a training step, cold then warm cuDNN cache in one fresh worker."""

    model: str
    image: int
    batch: int
    optimizer: str = "sgd"  # the chapter's plain SGD ...
    lr: float = 0.01  # ... at its learning rate


@dataclass(frozen=True)
class OomSizes:
    """oom: a capped CLI sweep; on CUDA also an OOM provoked in this process."""

    model: str  # the capped sweep's model
    cap_gb: float  # --memory-cap-gb of the sweep
    timing_args: tuple[str, ...]  # CLI timing flags of the sweep
    provoke_model: str
    provoke_image: int
    provoke_batch: int  # a training step far beyond provoke_headroom_gb
    provoke_headroom_gb: float  # what the allocator may reserve beyond what it holds already


@dataclass(frozen=True)
class RunSizes:
    """run: `cnnbench run` flags (device and --out added)."""

    args: tuple[str, ...]


@dataclass(frozen=True)
class RecipeSizes:
    """recipe: `cnnbench run` flags of the training (device, --no-report and --out added)."""

    args: tuple[str, ...]


@dataclass(frozen=True)
class LoaderSizes:
    """loader: cnnbench's device loader against the d2l-style DataLoader (2 workers), each alone
    (the goal) and feeding the same SGD step (information: the step may set the pace)."""

    batch: int
    image: int
    alone_batches: int  # batches timed per loader-alone slice (an epoch has 60,000 / batch)
    alone_warmup_batches: int  # untimed first: the DataLoader's workers start, its queue fills
    repeats: int  # loader-alone slices per loader, alternating d2l, cnnbench, d2l, ...
    steps: int  # timed SGD steps per pipeline end to end
    dtype: str
    channels_last: bool


@dataclass(frozen=True)
class EnergySizes:
    """energy: joules per image of an inference batch and of a training step, from the device's
    own counter (NVML on CUDA, RAPL on a CPU where it can be read)."""

    model: str
    image: int
    batch: int


@dataclass(frozen=True)
class ThroughputSizes:
    """throughput: training images/s at the best of these batches."""

    model: str
    image: int
    batches: tuple[int, ...]
    dtype: str
    channels_last: bool
    timing_config: TimingConfig  # of each batch's timed training steps


@dataclass(frozen=True)
class Sizes:
    """What every stage runs at. REAL: one H100/H200, about 8 minutes in all; DRY: 2 CPU cores."""

    timing: TimingSizes
    roofline: RooflineSizes
    memory: MemorySizes
    oom: OomSizes
    run: RunSizes
    recipe: RecipeSizes
    loader: LoaderSizes
    energy: EnergySizes
    throughput: ThroughputSizes
    subprocess_timeout_s: int  # the longest any one subprocess (CLI run, pytest) may take
    # each stage's expected wall time, seconds: --deadline skips a stage whose estimate exceeds
    # the time left. REAL: an estimate for an H200 (issue 23's reviewer, stage by stage), never
    # measured yet; DRY: measured on the 2-core CI machine, the slowest seen, rounded up
    estimate_s: dict[str, float]


# fmt: off
SIZES = {
    "real": Sizes(
        timing=TimingSizes("googlenet", image=96, batch=256, timing_config=TimingConfig(
            warmup_runs=5, min_runs=20, min_time_s=1.0, max_runs=500)),
        roofline=RooflineSizes("googlenet", image=224, batch=128),
        memory=MemorySizes("alexnet", image=224, batch=64),
        # GoogLeNet, not AlexNet, and 0.25 GiB, not 4: the sweep also ends where images/s stops
        # growing (runner.PLATEAU_GAIN), which AlexNet's inference reaches on an H200 long before
        # 4 GiB. GoogLeNet at 96 is launch-bound up to ~64 images and needs ~1.2 MB an image for
        # inference, ~12 MB for a training step: out of memory near batch 256 and 32.
        oom=OomSizes(
            "googlenet", cap_gb=0.25,
            timing_args=("--rounds", "1", "--min-time", "0.05", "--warmup", "2", "--min-runs", "5"),
            provoke_model="googlenet", provoke_image=96, provoke_batch=4096,
            provoke_headroom_gb=1.0),
        run=RunSizes(("--models", "googlenet,alexnet",
                      "--metrics", "params,flops,latency,memory,roofline",
                      "--batch-sizes", "1,64", "--rounds", "2", "--min-time", "0.1")),
        recipe=RecipeSizes(
            ("--models", "googlenet", "--metrics", "accuracy", "--profile", "full",
             "--seeds", "0", "--dtype", "bf16", "--channels-last")),
        # the recipe's batch, size, dtype and layout; 200 batches of the d2l loader: ~0.7 s
        loader=LoaderSizes(batch=128, image=96, alone_batches=200, alone_warmup_batches=5,
                           repeats=3, steps=100, dtype="bf16", channels_last=True),
        energy=EnergySizes("googlenet", image=96, batch=128),
        throughput=ThroughputSizes(
            "googlenet", image=96, batches=(256, 512, 1024), dtype="bf16", channels_last=True,
            timing_config=TimingConfig(warmup_runs=3, min_runs=10, min_time_s=1.0, max_runs=200)),
        subprocess_timeout_s=300,
        estimate_s=dict(run=80, timing=10, memory=20, peaks=30, loader=30, energy=20, oom=40,
                        roofline=40, recipe=80, throughput=30, pytest=100),  # 480 s in all
    ),
    "dry": Sizes(
        timing=TimingSizes("googlenet28", image=32, batch=2, timing_config=TimingConfig(
            warmup_runs=1, min_runs=5, min_time_s=0.05, max_runs=20)),
        roofline=RooflineSizes("googlenet28", image=32, batch=2),
        memory=MemorySizes("googlenet28", image=32, batch=2),
        # a CPU cap is on address space: at 0.25 GiB oneDNN fails to create its primitives
        # ("could not create a primitive", an error record) before any allocation fails
        oom=OomSizes(
            "googlenet28", cap_gb=0.5,
            timing_args=("--rounds", "1", "--min-time", "0.01", "--warmup", "0", "--min-runs", "1"),
            provoke_model="googlenet28", provoke_image=32, provoke_batch=4096,
            provoke_headroom_gb=0.1),
        run=RunSizes(("--profile", "smoke", "--models", "googlenet28",
                      "--metrics", "params,flops,latency,memory,roofline")),
        recipe=RecipeSizes(
            ("--models", "googlenet28", "--metrics", "accuracy", "--profile", "smoke",
             "--seeds", "0")),
        loader=LoaderSizes(batch=8, image=64, alone_batches=3, alone_warmup_batches=1,
                           repeats=1, steps=1, dtype="fp32", channels_last=False),
        energy=EnergySizes("googlenet28", image=32, batch=2),
        # fp32: bf16 autocast on a CPU is ~10x slower, and the code path is the same
        throughput=ThroughputSizes(
            "googlenet", image=64, batches=(2,), dtype="fp32", channels_last=True,
            timing_config=TimingConfig(warmup_runs=1, min_runs=2, min_time_s=0.01, max_runs=5)),
        subprocess_timeout_s=300,
        # the slowest seen at load average 10-13 on these 2 cores; run never ended inside 8
        # minutes there, so its estimate is its subprocess limit
        estimate_s=dict(run=300, timing=25, memory=70, peaks=15, loader=70, energy=5, oom=75,
                        roofline=45, recipe=140, throughput=30, pytest=20),
    ),
}
# fmt: on

# the chapter's recipe as the full profile must train it (shared/REFERENCE.md: d2l 1.0, 8.4),
# written out here rather than read from TrainConfig's defaults: the check must not follow them
CHAPTER_RECIPE = dict(epochs=10, batch=128, optimizer="sgd", lr=0.01, momentum=0.0,
                      train_images=60_000, test_images=10_000, image_size=96)  # fmt: skip

# --- the goals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """An interval a measured number must fall in; bounds inclusive unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    label: str = ""  # how the goal reads in the table; built from the bounds when empty

    @classmethod
    def at_least(cls, x: float) -> Goal:
        return cls(low=x)

    @classmethod
    def above(cls, x: float) -> Goal:
        return cls(low=x, low_open=True)

    @classmethod
    def below(cls, x: float) -> Goal:
        return cls(high=x, high_open=True)

    @classmethod
    def between(cls, low: float, high: float) -> Goal:
        return cls(low=low, high=high)

    @classmethod
    def equals(cls, x: float) -> Goal:
        return cls(low=x, high=x)

    @classmethod
    def within(cls, tolerance: float) -> Goal:
        """A ratio that agrees with 1 within ``tolerance`` (0.10: 10%)."""
        low, high = 1 - tolerance, 1 + tolerance
        text = f"within {tolerance:.0%} (ratio in [{low:g}, {high:g}])"
        return cls(low=low, high=high, label=text)

    def met(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        if self.high is not None and (x >= self.high if self.high_open else x > self.high):
            return False
        return True

    @property
    def text(self) -> str:
        if self.label:
            return self.label
        if self.low is not None and self.high is not None:
            if self.low == self.high:
                return f"= {self.low:g}"
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        return "any"


def judge(measured: float | None, goal: Goal) -> str:
    """ "pass" when ``measured`` is a finite number inside ``goal``, else "fail"."""
    if measured is None or not math.isfinite(measured):
        return "fail"
    return "pass" if goal.met(measured) else "fail"


GOALS = {
    "timing_agreement": Goal.within(0.10),  # event median / wall-clock mean
    "bandwidth_of_datasheet": Goal.at_least(0.70),
    "bf16_matmul_of_datasheet": Goal.at_least(0.60),
    # every probe is a rate (work on real data over its median iteration): the roof, the best
    # of them, cannot lie far above the large matmul's (issue 21)
    "peak_of_matmul_probe": Goal.between(1.0, 1.10),
    "fp32_matmul_of_datasheet": Goal.below(1.0),  # TF32 would land far above 1
    "tf32_matmul_of_fp32_datasheet": Goal.above(1.0),  # TF32 really reached the tensor cores
    "bf16_over_fp32_forward": Goal.below(1.0),
    "memory_warm_over_cold": Goal.within(0.05),
    "memory_measured_over_analytic": Goal.between(0.9, 1.5),
    "oom_back_to_baseline": Goal.equals(0),  # bytes still allocated after release
    "recipe_accuracy": Goal.between(0.854, 0.902),  # shared/REFERENCE.md, GoogLeNet's builds
    "recorded": Goal(low=0, low_open=True, label="> 0 (recorded)"),
    "pipeline_speedup": Goal.at_least(5.0),  # the loaders alone: delivered images/s
    "joules_per_image": Goal(low=0, low_open=True, label="> 0, finite (the device's counter)"),
    "train_images_per_s": Goal.at_least(40_000),
    "exit_zero": Goal.equals(0),
    "none": Goal.equals(0),
    "total_s": Goal(high=480, label="≤ 480 s (8 minutes)"),
}

# units whose numbers are measurements: finite and positive, or the stage is broken
POSITIVE_UNITS = frozenset(
    {"ratio", "x", "s", "ms", "images/s", "accuracy", "layers", "bytes", "J/image"}
)
DRY_VERDICT = "ran (dry run)"
DEADLINE_VERDICT = "not reached (deadline)"  # skipped: its estimate exceeded the time left
PENDING_VERDICT = "not reached"  # not run yet when the file was written (the run was cut short)
VERDICTS = ("pass", "fail", "skipped", "error", DRY_VERDICT, DEADLINE_VERDICT, PENDING_VERDICT)
# The order under a deadline, most informative first. run: the headline `cnnbench run` on CUDA
# has never run on a GPU, and it exercises latency, memory, roofline and the report at once.
# Then the cheap checks that every number rests on or that a HIGH finding names: event timing,
# the memory baseline, the peaks (roofline's and MFU's denominators), the loaders. Then what is
# new (energy) and what a fix changed (the oom sweep's end, the profiler's schedule). Last the
# long ones whose answers the earlier stages partly give already: the 10-epoch recipe, the
# throughput goal, and pytest's CUDA tests (much of which the stages above repeat).
STAGES = ("run", "timing", "memory", "peaks", "loader", "energy", "oom", "roofline", "recipe",
          "throughput", "pytest")  # fmt: skip

# --- verdicts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    stage: str
    check: str
    goal: str
    measured: float | None
    unit: str
    verdict: str  # one of VERDICTS
    seconds: float  # the whole stage's wall time (every check of a stage shares it)
    note: str = ""


def run_config(device: str, dry: bool, out: Path, **workload) -> RunConfig:
    """The configuration a `cnnbench run` on ``device`` would have (the dry run's profile is
    smoke, the real run's full), with ``workload`` options (dtype, image_size, ...) given."""
    return make_config(models=(), metrics=(), device=device, profile="smoke" if dry else "full",
                       out_dir=str(out), given=workload)  # fmt: skip


@dataclass(frozen=True)
class Ctx:
    """What every stage gets: where to write, the device, the sizes and whether goals count."""

    out: Path
    device: str
    dry: bool
    sizes: Sizes
    log: Path
    deadline: float | None = None  # time.monotonic() by which the run must end; None: no limit
    deadline_s: float | None = None  # --deadline as given, seconds from the start
    archive: Path | None = None  # where every output is packed (None: no archive)
    _peaks: dict = field(default_factory=dict)  # (dtype, tf32) → DevicePeaks, measured once

    def time_left_s(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def subprocess_timeout_s(self) -> float:
        """A subprocess's (or worker's) limit: the size table's, cut to the time left less
        WRITE_MARGIN_S for the verdicts and the archive; at least 1 s (it then fails, and says
        so, rather than overrunning the deadline)."""
        left = self.time_left_s() - WRITE_MARGIN_S
        return max(1.0, min(float(self.sizes.subprocess_timeout_s), left))

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def config(self) -> RunConfig:
        """What ``runner.setup_process`` sets this process (and a worker) up from: TF32 off for
        cuBLAS and cuDNN, cuDNN autotuning on, ``cuda:N`` current, no memory cap."""
        return run_config(self.device, self.dry, self.out)

    def spec(self, model: str, image: int, batch: int, *, dtype: str = "fp32",
             mode: str = "inference", channels_last: bool = False) -> Spec:  # fmt: skip
        """A Spec as the runner plans one: TF32 off on CUDA fp32, autocast for bf16, a training
        step's weights fp32 and never replayed from a CUDA graph."""
        config = run_config(self.device, self.dry, self.out, image_size=image, dtype=dtype,
                            channels_last=channels_last)  # fmt: skip
        return in_mode(base_spec(config, model), mode, batch_size=batch)

    def peaks(self, dtype: str, tf32: bool):
        """The device's peaks in one math mode, measured once and shared by peaks and roofline."""
        # a CPU is probed in fp32 whatever the dtype (measure_peaks): one measurement serves all
        key = (dtype, tf32) if self.cuda else ("fp32", False)
        if key not in self._peaks:
            self._peaks[key] = roofline.measure_peaks(self.torch_device, dtype, tf32=tf32)
        return self._peaks[key]

    def check(
        self, stage: str, check: str, goal: Goal | str, measured: float | None, unit: str,
        note: str = "", *, met: bool | None = None, must: bool = False,
    ) -> Verdict:  # fmt: skip
        """One check: ``met`` when given, else ``measured`` judged against ``goal``. A performance
        goal is not judged in the dry run; a ``must`` (structural) check is judged everywhere."""
        measured = None if measured is None else float(measured)
        finite_positive = measured is not None and math.isfinite(measured) and measured > 0
        if (
            unit in POSITIVE_UNITS
            and not must
            and not finite_positive
            and (self.dry or measured is not None)
        ):  # a measurement that is not a finite positive number is a broken stage, not a result
            raise AssertionError(f"{check}: measured {measured!r} {unit}, not finite and > 0")
        passed = met if met is not None else judge(measured, goal) == "pass"
        if measured is not None and not math.isfinite(measured):
            note, measured = f"{note}; measured {measured} (not finite)", None  # JSON has no NaN
        verdict = "pass" if passed else "fail"
        if self.dry:
            verdict = "fail" if must and not passed else DRY_VERDICT
        text = goal.text if isinstance(goal, Goal) else goal
        return Verdict(stage, check, text, measured, unit, verdict, 0.0, note)

    def skip(self, stage: str, check: str, goal: Goal | str, why: str, unit: str = "") -> Verdict:
        text = goal.text if isinstance(goal, Goal) else goal
        return Verdict(stage, check, text, None, unit, "skipped", 0.0, why)

    def cli(self, args: list[str], name: str) -> int:
        """``python -m cnnbench ARGS`` in a session of its own, output appended to the log; its
        exit status (on timeout the whole process group is killed and 124 returned)."""
        return run_logged([sys.executable, "-m", "cnnbench", *args], self.log, name,
                          self.subprocess_timeout_s())  # fmt: skip


def run_logged(cmd: list[str], log: Path, name: str, timeout_s: float) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    with open(log, "a") as f:
        f.write(f"\n===== {name}: {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its workers too: they share its session
            proc.wait()
            rc = 124
            f.write(f"===== {name}: killed after its limit of {timeout_s:.0f} s\n")
        f.write(f"===== {name}: exit status {rc}\n")
    return rc


def number(x: float | None) -> str:
    """A measured number as the table and the console show it: whole from 10,000 up (images/s,
    bytes), else 4 significant digits (ratios, seconds); the missing mark from ``fmt``."""
    if is_missing(x) or abs(x) < 1e4:
        return fmt(x, 4, significant=True)
    return fmt(x, 0)


# --- timing ---------------------------------------------------------------------------------------


def stage_timing(ctx: Ctx) -> list[Verdict]:
    """CUDA events around each iteration against one synchronized wall-clock loop of the same
    number of iterations: on a workload that keeps the GPU busy the two must agree."""
    s, dev = ctx.sizes.timing, ctx.torch_device
    step = workload.build(ctx.spec(s.model, s.image, s.batch)).step
    times, timer = latency.time_iterations(step, dev, s.timing_config)
    n = len(times)
    event_ms = statistics.median(times)
    synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    synchronize(dev)
    wall_ms = (time.perf_counter() - t0) / n * 1e3
    note = (f"{timer} median {event_ms:.4g} ms, wall clock {wall_ms:.4g} ms per iteration, "
            f"{n} iterations each; {s.model} at {s.image}, batch {s.batch}, fp32 inference")  # fmt: skip
    return [ctx.check("timing", "event-timed median / synchronized wall clock",
                      GOALS["timing_agreement"], event_ms / wall_ms, "ratio", note)]  # fmt: skip


# --- peaks ----------------------------------------------------------------------------------------


def _flags_text(p) -> str:
    return f"{p.math_mode}: {p.tf32_flags}"


def stage_peaks(ctx: Ctx) -> list[Verdict]:
    """Measured peaks in three math modes against the data sheet."""
    fp32, tf32, bf16 = ctx.peaks("fp32", False), ctx.peaks("fp32", True), ctx.peaks("bf16", False)
    out = []
    name = "copy bandwidth / data sheet"
    if fp32.datasheet_bytes_per_s is None:
        out.append(ctx.skip("peaks", name, GOALS["bandwidth_of_datasheet"],
                            f"no data-sheet bandwidth for {fp32.device}; measured "
                            f"{fp32.peak_bytes_per_s / 1e12:.3g} TB/s"))  # fmt: skip
    else:
        out.append(ctx.check(
            "peaks", name, GOALS["bandwidth_of_datasheet"],
            fp32.peak_bytes_per_s / fp32.datasheet_bytes_per_s, "ratio",
            f"{fp32.peak_bytes_per_s / 1e12:.3g} TB/s measured (copy of "
            f"{fp32.copy_bytes / 2**30:.3g} GiB, read + write), data sheet "
            f"{fp32.datasheet_bytes_per_s / 1e12:.3g} TB/s",
        ))  # fmt: skip
    matmuls = (
        ("bf16 matmul / bf16 data sheet", bf16, bf16, "bf16_matmul_of_datasheet"),
        ("fp32 matmul (TF32 off) / fp32 data sheet", fp32, fp32, "fp32_matmul_of_datasheet"),
        ("fp32 matmul with TF32 on / fp32 data sheet", tf32, fp32, "tf32_matmul_of_fp32_datasheet"),
    )
    for name, probe, sheet, goal in matmuls:
        if sheet.datasheet_flops is None:
            out.append(ctx.skip("peaks", name, GOALS[goal],
                                f"data sheet unknown ({sheet.datasheet_source}); measured "
                                f"{probe.matmul_flops / 1e12:.3g} TFLOP/s"))  # fmt: skip
            continue
        out.append(ctx.check(
            "peaks", name, GOALS[goal], probe.matmul_flops / sheet.datasheet_flops, "ratio",
            f"{probe.matmul_flops / 1e12:.4g} TFLOP/s (matmul {probe.matmul_n}), data sheet "
            f"{sheet.datasheet_flops / 1e12:.4g} ({sheet.datasheet_source}); {_flags_text(probe)}",
        ))  # fmt: skip
    for mode, probe in (("fp32", fp32), ("bf16", bf16)):
        if mode == "bf16" and not ctx.cuda:
            continue  # a CPU's probes run fp32 only
        out.append(ctx.check(
            "peaks", f"{mode} roof / its large-matmul probe", GOALS["peak_of_matmul_probe"],
            probe.peak_flops / probe.matmul_flops, "ratio",
            f"roof {probe.peak_flops / 1e12:.4g} TFLOP/s, matmul {probe.matmul_n}: "
            f"{probe.matmul_flops / 1e12:.4g}; every probe: "
            + "; ".join(f"{k} {v / 1e12:.4g}" for k, v in (probe.probes or {}).items()),
        ))  # fmt: skip
    name, goal = "TF32 flags as each probe set them", "fp32 off/off, tf32 on/on, bf16 off/off"
    if not ctx.cuda:
        out.append(ctx.skip("peaks", name, goal, "CUDA only: no TF32 on a CPU (flags None)"))
    else:
        want = ((fp32, False), (tf32, True), (bf16, False))
        ok = all(p.tf32_flags == {"matmul": v, "cudnn": v} for p, v in want)
        out.append(ctx.check("peaks", name, goal, None, "", "; ".join(
            _flags_text(p) for p in (fp32, tf32, bf16)), met=ok, must=True))  # fmt: skip
    return out


# --- roofline -------------------------------------------------------------------------------------


def stage_roofline(ctx: Ctx) -> list[Verdict]:
    """Per-layer rooflines in fp32 (TF32 off) and bf16, each against peaks of its own mode."""
    s = ctx.sizes.roofline
    out, results = [], {}
    for dtype in ("fp32", "bf16"):
        if dtype != "fp32" and not ctx.cuda:  # a CPU's probes run fp32: no bf16 roof to judge by
            out.append(ctx.skip("roofline", f"every conv/linear layer has a time ({dtype})",
                                "all timed", "CUDA only: cnnbench refuses a bf16 roofline on a CPU"))  # fmt: skip
            continue
        spec = ctx.spec(s.model, s.image, s.batch, dtype=dtype)
        model = models.create(s.model, image_size=s.image)
        name = f"every conv/linear layer has a time ({dtype})"
        try:
            r = roofline.measure(model, spec, ctx.peaks(dtype, False))
        except RuntimeError as exc:  # measure raises when the profiler gave a layer no time
            out.append(ctx.check("roofline", name, "all timed", None, "layers", error_line(exc),
                                 met=False, must=True))  # fmt: skip
            continue
        finally:
            del model
            release(ctx.torch_device)
        results[dtype] = r
        timed = sum(1 for lay in r.layers if lay.time_ms is not None and lay.time_ms > 0)
        out.append(ctx.check(
            "roofline", name, f"all {len(r.layers)} timed", timed, "layers",
            f"forward {r.model_ms:.4g} ms, MFU {r.mfu:.3g}"
            f"{' (peak underestimated)' if r.roof_underestimated else ''}, {r.timing}",
            met=len(r.layers) > 0 and timed == len(r.layers), must=True,
        ))  # fmt: skip
    name, goal = "bf16 forward / fp32 forward", GOALS["bf16_over_fp32_forward"]
    if len(results) < 2:
        out.append(ctx.skip("roofline", name, goal, "needs both rooflines; one failed above"))
    else:
        f, b = results["fp32"], results["bf16"]
        out.append(ctx.check(
            "roofline", name, goal, b.model_ms / f.model_ms, "ratio",
            f"{s.model} at {s.image}, batch {s.batch}: bf16 "
            f"{b.model_ms:.4g} ms, fp32 {f.model_ms:.4g} ms",
        ))  # fmt: skip
    return out


# --- memory ---------------------------------------------------------------------------------------


def _cold_then_warm(config: RunConfig, spec: Spec, sizes: MemorySizes):
    """In a fresh worker set up as the runner sets up its workers: the same training-step memory
    measurement twice, the first on a cold cuDNN cache (nothing autotuned yet in this process),
    the second warm."""
    setup_process(config)
    cold = memory.measure(spec, optimizer=sizes.optimizer, lr=sizes.lr)
    warm = memory.measure(spec, optimizer=sizes.optimizer, lr=sizes.lr)
    return cold, warm


def stage_memory(ctx: Ctx) -> list[Verdict]:
    s = ctx.sizes.memory
    spec = ctx.spec(s.model, s.image, s.batch, mode="train")
    cold, warm = call_in_worker(_cold_then_warm, ctx.config, spec, s, name="acceptance-memory",
                                limit_s=ctx.subprocess_timeout_s())  # fmt: skip
    mib = 2**20
    where = f"{s.model} at {s.image}, batch {s.batch}, training step (SGD)"
    return [
        ctx.check(
            "memory", "peak memory, warm / cold cuDNN cache", GOALS["memory_warm_over_cold"],
            warm.measured_bytes / cold.measured_bytes, "ratio",
            f"cold {cold.measured_bytes / mib:.1f} MiB, warm {warm.measured_bytes / mib:.1f} MiB "
            f"({warm.source}); {where}",
        ),
        ctx.check(
            "memory", "measured / analytic, training step", GOALS["memory_measured_over_analytic"],
            warm.measured_over_analytic, "ratio",
            f"measured {warm.measured_bytes / mib:.1f} MiB, analytic "
            f"{warm.analytic_bytes / mib:.1f} MiB (params {warm.param_bytes / mib:.1f}, "
            f"grads {warm.grad_bytes / mib:.1f}, "
            f"activations {warm.activation_bytes / mib:.1f}); {where}",
        ),
    ]  # fmt: skip


# --- oom ------------------------------------------------------------------------------------------


def sweep_verdict(records, mode: str) -> tuple[int, bool, str]:
    """(oom records, whether the sweep ended in exactly one of them with nothing measured past it
    and nothing failed otherwise, a note) for the latency sweep of ``mode``."""
    mine = sorted((r for r in records if r.metric == "latency" and r.spec.mode == mode),
                  key=lambda r: r.spec.batch_size)  # fmt: skip
    ooms = [r for r in mine if r.status == "oom"]
    ok = [r.spec.batch_size for r in mine if r.status == "ok"]
    others = [r for r in mine if r.status not in ("ok", "oom")]
    note = f"ok at {ok}"
    if others:
        note += (f"; {len(others)} {others[0].status} (first at batch {others[0].spec.batch_size}: "
                 f"{(others[0].reason or '')[:100]})")  # fmt: skip
    if not ooms:
        ends = [r.values["sweep_end"] for r in mine if r.values.get("sweep_end")]
        return 0, False, note + f"; no oom record (sweep ended: {ends or 'at its last batch'})"
    at = ooms[0].spec.batch_size
    past = [r.spec.batch_size for r in mine if r.spec.batch_size > at]
    note += f"; oom at batch {at} ({(ooms[0].reason or '')[:100]})"
    if past:
        note += f"; measured past it at {past}"
    return len(ooms), len(ooms) == 1 and not past and not others, note


def _provoke_oom(spec: Spec) -> str | None:
    """A training step far too large for the cap; the OOM's message, or None if none came. The
    exception (and with it every frame that held the step's tensors) is gone on return."""
    try:
        workload.build(spec).step()
        synchronize(torch.device(spec.device))
    except RuntimeError as exc:  # torch's OutOfMemoryError, or cuBLAS/cuDNN failing to allocate
        if not is_oom(exc):
            raise
        return error_line(exc)
    return None


def _oom_round_trip(ctx: Ctx) -> tuple[int, int, str | None]:
    """(allocated before, allocated after release, the OOM's message) of an OOM provoked under
    a per-process memory fraction."""
    s, dev = ctx.sizes.oom, ctx.torch_device
    # warm first: cuBLAS and cuDNN keep their handles' workspaces allocated for the process's
    # life, and a first use inside the provoked step would count as memory never given back
    workload.build(ctx.spec(s.provoke_model, s.provoke_image, 2, mode="train")).step()
    synchronize(dev)
    release(dev)
    before = torch.cuda.memory_allocated(dev)
    total = torch.cuda.get_device_properties(dev).total_memory
    cap = torch.cuda.memory_reserved(dev) + int(s.provoke_headroom_gb * 2**30)
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), dev)
    try:
        message = _provoke_oom(ctx.spec(s.provoke_model, s.provoke_image, s.provoke_batch,
                                        mode="train"))  # fmt: skip
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
    release(dev)
    return before, torch.cuda.memory_allocated(dev), message


def _oom_sweep(ctx: Ctx) -> list:
    """The capped latency sweep through the CLI; its records (judged per mode by the caller)."""
    s, out_dir = ctx.sizes.oom, ctx.out / "oom"
    # --no-report: the records are what is judged; the report of the run is DIR/run's
    rc = ctx.cli(["run", "--models", s.model, "--metrics", "latency", "--sweep",
                  "--memory-cap-gb", f"{s.cap_gb:g}", "--device", ctx.device, *s.timing_args,
                  "--no-report", "--out", str(out_dir)], "oom sweep")  # fmt: skip
    records = RunStore(out_dir).records()
    if rc not in (0, 1) or not records:  # 1: some record is an error, judged per mode below
        raise RuntimeError(f"capped sweep: exit status {rc}, {len(records)} records (log.txt)")
    return records


def stage_oom(ctx: Ctx) -> list[Verdict]:
    s = ctx.sizes.oom
    records = _oom_sweep(ctx)
    out = []
    for mode in ("inference", "train"):
        count, ended, note = sweep_verdict(records, mode)
        out.append(ctx.check(
            "oom", f"capped sweep ends in one oom record ({mode})",
            "exactly 1, nothing measured past it", count, "oom records",
            f"{s.model}, cap {s.cap_gb:g} GiB: {note}", met=ended,
        ))  # fmt: skip
    name = "allocated memory back to baseline after an OOM"
    if not ctx.cuda:
        out.append(ctx.skip("oom", name, GOALS["oom_back_to_baseline"], "CUDA only", "bytes"))
        return out
    before, after, message = _oom_round_trip(ctx)
    if message is None:
        why = f"batch {s.provoke_batch} did not run out of memory"
        out.append(ctx.check("oom", name, "an OOM provoked", None, "bytes above baseline", why,
                             met=False))  # fmt: skip
    else:
        out.append(ctx.check(
            "oom", name, GOALS["oom_back_to_baseline"], after - before, "bytes above baseline",
            f"{before:,} bytes before, {after:,} after release; {message[:160]}",
        ))  # fmt: skip
    return out


# --- run ------------------------------------------------------------------------------------------


def stage_run(ctx: Ctx) -> list[Verdict]:
    out_dir = ctx.out / "run"
    rc = ctx.cli(["run", *ctx.sizes.run.args, "--device", ctx.device, "--out", str(out_dir)],
                 "run")  # fmt: skip
    records = RunStore(out_dir).records()
    errors = [r for r in records if r.status == "error"]
    report = out_dir / "report.md"
    first = ""
    if errors:
        first = f"; first: {errors[0].metric} {errors[0].spec.model}: {errors[0].reason}"
    return [
        ctx.check("run", "cnnbench run exit status", GOALS["exit_zero"], rc, "exit status",
                  f"{len(records)} records", must=True),
        ctx.check("run", "error records", GOALS["none"], len(errors), "error records",
                  f"of {len(records)}{first}", met=bool(records) and not errors, must=True),
        ctx.check("run", "report.md written", "exists, not empty",
                  report.stat().st_size if report.exists() else None, "bytes", str(report),
                  met=report.exists() and report.stat().st_size > 0, must=True),
    ]  # fmt: skip


# --- loader and recipe ----------------------------------------------------------------------------


def _input_pipeline_module():
    """benchmarks/bench_input_pipeline.py (benchmarks/ is no package: loaded from its path)."""
    path = ROOT / "benchmarks" / "bench_input_pipeline.py"
    spec = importlib.util.spec_from_file_location("bench_input_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def delivered_rate(batches, device: torch.device, n_batches: int, warmup_batches: int) -> float:
    """Images/s a loader delivers to ``device`` with no model step: ``warmup_batches`` untimed
    (the DataLoader's workers start, its queue fills), then ``n_batches`` timed, synchronized
    at both ends, so that the device loader's resize kernels are in the time, not merely
    queued."""
    it = iter(batches)
    for _ in range(warmup_batches):
        next(it)
    synchronize(device)
    t0 = time.perf_counter()
    seen = 0
    for _ in range(n_batches):
        _, y = next(it)
        seen += y.numel()
    synchronize(device)
    return seen / (time.perf_counter() - t0)


@dataclass(frozen=True)
class LoaderRates:
    alone: dict[str, list[float]]  # loader → images/s delivered, one per slice, no model step
    end_to_end: dict[str, float]  # loader → images/s of SGD steps fed by it, data included


def loader_rates(ctx: Ctx) -> LoaderRates:
    """Both loaders alone (alternating, ``repeats`` slices each, so that a noisy moment hits
    both), then each feeding the same SGD step; same batch, size, layout and device."""
    s, dev = ctx.sizes.loader, ctx.torch_device
    pipe = _input_pipeline_module()
    # the module's batch and size are globals its functions read at call time
    pipe.BATCH, pipe.IMAGE_SIZE = s.batch, s.image
    alone: dict[str, list[float]] = {"d2l": [], "cnnbench": []}
    with tempfile.TemporaryDirectory(prefix="acceptance-tv-") as tmp:
        root = pipe.torchvision_layout(Path(tmp))
        batches = {"d2l": lambda: pipe.d2l_batches(root, dev),
                   "cnnbench": lambda: pipe.cnnbench_batches(dev, s.channels_last)}  # fmt: skip
        for _ in range(s.repeats):
            for name, make in batches.items():
                alone[name].append(delivered_rate(make(), dev, s.alone_batches,
                                                  s.alone_warmup_batches))  # fmt: skip
        end_to_end = {name: pipe.train_slice(make(), dev, s.steps, s.dtype, s.channels_last)
                      for name, make in batches.items()}  # fmt: skip
    release(dev)
    return LoaderRates(alone, end_to_end)


def stage_loader(ctx: Ctx) -> list[Verdict]:
    """The goal on the loaders alone: end to end, a GoogLeNet step at batch 128 in bf16 takes
    5-6 ms on an H200 (20-25k images/s), below the d2l loader's 30-40k images/s, so both
    pipelines would run at the step's rate (issue 23). End to end is kept as information."""
    s, rates = ctx.sizes.loader, loader_rates(ctx)
    d2l, ours = (statistics.median(rates.alone[k]) for k in ("d2l", "cnnbench"))
    e2e_d2l, e2e_ours = rates.end_to_end["d2l"], rates.end_to_end["cnnbench"]
    where = (f"batch {s.batch} at {s.image}, {s.dtype}"
             f"{', channels_last' if s.channels_last else ''}, on {ctx.device}")  # fmt: skip
    slices = "; ".join(f"{k}: " + ", ".join(f"{r:,.0f}" for r in v) for k, v in rates.alone.items())
    return [
        ctx.check(
            "loader", "cnnbench loader / d2l DataLoader, images/s delivered (loaders alone)",
            GOALS["pipeline_speedup"], ours / d2l, "x",
            f"medians: cnnbench {ours:,.0f}, d2l-style (2 workers) {d2l:,.0f} images/s over "
            f"{s.alone_batches} batches, synchronized, no model step; slices {slices}; {where}",
        ),
        ctx.check(
            "loader", "the same, end to end with a googlenet SGD step (information)",
            GOALS["recorded"], e2e_ours / e2e_d2l, "x",
            f"cnnbench {e2e_ours:,.0f}, d2l-style {e2e_d2l:,.0f} images/s, {s.steps} steps "
            f"each; where the step is slower than both loaders this is ~1; {where}",
        ),
    ]  # fmt: skip


def is_chapter_recipe(result, spec: Spec) -> tuple[bool, str]:
    """Whether a training record ran the chapter's whole recipe (CHAPTER_RECIPE: its epochs and
    data as well as its hyper-parameters; the dtype aside), and what it ran, in words.

    Not ``measure/train.py``'s ``recipe == "d2l"``: that flag is computed inline in ``train()``
    from the config, covers neither the epochs nor the data and calls any bf16 run "modified",
    while this run trains in bf16 to fit its 8 minutes."""
    got = dict(epochs=result.epochs, batch=spec.batch_size, optimizer=result.optimizer,
               lr=result.lr, momentum=result.momentum, train_images=result.train_images,
               test_images=result.test_images, image_size=spec.image_size)  # fmt: skip
    off = sorted(k for k, want in CHAPTER_RECIPE.items() if got[k] != want)
    text = ", ".join(f"{k} {v}" for k, v in got.items())
    return not off, text + (f"; differs: {off}" if off else "")


def _recipe_record(ctx: Ctx):
    """The one accuracy record of the recipe run through the CLI, or a RuntimeError."""
    out_dir = ctx.out / "recipe"
    rc = ctx.cli(["run", *ctx.sizes.recipe.args, "--device", ctx.device, "--no-report",
                  "--out", str(out_dir)], "recipe")  # fmt: skip
    records = [r for r in RunStore(out_dir).records() if r.metric == "accuracy"]
    if rc != 0 or len(records) != 1 or records[0].status != "ok":
        why = [(r.status, r.reason) for r in records]
        raise RuntimeError(f"recipe run: exit status {rc}, accuracy records {why} (log.txt)")
    return records[0]


def stage_recipe(ctx: Ctx) -> list[Verdict]:
    record = _recipe_record(ctx)
    result, spec = record.result, record.spec  # a TrainResult
    run = result.runs[0]
    chapter, recipe_text = is_chapter_recipe(result, spec)
    conditions = (f"{spec.model} at {spec.image_size}, {spec.dtype}"
                  f"{', channels_last' if spec.channels_last else ''}, record says recipe "
                  f"'{result.recipe}'")  # fmt: skip
    out = [
        ctx.check("recipe", "the full profile trains the chapter's recipe",
                  ", ".join(f"{k} {v}" for k, v in CHAPTER_RECIPE.items()), None, "",
                  recipe_text, met=chapter),
        ctx.check("recipe", "test accuracy after training", GOALS["recipe_accuracy"],
                  run.final_test_accuracy, "accuracy",
                  f"seed {run.seed}, {len(run.epochs)} epochs; {conditions}"),
        ctx.check("recipe", "training wall time", GOALS["recorded"], run.train_time_s, "s",
                  f"{number(result.images_per_s_mean)} images/s end to end (data included)"),
    ]  # fmt: skip
    return out


# --- throughput -----------------------------------------------------------------------------------


def stage_throughput(ctx: Ctx) -> list[Verdict]:
    s = ctx.sizes.throughput
    rates = {}
    for batch in s.batches:
        spec = ctx.spec(s.model, s.image, batch, dtype=s.dtype, mode="train",
                        channels_last=s.channels_last)  # fmt: skip
        model = models.create(s.model, image_size=s.image)
        rates[batch] = latency.measure(model, spec, s.timing_config).images_per_s
        del model
        release(ctx.torch_device)
    best = max(rates, key=rates.get)
    return [ctx.check(
        "throughput", "training images/s at the best batch", GOALS["train_images_per_s"],
        rates[best], "images/s",
        f"best batch {best}; " + ", ".join(f"b{b} {r:,.0f}" for b, r in rates.items())
        + f"; {s.model} at {s.image}, {s.dtype}"
        + (", channels_last" if s.channels_last else "") + ", SGD step",
    )]  # fmt: skip


# --- energy --------------------------------------------------------------------------------------


def _energy_verdict(ctx: Ctx, mode: str, result: EnergyResult) -> Verdict:
    flags = "; SHORT: under its minimum block, coarse" if result.short else ""
    return ctx.check(
        "energy", f"joules per image ({mode})", GOALS["joules_per_image"],
        result.joules_per_image, "J/image",
        f"{result.energy_j:.4g} J over {result.images:,} images in {result.block_s:.3g} s "
        f"({result.mean_power_w:.4g} W, {result.images_per_s:,.0f} images/s), counter update "
        f"{result.update_period_ms:.3g} ms; {result.source}: {result.scope}{flags}",
    )  # fmt: skip


def _energy_unsupported(ctx: Ctx, mode: str, reason: str) -> Verdict:
    """No counter: a pass on a CPU, which may have none (this VM has no powercap), a fail on
    CUDA, where NVML must give one; never a number."""
    check, note = f"joules per image ({mode})", f"unsupported: {reason}"
    if ctx.cuda:
        return ctx.check("energy", check, GOALS["joules_per_image"], None, "J/image", note,
                         met=False, must=True)  # fmt: skip
    return Verdict("energy", check, "a number, or unsupported with its reason on a CPU", None,
                   "J/image", "pass", 0.0, note)  # fmt: skip


def stage_energy(ctx: Ctx) -> list[Verdict]:
    """Joules per image of inference and of a training step, through the harness a `cnnbench
    run --metrics energy` uses (``energy.measure_unit``, the run's optimizer and warm-up)."""
    s, out = ctx.sizes.energy, []
    for mode in ("inference", "train"):
        spec = ctx.spec(s.model, s.image, s.batch, mode=mode)
        try:
            out.append(_energy_verdict(ctx, mode, energy.measure_unit(spec, ctx)))
        except Unsupported as exc:
            out.append(_energy_unsupported(ctx, mode, str(exc)))
        finally:
            release(ctx.torch_device)
    return out


# --- pytest ---------------------------------------------------------------------------------------


def stage_pytest(ctx: Ctx) -> list[Verdict]:
    py = [sys.executable, "-m", "pytest"]
    if ctx.dry:
        # CI runs the dry run from inside pytest: collecting is the check that fits there
        rc = run_logged([*py, "--collect-only", "-q", "-m", "cuda", "tests"], ctx.log,
                        "pytest collect", ctx.subprocess_timeout_s())  # fmt: skip
        return [ctx.check("pytest", "pytest --collect-only -m cuda tests", "exit status 0 or 5",
                          rc, "exit status", "5: nothing collected", met=rc in (0, 5),
                          must=True)]  # fmt: skip
    out = []
    for name, args in (
        ("pytest -m cuda tests", ["-m", "cuda", "-q", "tests"]),
        ("pytest --benchmark-only --device cuda -k googlenet benchmarks",
         ["--benchmark-only", "--device", ctx.device, "-k", "googlenet", "-q", "benchmarks"]),
    ):  # fmt: skip
        rc = run_logged([*py, *args], ctx.log, name, ctx.subprocess_timeout_s())
        out.append(ctx.check("pytest", name, GOALS["exit_zero"], rc, "exit status",
                             "output in log.txt", must=True))  # fmt: skip
    return out


STAGE_FUNCTIONS: dict[str, Callable[[Ctx], list[Verdict]]] = {
    "run": stage_run,
    "timing": stage_timing,
    "memory": stage_memory,
    "peaks": stage_peaks,
    "loader": stage_loader,
    "energy": stage_energy,
    "oom": stage_oom,
    "roofline": stage_roofline,
    "recipe": stage_recipe,
    "throughput": stage_throughput,
    "pytest": stage_pytest,
}
assert tuple(STAGE_FUNCTIONS) == STAGES
assert all(set(sizes.estimate_s) == set(STAGES) for sizes in SIZES.values())

# --- running and writing -------------------------------------------------------------------------

WRITE_MARGIN_S = 5.0  # kept free before the deadline: the last verdicts and the archive
ARCHIVE = "acceptance.tar.gz"  # every output, under --out unless --archive names another path


def run_stage(ctx: Ctx, name: str) -> list[Verdict]:
    """One stage, timed; an exception becomes one "error" verdict and the run goes on."""
    t0 = time.perf_counter()
    try:
        verdicts = STAGE_FUNCTIONS[name](ctx)
    except Exception as exc:  # every failure of a stage is a verdict, never the end of the run
        with open(ctx.log, "a") as f:
            f.write(f"\n===== stage {name} raised\n{traceback.format_exc()}")
        verdicts = [Verdict(name, "stage ran", "no exception", None, "", "error", 0.0,
                            error_line(exc))]  # fmt: skip
    finally:
        release(ctx.torch_device)
        setup_process(ctx.config)  # whatever a stage changed, the next starts alike
    seconds = round(time.perf_counter() - t0, 2)
    return [dataclasses.replace(v, seconds=seconds) for v in verdicts]


def not_reached(stage: str, verdict: str, note: str) -> Verdict:
    return Verdict(stage, "stage ran", "reached", None, "", verdict, 0.0, note)


def deadline_skip(ctx: Ctx, name: str) -> Verdict | None:
    """The verdict of a stage whose estimate exceeds the time left before the deadline (the
    write margin kept), or None: it may start. A stage that starts is never stopped mid-way;
    its subprocesses and workers get the time left as their limit."""
    estimate_s, left_s = ctx.sizes.estimate_s[name], ctx.time_left_s() - WRITE_MARGIN_S
    if estimate_s <= left_s:
        return None
    return not_reached(name, DEADLINE_VERDICT,
                       f"estimated {estimate_s:g} s, {max(left_s, 0.0):.0f} s left")  # fmt: skip


def total_verdict(ctx: Ctx, verdicts: list[Verdict], total_s: float) -> Verdict:
    """The whole run's wall time against its budget, judged only when every stage ran: a run
    that skipped stages for its deadline is short for that reason alone."""
    goal, name = GOALS["total_s"], "acceptance run wall time"
    skipped = sorted({v.stage for v in verdicts if v.verdict == DEADLINE_VERDICT})
    if skipped:
        verdict = ctx.skip("total", name, goal, f"not judged: {', '.join(skipped)} not reached "
                           f"before --deadline; {total_s:.1f} s in all", "s")  # fmt: skip
    else:
        verdict = ctx.check("total", name, goal, total_s, "s", f"{len(STAGES)} stages")
    return dataclasses.replace(verdict, seconds=total_s)


def run_stages(ctx: Ctx, stages: tuple[str, ...], env: dict) -> tuple[list[Verdict], float]:
    """Every stage in order, or its deadline verdict; after each, a progress line on stderr and
    the verdicts and the archive written again (a run cut short keeps what it finished). The
    whole run's wall time is judged when every stage was asked for."""
    t0 = time.perf_counter()
    verdicts: list[Verdict] = []
    write_outputs(ctx, env, stages, verdicts, 0.0, done=False)  # a cut first stage: all pending
    for i, name in enumerate(stages, 1):
        skip = deadline_skip(ctx, name)
        mine = [skip] if skip else run_stage(ctx, name)
        verdicts += mine
        counts = {k: sum(v.verdict == k for v in mine) for k in VERDICTS}
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        print(f"[{i}/{len(stages)}] {name}: {mine[0].seconds:.1f} s — {summary}",
              file=sys.stderr, flush=True)  # fmt: skip
        write_outputs(ctx, env, stages, verdicts, time.perf_counter() - t0, done=False)
    total = round(time.perf_counter() - t0, 2)
    if stages == STAGES:
        verdicts.append(total_verdict(ctx, verdicts, total))
    write_outputs(ctx, env, stages, verdicts, total, done=True)
    return verdicts, total


def failed(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.verdict in ("fail", "error")]


COLUMNS = ("stage", "check", "goal", "measured", "unit", "verdict", "s", "note")
DRY_NOTE = ("Dry run: every stage's code at tiny sizes; no performance goal is judged. A check "
            f"that ran and measured finite, positive numbers reads '{DRY_VERDICT}'; structural "
            "checks (exit statuses, records, files) are judged as in a real run.")  # fmt: skip


def verdict_page(verdicts: list[Verdict], title: str, preface: str, dry: bool) -> Document:
    """The verdicts as a page: the conditions, what failed, what was not reached, then every
    check in one table."""
    rows = [(v.stage, v.check, v.goal, number(v.measured), v.unit, v.verdict, f"{v.seconds:.1f}",
             v.note) for v in verdicts]  # fmt: skip
    blocks: list = [Paragraph(preface)]
    if dry:
        blocks.append(Note(DRY_NOTE))
    bad = failed(verdicts)
    if bad:
        blocks += [Heading("Failed or errored"), Bullets(tuple(
            f"{v.stage}, {v.check}: {v.verdict}, measured {number(v.measured)} {v.unit} "
            f"(goal {v.goal}); {v.note}" for v in bad))]  # fmt: skip
    unreached = [v for v in verdicts if v.verdict in (DEADLINE_VERDICT, PENDING_VERDICT)]
    if unreached:
        blocks.append(Note("Not reached: " + "; ".join(
            f"{v.stage} ({v.verdict}: {v.note})" for v in unreached) + "."))  # fmt: skip
    caption = "One row per check; s: the stage's wall time (the total row: the whole run's)"
    blocks += [Heading("Checks"), Table(caption, pd.DataFrame(rows, columns=list(COLUMNS)))]
    return Document(title, tuple(blocks))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for verdicts, env.json and run folders")
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda; cpu with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, every stage, no goals")
    p.add_argument("--only", help=f"comma list of stages: {','.join(STAGES)}")
    p.add_argument("--deadline", type=float, metavar="SECONDS",
                   help="end within about this many seconds of the start: a stage whose "
                   "estimate exceeds the time left is not run")  # fmt: skip
    p.add_argument("--archive", help=f"the archive of every output (default: OUT/{ARCHIVE})")
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.stages = tuple(STAGES)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in STAGES]
        if unknown or not wanted:
            p.error(f"--only: unknown stage(s) {unknown}; stages: {','.join(STAGES)}")
        args.stages = tuple(s for s in STAGES if s in wanted)
    if args.deadline is not None and not (math.isfinite(args.deadline) and args.deadline > 0):
        p.error(f"--deadline {args.deadline:g}: give a positive number of seconds")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here (a CPU takes --dry-run)")
    if not args.dry_run and not args.device.startswith("cuda"):
        p.error("the real run needs CUDA; on a CPU use --dry-run")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        p.error(f"--out {out}: exists and is not an empty folder (the run folders inside it "
                "must be new)")  # fmt: skip
    return args


def write_env(ctx: Ctx, stages: tuple[str, ...]) -> dict:
    """DIR/env.json: what the numbers depend on, and how this acceptance run was asked for."""
    env = collect_env(ctx.device)
    env["acceptance"] = {"dry_run": ctx.dry, "stages": list(stages), "argv": sys.argv,
                         "sizes": dataclasses.asdict(ctx.sizes)}  # fmt: skip
    write_atomic(ctx.out / "env.json", json.dumps(env, indent=2, default=str) + "\n")
    return env


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a file beside it: a run killed mid-write leaves the last
    whole version, never a torn one."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def pack(out: Path, archive: Path) -> None:
    """Every file under ``out`` (the archive aside) into the gzipped tar ``archive``, under the
    folder's name, written beside it and renamed into place."""
    tmp = archive.with_name(archive.name + ".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            if path.is_file() and path not in (archive, tmp) and path.suffix != ".partial":
                tar.add(path, arcname=str(Path(out.name) / path.relative_to(out)))
    os.replace(tmp, archive)


def pending(stages: tuple[str, ...], verdicts: list[Verdict]) -> list[Verdict]:
    """A "not reached" row for each stage with no verdict yet."""
    seen = {v.stage for v in verdicts}
    return [not_reached(s, PENDING_VERDICT, "not run when this file was written")
            for s in stages if s not in seen]  # fmt: skip


def write_outputs(
    ctx: Ctx, env: dict, stages: tuple[str, ...], verdicts: list[Verdict], elapsed_s: float,
    *, done: bool,
) -> None:  # fmt: skip
    """DIR/verdicts.json and DIR/verdicts.md (the stages still to run marked not reached), then
    the archive of everything under DIR. A failed archive is logged, never the run's end."""
    rows = verdicts + pending(stages, verdicts)
    write_atomic(ctx.out / "verdicts.json", json.dumps(
        [dataclasses.asdict(v) for v in rows], indent=2, allow_nan=False) + "\n")  # fmt: skip
    title = f"GPU acceptance: {env.get('device_name')} ({ctx.device})" + (
        " — dry run" if ctx.dry else "")  # fmt: skip
    deadline = "" if ctx.deadline is None else f" (--deadline {ctx.deadline_s:g} s)"
    preface = (f"{env.get('collected_at')}, commit {env.get('git_commit')}"
               f"{' (dirty)' if env.get('git_dirty') else ''}, torch {torch.__version__}; "
               f"{elapsed_s:.1f} s {'in all' if done else 'so far, still running'}{deadline}. "
               f"Stages in order: {', '.join(stages)}.")  # fmt: skip
    write_atomic(ctx.out / "verdicts.md", to_markdown(verdict_page(rows, title, preface, ctx.dry)))
    if ctx.archive is None:
        return
    try:
        pack(ctx.out, ctx.archive)
    except OSError as exc:
        with open(ctx.log, "a") as f:
            f.write(f"\n===== archive {ctx.archive} not written: {error_line(exc)}\n")


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    archive = Path(args.archive) if args.archive else out / ARCHIVE
    archive.parent.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(
        out=out, device=args.device, dry=args.dry_run, sizes=SIZES["dry" if args.dry_run else "real"],
        log=out / "log.txt", deadline=None if args.deadline is None else started + args.deadline,
        deadline_s=args.deadline, archive=archive,
    )  # fmt: skip
    setup_process(ctx.config)
    env = write_env(ctx, args.stages)
    verdicts, total = run_stages(ctx, args.stages, env)
    bad = failed(verdicts)
    for v in verdicts:
        print(f"{v.verdict:>22}  {v.stage:<10} {v.check}: {number(v.measured)} {v.unit} "
              f"(goal {v.goal})")  # fmt: skip
    unreached = sum(v.verdict == DEADLINE_VERDICT for v in verdicts)
    print(f"{len(verdicts)} checks, {len(bad)} failed or errored, {unreached} stages not "
          f"reached (deadline), {total:.1f} s; {out / 'verdicts.md'}, {archive}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
