"""Bad input and faults, through the real CLI: each is refused before anything is measured, with
one line on stderr that says what is wrong (and what would be right), exit status 2, no
traceback, and no run folder left behind.

The CLI runs in this process (``cnnbench.cli.main``, output captured at the file descriptors, so
that a worker's stderr counts too): a traceback would escape ``main`` and fail the test. That
``python -m cnnbench`` returns what ``main`` returns is tests/test_cli.py's check; plugins that
fail to import are tried in a subprocess, since a module imports once per process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench.cli import main
from cnnbench.results import Record, Spec

GOOD = Record("params", Spec("nin", 224), "ok", {"params_total": 1}).to_json()


def _run_folder(root: Path, lines: list[str], env_extra: dict | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    env = {"device_name": None, "versions": {"torch": None}}
    (root / "env.json").write_text(json.dumps({**env, **(env_extra or {})}))
    return root


def _real_env(tmp: Path) -> dict:
    """env.json of this machine, so that a resume is refused for the reason under test only."""
    from cnnbench.env import collect_env

    return collect_env("cpu")


# (id, argv with {tmp} and {out} placeholders, words the message must contain, setup)
ROWS = [
    ("negative lr", ["run", "--lr", "-0.1"], ["--lr", "expected a number in (0"]),
    ("lr not a number", ["run", "--lr", "fast"], ["--lr", "expected a number, got 'fast'"]),
    ("momentum 1", ["run", "--momentum", "1"], ["--momentum", "[0, 1)"]),
    ("momentum with adam", ["run", "--optimizer", "adam", "--momentum", "0.9"], ["--momentum applies to SGD"]),
    ("label smoothing 1", ["run", "--label-smoothing", "1"], ["--label-smoothing", "[0, 1)"]),
    ("target accuracy 0", ["run", "--target-accuracy", "0"], ["--target-accuracy", "(0, 1]"]),
    ("target accuracy 1.5", ["run", "--target-accuracy", "1.5"], ["(0, 1]", "1.5"]),
    ("threads 0", ["run", "--threads", "0"], ["--threads", "positive integer"]),
    ("threads above the machine", ["run", "--threads", "4096"], ["--threads 4096", "CPU(s)"]),
    ("negative seed", ["run", "--seeds", "0,-1"], ["--seeds", "comma list of seeds"]),
    ("repeated seed", ["run", "--seeds", "0,0"], ["--seeds 0,0 repeats"]),
    ("batch 0", ["run", "--batch-sizes", "0,2"], ["--batch-sizes", "positive integers"]),
    ("repeated batch", ["run", "--batch-sizes", "2,2"], ["--batch-sizes 2,2 repeats"]),
    ("negative memory cap", ["run", "--memory-cap-gb", "-1"], ["--memory-cap-gb", "(0, inf)"]),
    ("zero min time", ["run", "--min-time", "0"], ["--min-time", "(0, inf)"]),
    ("negative warmup", ["run", "--warmup", "-1"], ["--warmup", "integer ≥ 0"]),
    ("zero epochs", ["run", "--epochs", "0"], ["--epochs", "positive integer"]),
    ("zero eval batch", ["run", "--eval-batch-size", "0"], ["--eval-batch-size", "positive integer"]),
    ("unbalanced subset", ["run", "--train-subset", "205"], ["--train-subset 205", "multiple of the 10"]),
    ("tf32 on a CPU", ["run", "--tf32"], ["--tf32 applies to CUDA"]),
    ("cuda graphs on a CPU", ["run", "--cuda-graphs"], ["--cuda-graphs needs --device cuda"]),
    ("weights cast at fp32", ["run", "--cast", "weights"], ["--cast weights needs --dtype bf16 or fp16"]),
    ("unknown cast", ["run", "--cast", "half"], ["--cast", "autocast", "weights"]),
    ("shard past the count", ["run", "--shard", "2/2"], ["--shard 2/2", "0 ≤ K < N"]),
    ("shard not K/N", ["run", "--shard", "half"], ["--shard half", "K/N"]),
    ("empty selection", ["run", "--models", ""], ["no model"]),
    ("unknown model", ["run", "--models", "googlent"], ["unknown model 'googlent'", "googlenet"]),
    ("unknown metric", ["run", "--metrics", "speed"], ["unknown metric 'speed'", "latency"]),
    ("empty metrics", ["run", "--metrics", ","], ["metric"]),
    ("input too small", ["run", "--models", "alexnet", "--image-size", "40"],
     ["--image-size 40 is too small for 'alexnet'", "65"]),
    ("train input too small", ["run", "--models", "alexnet", "--metrics", "accuracy", "--train-image-size", "20"],
     ["--train-image-size 20 is too small for 'alexnet'", "65"]),
    ("unknown device", ["run", "--device", "tpu"], ["--device tpu", "cpu, cuda or cuda:N"]),
    ("no CUDA here", ["run", "--device", "cuda"], ["CUDA is not available", "--device cpu"]),
    ("unknown dtype", ["run", "--dtype", "fp64"], ["--dtype", "invalid choice"]),
    ("unknown optimizer", ["run", "--optimizer", "rmsprop"], ["--optimizer", "invalid choice"]),
    ("unknown profile", ["run", "--profile", "fast"], ["--profile", "invalid choice"]),
    ("batches and sweep", ["run", "--batch-sizes", "1", "--sweep"], ["--sweep", "not allowed with"]),
    ("unknown option", ["run", "--fast"], ["unrecognized arguments: --fast"]),
    ("resume nothing", ["run", "--resume", "{tmp}/nowhere"], ["--resume", "no such folder"]),
    ("resume a non-run", ["run", "--resume", "{tmp}/empty"], ["not a cnnbench run folder", "env.json"]),
    ("out below a file", ["run", "--out", "{tmp}/a_file/run"], ["--out", "a_file is a file"]),
    ("out is a file", ["run", "--out", "{tmp}/a_file"], ["--out", "not a folder"]),
    ("out holds a run", ["run", "--out", "{tmp}/corrupt"], ["already holds a run", "--resume"]),
    ("named data folder is empty", ["run", "--metrics", "accuracy", "--data-dir", "{tmp}/empty"],
     ["Fashion-MNIST not found in", "empty", "train-images-idx3-ubyte"]),
    ("summary depth 3", ["summary", "googlenet", "--depth", "3"], ["--depth", "invalid choice"]),
    ("summary too small", ["summary", "alexnet", "--size", "40"], ["--size 40 is too small", "65"]),
    ("summary size not a number", ["summary", "alexnet", "--size", "9.5"], ["positive integer"]),
    ("minsize unknown model", ["minsize", "vgg99"], ["unknown model 'vgg99'"]),
    ("report of nothing", ["report", "{tmp}/nowhere"], ["not a run folder"]),
    ("report of a corrupt store", ["report", "{tmp}/corrupt"], ["results.jsonl:2: not a cnnbench record"]),
    ("compare a corrupt store", ["compare", "{tmp}/corrupt", "{tmp}/corrupt"], [":2: not a cnnbench record"]),
    ("resume a corrupt store", ["run", "--resume", "{tmp}/corrupt_here"], [":2: not a cnnbench record"]),
    ("resume another torch", ["run", "--resume", "{tmp}/other_torch"], ["cannot resume: torch was 1.0, now"]),
    ("resume another device", ["run", "--resume", "{tmp}/other_device"], ["cannot resume: device_name was 'NVIDIA H200'"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty").mkdir()
    (tmp / "a_file").write_text("not a folder\n")
    _run_folder(tmp / "corrupt", [GOOD, "{torn in the middle", GOOD])
    real = _real_env(tmp)
    _run_folder(tmp / "corrupt_here", [GOOD, "{torn in the middle", GOOD], real)
    _run_folder(tmp / "other_torch", [GOOD], {**real, "versions": {**real["versions"], "torch": "1.0"}})
    _run_folder(tmp / "other_device", [GOOD], {**real, "device_name": "NVIDIA H200"})
    return tmp


def _cli_subprocess(argv, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "cnnbench", *argv],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv,words", [pytest.param(a, w, id=i) for i, a, w in ROWS])
def test_bad_input_is_refused_in_one_line(scratch, tmp_path, argv, words, capfd):
    out = tmp_path / "out"
    argv = [a.format(tmp=scratch) for a in argv]
    if argv[0] == "run" and "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(out), "--profile", "smoke"]
    before = _tree(scratch)
    code = main(argv)
    stdout, stderr = capfd.readouterr()
    assert code == 2, (code, stderr[-2000:])
    assert "Traceback" not in stderr + stdout
    message = stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("cnnbench: ")
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()  # nothing created where the input was refused
    assert _tree(scratch) == before  # and nothing rewritten


@pytest.mark.parametrize("plugin,words", [
    ("tests.plugins.broken_import", ["plugin 'tests.plugins.broken_import'", "failed to import"]),
    ("tests.plugins.no_such_module", ["plugin 'tests.plugins.no_such_module'", "ModuleNotFoundError"]),
])  # fmt: skip
def test_a_broken_plugin_is_one_line(tmp_path, plugin, words):
    out = tmp_path / "out"
    done = _cli_subprocess(["run", "--profile", "smoke", "--out", str(out)], env={"CNNBENCH_PLUGINS": plugin})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr
    assert not out.exists()
