"""benchmarks/gpu_acceptance.py: its verdict logic at the bounds, and its dry run end to end (every
stage's code at tiny sizes on the CPU, as CI can run it)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


acc = _load()


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


# --- the verdict logic: each bound just inside and just outside ----------------------------------


@pytest.mark.parametrize(
    "goal,inside,outside",
    [
        # event median / wall clock: agree within 10%
        ("timing_agreement", (0.9001, 1.0, 1.0999, 0.9, 1.1), (0.8999, 1.1001)),
        # measured / analytic memory of a training step
        ("memory_measured_over_analytic", (0.9, 0.9001, 1.4999, 1.5), (0.8999, 1.5001)),
        ("memory_warm_over_cold", (0.9501, 1.0499), (0.9499, 1.0501)),
        ("bandwidth_of_datasheet", (0.7, 0.7001, 1.2), (0.6999,)),
        ("bf16_matmul_of_datasheet", (0.6, 0.6001), (0.5999,)),
        ("fp32_matmul_of_datasheet", (0.9999, 0.5), (1.0, 1.0001)),  # strictly below
        ("tf32_matmul_of_fp32_datasheet", (1.0001, 7.0), (1.0, 0.9999)),  # strictly above
        ("bf16_over_fp32_forward", (0.9999,), (1.0, 1.0001)),
        ("recipe_accuracy", (0.854, 0.8541, 0.9019, 0.902), (0.8539, 0.9021)),
        ("pipeline_speedup", (5.0, 5.0001), (4.9999,)),
        ("train_images_per_s", (40_000, 40_000.1), (39_999.9,)),
        ("oom_back_to_baseline", (0,), (1, -1)),
        ("exit_zero", (0,), (1, 5)),
        ("total_s", (480, 479.9), (480.1,)),
    ],
)
def test_judge_at_each_bound(goal, inside, outside):
    g = acc.GOALS[goal]
    for x in inside:
        assert acc.judge(x, g) == "pass", (goal, x, g.text)
    for x in outside:
        assert acc.judge(x, g) == "fail", (goal, x, g.text)


def test_judge_refuses_what_is_not_a_number():
    g = acc.GOALS["timing_agreement"]
    assert acc.judge(None, g) == "fail"
    assert acc.judge(float("nan"), g) == "fail"
    assert acc.judge(float("inf"), acc.Goal.at_least(1)) == "fail"


def test_goal_texts_say_the_bounds():
    assert acc.GOALS["timing_agreement"].text.startswith("within 10%")
    assert acc.GOALS["memory_measured_over_analytic"].text == "in [0.9, 1.5]"
    assert acc.GOALS["fp32_matmul_of_datasheet"].text == "< 1"
    assert acc.GOALS["bandwidth_of_datasheet"].text == "≥ 0.7"


def test_dry_run_does_not_judge_goals_but_judges_structure(tmp_path):
    dry = acc.Ctx(out=tmp_path, device="cpu", dry=True, sizes=acc.SIZES["dry"], log=tmp_path / "l")
    real = acc.dataclasses.replace(dry, dry=False)
    far_off = 99.0  # outside the goal: judged in a real run only
    timing, exit_zero = acc.GOALS["timing_agreement"], acc.GOALS["exit_zero"]
    assert dry.check("s", "c", timing, far_off, "ratio").verdict == acc.DRY_VERDICT
    assert real.check("s", "c", timing, far_off, "ratio").verdict == "fail"
    assert real.check("s", "c", timing, 1.05, "ratio").verdict == "pass"
    assert dry.check("s", "c", exit_zero, 2, "exit status", must=True).verdict == "fail"
    assert dry.check("s", "c", exit_zero, 0, "exit status", must=True).verdict == acc.DRY_VERDICT
    # a measurement that is not a finite positive number breaks the stage
    with pytest.raises(AssertionError):
        dry.check("s", "c", acc.GOALS["timing_agreement"], 0.0, "ratio")
    with pytest.raises(AssertionError):
        dry.check("s", "c", acc.GOALS["timing_agreement"], None, "ratio")


def test_sweep_verdict_wants_one_oom_and_nothing_past_it():
    from cnnbench.results import Record, Spec

    def rec(batch, status, mode="train"):
        spec = Spec("nin", 224, batch, mode=mode)
        if status == "ok":
            return Record("latency", spec, "ok", {"images_per_s": 1.0})
        return Record.failed("latency", spec, status, "out of memory")

    def verdict(*records):
        return acc.sweep_verdict(list(records), "train")[:2]

    assert verdict(rec(1, "ok"), rec(2, "ok"), rec(4, "oom")) == (1, True)
    assert verdict(rec(1, "ok"), rec(2, "oom"), rec(4, "ok")) == (1, False)  # measured past it
    assert verdict(rec(1, "ok"), rec(2, "oom"), rec(4, "oom")) == (2, False)
    assert verdict(rec(1, "ok"), rec(2, "error"), rec(4, "oom")) == (1, False)
    assert verdict(rec(1, "ok"), rec(2, "ok")) == (0, False)  # ended without running out
    assert verdict(rec(1, "oom", "inference")) == (0, False)  # another mode's oom


def test_sizes_table_covers_both_modes_alike():
    real, dry = acc.SIZES["real"], acc.SIZES["dry"]
    assert type(real) is type(dry)
    for f in acc.dataclasses.fields(real):  # each stage's sizes: one table type in both modes
        assert type(getattr(real, f.name)) is type(getattr(dry, f.name)), f.name
    assert dry.timing.batch <= 2 and dry.memory.batch <= 2 and max(dry.throughput.batches) <= 2
    assert 32 <= dry.timing.image <= 64 and 32 <= dry.roofline.image <= 64
    assert "--profile" in dry.run.args and "smoke" in dry.run.args


def test_specs_are_the_ones_a_run_plans(tmp_path):
    from cnnbench.results import Spec

    ctx = acc.Ctx(out=tmp_path, device="cuda:1", dry=False, sizes=acc.SIZES["real"], log=tmp_path)
    # written out by hand: CUDA fp32 has TF32 off and no threads; bf16 is autocast, and a
    # training step keeps that cast and never replays a CUDA graph
    assert ctx.spec("googlenet", 96, 256) == Spec(
        "googlenet", 96, 256, device="cuda:1", dtype="fp32", threads=None, mode="inference",
        tf32=False, cast=None,
    )  # fmt: skip
    assert ctx.spec("alexnet", 224, 64, dtype="bf16", mode="train", channels_last=True) == Spec(
        "alexnet", 224, 64, device="cuda:1", dtype="bf16", channels_last=True, threads=None,
        mode="train", tf32=None, cast="autocast", cuda_graph=False,
    )  # fmt: skip
    cpu = acc.dataclasses.replace(ctx, device="cpu", dry=True)
    spec = cpu.spec("googlenet28", 32, 2, mode="train")
    assert spec.threads == acc.torch.get_num_threads() and spec.tf32 is None and spec.cast is None


def test_numbers_and_the_recipe_check_read_as_before():
    from types import SimpleNamespace

    from cnnbench.results import Spec

    assert [acc.number(x) for x in (None, 0.0, 0.99876, 87.07, 45_123.4)] == [
        "—", "0", "0.9988", "87.07", "45,123",
    ]  # fmt: skip
    full = SimpleNamespace(epochs=10, optimizer="sgd", lr=0.01, momentum=0.0,
                           train_images=60_000, test_images=10_000)  # fmt: skip
    ok, text = acc.is_chapter_recipe(full, Spec("googlenet", 96, 128, dtype="bf16"))
    assert ok and text.startswith("epochs 10, batch 128, optimizer sgd, lr 0.01")
    short = SimpleNamespace(**{**vars(full), "epochs": 1, "train_images": 200})
    ok, text = acc.is_chapter_recipe(short, Spec("googlenet", 96, 128))
    assert not ok and text.endswith("differs: ['epochs', 'train_images']")


def test_verdict_page_lists_what_failed_above_the_table():
    v = acc.Verdict
    verdicts = [v("run", "exit status", "= 0", 124.0, "exit status", "fail", 3.0, "a|b"),
                v("timing", "ratio", "within 10%", 1.05, "ratio", "pass", 2.5)]  # fmt: skip
    md = acc.to_markdown(acc.verdict_page(verdicts, "T", "preface", dry=False))
    lines = md.splitlines()
    assert lines[0] == "# T" and "Dry run" not in md
    bullets = [line for line in lines if line.startswith("- ")]
    assert bullets == ["- run, exit status: fail, measured 124 exit status (goal = 0); a|b"]
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[0] == "| stage | check | goal | measured | unit | verdict | s | note |"
    assert rows[2] == "| run | exit status | = 0 | 124 | exit status | fail | 3.0 | a\\|b |"
    assert lines.index(bullets[0]) < lines.index(rows[0])
    assert "Dry run" in acc.to_markdown(acc.verdict_page(verdicts[1:], "T", "p", dry=True))


# --- the script end to end -----------------------------------------------------------------------


def _positive_where_measured(v: dict) -> bool:
    if v["unit"] not in acc.POSITIVE_UNITS or v["measured"] is None:
        return True
    return math.isfinite(v["measured"]) and v["measured"] > 0


@pytest.mark.slow
def test_dry_run_runs_every_stage(tmp_path):
    out = tmp_path / "acceptance"
    done = _run(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert {v["stage"] for v in verdicts} == {*acc.STAGES, "total"}
    for v in verdicts:
        assert set(v) == {f.name for f in acc.dataclasses.fields(acc.Verdict)}
        assert list(v) == ["stage", "check", "goal", "measured", "unit", "verdict", "seconds",
                           "note"]  # fmt: skip
        assert v["verdict"] in (acc.DRY_VERDICT, "skipped"), v
        if v["verdict"] == "skipped":
            assert v["note"], v  # a skipped check says why
        assert _positive_where_measured(v), v
        assert v["seconds"] > 0, v
    ran = {v["stage"] for v in verdicts if v["verdict"] == acc.DRY_VERDICT}
    assert ran == {*acc.STAGES, "total"}  # every stage produced at least one number
    assert (out / "run" / "report.md").stat().st_size > 0
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"
    md = (out / "verdicts.md").read_text()
    assert md.startswith("# GPU acceptance: ") and "dry run" in md.splitlines()[0]
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == len(verdicts) + 2  # header, rule, one row per verdict
    for stage in acc.STAGES:  # one progress line per stage on stderr
        assert f"] {stage}: " in done.stderr


def test_only_runs_the_stages_named(tmp_path):
    out = tmp_path / "only"
    done = _run(out, "--only", "timing")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert {v["stage"] for v in verdicts} == {"timing"}
    assert all(v["verdict"] == acc.DRY_VERDICT for v in verdicts)
    assert not (out / "run").exists()
    assert len(re.findall(r"^\[\d+/\d+\] ", done.stderr, re.M)) == 1  # one progress line


def test_bad_usage_is_refused(tmp_path):
    done = _run(tmp_path / "x", "--only", "timing,nosuch")
    assert done.returncode == 2 and "nosuch" in done.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("")
    done = _run(tmp_path / "full")
    assert done.returncode == 2 and "empty" in done.stderr
