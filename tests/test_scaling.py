"""Data-parallel scaling with real processes (issue 14): torch.distributed's elastic launcher,
gloo on the CPU, DDP — no mock of torch.distributed anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnbench.config import TimingConfig, make_config
from cnnbench.measure import scaling, workload
from cnnbench.results import RunStore, Spec

ROOT = Path(__file__).resolve().parents[1]
FAST = TimingConfig(warmup_runs=1, min_runs=3, min_time_s=0.05)


def test_a_two_rank_ddp_step_equals_one_process_on_the_whole_batch():
    spec = Spec("googlenet28", 28, 4, mode="train", threads=1)
    job = scaling.ScalingJob(spec=spec, global_batch=8, timing=FAST, timeout_s=60)
    gen = torch.Generator().manual_seed(7)
    x = workload.example_input(Spec("googlenet28", 28, 8), "cpu", generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    after_ddp = scaling.launch(job, 2, scaling.ddp_step_parameters, x, labels)
    torch.manual_seed(0)  # what every rank builds from
    model = workload.build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    workload.train_step(model, workload.make_optimizer(model.parameters(), "sgd", 0.01), x, labels)
    moved = 0
    for name, value in model.state_dict().items():
        # DDP averages the ranks' gradients: the mean loss over the concatenated batch
        torch.testing.assert_close(after_ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(not torch.equal(value, before[name]))
    assert moved > 0  # the step did change the weights: the comparison is not of two no-ops


@pytest.fixture(scope="module")
def scaling_run(tmp_path_factory):
    from cnnbench import runner

    out = tmp_path_factory.mktemp("scaling") / "run"
    config = make_config(models=("googlenet28",), metrics=("params", "scaling"), device="cpu",
                         profile="smoke", out_dir=str(out),
                         given={"world_sizes": (1, 2), "scaling_batch": 4})  # fmt: skip
    return runner.run(config), out


@pytest.mark.serial  # efficiency: a ratio of timings at world sizes 1 and 2
def test_scaling_records_efficiency_and_gradient_bytes(scaling_run):
    result, out = scaling_run
    rec = next(r for r in result.records if r.metric == "scaling")
    assert rec.status == "ok", rec.reason
    res = rec.result
    params = next(r for r in result.records if r.metric == "params").result.params_trainable
    assert res.grad_bytes == 4 * params == 4 * res.trainable_params  # fp32 gradients
    assert res.backend == "gloo" and res.ddp["bucket_cap_mb"] == 25.0 and res.hosts
    got = {(p.world_size, p.kind): p for p in res.points}
    assert sorted(got) == [(1, "strong"), (1, "weak"), (2, "strong"), (2, "weak")]
    for (w, kind), p in got.items():
        assert 0 < p.efficiency <= 1.2, (w, kind, p.efficiency)
        assert p.global_batch == (4 * w if kind == "weak" else 8)
        assert p.images_per_s == pytest.approx(p.global_batch / (p.step_ms_p50 / 1e3))
        assert len(p.times_ms) == len(p.local_times_ms) >= 3
    for (w, kind), p in got.items():  # against one rank of the same kind, per rank
        assert p.speedup == pytest.approx(p.images_per_s / got[1, kind].images_per_s)
        assert p.efficiency == pytest.approx(p.speedup / w)
    assert got[1, "weak"].efficiency == 1.0 and got[1, "weak"].predicted_comm_ms == 0.0
    two, one = got[2, "weak"], got[1, "weak"]
    # exposed communication: the step's excess over no_sync, less DDP's own excess at one rank
    assert one.exposed_comm_ms == 0.0
    assert one.ddp_overhead_ms == pytest.approx(one.step_ms_p50 - one.local_step_ms_p50)
    assert two.exposed_comm_ms == pytest.approx(
        two.step_ms_p50 - two.local_step_ms_p50 - one.ddp_overhead_ms)
    assert res.ddp["broadcast_buffers"] is False
    # the prediction: a ring all-reduce of the gradients at the probe's bus bandwidth
    assert two.predicted_comm_ms == pytest.approx(
        2 * (2 - 1) / 2 * res.grad_bytes / two.allreduce_bus_bytes_per_s * 1e3)
    assert rec.spec.threads == 1 and rec.spec.image_size == 28  # one core per rank


def test_a_rank_that_raises_is_an_error_record_naming_it(tmp_path):
    import dataclasses

    from cnnbench import runner

    config = make_config(models=("googlenet28",), metrics=("scaling",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), given={"world_sizes": (1, 2), "scaling_batch": 2})  # fmt: skip
    config = dataclasses.replace(
        config, scaling=dataclasses.replace(config.scaling, fail_rank=1, timeout_s=30)
    )
    t0 = time.perf_counter()
    result = runner.run(config)
    assert time.perf_counter() - t0 < 120  # no rank left hanging
    (rec,) = result.records
    assert rec.status == "error" and rec.reason.startswith("RankFailed: rank 1 of 2 failed")
    assert "raised on purpose" in rec.reason


def test_torchrun_across_two_nodes_on_one_machine(tmp_path):
    """Two "nodes" of one process each, real c10d rendezvous and gloo all-reduce on 127.0.0.1,
    as `torchrun --nnodes 2` would run them on two machines."""
    port = scaling._free_port()
    out = tmp_path / "point.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t",
           "-m", "cnnbench.measure.scaling", "--model", "googlenet28", "--image-size", "28",
           "--batch-size", "2", "--min-time", "0.02", "--timeout", "60", "--out", str(out)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]  # fmt: skip
    logs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], logs[0][-1500:] + logs[1][-1500:]
    point = json.loads(out.read_text())
    assert point["ddp"]["nodes"] == 1  # one host name: both "nodes" run here
    assert {p["world_size"] for p in point["points"]} == {2}
    assert point["grad_bytes"] == 4 * point["trainable_params"]


# --- sweeps split across machines: --shard K/N, merged by cnnbench report ----------------------------


def _cli(*argv):
    from cnnbench.cli import main

    return main(list(argv))


TIMED = ("ms", "images/s", "latency", "time", "ci", "unstable", "noise", "change")


def _untimed_tables(report_dir: Path) -> list[list[tuple[str, ...]]]:
    """Every Markdown table of the report, without the columns that hold timings (which differ
    run to run): header, then rows, as tuples of cells."""
    tables, rows = [], []
    for line in [*(report_dir / "report.md").read_text().splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            header, body = rows[0], rows[2:]
            keep = [i for i, h in enumerate(header)
                    if not any(t in h.lower() for t in TIMED) and h not in ("n", "flags")]  # fmt: skip
            # rows sorted: a merged report lists each shard's records in turn
            tables.append([tuple(header[i] for i in keep),
                           *sorted(tuple(r[i] for i in keep) for r in body)])  # fmt: skip
            rows = []
    return tables


def test_shards_hold_exactly_the_units_of_the_run_and_merge_to_its_report(tmp_path):
    # one batch, no report at the end of each run: the reports compared are rendered below
    common = ["run", "--profile", "smoke", "--models", "googlenet28,nin", "--threads", "1", "--no-report",
              "--metrics", "params,flops,minsize,latency", "--batch-sizes", "1", "--min-time", "0.01"]  # fmt: skip
    assert _cli(*common, "--out", str(tmp_path / "whole")) == 0
    for k in (0, 1):
        assert _cli(*common, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")) == 0
    keys = {d: {r.key for r in RunStore(tmp_path / d).records()} for d in ("whole", "s0", "s1")}
    assert keys["s0"] and keys["s1"] and not keys["s0"] & keys["s1"]  # disjoint, both non-empty
    assert keys["s0"] | keys["s1"] == keys["whole"]  # together: exactly the run's units
    assert _cli("report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")) == 0
    assert _cli("report", str(tmp_path / "whole"), "--out", str(tmp_path / "w")) == 0
    merged, whole = _untimed_tables(tmp_path / "m"), _untimed_tables(tmp_path / "w")
    # timings differ run to run; every table's other columns must be the same
    assert merged == whole and sum(len(t) for t in whole) > 10


def test_report_refuses_shards_of_different_software_unless_asked(tmp_path, capsys):
    for k in (0, 1):
        assert _cli("run", "--profile", "smoke", "--models", "googlenet28,nin", "--metrics", "params",
                    "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")) == 0  # fmt: skip
    env_path = tmp_path / "s1" / "env.json"
    env = json.loads(env_path.read_text())
    env["versions"]["torch"] = "2.4.0"
    env_path.write_text(json.dumps(env))
    capsys.readouterr()
    assert _cli("report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")) == 2
    err = capsys.readouterr().err
    assert "measured with torch '2.4.0'" in err and "--allow-mixed" in err
    assert _cli("report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"),
                "--allow-mixed") == 0  # fmt: skip


def test_a_sweep_stays_whole_in_one_shard():
    import dataclasses

    from cnnbench import runner

    config = make_config(models=("googlenet28", "nin"), metrics=("latency", "params"), device="cpu",
                         profile="smoke", out_dir="unused", given={"sweep": True})  # fmt: skip
    plan = {m: runner.plan(config, m) for m in config.models}
    for k in (0, 1, 2):
        mine = runner.shard(plan, dataclasses.replace(config, shard=(k, 3)))
        for units in mine.values():
            sweeps = {(u.spec.model, u.spec.mode) for u in units if u.metric == "latency"}
            for model, mode in sweeps:  # every batch of a sweep it holds, none elsewhere
                assert sorted(u.spec.batch_size for u in units if u.metric == "latency"
                              and u.spec.mode == mode and u.spec.model == model) == [
                    1, 2, 4, 8, 16, 32, 64, 128, 256]  # fmt: skip


@pytest.mark.serial  # shares the timed run above
def test_the_report_has_a_scaling_section_from_the_records(scaling_run):
    from cnnbench.report.render import write_report

    result, out = scaling_run
    paths = write_report([out])
    md = paths["md"].read_text()
    section = md.split("## Scaling — data-parallel training (DDP)")[1].split("\n## ")[0]
    rec = next(r for r in result.records if r.metric == "scaling").result
    two = next(p for p in rec.points if p.world_size == 2 and p.kind == "weak")
    assert "Weak scaling to 2 ranks (gloo): googlenet28 " in section
    assert f"googlenet28 {100 * two.efficiency:.0f}% ({rec.grad_bytes / 2**20:.1f} MiB of gradients" in section
    rows = [ln for ln in section.splitlines() if ln.startswith("| googlenet28")]
    assert len(rows) == 4 and sum("— (1 rank)" in r for r in rows) == 2
    assert (out / "figures" / "scaling.png").exists()


def _point(w, kind, eff, step, local, exposed, predicted, spread):
    from cnnbench.results.types import ScalingPoint

    ci = (step * (1 - spread), step * (1 + spread))
    return ScalingPoint(w, kind, 16, 16 * w, step, *ci, local, None, None, exposed,
                        16 * w / step * 1e3, eff * w, eff, (step,), (local,), None, predicted)  # fmt: skip


def _result(grad_mib, eff, spread=0.01):
    from cnnbench.results.types import ScalingResult

    points = (_point(1, "weak", 1.0, 100.0, 100.0, 0.0, 0.0, spread),
              _point(2, "weak", eff, 100.0 / eff, 110.0, 100.0 / eff - 110.0, 20.0, spread))  # fmt: skip
    return ScalingResult(int(grad_mib * 2**20), int(grad_mib * 2**18), "gloo", {}, ("h",), 32, points)


def test_the_scaling_answer_says_whether_bytes_order_the_networks():
    from cnnbench.analysis.scaling import weak_scaling
    from cnnbench.report.exercises.scaling import _scaling_answer

    def answer(models):
        best = [(m, v, max(v.points, key=lambda p: p.world_size)) for m, v in models]
        return _scaling_answer(weak_scaling(best))

    ordered = answer([("small", _result(8, 0.9)), ("big", _result(80, 0.6))])
    assert "more parameters (exercise 4) move more bytes per step and scale worse" in ordered
    assert ordered.startswith("Weak scaling to 2 ranks (gloo): small 90% (8.0 MiB") and "big 60%" in ordered
    assert "+10.0%" in ordered  # compute at 2 ranks (110 ms) against 1 rank (100 ms)
    crossed = answer([("small", _result(8, 0.6)), ("big", _result(80, 0.9))])
    assert "Gradient bytes alone (exercise 4's parameters) do not order them here" in crossed
    # big's exposed 1.1 ms (100/0.9 − 110) against 20 predicted: hidden by overlap
    assert "big's exposed communication, 1.1 ms per step beyond DDP's own 0.0 ms at one rank, " \
           "against 20.0 ms" in crossed
    assert "below it: the buckets' overlap" in crossed
    # 90% against 60%, but each step known only to ±30%: no ordering claimed either way
    noisy = answer([("small", _result(8, 0.9, 0.3)), ("big", _result(80, 0.6, 0.3))])
    assert "overlap within the noise of their steps" in noisy and "scale worse" not in noisy
