"""Records built by hand for the report's trust tests (issue 12): every number chosen by the test,
so that what the report must show is known independently of any measurement.

Not a test module (no ``test_`` prefix): ``tests/test_report_trust.py`` and ``tests/test_stats.py``
import it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnbench import stats
from cnnbench.measure.latency import timing_stats
from cnnbench.results import Record, RunStore, Spec
from cnnbench.results.types import (
    CurvePoint,
    DevicePeaks,
    EpochStats,
    FlopCount,
    LatencyResult,
    LayerCost,
    LayerRoof,
    MemoryResult,
    ParamCount,
    RooflineResult,
    SeedRun,
    TrainResult,
)

MiB = 2**20


def spec(model, size, batch=1, mode="inference") -> Spec:
    return Spec(model, size, batch, "cpu", "fp32", False, False, 2, mode)


def samples(median: float, *, rounds=3, n=40, spread=0.02, seed=0, offsets=None) -> np.ndarray:
    """``rounds`` x ``n`` iteration times around ``median`` (normal, sd = spread x median), round
    r shifted by the factor exp(offsets[r]) (a worker process's own speed; none by default)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(median, spread * median, (rounds, n))
    if offsets is not None:
        t = t * np.exp(np.asarray(offsets, dtype=float))[:, None]
    return t


def latency(model, size, batch, mode, median, *, seed=0, optimizer=None, kept=True, rounds=3,
            spread=0.02, offsets=None) -> Record:  # fmt: skip
    """A latency record whose statistics derive from synthetic samples (schema 2), or — with
    ``kept=False`` — the same statistics without the samples (schema 1)."""
    if offsets is not None:
        rounds = len(offsets)
    t = samples(median, rounds=rounds, spread=spread, seed=seed, offsets=offsets)
    flat = [float(x) for x in t.ravel()]
    st = timing_stats(flat, batch)
    sizes = (t.shape[1],) * t.shape[0]
    iv = stats.median_interval(flat, sizes) if kept else None
    res = LatencyResult(
        timer="perf_counter", warmup_runs=1, unstable=False, other_cpu_share=0.0, contended=False,
        attempts=1, compile_s=None, cudnn_benchmark=None, **st,
        times_ms=tuple(flat) if kept else None, rounds=rounds if kept else 1,
        round_sizes=sizes if kept else None,
        round_medians_ms=tuple(float(np.median(r)) for r in t) if kept else None,
        latency_ms_p50_ci_low=iv.low if iv else None, latency_ms_p50_ci_high=iv.high if iv else None,
        optimizer=optimizer if mode == "train" else None,
    )  # fmt: skip
    return Record.of("latency", spec(model, size, batch, mode), res)


def params(model, size, total, *, conv=None, linear=0) -> Record:
    conv = total - linear if conv is None else conv
    res = ParamCount(total, total, {"body": total}, {"conv": conv, "linear": linear, "norm": 0, "other": 0},
                     4 * total, 2 * total)  # fmt: skip
    return Record.of("params", spec(model, size), res)


def layer(name, kind, macs, params_, out_bytes, *, kernel="3x3", in_bytes=None) -> LayerCost:
    return LayerCost(name, kind, kernel if kind.startswith("Conv") else None, macs, params_,
                     4 * params_, out_bytes if in_bytes is None else in_bytes, out_bytes)  # fmt: skip


def flops(model, size, layers: list[LayerCost]) -> Record:
    macs = sum(lay.macs for lay in layers)
    conv = sum(lay.macs for lay in layers if lay.layer.startswith("Conv"))
    res = FlopCount(macs, macs / 1e9, {"body": macs}, {"conv": conv, "linear": macs - conv}, {}, macs,
                    2 * macs, 6 * macs, 1.0, tuple(layers))  # fmt: skip
    return Record.of("flops", spec(model, size), res)


def memory(model, size, batch, mode, measured, *, optimizer=None) -> Record:
    parts = dict(param_bytes=20 * MiB, grad_bytes=20 * MiB if mode == "train" else 0,
                 optimizer_state_bytes=40 * MiB if mode == "train" else 0, input_bytes=MiB,
                 activation_bytes=30 * MiB)  # fmt: skip
    total = sum(parts.values())
    res = MemoryResult("rss_worker", measured, measured + 100 * MiB, 100 * MiB, None, **parts,
                       analytic_bytes=total, measured_over_analytic=measured / total,
                       optimizer=optimizer if mode == "train" else None)  # fmt: skip
    return Record.of("memory", spec(model, size, batch, mode), res)


def accuracy(model, size, finals: list[float], *, trained=None, curve=True, status="ok",
             epochs=1) -> Record:  # fmt: skip
    """An accuracy record of one run per final accuracy (seeds 0, 1, ...); ``trained`` =
    (params, macs, step_flops) of the network as trained, or None (a record before schema 2)."""
    import statistics

    runs = []
    for seed, final in enumerate(finals):
        eps = tuple(EpochStats(e + 1, 1.5 - e * 0.2, final - 0.05, final if e == epochs - 1 else final - 0.1,
                               10.0, 1.0, 400.0) for e in range(epochs))  # fmt: skip
        pts = tuple(CurvePoint(10 * (i + 1), 160 * (i + 1), 2.3 - 0.08 * i, 0.1 + 0.03 * i) for i in range(20)) if curve else ()  # fmt: skip
        runs.append(SeedRun(seed, eps, False, final, 10.0 * epochs, None, None, pts))
    tp, tm, ts = trained or (None, None, None)
    res = TrainResult(
        recipe="modified", epochs=epochs, optimizer="adam", lr=0.0005, momentum=0.0,
        label_smoothing=0.0, train_images=4000, test_images=2000, target_accuracy=None,
        seeds=tuple(range(len(finals))), runs=tuple(runs), diverged_seeds=(),
        test_accuracy_mean=statistics.fmean(finals),
        test_accuracy_std=statistics.stdev(finals) if len(finals) > 1 else 0.0,
        test_accuracy_min=min(finals), test_accuracy_max=max(finals), train_time_s_mean=10.0 * epochs,
        images_per_s_mean=400.0, trained_params=tp, trained_macs=tm, trained_step_flops=ts,
    )  # fmt: skip
    return Record.of("accuracy", spec(model, size, 16, "train"), res, status=status,
                     reason=None if status == "ok" else "loss became NaN")  # fmt: skip


PEAK = 100e9  # FLOP/s
BW = 10e9  # bytes/s


def peaks(**extra) -> DevicePeaks:
    return DevicePeaks("cpu", "fp32", 1536, 80e9, PEAK, PEAK, 2**27, BW, None, None, **extra)


OWN_SIZE = {"alexnet": 224, "nin": 224, "googlenet28": 28}


def roofline(model, mfu, *, layers_above=0, underestimated=None, other_share=0.2, **peak_extra) -> Record:
    """A roofline at batch 16 whose model ran at ``mfu`` of PEAK, with ``layers_above`` layers
    above the roof (achieved 1.2 x roof) among three."""
    layers = []
    for i in range(3):
        intensity = 50.0  # compute-bound: roof = PEAK
        achieved = 1.2 * PEAK if i < layers_above else 0.5 * PEAK
        layers.append(LayerRoof(f"conv{i}", "Conv2d", "3x3", 10**8, 4 * 10**6, 2.0, achieved, intensity,
                                PEAK, "compute", achieved / PEAK))  # fmt: skip
    under = mfu > 1 or layers_above > 0 if underestimated is None else underestimated
    p = peaks(**peak_extra)
    res = RooflineResult(PEAK, BW, PEAK / BW, p.datasheet_flops, None, p, "cpu_time", 10.0, mfu * PEAK,
                         mfu, tuple(layers), roof_underestimated=under, other_time_share=other_share)  # fmt: skip
    return Record.of("roofline", spec(model, OWN_SIZE.get(model, 96), 16), res)


def write_run(folder: Path, records: list[Record], *, env: dict | None = None) -> Path:
    folder = Path(folder)
    store = RunStore(folder).create()
    for r in records:
        store.append(r)
    store.write_env(env or {
        "device": "cpu", "device_name": "Test CPU", "python": "3.11", "git_commit": "a" * 40,
        "git_dirty": False, "versions": {"torch": "x", "fvcore": "y"}, "cpu": {"torch_threads": 2},
        "config": {"device": "cpu", "profile": "quick", "command_line": "cnnbench run --out X"},
    })  # fmt: skip
    return folder


# a small, self-consistent set of layers per model (per image, fp32): enough for exercises 4-5
def alexnet_layers(size=224) -> list[LayerCost]:
    s = (size / 224) ** 2
    return [layer("stage1.0", "Conv2d", int(34e6 * s), 11712, int(1.1e6 * s), kernel="11x11"),
            layer("stage2.0", "Conv2d", int(415e6 * s), 614656, int(0.8e6 * s), kernel="5x5"),
            layer("stage3.0", "Conv2d", int(445e6 * s), 3097600, int(0.6e6 * s)),
            layer("fc6.1", "Linear", 26214400, 26218496, 16384, in_bytes=25600 * 4),
            layer("fc8", "Linear", 40960, 40970, 40)]  # fmt: skip


def googlenet_layers(size=96) -> list[LayerCost]:
    s = (size / 96) ** 2
    return [layer("b1.0", "Conv2d", int(30e6 * s), 3200, int(0.6e6 * s), kernel="7x7"),
            layer("b2.1.0", "Conv2d", int(150e6 * s), 110592, int(1.5e6 * s)),
            layer("b3.0.b1", "Conv2d", int(60e6 * s), 1000000, int(1.0e6 * s), kernel="1x1"),
            layer("b4.0.b2", "Conv2d", int(36e6 * s), 4853488, int(0.5e6 * s)),
            layer("fc", "Linear", 10240, 10250, 40)]  # fmt: skip


def env_with_resume() -> dict:
    first = {"device": "cpu", "device_name": "Test CPU", "python": "3.11", "git_commit": "1" * 40,
             "git_dirty": True, "versions": {"torch": "x", "fvcore": "y"}, "cpu": {"torch_threads": 2},
             "config": {"device": "cpu", "profile": "quick", "command_line": "cnnbench run --out R"}}  # fmt: skip
    later = json.loads(json.dumps(first))
    later.update(git_commit="2" * 40, git_dirty=False)
    later["config"]["command_line"] = "cnnbench run --metrics roofline --resume R"
    return {**first, "resumed": [later]}
