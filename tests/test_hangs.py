"""A run that never hangs and ends well on every fault (issue 23): time limits, SIGTERM/SIGHUP,
a killed worker, CUDA allocation failures as out of memory, the run-folder lock, a full disk, a
resume with other settings, Dynamo reset once per model, TF32 through the new API, the peaks
worker without the memory cap, and what a worker preloads. Each test names the line it guards."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from cnnbench import runner
from cnnbench.cli import main
from cnnbench.config import make_config
from cnnbench.measure import _device, memory, worker
from cnnbench.results import RunStore
from tests.test_interrupt import RUN, _alive_in_group, _start, _wait_for_lines

PLUGIN = "tests.plugins.hanging_models"
ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _config(out, **given):
    top = {k: given.pop(k) for k in ("models", "metrics", "isolation") if k in given}
    top = {"models": ("nin",), "metrics": ("params",), "isolation": "none", **top}
    return make_config(device="cpu", profile="smoke", out_dir=str(out), given=given,
                       command_line="cnnbench run", **top)  # fmt: skip


@pytest.fixture
def plugin_models(monkeypatch):
    monkeypatch.setenv("CNNBENCH_PLUGINS", PLUGIN)
    import tests.plugins.hanging_models  # noqa: F401  (registers in this process too)


# --- 4: a unit that hangs ends at its time limit, and the run goes on ---------------------------


@pytest.mark.slow
def test_a_hung_unit_ends_at_its_limit_as_an_error_and_the_run_goes_on(tmp_path):
    """Guards worker.run_in_worker's deadline (``if time.monotonic() >= deadline``), the
    runner's ``limit_s=unit_limit_s(...)`` for model workers and ``time_limit`` around
    a harness's own worker (the CPU peak-RSS one): without them this run never ends."""
    out, pids = tmp_path / "run", tmp_path / "pids"
    env = {**os.environ, "CNNBENCH_PLUGINS": PLUGIN, "CNNBENCH_TEST_PID_FILE": str(pids)}
    argv = ["run", "--profile", "smoke", "--models", "sleeps_in_forward,nin", "--metrics",
            "params,latency,memory", "--batch-sizes", "1", "--threads", "1", "--no-report",
            "--unit-timeout-s", "4", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "cnnbench", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    t0 = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    elapsed_s = time.monotonic() - t0
    assert proc.returncode == 1, stderr  # the hung units are errors
    assert "Traceback" not in stderr
    records = {(r.spec.model, r.metric, r.spec.mode): r for r in RunStore(out).records()}
    assert records[("sleeps_in_forward", "params", "inference")].status == "ok"
    for metric in ("latency", "memory"):
        for mode in ("inference", "train"):
            hung = records[("sleeps_in_forward", metric, mode)]
            assert hung.status == "error", hung
            assert "time limit of 4 s" in hung.reason, hung.reason
    # a fresh worker after each timeout: every unit was tried (4 hung forward passes), after
    # the preflight's worker (input-size check and the plan's count of work: the model on the
    # meta device, ended at the unit limit) and, since it died, the plan's own count in a worker
    # of its own (ended at plan.COUNT_LIMIT_S)
    started = [int(p) for p in pids.read_text().split()]
    assert len(set(started)) == 1 + 1 + 4
    assert all(r.status == "ok" for (m, *_), r in records.items() if m == "nin")
    assert not [p for p in started if _alive(p)]  # every hung worker was ended
    assert elapsed_s < 4 * 4 + 150  # four limits, plus the rest of the run on 2 shared cores


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_unit_limit_is_the_flag_else_ten_times_an_estimate_else_the_profiles(tmp_path):
    from cnnbench.config import UNIT_TIMEOUT_FLOOR_S, UNIT_TIMEOUT_S

    assert runner.unit_limit_s(_config(tmp_path, unit_timeout_s=7.5)) == 7.5
    assert runner.unit_limit_s(_config(tmp_path), estimate_s=60) == 600
    assert runner.unit_limit_s(_config(tmp_path), estimate_s=1) == UNIT_TIMEOUT_FLOOR_S
    assert runner.unit_limit_s(_config(tmp_path)) == UNIT_TIMEOUT_S["smoke"]
    assert main(["run", "--unit-timeout-s", "0", "--out", str(tmp_path / "x")]) == 2


def test_a_worker_silent_past_its_limit_is_killed_and_reported(tmp_path):
    """Guards call_in_worker's ``timeout`` branch (WorkerError with ``timed_out_s``)."""
    t0 = time.monotonic()
    with pytest.raises(worker.WorkerError, match="time limit of 1 s") as ended:
        worker.call_in_worker(time.sleep, 600, limit_s=1)
    assert ended.value.timed_out_s == 1
    assert time.monotonic() - t0 < 30  # 1 s, the worker's start and its end


# --- 3: SIGTERM and SIGHUP as Ctrl-C; a worker killed from outside --------------------------------


def _resume_line(stderr: str) -> list[str]:
    """The command of the one 'resume with:' line, as argv for this interpreter."""
    (line,) = [x for x in stderr.splitlines() if "resume with: " in x]
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["cnnbench", "run"]
    return [sys.executable, "-m", "cnnbench", *command[1:]]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "whole_group"), [
    (signal.SIGTERM, True),  # Slurm: every process of the job step
    (signal.SIGTERM, False),  # Kubernetes, kill PID: the run's own process only
    (signal.SIGHUP, True),  # the terminal closed
])  # fmt: skip
def test_sigterm_and_sighup_end_the_run_like_ctrl_c(tmp_path, signum, whole_group):
    """Guards cli._signals_as_interrupts (the handlers) and _interrupted_line (the resume
    line): with the signal's default action the run dies with no line, and the resource
    tracker warns about leaked semaphores."""
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_lines(out / "results.jsonl", 3, proc)
    (os.killpg if whole_group else os.kill)(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert f"interrupted ({name}); finished records are kept in {out}/results.jsonl" in stderr
    for spew in ("Traceback", "leaked", "resource_tracker"):
        assert spew not in stderr + stdout, stderr
    assert _alive_in_group(proc.pid) == []  # no worker, forkserver or tracker left behind
    kept = (out / "results.jsonl").read_text()
    assert kept.count("\n") >= 3
    if signum == signal.SIGTERM and whole_group:  # the line's command resumes the run
        done = subprocess.run(_resume_line(stderr), capture_output=True, text=True, cwd=ROOT,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (out / "results.jsonl").read_text().startswith(kept)
        keys = [r.key for r in RunStore(out).records()]
        assert len(keys) == len(set(keys)) == 2 * (2 + 2) + 1  # as test_interrupt's UNITS
        assert RUN[-1] == "--no-report"


def test_the_resume_command_replaces_out_and_keeps_every_other_setting():
    """Guards cli._resume_command."""
    from cnnbench.cli import _resume_command

    argv = ["run", "--models", "a b", "--out", "runs/x", "--threads", "1", "--out=runs/y"]
    assert _resume_command(argv, "runs/x") == "cnnbench run --models 'a b' --threads 1 --resume runs/x"


def test_a_killed_worker_names_its_signal():
    """Guards worker.death_line; the run test (test_run.py) sees it end to end."""
    assert worker.death_line(-signal.SIGKILL) == "worker process killed by SIGKILL (exit code -9)"
    assert worker.death_line(3) == "worker process died with exit code 3"


# --- 5: CUDA allocation failures from cuBLAS/cuDNN are out of memory -----------------------------


@pytest.mark.parametrize("model", ["cublas_alloc_fails", "cudnn_alloc_fails", "cudnn_find_fails"])
def test_a_cuda_library_allocation_failure_is_oom_and_ends_the_sweep(tmp_path, plugin_models, model):
    """Guards runner._measure_unit's ``is_out_of_memory(exc)`` (torch's is_oom alone calls
    these errors, and the sweep tries batches 4 and 8 and the run exits 1)."""
    from tests.plugins.hanging_models import ALLOC_FAILURES

    config = _config(tmp_path / "run", models=(model,), metrics=("latency",), sweep=True,
                     rounds=1, threads=1)  # fmt: skip
    config = dataclasses.replace(config, batches=dataclasses.replace(config.batches,
                                                                     sweep_max_batch=8))
    result = runner.run(config)
    got = {(r.spec.mode, r.spec.batch_size): r for r in result.records}
    assert sorted(got) == [(m, b) for m in ("inference", "train") for b in (1, 2)]  # 4, 8: not tried
    for mode in ("inference", "train"):
        assert got[mode, 1].status == "ok"
        assert got[mode, 2].status == "oom"
        assert ALLOC_FAILURES[model] in got[mode, 2].reason  # the original message kept
    assert result.failed == ()  # what makes `cnnbench run` exit 1


def test_a_worker_reports_a_cuda_library_allocation_failure_as_oom():
    """Guards worker._main's ``is_out_of_memory(exc)`` (the CPU memory harness reads it)."""
    with pytest.raises(worker.WorkerError) as failed:
        worker.call_in_worker(_raise, "CUDNN_STATUS_ALLOC_FAILED")
    assert failed.value.oom and "CUDNN_STATUS_ALLOC_FAILED" in str(failed.value)
    with pytest.raises(worker.WorkerError) as failed:
        worker.call_in_worker(_raise, "CUDNN_STATUS_BAD_PARAM")
    assert not failed.value.oom


def _raise(message: str):
    raise RuntimeError(message)


# --- 2: the run folder's lock, a full disk, a resume with other settings -------------------------


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, capsys):
    """Guards runner._check_out_dir's ``held_by()`` check (without it the run writes beside the
    holder)."""
    out = tmp_path / "run"
    with RunStore(out).lock("cnnbench run --out first"):
        code, _, err = _cli(capsys, "run", "--profile", "smoke", "--models", "nin", "--metrics",
                            "params", "--out", str(out))  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and "another run is writing into this folder" in err
    assert f"pid {os.getpid()}" in err and "(cnnbench run --out first)" in err
    assert not (out / "results.jsonl").exists()


def test_the_runner_takes_the_lock_itself_and_rechecks_for_records(tmp_path):
    """Guards runner.run's ``store.lock(...)`` (two runs past preflight at once) and its
    ``has_records()`` check once it holds the lock."""
    from cnnbench.results.store import RunLocked

    out = tmp_path / "run"
    with RunStore(out).lock("cnnbench run --out first"), pytest.raises(RunLocked):
        runner.run(_config(out))
    runner.run(_config(out))
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(runner.RunRefused, match="another run wrote into it"):
        runner.run(_config(out))  # as if it passed preflight before the first run wrote
    assert (out / "results.jsonl").read_bytes() == before and not (out / "run.lock").exists()


def test_a_stale_lock_is_taken_over_and_the_run_says_so(tmp_path, capsys):
    """Guards runner.run's ``notify("warning", lock.warning)``."""
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": "h", "started_at": "t",
                                              "command_line": "cnnbench run --out old"}))  # fmt: skip
    code, _, err = _cli(capsys, "run", "--profile", "smoke", "--models", "nin", "--metrics",
                        "params", "--no-report", "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert f"took over the lock of pid {dead.pid}" in err.replace("\n", " ")
    assert len(RunStore(out).records()) == 1 and not (out / "run.lock").exists()


RESUMED = ["run", "--profile", "smoke", "--models", "nin,googlenet", "--metrics", "params",
           "--no-report"]  # fmt: skip


def test_a_full_disk_ends_the_run_with_one_line_and_whole_records(tmp_path, capsys, monkeypatch):
    """Guards cli._cmd_run's ``except StoreFull`` (else an OSError traceback)."""
    from cnnbench.cli import _resume_command
    from cnnbench.results import store

    written = []
    real = store._append_whole

    def fills_up(fd, line):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(line)
        real(fd, line)

    monkeypatch.setattr(store, "_append_whole", fills_up)
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *RESUMED, "--out", str(out))
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"cnnbench: {out / 'results.jsonl'}: no space left"), err
    assert "Traceback" not in err and line.endswith(f"resume with: {_resume_command(RESUMED, str(out))}")
    assert (out / "results.jsonl").read_bytes() == written[0]  # one whole record, nothing torn
    assert not (out / "run.lock").exists()  # the lock went with the run


def test_a_resume_with_other_measurement_settings_is_refused_naming_each(tmp_path, capsys):
    """Guards runner._check_resume's ``measurement_changes`` refusal."""
    out = tmp_path / "run"
    base = ["run", "--profile", "smoke", "--models", "nin", "--metrics", "params", "--no-report"]
    assert _cli(capsys, *base, "--threads", "1", "--out", str(out))[0] == 0
    before = (out / "results.jsonl").read_bytes()
    code, _, err = _cli(capsys, *base, "--threads", "2", "--label-smoothing", "0.1", "--models",
                        "nin,googlenet", "--resume", str(out))  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "--threads was 1, now 2" in err and "--label-smoothing was 0.0, now 0.1" in err
    assert "models" not in err.split("other settings")[1]  # the selection may change
    assert (out / "results.jsonl").read_bytes() == before


# --- 6: Dynamo is reset once per model, not once per unit ----------------------------------------


def test_compile_resets_dynamo_once_per_model(tmp_path, monkeypatch):
    """Guards runner._execute's ``workload.reset_compiler()`` per model and workload.compiled
    not resetting (12 resets for 12 compiled units before)."""
    import torch._dynamo

    from cnnbench.measure import harnesses, workload
    from cnnbench.measure.train import Unsupported

    resets, compiles = [], []
    for name in ("recompile_limit", "accumulated_recompile_limit", "fail_on_recompile_limit_hit"):
        monkeypatch.setattr(torch._dynamo.config, name, getattr(torch._dynamo.config, name))
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiles.append(m) or m)

    def measure_unit(spec, ctx):  # compile as the latency harness does, measure nothing
        workload.compiled(torch.nn.Identity())
        raise Unsupported("counting compiles only")

    harness = dataclasses.replace(harnesses.HARNESSES["latency"], measure_unit=measure_unit)
    monkeypatch.setitem(harnesses.HARNESSES, "latency", harness)
    config = _config(tmp_path, models=("nin", "googlenet"), metrics=("latency",),
                     batch_sizes=(1, 2, 4), compile=True)  # fmt: skip
    units = [u for m in config.models for u in runner.plan(config, m)]
    ctx = runner.Context(config)
    events = list(runner._execute(ctx, units))
    assert len(compiles) == 2 * 3 * 2  # models × batches × modes: every unit compiled
    assert len(resets) == 2  # once per model
    assert sum(kind == "record" for kind, _ in events) == 12
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # never silently eager


# --- 1: TF32 through torch's fp32_precision API ---------------------------------------------------


def test_setup_process_sets_tf32_through_the_new_api_and_flags_read_it_back(tmp_path):
    """Guards runner.setup_process's ``_device.set_tf32`` (in a fresh worker the legacy flags
    leave cuDNN's precisions at "none", inherited) and process_flags' ``**tf32_state()`` (a
    legacy read of cuDNN's flag raises once the new API is used)."""
    for enabled, value in ((False, "ieee"), (True, "tf32")):  # as env.json's worker_flags
        flags = worker.call_in_worker(runner._worker_flags, _config(tmp_path, tf32=enabled))
        assert flags["matmul_fp32_precision"] == flags["cudnn_conv_fp32_precision"] == value
        assert flags["cudnn_allow_tf32"] is flags["matmul_allow_tf32"] is enabled
    with _device.tf32_mode(False), warnings.catch_warnings():
        warnings.simplefilter("error")  # the legacy setters warn on some torch versions
        for enabled, value in ((True, "tf32"), (False, "ieee")):
            runner.setup_process(_config(tmp_path, tf32=enabled))
            flags = runner.process_flags()
            assert flags["matmul_allow_tf32"] is enabled and flags["cudnn_allow_tf32"] is enabled
            assert flags["matmul_fp32_precision"] == flags["cudnn_conv_fp32_precision"] == value
            assert torch.backends.cudnn.rnn.fp32_precision == value
            assert "float32_matmul_precision" not in flags


# --- 7: the peaks worker measures the device, without the memory cap -----------------------------


def test_the_peaks_worker_is_not_capped_and_model_workers_are(tmp_path, monkeypatch):
    """Guards runner._peaks_worker's ``memory_cap=False``."""
    caps = []
    monkeypatch.setattr(memory, "set_memory_cap", lambda cap, device: caps.append(cap))
    monkeypatch.setattr(runner, "_measure_peaks_here", lambda config: "peaks")
    config = _config(tmp_path, memory_cap_gb=0.5)
    with _device.tf32_mode(False):
        assert runner._peaks_worker(config) == "peaks"
        assert caps == []
        runner._worker_flags(config)  # set up as every model worker is
    assert caps == [2**29]


# --- 8: a worker imports what it measures with, not the CLI's console ----------------------------

_SCRIPT = """
from cnnbench.cli import main  # what the `cnnbench` console script does
if __name__ == "__main__":
    import time
    from cnnbench.measure.worker import call_in_worker
    from tests.plugins.hanging_models import loaded_modules
    names = ("cnnbench.runner", "cnnbench.report.console", "pandas", "cnnbench.analysis.frames")
    print(call_in_worker(loaded_modules, names))
    t0 = time.perf_counter()
    for _ in range(5):
        call_in_worker(loaded_modules, names)
    print((time.perf_counter() - t0) / 5)
"""


def test_a_worker_started_from_the_cnnbench_script_loads_no_report_code(tmp_path):
    """Guards worker._PRELOAD without cnnbench.cli and cli's lazy ``report.console`` import: a
    worker re-runs the console script as __mp_main__, which imports cnnbench.cli."""
    script = tmp_path / "cnnbench_script.py"
    script.write_text(_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded, start_s = done.stdout.strip().splitlines()[-2:]
    assert loaded == "['cnnbench.runner']"
    assert float(start_s) < 1.0  # a worker's start and return (~0.05 s idle; was ~0.8 s imports)
