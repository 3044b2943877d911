"""The measure side of trustworthy comparisons: latency in interleaved rounds with every sample
kept, the training step measured with the accuracy run's optimizer, accuracy paired with the
network as trained, and roofs that a measurement cannot silently exceed."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnbench import models
from cnnbench.config import PROFILES, make_config
from cnnbench.measure import latency, roofline, train
from cnnbench.measure.latency import TimingConfig, timing_stats
from cnnbench.results import Spec
from cnnbench.results.types import DevicePeaks


def _round(times, **kw):
    base = dict(timer="perf_counter", warmup_runs=1, unstable=False, other_cpu_share=0.01,
                contended=False, attempts=1, compile_s=None, cudnn_benchmark=None)  # fmt: skip
    stats = timing_stats(times, 4)
    return latency.LatencyResult(**{**base, **kw}, times_ms=tuple(times), **stats)


def test_rounds_pool_every_sample_and_the_statistics_derive_from_them():
    rng = np.random.default_rng(0)
    rounds = [list(rng.normal(10 + i, 0.2, size=n)) for i, n in enumerate((7, 9, 8))]
    pooled = latency.pool([_round(t) for t in rounds], Spec("nin", 224, 4), TimingConfig())
    everything = [t for r in rounds for t in r]
    assert pooled.times_ms == tuple(everything)
    assert pooled.round_sizes == (7, 9, 8) and pooled.rounds == 3
    assert pooled.round_medians_ms == pytest.approx([np.median(r) for r in rounds])
    assert pooled.latency_ms_p50 == pytest.approx(np.median(everything))
    assert pooled.latency_ms_p90 == pytest.approx(np.percentile(everything, 90))
    assert pooled.latency_ms_std == pytest.approx(np.std(everything, ddof=1))
    assert pooled.images_per_s == pytest.approx(4 / (np.median(everything) / 1e3))
    # the replicate is the round (a process): Student's t on the logs of the 3 round medians,
    # t(0.975, 2) = 4.302653 from a table; the rounds differ by 1 ms each, and it shows
    logs = np.log([np.median(r) for r in rounds])
    half = 4.302653 * logs.std(ddof=1) / 3**0.5
    assert (pooled.latency_ms_p50_ci_low, pooled.latency_ms_p50_ci_high) == pytest.approx(
        (np.exp(logs.mean() - half), np.exp(logs.mean() + half)))  # fmt: skip
    assert pooled.latency_ms_p50_ci_low < pooled.latency_ms_p50 < pooled.latency_ms_p50_ci_high
    # one round is one process: its iterations say nothing about another process, so no interval
    one_level = latency.pool([_round(everything)], Spec("nin", 224, 4), TimingConfig())
    assert one_level.latency_ms_p50_ci_low is None and one_level.latency_ms_p50_ci_high is None


def test_pooled_host_time_is_the_median_of_the_rounds_and_judged_against_the_pooled_median():
    # GPU rounds carry the host's issue time per iteration; launch-bound when it reaches 0.9 of
    # the device time (latency.HOST_BOUND), computed here from the numbers, not from the module.
    # The rounds' medians are 8, 10 and 12 ms: only the pooled median (10) is the reference.
    spec = Spec("nin", 224, 4)
    levels = ([8.0, 8.0, 8.0], [10.0, 10.0, 10.0], [12.0, 12.0, 12.0])

    def pooled(hosts):
        rounds = [_round(t, host_ms_p50=h) for t, h in zip(levels, hosts)]
        return latency.pool(rounds, spec, TimingConfig())

    bound = pooled([9.5, 9.0, 2.0])  # median 9.0 = 0.9 x 10 ms
    assert bound.latency_ms_p50 == 10.0
    assert bound.host_ms_p50 == 9.0 and bound.host_bound is True
    assert pooled([9.5, 8.9, 2.0]).host_bound is False  # 8.9 < 9.0, though >= 0.9 x 8 ms
    one_host_time = pooled([None, 9.5, None])  # rounds without a host time (CPU) do not count
    assert one_host_time.host_ms_p50 == 9.5 and one_host_time.host_bound is True
    cpu = pooled([None, None, None])
    assert cpu.host_ms_p50 is None and cpu.host_bound is None


def test_latency_rounds_interleave_models_and_each_record_pools_them(tmp_path):
    from cnnbench import runner

    config = make_config(models=("nin", "googlenet"), metrics=("latency",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), given={"threads": 1, "batch_sizes": (1,), "rounds": 3},
                         isolation="none")  # fmt: skip
    starts = []
    result = runner.run(config, lambda kind, p: starts.append(p.spec.model) if kind == "start" else None)
    # round by round: nin, googlenet, nin, googlenet, ... (two modes per model and round)
    assert starts == ["nin"] * 2 + ["googlenet"] * 2 + ["nin"] * 2 + ["googlenet"] * 2 + ["nin"] * 2 + ["googlenet"] * 2
    assert len(result.records) == 4
    for record in result.records:
        r = record.result
        assert r.rounds == 3 and len(r.round_sizes) == 3 and sum(r.round_sizes) == r.n_runs
        assert len(r.times_ms) == r.n_runs >= 3 * 3  # smoke: at least 3 iterations per round


def test_the_timed_training_step_uses_the_accuracy_runs_optimizer(tmp_path):
    from cnnbench import runner

    config = make_config(models=("nin",), metrics=("latency", "memory"), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), given={"threads": 1, "batch_sizes": (2,), "rounds": 1})  # fmt: skip
    assert config.train.optimizer == "adam"  # the smoke profile trains with Adam at 5e-4
    records = {(r.metric, r.spec.mode): r.result for r in runner.run(config).records}
    assert records[("latency", "train")].optimizer == "adam 0.0005"
    assert records[("latency", "inference")].optimizer is None
    mem = records[("memory", "train")]
    assert mem.optimizer == "adam 0.0005"
    # Adam keeps two fp32 moments per parameter and a step count (one fp32 scalar) per tensor;
    # plain SGD (the chapter's) keeps none
    tensors = len(list(models.create("nin").parameters()))
    assert mem.optimizer_state_bytes == 2 * mem.param_bytes + 4 * tensors


def test_accuracy_is_paired_with_the_network_as_trained():
    spec = Spec("alexnet", 72, 1, mode="train")
    cost = train.trained_cost(spec)
    model = models.create("alexnet", image_size=72)
    assert cost["trained_params"] == sum(p.numel() for p in model.parameters())
    assert cost["trained_params"] < 46_764_746 / 2  # AlexNet at 72 has a much smaller first FC
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 1, 72, 72))
    assert cost["trained_macs"] == counter.get_total_flops() // 2  # AlexNet: conv + linear only
    assert cost["trained_step_flops"] > 2 * counter.get_total_flops()  # backward ≈ 2x forward


def test_full_profile_never_rests_accuracy_on_one_seed():
    assert len(PROFILES["full"].overrides["train"]["seeds"]) >= 3


def test_a_layer_above_the_compute_roof_marks_the_roof_underestimated():
    fake = DevicePeaks(device="cpu", dtype="fp32", matmul_n=1, matmul_flops=1e6, conv_flops=1e6,
                       peak_flops=1e6, copy_bytes=1, peak_bytes_per_s=1e9, datasheet_flops=None,
                       datasheet_bytes_per_s=None)  # fmt: skip
    spec = Spec("googlenet", 28, 1, threads=torch.get_num_threads())
    r = roofline.measure(models.create("googlenet", image_size=28), spec, fake)
    assert r.mfu > 1 and r.roof_underestimated
    assert 0 <= r.other_time_share < 1
    honest = dataclasses.replace(fake, peak_flops=1e15, matmul_flops=1e15, conv_flops=1e15)
    assert not roofline.measure(models.create("googlenet", image_size=28), spec, honest).roof_underestimated


@pytest.mark.parametrize("facts,expected_gflops", [
    # Zen 5: two 512-bit FMA pipes, 16 fp32 lanes each: 64 FLOP per cycle and core
    (dict(vendor="AuthenticAMD", family=26, flags=["avx2", "fma", "avx512f"], physical_cores=2,
          clock_hz=4.0e9, clock_source="cpufreq cpuinfo_max_freq"), 2 * 2 * 16 * 2 * 4.0),
    # Zen 4: AVX-512 through two 256-bit pipes: 32 FLOP per cycle and core
    (dict(vendor="AuthenticAMD", family=25, flags=["avx2", "fma", "avx512f"], physical_cores=2,
          clock_hz=2.6e9, clock_source="cpufreq cpuinfo_max_freq"), 2 * 2 * 8 * 2 * 2.6),
    (dict(vendor="AuthenticAMD", family=25, flags=["avx2", "fma"], physical_cores=2, clock_hz=None), None),
    # a VM's nominal clock (/proc/cpuinfo) does not bound a CPU that boosts: no data-sheet roof
    (dict(vendor="AuthenticAMD", family=25, flags=["avx2", "fma", "avx512f"], physical_cores=2,
          clock_hz=2.6e9, clock_source="/proc/cpuinfo cpu MHz (nominal on a VM)"), None),
])  # fmt: skip
def test_the_cpu_data_sheet_roof_is_the_product_of_its_recorded_factors(monkeypatch, facts, expected_gflops):
    from cnnbench import env

    monkeypatch.setattr(env, "cpu_facts", lambda: facts)
    roof, factors, source = roofline.cpu_roof(threads=2)
    if expected_gflops is None:
        assert roof is None and "unknown" in source
        assert factors["clock_hz"] == "unknown" or "no maximum clock" in source
    else:
        assert roof == pytest.approx(expected_gflops * 1e9)
        assert factors["cores"] == 2 and factors["flop_per_fma"] == 2


def test_the_probe_takes_the_best_of_several_shapes():
    from cnnbench.env import cpu_facts

    peaks = roofline.measure_peaks(torch.device("cpu"))
    at_run_threads = {k: v for k, v in peaks.probes.items() if "threads" not in k}
    # every shape of the tables is probed, and again at one thread per core where that differs
    assert len(at_run_threads) == len(roofline.MATMUL_SIDES["cpu"]) + len(roofline.CONV_SHAPES["cpu"]) >= 4
    # the run's own thread count sets its peak; one thread per core only where the run
    # oversubscribes the cores
    cores, threads = cpu_facts()["physical_cores"], torch.get_num_threads()
    expected = max(at_run_threads.values()) if cores >= threads else max(peaks.probes.values())
    assert peaks.peak_flops == expected
    assert peaks.matmul_flops == max(v for k, v in at_run_threads.items() if k.startswith("matmul"))
    assert peaks.conv_flops == max(v for k, v in at_run_threads.items() if k.startswith("conv"))


def test_a_probe_counts_only_the_taps_that_touch_data_and_rates_its_median_iteration(monkeypatch):
    # unpadded 3x3 and 5x5 convolutions, counted by torch's own FLOP counter: every tap is real work
    for k, formula in ((3, 2 * 2 * 8 * 8 * 9 * 7 * 7), (5, 2 * 2 * 8 * 8 * 25 * 5 * 5)):
        x, w = torch.rand(2, 8, 9, 9), torch.rand(8, 8, k, k)
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.conv2d(x, w)
        assert roofline.conv_flops(2, 8, 9, k) == counter.get_total_flops() == formula
    # each probe's rate is its work over the median iteration, not over its fastest one
    times = [40.0, 10.0, 20.0, 1000.0, 30.0]  # ms: median 30
    monkeypatch.setattr(roofline, "time_iterations", lambda fn, dev, cfg: (times, "perf_counter"))
    monkeypatch.setattr(roofline, "MATMUL_SIDES", {"cpu": (4,)})
    monkeypatch.setattr(roofline, "CONV_SHAPES", {"cpu": ((1, 2, 5, 3), (1, 2, 6, 5))})
    probes = roofline._probe_flops(torch.device("cpu"), torch.float32, cuda=False)
    assert probes == {
        "matmul 4": 2 * 4**3 / 0.030,
        "conv3x3 1x2x5": 2 * 1 * 2 * 2 * 9 * 3 * 3 / 0.030,
        "conv5x5 1x2x6": 2 * 1 * 2 * 2 * 25 * 2 * 2 / 0.030,
    }


@pytest.mark.parametrize("conv,size", [
    (torch.nn.Conv2d(4, 6, 3, padding=1), 7),  # GoogLeNet's last maps: (19/21)^2 of the taps
    (torch.nn.Conv2d(1, 8, 11, stride=4, padding=2), 27),  # AlexNet's first layer, small input
    (torch.nn.Conv2d(6, 6, 5, padding=2, groups=3), 9),
    (torch.nn.Conv2d(2, 3, 3, padding=2, dilation=2, stride=2), 10),
    (torch.nn.Conv2d(3, 5, 1), 6),  # no padding: every tap real, fvcore's count
])  # fmt: skip
def test_a_convolution_counts_only_the_taps_on_real_data(conv, size):
    """A second count: ones through a ones-kernel sum, at each output, the taps that land on the
    input (padding adds zeros), for every input channel of the group."""
    from cnnbench.measure.flops import conv_work_macs

    shape = (2, conv.in_channels, size, size)
    with torch.no_grad():
        taps = torch.nn.functional.conv2d(torch.ones(shape), torch.ones_like(conv.weight), None,
                                          conv.stride, conv.padding, conv.dilation, conv.groups)  # fmt: skip
    assert conv_work_macs(conv, shape) == int(taps.sum())
    out = taps.shape[-1]
    nominal = 2 * conv.out_channels * (conv.in_channels // conv.groups) * conv.kernel_size[0] ** 2 * out * out
    assert conv_work_macs(conv, shape) <= nominal
    assert (conv_work_macs(conv, shape) == nominal) == (conv.padding == (0, 0))


def test_the_trained_cost_of_a_batch_norm_network_at_its_smallest_size():
    # batch norm in training mode cannot take one value per channel (GoogLeNet's 1x1 maps at 28)
    cost = train.trained_cost(Spec("googlenet_bn", 28, 16, mode="train"))
    plain = train.trained_cost(Spec("googlenet", 28, 16, mode="train"))
    assert cost["trained_params"] > plain["trained_params"]
    assert cost["trained_step_flops"] >= plain["trained_step_flops"]  # same convolutions, plus BN


def _layer(intensity: float, fraction: float):
    from cnnbench.results.types import LayerRoof

    roof = min(100e9, 10e9 * intensity)  # peak 100 GFLOP/s, 10 GB/s: ridge 10 FLOP/byte
    return LayerRoof("conv", "Conv2d", "3x3", 10**6, 10**5, 1.0, fraction * roof, intensity, roof, "", fraction)


def test_a_layer_is_bound_by_a_roof_only_near_it_and_by_overhead_below_both():
    ridge = 10.0
    assert _layer(2.0, 0.8).bound_at(ridge) == "memory"  # left of the ridge, at 80% of its roof
    assert _layer(50.0, 0.6).bound_at(ridge) == "compute"
    # at 15% or 0.5% of either roof a layer is bound by neither: launch, framework, small shapes
    assert _layer(2.0, 0.15).bound_at(ridge) == "overhead"
    assert _layer(50.0, 0.005).bound_at(ridge) == "overhead"
    assert _layer(2.0, 0.5).bound_at(ridge) == "memory" and _layer(2.0, 0.49).bound_at(ridge) == "overhead"


def test_only_a_layer_above_the_compute_roof_breaks_the_peak():
    # 3x the DRAM roof at intensity 2 (60 GFLOP/s against a 20 GFLOP/s bandwidth roof): a working
    # set in cache, not a broken peak; 120 GFLOP/s against a 100 GFLOP/s peak is
    cached = _layer(2.0, 3.0)
    assert not cached.above_compute_roof(100e9)
    assert _layer(50.0, 1.2).above_compute_roof(100e9)
    assert not _layer(50.0, 1.04).above_compute_roof(100e9)  # within the timings' 5%


def test_the_share_outside_conv_and_linear_takes_the_profilers_cost_out():
    """Two layers of 6 and 2 ms in a 10 ms profiled pass with 5 ranges, each range adding 0.2 ms
    to the pass and 0.1 ms inside its layer: 1 - (8 - 2 x 0.1) / (10 - 5 x 0.2) = 0.1333, not
    the profiled 1 - 8 / 10 = 0.2."""
    from cnnbench.results.types import LayerRoof

    rows = [LayerRoof(n, "Conv2d", "3x3", 1, 1, ms, 1.0, 1.0, 1.0, "compute", 1.0) for n, ms in (("a", 6.0), ("b", 2.0))]
    cpu = roofline._Profiled({}, "cpu_time", ranges=5, range_inside_ms=0.1, range_ms=0.2)
    share, overhead = roofline._outside_share(rows, 10.0, cpu)
    assert share == pytest.approx(1 - 7.8 / 9.0) and overhead == pytest.approx(1.0)
    cuda = roofline._Profiled({}, "device_time", ranges=5, range_inside_ms=0.1, range_ms=0.2)
    assert roofline._outside_share(rows, 10.0, cuda) == (pytest.approx(0.2), 0.0)  # device time: no host cost
