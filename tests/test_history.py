"""The results history (issue 15): runs indexed into SQLite, idempotent and transactional adds,
refused files, concurrent writers in real processes, trends, figures in a browser, the CSV, and
``cnnbench run`` adding itself.

The run folders are made from the committed reference run (real records); expected values are
read from its results.jsonl as raw JSON, not through cnnbench's readers."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cnnbench.cli import main
from cnnbench.analysis.trend import step
from cnnbench.report.trend import series_table
from cnnbench.results import history
from tests import browser
from tests.history_runs import make_run, source_records

ROOT = Path(__file__).resolve().parent.parent

# how many values each metric's ok record adds (latency: median and images/s; memory: measured
# and analytic; accuracy: test accuracy and training time)
PER_RECORD = {"params": 1, "flops": 1, "minsize": 1, "roofline": 1, "latency": 2, "memory": 2,
              "accuracy": 2}  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _latency(records, model, batch, mode) -> dict:
    (r,) = [r for r in records if r["metric"] == "latency" and r["spec"]["model"] == model
            and r["spec"]["batch_size"] == batch and r["spec"]["mode"] == mode]  # fmt: skip
    return r["values"]


def test_a_run_is_indexed_with_its_values_statistics(tmp_path):
    run = make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00")
    db = tmp_path / "h.sqlite"
    assert main(["history", "add", str(run), "--db", str(db)]) == 0
    records = source_records()
    assert _rows(db, "SELECT count(*) FROM measurements")[0][0] == sum(PER_RECORD[r["metric"]] for r in records)
    (path, fp, commit, when), = _rows(db, "SELECT path, fingerprint_id, git_commit, collected_at FROM runs")  # fmt: skip
    # inside the history's folder the link is relative
    assert path == "a" and commit == "0" * 40 and when == "2026-11-28T10:00:00+00:00"
    assert len(fp) == 12 and int(fp, 16) >= 0
    # googlenet at batch 16: the median, its interval and the iterations, as the record has them
    raw = _latency(records, "googlenet", 16, "inference")
    (value, low, high, n, spread, lo_t, hi_t), = _rows(db, "SELECT value, ci_low, ci_high, n, spread, min, max "
        "FROM measurements WHERE model = 'googlenet' AND batch_size = 16 AND mode = 'inference' "
        "AND value_name = 'latency_ms_p50'")  # fmt: skip
    assert (value, low, high, n) == (raw["latency_ms_p50"], raw["latency_ms_p50_ci_low"],
                                     raw["latency_ms_p50_ci_high"], len(raw["times_ms"]))  # fmt: skip
    assert spread == raw["latency_ms_iqr"] and (lo_t, hi_t) == (min(raw["times_ms"]), max(raw["times_ms"]))
    # images/s is 16 images over the latency: its interval is the latency's, inverted
    (ips, ips_low, ips_high), = _rows(db, "SELECT value, ci_low, ci_high FROM measurements WHERE model = "
        "'googlenet' AND batch_size = 16 AND mode = 'inference' AND value_name = 'images_per_s'")  # fmt: skip
    assert ips == pytest.approx(16e3 / raw["latency_ms_p50"], rel=1e-6)
    assert ips_low == pytest.approx(16e3 / raw["latency_ms_p50_ci_high"]) and ips_high == pytest.approx(16e3 / raw["latency_ms_p50_ci_low"])  # fmt: skip
    # a count is exact; a one-seed accuracy has no interval
    (params,), = _rows(db, "SELECT value FROM measurements WHERE model = 'googlenet' AND value_name = 'params_total' AND image_size = 96")  # fmt: skip
    raw_params = [r for r in records if r["metric"] == "params" and r["spec"]["model"] == "googlenet"]
    assert params == raw_params[0]["values"]["params_total"] and isinstance(params, int)
    (acc, acc_low, seeds), = _rows(db, "SELECT value, ci_low, n FROM measurements WHERE model = 'googlenet' AND value_name = 'test_accuracy_mean'")  # fmt: skip
    raw_acc = [r for r in records if r["metric"] == "accuracy" and r["spec"]["model"] == "googlenet"][0]["values"]
    assert acc == raw_acc["test_accuracy_mean"] and seeds == len(raw_acc["seeds"]) == 1 and acc_low is None


def test_the_accuracy_interval_is_students_t_over_seeds(tmp_path):
    # three seeds: mean ± t(0.975, 2) × std / √3, with t = 4.302653 (a table value, not the code's)
    (acc,) = [r for r in source_records() if r["metric"] == "accuracy" and r["spec"]["model"] == "googlenet"]
    acc = json.loads(json.dumps(acc))
    first = acc["values"]["runs"][0]
    finals = [0.80, 0.82, 0.87]
    acc["values"]["runs"] = [{**first, "seed": i, "final_test_accuracy": a} for i, a in enumerate(finals)]
    acc["values"].update(seeds=[0, 1, 2], test_accuracy_mean=sum(finals) / 3)
    run = make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00", records=[acc])
    history.add_runs(tmp_path / "h.sqlite", [run])
    (mean, low, high, n, std), = _rows(tmp_path / "h.sqlite", "SELECT value, ci_low, ci_high, n, spread FROM measurements WHERE value_name = 'test_accuracy_mean'")  # fmt: skip
    m = sum(finals) / 3
    s = (sum((a - m) ** 2 for a in finals) / 2) ** 0.5
    assert n == 3 and std == pytest.approx(s) and mean == pytest.approx(m)
    assert (low, high) == pytest.approx((m - 4.302653 * s / 3**0.5, m + 4.302653 * s / 3**0.5))


def test_adding_a_run_twice_changes_nothing(tmp_path, capsys):
    run = make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00")
    db = tmp_path / "h.sqlite"
    assert main(["history", "add", str(run), "--db", str(db)]) == 0
    before = _sha(db)
    capsys.readouterr()
    assert main(["history", "add", str(run), "--db", str(db)]) == 0
    assert "known run" in capsys.readouterr().out and _sha(db) == before
    # the same run from another folder (moved): still one run, its link follows the folder;
    # outside the history's folder the link is absolute
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)
    db.rename(tmp_path / "elsewhere-db.sqlite")
    db = tmp_path / "hist" / "h.sqlite"
    db.parent.mkdir()
    (tmp_path / "elsewhere-db.sqlite").rename(db)
    assert main(["history", "add", str(moved), "--db", str(db)]) == 0
    assert _rows(db, "SELECT path FROM runs") == [(str(moved.resolve()),)]


def test_a_resumed_run_adds_what_it_measured_since_and_a_remeasured_value_replaces(tmp_path, capsys):
    records = source_records()
    early, late = records[::2], records[1::2]  # every other record, before and after the resume
    run = make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00", records=early)
    db = tmp_path / "h.sqlite"
    (first,) = history.add_runs(db, [run])
    # the resume: the rest of the records, one of the early ones measured again (2x slower), and
    # env.json's "resumed" list grown, as the runner writes it
    env = json.loads((run / "env.json").read_text())
    env["resumed"] = [{"collected_at": "2026-11-28T11:00:00+00:00", "git_commit": "f" * 40}]
    (run / "env.json").write_text(json.dumps(env))
    again = next(r for r in early if r["metric"] == "latency" and r["status"] == "ok")
    from tests.history_runs import slower

    with (run / "results.jsonl").open("a") as f:
        for r in [*late, slower(again, 2.0)]:
            f.write(json.dumps(r) + "\n")
    (second,) = history.add_runs(db, [run])
    assert second.known and second.run_id == first.run_id
    assert second.new == sum(PER_RECORD[r["metric"]] for r in late)
    assert second.updated == 2  # its latency and its images/s
    # one run still, and what the resume changed is said beside it
    assert _rows(db, "SELECT count(*) FROM runs") == [(1,)]
    assert _rows(db, "SELECT notes FROM runs") == [("resumed on commit ffffffff (began on 00000000)",)]
    sp = again["spec"]
    (value,), = _rows(db, "SELECT value FROM measurements WHERE metric = 'latency' AND model = ? AND "
                      "image_size = ? AND batch_size = ? AND mode = ? AND value_name = 'latency_ms_p50'",
                      sp["model"], sp["image_size"], sp["batch_size"], sp["mode"])  # fmt: skip
    assert value == pytest.approx(2 * again["values"]["latency_ms_p50"])


@pytest.mark.parametrize("kind", ["random bytes", "text", "another program's", "another program's, empty",
                                  "damaged", "newer"])  # fmt: skip
def test_a_file_that_is_not_a_usable_history_is_refused_and_left_unchanged(tmp_path, capsys, kind):
    run = make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00")
    db = tmp_path / "h.sqlite"
    if kind == "random bytes":
        db.write_bytes(os.urandom(8192))
        said = "not a cnnbench history (file is not a database)"
    elif kind == "text":
        db.write_text("model,latency\ngooglenet,12.7\n" * 100)
        said = "not a cnnbench history (file is not a database)"
    elif kind == "another program's":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (text)")
        con.commit()
        con.close()
        said = "another program's SQLite database, not a cnnbench history (application_id 0x0, holding notes)"
    elif kind == "another program's, empty":  # no tables, but marked by its program
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 7")
        con.close()
        said = "another program's SQLite database, not a cnnbench history (application_id 0x0, user_version 7)"
    elif kind == "damaged":  # a real history with one of its pages overwritten
        history.add_runs(db, [make_run(tmp_path / "b", when="2026-11-27T10:00:00+00:00")])
        page = _rows(db, "PRAGMA page_size")[0][0]
        with db.open("r+b") as f:
            f.seek(3 * page)
            f.write(b"\xa5" * page)
        said = "a damaged cnnbench history"
    else:
        history.add_runs(db, [make_run(tmp_path / "b", when="2026-11-27T10:00:00+00:00")])
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 99")
        con.close()
        said = "a history of a newer cnnbench (schema 99"
    before = _sha(db)
    for argv in (["history", "add", str(run)], ["history", "show"], ["history", "export"]):
        assert main([*argv, "--db", str(db)]) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "the file was left unchanged" in err and "Traceback" not in err
        assert _sha(db) == before
    # cnnbench run refuses it before measuring anything: no run folder appears
    out = tmp_path / "never"
    assert main(["run", "--models", "nin", "--metrics", "params", "--out", str(out), "--history", str(db)]) == 2
    assert said in capsys.readouterr().err and not out.exists() and _sha(db) == before


def test_an_add_is_all_or_nothing(tmp_path, capsys, monkeypatch):
    db = tmp_path / "h.sqlite"
    history.add_runs(db, [make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00")])
    before = _sha(db)
    b = make_run(tmp_path / "b", when="2026-11-29T10:00:00+00:00")
    c = make_run(tmp_path / "c", when="2026-11-30T10:00:00+00:00")
    # a folder that is not a readable run refuses the command before the file is touched
    (c / "results.jsonl").write_text((c / "results.jsonl").read_text() + "not json\n{}\n")
    assert main(["history", "add", str(b), str(c), "--db", str(db)]) == 2
    assert "not a cnnbench record" in capsys.readouterr().err and _sha(db) == before
    # a failure while writing the second run undoes the first one's rows too
    c = make_run(tmp_path / "c2", when="2026-11-30T10:00:00+00:00")
    real, calls = history._insert, []

    def insert_then_fail(con, run, now, path):
        calls.append(run.folder)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(con, run, now, path)

    monkeypatch.setattr(history, "_insert", insert_then_fail)
    with pytest.raises(OSError, match="disk full"):
        history.add_runs(db, [b, c])
    assert len(calls) == 2 and _sha(db) == before
    assert _rows(db, "SELECT count(*) FROM runs") == [(1,)]


_WRITER = """
import sys
from cnnbench.results import history
db, folders = sys.argv[1], sys.argv[2:]
print("started", flush=True)  # imports done: from here on it waits for the lock, if at all
for folder in folders:  # one transaction per folder: the two writers interleave
    history.add_runs(db, [folder])
print("done", len(folders))
"""


def test_two_concurrent_writers_keep_every_row(tmp_path):
    records = source_records()[:6]
    folders = [make_run(tmp_path / f"r{i}", when=f"2026-11-28T10:{i:02d}:00+00:00", records=records)
               for i in range(12)]  # fmt: skip
    db = tmp_path / "h.sqlite"
    history.add_runs(db, [folders[0]])  # made, with one run in it
    shared = folders[1]  # added by both writers: it must still be one run
    mine = [[shared, *folders[2:7]], [shared, *folders[7:12]]]
    # a third connection holds the write lock while both writers start: each must wait for it
    # (and then for the other), not fail and not lose a row
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), *map(str, f)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in mine]  # fmt: skip
    for p in procs:
        assert p.stdout.readline().strip() == "started", p.stderr.read()[-2000:]
    time.sleep(2.0)  # both are now inside add_runs, blocked on the holder's lock
    assert all(p.poll() is None for p in procs), "a writer did not wait for the lock"
    holder.execute("COMMIT")
    holder.close()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        assert "done 6" in out
    per_run = sum(PER_RECORD[r["metric"]] for r in records)
    assert _rows(db, "SELECT count(*) FROM runs") == [(12,)]
    assert _rows(db, "SELECT count(*) FROM measurements") == [(12 * per_run,)]
    assert _rows(db, "PRAGMA integrity_check") == [("ok",)]


def _history(tmp_path, factors=(1.0, 1.01, 0.99, 1.0, 1.3)) -> Path:
    """Runs a day apart on one machine with latencies x ``factors`` (by default four calm runs,
    then one 30% slower), and one on a CPU of another family, 2x faster, in between."""
    db = tmp_path / "h.sqlite"
    runs = [make_run(tmp_path / f"r{i}", when=f"2026-11-{20 + i}T10:00:00+00:00", factor=f,
                     commit=f"{i}" * 40) for i, f in enumerate(factors)]  # fmt: skip
    runs.append(make_run(tmp_path / "z", when="2026-11-21T12:00:00+00:00", factor=0.5, family=26))
    history.add_runs(db, runs)
    return db


def _row(v, lo, hi, status="ok", **extra):
    return {"status": status, "value": v, "ci_low": lo, "ci_high": hi, **extra}


def test_the_verdict_needs_the_interval_the_minimum_effect_and_the_drift():
    base = [_row(100.0, 98.0, 102.0)]
    # overlapping intervals, or disjoint but within the 5% minimum effect: not called
    assert step(base, _row(101.0, 99.0, 103.0), "lower").verdict == "not resolved"
    assert step(base, _row(103.5, 102.5, 104.5), "lower").verdict == "not resolved"
    # beyond the interval with one or two earlier runs: called, but the drift between runs is
    # unknown, so the call says so and is not judged (a gate does not count it)
    s = step(base, _row(90.0, 89.0, 91.0), "lower")
    assert s.verdict == "better (1 earlier run: drift between runs unknown)" and not s.judged
    s = step(base * 2, _row(90.0, 89.0, 91.0), "higher")
    assert s.worse and s.verdict.startswith("worse (2 earlier runs") and not s.judged
    # three calm earlier runs: a 20% slowdown is outside their drift, judged
    calm = [_row(100.0, 98, 102), _row(101.0, 99, 103), _row(99.0, 97, 101)]
    s = step(calm, _row(120.0, 118.0, 122.0), "lower")
    assert (s.verdict, s.judged, round(s.change, 4)) == ("worse", True, 0.2)
    # earlier runs that drift by ±15% run to run, each tight: 30% more is inside their drift
    # (log centres 0, .140, -.105, .095: t(3) x sd x √(1 + 1/4) = 0.398 > |ln 1.3 − mean| = 0.23)
    drifting = [_row(100.0, 99, 101), _row(115.0, 114, 116), _row(90.0, 89, 91), _row(110.0, 109, 111)]
    assert step(drifting, _row(130.0, 129.0, 131.0), "lower").verdict == "not resolved"
    # one noisy earlier run does not hide a change: the typical interval is the bounds' median
    noisy = [_row(100.0, 98, 102), _row(100.0, 95, 135), _row(100.0, 98, 102)]
    assert step(noisy, _row(130.0, 128.0, 132.0), "lower").verdict == "worse"
    # the reference is the five runs before: an outlier six runs back is out of it
    window = [_row(500.0, 490, 510)] + [_row(100.0 + i % 2, 98 + i % 2, 102 + i % 2) for i in range(5)]
    s = step(window, _row(130.0, 128.0, 132.0), "lower")
    assert s.reference == 100.0 and s.verdict == "worse"
    s = step(window[1:] + [_row(500.0, 490, 510)], _row(130.0, 128.0, 132.0), "lower")
    assert s.reference == 101.0  # the outlier now inside: the median moves, the drift grows
    assert s.verdict == "not resolved"
    # statuses, and a failure between does not hide a slowdown after it
    assert step(base, _row(None, None, None, "oom"), "lower").worse
    assert step([_row(None, None, None, "oom")], _row(100.0, 98, 102), "lower").verdict == "oom → ok"
    s = step([*calm, _row(None, None, None, "error")], _row(200.0, 198, 202), "lower")
    assert s.verdict == "worse (after error)" and s.judged
    assert step(base, _row(None, None, None), "lower").verdict == "no value"
    assert step(base, _row(110.0, None, None), "lower").verdict == "no interval"
    # a count: any change, however small, and judged
    s = step([_row(5_977_530, None, None)], _row(5_978_530, None, None), "exact")
    assert (s.verdict, s.worse, s.judged) == ("changed", True, True)


def test_history_show_calls_a_slowdown_beyond_the_noise_and_never_across_machines(tmp_path, capsys):
    db = _history(tmp_path)
    table = series_table(history.read(db, metric="latency_ms_p50", models=["googlenet"]))
    raw = _latency(source_records(), "googlenet", 16, "inference")
    # the precondition, from the raw record: 1.3x lies above every earlier run's interval
    assert 1.3 * raw["latency_ms_p50_ci_low"] > 1.01 * raw["latency_ms_p50_ci_high"]
    rows = table[(table.batch == 16) & (table["mode"] == "inference")].to_dict("records")
    assert len(rows) == 2  # one series per machine
    same, other = rows
    # against the median of the four earlier runs (1.0, 1.01, 0.99, 1.0 → 1.0): +30.0%
    assert (same["runs"], same["verdict"], same["change"]) == (5, "worse", "+30.0%")
    assert same["_worse"] and same["_judged"] and same["commit"] == "4" * 8 and same["trend"] == "▁▁▁▁█"
    assert (other["runs"], other["verdict"]) == (1, "first run")  # 2x faster elsewhere: no call
    counts = series_table(history.read(db, metric="params"))
    assert set(counts["verdict"]) == {"same", "first run"} and set(counts["change"]) == {"+0", "—"}
    assert main(["history", "show", "--db", str(db), "--metric", "latency", "--model", "googlenet"]) == 0
    out = capsys.readouterr().out
    assert "! worse" in out and "latency_ms_p50 (ms, lower is better)" in out
    # the gate: the 1.3x run fails it, not at a 35% threshold
    gate = ["history", "show", "--db", str(db), "--metric", "latency_ms_p50", "--model", "googlenet",
            "--out", str(tmp_path / "g"), "--fail-on"]  # fmt: skip
    assert main([*gate, "regression"]) == 1
    err = capsys.readouterr().err
    assert "regression: latency_ms_p50 googlenet 96px b16 inference on " in err and "(+30.0%, worse)" in err
    assert main([*gate, "regression:35%"]) == 0
    # calm runs pass; a history too short to know the drift does not fail, and says so
    assert main(["history", "show", "--db", str(_history(tmp_path / "calm", (1.0, 1.01, 0.99, 1.0))),
                 "--out", str(tmp_path / "c"), "--fail-on", "regression"]) == 0  # fmt: skip
    short = _history(tmp_path / "short", (1.0, 1.3))
    assert main(["history", "show", "--db", str(short), "--out", str(tmp_path / "s"), "--metric",
                 "latency_ms_p50", "--fail-on", "regression"]) == 0  # fmt: skip
    assert "call(s) with fewer than 3 earlier runs (drift unknown)" in capsys.readouterr().err


def test_the_gate_fails_on_a_changed_count_and_only_for_the_newest_run(tmp_path, capsys):
    records = source_records()
    grown = [json.loads(json.dumps(r)) for r in records]
    for r in grown:
        if r["metric"] == "params" and r["spec"]["model"] == "googlenet":
            r["values"]["params_total"] += 1000  # 0.02%: far below any threshold, still a change
    db = tmp_path / "h.sqlite"
    history.add_runs(db, [make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00"),
                          make_run(tmp_path / "b", when="2026-11-29T10:00:00+00:00", records=grown)])  # fmt: skip
    gate = ["history", "show", "--db", str(db), "--out", str(tmp_path / "o"), "--metric", "params"]
    assert main([*gate, "--fail-on", "regression:50%"]) == 1
    assert "(+1,000, changed)" in capsys.readouterr().err
    # a newer run that measured only alexnet: googlenet's change is history, not news
    alex = [r for r in records if r["spec"]["model"] == "alexnet"]
    history.add_runs(db, [make_run(tmp_path / "c", when="2026-11-30T10:00:00+00:00", records=alex)])
    assert main([*gate, "--fail-on", "regression"]) == 0


def test_runs_added_out_of_time_order_read_in_time_order(tmp_path):
    db_a, db_b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    runs = [make_run(tmp_path / f"r{i}", when=f"2026-11-2{i}T10:00:00+0{i}:00", factor=1 + i / 10)
            for i in range(3)]  # fmt: skip
    history.add_runs(db_a, runs)
    for run in reversed(runs):
        history.add_runs(db_b, [run])
    a, b = history.read(db_a), history.read(db_b)
    cols = ["collected_at", "metric", "model", "value_name", "value"]
    assert a[cols].equals(b[cols])
    assert a["collected_at"].iloc[0] == "2026-11-20T10:00:00+00:00"
    assert set(b["collected_at"]) == {"2026-11-20T10:00:00+00:00", "2026-11-21T09:00:00+00:00",
                                      "2026-11-22T08:00:00+00:00"}  # UTC, from +01:00 and +02:00


def test_a_write_cut_short_by_a_killed_process_is_rolled_back_not_refused(tmp_path, capsys):
    db = _history(tmp_path, (1.0, 1.1))
    before = _rows(db, "SELECT count(*) FROM measurements")
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "con.execute('PRAGMA cache_size = 2')\n"  # a tiny cache: the delete reaches the file
        "con.execute('BEGIN IMMEDIATE')\n"
        "con.execute('DELETE FROM measurements')\n"
        "os._exit(9)\n"), str(db)], capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == 9 and Path(f"{db}-journal").exists()  # the write left half done
    assert main(["history", "export", "--db", str(db), "--out", str(tmp_path / "e.csv")]) == 0
    assert _rows(db, "SELECT count(*) FROM measurements") == before


def test_scaling_values_are_followed_by_kind_and_world_size(tmp_path):
    lines = (ROOT / "reports" / "cpu-scaling" / "results.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    scaling = [r for r in records if r["metric"] == "scaling" and r["status"] == "ok"]
    assert scaling
    db = tmp_path / "h.sqlite"
    history.add_runs(db, [make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00", records=scaling)])
    names = {v for (v,) in _rows(db, "SELECT value_name FROM measurements WHERE model = ?", scaling[0]["spec"]["model"])}
    points = scaling[0]["values"]["points"]
    expected = {f"step_ms_p50_{p['kind']}_w{p['world_size']}" for p in points}
    expected |= {f"efficiency_{p['kind']}_w{p['world_size']}" for p in points if p["world_size"] > 1}
    assert names == expected
    # a later run whose scaling failed: its rows carry the names its configuration had
    failed = [dict(r, status="error", reason="RankFailed: rank 1 of 2 failed", values={}) for r in scaling]
    history.add_runs(db, [make_run(tmp_path / "b", when="2026-11-29T10:00:00+00:00", records=failed)])
    table = series_table(history.read(db, models=[scaling[0]["spec"]["model"]]))
    assert set(table["value"]) == expected and set(table["verdict"]) == {"ok → error"}
    # a first run whose scaling failed has one row, "efficiency"; when a resume measures it, the
    # run's rows become the measured ones and that row goes
    db2 = tmp_path / "h2.sqlite"
    run = make_run(tmp_path / "c", when="2026-11-30T10:00:00+00:00", records=failed)
    history.add_runs(db2, [run])
    assert {v for (v,) in _rows(db2, "SELECT value_name FROM measurements")} == {"efficiency"}
    with (run / "results.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in scaling)
    (again,) = history.add_runs(db2, [run])
    assert again.removed == len(scaling) and again.new == len(expected) * len(scaling)
    assert {v for (v,) in _rows(db2, "SELECT value_name FROM measurements")} == expected


@pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.MISSING)
def test_the_trend_figures_load_in_a_browser_inside_their_report(tmp_path):
    db = _history(tmp_path)
    # a run whose googlenet latency ran out of memory: a mark on the figure, a status in the table
    oom = [dict(r, status="oom", reason="not enough memory", values={})
           if r["metric"] == "latency" and r["spec"]["model"] == "googlenet" else r for r in source_records()]  # fmt: skip
    history.add_runs(db, [make_run(tmp_path / "d", when="2026-12-01T10:00:00+00:00", records=oom)])
    out = tmp_path / "report"
    assert main(["history", "show", "--db", str(db), "--out", str(out)]) == 0
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    values = {v for (v,) in _rows(db, "SELECT DISTINCT value_name FROM measurements")}
    assert figures == sorted(f"trend_{v}.png" for v in values)
    check, stderr = browser.load(out / "history.html", tmp_path)
    assert check["errors"] == [] and "Uncaught" not in stderr
    assert len(check["imgs"]) == len(figures) and all(w and w > 0 for w in check["imgs"])
    md = (out / "history.md").read_text()
    assert "| oom |" in md and "ok → oom" in md
    trend = pd.read_csv(out / "trend.csv")
    assert set(trend["machine"]) == set(v for (v,) in _rows(db, "SELECT DISTINCT hardware_id FROM runs"))


def test_history_export_writes_one_tidy_row_per_value(tmp_path, capsys):
    db = _history(tmp_path)
    target = tmp_path / "out" / "h.csv"
    assert main(["history", "export", "--db", str(db), "--out", str(target)]) == 0
    frame = pd.read_csv(target, dtype={"git_commit": str})
    assert len(frame) == _rows(db, "SELECT count(*) FROM measurements")[0][0]
    for col in ("collected_at", "git_commit", "fingerprint_id", "machine", "path", "metric", "model",
                "image_size", "batch_size", "dtype", "mode", "value_name", "status", "value", "ci_low",
                "ci_high", "n"):  # fmt: skip
        assert col in frame.columns, col
    raw = _latency(source_records(), "alexnet", 1, "inference")
    row = frame[(frame.path == "r0") & (frame.model == "alexnet") & (frame.batch_size == 1)
                & (frame.value_name == "latency_ms_p50")]  # fmt: skip
    assert row["value"].tolist() == [raw["latency_ms_p50"]]
    assert frame.groupby("run_id")["collected_at"].nunique().eq(1).all()


@pytest.mark.slow
def test_cnnbench_run_adds_itself_to_a_configured_history(tmp_path, monkeypatch, capsys):
    from cnnbench import models

    db = tmp_path / "h.sqlite"
    monkeypatch.setenv(history.HISTORY_ENV, str(db))
    out = tmp_path / "run"
    assert main(["run", "--profile", "smoke", "--models", "nin", "--metrics", "params,flops",
                 "--threads", "1", "--out", str(out), "--no-report"]) == 0  # fmt: skip
    assert "new run" in capsys.readouterr().out
    expected = sum(p.numel() for p in models.create("nin").parameters())
    rows = _rows(db, "SELECT value, status FROM measurements WHERE value_name = 'params_total'")
    assert rows == [(expected, "ok")]
    # history show and export default to $CNNBENCH_HISTORY
    assert main(["history", "export", "--out", str(tmp_path / "h.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "h.csv")) == 2  # params_total, gmacs


def test_what_a_user_can_get_wrong_is_refused_or_kept_safe(tmp_path, capsys):
    runs = tmp_path / "runs"
    db = runs / "history.sqlite"
    a = make_run(runs / "a", when="2026-11-28T10:00:00+00:00")
    assert main(["history", "add", str(a), "--db", str(db)]) == 0
    assert main(["history", "show", "--db", str(db)]) == 0  # its report: runs/history/
    # the README's `history add runs/*/` then skips that report instead of refusing everything
    b = make_run(runs / "b", when="2026-11-29T10:00:00+00:00")
    capsys.readouterr()
    assert main(["history", "add", *map(str, sorted(runs.glob("*/"))), "--db", str(db)]) == 0
    out = capsys.readouterr()
    assert "a history report (history show --out), not a run" in out.err and f"{b}: new run" in out.out
    # export onto the history file itself is refused, the file intact
    before = _sha(db)
    assert main(["history", "export", "--db", str(db), "--out", str(db)]) == 2
    assert "is the history file itself" in capsys.readouterr().err and _sha(db) == before
    # a run without a readable start time cannot be placed on a trend
    bad = make_run(tmp_path / "bad", when="yesterday")
    assert main(["history", "add", str(bad), "--db", str(db)]) == 2
    assert "collected_at 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err
    # a partial copy of a known run (its first records only) forgets none of the run's values
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "env.json").write_text((a / "env.json").read_text())
    (partial / "results.jsonl").write_text("".join((a / "results.jsonl").read_text().splitlines(True)[:3]))
    count = _rows(db, "SELECT count(*) FROM measurements")
    (added,) = history.add_runs(db, [partial])
    assert added.known and added.removed == 0 and _rows(db, "SELECT count(*) FROM measurements") == count
    assert main(["history", "show", "--db", str(db), "--last", str(10**30), "--out", str(tmp_path / "o")]) == 0


def test_edges_of_the_statistics_the_window_and_the_gate(tmp_path, capsys):
    # an accuracy's n counts the seeds that finished, not the diverged one
    (acc,) = [r for r in source_records() if r["metric"] == "accuracy" and r["spec"]["model"] == "googlenet"]
    acc = json.loads(json.dumps(acc))
    first = acc["values"]["runs"][0]
    acc["values"]["runs"] = [{**first, "seed": 0, "final_test_accuracy": 0.8},
                             {**first, "seed": 1, "final_test_accuracy": 0.82},
                             {**first, "seed": 2, "final_test_accuracy": None, "diverged": True}]  # fmt: skip
    acc["values"].update(seeds=[0, 1, 2], diverged_seeds=[2], test_accuracy_mean=0.81)
    history.add_runs(tmp_path / "acc.sqlite", [make_run(tmp_path / "acc", when="2026-11-28T10:00:00+00:00", records=[acc])])
    assert _rows(tmp_path / "acc.sqlite", "SELECT n FROM measurements WHERE value_name = 'test_accuracy_mean'") == [(2,)]
    # the drift's prediction interval uses Student's t with n - 1 = 2 degrees of freedom: three
    # runs at 100, 103, 97 (log sd 0.0300) give ±4.303 x 0.0300 x √(4/3) = ±0.149; +14% (ln 0.131)
    # lies inside it (t(3) = 3.182 would give ±0.110 and call it), +25% (ln 0.223) outside
    runs3 = [_row(100.0, 99, 101), _row(103.0, 102, 104), _row(97.0, 96, 98)]
    assert step(runs3, _row(114.0, 113.0, 115.0), "lower").verdict == "not resolved"
    assert step(runs3, _row(125.0, 124.0, 126.0), "lower").verdict == "worse"
    # the latest interval's own bounds: a wide interval reaching back over the earlier one is no call
    assert step([_row(100.0, 98, 102)], _row(110.0, 95.0, 125.0), "lower").verdict == "not resolved"
    # --last N: the N newest runs
    db = _history(tmp_path / "h")
    newest = [r for (r,) in _rows(db, "SELECT run_id FROM runs ORDER BY collected_at DESC LIMIT 2")]
    assert set(history.read(db, last=2)["run_id"]) == set(newest)
    assert main(["history", "show", "--db", str(db), "--last", "2", "--metric", "latency_ms_p50",
                 "--out", str(tmp_path / "l")]) == 0  # fmt: skip
    trend = pd.read_csv(tmp_path / "l" / "trend.csv")
    assert set(trend["runs"]) == {2} and trend["machine"].nunique() == 1  # r3, r4: one machine
    # a 0% threshold is a gate (every judged call), not no gate
    assert main(["history", "show", "--db", str(db), "--out", str(tmp_path / "z"), "--metric",
                 "latency_ms_p50", "--fail-on", "regression:0"]) == 1  # fmt: skip


def test_compare_counts_a_slowdown_only_beyond_the_threshold_and_not_one_failure_for_another():
    from cnnbench.analysis.compare import regressions

    row = {"metric": "latency", "value": "latency_ms_p50", "significant": True, "A": 10.0, "B": 10.5}
    frame = pd.DataFrame([{**row, "change": 0.05}], dtype=object)
    assert regressions(frame, 0.05).empty and len(regressions(frame, 0.049)) == 1
    failed = pd.DataFrame([{**row, "value": "status", "A": "error", "B": "oom", "change": None}], dtype=object)
    assert regressions(failed, 0.05).empty


def test_a_failed_training_without_a_set_lr_names_the_chapter_rate_not_lr_0():
    """A failed record has no result to read its rate from; a run that left each model its
    chapter rate (train.lr None) must not be described as trained at lr 0."""
    from cnnbench.results import Record, Spec
    from cnnbench.results.history import _options

    train = {"epochs": 1, "train_subset": 4000, "optimizer": "sgd", "lr": None, "momentum": 0.0,
             "label_smoothing": 0.0, "test_subset": 2000}  # fmt: skip
    acc = Record.failed("accuracy", Spec("nin", 72, 16, mode="train"), "error", "boom")
    step = Record.failed("latency", Spec("nin", 224, 16, mode="train"), "error", "boom")
    for record in (acc, step):
        words = _options({}, record, train)
        assert "chapter lr" in words and "lr 0" not in words and "sgd 0" not in words, words
    set_lr = _options({}, step, {**train, "lr": 0.05})
    assert "step sgd 0.05" in set_lr, set_lr
