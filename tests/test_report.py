"""Reports rendered from a real smoke run: content, figures, self-containment, failures, a browser."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import matplotlib.image
import pytest

from cnnbench.cli import main
from cnnbench.report.compare import compare_runs
from cnnbench.results import RunStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    old = os.environ.get("CNNBENCH_PLUGINS")
    os.environ["CNNBENCH_PLUGINS"] = "tests.plugins.failing_models"
    try:
        import tests.plugins.failing_models  # noqa: F401  (registers the failing model here too)

        code = main(["run", "--profile", "smoke", "--models", "googlenet,alexnet,raises_in_forward",
                     "--metrics", "params,flops,minsize,latency,memory,roofline,accuracy", "--batch-sizes", "1,2",
                     "--threads", "2", "--out", str(out)])  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("CNNBENCH_PLUGINS", None)
        else:
            os.environ["CNNBENCH_PLUGINS"] = old
    assert code == 1  # the raising model's records are errors
    return out


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
    assert "googlenet keeps" in ex4 and "1x1 convolutions hold" in ex4
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
    assert "alexnet needs at least 65x65" in ex2 and "stage1.0 Conv2d 11x11/4: 65→15" in ex2
    assert "googlenet runs even on a 1x1 input" in ex2
    roof = md.split("## Exercise 5, measured")[1]
    records = RunStore(run_dir).records()
    g = next(r for r in records if r.metric == "roofline" and r.spec.model == "googlenet")
    assert f"{100 * g.values['mfu']:.1f}" in roof
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


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/setup installs it)"
)
def test_html_renders_in_a_headless_browser(run_dir, tmp_path):
    probe = (
        "<script>window.__errors=[];"
        "window.addEventListener('error',e=>window.__errors.push(String(e.message||(e.target&&e.target.src))),true);"
        "const ce=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));ce(...a)};"
        "window.addEventListener('load',()=>{document.body.setAttribute('data-check',JSON.stringify("
        "{imgs:[...document.images].map(i=>i.complete&&i.naturalWidth),errors:window.__errors}))});</script>"
    )
    page = tmp_path / "page.html"
    page.write_text((run_dir / "report.html").read_text().replace("<head>", "<head>" + probe, 1))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    match = re.search(r"data-check=\"([^\"]*)\"", done.stdout)
    assert match, done.stderr[-2000:]
    check = json.loads(match.group(1).replace("&quot;", '"'))
    assert check["errors"] == []
    figures = len(list((run_dir / "figures").glob("*.png")))
    assert len(check["imgs"]) == figures == 6 and all(w and w > 0 for w in check["imgs"])
    assert "Uncaught" not in done.stderr and "CONSOLE" not in done.stderr


def test_compare_flags_changes_beyond_noise(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    lines = (other / "results.jsonl").read_text().splitlines()
    doctored = []
    for line in lines:
        rec = json.loads(line)
        if rec["metric"] == "latency" and rec["status"] == "ok":
            rec["values"]["latency_ms_p50"] *= 2  # a change far beyond any IQR
        doctored.append(json.dumps(rec))
    (other / "results.jsonl").write_text("\n".join(doctored) + "\n")
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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/bench_harness.py",
         "--benchmark-only", f"--benchmark-json={bench_json}"],
        capture_output=True, text=True, timeout=300,
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
