"""The run pipeline end to end through the CLI: records, env.json, resume, failures, OOM."""

import json
import os
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


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke"
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            "--models",
            "googlenet,nin",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    return code, out


def test_smoke_run_records_every_metric(smoke_run):
    code, out = smoke_run
    assert code == 0
    records = RunStore(out).records()
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
    _, out = smoke_run
    env = json.loads((out / "env.json").read_text())
    assert env["versions"]["torch"] == torch.__version__
    for key in ("torchvision", "fvcore"):
        assert env["versions"][key]
    assert env["python"] and env["cpu"]["model"] and env["device_name"]
    assert env["config"]["profile"] == "smoke"
    assert env["config"]["overrides"] == ["threads"]
    assert env["config"]["command_line"].startswith("cnnbench run --profile smoke")
    assert "git_commit" in env


def test_resume_skips_what_is_recorded(smoke_run, tmp_path, capsys):
    _, out = smoke_run
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
    assert died.status == "error" and "exit code -9" in died.reason
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
