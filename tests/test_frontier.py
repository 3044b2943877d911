"""The accuracy–speed frontier (issue 24, part 1) on a constructed case whose every verdict the
test recomputes on its own — its own Student's t quantile (numerical integration of the density),
its own paired t on the log round medians of the raw samples, its own two-way residual for the
run's floor and its own Welch interval on the raw seed accuracies — and on the reference run,
where one seed per model leaves every dominance unresolved.

Noise as measured on the 2-core reference machine: round medians spread 5-11% between worker
processes, mostly a drift that every model of a round shares (config.py's quick profile note),
and test accuracy spreads 1-3 pp from seed to seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cnnbench.analysis.frames import Frames
from cnnbench.analysis.frontier import BEATS, NOT_BEATEN, OVER, WITHIN, frontier
from cnnbench.report.blocks import Document, Heading, Note, Paragraph, Table, to_markdown
from cnnbench.report.exercises.frontier import frontier as frontier_section
from cnnbench.results import RunStore
from cnnbench.stats import NOT_RESOLVED
from tests import trust_records as tr

REFERENCE = Path(__file__).resolve().parents[1] / "reports" / "cpu-quick"
SIZE = 28
# the drift every model of a round shares (log): its sd is ~7%, inside the measured 5-11%
DRIFT = np.array([0.0, 0.09, -0.07, 0.05, -0.04, 0.08])
OWN_SD = 0.02  # each model's own round-to-round noise (log), on top of the shared drift
# model → (median latency ms at batch 1, final test accuracy of each seed)
CASE = {
    "fast": (5.0, [0.900, 0.915, 0.885]),
    "twin": (4.95, [0.905, 0.920, 0.890]),  # 1% faster, +0.5 pp: better on both estimates only
    "straddle": (10.0, [0.840, 0.860, 0.830]),  # its interval straddles the 10 ms budget
    "slow": (20.0, [0.800, 0.820, 0.790]),  # slower and less accurate than fast, beyond noise
    "accurate": (60.0, [0.950, 0.960, 0.940]),  # the most accurate: on the frontier
}


def _offsets(i: int) -> np.ndarray:
    return DRIFT + np.random.default_rng(100 + i).normal(0.0, OWN_SD, DRIFT.size)


def _latency_samples(i: int, median: float) -> np.ndarray:
    """The raw iteration times of model ``i`` (rounds x iterations), as trust_records draws them."""
    return tr.samples(median, rounds=DRIFT.size, seed=i, offsets=_offsets(i))


def _records(case=CASE, seeds: int | None = None) -> list:
    records = []
    for i, (model, (median, finals)) in enumerate(case.items()):
        records.append(tr.latency(model, SIZE, 1, "inference", median, seed=i, offsets=_offsets(i)))
        records.append(tr.accuracy(model, SIZE, finals[:seeds] if seeds else finals))
    return records


# --- the test's own statistics -----------------------------------------------------------------


def t_quantile(p: float, dof: float) -> float:
    """Student's t quantile by integrating its density (trapezoids) and bisecting: no shared code
    with cnnbench.stats, which goes through the incomplete beta function."""
    scale = math.exp(math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)) / math.sqrt(dof * math.pi)

    def cdf(x: float) -> float:
        xs = np.linspace(0.0, x, 4001)
        return 0.5 + float(np.trapezoid(scale * (1 + xs**2 / dof) ** (-(dof + 1) / 2), xs))

    low, high = 0.0, 60.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def test_the_tests_t_quantile_matches_the_tables():
    # published values (Student's t table): t_0.975 with 2, 5 and 30 degrees of freedom
    for dof, expected in ((2, 4.302653), (5, 2.570582), (30, 2.042272)):
        assert t_quantile(0.975, dof) == pytest.approx(expected, abs=1e-4)


def _round_medians(samples: np.ndarray) -> np.ndarray:
    return np.median(samples, axis=1)


def _floor(all_samples: list[np.ndarray]) -> float:
    """What the run resolves at batch 1: the models x rounds table of log round medians, its
    two-way (model + round) residual sigma, a ratio's se = sigma sqrt(2/R), times t(R - 1)."""
    table = np.log(np.array([_round_medians(s) for s in all_samples]))
    m, r = table.shape
    resid = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    sigma = math.sqrt((resid**2).sum() / ((m - 1) * (r - 1)))
    return math.expm1(t_quantile(0.975, r - 1) * sigma * math.sqrt(2 / r))


def _faster(a: np.ndarray, b: np.ndarray, floor: float) -> bool:
    """B faster than A beyond noise: paired t on the log round medians excludes 1 and the
    ratio of overall medians is at least the floor away from it."""
    d = np.log(_round_medians(b)) - np.log(_round_medians(a))
    half = t_quantile(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    ratio = np.median(b) / np.median(a)
    return d.mean() + half < 0 and abs(math.log(ratio)) >= math.log1p(floor)


def _slower(a, b, floor) -> bool:
    return _faster(b, a, floor)


def _welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(b) − mean(a) and the half width of Welch's 95% interval."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(b.mean() - a.mean()), t_quantile(0.975, dof) * math.sqrt(va + vb)


def _higher(a, b) -> bool:
    diff, half = _welch(a, b)
    return diff - half > 0


def _median_interval(samples: np.ndarray) -> tuple[float, float]:
    logs = np.log(_round_medians(samples))
    half = t_quantile(0.975, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
    return math.exp(logs.mean() - half), math.exp(logs.mean() + half)


# --- the constructed case ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def case():
    samples = {m: _latency_samples(i, median) for i, (m, (median, _)) in enumerate(CASE.items())}
    finding = frontier(Frames(_records()))
    assert len(finding.groups) == 1
    return finding.groups[0], samples


def test_every_dominance_is_the_tests_own_verdict(case):
    group, samples = case
    floor = _floor(list(samples.values()))
    assert group.floor == pytest.approx(floor, rel=1e-6)
    assert len(group.dominance) == len(CASE) * (len(CASE) - 1)
    for d in group.dominance:
        a, b = d.model, d.challenger
        faster, slower = _faster(samples[a], samples[b], floor), _slower(samples[a], samples[b], floor)
        higher, lower = _higher(CASE[a][1], CASE[b][1]), _higher(CASE[b][1], CASE[a][1])
        assert d.latency.verdict == ("faster" if faster else "slower" if slower else NOT_RESOLVED), (a, b)
        assert d.accuracy.verdict == ("higher" if higher else "lower" if lower else NOT_RESOLVED), (a, b)
        if slower or lower:
            expected = NOT_BEATEN  # one axis resolved against B: the other cannot change that
        elif not (faster or slower) or not (higher or lower):
            expected = NOT_RESOLVED  # either axis within the noise: A stays on
        else:
            expected = BEATS
        assert d.verdict == expected, (a, b, d.latency, d.accuracy)


def test_latencies_within_a_run_are_paired_round_by_round():
    """6% faster: the shared drift (~7% between rounds) hides it from an unpaired comparison,
    the per-round ratios do not."""
    case = {"fast": CASE["fast"], "quick": (4.7, [0.86, 0.875, 0.85])}
    group = frontier(Frames(_records(case))).groups[0]
    d = next(d for d in group.dominance if (d.model, d.challenger) == ("fast", "quick"))
    a, b = _latency_samples(0, 5.0), _latency_samples(1, 4.7)
    floor = _floor([a, b])
    assert _faster(a, b, floor) and d.latency.verdict == "faster" and d.latency.method == "paired"
    # the test's own unpaired (Welch) interval on the log round medians includes no change
    la, lb = np.log(_round_medians(a)), np.log(_round_medians(b))
    diff, half = _welch(list(la), list(lb))
    assert diff + half > 0


def test_a_change_below_what_the_run_resolves_is_not_called():
    """Two steady models 2% apart: their own paired interval excludes no change, but the run's
    floor — pooled over every model, three of them noisy — is larger, so no call."""
    own_sd = {"steady": 0.002, "steady2": 0.002, "noisy1": 0.05, "noisy2": 0.05, "noisy3": 0.05}
    medians = {"steady": 5.0, "steady2": 4.9, "noisy1": 8.0, "noisy2": 9.0, "noisy3": 10.0}
    records, samples = [], {}
    for i, model in enumerate(own_sd):
        offsets = DRIFT + np.random.default_rng(200 + i).normal(0.0, own_sd[model], DRIFT.size)
        records.append(tr.latency(model, SIZE, 1, "inference", medians[model], seed=i, offsets=offsets))
        records.append(tr.accuracy(model, SIZE, [0.80, 0.82, 0.79]))
        samples[model] = tr.samples(medians[model], rounds=DRIFT.size, seed=i, offsets=offsets)
    group = frontier(Frames(records)).groups[0]
    floor = _floor(list(samples.values()))
    d = np.log(_round_medians(samples["steady2"])) - np.log(_round_medians(samples["steady"]))
    half = t_quantile(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert d.mean() + half < 0  # the pair's own interval excludes no change ...
    ratio = np.median(samples["steady2"]) / np.median(samples["steady"])
    assert abs(math.log(ratio)) < math.log1p(floor)  # ... but the change is below the floor
    found = next(x for x in group.dominance if (x.model, x.challenger) == ("steady", "steady2"))
    assert found.latency.verdict == NOT_RESOLVED and found.latency.floor == pytest.approx(floor)


def test_a_model_beaten_on_both_axes_beyond_noise_is_off_the_frontier(case):
    group, samples = case
    slow = group.point("slow")
    assert not slow.on_frontier
    assert "fast" in slow.beaten_by and "twin" in slow.beaten_by
    # the test's own check that the case is what it claims: fast is faster and better beyond noise
    assert _faster(samples["slow"], samples["fast"], _floor(list(samples.values())))
    assert _higher(CASE["slow"][1], CASE["fast"][1])
    assert "slow" not in [p.model for p in group.frontier]


def test_a_model_better_only_inside_the_noise_leaves_its_rival_on_the_frontier(case):
    group, samples = case
    fast = group.point("fast")
    # twin is faster and more accurate on the point estimates ...
    assert np.median(samples["twin"]) < np.median(samples["fast"])
    assert np.mean(CASE["twin"][1]) > np.mean(CASE["fast"][1])
    # ... but neither difference is beyond the noise (the test's own computation)
    assert not _faster(samples["fast"], samples["twin"], _floor(list(samples.values())))
    assert not _higher(CASE["fast"][1], CASE["twin"][1])
    assert fast.on_frontier and fast.beaten_by == ()
    assert fast.unresolved_by == ("twin",)
    assert [p.model for p in group.frontier] == ["twin", "fast", "accurate"]


def test_the_latency_budgets_pick_the_most_accurate_model_within(case):
    group, samples = case
    budgets = {b.budget_ms_per_image: b for b in group.budgets}
    assert set(budgets) == {1.0, 10.0, 100.0}
    for budget, found in budgets.items():
        verdicts = {}
        for model, s in samples.items():  # the test's own interval against the budget
            low, high = _median_interval(s)
            verdicts[model] = WITHIN if high < budget else OVER if low > budget else NOT_RESOLVED
        assert set(found.within) == {m for m, v in verdicts.items() if v == WITHIN}
        assert set(found.over) == {m for m, v in verdicts.items() if v == OVER}
        assert set(found.straddling) == {m for m, v in verdicts.items() if v == NOT_RESOLVED}
        within = sorted(found.within, key=lambda m: -np.mean(CASE[m][1]))
        expected = {m for m in within if m == within[0] or not _higher(CASE[m][1], CASE[within[0]][1])} if within else set()  # fmt: skip
        assert set(found.best) == expected and (not within or found.best[0] == within[0])
    assert budgets[1.0].best == () and budgets[1.0].within == ()
    assert set(budgets[10.0].best) == {"twin", "fast"}  # tied: +0.5 pp is not resolved
    assert budgets[10.0].straddling == ("straddle",)
    assert budgets[100.0].best == ("accurate",)  # resolved more accurate than every other


def test_each_point_pairs_its_accuracy_with_the_latency_at_its_trained_size():
    records = _records()
    # "fast" also timed at its own size (96, where its params were counted): the latency at the
    # size it trained at (28) is the one paired
    records.append(tr.params("fast", 96, 1000))
    records.append(tr.latency("fast", 96, 1, "inference", 30.0, seed=9, offsets=_offsets(9)))
    # "other" trained at 28 but timed only at its own size (96): the latency falls back to it
    records.append(tr.params("other", 96, 1000))
    records.append(tr.latency("other", 96, 1, "inference", 8.0, seed=7, offsets=_offsets(7)))
    records.append(tr.accuracy("other", SIZE, [0.7, 0.72, 0.71]))
    frames = Frames(records)
    assert frames.sizes["fast"] == 96  # its own size is not the size it trained at
    group = frontier(frames).groups[0]
    fast, other = group.point("fast"), group.point("other")
    assert (fast.trained_px, fast.latency_px, fast.latency_ms_per_image) == (28, 28, pytest.approx(float(np.median(_latency_samples(0, 5.0)))))  # fmt: skip
    assert (other.trained_px, other.latency_px, other.latency_at_trained_size) == (28, 96, False)
    assert fast.recipe.optimizer == "adam" and fast.recipe.train_images == 4000


def test_the_section_reads_the_finding():
    section = frontier_section(Frames(_records()))
    caption, table = section.tables[0]
    assert "3 of 5 models" in caption
    rows = {r["model"]: r for r in table.to_dict("records")}
    assert rows["slow"]["frontier"].startswith("off: beaten by") and "fast" in rows["slow"]["frontier"]
    assert rows["fast"]["frontier"] == "on" and rows["fast"]["better on both estimates, not resolved"] == "twin"
    budgets = section.tables[1][1].to_dict("records")
    assert [b["most accurate within"] for b in budgets] == ["none within", "tied: twin, fast", "accurate"]
    assert "slow is beaten by" in section.answer and not section.warning


# --- few seeds, and the reference run ----------------------------------------------------------


def test_one_seed_resolves_no_dominance_and_the_section_says_why():
    finding = frontier(Frames(_records(seeds=1)))
    group = finding.groups[0]
    assert all(d.verdict == NOT_RESOLVED or (d.verdict == NOT_BEATEN and d.latency.verdict == "slower")
               for d in group.dominance)  # fmt: skip
    assert all(p.on_frontier for p in group.points)
    assert {p.accuracy_interval for p in group.points} == {"test set"}
    section = frontier_section(Frames(_records(seeds=1)))
    assert "one seed" in section.warning and "seed-to-seed noise" in section.warning
    assert "would be off it" in section.answer


def _reference() -> Frames:
    if not (REFERENCE / "results.jsonl").exists():
        pytest.skip("reports/cpu-quick has no records")
    return Frames(RunStore(REFERENCE).records())


def test_on_the_reference_run_no_dominance_is_resolved_and_every_model_stays_on():
    frames = _reference()
    finding = frontier(frames)
    trained = {r.spec.model for r in frames.records if r.metric == "accuracy"}
    assert finding.groups and {g.batch for g in finding.groups} == {1, 16}
    for group in finding.groups:
        assert {p.model for p in group.points} == trained
        assert all(d.verdict == NOT_RESOLVED or (d.verdict == NOT_BEATEN and d.latency.verdict == "slower")
               for d in group.dominance)  # fmt: skip
        assert all(d.accuracy.fewest_seeds == 1 for d in group.dominance)
        assert len(group.frontier) == len(group.points)
    googlenet28 = finding.groups[0].point("googlenet28")
    assert googlenet28.latency_at_trained_size  # timed at 28 px, where it trained
    alexnet = finding.groups[0].point("alexnet")
    assert (alexnet.trained_px, alexnet.latency_px) == (72, 224)  # no latency at 72: its own size


def test_the_reference_section_explains_one_seed_in_words_and_renders():
    section = frontier_section(_reference())
    assert "one seed each" in section.warning and "seed-to-seed noise" in section.warning
    assert "--seeds 0,1,2 (or more)" in section.warning
    blocks = [Heading(section.title), Paragraph(section.intro), Note(section.answer, "answer"),
              Note(section.warning, "warning"), *(Table(c, t) for c, t in section.tables)]  # fmt: skip
    page = to_markdown(Document("frontier", tuple(blocks)))
    assert "own size; none at the trained 72 px" in page
    assert "nan" not in page.lower().split() and "None" not in page


def test_one_axis_resolved_against_the_challenger_settles_it_and_other_sizes_beat_nothing():
    """Guards frontier.dominance_verdict: B slower (or less accurate) beyond noise cannot beat A
    whatever the other axis shows; and a latency at another size than the trained one (not the
    trained network's) beats nothing, however clear both axes are."""
    from cnnbench.analysis.frontier import dominance_verdict
    from cnnbench.analysis.noise import AccuracyChange, Change

    slower = Change(1.3, 1.2, 1.4, "slower", "paired")
    faster = Change(0.7, 0.6, 0.8, "faster", "paired")
    unsure = AccuracyChange(0.01, -0.02, 0.04, NOT_RESOLVED, (3, 3))
    higher = AccuracyChange(0.05, 0.02, 0.08, "higher", (3, 3))
    lower = AccuracyChange(-0.05, -0.08, -0.02, "lower", (3, 3))
    assert dominance_verdict(slower, unsure) == NOT_BEATEN
    assert dominance_verdict(Change(0.9, 0.7, 1.1, NOT_RESOLVED, "paired"), lower) == NOT_BEATEN
    assert dominance_verdict(faster, unsure) == NOT_RESOLVED
    assert dominance_verdict(faster, higher) == BEATS
    assert dominance_verdict(faster, higher, like_with_like=False) == NOT_RESOLVED
