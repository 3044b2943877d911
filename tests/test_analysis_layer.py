"""The analysis layer's contracts: which package may import which, every value declared once on
its result type, the flat models.csv, the one "worse beyond a threshold" predicate, the typed
blocks, and a report whose first screen answers the exercises."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd
import pytest

from cnnbench.analysis.compare import beyond, regressions
from cnnbench.analysis.flat import models_frame
from cnnbench.analysis.frames import Frames
from cnnbench.report.blocks import (
    Bullets, Document, Figure, Fold, Heading, Note, Paragraph, Table, to_html, to_markdown,
)  # fmt: skip
from cnnbench.results import Record
from cnnbench.results.types import RESULT_TYPES, Optimizer, declared_values
from tests.history_runs import source_records

PACKAGE = Path(__file__).resolve().parent.parent / "cnnbench"


def _imports(folder: str) -> dict[str, set[str]]:
    """file → every module it imports, resolved to a dotted cnnbench path where relative."""
    found = {}
    for path in (PACKAGE / folder).rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = parts[: len(parts) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                names.add(module)
                names |= {f"{module}.{a.name}" for a in node.names}
        found[str(rel)] = names
    return found


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("analysis", ("cnnbench.report", "matplotlib", "rich")),
    ("report", ("cnnbench.measure",)),
    ("results", ("cnnbench.measure", "cnnbench.report", "cnnbench.analysis", "cnnbench.runner",
                 "cnnbench.cli")),
])  # fmt: skip
def test_imports_run_one_way(folder, forbidden):
    bad = {f: sorted(m for m in mods if m.startswith(forbidden)) for f, mods in _imports(folder).items()}
    assert not {f: m for f, m in bad.items() if m}


def test_the_import_scan_sees_a_relative_import_upward():
    """The scan above resolves ``from ..measure.train import X`` inside cnnbench/results/ to
    cnnbench.measure.train: the guard would see the import that issue 22 removed."""
    tree = ast.parse("from ..measure.train import Optimizer")
    node = tree.body[0]
    parts = ["cnnbench", "results"]
    base = parts[: len(parts) - node.level + 1]
    assert ".".join([*base, node.module]) == "cnnbench.measure.train"


def test_no_function_in_the_package_is_over_60_lines():
    """Declaration tables (the argument parser) aside, every function fits a screen."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != "build_parser":
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.relative_to(PACKAGE)}::{node.name}")
    assert not long


# every value a history follows, as the code before issue 22 wrote it in four places by hand
OLD_DECLARATIONS = {
    "params": {"params_total": ("parameters", "exact")},
    "flops": {"gmacs": ("GMAC", "exact")},
    "minsize": {"min_size": ("px", "exact")},
    "latency": {"latency_ms_p50": ("ms", "lower"), "images_per_s": ("images/s", "higher")},
    "memory": {"measured_bytes": ("bytes", "lower"), "analytic_bytes": ("bytes", "exact")},
    "accuracy": {"test_accuracy_mean": ("fraction", "higher"), "train_time_s_mean": ("s", "lower")},
    "roofline": {"model_achieved_flops": ("FLOP/s", "higher")},
    "scaling": {"efficiency": ("fraction", "higher")},
}


def test_each_value_is_declared_once_with_the_units_the_history_used():
    from cnnbench.report.compare import HEADLINES
    from cnnbench.results.history import VALUE_NAMES

    declared = {m: {n: (v.unit, v.better) for n, v in declared_values(m).items()} for m in RESULT_TYPES}
    since = {**OLD_DECLARATIONS, "energy": {"joules_per_image": ("J", "lower")}}  # issue 23's
    assert declared == since
    assert VALUE_NAMES == {m: tuple(names) for m, names in since.items()}
    assert HEADLINES == {m: VALUE_NAMES[m] for m in ("params", "flops", "latency", "memory", "accuracy")}
    machine = {n for m in RESULT_TYPES for n, v in declared_values(m).items() if v.machine}
    assert machine == {"latency_ms_p50", "images_per_s", "measured_bytes", "train_time_s_mean",
                       "joules_per_image"}  # fmt: skip


def test_optimizers_compare_as_objects_whatever_their_spelling():
    assert Optimizer.parse("SGD  0.010 momentum 0.9") == Optimizer("sgd", 0.01, 0.9)
    assert Optimizer.parse("adam 0.0005") == Optimizer.of("adam", 5e-4, None)
    assert Optimizer.parse("sgd 0.01") != Optimizer.parse("sgd 0.01 momentum 0.9")
    assert Optimizer.parse(Optimizer("sgd", 0.05, 0.9).label) == Optimizer("sgd", 0.05, 0.9)
    assert Optimizer.parse("mystery") is None and Optimizer.of(None, 0.1, 0.0) is None


# --- the "worse beyond a threshold" predicate, by hand ---------------------------------------------


@pytest.mark.parametrize(("change", "better", "expected"), [
    (0.06, "lower", True), (0.04, "lower", False), (-0.30, "lower", False),
    (-0.06, "higher", True), (-0.04, "higher", False), (0.30, "higher", False),
    (0.0001, "exact", True), (None, "lower", True),
])  # fmt: skip
def test_beyond_is_worse_by_more_than_the_threshold(change, better, expected):
    assert beyond(change, better, 0.05) is expected


def test_regressions_read_the_better_direction_from_the_declarations():
    rows = [
        {"value": "latency_ms_p50", "A": 10.0, "B": 11.0, "change": 0.10, "significant": True},
        {"value": "images_per_s", "A": 100.0, "B": 110.0, "change": 0.10, "significant": True},
        {"value": "test_accuracy_mean", "A": 0.80, "B": 0.79, "change": -0.0125, "significant": True},
        {"value": "params_total", "A": 10, "B": 11, "change": 0.1, "significant": True},
        {"value": "latency_ms_p50", "A": 10.0, "B": 20.0, "change": 1.0, "significant": False},
        {"value": "status", "A": "ok", "B": "oom", "change": None, "significant": True},
    ]
    worse = regressions(pd.DataFrame(rows, dtype=object), 0.05)
    # slower beyond 5%, any lower accuracy, any changed count, a new failure; not: more images/s,
    # and not a change that was not called
    assert list(worse["value"]) == ["latency_ms_p50", "test_accuracy_mean", "params_total", "status"]


# --- models.csv -----------------------------------------------------------------------------------


def test_models_csv_has_one_row_per_configuration_with_the_latency_interval_inverted():
    records = [Record.from_dict(r) for r in source_records(("googlenet", "alexnet"))]
    table = models_frame(Frames(records, paired=True))
    configs = {(r.spec.model, r.spec.image_size, r.spec.batch_size)
               for r in records if r.metric in ("latency", "memory") and r.status == "ok"}  # fmt: skip
    assert len(table) == len(configs)
    assert set(zip(table.model, table.image_size, table.batch_size, strict=True)) == configs
    for r in records:
        if r.metric != "latency" or r.status != "ok":
            continue
        s, v = r.spec, r.result
        row = table[(table.model == s.model) & (table.batch_size == s.batch_size)].iloc[0]
        side = "infer" if s.mode == "inference" else "train"
        assert row[f"{side}_step_ms"] == v.latency_ms_p50
        # images/s = batch / latency: the interval's ends swap
        assert math.isclose(row[f"{side}_samples_per_s_ci_low"], 1e3 * s.batch_size / v.latency_ms_p50_ci_high)
        assert math.isclose(row[f"{side}_samples_per_s_ci_high"], 1e3 * s.batch_size / v.latency_ms_p50_ci_low)
        params = next(x for x in records if x.metric == "params" and x.spec.model == s.model)
        assert row["param_count"] == params.result.params_total
        assert str(table["param_count"].dtype) == "Int64"  # a count is not printed as 4.7e+07


# --- blocks ---------------------------------------------------------------------------------------


def test_blocks_render_once_in_markdown_and_escaped_in_html(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG fake")
    table = pd.DataFrame([{"a|b": "x|y", "n": "1,234"}])
    doc = Document("T <1>", (
        Heading("H"), Paragraph("p & q"), Note("careful", "warning"), Note("42", "answer"),
        Bullets(("one", "two")), Table("cap", table), Figure("fig", "cap2", png, tmp_path / "f.svg"),
        Fold("more", (Paragraph("inside"),)),
    ))  # fmt: skip
    md = to_markdown(doc, tmp_path)
    assert md.startswith("# T <1>\n\n## H\n\np & q\n\n> **Warning.** careful\n\n**Answer.** 42\n\n- one\n- two\n")
    assert "| a\\|b | n |" in md and "| x\\|y | 1,234 |" in md  # a pipe in a cell keeps the row
    assert "![fig](f.png)" in md and "([SVG](f.svg))" in md
    assert "<details><summary>more</summary>\n\ninside\n\n</details>" in md
    html = to_html(doc)
    assert "<title>T &lt;1&gt;</title>" in html and "<p>p &amp; q</p>" in html
    assert '<td class="num">1,234</td>' in html and '<td class="text">x|y</td>' in html
    assert 'src="data:image/png;base64,' in html and "<details><summary>more</summary>" in html
    with pytest.raises(TypeError):
        to_markdown(Document("x", ("a bare string",)))


# --- the report's first screen ---------------------------------------------------------------------

REFERENCE = Path(__file__).resolve().parent.parent / "reports" / "cpu-quick"  # ten models, one run


def _reference_markdown() -> str:
    """The committed reference run's report as Markdown, without drawing its figures."""
    from cnnbench.report.blocks import to_markdown
    from cnnbench.report.document import build_document
    from cnnbench.report.runs import load_runs

    runs = load_runs([REFERENCE])
    return to_markdown(build_document(Frames(list(runs.records), paired=runs.paired), runs, {}))


def test_the_first_50_lines_answer_exercises_1_to_5_with_their_numbers():
    head = _reference_markdown().splitlines()[:50]
    text = "\n".join(head)
    assert head[2] == "## Summary"
    for n in range(1, 6):
        line = next((x for x in head if x.startswith(f"- Exercise {n} ")), None)
        assert line is not None, f"exercise {n} is not answered on the first screen"
        assert any(ch.isdigit() for ch in line.split(":", 1)[1])  # with its numbers
    assert text.count("## Conditions") == 1 and "What this run resolves" in text
    assert "Noise control passed" in text


def test_a_run_without_an_exercises_models_says_so_on_the_first_screen(smoke_run):
    """The smoke run has googlenet but none of its variants: exercises 1 and 3 say why they have
    no answer, on the first screen, rather than disappearing."""
    head = (smoke_run.path / "report.md").read_text().splitlines()[:50]
    assert head[2] == "## Summary"
    for n in range(1, 6):
        assert any(x.startswith(f"- Exercise {n} ") for x in head), n


def _templates(md: str) -> dict[str, int]:
    """Each sentence of the prose with model names and numbers blanked: how often it is said."""
    import re
    from collections import Counter

    from cnnbench.models import list_models

    names = sorted(list_models(["*"]), key=len, reverse=True)
    prose = [line for line in md.splitlines() if line.strip() and not line.lstrip().startswith(("|", "!", "<"))]
    sentences = [s for line in prose for s in re.split(r"(?<=[.;:])\s+(?=[A-Z(])", line) if s.strip()]

    def blank(s: str) -> str:
        for name in names:
            s = re.sub(rf"\b{re.escape(name)}\b", "M", s)
        s = re.sub(r"[+\-−]?\d[\d,]*(\.\d+)?", "N", s)
        return re.sub(r"M((, | and | or )M)+", "M", s)

    return Counter(blank(s) for s in sentences)


def test_no_sentence_is_said_of_model_after_model_more_than_three_times():
    counts = _templates(_reference_markdown())
    assert {t: n for t, n in counts.items() if n > 3} == {}
    # the check sees a sentence said of each model in turn: the old report's exercise 2 wording
    said = "\n".join(f"- {m} runs even on a 1x1 input: every convolution is padded." for m in
                     ("googlenet", "googlenet28", "googlenet_bn", "googlenet_res"))  # fmt: skip
    assert max(_templates(said).values()) == 4


def test_a_full_disk_while_writing_the_report_is_one_message(tmp_path, monkeypatch):
    """ENOSPC from the figure writer (the traceback a user saw) becomes one StoreFull naming the
    folder; any other OSError is not relabelled."""
    import errno

    from cnnbench.report import figures, render
    from cnnbench.results.store import StoreFull
    from tests.history_runs import make_run

    run = make_run(tmp_path / "run", when="2026-12-01T00:00:00+00:00")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(figures, "make_figures", full)
    with pytest.raises(StoreFull) as caught:
        render.write_report([run], tmp_path / "out")
    assert str(tmp_path / "out") in str(caught.value) and "no space left" in str(caught.value)

    def denied(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(figures, "make_figures", denied)
    with pytest.raises(PermissionError):
        render.write_report([run], tmp_path / "out2")


def test_energy_per_image_is_shown_from_the_record_and_unsupported_with_its_reason(tmp_path):
    """The energy table shows the counter's joules per image as recorded (energy / images), and a
    machine without a counter as 'unsupported' with its reason, never a number."""
    from cnnbench.report.render import write_report
    from cnnbench.results.types import EnergyResult
    from tests import trust_records as t

    energy_j, images = 37.5, 1200
    ok = EnergyResult(source="nvml_total_energy", scope="the board", joules_per_image=energy_j / images,
                      energy_j=energy_j, block_s=1.5, images=images, steps=10, mean_power_w=25.0,
                      images_per_s=800.0, update_period_ms=20.0, min_block_s=1.0,
                      min_counter_updates=10, short=False, warmup_steps=3)  # fmt: skip
    recs = [
        t.params("nin", 224, 1_992_166),
        Record.of("energy", t.spec("nin", 224, 128, "train"), ok),
        Record.failed("energy", t.spec("nin", 224, 128, "inference"), "unsupported",
                      "/sys/class/powercap does not exist"),
    ]  # fmt: skip
    run = t.write_run(tmp_path / "run", recs)
    write_report([run])
    md = (run / "report.md").read_text()
    body = md.split("## Energy per image")[1]
    assert f"| nin | 224 | train | 128 | ok | {energy_j / images:.4f} | 25.0 | 800.0 | 1.50 |" in body
    assert "| unsupported | — |" in body and "/sys/class/powercap does not exist" in body


def test_the_conditions_show_the_wall_time_beside_the_plans_estimate(tmp_path):
    import json

    from cnnbench.report.runs import load_runs
    from tests.history_runs import make_run

    run = make_run(tmp_path / "run", when="2026-12-01T00:00:00+00:00")
    env = json.loads((run / "env.json").read_text())
    env.update(plan={"estimate_s": 300.4}, wall_s=412.0)
    (run / "env.json").write_text(json.dumps(env))
    (line,) = load_runs([run]).conditions
    assert "took 412 s (the plan estimated 300 s)" in line
