"""``cnnbench sweep``: one run split into N shards, submitted through submitit as one job array,
waited for, each failed shard resubmitted once, and the shards merged into one report.

The sweep folder ``DIR`` holds ``shards/K`` (shard K's run folder, written by ``cnnbench run ...
--shard K/N --out DIR/shards/K --no-report``), ``submitit/`` (submitit's pickles and each job's
logs), ``sweep.json`` (each shard's outcome) and the merged report (report.md, results.csv, ...),
rendered by the code ``cnnbench report`` uses, with its refusal of mixed software or devices.

A shard's job runs ``python -m cnnbench run ...`` as a subprocess rather than calling the CLI's
``main`` in the job's process: the job function is a module-level function of an installed
package (submitit pickles it by reference), the run's exit status is the shard's verdict as it is
for a run started by hand, and a run that crashes (a killed worker, a torch abort) ends the
subprocess, not the job that reports on it. A resubmitted shard resumes its own folder
(``--resume``): what it measured is kept and its ``error`` records are measured again.

submitit is an optional extra (``pip install 'cnnbench[sweep]'``); it is imported only here, when
a sweep is submitted.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EXECUTORS", "INSTALL_HINT", "Progress", "ShardOutcome", "ShardRun", "SubmititMissing",
           "SweepPlan", "SweepRefused", "SweepResult", "import_submitit", "make_executor",
           "merge", "run_shard", "run_sweep", "shard_command", "shard_dir"]  # fmt: skip

INSTALL_HINT = "pip install 'cnnbench[sweep]'"
EXECUTORS = ("slurm", "local", "debug")
ATTEMPTS = 2  # a failed shard is submitted once more, then named: a second failure is no accident
TAIL_LINES = 20  # of a shard's output kept for its failure reason (the whole output is in its log)


class SubmititMissing(RuntimeError):
    """submitit is not installed: the sweep cannot submit anything."""


class SweepRefused(ValueError):
    """A sweep that cannot start: its folder holds another sweep (other shards or run options),
    or the executor refuses a parameter."""


@dataclass(frozen=True)
class SweepPlan:
    run_args: tuple[str, ...]  # the `cnnbench run` options every shard gets, as the user typed them
    shards: int  # N: shard K runs `--shard K/N`
    out_dir: Path  # the sweep folder (layout: module docstring)
    executor: str  # one of EXECUTORS
    executor_params: tuple[tuple[str, Any], ...] = ()  # passed to submitit's update_parameters
    timeout_min: float = (
        720.0  # each job's wall-clock limit, minutes (submitit's local default, 2, is too short)
    )
    allow_mixed: bool = False  # merge shards measured on different software or devices
    poll_s: float = 1.0  # seconds between looks at the jobs' states


@dataclass(frozen=True)
class ShardRun:
    """What a shard's job returns: the `cnnbench run` exit status and its output's last line."""

    exit_code: int
    last_line: str


@dataclass(frozen=True)
class ShardOutcome:
    index: int  # K
    ok: bool  # the last attempt's run exited 0
    attempts: int  # submissions of this shard (1, or ATTEMPTS after a failure)
    exit_code: int | None  # the last attempt's run exit status; None: the job itself failed
    reason: str  # why the last attempt failed ("" when ok)
    job_ids: tuple[str, ...]  # one per attempt
    log_path: str  # the last attempt's job log ("" where the executor keeps none: debug)
    run_dir: str  # the shard's run folder


@dataclass(frozen=True)
class SweepResult:
    shards: tuple[ShardOutcome, ...]
    report: dict[str, str] = field(default_factory=dict)  # the merged report's files ({}: none)

    @property
    def failed(self) -> tuple[ShardOutcome, ...]:
        return tuple(s for s in self.shards if not s.ok)


@dataclass(frozen=True)
class Progress:
    total: int  # shards
    done: int  # finished ok
    failed: int  # failed on every attempt
    resubmitted: int  # failed once and submitted again


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise SubmititMissing(f"cnnbench sweep needs submitit, which is not installed: {INSTALL_HINT}") from None  # fmt: skip
    return submitit


def shard_dir(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / "shards" / str(index)


def shard_command(run_args: Sequence[str], index: int, shards: int, run_dir: Path) -> list[str]:
    """The shard's `cnnbench run`: the sweep's run options, its share, its folder; a folder that
    holds records already (an earlier attempt) is resumed, not refused."""
    where = "--resume" if (Path(run_dir) / "results.jsonl").exists() else "--out"
    return [sys.executable, "-m", "cnnbench", "run", *run_args, "--shard", f"{index}/{shards}",
            where, str(run_dir), "--no-report"]  # fmt: skip


def run_shard(run_args: Sequence[str], index: int, shards: int, run_dir: str) -> ShardRun:
    """The job of one shard (runs on the node): its run's output goes to the job's log as it
    comes, and its exit status and last line come back to the sweep."""
    command = shard_command(run_args, index, shards, Path(run_dir))
    print("cnnbench sweep: " + " ".join(command), file=sys.stderr, flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:  # fmt: skip
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line.strip())
        code = proc.wait()
    sys.stderr.flush()
    lines = [t for t in tail if t]
    return ShardRun(code, lines[-1] if lines else "")


def make_executor(
    kind: str, folder: Path, params: Sequence[tuple[str, Any]] = (), timeout_min: float = 720.0
):
    """submitit's executor for ``kind``: SlurmExecutor (real sbatch; ``params`` are its
    parameters, e.g. partition, gpus_per_node, cpus_per_task, mem), LocalExecutor (a process per
    job on this machine), DebugExecutor (in this process, when its result is asked for)."""
    submitit = import_submitit()
    if kind not in EXECUTORS:
        raise SweepRefused(f"executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "slurm" and shutil.which("srun") is None:  # what submitit checks, said our way
        raise SweepRefused("--executor slurm: no Slurm here (no srun on PATH); run the sweep on a "
                           "Slurm login node, or use --executor local")  # fmt: skip
    try:
        if kind == "slurm":  # sbatch's --time is whole minutes
            executor = submitit.SlurmExecutor(folder=folder)
            executor.update_parameters(**{"time": max(1, round(timeout_min)), **dict(params)})
        else:
            executor = submitit.LocalExecutor(folder=folder)
            executor.update_parameters(**{"timeout_min": timeout_min, **dict(params)})
    except ValueError as exc:  # an unknown parameter: submitit's message lists the valid ones
        raise SweepRefused(f"{kind} executor: {exc}") from None
    return executor


def _submit(executor, plan: SweepPlan, indices: Sequence[int]) -> dict[int, Any]:
    """One job array for the shards ``indices``."""
    dirs = [str(shard_dir(plan.out_dir, k)) for k in indices]
    n = len(indices)
    jobs = executor.map_array(
        run_shard, [plan.run_args] * n, list(indices), [plan.shards] * n, dirs
    )
    return dict(zip(indices, jobs, strict=True))


def _finished(job) -> bool:
    try:
        return job.done()
    except Exception:  # DebugJob.done() runs the job and raises what it raised: it is finished
        return True


def _log_path(job) -> str:
    try:
        path = job.paths.stderr
    except Exception:  # a debug job has no folder of its own
        return ""
    return str(path) if Path(path).exists() else ""


def _judge(job) -> tuple[bool, int | None, str]:
    """(ok, the run's exit status, why not ok) of a finished job."""
    error = job.exception()
    if error is not None:  # the job died (killed, timed out) or its function raised
        text = str(error).strip().splitlines()
        return False, None, f"the job failed: {text[-1] if text else type(error).__name__}"
    run = job.result()
    if run.exit_code != 0:
        return False, run.exit_code, f"exit {run.exit_code}: {run.last_line}"
    return True, 0, ""


def _wait(jobs: dict[int, Any], poll_s: float, on_finish: Callable[[int, tuple], None]) -> None:
    """Until every job has finished; ``on_finish(index, judged)`` as each one does. Ctrl-C cancels
    the jobs still running (a local job outlives this process otherwise)."""
    pending = dict(jobs)
    try:
        while pending:
            for k, job in list(pending.items()):
                if _finished(job):
                    on_finish(k, _judge(job))
                    del pending[k]
            if pending:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job in pending.values():
            job.cancel(check=False)
        raise


def check_out_dir(plan: SweepPlan) -> None:
    """A sweep folder is new, or holds this same sweep (its shards resume); never another one,
    whose shard folders would hold other units."""
    summary = Path(plan.out_dir) / "sweep.json"
    if not summary.exists():
        return
    old = json.loads(summary.read_text())
    if old.get("shards") != plan.shards or tuple(old.get("run_args", ())) != plan.run_args:
        raise SweepRefused(
            f"--out {plan.out_dir}: holds another sweep ({old.get('shards')} shards of "
            f"`cnnbench run {' '.join(old.get('run_args', ()))}`); choose another --out"
        )


def run_sweep(
    plan: SweepPlan, on_progress: Callable[[Progress], None] = lambda p: None
) -> SweepResult:
    """Submit every shard as one job array, wait, submit the failed ones once more as a second
    array, wait, then merge every shard folder that holds records into one report."""
    check_out_dir(plan)
    executor = make_executor(plan.executor, plan.out_dir / "submitit", plan.executor_params, plan.timeout_min)  # fmt: skip
    _write_summary(plan, None)
    ids: dict[int, list[str]] = {k: [] for k in range(plan.shards)}
    last: dict[int, tuple] = {}  # shard → (ok, exit status, reason, log) of its latest attempt
    for _ in range(ATTEMPTS):
        todo = [k for k in range(plan.shards) if k not in last or not last[k][0]]
        if not todo:
            break
        jobs = _submit(executor, plan, todo)
        for k, job in jobs.items():
            ids[k].append(str(job.job_id))
            last.pop(k, None)  # resubmitted: pending again
        on_progress(_progress(plan.shards, last, ids))

        def finish(k: int, judged: tuple, jobs=jobs) -> None:
            last[k] = (*judged, _log_path(jobs[k]))
            on_progress(_progress(plan.shards, last, ids))

        _wait(jobs, plan.poll_s, finish)
    outcomes = tuple(ShardOutcome(k, last[k][0], len(ids[k]), last[k][1], last[k][2], tuple(ids[k]),
                                  last[k][3], str(shard_dir(plan.out_dir, k))) for k in range(plan.shards))  # fmt: skip
    _write_summary(plan, SweepResult(outcomes))
    return SweepResult(outcomes, merge(plan, outcomes))


def _progress(total: int, last: dict[int, tuple], ids: dict[int, list[str]]) -> Progress:
    """Shards done, failed on every attempt, and submitted again after a failure."""
    done = sum(1 for v in last.values() if v[0])
    failed = sum(1 for k, v in last.items() if not v[0] and len(ids[k]) == ATTEMPTS)
    return Progress(total, done, failed, sum(1 for v in ids.values() if len(v) > 1))


def merge(plan: SweepPlan, outcomes: Sequence[ShardOutcome]) -> dict[str, str]:
    """The shards' folders that hold records, in one report in the sweep folder (a failed
    shard's records say what failed, as in a run's report); {} when no shard wrote any. Mixed
    software or devices raise ``report.render.MixedRuns`` unless ``plan.allow_mixed``."""
    from .report.render import write_report

    dirs = [o.run_dir for o in outcomes if (Path(o.run_dir) / "results.jsonl").exists()]
    if not dirs:
        return {}
    paths = write_report(dirs, plan.out_dir, allow_mixed=plan.allow_mixed)
    return {k: str(v) for k, v in paths.items()}


def _write_summary(plan: SweepPlan, result: SweepResult | None) -> None:
    """sweep.json: the sweep's plan (a rerun into the same folder must match it) and, once
    known, each shard's outcome."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"shards": plan.shards, "run_args": list(plan.run_args), "executor": plan.executor,
               "outcomes": [asdict(o) for o in result.shards] if result else None}  # fmt: skip
    tmp = plan.out_dir / "sweep.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(plan.out_dir / "sweep.json")
