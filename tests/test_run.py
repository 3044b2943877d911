"""The run pipeline end to end through the CLI: records, env.json, resume, failures, OOM."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from cnnbench.cli import main
from cnnbench.results import RunStore

PLUGIN_ENV = {"CNNBENCH_PLUGINS": "tests.plugins.failing_models"}


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_smoke_run_records_every_metric(smoke_run):
    # the shared run (tests/conftest.py) also holds a model that always raises: exit status 1,
    # its records errors, every other model's records ok
    assert smoke_run.exit_code == 1
    everything = RunStore(smoke_run.path).records()
    assert {r.spec.model for r in everything if r.status != "ok"} == {"raises_in_forward"}
    records = [r for r in everything if r.spec.model in ("googlenet", "nin")]
    by_metric = {}
    for r in records:
        by_metric.setdefault(r.metric, []).append(r)
    assert all(r.status == "ok" for r in records)
    assert len(by_metric["params"]) == 2
    # FLOPs at each model's size, and googlenet's also at 224 (equal resolution; nin is at 224)
    assert sorted((r.spec.model, r.spec.image_size) for r in by_metric["flops"]) == [
        ("googlenet", 96), ("googlenet", 224), ("nin", 224)
    ]
    # smoke: batches 1 and 2, inference and train, per model
    assert sorted(
        (r.spec.model, r.spec.mode, r.spec.batch_size) for r in by_metric["latency"]
    ) == sorted(
        (m, mode, b)
        for m in ("googlenet", "nin")
        for mode in ("inference", "train")
        for b in (1, 2)
    )
    assert {(r.spec.mode, r.spec.batch_size) for r in by_metric["memory"]} == {
        ("inference", 2),
        ("train", 2),
    }
    lat = by_metric["latency"][0]
    assert lat.spec.threads == 1 and lat.spec.device == "cpu" and lat.spec.dtype == "fp32"
    for key in ("n_runs", "latency_ms_min", "latency_ms_p50", "latency_ms_mean", "latency_ms_p90",
                "latency_ms_p99", "latency_ms_iqr", "latency_ms_std", "images_per_s", "unstable"):  # fmt: skip
        assert key in lat.values
    params = next(r for r in by_metric["params"] if r.spec.model == "nin")
    assert params.values["params_total"] == 1_992_166


def test_env_json_describes_the_run(smoke_run):
    out = smoke_run.path
    env = json.loads((out / "env.json").read_text())
    assert env["versions"]["torch"] == torch.__version__
    for key in ("torchvision", "fvcore"):
        assert env["versions"][key]
    assert env["python"] and env["cpu"]["model"] and env["device_name"]
    assert env["config"]["profile"] == "smoke"
    assert env["config"]["overrides"] == ["threads"]
    assert env["config"]["command_line"].startswith("cnnbench run --profile smoke")
    assert "git_commit" in env
    # the flags the workers ran with, not the parent's: both TF32 flags set (off by default)
    assert env["fingerprint"]["cpu.logical_cpus"] == os.cpu_count() and len(env["fingerprint_id"]) == 12
    flags = env["worker_flags"]
    assert flags["torch_threads"] == 1  # --threads 1 reached the workers
    assert flags["matmul_allow_tf32"] is False and flags["cudnn_allow_tf32"] is False


def test_resume_skips_what_is_recorded(smoke_run, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(smoke_run.path, out)  # a resume appends: never into the shared run
    before = (out / "results.jsonl").read_text().count("\n")
    code, _, _ = cli(capsys, "run", "--profile", "smoke", "--models", "googlenet,nin", "--threads", "1",
                     "--metrics", "params,flops", "--resume", str(out))  # fmt: skip
    assert code == 0
    assert (out / "results.jsonl").read_text().count("\n") == before
    code, stdout, _ = cli(capsys, "run", "--profile", "smoke", "--models", "googlenet", "--threads", "1",
                          "--metrics", "params,latency", "--batch-sizes", "1,3", "--resume", str(out))  # fmt: skip
    assert code == 0
    added = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()[before:]]
    # batch 1 was recorded already; only batch 3 (inference and train) is new
    assert sorted((r["metric"], r["spec"]["mode"], r["spec"]["batch_size"]) for r in added) == [
        ("latency", "inference", 3),
        ("latency", "train", 3),
    ]
    assert "already recorded, skipped" in stdout


def test_oom_record_from_a_real_memory_cap(tmp_path, capsys):
    out = tmp_path / "oom"
    code, _, err = cli(capsys, "run", "--profile", "smoke", "--models", "googlenet", "--threads", "1",
                       "--metrics", "latency,memory", "--batch-sizes", "1,1024", "--memory-cap-gb", "1",
                       "--out", str(out))  # fmt: skip
    assert code == 0  # out of memory is a result, not a failure of the run
    records = RunStore(out).records()
    status = {(r.metric, r.spec.mode, r.spec.batch_size): r.status for r in records}
    for metric in ("latency", "memory"):
        for mode in ("inference", "train"):
            assert status[(metric, mode, 1)] == "ok"
            assert status[(metric, mode, 1024)] == "oom"
    oom = next(r for r in records if r.status == "oom")
    assert "allocate" in oom.reason or "memory" in oom.reason
    assert "oom" in err


def test_errors_and_a_dead_worker_are_recorded_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    for key, value in PLUGIN_ENV.items():
        monkeypatch.setenv(key, value)
    import importlib

    import tests.plugins.failing_models  # noqa: F401  (registers in this process too)

    importlib.import_module("cnnbench.models")
    out = tmp_path / "fail"
    code, _, err = cli(capsys, "run", "--profile", "smoke", "--models", "raises_in_forward,dies_in_forward,nin",
                       "--metrics", "params,latency", "--batch-sizes", "1", "--threads", "1",
                       "--out", str(out))  # fmt: skip
    assert code == 1
    records = RunStore(out).records()
    by = {(r.spec.model, r.metric, r.spec.mode): r for r in records}
    assert by[("raises_in_forward", "params", "inference")].status == "ok"
    raised = by[("raises_in_forward", "latency", "inference")]
    assert raised.status == "error" and "this model always raises" in raised.reason
    died = by[("dies_in_forward", "latency", "inference")]
    assert died.status == "error" and "killed by SIGKILL (exit code -9)" in died.reason
    assert by[("dies_in_forward", "latency", "train")].status == "error"  # never reached
    assert all(r.status == "ok" for r in records if r.spec.model == "nin")
    assert "measurements failed" in err
    # --resume retries exactly the error records and keeps every other record
    lines_before = (out / "results.jsonl").read_text().count("\n")
    errors = {r.key for r in records if r.status == "error"}
    code, _, _ = cli(capsys, "run", "--profile", "smoke", "--models", "raises_in_forward,dies_in_forward,nin",
                     "--metrics", "params,latency", "--batch-sizes", "1", "--threads", "1",
                     "--resume", str(out))  # fmt: skip
    assert code == 1  # they fail again: these models always fail
    added = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()[lines_before:]]
    from cnnbench.results import Record

    assert {Record.from_dict(r).key for r in added} == errors and len(added) == len(errors)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--device", "cuda"], "use --device cpu"),
        (
            ["--metrics", "params,speed"],
            "choose from: params, flops, minsize, latency, memory, roofline, accuracy",
        ),
        (["--batch-sizes", "1,x"], "comma list of positive integers"),
        (["--batch-sizes", "0"], "comma list of positive integers"),
        (["--models", "alexnett"], "did you mean 'alexnet'"),
        (["--profile", "huge"], "invalid choice"),
    ],
)
def test_run_usage_errors_exit_2(capsys, argv, message, tmp_path):
    if argv[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = cli(capsys, "run", *argv, "--out", str(tmp_path / "x"))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not Path(tmp_path / "x").exists()


def test_json_output_is_machine_readable(tmp_path, capsys):
    code, stdout, _ = cli(capsys, "run", "--profile", "smoke", "--models", "nin", "--metrics", "params",
                          "--json", "--out", str(tmp_path / "j"))  # fmt: skip
    assert code == 0
    data = json.loads(stdout)
    assert data[0]["values"]["params_total"] == 1_992_166
    assert os.path.exists(tmp_path / "j" / "env.json")


@pytest.mark.cuda
def test_cuda_smoke_run(tmp_path):
    assert (
        main(
            [
                "run",
                "--device",
                "cuda",
                "--profile",
                "smoke",
                "--models",
                "googlenet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    records = RunStore(tmp_path).records()
    lat = [r for r in records if r.metric == "latency"]
    assert lat and all(r.status == "ok" and r.values["timer"] == "cuda_event" for r in lat)
    assert all(r.values["source"] == "cuda_allocator" for r in records if r.metric == "memory")


def test_missing_data_makes_accuracy_unsupported_and_the_rest_runs(tmp_path, monkeypatch):
    from cnnbench import data, runner
    from cnnbench.config import make_config

    monkeypatch.setenv("CNNBENCH_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    original = data.candidate_dirs
    monkeypatch.setattr(
        data, "candidate_dirs", lambda d=None: [(p, w) for p, w in original(d) if "Debian" not in w]
    )
    config = make_config(models=("nin",), metrics=("params", "accuracy"), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), isolation="none")  # fmt: skip
    result = runner.run(config)
    status = {r.metric: r for r in result.records}
    assert status["params"].status == "ok"
    assert status["accuracy"].status == "unsupported"
    assert "apt-get install dataset-fashion-mnist" in status["accuracy"].reason
    assert not result.failed  # unsupported is a recorded fact, not a failure of the run


def _sweep_config(out, max_batch):
    from cnnbench.config import make_config

    config = make_config(models=("googlenet",), metrics=("latency",), device="cpu", profile="smoke",
                         out_dir=str(out), isolation="none",
                         given={"sweep": True, "rounds": 3, "image_size": 32, "threads": 1})  # fmt: skip
    return dataclasses.replace(
        config, batches=dataclasses.replace(config.batches, sweep_max_batch=max_batch)
    )


def _memory_runs_out(monkeypatch, limit):
    """The latency harness, real, except that ``limit(spec, round)`` says when memory runs out."""
    from cnnbench.measure import harnesses, latency

    calls: list = []

    def measure_unit(spec, ctx):
        calls.append(spec)
        if limit(spec, calls.count(spec) - 1):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate (synthetic)")
        return latency.measure_unit(spec, ctx)

    harness = dataclasses.replace(harnesses.HARNESSES["latency"], measure_unit=measure_unit)
    monkeypatch.setitem(harnesses.HARNESSES, "latency", harness)
    return calls


def test_a_sweep_short_of_memory_in_a_later_round_still_records_every_batch(tmp_path, monkeypatch):
    """Batch 2 fits in round 1 and not in round 2; batch 4, which fit in round 1, is not tried in
    round 2 (the sweep stops at its first oom): it must end as a record, not vanish."""
    from cnnbench import runner

    _memory_runs_out(monkeypatch, lambda spec, rnd: spec.batch_size == 8 or
                     (spec.batch_size == 2 and rnd == 1))  # fmt: skip
    result = runner.run(_sweep_config(tmp_path / "run", 8))
    got = {(r.spec.mode, r.spec.batch_size): r for r in result.records}
    assert sorted(got) == [(m, b) for m in ("inference", "train") for b in (1, 2, 4, 8)]
    for mode in ("inference", "train"):
        assert got[mode, 1].status == "ok" and got[mode, 1].result.rounds == 3
        assert [got[mode, b].status for b in (2, 4, 8)] == ["oom"] * 3
        assert got[mode, 4].reason.startswith("not measured in round 2 of 3")


def test_a_resumed_sweep_does_not_try_past_its_oom(tmp_path, monkeypatch):
    from cnnbench import runner

    calls = _memory_runs_out(monkeypatch, lambda spec, rnd: spec.batch_size >= 2)
    first = runner.run(_sweep_config(tmp_path / "run", 4))
    assert {(r.spec.batch_size, r.status) for r in first.records} == {(1, "ok"), (2, "oom")}
    calls.clear()
    resumed = dataclasses.replace(_sweep_config(tmp_path / "run", 16), resume=True)
    again = runner.run(resumed)
    assert calls == [] and again.records == ()  # batches 4, 8 and 16 lie past the oom at 2
    assert again.skipped == 2 * 5  # both modes: 1 and 2 recorded, 4, 8, 16 past the stop
