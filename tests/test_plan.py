"""The run plan (cnnbench/plan.py): its units are the run's, its estimate is near the wall time,
its ETA falls as steps finish, and its arithmetic is the cost model's formula."""

from __future__ import annotations

import io
import math
import time
from collections import Counter

import pytest
from rich.console import Console

from cnnbench import plan
from cnnbench.cli import build_parser, config_from_args, main
from cnnbench.config import make_config
from cnnbench.report import console
from cnnbench.results import RunStore
from tests.conftest import SMOKE_ARGV

# a made-up network with round numbers: the expected seconds are computed by hand below
WORK = plan.Work(macs=10**9, train_macs=3 * 10**9, layers=10, params=1000, largest_elements=10**6)


def config_of(argv):
    argv = list(argv)
    return config_from_args(build_parser().parse_args(argv), argv)


def smoke(tmp_path, **given):
    return make_config(models=("nin", "googlenet"), metrics=("params", "latency", "memory"),
                       device="cpu", profile="smoke", out_dir=str(tmp_path / "run"),
                       given={"threads": 1, **given})  # fmt: skip


def test_plan_units_are_what_the_smoke_run_recorded(smoke_run, monkeypatch):
    monkeypatch.setenv("CNNBENCH_PLUGINS", "tests.plugins.failing_models")
    import tests.plugins.failing_models  # noqa: F401  (the raising model of SMOKE_ARGV)

    config = config_of([*SMOKE_ARGV, "--out", str(smoke_run.path)])
    planned = plan.build(config, work={})  # units only: no counting needed
    recorded = Counter((r.metric, r.spec) for r in RunStore(smoke_run.path).records())
    assert Counter((u.metric, u.spec) for u in planned.units) == recorded
    # latency is measured in every round, every other unit once
    rounds = Counter(s.unit.metric for s in planned.steps)
    latency = sum(1 for u in planned.units if u.metric == "latency")
    assert rounds["latency"] == latency * config.timing.rounds
    assert rounds["params"] == len(config.models)


def test_latency_round_is_the_timers_iterations_by_hand(tmp_path):
    config = smoke(tmp_path)
    work = {(m, s): WORK for m in ("nin", "googlenet") for s in (224, 96)}
    p = plan.build(config, work=work, load_factor=1.0, slowdown=1.0)
    c = plan.CPU_COSTS
    forward = 1 * 10**9 / c.infer_macs_per_s + 10 * c.infer_layer_s  # batch 1, one thread
    t = config.timing  # smoke: 1 warm-up, at least 3 runs and 0.05 s, at most 20
    n = min(t.max_runs, max(t.min_runs, math.ceil(t.min_time_s / forward)))
    expected = c.unit_s["latency"] + (t.warmup_runs + 1 + n) * forward
    step = next(s for s in p.steps if s.round == 1 and s.unit.metric == "latency"
                and s.unit.spec.mode == "inference" and s.unit.spec.batch_size == 1)  # fmt: skip
    assert step.seconds == pytest.approx(expected + c.worker_s)  # the round's worker starts here
    train = 2 * 3 * 10**9 / c.train_macs_per_s + 10 * c.train_layer_s + 1000 * c.train_param_s
    memory = next(s for s in p.steps if s.unit.metric == "memory" and s.unit.spec.mode == "train")
    assert memory.seconds == pytest.approx(c.unit_s["memory"] + c.memory_iterations * train)


def test_total_is_its_parts_and_eta_falls_to_the_report(tmp_path):
    config = smoke(tmp_path)
    p = plan.build(config, work={(m, s): WORK for m in ("nin", "googlenet") for s in (224, 96)},
                   load_factor=1.0, slowdown=1.0)
    before = sum(s for _, s in p.before_s)
    report = sum(s for _, s in p.after_s)
    assert p.total_s == pytest.approx(before + sum(s.seconds for s in p.steps) + report)
    assert sum(p.by_metric().values()) == pytest.approx(p.total_s)
    left = [p.remaining_s(k) for k in range(len(p.steps) + 1)]
    assert left[0] == pytest.approx(p.total_s - before)
    assert all(b < a for a, b in zip(left, left[1:], strict=False))  # every step costs something
    assert left[-1] == pytest.approx(report)


def test_progress_eta_follows_the_runs_events(tmp_path):
    config = smoke(tmp_path)
    p = plan.build(config, work={(m, s): WORK for m in ("nin", "googlenet") for s in (224, 96)},
                   load_factor=1.0, slowdown=1.0)
    progress = console.RunProgress(Console(file=io.StringIO()), plan=p)
    etas = [p.remaining_s(0)]
    progress.on_event("plan", list(p.units))
    last_round = config.timing.rounds - 1
    for s in p.steps:  # as the runner emits them: a pooled unit's record after its last round
        progress.on_event("start", s.unit)
        if s.unit.metric != "latency" or s.round == last_round:
            progress.on_event("record", _record(s.unit))
        etas.append(p.remaining_s(progress.steps_done))
    assert progress.steps_done == len(p.steps)
    assert all(b <= a for a, b in zip(etas, etas[1:], strict=False)) and etas[-1] < etas[0]
    assert progress.eta() == console.duration(sum(s for _, s in p.after_s))


def _record(unit):
    from cnnbench.results import Record

    return Record(unit.metric, unit.spec, "ok")


def test_sweep_ends_where_the_runner_would(tmp_path):
    config = make_config(models=("nin",), metrics=("latency",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "r"), given={"threads": 1, "sweep": True})  # fmt: skip
    # no compute, only per-layer costs: images/s doubles with the batch and never plateaus ...
    flat = plan.Work(0, 0, 10, 0, 2**10)
    p = plan.build(config, work={("nin", 224): flat})
    assert p.sweep_ends == () and len(p.measured_units) == len(p.units)  # 1 ... 256, all of it
    # ... compute alone: images/s is the same at every batch, gains of 0% at 2 and at 4 end it
    p = plan.build(config, work={("nin", 224): plan.Work(10**9, 3 * 10**9, 0, 0, 2**10)})
    assert {e[1:] for e in p.sweep_ends} == {("inference", 4, "images/s plateau"),
                                            ("train", 4, "images/s plateau")}  # fmt: skip
    # the largest tensor holds 2^25 elements an image: batch 64 passes 2^31 - 1, batch 32 not
    big = plan.Work(0, 0, 10, 0, 2**25)
    p = plan.build(config, work={("nin", 224): big})
    assert {(m, mode, b, why) for m, mode, b, why in p.sweep_ends} == {
        ("nin", "inference", 64, "tensor-size limit"), ("nin", "train", 64, "tensor-size limit")}
    measured = {u.spec.batch_size for u in p.measured_units}
    assert measured == {1, 2, 4, 8, 16, 32, 64}  # 64: recorded as unsupported, not timed
    assert all(s.seconds == 0 for s in p.steps if s.unit.spec.batch_size >= 64)
    assert not any(s.round > 0 and s.unit.spec.batch_size >= 64 for s in p.steps)


def test_plan_table_names_the_estimate_and_what_makes_it_longer(tmp_path):
    config = smoke(tmp_path)
    p = plan.build(config, work={(m, s): WORK for m in ("nin", "googlenet") for s in (224, 96)},
                   load_factor=1.0, slowdown=1.0)
    out = Console(file=io.StringIO(), width=120)
    out.print(console.plan_table(p, plan.compile_share_s(p)))
    text = out.file.getvalue()
    assert console.duration(p.total_s) in text and "calibrated" in text
    assert "--compile would add" in text and "--rounds" in text  # latency is the longest part


@pytest.mark.slow
def test_estimate_is_within_2x_of_a_smoke_runs_wall_time(tmp_path):
    argv = ["run", "--profile", "smoke", "--models", "nin", "--threads", "1", "--no-report",
            "--out", str(tmp_path / "run")]  # fmt: skip
    estimate = plan.build(config_of(argv), report=False).total_s
    t0 = time.perf_counter()
    assert main(argv) == 0
    wall_s = time.perf_counter() - t0
    assert 0.5 <= estimate / wall_s <= 2.0, (estimate, wall_s)


def test_a_busy_machine_scales_every_step(tmp_path, monkeypatch):
    config = smoke(tmp_path)
    work = {(m, s): WORK for m in ("nin", "googlenet") for s in (224, 96)}
    quiet = plan.build(config, work=work, load_factor=1.0, slowdown=1.0)
    busy = plan.build(config, work=work, load_factor=2.5, slowdown=1.0)
    assert busy.total_s == pytest.approx(2.5 * quiet.total_s)
    assert busy.remaining_s(3) == pytest.approx(2.5 * quiet.remaining_s(3))
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 1.0, 1.0))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert plan.machine_load(config) == (4.5, 9.0)
    monkeypatch.setattr("os.getloadavg", lambda: (0.5, 1.0, 1.0))
    assert plan.machine_load(config)[0] == 1.0  # an idle machine does not make the run faster


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    """Guards cli._cmd_run's early return: a dry run measures nothing and creates no folder."""
    from cnnbench.cli import main

    out = tmp_path / "run"
    assert main(["run", "--profile", "smoke", "--models", "nin", "--threads", "1", "--dry-run",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().err
    assert "total" in printed and "cost model" in printed
    assert not out.exists()


def test_a_units_time_limit_comes_from_its_planned_seconds():
    """Guards runner._limit_of / _event_limit: 10x the unit's planned seconds with a floor, the
    profile's limit between units and for a unit the plan does not know."""
    import dataclasses

    from cnnbench import runner
    from cnnbench.config import UNIT_TIMEOUT_FACTOR, UNIT_TIMEOUT_FLOOR_S, make_config
    from cnnbench.measure.harnesses import Context

    config = make_config(models=("nin",), metrics=("latency",), device="cpu", profile="smoke",
                         out_dir="unused")  # fmt: skip
    long, short, unknown = (runner.Unit("latency", dataclasses.replace(runner.base_spec(config, "nin"), batch_size=b))
                            for b in (1, 2, 4))  # fmt: skip
    ctx = Context(config, unit_estimates_s={long: 60.0, short: 1.0})
    assert runner._limit_of(ctx, long) == UNIT_TIMEOUT_FACTOR * 60.0
    assert runner._limit_of(ctx, short) == UNIT_TIMEOUT_FLOOR_S
    profile = runner.unit_limit_s(config)
    assert runner._limit_of(ctx, unknown) == profile
    limit = runner._event_limit(ctx)
    assert limit("start", long) == 600.0 and limit("record", None) == profile
    assert limit("started", None) == profile  # what the worker asks first (measure/worker.py)


def test_tricks_are_costed_by_hand_bf16_slower_compile_charged_and_said_per_trick(tmp_path):
    """Guards plan._Rates._scale (a CPU's bf16 slowdown), the compile charge of compiled trick
    units, and trick_costs: each trick's steps are its own units' and they add up to the plan's."""
    from cnnbench.config import trick_of

    config = make_config(models=("nin",), metrics=("tricks",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"),
                         given={"threads": 1, "seeds": (0, 1, 2), "tricks": ("compile", "bf16")})  # fmt: skip
    p = plan.build(config, work={("nin", 72): WORK}, load_factor=1.0, slowdown=1.0)
    c, t = plan.CPU_COSTS, config.timing

    def latency_round(seconds_per_iteration):
        n = min(t.max_runs, max(t.min_runs, math.ceil(t.min_time_s / seconds_per_iteration)))
        return c.unit_s["latency"] + (t.warmup_runs + 1 + n) * seconds_per_iteration

    step = 16 * 3 * 10**9 / c.train_macs_per_s + 10 * c.train_layer_s + 1000 * c.train_param_s
    seconds = {(trick_of(s.unit.spec), s.round): s.seconds for s in p.steps
               if s.unit.metric == "latency" and s.unit.spec.mode == "train"}  # fmt: skip
    assert seconds[None, 1] == pytest.approx(latency_round(step))
    bf16 = 16 * 3 * 10**9 / (c.train_macs_per_s / 10.0) + 10 * c.train_layer_s + 1000 * c.train_param_s
    assert seconds["bf16", 1] == pytest.approx(latency_round(bf16))  # its arithmetic ~10x slower
    assert seconds["compile", 1] == pytest.approx(c.compile_s + latency_round(step))
    costs = plan.trick_costs(p)
    assert set(costs) == {"baseline", "compile", "bf16"}
    assert sum(costs.values()) == pytest.approx(p.units_s)  # a tricks-only run: nothing else
    by_hand = sum(s.seconds for s in p.steps if trick_of(s.unit.spec) == "bf16")
    assert costs["bf16"] == pytest.approx(by_hand) and costs["bf16"] > 5 * costs["baseline"] / 2
    assert p.summary()["tricks_s"] == {k: round(v, 1) for k, v in costs.items()}


def test_a_slower_cpu_scales_every_step_by_the_probes_ratio(tmp_path, monkeypatch):
    """Guards plan.machine_speed and its use in build: a CPU that runs the probe twice as long
    as CPU_REFERENCE_SPEED gets every step, and the fixed costs, twice as long."""
    from cnnbench.speed_probe import Speed

    config = smoke(tmp_path)
    work = {(m, s): WORK for m in ("nin", "googlenet") for s in (224, 96)}
    ref = plan.CPU_REFERENCE_SPEED
    twice = Speed(2 * ref.conv_s, 2 * ref.dispatch_s, 2 * ref.stream_s)
    monkeypatch.setattr(plan, "_probe", lambda: twice)
    assert plan.machine_speed(config, plan.CPU_COSTS) == (pytest.approx(2.0), twice.as_record())
    assert plan.machine_speed(config, plan.CUDA_COSTS)[0] == 1.0  # constants given: not this CPU's
    as_fitted = plan.build(config, work=work, load_factor=1.0, slowdown=1.0)
    slower = plan.build(config, work=work, load_factor=1.0)
    assert slower.slowdown == pytest.approx(2.0) and slower.summary()["slowdown"] == 2.0
    assert slower.total_s == pytest.approx(2.0 * as_fitted.total_s)
    assert [s.seconds for s in slower.steps] == pytest.approx([2 * s.seconds for s in as_fitted.steps])
