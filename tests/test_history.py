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
from cnnbench.report.trend import series_table, step
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
    assert path == "a" and commit == "0" * 40  # inside the history's folder: relative and when == "2026-11-28T10:00:00+00:00"
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
    # three seeds: mean ± t(0.975, 2) × std / √3, with t = 4.303 (a table value, not the code's)
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
    assert (low, high) == pytest.approx((m - 4.303 * s / 3**0.5, m + 4.303 * s / 3**0.5))


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
    env["resumed"] = [{"collected_at": "2026-11-28T11:00:00+00:00"}]
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
    assert _rows(db, "SELECT count(*) FROM runs") == [(1,)]
    sp = again["spec"]
    (value,), = _rows(db, "SELECT value FROM measurements WHERE metric = 'latency' AND model = ? AND "
                      "image_size = ? AND batch_size = ? AND mode = ? AND value_name = 'latency_ms_p50'",
                      sp["model"], sp["image_size"], sp["batch_size"], sp["mode"])  # fmt: skip
    assert value == pytest.approx(2 * again["values"]["latency_ms_p50"])


@pytest.mark.parametrize("kind", ["random bytes", "text", "another program's", "damaged", "newer"])
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
        said = "another program's SQLite database, not a cnnbench history (application_id 0x0, tables notes)"
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
    time.sleep(3.0)
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


def _four_runs(tmp_path) -> Path:
    """Three runs on one machine (the second 1% slower, the third 30% slower) and one on a CPU
    of another family, 2x faster, in between."""
    db = tmp_path / "h.sqlite"
    runs = [make_run(tmp_path / "a", when="2026-11-28T10:00:00+00:00", commit="a" * 40),
            make_run(tmp_path / "b", when="2026-11-29T10:00:00+00:00", factor=1.01, commit="b" * 40),
            make_run(tmp_path / "z", when="2026-11-29T12:00:00+00:00", factor=0.5, family=26),
            make_run(tmp_path / "c", when="2026-11-30T10:00:00+00:00", factor=1.3, commit="c" * 40)]  # fmt: skip
    history.add_runs(db, runs)
    return db


def test_history_show_calls_a_slowdown_beyond_the_intervals_and_never_across_machines(tmp_path, capsys):
    db = _four_runs(tmp_path)
    table = series_table(history.read(db, metric="latency_ms_p50", models=["googlenet"]))
    raw = _latency(source_records(), "googlenet", 16, "inference")
    # the precondition, from the raw record: 1.01x overlaps the base interval, 1.3x does not
    low, high = raw["latency_ms_p50_ci_low"], raw["latency_ms_p50_ci_high"]
    assert 1.01 * low < high and 1.3 * low > 1.01 * high
    rows = table[(table.batch == 16) & (table["mode"] == "inference")].to_dict("records")
    assert len(rows) == 2  # one series per machine
    same, other = rows
    # against the median of the two earlier runs (1.0x and 1.01x): +29.4%, outside both intervals
    assert (same["runs"], same["verdict"], same["change"]) == (3, "worse", f"{100 * (1.3 / 1.005 - 1):+.1f}%")
    assert same["_worse"] and same["commit"] == "c" * 8 and same["trend"] == "▁▁█"
    assert (other["runs"], other["verdict"]) == (1, "first run")  # 2x faster elsewhere: no call
    run = lambda v, lo, hi, status="ok": {"status": status, "value": v, "ci_low": lo, "ci_high": hi}  # noqa: E731
    base = [run(100.0, 98.0, 102.0)]
    # overlapping intervals, or disjoint but within the 5% minimum effect: not called
    assert step(base, run(101.0, 99.0, 103.0), "lower").verdict == "within noise"
    assert step(base, run(103.5, 102.5, 104.5), "lower").verdict == "within noise"
    # beyond both, against one earlier run: called, and it says on how little
    assert step(base, run(90.0, 89.0, 91.0), "lower").verdict == "better, 1 earlier run"
    assert step(base, run(90.0, 89.0, 91.0), "higher").verdict == "worse, 1 earlier run"
    # above the run before but inside an older run's interval: the spread between runs, not a call
    wide = [run(100.0, 97.0, 112.0), run(100.0, 98.0, 102.0)]
    assert step(wide, run(108.0, 106.0, 110.0), "lower").verdict == "within noise"
    assert step(wide, run(120.0, 118.0, 122.0), "lower").verdict == "worse"
    assert step(base, run(110.0, None, None), "lower").verdict == "no interval"
    assert step(base, run(None, None, None, "oom"), "lower").worse
    assert step([run(None, None, None, "oom")], run(100.0, 98.0, 102.0), "lower").verdict == "oom → ok"
    # counts: the same in every run
    counts = series_table(history.read(db, metric="params"))
    assert set(counts["verdict"]) == {"same", "first run"}
    assert main(["history", "show", "--db", str(db), "--metric", "latency", "--model", "googlenet"]) == 0
    out = capsys.readouterr().out
    assert "! worse" in out and "latency_ms_p50 (ms, lower is better)" in out
    # the gate: the 1.3x run fails it, not at a 35% threshold, and a history ending in 1.01x passes
    gate = ["history", "show", "--db", str(db), "--metric", "latency_ms_p50", "--model", "googlenet",
            "--out", str(tmp_path / "g"), "--fail-on"]  # fmt: skip
    assert main([*gate, "regression"]) == 1
    err = capsys.readouterr().err
    assert "regression: latency_ms_p50 googlenet 96px b16 inference on " in err and "(+29.4%, worse)" in err
    assert main([*gate, "regression:35%"]) == 0
    calm = tmp_path / "calm"
    calm.mkdir()
    history.add_runs(calm / "h.sqlite", [tmp_path / "a", tmp_path / "b"])  # 1.0x, then 1.01x
    assert main(["history", "show", "--db", str(calm / "h.sqlite"), "--out", str(calm / "r"),
                 "--fail-on", "regression"]) == 0  # fmt: skip


@pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.MISSING)
def test_the_trend_figures_load_in_a_browser_inside_their_report(tmp_path):
    db = _four_runs(tmp_path)
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
    assert set(trend["machine"]) == set(v for (v,) in _rows(db, "SELECT DISTINCT fingerprint_id FROM runs"))


def test_history_export_writes_one_tidy_row_per_value(tmp_path, capsys):
    db = _four_runs(tmp_path)
    target = tmp_path / "out" / "h.csv"
    assert main(["history", "export", "--db", str(db), "--out", str(target)]) == 0
    frame = pd.read_csv(target)
    assert len(frame) == _rows(db, "SELECT count(*) FROM measurements")[0][0]
    for col in ("collected_at", "git_commit", "fingerprint_id", "machine", "path", "metric", "model",
                "image_size", "batch_size", "dtype", "mode", "value_name", "status", "value", "ci_low",
                "ci_high", "n"):  # fmt: skip
        assert col in frame.columns, col
    raw = _latency(source_records(), "alexnet", 1, "inference")
    row = frame[(frame.git_commit == "a" * 40) & (frame.model == "alexnet") & (frame.batch_size == 1)
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
