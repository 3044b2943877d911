"""Reports rendered from a real smoke run: content, figures, self-containment, failures, a browser."""

import csv
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import matplotlib.image
import pytest

from cnnbench.cli import main
from cnnbench.report.compare import compare_runs
from cnnbench.results import RunStore
from tests import browser, nested_pytest
from tests.history_runs import slower



@pytest.fixture
def run_dir(smoke_run):
    """The shared smoke run (tests/conftest.py): googlenet, nin, alexnet and a model that raises,
    every metric but scaling. Read only; tests that write copy it."""
    assert smoke_run.exit_code == 1  # the raising model's records are errors
    return smoke_run.path


def test_run_writes_the_report_files(run_dir):
    for name in ("report.md", "report.html", "results.csv"):
        assert (run_dir / name).stat().st_size > 0
    stems = {p.stem for p in (run_dir / "figures").iterdir()}
    assert {
        "accuracy_vs_gmacs",
        "latency_vs_batch",
        "memory_breakdown",
        "by_layer_type",
        "training_curves",
    } <= stems


def test_tables_hold_the_recorded_values(run_dir):
    md = (run_dir / "report.md").read_text()
    records = RunStore(run_dir).records()
    g_params = next(r for r in records if r.metric == "params" and r.spec.model == "googlenet")
    assert f"{g_params.values['params_total']:,}" in md
    lat = next(
        r
        for r in records
        if r.metric == "latency" and r.spec.model == "alexnet" and r.status == "ok"
    )
    assert f"{lat.values['latency_ms_p50']:,.2f}" in md
    acc = next(r for r in records if r.metric == "accuracy" and r.spec.model == "googlenet")
    assert f"{acc.values['test_accuracy_mean']:.3f}" in md
    mem = next(
        r
        for r in records
        if r.metric == "memory" and r.spec.model == "googlenet" and r.spec.mode == "train"
    )
    assert f"{mem.values['measured_bytes'] / 2**20:,.1f}" in md
    # conditions stated: device, profile, dtype
    assert "profile smoke" in md and "dtype fp32" in md and "AMD" in md or "cpu" in md
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert len(rows) == len(records)
    assert "latency_ms_p50" in rows[0]


def test_failed_records_are_shown_as_failed(run_dir):
    md = (run_dir / "report.md").read_text()
    failures = md.split("## Records that are not ok")[1]
    assert "raises_in_forward" in failures and "error" in failures
    assert "this model always raises" in failures
    html = (run_dir / "report.html").read_text()
    assert '<td class="bad">error</td>' in html


def test_exercise_sections_answer_from_the_numbers(run_dir):
    md = (run_dir / "report.md").read_text()
    ex4 = md.split("## Exercise 4")[1].split("## Exercise 5")[0]
    assert "46,764,746" in ex4  # alexnet's parameters, from its record
    assert re.search(
        r"alexnet holds 46\.8M parameters, 9\d% of them in fully connected layers", ex4
    )
    # one sentence for the GoogLeNets (one here): their parameters sit in convolutions
    assert re.search(r"googlenet[a-z0-9_, ]* keeps? \d+% of (its|their) parameters in convolutions", ex4)
    assert "1x1 convolutions hold" in ex4
    ex5 = md.split("## Exercise 5")[1]
    for topic in (
        "Computation:",
        "Memory size:",
        "Memory bandwidth:",
        "Cache size:",
        "Specialized operations:",
    ):
        assert topic in ex5
    assert "3.4x fewer than alexnet" in ex5  # 0.938 / 0.276 GMACs


def test_minsize_and_roofline_sections(run_dir):
    md = (run_dir / "report.md").read_text()
    ex2 = md.split("## Exercise 2")[1].split("## ")[0]
    # alexnet's minimum (65x65) and the layer that sets it, in its table row
    assert "| alexnet | 65 | stage3.6 |" in ex2 and "stage1.0 Conv2d 11x11/4: 65→15" in ex2
    assert re.search(r"googlenet[a-z0-9_, ]* runs? on any size down to 1x1", ex2)
    roof = md.split("## Exercise 5, measured")[1]
    records = RunStore(run_dir).records()
    g = next(r for r in records if r.metric == "roofline" and r.spec.model == "googlenet")
    from cnnbench.report.fmt import ABOVE_ROOF
    from cnnbench.analysis.frames import above_roof

    if above_roof(g.result):  # a layer or the model above the measured roof: never a number
        assert ABOVE_ROOF in roof.split("| googlenet |")[1].split("\n")[0]
    else:
        # MFU = the pass's work over the latency table's median at the roofline's batch (the
        # statistic of the latency table), over the measured peak; the roofline's own forward
        # time only where the latency harness did not measure that batch
        work_flop = g.result.model_achieved_flops * g.result.model_ms / 1e3
        lat = [r for r in records if r.metric == "latency" and r.status == "ok" and r.spec.model == "googlenet"
               and r.spec.mode == "inference" and r.spec.batch_size == g.spec.batch_size]  # fmt: skip
        ms = lat[0].result.latency_ms_p50 if lat else g.result.model_ms
        assert f"{100 * work_flop / (ms / 1e3) / g.result.peak_flops:.1f}" in roof
    env = json.loads((run_dir / "env.json").read_text())
    a = next(r for r in records if r.metric == "roofline" and r.spec.model == "alexnet")
    # measured once per run, in env.json, and shared by every model's MFU
    assert (
        env["peaks"]["cpu fp32"]["peak_flops"] == g.values["peak_flops"] == a.values["peak_flops"]
    )


def test_figures_are_valid_png_and_svg(run_dir):
    for path in (run_dir / "figures").iterdir():
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert matplotlib.image.imread(path).shape[0] > 100
        else:
            assert ET.parse(path).getroot().tag.endswith("svg")


def test_html_references_nothing_outside_itself(run_dir):
    html = (run_dir / "report.html").read_text()
    assert "<script" not in html and "<link" not in html
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "url(" not in html


@pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.MISSING)
def test_html_renders_in_a_headless_browser(run_dir, tmp_path):
    page = tmp_path / "report.html"  # the probe writes beside the page: a copy, self-contained
    shutil.copy(run_dir / "report.html", page)
    check, stderr = browser.load(page, tmp_path)
    assert check["errors"] == []
    figures = len(list((run_dir / "figures").glob("*.png")))
    assert len(check["imgs"]) == figures == 7 and all(w and w > 0 for w in check["imgs"])
    assert "Uncaught" not in stderr and "CONSOLE" not in stderr


def test_compare_flags_changes_beyond_noise(run_dir, tmp_path, capsys):
    # A: the smoke run with each latency's samples made tight around its median (a loaded CI
    # machine can spread a smoke record's samples by more than 2x; whether such noise is judged
    # right is tests/test_stats.py's and test_report_trust.py's job); B: A with every latency
    # doubled, a change far beyond the noise of either
    base, other = tmp_path / "base", tmp_path / "other"
    shutil.copytree(run_dir, base)
    shutil.copytree(run_dir, other)
    tight, doctored = [], []
    for line in (base / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["metric"] == "latency" and rec["status"] == "ok":
            v = rec["values"]
            # three rounds of three, the rounds 1% apart: an interval between processes
            v["times_ms"] = [v["latency_ms_p50"] * (1 + d) for d in (-0.01, 0.0, 0.01) for _ in range(3)]
            v.update(round_sizes=[3, 3, 3], round_medians_ms=v["times_ms"][::3], rounds=3)
        tight.append(json.dumps(rec))
        doctored.append(json.dumps(slower(rec, 2.0)))  # far beyond any IQR or interval
    (base / "results.jsonl").write_text("\n".join(tight) + "\n")
    (other / "results.jsonl").write_text("\n".join(doctored) + "\n")
    run_dir = base
    frame = compare_runs(run_dir, other)
    lat = frame[(frame.metric == "latency") & (frame.value == "latency_ms_p50")]
    assert len(lat) and lat.significant.all() and (abs(lat.change - 1.0) < 1e-9).all()
    params = frame[frame.metric == "params"]
    assert (params.change == 0).all() and not params.significant.any()
    assert main(["compare", str(run_dir), str(other), "--out", str(tmp_path / "cmp")]) == 0
    assert "latency_ms_p50" in (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "compare.csv").exists()


def test_report_command_and_bad_folder(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_report_renders_a_pytest_benchmark_json_beside_the_run(run_dir, tmp_path):
    bench_json = tmp_path / "bench.json"
    done = subprocess.run(
        [*nested_pytest.COMMAND, "-q", "-p", "no:cacheprovider", "benchmarks/bench_harness.py",
         "--benchmark-only", f"--benchmark-json={bench_json}"],
        capture_output=True, text=True, timeout=300, env=nested_pytest.environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (
        main(
            [
                "report",
                str(run_dir),
                "--out",
                str(tmp_path / "r"),
                "--benchmark-json",
                str(bench_json),
            ]
        )
        == 0
    )
    md = (tmp_path / "r" / "report.md").read_text()
    section = md.split("## pytest-benchmark results")[1]
    data = json.loads(bench_json.read_text())["benchmarks"][0]
    assert data["name"] in section
    assert f"{round(1e3 * data['stats']['median'], 3)}" in section


# --- rendering of saved records (no run): an earlier reference run, doctored ----------------------

# the reference run as committed before latency samples were kept (schema 1, flat env.json
# config), frozen here so that these tests do not move when reports/cpu-quick is re-measured and
# so that old run folders keep rendering
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "reference-schema1")


def _doctor(rec: dict) -> dict:
    """googlenet_ls diverged after finishing its seed (its numbers kept), googlenet28 diverged
    before finishing one (no accuracy), alexnet's batch-16 inference latency ran out of memory
    and nin's parameter count failed."""
    spec, metric = rec["spec"], rec["metric"]
    if metric == "accuracy" and spec["model"] == "googlenet_ls":
        rec.update(status="diverged", reason="loss became NaN or infinite (seed 1)")
    if metric == "accuracy" and spec["model"] == "googlenet28":
        rec["values"].update({k: None for k in rec["values"] if k.startswith("test_accuracy_")})
        rec.update(status="diverged", reason="loss became NaN or infinite (seed 0)")
    if metric == "latency" and spec["model"] == "alexnet" and spec["batch_size"] == 16 and spec["mode"] == "inference":  # fmt: skip
        rec.update(status="oom", values={}, reason="out of memory")
    if metric == "params" and spec["model"] == "nin":
        rec.update(status="error", values={}, reason="RuntimeError: boom")
    return rec


@pytest.fixture(scope="module")
def doctored(tmp_path_factory):
    from dataclasses import asdict

    from cnnbench.config import make_config

    run = tmp_path_factory.mktemp("doctored") / "run"
    run.mkdir()
    lines = open(os.path.join(REFERENCE, "results.jsonl")).read().splitlines()
    (run / "results.jsonl").write_text("".join(json.dumps(_doctor(json.loads(x))) + "\n" for x in lines))  # fmt: skip
    env = json.loads(open(os.path.join(REFERENCE, "env.json")).read())
    given = {"dtype": "bf16", "channels_last": True, "train_batch_size": 8}
    config = make_config(models=("nin",), metrics=("params",), device="cpu", profile="quick",
                         out_dir=str(run), given=given)  # fmt: skip
    env["config"] = asdict(config)  # the sectioned form: config["workload"]["dtype"]
    (run / "env.json").write_text(json.dumps(env))
    assert main(["report", str(run)]) == 0
    return run


def _row(md: str, caption: str, first_cell: str) -> list[str]:
    table = md.split(f"*{caption}*")[1].split("\n\n")[1]
    row = next(line for line in table.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in row.strip("|").split(" | ")]


def test_a_missing_number_leaves_the_others_as_they_were(doctored):
    md = (doctored / "report.md").read_text()
    alexnet = _row(md, "Overview", "alexnet")
    assert alexnet[2] == "46,764,746" and alexnet[5] == "33.5 (1)"  # best inference now batch 1
    assert _row(md, "Overview", "nin")[2] == "—"
    assert not re.search(r"\| nan|nan \||\(nan\)|\(\d+\.0\)", md)  # no NaN, no batch 16.0
    for model in ("googlenet", "vgg11_quarter"):  # counts stay whole in a column that misses one
        assert re.fullmatch(r"[\d,]+", _row(md, "Overview", model)[2])


def test_diverged_accuracy_keeps_its_number_beside_its_status(doctored):
    from rich.console import Console

    from cnnbench.config import make_config
    from cnnbench.report.console import run_summary

    md = (doctored / "report.md").read_text()
    # the accuracy, then the size it was trained at ("trained at")
    assert _row(md, "Overview", "googlenet_ls")[8:10] == ["0.550 (diverged)", "28"]
    assert _row(md, "Overview", "googlenet28")[8] == "diverged"
    lineage = "Variants against their parents (train images/s at batch 16)"
    # accuracy changes in percentage points: 0.472 → 0.550
    # (test accuracy, its change, its verdict: one seed a side is never called)
    assert _row(md, lineage, "googlenet_ls")[16:19] == ["0.550 (diverged)", "+7.9 pp", "not resolved, 1 seed: a call needs 3 a side"]  # fmt: skip
    assert _row(md, lineage, "googlenet28")[16:18] == ["diverged", "—"]
    console = Console(width=200, record=True)
    config = make_config(models=("googlenet_ls",), metrics=("accuracy",), device="cpu",
                         profile="quick", out_dir=str(doctored))  # fmt: skip
    console.print(run_summary(RunStore(doctored).records(), config))
    text = console.export_text()
    assert "0.550 (diverged)" in text and "46.8M" in text and "— " in text


def test_conditions_read_the_sectioned_and_the_flat_config(doctored):
    line = (doctored / "report.md").read_text().split("## Conditions")[1].split("\n## ")[0]
    assert "dtype bf16, channels_last;" in line
    assert "overrides: dtype=bf16, channels_last=True, train_batch_size=8;" in line
    flat_dir = doctored.parent / "flat"
    assert main(["report", REFERENCE, "--out", str(flat_dir)]) == 0
    flat = (flat_dir / "report.md").read_text()  # rendered from a flat env.json
    assert "dtype fp32; profile quick; overrides: none;" in flat


def test_compare_shows_counts_whole_and_changes_signed(doctored, tmp_path):
    frame = compare_runs(REFERENCE, doctored)
    status = frame[(frame.metric == "params") & (frame.model == "nin")]
    assert list(status.B) == ["error"] and status.significant.all()
    # a run against itself: no status row, so every A and B is a number (pandas made them floats)
    main(["compare", REFERENCE, REFERENCE, "--out", str(tmp_path)])
    md = (tmp_path / "compare.md").read_text()
    assert "| params_total | 46,764,746 | 46,764,746 | +0.0% | exact |  |" in md
    assert ",46764746,46764746," in (tmp_path / "compare.csv").read_text()


def test_one_formatter():
    from cnnbench.report.fmt import accuracy, change, fmt, percent

    assert fmt(None) == fmt(float("nan")) == change(None) == percent(None) == "—"
    assert fmt(5977530) == "5,977,530" and fmt(5977530.0, 0) == "5,977,530"
    assert fmt(3 * 2**20 // 2, 1, scale=2**20) == "1.5" and fmt(1234.56, 1) == "1,234.6"
    assert fmt(0.938146, 4, significant=True) == "0.9381" and fmt(46764746.0, 4, significant=True) == "4.676e+07"  # fmt: skip
    assert change(-0.2461) == "-24.6%" and percent(0.3521, suffix="") == "35.2"
    assert accuracy(0.5505, 0.0123, "ok") == "0.550 ± 0.012"
    assert accuracy(0.5505, 0.0, "diverged", sep="±") == "0.550 (diverged)"
    assert accuracy(None, None, "error") == "error" and accuracy(None, None, None) == "—"
