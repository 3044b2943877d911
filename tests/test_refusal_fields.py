"""The runner names a setting by its RunConfig field; the command line shows the flag instead."""

import re
from pathlib import Path

import pytest

from cnnbench import cli, runner
from cnnbench.config import make_config


def test_a_refusal_names_the_field_and_the_cli_its_flag(tmp_path):
    config = make_config(models=("alexnet",), metrics=("latency",), device="cpu", profile="quick",
                         out_dir=str(tmp_path / "run"), given={"seeds": (0, 0)})  # fmt: skip
    with pytest.raises(runner.RunRefused) as caught:
        runner.preflight(config)
    assert str(caught.value) == "train.seeds 0,0 repeats a value; give each once"
    assert caught.value.naming(cli._flag) == "--seeds 0,0 repeats a value; give each once"


def test_every_field_the_runner_names_exists_and_has_a_flag():
    source = Path(runner.__file__).read_text()
    named = set(re.findall(r"""_field\(['"]([\w.]+)['"]""", source))
    assert {"train.seeds", "batches.batch_sizes", "out_dir", "workload.tf32"} <= named
    config = make_config(models=(), metrics=(), device="cpu", profile="quick", out_dir="unused")
    for path in sorted(named):
        section, _, field = path.rpartition(".")
        holder = getattr(config, section) if section else config
        assert hasattr(holder, field), path
        assert cli._flag(path).startswith("--") and "_" not in cli._flag(path), path
