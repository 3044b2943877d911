"""Does a speed trick cost accuracy? (issue 24, part 2): the plan of ``--metrics tricks``, its
refusals, the verdict rule against an independent computation on constructed records, and a real
tiny run on the CPU (channels_last, torch.compile and bf16 against fp32 eager at 3 seeds)."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest

from cnnbench import runner, stats
from cnnbench.analysis import tricks as t
from cnnbench.analysis.frames import Frames
from cnnbench.config import MIN_SEEDS, make_config, trick_baseline, trick_of, trick_spec
from cnnbench.report.exercises.tricks import section
from cnnbench.results import Record, RunStore, Spec
from tests import trust_records as tr

T_975_2DOF = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)


def config(tmp_path, metrics=("tricks",), device="cpu", **given):
    given = {"threads": 1, "seeds": (0, 1, 2), **given}
    return make_config(models=("nin",), metrics=metrics, device=device, profile="smoke",
                       out_dir=str(tmp_path / "run"), given=given)  # fmt: skip


# --- planning and refusals -----------------------------------------------------------------------


def test_tricks_plan_the_baseline_and_each_trick_at_the_training_size_and_batch(tmp_path):
    from cnnbench.measure.train import image_size_for

    c = config(tmp_path, tricks=("channels_last", "compile"))
    units = runner.plan(c, "nin")
    size = image_size_for(c, "nin")  # smoke trains at the small size (72 for nin)
    base = Spec("nin", size, 16, "cpu", "fp32", False, False, 1, "inference")
    want = []
    for change in ({}, {"channels_last": True}, {"compiled": True}):
        spec = dataclasses.replace(base, **change)
        want += [("latency", spec), ("latency", dataclasses.replace(spec, mode="train")),
                 ("accuracy", dataclasses.replace(spec, mode="train"))]  # fmt: skip
    assert [(u.metric, u.spec) for u in units] == want
    assert size == 72


def test_a_unit_that_accuracy_and_tricks_both_plan_is_planned_once(tmp_path):
    both = runner.plan(config(tmp_path, metrics=("accuracy", "tricks"),
                              tricks=("channels_last",)), "nin")  # fmt: skip
    keys = [Record(u.metric, u.spec, "ok").key for u in both]
    assert len(keys) == len(set(keys)) == 6  # the accuracy metric's training is the baseline's
    assert both[0].metric == "accuracy" and trick_of(both[0].spec) is None


def test_the_cpu_default_is_channels_last_and_compile_and_cuda_gets_every_trick(tmp_path):
    from cnnbench.config import TRICKS, tricks_for

    assert tricks_for(config(tmp_path)) == ("channels_last", "compile")
    assert tricks_for(config(tmp_path, device="cuda")) == TRICKS


def test_cuda_graphs_plan_no_training_of_their_own_on_cuda(tmp_path):
    units = runner.plan(config(tmp_path, device="cuda", tricks=("cuda_graphs",)), "nin")
    graphed = [u for u in units if u.spec.cuda_graph]
    assert [(u.metric, u.spec.mode) for u in graphed] == [("latency", "inference")]
    assert len(units) == 4  # the baseline's three, and the graph's inference


@pytest.mark.parametrize("trick", ["tf32", "cuda_graphs"])
def test_a_cuda_only_trick_on_a_cpu_is_refused_before_measuring_in_one_line(tmp_path, trick, capsys):
    from cnnbench.cli import main

    with pytest.raises(runner.RunRefused, match=f"{trick} needs"):
        runner._check_options(config(tmp_path, tricks=("channels_last", trick)))
    code = main(["run", "--metrics", "tricks", "--tricks", trick, "--models", "nin", "--profile",
                 "smoke", "--seeds", "0,1,2", "--out", str(tmp_path / "cli"), "--dry-run"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"--tricks {trick} needs --device cuda" in err and "\n" not in err
    assert not (tmp_path / "cli").exists()


def test_fewer_seeds_than_the_analysis_judges_are_refused(tmp_path):
    assert MIN_SEEDS == 3  # the refusal below names it
    with pytest.raises(runner.RunRefused, match="3 or more seeds"):
        runner._check_options(config(tmp_path, seeds=(0, 1)))
    runner._check_options(config(tmp_path))  # three: accepted


def test_a_trick_is_one_changed_field_and_a_combination_is_none():
    base = tr.spec("nin", 72, 16, "train")
    assert trick_baseline(base) == base and trick_of(base) is None
    for trick in ("channels_last", "compile", "bf16", "fp16"):
        assert trick_of(trick_spec(base, trick)) == trick
    both = dataclasses.replace(trick_spec(base, "compile"), channels_last=True)
    assert trick_of(both) is None


# --- the rule on constructed records -------------------------------------------------------------

# round offsets of a worker process's speed, shared by the pair (drift) — realistic: rounds spread
# 5-11% on this machine (stats.py's docstring), iterations 2-4%
DRIFT = (0.06, -0.04, 0.0, 0.09, -0.07)
BASE_FINALS = (0.712, 0.745, 0.668)  # per seed 0, 1, 2: seeds spread ~4 pp, as short trainings do


def _latency(spec: Spec, median: float, seed: int, jitter=(0.0,) * 5) -> Record:
    offsets = [d + j for d, j in zip(DRIFT, jitter)]
    r = tr.latency(spec.model, spec.image_size, spec.batch_size, spec.mode, median, seed=seed,
                   offsets=offsets, spread=0.03)  # fmt: skip
    return dataclasses.replace(r, spec=spec)


def _accuracy(spec: Spec, finals, seeds=(0, 1, 2)) -> Record:
    r = tr.accuracy(spec.model, spec.image_size, list(finals))
    res = r.result
    runs = tuple(dataclasses.replace(run, seed=s) for run, s in zip(res.runs, seeds))
    return Record.of("accuracy", spec, dataclasses.replace(res, seeds=tuple(seeds), runs=runs))


def _records(trick: str, speed: float, deltas, *, seeds=(0, 1, 2)) -> list[Record]:
    """Baseline and ``trick`` for nin: inference 20 ms and a 60 ms training step for the
    baseline, the trick's latencies divided by ``speed``, its accuracy the baseline's + deltas."""
    train = tr.spec("nin", 72, 16, "train")
    out = []
    for i, (mode, ms) in enumerate((("inference", 20.0), ("train", 60.0))):
        spec = dataclasses.replace(train, mode=mode)
        # what the pair does not share, centred: "no change" is exactly none over the rounds
        jitter = np.random.default_rng(7 + i).normal(0, 0.03, 5)
        jitter -= jitter.mean()
        out += [_latency(spec, ms, seed=1 + i),
                _latency(trick_spec(spec, trick), ms / speed, seed=11 + i, jitter=jitter)]  # fmt: skip
    out += [_accuracy(train, BASE_FINALS),
            _accuracy(trick_spec(train, trick), [a + d for a, d in zip(BASE_FINALS, deltas)], seeds)]  # fmt: skip
    return out


def _expected(records: list[Record], frames: Frames, mode: str) -> tuple[float, float, float, str]:
    """The speed-up, its interval and its verdict, by hand: per-round log ratios, t with R - 1
    degrees of freedom, inverted; called beyond the run's floor only."""
    lat = [r for r in records if r.metric == "latency" and r.spec.mode == mode]
    base, trick = (next(r for r in lat if (trick_of(r.spec) is None) == b) for b in (True, False))
    logs = [math.log(np.median(b) / np.median(a)) for a, b in
            zip(np.split(np.array(base.result.times_ms), 5), np.split(np.array(trick.result.times_ms), 5))]  # fmt: skip
    mean, se = statistics.fmean(logs), statistics.stdev(logs) / math.sqrt(5)
    t4 = 2.7764451051977987  # t 97.5%, 4 dof
    speed = math.exp(-mean)  # the interval's centre, not the ratio of the pooled medians
    low, high = math.exp(-(mean + t4 * se)), math.exp(-(mean - t4 * se))
    floor = frames.floor(mode, 16)
    called = (low > 1 or high < 1) and abs(math.log(speed)) >= math.log1p(floor)
    return speed, low, high, ("faster" if speed > 1 else "slower") if called else stats.NOT_RESOLVED


def _accuracy_by_hand(deltas) -> tuple[float, float, float]:
    d = [(a + x) - a for a, x in zip(BASE_FINALS, deltas)]
    mean, half = statistics.fmean(d), T_975_2DOF * statistics.stdev(d) / math.sqrt(3)
    return mean, mean - half, mean + half


@pytest.mark.parametrize(("speed", "deltas", "verdict", "unresolved"), [
    (1.30, (0.002, -0.001, 0.004), t.FREE, ()),  # faster, loss ruled out beyond 1 pp
    (1.30, (-0.05, -0.062, -0.041), t.COSTS_ACCURACY, ()),  # every seed lost 4-6 pp
    (1.30, (0.02, -0.045, 0.012), stats.NOT_RESOLVED, ("accuracy",)),  # too wide to rule out
    (1.0, (0.002, -0.001, 0.004), stats.NOT_RESOLVED, ("speed",)),  # no change: within the noise
    (0.70, (0.002, -0.001, 0.004), stats.NOT_RESOLVED, ("speed",)),  # slower
    # a loss resolved by the pairing but within the 1 pp margin: negligible, as "free" says
    (1.30, (-0.002, -0.0018, -0.0024), t.FREE, ()),
])  # fmt: skip
def test_the_verdict_is_the_rule_recomputed_by_hand(speed, deltas, verdict, unresolved):
    records = _records("channels_last", speed, deltas)
    frames = Frames(records)
    finding = t.tricks(frames)
    assert [(r.trick, r.mode) for r in finding.rows] == [("channels_last", "inference"),
                                                         ("channels_last", "train")]  # fmt: skip
    mean, low, high = _accuracy_by_hand(deltas)
    for row in finding.rows:
        s, s_low, s_high, s_verdict = _expected(records, frames, row.mode)
        assert row.speed.speedup == pytest.approx(s) and row.speed.verdict == s_verdict
        assert (row.speed.low, row.speed.high) == (pytest.approx(s_low), pytest.approx(s_high))
        a = row.accuracy
        assert a.seeds == (0, 1, 2) and a.per_seed == pytest.approx([d for d in deltas], abs=1e-12)
        assert (a.difference, a.low, a.high) == (pytest.approx(mean), pytest.approx(low),
                                                 pytest.approx(high))  # fmt: skip
        by_hand = (t.COSTS_ACCURACY if high < 0 and low < -t.EQUIVALENCE_MARGIN else
                   t.FREE if s_verdict == "faster" and low >= -t.EQUIVALENCE_MARGIN else
                   stats.NOT_RESOLVED)  # fmt: skip
        assert row.verdict == by_hand == verdict
        assert row.unresolved == unresolved
        if speed < 1:
            assert row.speed.verdict == "slower"


def test_the_pairing_by_seed_is_narrower_than_welch_where_seeds_share_their_luck():
    """The seeds spread 4 pp, the trick moves each by a near-constant -2 pp: paired, the loss is
    called; unpaired (Welch over the two sides' means) the seed spread would hide it."""
    deltas = (-0.021, -0.018, -0.024)
    row = t.tricks(Frames(_records("compile", 1.3, deltas))).rows[0]
    assert row.verdict == t.COSTS_ACCURACY
    welch = stats.difference_interval(BASE_FINALS, [a + d for a, d in zip(BASE_FINALS, deltas)])
    assert welch.low < 0 < welch.high  # the unpaired interval would not resolve it


def test_seeds_that_differ_between_the_sides_are_refused_not_compared():
    row = t.tricks(Frames(_records("compile", 1.3, (0.0, 0.0, 0.0), seeds=(0, 1, 3)))).rows[0]
    assert row.verdict == t.NOT_COMPARABLE and row.accuracy.refused == t.SEEDS_DIFFER
    assert row.accuracy.difference is None and row.accuracy.trick_seeds == (0, 1, 3)
    text = section(t.tricks(Frames(_records("compile", 1.3, (0.0,) * 3, seeds=(0, 1, 3)))))
    assert "seeds differ: baseline 0,1,2, trick 0,1,3" in text.tables[0][1]["why"].iloc[0]


def test_fewer_finished_seeds_than_min_seeds_are_refused():
    records = _records("compile", 1.3, (0.0, 0.0, 0.0))
    acc = records[-1]
    runs = list(acc.result.runs)
    runs[2] = dataclasses.replace(runs[2], diverged=True, final_test_accuracy=None)
    records[-1] = Record.of("accuracy", acc.spec, dataclasses.replace(acc.result, runs=tuple(runs)),
                            status="diverged", reason="loss became NaN (seed 2)")  # fmt: skip
    row = t.tricks(Frames(records)).rows[0]
    assert row.verdict == t.NOT_COMPARABLE and row.accuracy.refused == t.TOO_FEW_SEEDS
    assert row.accuracy.finished == (3, 2)


def test_a_trick_without_its_baseline_is_not_a_row_and_a_failed_trick_keeps_its_reason():
    records = _records("channels_last", 1.3, (0.0, 0.0, 0.0))
    alone = [r for r in records if trick_of(r.spec) is not None]
    assert not t.tricks(Frames(alone)).measured
    failed = [Record.failed("latency", r.spec, "error", "boom") if r.metric == "latency"
              and trick_of(r.spec) and r.spec.mode == "train" else r for r in records]  # fmt: skip
    row = t.tricks(Frames(failed)).rows[1]
    assert row.speed is None and row.speed_missing == t.NOT_MEASURED
    assert row.failures == ("error: boom",) and "speed" in row.unresolved


def test_the_section_shows_the_findings_numbers():
    finding = t.tricks(Frames(_records("channels_last", 1.3, (0.002, -0.001, 0.004))))
    out = section(finding)
    table = out.tables[0][1]
    row = finding.rows[0]
    assert table["speed-up (95% CI)"].iloc[0] == (f"{row.speed.speedup:.2f}x ({row.speed.low:.2f}"
                                                 f" to {row.speed.high:.2f})")  # fmt: skip
    assert table["accuracy Δ (95% CI)"].iloc[0].startswith(f"{100 * row.accuracy.difference:+.1f} pp")
    assert list(table["verdict"]) == [r.verdict for r in finding.rows]
    assert "free" in out.summary
    assert section(t.tricks(Frames([]))).summary == "Speed tricks: not measured."


def test_paired_difference_interval_is_t_over_the_differences():
    a, b = [0.70, 0.74, 0.66, 0.71], [0.69, 0.745, 0.64, 0.70]
    d = [y - x for x, y in zip(a, b)]
    half = 3.182446305284263 * statistics.stdev(d) / 2  # t 97.5%, 3 dof; sqrt(4)
    iv = stats.paired_difference_interval(a, b)
    assert (iv.estimate, iv.low, iv.high) == (pytest.approx(statistics.fmean(d)),
                                             pytest.approx(statistics.fmean(d) - half),
                                             pytest.approx(statistics.fmean(d) + half))  # fmt: skip
    with pytest.raises(ValueError):
        stats.paired_difference_interval(a, b[:3])


# --- a real tiny run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run: nin (smoke profile, 3 seeds; no large linear layer for Adam to step),
    channels_last and torch.compile against fp32 eager."""
    from cnnbench.cli import main

    out = tmp_path_factory.mktemp("tricks") / "run"
    code = main(["run", "--metrics", "tricks", "--tricks", "channels_last,compile",
                 "--models", "nin", "--profile", "smoke", "--seeds", "0,1,2", "--threads", "2",
                 "--out", str(out), "--no-report"])  # fmt: skip
    return code, RunStore(out).records()


# compiling dominates: each latency round is a fresh process that compiles inference and a
# training step (40-100+ s a graph measured on 2 shared cores), and the training compiles again
REAL_RUN_TIMEOUT_S = 900


@pytest.mark.slow
@pytest.mark.timeout(REAL_RUN_TIMEOUT_S)
def test_a_real_run_gives_each_trick_an_interval_and_a_verdict_on_both_sides(tiny_run):
    code, records = tiny_run
    assert code == 0 and all(r.status == "ok" for r in records), [r.reason for r in records]
    finding = t.tricks(Frames(records))
    assert {(r.trick, r.mode) for r in finding.rows} == {
        (k, m) for k in ("channels_last", "compile") for m in ("inference", "train")}
    allowed = {t.FREE, t.COSTS_ACCURACY, stats.NOT_RESOLVED}
    for row in finding.rows:
        assert row.speed.low is not None and row.speed.low <= row.speed.speedup <= row.speed.high
        acc = row.accuracy
        assert acc.baseline_seeds == acc.trick_seeds == acc.seeds == (0, 1, 2)  # paired by seed
        assert acc.low is not None and acc.low <= acc.difference <= acc.high
        assert row.verdict in allowed
    compiled = [r for r in records if r.spec.compiled and r.metric == "latency"]
    assert compiled and all(r.result.compile_s > 0 for r in compiled)


@pytest.mark.slow
@pytest.mark.timeout(REAL_RUN_TIMEOUT_S)
def test_a_real_run_pairs_the_records_that_the_plan_planned(tiny_run):
    _, records = tiny_run
    by_hand = {}
    for r in records:  # the per-seed accuracies straight from the records
        if r.metric == "accuracy":
            by_hand[trick_of(r.spec)] = {s.seed: s.final_test_accuracy for s in r.result.runs}
    for row in t.tricks(Frames(records)).rows:
        want = [by_hand[row.trick][s] - by_hand[None][s] for s in (0, 1, 2)]
        assert row.accuracy.per_seed == pytest.approx(want)


@pytest.mark.slow
def test_bf16_changes_the_numerics_of_a_tiny_training_and_the_difference_is_shown():
    """fp32 and bf16 autocast trained at the same 3 seeds (same init, same order), in this
    process: 100 images, nin at its smallest size. bf16 rounds every convolution, so each seed's
    training takes another path; its accuracy difference is shown seed by seed. (At this size a
    seed can end at chance on both sides, a difference of 0: the changed numerics are checked
    where they always show, each seed's training loss.)"""
    from cnnbench.data import load_fashion_mnist
    from cnnbench.measure import train

    c = make_config(models=("nin",), metrics=("accuracy",), device="cpu", profile="smoke",
                    out_dir="unused", given={"seeds": (0, 1, 2), "train_subset": 100})  # fmt: skip
    cfg, data = train.config_for(c, "nin"), load_fashion_mnist(None)
    fp32 = tr.spec("nin", train.small_train_size("nin"), 16, "train")
    results = {trick: Record.of("accuracy", spec, train.train(spec, cfg, data))
               for trick, spec in ((None, fp32), ("bf16", trick_spec(fp32, "bf16")))}  # fmt: skip
    row = t.tricks(Frames(list(results.values()))).rows[0]
    assert row.trick == "bf16" and row.accuracy.seeds == (0, 1, 2)
    finals = {k: [s.final_test_accuracy for s in r.result.runs] for k, r in results.items()}
    assert row.accuracy.per_seed == pytest.approx([b - a for a, b in zip(finals[None], finals["bf16"])])
    losses = {k: [s.epochs[-1].train_loss for s in r.result.runs] for k, r in results.items()}
    assert all(a != b for a, b in zip(losses[None], losses["bf16"]))


def test_identical_accuracies_at_chance_are_never_called_free():
    """Both sides at chance (every seed 0.100, as a training too short to learn gives): the
    per-seed differences are exactly 0 and their interval [0, 0], which would rule out any loss
    and call a faster trick free; at chance it says nothing about the trick."""
    train = tr.spec("nin", 72, 16, "train")
    records = [r for r in _records("channels_last", 1.3, (0.0, 0.0, 0.0)) if r.metric == "latency"]
    records += [_accuracy(train, (0.1, 0.1, 0.1)), _accuracy(trick_spec(train, "channels_last"), (0.1, 0.1, 0.1))]
    rows = t.tricks(Frames(records)).rows
    assert rows and all(r.accuracy.at_chance and (r.accuracy.low, r.accuracy.high) == (0.0, 0.0) for r in rows)
    assert all(r.verdict == stats.NOT_RESOLVED and "accuracy" in r.unresolved for r in rows)
    learned = [r for r in _records("channels_last", 1.3, (0.0, 0.0, 0.0))]  # above chance: free
    assert {r.verdict for r in t.tricks(Frames(learned)).rows} == {t.FREE}


def test_the_overview_shows_the_baseline_not_a_faster_trick_beside_it():
    """Guards frames._without_trick_variants: a compiled variant measured beside its fp32 eager
    baseline (the tricks experiment) is not the model's headline throughput."""
    records = _records("compile", 1.5, (0.0, 0.0, 0.0))  # the trick 1.5x faster
    row = Frames(records).row("nin")
    base = next(r for r in records if r.metric == "latency" and r.spec.mode == "inference"
                and trick_of(r.spec) is None)  # fmt: skip
    assert row["infer_images_per_s_best"] == pytest.approx(base.result.images_per_s)
    alone = [r for r in records if trick_of(r.spec) == "compile"]  # a run with --compile for all
    assert Frames(alone).row("nin")["infer_images_per_s_best"] > base.result.images_per_s


def test_a_pair_of_models_is_compared_at_their_baselines_not_at_a_trick():
    """Guards Frames.mine's filter: with a tricks run's variants at the same size and batch,
    the pairwise comparisons (the lineage, exercise 3) take each model's fp32 eager record; by
    the order of the records alone the last variant (compile, 1.5x faster) would win."""
    nin = _records("compile", 1.5, (0.0, 0.0, 0.0))
    other = [dataclasses.replace(r, spec=dataclasses.replace(r.spec, model="nin_copy")) for r in nin]
    frames = Frames(nin + other)
    for mode in ("inference", "train"):
        ra, rb, _ = frames.latency_pair("nin", "nin_copy", mode, 16)
        assert trick_of(ra.spec) is None and trick_of(rb.spec) is None
