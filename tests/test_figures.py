"""The report's figures, drawn from the committed reference runs and read back from matplotlib:
names that do not overlap and leader lines that do not cross, no band on a one-batch series,
a unit on every axis, the label-smoothed loss apart from cross-entropy, GoogLeNet's costliest
layers named on the roofline, and no run conditions printed on a figure."""

from __future__ import annotations

import inspect
import random
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from matplotlib.text import Annotation, Text

from cnnbench.analysis.frames import Frames, ok_records
from cnnbench.report import figures
from cnnbench.report.runs import load_runs

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def _frames(name: str) -> Frames:
    folder = REPORTS / name
    if not (folder / "results.jsonl").exists():
        pytest.skip(f"reports/{name} has no records")
    return Frames(list(load_runs([folder]).records))


@pytest.fixture(scope="module")
def quick() -> Frames:
    return _frames("cpu-quick")


def _draw(maker, frames: Frames, out: Path, monkeypatch):
    """The matplotlib figure that ``maker`` saved (drawn, so that text has its extent)."""
    kept = []
    real_save = figures._save

    def keep(fig, folder, figure):
        kept.append(fig)
        return real_save(fig, folder, figure)

    monkeypatch.setattr(figures, "_save", keep)
    assert maker(frames, out) is not None
    fig = kept[-1]
    FigureCanvasAgg(fig).draw()  # _save closed it: a canvas of its own to draw on
    return fig


def _cross(a, b, c, d) -> bool:
    """Segments ab and cd cross inside both (the test's own orientation test)."""

    def turn(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return turn(a, b, c) * turn(a, b, d) < 0 and turn(c, d, a) * turn(c, d, b) < 0


def _names(ax) -> list[Annotation]:
    return [t for t in ax.texts if isinstance(t, Annotation) and t.arrowprops is not None]


def _assert_names_apart(ax) -> None:
    renderer = ax.figure.canvas.get_renderer()
    names = _names(ax)
    boxes = [Text.get_window_extent(n, renderer) for n in names]  # the text alone, not its leader
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not boxes[i].overlaps(boxes[j]), (names[i].get_text(), names[j].get_text())
    # a leader runs from the named point (data) to its name's left edge (axes fraction)
    leaders = [(ax.transData.transform(n.xy), ax.transAxes.transform(n.xyann)) for n in names]
    for i in range(len(leaders)):
        for j in range(i + 1, len(leaders)):
            assert not _cross(*leaders[i], *leaders[j]), (names[i].get_text(), names[j].get_text())


@pytest.mark.parametrize("maker", [figures.accuracy_vs_gmacs, figures.roofline])
def test_names_of_the_reference_run_neither_overlap_nor_cross(quick, tmp_path, monkeypatch, maker):
    fig = _draw(maker, quick, tmp_path, monkeypatch)
    ax = fig.axes[0]
    assert len(_names(ax)) >= 8  # every model (accuracy), 4 + 4 layers (roofline)
    _assert_names_apart(ax)


@pytest.mark.parametrize("seed", range(12))
def test_a_crowd_of_random_points_gets_names_apart_and_uncrossed_leaders(seed):
    rng = random.Random(seed)
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(rng.random(), rng.random()) for _ in range(14)]
    pts += [(0.5 + 0.01 * i, 0.5) for i in range(4)]  # four at one height: they must spread
    ax.scatter(*zip(*pts, strict=True))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    figures._label_column(ax, [(x, y, f"point {i} at {x:.2f}") for i, (x, y) in enumerate(pts)])
    fig.canvas.draw()
    assert len(_names(ax)) == len(pts)
    _assert_names_apart(ax)
    plt.close(fig)


def test_a_single_batch_series_is_points_with_whiskers_not_a_band(quick, tmp_path, monkeypatch):
    fig = _draw(figures.latency_vs_batch, quick, tmp_path, monkeypatch)
    panels = {ax.get_title(): ax for ax in fig.axes}
    train = [ax for title, ax in panels.items() if title.startswith("train")]
    inference = [ax for title, ax in panels.items() if title.startswith("inference")]
    assert len(train) == len(inference) == 2
    for ax in train:  # the reference run trained at batch 16 only
        assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert not [ln for ln in ax.lines if ln.get_linestyle() not in ("None", "") and len(ln.get_xdata()) > 1]  # fmt: skip
        assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 10
    for ax in inference:  # batches 1 and 16: a band joins them (the check above can see one)
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 10


_UNIT = re.compile(r"\(.+\)|\[.+\]")


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", "").replace("\N{MINUS SIGN}", "-"))
    except ValueError:
        return False
    return True


def _assert_axes_labelled(fig) -> None:
    """Every axis that shows tick labels has a label; a numeric one names its unit in () or []."""
    for ax in fig.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            ticks = [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            if not ticks:
                continue  # a shared axis, or a panel that says why it has no data
            assert label.strip(), (ax.get_title(), ticks)
            if all(_numeric(t) for t in ticks):
                assert _UNIT.search(label), (ax.get_title(), label)


@pytest.mark.parametrize("stem", ["accuracy_vs_gmacs", "latency_vs_batch", "memory_breakdown",
                                  "by_layer_type", "training_curves", "roofline", "lineage", "frontier"])  # fmt: skip
def test_every_axis_of_the_reference_figures_has_a_label_with_its_unit(quick, tmp_path, monkeypatch, stem):  # fmt: skip
    _assert_axes_labelled(_draw(getattr(figures, stem), quick, tmp_path, monkeypatch))


def test_the_scaling_figure_labels_every_axis_with_its_unit(tmp_path, monkeypatch):
    _assert_axes_labelled(_draw(figures.scaling, _frames("cpu-scaling"), tmp_path, monkeypatch))


def test_the_label_smoothed_loss_has_its_own_panel(quick, tmp_path, monkeypatch):
    fig = _draw(figures.training_curves, quick, tmp_path, monkeypatch)

    def models_on(ax):
        return {ln.get_label().split(" seed")[0] for ln in ax.lines}

    smoothed = [ax for ax in fig.axes if "googlenet_ls" in models_on(ax) and "smooth" in ax.get_ylabel()]  # fmt: skip
    assert len(smoothed) == 1 and models_on(smoothed[0]) == {"googlenet_ls"}
    plain = [ax for ax in fig.axes if "cross-entropy (nats)" in ax.get_ylabel()]
    assert len(plain) == 1 and "googlenet" in models_on(plain[0])
    assert "googlenet_ls" not in models_on(plain[0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("googlenet_ls") and "not comparable" in t for t in legend)


def test_the_roofline_names_the_costliest_layers_of_alexnet_and_googlenet(quick, tmp_path, monkeypatch):  # fmt: skip
    fig = _draw(figures.roofline, quick, tmp_path, monkeypatch)
    named = {" ".join(n.get_text().split()[:2]) for n in _names(fig.axes[0])}
    expected = set()
    for r in ok_records(quick.records, "roofline"):
        if r.spec.model in ("alexnet", "googlenet"):  # top 4 by time, computed here
            top = sorted((lay for lay in r.result.layers if lay.time_ms), key=lambda lay: lay.time_ms)[-4:]  # fmt: skip
            expected |= {f"{r.spec.model} {lay.name}" for lay in top}
    assert named == expected
    # the other models' layers: one faint, small collection, not a colour each
    colour = {c.get_label(): c for c in fig.axes[0].collections}
    faint = [c for label, c in colour.items() if label.startswith("the other")]
    assert len(faint) == 1 and max(faint[0].get_sizes()) <= 8
    others = sum(len(r.result.layers) for r in ok_records(quick.records, "roofline") if r.spec.model not in ("alexnet", "googlenet"))  # fmt: skip
    assert len(faint[0].get_offsets()) == others


def test_no_figure_prints_the_run_conditions(quick, tmp_path, monkeypatch):
    assert list(inspect.signature(figures.make_figures).parameters) == ["frames", "out"]
    kept = []
    real_save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out, f: kept.append(fig) or real_save(fig, out, f))  # fmt: skip
    made = figures.make_figures(quick, tmp_path)
    assert len(made) == len(kept) == 8  # the seven, and the accuracy–speed frontier
    env = next(iter(load_runs([REPORTS / "cpu-quick"]).envs.values()))
    torch_version = env["versions"]["torch"]  # a word of the conditions line the stamp printed
    for fig, figure in zip(kept, made, strict=True):
        words = " ".join(t.get_text() for t in fig.texts) + " " + figure.caption
        assert "CPU threads" not in words and "profile quick" not in words, figure.stem
        assert torch_version not in words, figure.stem


# --- the accuracy–speed frontier -----------------------------------------------------------------


def _frontier_points(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _step_line(ax):
    return next(ln for ln in ax.lines if ln.get_label().startswith("frontier"))


def test_the_reference_frontier_has_both_intervals_on_every_point_and_names_apart(quick, tmp_path, monkeypatch):  # fmt: skip
    from cnnbench.analysis.frontier import frontier

    finding = frontier(quick)
    fig = _draw(figures.frontier, quick, tmp_path, monkeypatch)
    assert len(fig.axes) == len(finding.groups) == 2  # batch 1 and batch 16
    for ax, group in zip(fig.axes, finding.groups, strict=True):
        points = _frontier_points(ax)
        assert len(points) == len(_names(ax)) == len(group.points) == 10
        assert all(c.has_xerr and c.has_yerr for c in points)  # latency and accuracy intervals
        _assert_names_apart(ax)
        # one seed: nothing is beaten, so the step line runs through every model, fastest first
        step = _step_line(ax)
        assert step.get_drawstyle() == "steps-post"
        assert list(step.get_xdata()) == sorted(p.latency_ms_per_image for p in group.points)


def test_a_beaten_model_is_hollow_and_off_the_frontier_step_line(tmp_path, monkeypatch):
    from cnnbench.analysis.frontier import frontier
    from tests.test_frontier import _records

    frames = Frames(_records())
    group = frontier(frames).groups[0]
    fig = _draw(figures.frontier, frames, tmp_path, monkeypatch)
    ax = fig.axes[0]
    hollow = {}
    for c in _frontier_points(ax):
        line = c.lines[0]
        x = float(line.get_xdata()[0])
        hollow[x] = to_rgba(line.get_markerfacecolor()) == (1.0, 1.0, 1.0, 1.0)
    for p in group.points:  # the finding says which are beaten: slow and straddle
        assert hollow[p.latency_ms_per_image] == (not p.on_frontier), p.model
    assert sum(hollow.values()) == 2
    assert list(_step_line(ax).get_xdata()) == [p.latency_ms_per_image for p in group.frontier]
    _assert_names_apart(ax)
    _assert_axes_labelled(fig)
