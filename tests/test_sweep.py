"""`cnnbench sweep` (issue 24, part 4): shards submitted through submitit as one job array, a
failed shard resubmitted once then named, the shards merged into one report. The sweeps below use
submitit's real executors (local: a process per job; debug: in this process), never a mock."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from cnnbench import sweep
from cnnbench.cli import _run_tokens, main
from cnnbench.results import RunStore, Spec
from tests.test_scaling import _untimed_tables

ROOT = Path(__file__).resolve().parent.parent
# untimed metrics (their records must be equal, value for value) and one timed metric (its
# records must exist for the same specs with the same status; their timings differ run to run)
RUN = ("--profile", "smoke", "--models", "googlenet28,nin", "--threads", "1",
       "--metrics", "params,flops,minsize,latency", "--batch-sizes", "1", "--min-time", "0.01")  # fmt: skip
UNTIMED = {"params", "flops", "minsize"}
SPEC_COLUMNS = [f.name for f in dataclasses.fields(Spec)]


# a sweep starts processes that start processes: on 2 busy cores the run and its 2-shard sweep
# took 140-270 s together, past pytest-timeout's 300 s default with a slower machine
SWEEP_TIMEOUT_S = 900
# both tests that read the module's sweep run in one xdist worker, which makes it once
SHARED_SWEEP = pytest.mark.xdist_group("local_sweep")


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(autouse=True)
def _importable_repo(monkeypatch):
    """The shards' processes import the test plugins from the repository, wherever they start."""
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """One unsharded run and the same run as a 2-shard sweep on submitit's local executor."""
    base = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", _pythonpath())
        mp.chdir(ROOT)
        whole = main(["run", *RUN, "--out", str(base / "whole")])
        code = main(
            ["sweep", "--shards", "2", "--executor", "local", "--out", str(base / "sweep"), *RUN]
        )
    return base, whole, code


def _csv_rows(
    path: Path, metrics: set[str] | None, columns: list[str] | None = None
) -> list[tuple]:
    """results.csv rows of ``metrics`` (None: all), the given columns (None: all but the
    record's own duration), sorted: a merged report lists each shard's records in turn."""
    frame = pd.read_csv(path)
    if metrics is not None:
        frame = frame[frame["metric"].isin(metrics)]
    frame = frame[columns] if columns else frame.drop(columns=["duration_s"])
    return _frame_rows(frame.dropna(axis=1, how="all"))


def _frame_rows(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    return sorted(tuple(map(str, row)) for row in frame.itertuples(index=False))


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@SHARED_SWEEP
def test_a_local_sweep_of_two_shards_merges_to_the_unsharded_runs_report(local_sweep):
    base, whole, code = local_sweep
    assert whole == 0 and code == 0
    out = base / "sweep"
    summary = json.loads((out / "sweep.json").read_text())
    assert [o["ok"] and o["attempts"] for o in summary["outcomes"]] == [1, 1]
    # the two shards split the run's units: disjoint, both non-empty, together the whole run
    keys = [{r.key for r in RunStore(out / "shards" / str(k)).records()} for k in (0, 1)]
    whole_keys = {r.key for r in RunStore(base / "whole").records()}
    assert keys[0] and keys[1] and not keys[0] & keys[1] and keys[0] | keys[1] == whole_keys
    # each shard ran as `cnnbench run ... --shard K/2`, not resumed (no failure to retry)
    for k in (0, 1):
        env = json.loads((out / "shards" / str(k) / "env.json").read_text())
        assert f"--shard {k}/2" in env["config"]["command_line"] and not env.get("resumed")
    assert main(["report", str(base / "whole"), "--out", str(base / "w")]) == 0
    merged, alone = _untimed_tables(out), _untimed_tables(base / "w")
    assert merged == alone and sum(len(t) for t in alone) > 10
    assert _csv_rows(out / "results.csv", UNTIMED) == _csv_rows(base / "w" / "results.csv", UNTIMED)
    timed = [*SPEC_COLUMNS, "metric", "status"]
    assert _csv_rows(out / "results.csv", None, timed) == _csv_rows(base / "w" / "results.csv", None, timed)  # fmt: skip
    assert len(_csv_rows(out / "results.csv", {"latency"}, timed)) >= 2
    # models.csv: one row per configuration; its rates and step times are timings
    merged_models, alone_models = (pd.read_csv(d / "models.csv") for d in (out, base / "w"))
    kept = [c for c in alone_models.columns if not any(t in c for t in ("_per_s", "_ms"))]
    assert list(merged_models.columns) == list(alone_models.columns) and len(alone_models) >= 2
    assert _frame_rows(merged_models[kept]) == _frame_rows(alone_models[kept])


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@SHARED_SWEEP
def test_the_merge_refuses_shards_of_mixed_software_unless_asked(local_sweep, tmp_path):
    base, _, _ = local_sweep
    shutil.copytree(base / "sweep" / "shards", tmp_path / "shards")
    env_path = tmp_path / "shards" / "1" / "env.json"
    env = json.loads(env_path.read_text())
    env["versions"]["torch"] = "2.4.0"
    env_path.write_text(json.dumps(env))
    plan = sweep.SweepPlan(run_args=RUN, shards=2, out_dir=tmp_path, executor="local")
    outcomes = [sweep.ShardOutcome(k, True, 1, 0, "", (), "", str(tmp_path / "shards" / str(k))) for k in (0, 1)]  # fmt: skip
    from cnnbench.report.render import MixedRuns

    with pytest.raises(MixedRuns, match="torch '2.4.0'"):
        sweep.merge(plan, outcomes)
    assert not (tmp_path / "report.md").exists()
    paths = sweep.merge(dataclasses.replace(plan, allow_mixed=True), outcomes)
    assert Path(paths["md"]).exists()


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
def test_a_failing_shard_is_resubmitted_once_then_named_with_its_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNBENCH_PLUGINS", "tests.plugins.failing_models")
    out = tmp_path / "sweep"
    code = main(["sweep", "--shards", "2", "--executor", "local", "--out", str(out), "--profile", "smoke",
                 "--models", "nin,raises_in_forward", "--metrics", "flops", "--threads", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    # which shard holds the raising model: read from the shards' own records
    holds = {k: {r.spec.model for r in RunStore(out / "shards" / str(k)).records()} for k in (0, 1)}
    bad = next(k for k, names in holds.items() if "raises_in_forward" in names)
    assert holds[1 - bad] == {"nin"}
    outcomes = {o["index"]: o for o in json.loads((out / "sweep.json").read_text())["outcomes"]}
    assert (outcomes[bad]["ok"], outcomes[bad]["attempts"], outcomes[bad]["exit_code"]) == (
        False,
        2,
        1,
    )
    assert (outcomes[1 - bad]["ok"], outcomes[1 - bad]["attempts"]) == (True, 1)
    assert len(set(outcomes[bad]["job_ids"])) == 2  # two submissions, two jobs
    # the second attempt resumed the first's folder (its error record measured again)
    assert len(json.loads((out / "shards" / str(bad) / "env.json").read_text())["resumed"]) == 1
    log = outcomes[bad]["log_path"]
    assert log and "this model always raises" in Path(log).read_text()
    assert f"shard {bad}/2 failed 2 time(s)" in err and log in err
    assert f"shard {1 - bad}/2" not in err
    # the report merges both shards: the failed one's records say what failed
    assert {"nin", "raises_in_forward"} <= set(pd.read_csv(out / "results.csv")["model"])


def test_without_submitit_the_sweep_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    code = main(["sweep", "--shards", "2", "--executor", "local", "--out", str(tmp_path / "s"),
                 "--models", "nin", "--metrics", "params"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "pip install 'cnnbench[sweep]'" in err
    assert not (tmp_path / "s").exists()  # nothing submitted, nothing written


def test_the_shards_get_the_run_options_as_typed_minus_the_sweeps_own():
    tokens = ["--shards", "2", "--models", "nin", "--executor=local", "--out", "d", "--slurm",
              "partition=gpu", "--allow-mixed", "--metrics=params", "--timeout-min", "5", "--sweep"]  # fmt: skip
    assert _run_tokens(tokens) == ["--models", "nin", "--metrics=params", "--sweep"]
    command = sweep.shard_command(["--models", "nin"], 1, 3, Path("x/shards/1"))
    assert command[1:] == ["-m", "cnnbench", "run", "--models", "nin", "--shard", "1/3", "--out",
                           str(Path("x/shards/1")), "--no-report"]  # fmt: skip


def test_a_shard_folder_that_holds_records_is_resumed(tmp_path):
    (tmp_path / "results.jsonl").write_text("")
    command = sweep.shard_command([], 0, 2, tmp_path)
    assert command[-3:] == ["--resume", str(tmp_path), "--no-report"]


def test_slurm_parameters_reach_the_executor_and_an_unknown_one_is_refused(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(
        "PATH", str(tmp_path)
    )  # no srun: no Slurm, said before anything is submitted
    assert main(["sweep", "--shards", "2", "--executor", "slurm", "--out", str(tmp_path / "n"),
                 "--models", "nin"]) == 2  # fmt: skip
    assert "no srun on PATH" in capsys.readouterr().err
    # a login node as submitit sees it: an srun on PATH (never called here: nothing is submitted)
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    executor = sweep.make_executor(
        "slurm", tmp_path, [("partition", "gpu"), ("gpus_per_node", 1)], 90
    )
    assert {k: executor.parameters[k] for k in ("partition", "gpus_per_node", "time")} == {
        "partition": "gpu", "gpus_per_node": 1, "time": 90}  # fmt: skip
    with pytest.raises(sweep.SweepRefused, match="partiton"):
        sweep.make_executor("slurm", tmp_path, [("partiton", "gpu")])
    assert main(["sweep", "--shards", "2", "--executor", "slurm", "--slurm", "partiton=gpu",
                 "--out", str(tmp_path / "s"), "--models", "nin"]) == 2  # fmt: skip
    assert "partiton" in capsys.readouterr().err
    assert main(["sweep", "--shards", "2", "--executor", "local", "--slurm", "partition=gpu",
                 "--out", str(tmp_path / "t"), "--models", "nin"]) == 2  # fmt: skip
    assert "--slurm is for --executor slurm" in capsys.readouterr().err


def test_a_sweep_folder_holding_another_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text(json.dumps({"shards": 3, "run_args": ["--models", "nin"]}))
    assert main(["sweep", "--shards", "2", "--executor", "debug", "--out", str(tmp_path),
                 "--models", "nin"]) == 2  # fmt: skip
    assert "holds another sweep (3 shards" in capsys.readouterr().err
    assert not (tmp_path / "shards").exists()


def test_the_bar_counts_done_failed_and_resubmitted_shards():
    # shard 0 done; shard 1 failed once and resubmitted, still running; shard 2 failed twice
    last = {0: (True,), 2: (False,)}
    ids = {0: ["a"], 1: ["b", "c"], 2: ["d", "e"]}
    assert sweep._progress(3, last, ids) == sweep.Progress(total=3, done=1, failed=1, resubmitted=2)
    # a first failure not yet resubmitted is neither failed for good nor resubmitted
    assert sweep._progress(2, {0: (False,)}, {0: ["a"], 1: ["b"]}) == sweep.Progress(2, 0, 0, 0)


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
def test_a_debug_sweep_runs_its_shards_in_this_process_and_reports_progress(tmp_path):
    events = []
    plan = sweep.SweepPlan(run_args=("--profile", "smoke", "--models", "googlenet28,nin", "--metrics", "params"),
                           shards=2, out_dir=tmp_path, executor="debug", poll_s=0.01)  # fmt: skip
    result = sweep.run_sweep(plan, on_progress=events.append)
    assert [(o.ok, o.attempts, o.exit_code) for o in result.shards] == [(True, 1, 0), (True, 1, 0)]
    assert events[0] == sweep.Progress(2, 0, 0, 0) and events[-1] == sweep.Progress(2, 2, 0, 0)
    names = [
        {r.spec.model for r in RunStore(tmp_path / "shards" / str(k)).records()} for k in (0, 1)
    ]
    assert names[0] and names[1] and names[0] | names[1] == {"googlenet28", "nin"}
    assert Path(result.report["md"]).exists() and Path(result.report["csv"]).exists()
