"""Time to accuracy, MLPerf-style (issue 24, part 3): the clock includes every evaluation, the
olympic score and its interval by hand, a never-reached run is the slowest, two void the result,
and a run that converges much faster than the others is flagged."""

from __future__ import annotations

import dataclasses
import statistics
import time
from types import SimpleNamespace

import pytest
import torch

from cnnbench.analysis import time_to_accuracy as tta
from cnnbench.analysis.frames import Frames
from cnnbench.measure import train
from cnnbench.measure.train import TrainConfig
from cnnbench.report.exercises.time_to_accuracy import section, time_to_accuracy
from cnnbench.results import Record, Spec
from cnnbench.results.types import EpochStats, SeedRun, TrainResult

# Student's t 97.5% quantiles from a printed table (not from cnnbench.stats)
T_975 = {2: 4.302652729911275, 3: 3.182446305284263}

SPEC = Spec("nin", 72, 16, mode="train")


# --- the olympic score, by hand ----------------------------------------------------------------


def test_the_olympic_score_drops_the_fastest_and_the_slowest():
    o = tta.olympic_score([12.0, 10.0, 15.0, 11.0, 30.0])
    assert o.verdict == tta.SCORED
    assert o.score_s == pytest.approx((12.0 + 15.0 + 11.0) / 3)  # 10 and 30 dropped
    assert (o.fastest, o.slowest, o.kept) == (1, 4, (0, 2, 3))
    assert (o.kept_min_s, o.kept_max_s) == (11.0, 15.0)


def test_the_score_interval_is_tukey_mclaughlin_by_hand():
    o = tta.olympic_score([12.0, 10.0, 15.0, 11.0, 30.0])
    winsorized = [11.0, 11.0, 12.0, 15.0, 15.0]  # 10 -> 11 and 30 -> 15, by hand
    se = statistics.stdev(winsorized) / ((1 - 2 / 5) * 5**0.5)
    half = T_975[2] * se  # 5 runs, 1 trimmed a side: 5 - 2 - 1 = 2 degrees of freedom
    assert o.interval.estimate == pytest.approx(38 / 3)
    assert (o.interval.low, o.interval.high) == pytest.approx((38 / 3 - half, 38 / 3 + half))


def test_a_run_that_never_reaches_the_target_counts_as_the_slowest():
    o = tta.olympic_score([12.0, 10.0, None, 11.0, 14.0])
    assert o.verdict == tta.SCORED and o.not_reached == (2,)
    assert o.slowest == 2 and o.fastest == 1
    assert o.score_s == pytest.approx((12.0 + 11.0 + 14.0) / 3)  # 14 s, the slowest finite, kept
    # its interval winsorizes the missing run to the slowest kept one, as any slowest run
    se = statistics.stdev([11.0, 11.0, 12.0, 14.0, 14.0]) / ((1 - 2 / 5) * 5**0.5)
    assert o.interval.high == pytest.approx(37 / 3 + T_975[2] * se)


def test_two_runs_that_never_reach_the_target_make_the_result_invalid():
    o = tta.olympic_score([12.0, None, 11.0, None, 14.0])
    assert o.verdict == tta.INVALID and o.score_s is None and o.not_reached == (1, 3)


def test_fewer_than_five_runs_are_not_scored():
    o = tta.olympic_score([12.0, 10.0, 15.0, 11.0])
    assert o.verdict == tta.TOO_FEW_RUNS and o.score_s is None


# --- the fast-convergence flag ---------------------------------------------------------------


def _bound(others: list[int]) -> float:
    """The others' 95% prediction lower bound, by hand."""
    k = len(others)
    return statistics.mean(others) - T_975[k - 1] * statistics.stdev(others) * (1 + 1 / k) ** 0.5


def test_a_run_far_below_the_others_epochs_is_flagged():
    assert _bound([4, 4, 5, 4]) - 1 == pytest.approx(1.4710, abs=1e-3)
    assert tta.fast_runs([4, 4, 5, 4, 1]) == (False, False, False, False, True)  # 1 < 1.47
    assert tta.fast_runs([4, 4, 5, 4, 2]) == (False,) * 5  # 2: within one epoch of the bound
    # no spread among the others: the bound is their epoch, less the one-epoch granularity
    assert tta.fast_runs([3, 3, 3, 3, 2]) == (False,) * 5
    assert tta.fast_runs([3, 3, 3, 3, 1]) == (False, False, False, False, True)
    # a run that never reached the target is not an 'other' (its epochs are unknown)
    assert tta.fast_runs([None, 3, 3, 1]) == (False, False, False, True)
    assert tta.fast_runs([None, 3, 1]) == (False, False, False)  # one other: no spread to judge


# --- findings from records ---------------------------------------------------------------------


def _seed_run(seed: int, accuracies, *, target: float, epoch_s: float = 2.0, eval_s: float = 0.5):
    epochs = tuple(EpochStats(i + 1, 1.0, 0.5, a, epoch_s, eval_s, 1000 / epoch_s)
                   for i, a in enumerate(accuracies))  # fmt: skip
    first = next((i + 1 for i, a in enumerate(accuracies) if a >= target), None)
    return SeedRun(seed, epochs, False, accuracies[-1], epoch_s * len(accuracies),
                   time_to_target_s=first and first * epoch_s, compile_s=None,
                   mlperf_time_to_target_s=first and first * (epoch_s + eval_s),
                   epochs_to_target=first)  # fmt: skip


def _record(runs, target: float | None = 0.5) -> Record:
    accs = [r.final_test_accuracy for r in runs]
    result = TrainResult(
        recipe="modified", epochs=max(len(r.epochs) for r in runs), optimizer="adam", lr=5e-4,
        momentum=0.0, label_smoothing=0.0, train_images=1000, test_images=500,
        target_accuracy=target, seeds=tuple(r.seed for r in runs), runs=tuple(runs),
        diverged_seeds=(), test_accuracy_mean=statistics.mean(accs), test_accuracy_std=0.0,
        test_accuracy_min=min(accs), test_accuracy_max=max(accs), train_time_s_mean=1.0,
        images_per_s_mean=1.0,
    )  # fmt: skip
    # through JSON and back, as a report reads a run folder
    return Record.from_dict(dataclasses.asdict(Record.of("accuracy", SPEC, result)))


# epochs to 0.5 per seed: 2, 3, 3, 4, never (seed 4) -> MLPerf times 5.0, 7.5, 7.5, 10.0, inf
CURVES = {0: [0.4, 0.5, 0.6, 0.7], 1: [0.3, 0.4, 0.55, 0.6], 2: [0.3, 0.45, 0.5, 0.6],
          3: [0.2, 0.3, 0.4, 0.5], 4: [0.1, 0.2, 0.3, 0.45]}  # fmt: skip


def test_the_finding_scores_the_mlperf_clock_of_each_seed():
    record = _record([_seed_run(s, c, target=0.5) for s, c in CURVES.items()])
    (f,) = tta.time_to_accuracy(Frames([record]))
    assert f.verdict == tta.SCORED and f.not_reached_seeds == (4,)
    assert f.score.score_s == pytest.approx((7.5 + 7.5 + 10.0) / 3)  # 5.0 and inf dropped
    assert [r.role for r in f.runs] == ["fastest", "kept", "kept", "kept", "slowest"]
    assert [r.epochs_to_target for r in f.runs] == [2, 3, 3, 4, None]
    assert f.epoch_s_median == 2.5 and f.fast_seeds == ()


def test_the_finding_flags_a_fast_seed_and_voids_two_misses():
    curves = {**CURVES, 0: [0.9, 0.9, 0.9, 0.9], 1: [0.1, 0.1, 0.1, 0.4]}  # 1 epoch; a 2nd miss
    (f,) = tta.time_to_accuracy(Frames([_record([_seed_run(s, c, target=0.5) for s, c in curves.items()])]))
    assert f.verdict == tta.INVALID and f.not_reached_seeds == (1, 4) and f.score.score_s is None
    fast = {**CURVES, 0: [0.9, 0.9, 0.9, 0.9], 1: [0.1, 0.1, 0.1, 0.6], 2: [0.1, 0.1, 0.1, 0.6]}
    (g,) = tta.time_to_accuracy(Frames([_record([_seed_run(s, c, target=0.5) for s, c in fast.items()])]))
    # others 4, 4, 4 (seed 3 reaches at 4): no spread, 1 < 4 - 1
    assert g.verdict == tta.SCORED and g.fast_seeds == (0,)


def test_records_written_before_the_clock_load_and_are_not_scored():
    record = _record([_seed_run(s, c, target=0.5) for s, c in CURVES.items()])
    old = dataclasses.asdict(record)
    for run in old["values"]["runs"]:
        del run["mlperf_time_to_target_s"], run["epochs_to_target"]
    (f,) = tta.time_to_accuracy(Frames([Record.from_dict(old)]))
    assert f.verdict == tta.NO_CLOCK and f.score is None
    (g,) = tta.time_to_accuracy(Frames([_record([_seed_run(0, [0.4], target=0.5)], target=None)]))
    assert g.verdict == tta.NO_TARGET


# --- the section: prose from the finding ----------------------------------------------------------


def test_the_section_states_the_clock_the_runs_and_the_score():
    record = _record([_seed_run(s, c, target=0.5) for s, c in CURVES.items()])
    s = time_to_accuracy(Frames([record]))
    assert "every evaluation" in s.intro and "warm-up" in s.intro
    (_, scores), (_, runs) = s.tables
    assert scores.loc[0, "score s"] == f"{25 / 3:.1f}" and scores.loc[0, "reached"] == 4
    assert scores.loc[0, "kept min–max s"] == "7.5–10.0"
    assert list(runs["MLPerf clock s"]) == ["5.00", "7.50", "7.50", "10.00", "not reached"]
    assert runs.loc[4, "in the score"] == "dropped (slowest)"
    text = " ".join(s.sentences)
    assert f"scored {25 / 3:.1f} s" in text and "never reached the target" in text
    assert "1,000 images per epoch" in text and "not an MLPerf result" in text


def test_the_section_says_invalid_and_too_few_and_nothing():
    curves = {**CURVES, 1: [0.1, 0.1, 0.1, 0.4]}
    s = section(tta.time_to_accuracy(Frames([_record([_seed_run(k, c, target=0.5) for k, c in curves.items()])])))
    assert "invalid — seeds 1 and 4 never reached the target" in " ".join(s.sentences)
    few = section(tta.time_to_accuracy(Frames([_record([_seed_run(0, [0.6], target=0.5)])])))
    assert "not scored — 1 run, and" in few.sentences[0]
    assert "No accuracy records" in section(()).sentences[0]


# --- the clock in measure/train.py: evaluation is inside it -----------------------------------


def _data(n_train: int = 40, n_test: int = 30):
    g = torch.Generator().manual_seed(0)
    def part(n):
        return torch.randint(0, 255, (n, 28, 28), dtype=torch.uint8, generator=g), torch.arange(n) % 10
    (train_x, train_y), (test_x, test_y) = part(n_train), part(n_test)
    return SimpleNamespace(train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)


EVAL_SLEEP_S = 0.2


def test_the_mlperf_clock_includes_every_evaluation_up_to_the_target(monkeypatch):
    """Evaluation made slow (0.2 s) and scripted to reach 0.5 at epoch 2: the MLPerf clock holds
    both epochs' passes and both evaluations; the training-only clock holds neither evaluation."""
    monkeypatch.setattr(train.workload, "build_model", lambda spec: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)))  # fmt: skip
    scripted = iter([0.1, 0.6, 0.4])
    monkeypatch.setattr(train, "evaluate", lambda *a: time.sleep(EVAL_SLEEP_S) or next(scripted))
    cfg = TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=1e-3, train_subset=40,
                      test_subset=30, target_accuracy=0.5)  # fmt: skip
    (run,) = train.train(Spec("nin", 28, 16, mode="train"), cfg, _data()).runs
    first, second, _ = run.epochs
    assert run.epochs_to_target == 2
    assert run.time_to_target_s == first.wall_s + second.wall_s
    inside = first.wall_s + first.eval_s + second.wall_s + second.eval_s
    assert run.mlperf_time_to_target_s >= inside >= 2 * EVAL_SLEEP_S
    assert run.mlperf_time_to_target_s - inside < 0.05  # nothing else of note between them
    assert run.mlperf_time_to_target_s - run.time_to_target_s >= 2 * EVAL_SLEEP_S


def test_a_seed_that_never_reaches_the_target_has_no_clock(monkeypatch):
    monkeypatch.setattr(train.workload, "build_model", lambda spec: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)))  # fmt: skip
    monkeypatch.setattr(train, "evaluate", lambda *a: 0.2)
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=1e-3, train_subset=40,
                      test_subset=30, target_accuracy=0.5)  # fmt: skip
    (run,) = train.train(Spec("nin", 28, 16, mode="train"), cfg, _data()).runs
    assert (run.time_to_target_s, run.mlperf_time_to_target_s, run.epochs_to_target) == (None, None, None)


def test_the_report_has_the_section_only_where_a_run_set_a_target():
    """The report's section list (report/exercises/__init__.py) asks this question only of runs
    that set a target: a run without one gets no empty MLPerf section on its first screen."""
    from cnnbench.report.exercises import sections

    runs = [_seed_run(s, c, target=0.5) for s, c in CURVES.items()]
    titles = [s.title for s in sections(Frames([_record(runs)]))]
    assert "Time to accuracy, MLPerf-style" in titles
    titles = [s.title for s in sections(Frames([_record(runs, target=None)]))]
    assert "Time to accuracy, MLPerf-style" not in titles and titles  # the others stay
