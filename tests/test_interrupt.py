"""A real run killed (SIGKILL) or interrupted (SIGINT, as Ctrl-C sends it to the terminal's
process group) in the middle, then resumed: nothing finished is lost, nothing is measured twice,
and the resumed run is complete."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnbench.results import load_records

# one batch: what is kept and what is measured again do not depend on how many batches there are
RUN = ["run", "--profile", "smoke", "--models", "nin,googlenet", "--metrics", "params,flops,latency",
       "--batch-sizes", "1", "--threads", "1", "--no-report"]  # fmt: skip
# per model: params, flops, latency at batch 1 in two modes; googlenet's FLOPs also at 224, the
# equal resolution (nin's own size is 224)
UNITS = 2 * (2 + 2 * 1) + 1


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnbench", *RUN, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a job in a terminal
        # Ctrl-C's default action, as in a terminal: a shell's background job (how CI may be
        # started) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= n:
            return text
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} records after {timeout_s} s")


def _alive_in_group(pgid: int, grace_s: float = 10.0) -> list[str]:
    """Processes of the group still running after a grace period (zombies have ended: they only
    wait for init to reap them)."""
    deadline = time.monotonic() + grace_s
    while True:
        ps = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(pgid)], capture_output=True,
                            text=True).stdout.splitlines()  # fmt: skip
        alive = [line for line in ps if line.strip() and not line.lstrip().startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _resume_and_check(out: Path, before: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cnnbench", *RUN, "--resume", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    text = (out / "results.jsonl").read_text()
    assert text.startswith(before.rsplit("\n", 1)[0])  # every finished line is still there
    everything = load_records(out / "results.jsonl", latest_only=False)
    keys = [r.key for r in everything]
    assert len(keys) == len(set(keys)) == UNITS  # complete, and nothing measured twice
    assert all(r.status == "ok" for r in everything)
    assert json.loads((out / "env.json").read_text())["resumed"]


@pytest.mark.slow
def test_kill_9_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    out = tmp_path / "killed"
    proc = _start(out)
    before = _wait_for_lines(out / "results.jsonl", 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    after = (out / "results.jsonl").read_text()
    assert after.startswith(before)  # every record written before the kill survived it
    assert len(load_records(out / "results.jsonl")) >= 3
    _resume_and_check(out, after)


@pytest.mark.slow
def test_ctrl_c_ends_workers_exits_130_and_resume_completes(tmp_path):
    out = tmp_path / "interrupted"
    proc = _start(out)
    _wait_for_lines(out / "results.jsonl", 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert "interrupted" in stderr
    assert _alive_in_group(proc.pid) == []  # no worker of that run is left behind
    after = (out / "results.jsonl").read_text()
    assert after.count("\n") >= 3
    _resume_and_check(out, after)
