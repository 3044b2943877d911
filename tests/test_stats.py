"""The numbers behind every noise call, against independent truths: a bootstrap interval's coverage
of a known median, a ratio interval that sees a 30% shift and not a null one, the minimum effect,
latency percentiles on known samples, and the sample (n - 1) standard deviation of seeds."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from cnnbench import stats
from cnnbench.measure.latency import timing_stats
from cnnbench.report.noise import IQR_RULE, latency_change, noise_control
from tests import trust_records as t


def test_the_median_interval_covers_a_known_median_about_95_percent_of_the_time():
    # lognormal(mu, sigma): median exp(mu) — skewed like latencies, with a known true median
    rng = np.random.default_rng(12)
    mu, sigma, n, datasets = np.log(10.0), 0.25, 60, 200
    covered = 0
    for _ in range(datasets):
        sample = rng.lognormal(mu, sigma, n)
        iv = stats.median_interval(sample)
        covered += iv.low <= np.exp(mu) <= iv.high
    assert 0.90 <= covered / datasets <= 0.99, covered


def test_the_mean_interval_of_a_few_seeds_covers_the_true_mean_95_percent_of_the_time():
    # three and five "seeds" from a normal of known mean: Student's t makes the interval cover
    # it in ~95% of datasets (a normal 1.96 would cover ~88% at three); one seed has no interval
    rng = np.random.default_rng(56)
    for n in (3, 5):
        covered = sum(iv.low <= 0.8 <= iv.high for iv in (
            stats.mean_interval(rng.normal(0.8, 0.01, n)) for _ in range(4000)))  # fmt: skip
        assert 0.935 <= covered / 4000 <= 0.965, (n, covered)
    assert stats.mean_interval([0.8]) is None


def test_the_two_level_interval_covers_a_known_median_across_rounds():
    # three rounds, each with its own offset (drift between worker processes): the interval must
    # still cover the median of the process that generated them in 90-99% of datasets
    rng = np.random.default_rng(34)
    covered, datasets = 0, 200
    for _ in range(datasets):
        rounds = [rng.normal(10.0 + rng.normal(0, 0.05), 0.3, 40) for _ in range(3)]
        iv = stats.median_interval(np.concatenate(rounds), (40, 40, 40))
        covered += iv.low <= 10.0 <= iv.high
    assert 0.90 <= covered / datasets <= 0.99, covered


def test_a_ratio_interval_excludes_1_for_a_30_percent_shift_and_not_for_none():
    rng = np.random.default_rng(5)
    a = rng.normal(10.0, 0.5, 120)
    shifted = rng.normal(13.0, 0.65, 120)
    same = rng.normal(10.0, 0.5, 120)
    up = stats.ratio_interval(a, shifted, (40, 40, 40), (40, 40, 40))
    assert up.excludes(1.0) and up.low > 1.2 and stats.verdict(up) == "slower"
    null = stats.ratio_interval(a, same, (40, 40, 40), (40, 40, 40))
    assert not null.excludes(1.0) and stats.verdict(null) == "within noise"
    down = stats.ratio_interval(shifted, a)
    assert stats.verdict(down) == "faster"


def test_a_change_below_the_minimum_effect_is_within_noise_even_when_the_interval_excludes_1():
    tight = stats.Interval(1.03, 1.02, 1.04)  # excludes 1, but only 3%
    assert tight.excludes(1.0) and stats.verdict(tight) == "within noise"
    assert stats.verdict(stats.Interval(1.08, 1.06, 1.10)) == "slower"


def test_latency_change_uses_samples_and_falls_back_to_the_iqr_rule_without_them():
    a = t.latency("m", 96, 1, "inference", 10.0, seed=1).result
    b = t.latency("m", 96, 1, "inference", 13.0, seed=2).result
    c = latency_change(a, b)
    assert c.method == "bootstrap" and c.verdict == "slower" and c.low > 1.2
    thr = c.throughput()
    assert thr.ratio == pytest.approx(1 / c.ratio) and thr.high == pytest.approx(1 / c.low)
    old_a = t.latency("m", 96, 1, "inference", 10.0, seed=1, kept=False).result
    old_b = t.latency("m", 96, 1, "inference", 10.3, seed=2, kept=False).result
    iqr = latency_change(old_a, old_b)
    # 3% against an IQR/median of about 2.7% (normal: 1.35 sd, sd 2%): a change by the old rule
    assert iqr.method == IQR_RULE and iqr.low is None
    assert iqr.significant == (abs(iqr.ratio - 1) > max(old_a.iqr_over_median, old_b.iqr_over_median))


def test_the_control_is_noisy_only_when_its_ratio_is_outside_the_noise():
    base = [t.latency("googlenet", 96, b, m, 10.0 * b, seed=b) for b, m in ((1, "inference"), (16, "train"))]  # fmt: skip
    same = [t.latency("googlenet_ls", 96, b, m, 10.0 * b, seed=b + 100) for b, m in ((1, "inference"), (16, "train"))]  # fmt: skip
    drift = [t.latency("googlenet_ls", 96, 1, "inference", 13.0, seed=7), same[1]]
    assert not noise_control(base + same).noisy
    control = noise_control(base + drift)
    assert control.noisy and [p[:2] for p in control.pairs] == [("inference", 1), ("train", 16)]
    assert noise_control(base) is None  # no pair, no control


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
