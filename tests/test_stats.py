"""The numbers behind every noise call, against truths the test knows, with the noise this machine
shows: between its worker processes (rounds) latency medians spread about 6% (log standard
deviation, 5-11% measured over 10 rounds of four models, most of it drift that every model of a
round shares), iterations within a round about 2%. The simulation draws exactly that and checks
what the report claims: intervals that cover, identical pairs rarely called, real changes found.
Student's t quantiles against a printed table; the binomial interval and the seed statistics
against their formulas."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from cnnbench import stats
from cnnbench.measure.latency import timing_stats
from cnnbench.analysis.noise import IQR_RULE, latency_change, noise_control, run_noise
from tests import trust_records as t

ROUND_SD, ITERATION_SD = 0.06, 0.02  # log scale: between processes, within a process
DATASETS = 1000


def _process_medians(rng, rounds: int, median: float, shared=None, n: int = 20) -> np.ndarray:
    """The round medians of one model: each round a process whose median sits off the truth by
    a drawn factor (``shared``: part of it the same for every model of that round), n iterations
    around it."""
    offsets = rng.normal(0, ROUND_SD, rounds) if shared is None else shared
    times = np.exp(np.log(median) + offsets[:, None] + rng.normal(0, ITERATION_SD, (rounds, n)))
    return np.median(times, axis=1)


@pytest.mark.parametrize("rounds", [3, 5, 8])
def test_the_median_interval_covers_the_process_median_95_percent_of_the_time(rounds):
    rng = np.random.default_rng(rounds)
    covered = 0
    for _ in range(DATASETS):
        meds = _process_medians(rng, rounds, 10.0)
        iv = stats.median_interval(meds, (1,) * rounds)  # one "sample" per round: its median
        covered += iv.low <= 10.0 <= iv.high
    assert 0.92 <= covered / DATASETS <= 0.98, covered


@pytest.mark.parametrize("rounds", [3, 5])
@pytest.mark.parametrize("paired", [False, True])
def test_identical_pairs_are_rarely_called_and_a_25_percent_change_usually(rounds, paired):
    """Unpaired: every model's rounds drift on their own (two runs). Paired: two thirds of the
    round-to-round variance is drift every model of a round shares (as measured here), which the
    per-round ratio cancels."""
    rng = np.random.default_rng(100 + rounds + paired)
    false_alarms = found = 0
    for _ in range(DATASETS):
        if paired:
            shared = rng.normal(0, ROUND_SD * math.sqrt(2 / 3), rounds)
            own = lambda: shared + rng.normal(0, ROUND_SD * math.sqrt(1 / 3), rounds)  # noqa: E731
        else:
            own = lambda: rng.normal(0, ROUND_SD, rounds)  # noqa: E731
        a, a2, b = (_process_medians(rng, rounds, m, own()) for m in (10.0, 10.0, 12.5))
        same, _ = stats.ratio_interval(a, a2, paired=paired)
        slower, _ = stats.ratio_interval(a, b, paired=paired)
        false_alarms += stats.call(same) != stats.NOT_RESOLVED
        found += stats.call(slower) == "slower"
    assert false_alarms / DATASETS <= 0.06, false_alarms
    assert found / DATASETS >= 0.80, found


def test_the_two_level_bootstrap_it_replaces_did_not_cover():
    """What the report's '95% CI' was before (rounds with replacement, then iterations): with 3
    rounds it is about the range of the three round medians, which holds the process median at
    most 1 − 2 x 0.5^3 = 75% of the time; this machine's noise makes it ~70%. Kept as evidence."""
    rng = np.random.default_rng(7)
    covered, datasets = 0, 300
    for _ in range(datasets):
        offsets = rng.normal(0, ROUND_SD, 3)
        rounds = [np.exp(np.log(10.0) + o + rng.normal(0, ITERATION_SD, 20)) for o in offsets]
        medians = []
        for _ in range(400):
            picked = rng.integers(0, 3, 3)
            medians.append(np.median(np.concatenate([rounds[j][rng.integers(0, 20, 20)] for j in picked])))
        low, high = np.percentile(medians, [2.5, 97.5])
        covered += low <= 10.0 <= high
    assert covered / datasets < 0.80, covered


def test_a_stated_resolution_is_what_a_comparison_of_two_of_its_models_can_call():
    """The run's resolution (from all its models' rounds) against the truth: for identical
    models the ratio interval's half-width is about the stated callable change; a change of the
    stated detectable size is called about 80% of the time (here: at least 70%)."""
    rng = np.random.default_rng(3)
    rounds, hits, widths, stated = 5, 0, [], []
    for _ in range(400):
        shared = rng.normal(0, ROUND_SD * math.sqrt(2 / 3), rounds)
        own = lambda: shared + rng.normal(0, ROUND_SD * math.sqrt(1 / 3), rounds)  # noqa: E731
        models = [_process_medians(rng, rounds, 10.0 * k, own()) for k in (1.0, 1.3, 0.8, 2.0)]
        logs = np.log(np.array(models))
        res = _resolution(logs)
        stated.append(res.callable)
        a, b = models[0], _process_medians(rng, rounds, 10.0 * (1 + res.detectable), own())
        iv, _ = stats.ratio_interval(a, b, paired=True)
        hits += stats.call(iv, res.callable) == "slower"
        same, _ = stats.ratio_interval(models[0], _process_medians(rng, rounds, 10.0, own()), paired=True)
        widths.append(math.expm1(math.log(same.high / same.low) / 2))
    assert statistics.median(widths) == pytest.approx(statistics.median(stated), rel=0.25)
    assert hits / 400 >= 0.70, hits


def _resolution(logs: np.ndarray) -> stats.Resolution:
    """run_noise's arithmetic on a models x rounds table of log medians, written out here."""
    m, r = logs.shape
    resid = logs - logs.mean(axis=1, keepdims=True)
    resid = resid - resid.mean(axis=0, keepdims=True)
    sigma = math.sqrt((resid**2).sum() / ((m - 1) * (r - 1)))
    return stats.resolution(sigma * math.sqrt(2 / r), r - 1)


def test_run_noise_states_the_resolution_of_its_records():
    rng = np.random.default_rng(11)
    shared = rng.normal(0, 0.04, 4)
    recs, logs = [], []
    for i, (model, ms) in enumerate((("a", 10.0), ("b", 14.0), ("c", 20.0))):
        offsets = shared + rng.normal(0, 0.03, 4)
        recs.append(t.latency(model, 96, 1, "inference", ms, seed=i, rounds=4, offsets=offsets))
        logs.append(np.log(recs[-1].result.round_medians_ms))
    noise = run_noise(recs, paired=True)
    expected = _resolution(np.array(logs))
    assert noise.by_key[("inference", 1)] == expected and noise.rounds[("inference", 1)] == 4
    unpaired = run_noise(recs, paired=False).by_key[("inference", 1)]
    assert unpaired.dof == 2 * 3 and unpaired.callable > expected.callable  # drift not cancelled


@pytest.mark.parametrize("dof,t975,t80", [(1, 12.706, 1.376), (2, 4.303, 1.061), (3, 3.182, 0.978),
                                          (4, 2.776, 0.941), (9, 2.262, 0.883), (30, 2.042, 0.854)])  # fmt: skip
def test_students_t_against_the_printed_table(dof, t975, t80):
    assert stats.t_975(dof) == pytest.approx(t975, abs=5e-4)
    assert stats.t_quantile(0.8, dof) == pytest.approx(t80, abs=5e-4)
    assert stats.t_quantile(0.025, dof) == pytest.approx(-t975, abs=5e-4)


def test_the_mean_interval_of_a_few_seeds_covers_the_true_mean_95_percent_of_the_time():
    # three and five "seeds" from a normal of known mean: Student's t makes the interval cover
    # it in ~95% of datasets (a normal 1.96 would cover ~88% at three); one seed has no interval
    rng = np.random.default_rng(56)
    for n in (3, 5):
        covered = sum(iv.low <= 0.8 <= iv.high for iv in (
            stats.mean_interval(rng.normal(0.8, 0.01, n)) for _ in range(4000)))  # fmt: skip
        assert 0.935 <= covered / 4000 <= 0.965, (n, covered)
    assert stats.mean_interval([0.8]) is None


def test_the_binomial_interval_of_one_seed_is_wilsons():
    iv = stats.binomial_interval(0.5, 2000)
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 2000 + z * z / (4 * 2000**2)) / (1 + z * z / 2000)
    assert (iv.low, iv.high) == pytest.approx((0.5 - half, 0.5 + half))
    # a proportion of known truth: Wilson's interval covers it about 95% of the time
    rng = np.random.default_rng(4)
    hits = sum(stats.binomial_interval(k / 500, 500).low <= 0.3 <= stats.binomial_interval(k / 500, 500).high
               for k in rng.binomial(500, 0.3, 2000))  # fmt: skip
    assert 0.93 <= hits / 2000 <= 0.97


def test_the_rule_calls_only_outside_the_interval_and_at_least_the_floor():
    assert stats.call(stats.Interval(1.30, 1.20, 1.41)) == "slower"
    assert stats.call(stats.Interval(0.80, 0.70, 0.90)) == "faster"
    assert stats.call(stats.Interval(1.10, 0.98, 1.22)) == stats.NOT_RESOLVED  # includes 1
    assert stats.call(stats.Interval(1.03, 1.02, 1.04), floor=0.05) == stats.NOT_RESOLVED  # below it
    assert stats.call(stats.Interval(1.06, 1.02, 1.10), floor=0.05) == "slower"
    assert stats.call(stats.Interval(1.2, None, None)) == stats.NOT_RESOLVED  # no interval
    diff = stats.Interval(0.03, 0.01, 0.05)
    assert stats.call(diff, none=0.0, relative=False, up="higher", down="lower") == "higher"


def test_latency_change_pairs_rounds_in_one_run_and_falls_back_to_the_iqr_rule_without_samples():
    shared = np.array([0.08, -0.06, 0.02])  # drift both models saw, round by round
    a = t.latency("m", 96, 1, "inference", 10.0, seed=1, offsets=shared).result
    b = t.latency("m", 96, 1, "inference", 10.8, seed=2, offsets=shared + [0.005, -0.004, 0.0]).result
    paired = latency_change(a, b, paired=True)
    assert paired.method == "paired" and paired.verdict == "slower" and paired.low > 1.0
    unpaired = latency_change(a, b, paired=False)  # the drift no longer cancels
    assert unpaired.method == "unpaired" and unpaired.verdict == stats.NOT_RESOLVED
    thr = paired.throughput()
    assert thr.ratio == pytest.approx(1 / paired.ratio) and thr.high == pytest.approx(1 / paired.low)
    assert latency_change(a, b, paired=True, floor=0.10).verdict == stats.NOT_RESOLVED  # 8% < 10%
    old_a = t.latency("m", 96, 1, "inference", 10.0, seed=1, kept=False).result
    old_b = t.latency("m", 96, 1, "inference", 10.3, seed=2, kept=False).result
    iqr = latency_change(old_a, old_b, paired=True)
    assert iqr.method == IQR_RULE and iqr.low is None
    assert iqr.significant == (abs(iqr.ratio - 1) > max(old_a.iqr_over_median, old_b.iqr_over_median))


def test_the_control_passes_only_within_noise_and_with_the_power_the_run_states():
    def pair(ls_factor, ls_offsets, base_offsets=(0.0,) * 5):
        recs = []
        for mode, b in (("inference", 1), ("train", 16)):
            recs.append(t.latency("googlenet", 96, b, mode, 10.0 * b, seed=b, rounds=5, offsets=base_offsets))
            recs.append(t.latency("googlenet_ls", 96, b, mode, 10.0 * b * ls_factor, seed=b + 100,
                                  rounds=5, offsets=ls_offsets))  # fmt: skip
            for i, model in enumerate(("nin", "alexnet")):  # the run's other models: its noise
                recs.append(t.latency(model, 224, b, mode, 30.0 * b * (i + 1), seed=b + 200 + i, rounds=5,
                                      offsets=np.array(base_offsets) + [0.03, -0.03, 0.0, 0.02, -0.02][::1 - 2 * i]))  # fmt: skip
        return recs

    calm = [0.0, 0.004, -0.004, 0.002, -0.002]  # quieter than the run's other models
    good = noise_control(pair(1.0, calm))
    assert good.passed and not good.noisy and [(p.mode, p.batch) for p in good.pairs] == [("inference", 1), ("train", 16)]
    drifted = noise_control(pair(1.3, calm))  # the same network 30% slower: broken
    assert drifted.noisy and not drifted.passed
    wild = [0.0, 0.12, -0.12, 0.10, -0.10]  # agrees on average, with a wide interval
    weak = noise_control(pair(1.0, wild))
    assert not weak.noisy and not weak.passed and weak.floor("inference", 1) > 0.05
    assert noise_control([r for r in pair(1.0, calm) if r.spec.model != "googlenet_ls"]) is None


def test_latency_percentiles_on_known_samples():
    times = [float(x) for x in range(1, 101)]  # 1..100 ms
    s = timing_stats(times, batch_size=2)
    # linear interpolation between order statistics (numpy's default, type 7)
    assert s["latency_ms_p50"] == pytest.approx(50.5)
    assert s["latency_ms_p90"] == pytest.approx(90.1)
    assert s["latency_ms_p99"] == pytest.approx(99.01)
    assert s["latency_ms_iqr"] == pytest.approx(75.25 - 25.75)
    assert s["latency_ms_min"] == 1.0 and s["latency_ms_mean"] == pytest.approx(50.5)
    assert s["latency_ms_std"] == pytest.approx(statistics.stdev(times))  # n - 1
    assert s["images_per_s"] == pytest.approx(2 / 0.0505)


def test_seed_accuracy_spread_is_the_sample_standard_deviation(monkeypatch):
    import torch

    from cnnbench.config import TrainConfig
    from cnnbench.measure import train
    from cnnbench.results import Spec
    from cnnbench.results.types import SeedRun

    finals = {0: 0.60, 1: 0.64, 2: 0.71}

    def fake_seed(spec, cfg, lr, data, train_idx, test_idx, seed, *args, **kwargs):
        return SeedRun(seed, (), False, finals[seed], 1.0, None, None)

    monkeypatch.setattr(train, "_train_seed", fake_seed)
    monkeypatch.setattr(train, "balanced_subset", lambda labels, n, **kw: torch.arange(10))

    class Data:
        train_labels = test_labels = torch.zeros(10, dtype=torch.long)

    cfg = TrainConfig(seeds=(0, 1, 2), batch_size=16)
    res = train.train(Spec("nin", 72, 16, mode="train"), cfg, Data())
    values = list(finals.values())
    assert res.test_accuracy_std == pytest.approx(statistics.stdev(values))  # 0.0551, not 0.0450
    assert res.test_accuracy_std != pytest.approx(np.std(values))
    assert res.test_accuracy_mean == pytest.approx(statistics.fmean(values))


def test_a_recorded_interval_is_kept_and_a_missing_one_comes_from_the_samples():
    times, sizes = [10.0, 10.2, 9.9, 11.0, 11.1, 10.9, 10.4, 10.5, 10.3], [3, 3, 3]
    assert stats.recorded_or_median_interval(9.0, 12.0, times, sizes) == (9.0, 12.0)
    logs = [math.log(statistics.median(times[i : i + 3])) for i in (0, 3, 6)]
    half = 4.302652729911275 * statistics.stdev(logs) / math.sqrt(3)  # t 97.5%, 2 dof
    low, high = stats.recorded_or_median_interval(None, None, times, sizes)
    assert (low, high) == pytest.approx((math.exp(statistics.fmean(logs) - half), math.exp(statistics.fmean(logs) + half)))
    assert stats.recorded_or_median_interval(None, None, [], None) == (None, None)


def test_a_paired_change_is_the_centre_of_its_interval_not_the_ratio_of_pooled_medians():
    """B is 10% faster than A in each of two interleaved rounds, but the machine slowed between
    the rounds and each model spent more of its samples in a different round, so the pooled
    medians say B is 20% slower (as a compile speed-up once read 1.125 against its paired
    interval 1.097-1.098 in CI)."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Lat:
        times_ms: tuple
        round_sizes: tuple
        latency_ms_p50: float
        round_medians_ms: tuple = ()
        iqr_over_median: float = 0.0

    def lat(rounds):
        times = tuple(ms * (1 + 0.001 * i) for ms, n in rounds for i in range(n))
        return Lat(times, tuple(n for _, n in rounds), statistics.median(times))

    a, b = lat([(30.0, 30), (40.0, 10)]), lat([(27.0, 10), (36.0, 30)])
    assert b.latency_ms_p50 / a.latency_ms_p50 > 1.15  # what the pooled medians say
    c = latency_change(a, b, paired=True)
    per_round = [statistics.median(b.times_ms[:10]) / statistics.median(a.times_ms[:30]),
                 statistics.median(b.times_ms[10:]) / statistics.median(a.times_ms[30:])]  # fmt: skip
    assert c.ratio == pytest.approx(math.sqrt(per_round[0] * per_round[1]))  # their geometric mean
    assert c.low <= c.ratio <= c.high
