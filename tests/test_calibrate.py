"""cnnbench calibrate: its workloads hold the truth they claim, and its estimates are counted
from the runs it made."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import statistics
import time

import pytest
import torch

from cnnbench import calibrate as cal
from cnnbench.cli import main


def _child_factor(queue) -> None:
    queue.put((cal._factor(), cal._factor()))


def test_each_process_draws_its_own_factor_and_keeps_it():
    ctx = mp.get_context("fork")  # a forked worker inherits the parent's memory, not its factor
    mine = cal._factor()
    queue = ctx.Queue()
    children = [ctx.Process(target=_child_factor, args=(queue,)) for _ in range(4)]
    for p in children:
        p.start()
    drawn = [queue.get(timeout=60) for _ in children]
    for p in children:
        p.join()
    assert all(first == second for first, second in drawn)  # one factor per process
    assert len({first for first, _ in drawn} | {mine}) == 5  # each process its own
    assert cal._factor() == mine


def test_the_sleeper_waits_its_time_times_the_process_factor(monkeypatch):
    """The truth the coverage is checked against: a wait never shorter than asked (the clock is
    spun to the deadline), and with the process factor fixed the median is the asked time."""
    monkeypatch.setattr(cal, "_factor", lambda: 1.5)
    monkeypatch.setattr(cal, "ITERATION_SD", 0.0)
    model = cal.Sleeper(2.0)
    x = torch.zeros(1, 1, 8, 8)
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        out = model(x)
        times.append((time.perf_counter() - t0) * 1e3)
    assert out.shape == (1, 10)
    assert min(times) >= 3.0  # 2 ms x 1.5, never less
    assert statistics.median(times) < 3.0 * 1.05  # sleep()'s overshoot is spun away, not added


def test_a_rate_carries_wilsons_interval():
    r = cal.Rate(27, 30)
    low, high = r.interval
    # Wilson by hand: p = 0.9, n = 30, z = 1.96
    z, p, n = 1.959963984540054, 0.9, 30
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert cal.Rate(0, 5).interval[0] == 0.0 and cal.Rate(5, 5).interval[1] == 1.0


def _calibration(**rates) -> cal.Calibration:
    """A calibration on target everywhere, except the rates given."""
    on_target = dict(
        coverage=cal.Rate(114, 120), paired_false_alarm=cal.Rate(1, 30),
        paired_power_10=cal.Rate(15, 30), paired_power_25=cal.Rate(27, 30),
        compare_false_alarm=cal.Rate(5, 116), compare_power_10=cal.Rate(10, 29),
        compare_power_25=cal.Rate(25, 29), compute_paired_false_alarm=cal.Rate(1, 30),
        compute_compare_false_alarm=cal.Rate(2, 58),
    )  # fmt: skip
    return cal.Calibration(replicates=30, rounds=7, min_time_s=0.06, process_sd=0.06, iteration_sd=0.02,
                           resolution_by_rounds=(), round_sd_measured=0.06, overhead_ms=0.03, compute_round_sd=0.05,
                           wall_s=1.0, **{**on_target, **rates})  # fmt: skip


@pytest.mark.parametrize("rates,failed", [
    ({}, None),
    # each estimate off target while its own Wilson interval still reaches the target: a check
    # that passed on the interval would pass these
    ({"coverage": cal.Rate(106, 120)}, "coverage 92-98%"),  # 88%, interval 81-93%
    ({"coverage": cal.Rate(119, 120)}, "coverage 92-98%"),  # 99%: too wide an interval
    ({"paired_false_alarm": cal.Rate(4, 30)}, "false alarms <= 6%"),  # 13%, interval 5-30%
    ({"compute_paired_false_alarm": cal.Rate(3, 30)}, "false alarms <= 6%"),  # the real machine's
    # across runs the real kernel shows the machine's drift between sessions: shown, not judged
    ({"compute_compare_false_alarm": cal.Rate(10, 58)}, None),
    ({"compare_power_25": cal.Rate(20, 29)}, "power at 25% >= 80%"),  # 69%, interval 51-83%
])  # fmt: skip
def test_the_checks_judge_each_estimate_not_how_wide_its_interval_is(rates, failed):
    checks = _calibration(**rates).checks()
    assert [name for name, ok in checks.items() if not ok] == ([failed] if failed else [])


@pytest.mark.serial  # it checks the harness's own overhead per call (< 10% of a 4 ms sleep): a
# timing, which a test beside it on the other core pushed to 0.25 ms in CI on a 2-core EPYC
def test_calibrate_counts_every_interval_and_comparison_of_its_runs(tmp_path):
    """A tiny calibration end to end (2 runs of each workload, 2 rounds): every count follows
    from the runs it made, and the coverage is recounted here from the records on disk."""
    from cnnbench.results import RunStore

    out = tmp_path / "cal"
    assert main(["calibrate", "--out", str(out), "--replicates", "2", "--rounds", "2"]) == 0
    got = json.loads((out / "calibration.json").read_text())
    models = len(cal.SLEEP_MODELS)
    assert got["coverage"]["n"] == 2 * models
    assert got["paired_false_alarm"]["n"] == got["paired_power_25"]["n"] == 2
    assert got["compare_false_alarm"]["n"] == models  # one pair of consecutive runs
    assert got["compute_compare_false_alarm"]["n"] == len(cal.COMPUTE_MODELS)
    assert [row[0] for row in got["resolution_by_rounds"]] == [2]
    covered = 0
    for i in range(2):
        records = {r.spec.model: r for r in RunStore(out / f"sleep-{i:02d}").records()}
        assert set(records) == {*cal.SLEEP_MODELS, cal.EXACT_MODEL}
        assert all(r.status == "ok" and r.result.rounds == 2 for r in records.values())
        # the truth: the asked time plus the harness's own cost, from the noise-free twin
        overhead = records.pop(cal.EXACT_MODEL).result.latency_ms_p50 - cal.SLEEP_BASE_MS
        # a sleep never ends early; late by its wake-up (0.12 ms median, 0.2 ms at p90 on a loaded
        # 2-vCPU EPYC VM, measured 2026-12-07: 5% of the 4 ms failed CI at 0.204 ms) and the
        # harness's own cost, which benchmarks/bench_harness.py bounds per call
        assert 0 <= overhead < 0.10 * cal.SLEEP_BASE_MS
        for r in records.values():
            truth = cal.SLEEP_BASE_MS * cal.SLEEP_MODELS[r.spec.model] + overhead
            covered += r.result.latency_ms_p50_ci_low <= truth <= r.result.latency_ms_p50_ci_high
    assert got["coverage"]["hits"] == covered
    # a second calibration into a used folder is refused, the first left as it was
    assert main(["calibrate", "--out", str(out), "--replicates", "1"]) == 2


def test_calibrate_leaves_the_registry_and_the_environment_as_they_were(tmp_path, monkeypatch):
    import os

    from cnnbench import models

    monkeypatch.setenv("CNNBENCH_PLUGINS", "tests.plugins.failing_models")
    before = models.list_models("all")
    cal.calibrate(tmp_path / "c", replicates=1, rounds=2)
    assert os.environ["CNNBENCH_PLUGINS"] == "tests.plugins.failing_models"
    assert models.list_models("all") == before and not {*cal.SLEEP_MODELS, cal.EXACT_MODEL} & set(before)
