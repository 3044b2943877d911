"""Run-folder faults (issue 23): two runs into one folder, a full disk, a damaged env.json, and a
resume with other settings. Each test names the line of cnnbench/results that it guards."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from cnnbench.config import make_config
from cnnbench.results import Record, RunStore, Spec
from cnnbench.results.resume import SELECTION_ONLY, SettingChange, measurement_changes
from cnnbench.results.store import CorruptEnv, CorruptStore, RunLocked, StoreError, StoreFull

GOOD = Record("params", Spec("nin", 224), "ok", {"params_total": 1})
OTHER = Record("params", Spec("googlenet", 96), "ok", {"params_total": 2})


# --- two runs into one folder: the lock ----------------------------------------------------------


def test_a_second_taker_is_refused_with_the_holder_named(tmp_path):
    store = RunStore(tmp_path / "run")
    with store.lock("cnnbench run --out run") as held:
        assert held.took_over is None  # a fresh folder: nobody to take over from
        with pytest.raises(RunLocked) as refused:
            RunStore(tmp_path / "run").lock("cnnbench run --out run --models nin")
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert "(cnnbench run --out run)" in message and str(tmp_path / "run") in message
        assert refused.value.holder.pid == os.getpid()
        assert store.held_by().command_line == "cnnbench run --out run"
        assert store.held_by() is not None  # the check took the lock for an instant only
    # released: the file is gone, nobody holds it, and the next taker finds nothing stale
    assert not store.lock_path.exists() and store.held_by() is None
    with store.lock() as again:
        assert again.took_over is None


_HOLD = """
import sys, time
from cnnbench.results import RunStore
lock = RunStore(sys.argv[1]).lock("cnnbench run --out held")
print("held", flush=True)
time.sleep(120)
"""


def test_a_holder_that_was_killed_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {child.pid} on "):
            RunStore(run).lock()
        os.kill(child.pid, signal.SIGKILL)  # no chance to release: only the OS lets go
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert RunStore(run).held_by() is None  # the lock file is still there, its flock is not
    with RunStore(run).lock("cnnbench run --resume run") as taken:
        assert taken.stale.pid == child.pid and taken.stale.command_line == "cnnbench run --out held"
        assert f"took over the lock of pid {child.pid}" in taken.took_over
        assert "that process is gone" in taken.took_over
        facts = json.loads(taken.path.read_text())
        assert facts["pid"] == os.getpid() and facts["command_line"] == "cnnbench run --resume run"


def test_a_taker_that_opened_the_file_as_its_holder_removed_it_locks_the_new_one(
    tmp_path, monkeypatch
):
    """Guards _flock_file's same-file check: a flock on a file already removed from the folder
    would lock nothing, and a third run would get in beside it."""
    store = RunStore(tmp_path)
    real_flock, calls = fcntl.flock, []

    def holder_lets_go_meanwhile(fd, op):
        calls.append(op)
        if len(calls) == 1:
            store.lock_path.unlink()  # the holder released between our open and our flock
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", holder_lets_go_meanwhile)
    with store.lock() as held:
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert len(calls) == 2  # the first file was let go, the second one locked
        assert os.stat(held.path).st_ino == os.fstat(held._fd).st_ino
        with pytest.raises(RunLocked):
            store.lock()


def test_without_flock_a_live_holder_on_this_host_is_still_refused(tmp_path, monkeypatch):
    """Lustre without -o flock and some FUSE mounts refuse flock (ENOSYS): the run goes on with
    a warning, and a lock file naming a live process of this host still refuses it."""

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    store = RunStore(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        facts = {"pid": sleeper.pid, "host": socket.gethostname(), "started_at": "earlier"}
        store.lock_path.write_text(json.dumps(facts))
        with pytest.raises(RunLocked, match=f"pid {sleeper.pid} on "):
            store.lock()
        assert store.held_by().pid == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.held_by() is None  # its pid is gone
    with store.lock() as taken:
        assert taken.stale.pid == sleeper.pid
        assert "this filesystem cannot lock files" in taken.warning
        assert f"took over the lock of pid {sleeper.pid}" in taken.warning


# --- a full disk ----------------------------------------------------------------------------------


def _full_after(monkeypatch, nbytes: int):
    """os.write that writes ``nbytes`` more bytes in all, then fails as a full disk does."""
    real_write, left = os.write, [nbytes]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_a_disk_full_in_the_middle_of_a_line_leaves_only_whole_records(tmp_path, monkeypatch):
    """Guards _append_whole's cut-back (os.ftruncate(fd, start))."""
    store = RunStore(tmp_path).create()
    store.append(GOOD)
    store.append(OTHER)
    before = store.results_path.read_bytes()
    with monkeypatch.context() as m:
        _full_after(m, len(GOOD.to_json()) // 2)  # half a line fits
        with pytest.raises(StoreFull) as full:
            store.append(Record("params", Spec("alexnet", 224), "ok", {"params_total": 3}))
    assert store.results_path.read_bytes() == before  # the half line was cut back
    assert store.records() == [GOOD, OTHER]
    exc = full.value
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert str(exc).startswith(f"{store.results_path}: no space left")
    assert "every record written before is kept whole" in str(exc) and "\n" not in str(exc)


def test_a_disk_full_at_fsync_takes_the_whole_line_back(tmp_path, monkeypatch):
    """ext4 and XFS may accept the write and report ENOSPC at fsync: the caller is told the
    record failed, so it must not stay in the file (a resume would skip it as done)."""
    store = RunStore(tmp_path).create()
    store.append(GOOD)
    before = store.results_path.read_bytes()
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real_fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        with pytest.raises(StoreFull, match="results.jsonl: no space left"):
            store.append(OTHER)
    assert store.results_path.read_bytes() == before


def test_short_writes_still_append_the_whole_line(tmp_path, monkeypatch):
    """Guards _write_all's loop: os.write may write fewer bytes than asked without an error."""
    store = RunStore(tmp_path).create()
    real_write = os.write
    with monkeypatch.context() as m:
        m.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
        store.append(GOOD)
        store.append(OTHER)
    assert store.records() == [GOOD, OTHER]
    assert store.results_path.read_text().count("\n") == 2


def test_env_json_is_never_half_written_on_a_full_disk(tmp_path, monkeypatch):
    """Guards write_env's temporary file and os.replace, and its cleanup of the temporary."""
    store = RunStore(tmp_path).create()
    store.write_env({"config": {"models": ["nin"]}, "note": "the first, whole"})
    before = store.env_path.read_bytes()
    with monkeypatch.context() as m:
        _full_after(m, 20)
        with pytest.raises(StoreFull) as full:
            store.write_env({"config": {"models": ["nin", "googlenet"]}, "note": "x" * 500})
    assert store.env_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.json", "results.jsonl"]
    assert str(full.value).startswith(f"{store.env_path}: no space left")


def test_another_write_error_is_one_line_naming_the_file_but_not_full(tmp_path, monkeypatch):
    store = RunStore(tmp_path).create()

    def broken(fd, data):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as m:
        m.setattr(os, "write", broken)
        with pytest.raises(StoreError) as failed:
            store.append(GOOD)
    assert not isinstance(failed.value, StoreFull) and failed.value.errno == errno.EIO
    assert str(failed.value) == (
        f"{store.results_path}: failed while appending a record ({os.strerror(errno.EIO)})"
    )
    assert store.results_path.read_bytes() == b""


# --- a damaged run folder -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "detail"), [
    ('{"device": "cpu", "config": {', "JSONDecodeError"),
    ("[1, 2]", "a JSON list, not an object"),
    (b"\xff\xfe{}", "UnicodeDecodeError"),
])  # fmt: skip
def test_a_damaged_env_json_is_refused_naming_the_file(tmp_path, text, detail):
    store = RunStore(tmp_path).create()
    (store.env_path.write_bytes if isinstance(text, bytes) else store.env_path.write_text)(text)
    before = store.env_path.read_bytes()
    with pytest.raises(CorruptEnv) as refused:
        store.read_env()
    assert isinstance(refused.value, CorruptStore)  # what the CLI already prints as one line
    assert str(refused.value).startswith(f"{store.env_path}: not a cnnbench env.json ({detail}")
    assert store.env_path.read_bytes() == before
    assert RunStore(tmp_path / "none").read_env() == {}


def _damaged_run(folder):
    store = RunStore(folder).create()
    store.append(GOOD)
    store.env_path.write_text('{"device": "cpu", "versions": {"torch": ')  # cut short
    return store


@pytest.mark.parametrize("command", ["report", "compare", "history"])
def test_report_compare_and_history_say_which_file_is_damaged(tmp_path, capsys, command):
    from cnnbench.cli import main

    bad = _damaged_run(tmp_path / "bad")
    argv = {
        "report": ["report", str(bad.root), "--out", str(tmp_path / "out")],
        "compare": ["compare", str(bad.root), str(bad.root), "--out", str(tmp_path / "out")],
        "history": ["history", "add", str(bad.root), "--db", str(tmp_path / "h.sqlite")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnbench: {bad.env_path}: not a cnnbench env.json (JSONDecodeError: ")
    assert err.count("\n") == 1 and "Traceback" not in err


# --- a resume with other settings ----------------------------------------------------------------


def _config(**given):
    top = {k: given.pop(k) for k in ("models", "metrics", "device", "profile", "out_dir")
           if k in given}  # fmt: skip
    base = dict(models=("nin",), metrics=("params", "latency"), device="cpu", profile="smoke",
                out_dir="runs/a")  # fmt: skip
    return make_config(**{**base, **top}, given=given, command_line="cnnbench run")


def _saved(tmp_path, config) -> dict:
    """The config as a run's env.json holds it (written and read back: tuples become lists)."""
    store = RunStore(tmp_path).create()
    store.write_env({"config": dataclasses.asdict(config)})
    return store.read_env()["config"]


def test_a_resume_with_the_same_measurement_settings_changes_nothing(tmp_path):
    saved = _saved(tmp_path, _config(seeds=(0, 1), threads=1))
    # another folder name, selection, batches and command line: the units differ, not how each
    # unit is measured
    resumed = dataclasses.replace(
        _config(seeds=(0, 1), threads=1, models=("nin", "googlenet"), metrics=("params",),
                batch_sizes=(1, 3), out_dir="copy"),
        resume=True, command_line="cnnbench run --resume copy",
    )  # fmt: skip
    assert measurement_changes(saved, resumed) == ()


def test_a_resume_with_other_measurement_settings_lists_each(tmp_path):
    saved = _saved(tmp_path, _config(threads=1))
    resumed = dataclasses.replace(_config(threads=2, rounds=5, dtype="bf16", epochs=3),
                                  isolation="none", resume=True)  # fmt: skip
    assert measurement_changes(saved, resumed) == (
        SettingChange("workload.dtype", "fp32", "bf16"),
        SettingChange("workload.threads", 1, 2),
        SettingChange("timing.rounds", 2, 5),  # smoke's 2 rounds
        SettingChange("train.epochs", 1, 3),  # smoke's 1 epoch
        SettingChange("isolation", "process", "none"),
    )
    # the same comparison from a plain dict of the config
    assert len(measurement_changes(saved, dataclasses.asdict(resumed))) == 5


def test_every_field_is_compared_unless_it_only_selects(tmp_path):
    config = _config()
    saved = _saved(tmp_path, config)
    fields = []
    for top, value in saved.items():
        fields += [f"{top}.{key}" for key in value] if isinstance(value, dict) else [top]
    assert SELECTION_ONLY <= set(fields)  # a misspelt name would guard nothing
    for name in fields:
        changed = json.loads(json.dumps(saved))
        section, _, key = name.partition(".")
        if key:
            changed[section][key] = "another value"
        else:
            changed[section] = "another value"
        found = [c.field for c in measurement_changes(changed, config)]
        assert found == ([] if name in SELECTION_ONLY else [name]), name


def test_a_field_the_saved_run_predates_is_not_compared(tmp_path):
    saved = _saved(tmp_path, _config())
    del saved["timing"]["rounds"]
    assert measurement_changes(saved, _config(rounds=9)) == ()
    assert measurement_changes({}, _config(rounds=9)) == ()
