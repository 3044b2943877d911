import subprocess
import sys

import pytest

from cnnbench.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_params_and_gmacs(capsys):
    code, out, _ = run(capsys, "list", "googlenet,nin")
    assert code == 0
    assert "5,977,530" in out and "0.276" in out
    assert "1,992,166" in out and "0.762" in out
    assert "alexnet" not in out


def test_summary_googlenet(capsys):
    code, out, _ = run(capsys, "summary", "googlenet")
    assert code == 0
    for shape in ["64x24x24", "192x12x12", "480x6x6", "832x3x3", "1024", "5,977,530"]:
        assert shape in out


def test_summary_depth_2_and_size(capsys):
    code, out, _ = run(capsys, "summary", "alexnet", "--size", "128", "--depth", "2")
    assert code == 0
    assert "96x30x30" in out  # (128 + 2 - 11) // 4 + 1 = 30


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["summary", "googlent"],
            "unknown model 'googlent' — did you mean 'googlenet'? see: cnnbench list",
        ),
        (["list", "resnet"], "unknown model 'resnet'"),
        (["summary", "alexnet", "--size", "0"], "expected a positive integer, got '0'"),
        (["summary", "alexnet", "--size", "-3"], "expected a positive integer, got '-3'"),
        (["summary", "alexnet", "--size", "9.5"], "expected a positive integer, got '9.5'"),
        (["summary", "alexnet", "--size", "40"], "the smallest size that works is 65"),
        (["summary", "nin", "--size", "66"], "layer 'pool3' fails"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_python_dash_m_is_the_script():
    done = subprocess.run(
        [sys.executable, "-m", "cnnbench", "summary", "googlent"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "cnnbench: unknown model 'googlent' — did you mean 'googlenet'? see: cnnbench list"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cnnbench", "list", "nin"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "1,992,166" in done.stdout
