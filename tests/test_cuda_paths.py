"""The CUDA paths' wiring, shown on a CPU (issue 13): what a worker sets, which stream a timer
records on, what a roofline profiles and counts, how CUDA peak memory is taken, how fp16 trains,
what a weights cast builds, how a sweep ends. The numbers themselves need a GPU (the acceptance
run, benchmarks/gpu_acceptance.py); these tests fail when the wiring is undone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import torch

from cnnbench import runner
from cnnbench.config import TimingConfig, make_config
from cnnbench.measure import _device, harnesses, latency, memory, roofline, workload
from cnnbench.results import Spec
from cnnbench.results.types import DevicePeaks, LatencyResult
from tests.fake_cuda import FakeAllocator, patch_cuda_memory
from tests import nested_pytest

ROOT = Path(__file__).resolve().parents[1]


def _config(**given):
    return make_config(models=("googlenet28",), metrics=("latency",), device=given.pop("device", "cpu"),
                       profile="smoke", out_dir="unused", given=given)  # fmt: skip


@pytest.fixture
def flags_restored():
    """TF32 through both of torch's APIs (``tf32_mode`` restores each: a legacy read or write
    after the new API in one process can raise), cuDNN autotuning and the threads as they were."""
    saved = (torch.backends.cudnn.benchmark, torch.get_num_threads())
    with _device.tf32_mode(False):
        yield
    torch.backends.cudnn.benchmark = saved[0]
    torch.set_num_threads(saved[1])


# --- 1, 10, 13: every worker sets both TF32 flags and the device; env.json says what workers ran --


@pytest.mark.parametrize("tf32", [False, True])
def test_a_worker_sets_both_tf32_flags_from_the_config(flags_restored, tf32):
    # start from the opposite: each backend's flag must be set, not kept
    _device.set_tf32(not tf32)
    runner.setup_process(_config(tf32=tf32))
    flags = runner.process_flags()
    assert flags["matmul_allow_tf32"] is tf32 and flags["cudnn_allow_tf32"] is tf32


def test_cuda_n_becomes_the_current_device(flags_restored, monkeypatch):
    made_current = []
    # torch.cuda.set_device(torch.device("cuda")) raises (no index): the worker passes one
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: made_current.append(d))
    runner.setup_process(dataclasses.replace(_config(), device="cuda:1"))
    runner.setup_process(dataclasses.replace(_config(), device="cuda"))
    assert made_current == [1, 0]
    assert torch.backends.cudnn.benchmark is True  # cuDNN autotuning, as recorded in the spec


def test_the_spec_records_tf32_and_cast_where_they_apply():
    cuda = dataclasses.replace(_config(tf32=True), device="cuda")
    assert runner.base_spec(cuda, "nin").tf32 is True
    assert runner.base_spec(_config(), "nin").tf32 is None  # a CPU has no TF32
    bf16 = _config(dtype="bf16", cast="weights")
    units = harnesses.HARNESSES["latency"].plan(bf16, runner.base_spec(bf16, "nin"))
    casts = {(s.mode, s.cast) for s in units}
    # a weights cast is for inference; the training step keeps fp32 weights under autocast
    assert casts == {("inference", "weights"), ("train", "autocast")}
    assert runner.base_spec(_config(), "nin").cast is None


def test_isolation_none_sets_this_process_up_like_a_worker(tmp_path, flags_restored):
    _device.set_tf32(True)
    config = make_config(models=("googlenet28",), metrics=("params",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), isolation="none", given={"threads": 1})  # fmt: skip
    runner.run(config)
    assert torch.get_num_threads() == 1
    from cnnbench.env import tf32_state

    state = tf32_state()  # as torch reports it, whichever API set it
    assert not state["matmul_allow_tf32"] and not state["cudnn_allow_tf32"]
    flags = json.loads((tmp_path / "run" / "env.json").read_text())["worker_flags"]
    assert flags["torch_threads"] == 1 and flags["cudnn_allow_tf32"] is False


# --- 2: events on the device's own stream ---------------------------------------------------------


def test_cuda_events_record_on_the_devices_current_stream(monkeypatch):
    streams = {torch.device("cuda:1"): "stream of cuda:1"}
    recorded = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self, stream=None):
            recorded.append(stream)

        def elapsed_time(self, other):
            return 2.0

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d: streams[torch.device(d)])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: None)
    host: list[float] = []
    times, timer = latency.time_iterations(
        lambda: None, torch.device("cuda:1"), TimingConfig(warmup_runs=0, min_runs=3, min_time_s=1e-9),
        host,
    )  # fmt: skip
    assert timer == "cuda_event" and times == [2.0] * 3
    assert recorded == ["stream of cuda:1"] * 6  # start and end of each iteration, none default
    # the host's issue time, apart from the timed loop (a full queue would block it there)
    assert len(host) == latency.HOST_SAMPLES and all(h >= 0 for h in host)


# --- 3, 9: the roofline profiles the measured step and counts its bytes ----------------------------


def test_roofline_bytes_come_from_each_tensors_element_size():
    spec = Spec("googlenet28", 28, batch_size=2)
    fp32 = roofline._layer_bytes(*_model_and_forward(spec))
    bf16 = roofline._layer_bytes(*_model_and_forward(dataclasses.replace(spec, dtype="bf16",
                                                                           cast="weights")))  # fmt: skip
    assert fp32.keys() == bf16.keys()
    for name, (ins, outs, weights, work) in fp32.items():
        assert bf16[name] == (ins // 2, outs // 2, weights // 2, work), name  # the same taps
    # under autocast a layer's output is bf16, and it casts its fp32 weights (and the first
    # layer its fp32 input) on every call: read 4 bytes, write 2, read 2 = 2x the fp32 bytes
    auto = roofline._layer_bytes(*_model_and_forward(dataclasses.replace(spec, dtype="bf16",
                                                                           cast="autocast")))  # fmt: skip
    first, second = list(fp32)[:2]
    assert auto[first][:3] == (2 * fp32[first][0], fp32[first][1] // 2, 2 * fp32[first][2])
    assert auto[second][0] == fp32[second][0] // 2  # a bf16 activation needs no cast


def _model_and_forward(spec):
    w = workload.build(spec)
    return w.model, w.forward


def _peaks(mode="fp32"):
    return DevicePeaks(device="cpu", dtype="fp32", matmul_n=1, matmul_flops=1e12, conv_flops=1e12,
                       peak_flops=1e12, copy_bytes=1, peak_bytes_per_s=1e11, datasheet_flops=None,
                       datasheet_bytes_per_s=None, math_mode=mode)  # fmt: skip


def test_roofline_refuses_peaks_of_another_math_mode():
    spec = Spec("googlenet28", 28, batch_size=2)
    with pytest.raises(ValueError, match="peaks measured in tf32, the layers run in fp32"):
        roofline.measure(workload.build_model(spec), spec, _peaks("tf32"))
    # a CPU has no bf16 peak (its probes run fp32): a bf16 roofline is unsupported, not misjudged
    from cnnbench.measure.train import Unsupported

    bf16 = dataclasses.replace(spec, dtype="bf16", cast="autocast")
    with pytest.raises(Unsupported, match="no bf16 peak on a CPU"):
        roofline.measure(workload.build_model(bf16), bf16, _peaks("fp32"))


def test_roofline_profiles_the_step_as_measured(monkeypatch):
    """channels_last and the dtype reach the profiled forward, and a layer without a time is an
    error, never a silently shorter table."""
    seen = []
    original = roofline._profile_layers

    def spy(model, forward, device, runs=5):
        hook = model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]))
        try:
            return original(model, forward, device, runs)
        finally:
            hook.remove()

    monkeypatch.setattr(roofline, "_profile_layers", spy)
    spec = Spec("googlenet28", 28, batch_size=2, channels_last=True)
    result = roofline.measure(workload.build_model(spec), spec, _peaks())
    assert seen and all(x.is_contiguous(memory_format=torch.channels_last) for x in seen)
    assert all(r.time_ms > 0 for r in result.layers)
    monkeypatch.setattr(roofline, "_profile_layers", lambda *a, **k: roofline._Profiled({}, "cpu_time", 0.0, 0.0, 0.0))
    with pytest.raises(RuntimeError, match="gave layer .* no cpu_time"):
        roofline.measure(workload.build_model(spec), spec, _peaks())


def test_layer_times_take_the_cpu_row_not_the_gpu_annotation():
    from torch.autograd import DeviceType

    @dataclasses.dataclass
    class Evt:
        key: str
        device_type: object
        cpu_time_total: float = 0.0
        device_time_total: float = 0.0
        count: int = 5  # five passes, one call each

    events = [Evt("layer::conv", DeviceType.CPU, 900.0, 500.0),
              Evt("layer::conv", DeviceType.CUDA, 0.0, 350.0),  # the annotation, gaps and all
              Evt("aten::conv2d", DeviceType.CPU, 800.0, 500.0)]  # fmt: skip
    assert roofline.layer_times(roofline.layer_totals(events, "cuda")) == {"conv": 0.1}
    assert roofline.layer_times(roofline.layer_totals(events, "cpu")) == {"conv": 0.18}


def test_data_sheet_by_math_mode():
    assert roofline.math_mode(torch.device("cuda"), "fp32", tf32=True) == "tf32"
    assert roofline.math_mode(torch.device("cuda"), "fp32", tf32=False) == "fp32"
    assert roofline.math_mode(torch.device("cpu"), "fp32", tf32=True) == "fp32"
    fp32, bw, _ = roofline.datasheet("NVIDIA H200", "fp32")
    tf32, _, _ = roofline.datasheet("NVIDIA H200", "tf32")
    bf16, _, source = roofline.datasheet("NVIDIA H200", "bf16")
    assert (fp32, tf32, bf16, bw) == (67e12, 494.7e12, 989.4e12, 4.8e12)
    assert "dense" in source
    assert roofline.datasheet("NVIDIA H100 PCIe", "tf32")[0] == 378e12
    assert roofline.datasheet("Tesla T4", "fp32") is None
    assert roofline.datasheet("NVIDIA H200 NVL", "bf16") is None  # not the SXM part's figures


def test_cpu_peaks_record_their_math_mode():
    peaks = roofline.measure_peaks(torch.device("cpu"))
    assert peaks.math_mode == "fp32" and peaks.tf32_flags is None


# --- 4: CUDA peak memory after a warm-up step, above the baseline ----------------------------------


def test_cuda_peak_memory_is_taken_after_a_warm_step_and_above_the_baseline(monkeypatch):
    """A first step on a cold cuDNN cache allocates autotuning workspaces (here 10,000 bytes)
    that steady steps never do (100): they must not be the peak, and what was allocated before
    the model (leftovers, 7) is subtracted and recorded."""
    mem = FakeAllocator(leftover=7)
    patch_cuda_memory(monkeypatch, mem)

    class Step:
        calls = 0

        def __call__(self):
            transient = 10_000 if Step.calls == 0 else 100
            Step.calls += 1
            mem.alloc(transient)
            mem.free(transient)

    fake = type("W", (), {"step": Step(), "device": torch.device("cuda")})()

    def build(spec, **kw):
        mem.alloc(1_000)  # the model
        return fake

    monkeypatch.setattr(workload, "build", build)
    monkeypatch.setattr(memory, "analytic_breakdown", lambda w: memory.Breakdown(1, 0, 0, 0, 0))
    # the libraries' warm-up and the scratch pass have tests of their own (test_gpu_readiness)
    monkeypatch.setattr(memory, "_warm_libraries", lambda device, dtype, convs: ())
    monkeypatch.setattr(memory, "_conv_scratch", lambda w: None)
    result = memory._measure_cuda(Spec("nin", 224, device="cuda"), ("sgd", 0.01, 0.0))
    assert result.baseline_bytes == 7
    assert result.peak_bytes == 7 + 1_000 + 100
    assert result.measured_bytes == 1_000 + 100


# --- 5: benchmarks set and record their math flags -------------------------------------------------


def test_benchmarks_set_and_record_cudnn_and_tf32_flags(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [*nested_pytest.COMMAND, "-q", "-p", "no:cacheprovider", "benchmarks/bench_models.py",
         "--benchmark-only", "-k", "test_forward and b1 and nin", f"--benchmark-json={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=nested_pytest.environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    info = json.loads(out.read_text())["benchmarks"][0]["extra_info"]
    assert info["cudnn_benchmark"] is True
    assert info["cudnn_allow_tf32"] is False and info["matmul_allow_tf32"] is False


# --- 6: torch.compile per unit, static, with Dynamo's counters --------------------------------------


def test_compile_resets_dynamo_and_compiles_static_shapes(monkeypatch):
    import torch._dynamo

    calls = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append("reset"))
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(kw) or m)
    model = torch.nn.Linear(2, 2)
    assert workload.compiled(model) is model
    assert calls == [{"dynamic": False}]  # no reset per unit: once per model (test_hangs.py)
    counters = workload.dynamo_counters()
    assert set(counters) == {"frames_compiled", "frames_failed", "graphs", "graph_breaks",
                             "recompiles"}  # fmt: skip
    assert all(isinstance(v, int) and v >= 0 for v in counters.values())


def test_pooled_latency_sums_dynamo_counters_over_rounds():
    spec = Spec("nin", 224, compiled=True)
    rounds = [_latency([5.0, 5.0, 5.0], 1, dynamo={"frames_compiled": 1, "recompiles": 0}),
              _latency([5.0, 5.0, 5.0], 1, dynamo={"frames_compiled": 1, "recompiles": 2})]  # fmt: skip
    pooled = latency.pool(rounds, spec, TimingConfig())
    assert pooled.dynamo == {"frames_compiled": 2, "recompiles": 2}


# --- 7: fp16 trains with a GradScaler ---------------------------------------------------------------


def test_fp16_training_scales_the_loss():
    assert workload.grad_scaler(torch.device("cpu"), "bf16") is None
    assert workload.grad_scaler(torch.device("cpu"), "fp32") is None
    assert isinstance(workload.grad_scaler(torch.device("cpu"), "fp16"), torch.amp.GradScaler)
    w = workload.build(Spec("googlenet28", 28, batch_size=2, mode="train", dtype="fp16",
                            cast="autocast"))  # fmt: skip
    assert w.scaler is not None
    used = []

    class Scaler:
        def scale(self, loss):
            used.append("scale")
            return loss * 1.0

        def step(self, opt):
            used.append("step")
            opt.step()

        def update(self):
            used.append("update")

    w.scaler = Scaler()
    w.train_step()
    assert used == ["scale", "step", "update"]
    assert workload.build(Spec("googlenet28", 28, batch_size=2, mode="train", dtype="bf16",
                               cast="autocast")).scaler is None  # fmt: skip


# --- 8: a weights cast builds the model in the dtype -------------------------------------------------


def test_weights_cast_builds_the_model_in_its_dtype_and_autocast_keeps_fp32():
    spec = Spec("googlenet28", 28, batch_size=2, dtype="bf16", cast="weights")
    w = workload.build(spec)
    assert {p.dtype for p in w.model.parameters()} == {torch.bfloat16}
    assert w.x.dtype == torch.bfloat16 and w.forward().dtype == torch.bfloat16
    auto = workload.build(dataclasses.replace(spec, cast="autocast"))
    assert {p.dtype for p in auto.model.parameters()} == {torch.float32}
    assert auto.x.dtype == torch.float32 and auto.forward().dtype == torch.bfloat16


# --- 10: env.json: environment variables and nvidia-smi's facts --------------------------------------


def test_env_records_speed_environment_variables(monkeypatch):
    from cnnbench.env import collect_env

    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    env = collect_env("cpu")["env_vars"]
    assert env["NVIDIA_TF32_OVERRIDE"] == "0" and env["PYTORCH_CUDA_ALLOC_CONF"] is None
    assert "CUBLAS_WORKSPACE_CONFIG" in env


def test_nvidia_smi_row_is_the_gpu_torch_uses():
    from cnnbench.env import SMI_FIELDS, parse_smi

    def row(uuid, clock):
        values = dict.fromkeys(SMI_FIELDS, "x") | {"uuid": f"GPU-{uuid}", "clocks.sm": clock}
        return ", ".join(values[f] for f in SMI_FIELDS)

    text = "\n".join([row("aaaa-1", "1980 MHz"), row("bbbb-2", "345 MHz")])
    assert parse_smi(text, "bbbb-2", 0)["clocks.sm"] == "345 MHz"  # by UUID, not by order
    assert parse_smi(text, None, 1)["clocks.sm"] == "345 MHz"
    assert parse_smi("", None, 0) is None


# --- 12: a sweep ends at a plateau or before the tensor-size limit, and says why ---------------------


def _latency(times, batch, **extra):
    stats = latency.timing_stats(times, batch)
    return LatencyResult(timer="perf_counter", warmup_runs=0, unstable=False, other_cpu_share=None,
                         contended=False, attempts=1, compile_s=None, cudnn_benchmark=None,
                         times_ms=tuple(times), round_sizes=(len(times),), **stats, **extra)  # fmt: skip


def _synthetic_sweep(monkeypatch, images_per_s: dict[int, float]):
    def measure_unit(spec, ctx):
        ms = 1e3 * spec.batch_size / images_per_s[spec.batch_size]
        return _latency([ms * 0.99, ms, ms * 1.01], spec.batch_size)

    harness = dataclasses.replace(harnesses.HARNESSES["latency"], measure_unit=measure_unit)
    monkeypatch.setitem(harnesses.HARNESSES, "latency", harness)


def _sweep(tmp_path, max_batch=64):
    config = make_config(models=("googlenet28",), metrics=("latency",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), isolation="none",
                         given={"sweep": True, "rounds": 2, "threads": 1})  # fmt: skip
    return dataclasses.replace(
        config, batches=dataclasses.replace(config.batches, sweep_max_batch=max_batch)
    )


def test_a_sweep_ends_where_images_per_s_plateaus(tmp_path, monkeypatch):
    rates = {1: 100.0, 2: 180.0, 4: 300.0, 8: 305.0, 16: 308.0, 32: 400.0, 64: 500.0}
    _synthetic_sweep(monkeypatch, rates)
    result = runner.run(_sweep(tmp_path))
    got = {(r.spec.mode, r.spec.batch_size): r for r in result.records}
    for mode in ("inference", "train"):
        assert sorted(b for m, b in got if m == mode) == [1, 2, 4, 8, 16]  # 32 and 64 not tried
        end = got[mode, 16].result
        assert end.rounds == 2 and end.sweep_end.startswith("images/s plateaued: +1.7%, +1.0%")
        assert all(got[mode, b].result.sweep_end is None for b in (1, 2, 4, 8))


def test_a_sweep_stops_before_a_tensor_past_2_31_elements(tmp_path, monkeypatch):
    _synthetic_sweep(monkeypatch, {b: 100.0 * b for b in (1, 2, 4, 8, 16, 32, 64)})
    monkeypatch.setattr(workload, "largest_tensor_elements", lambda spec: 2**28)
    result = runner.run(_sweep(tmp_path))
    got = {(r.spec.mode, r.spec.batch_size): r.status for r in result.records}
    # 2^28 x 8 = 2^31 > 2^31 - 1: batch 8 is refused and says why; 16 and up are not tried
    assert got == {(m, b): "ok" for m in ("inference", "train") for b in (1, 2, 4)} | {
        ("inference", 8): "unsupported", ("train", 8): "unsupported"}
    refused = next(r for r in result.records if r.status == "unsupported")
    assert "2,147,483,648 elements, past 2^31 - 1" in refused.reason


def test_largest_tensor_elements_is_the_largest_activation_per_image():
    # the chapter prints NiN's first block as (1, 96, 54, 54): its widest tensor per image
    assert workload.largest_tensor_elements(Spec("nin", 224, batch_size=8)) == 96 * 54 * 54


def test_onednn_primitive_failure_is_oom_only_under_a_cap(monkeypatch):
    """Under an address-space cap oneDNN reports a refused allocation as a failed primitive
    (seen in the acceptance dry run); without a cap it is some other error."""
    from cnnbench.measure import _device

    exc = RuntimeError("could not create a primitive")
    monkeypatch.setattr(_device, "_address_space_capped", lambda: True)
    assert _device.is_oom(exc)
    monkeypatch.setattr(_device, "_address_space_capped", lambda: False)
    assert not _device.is_oom(exc)
    assert _device.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory"))


def test_a_resumed_sweep_counts_its_earlier_batches_toward_a_plateau(tmp_path, monkeypatch):
    rates = {1: 100.0, 2: 180.0, 4: 300.0, 8: 305.0, 16: 308.0, 32: 400.0, 64: 500.0}
    _synthetic_sweep(monkeypatch, rates)
    first = runner.run(_sweep(tmp_path, max_batch=8))  # +1.7% at 8: one flat doubling, no end yet
    assert all(r.result.sweep_end is None for r in first.records)
    resumed = dataclasses.replace(_sweep(tmp_path, max_batch=64), resume=True)
    again = runner.run(resumed)
    # 16 adds +1.0%: with 8's +1.7% measured before the resume, that is the plateau
    assert sorted((r.spec.mode, r.spec.batch_size) for r in again.records) == [
        ("inference", 16), ("train", 16)]
    assert all(r.result.sweep_end.startswith("images/s plateaued: +1.7%, +1.0%") for r in again.records)


def test_a_sweep_never_swallows_the_tricks_latency_units(tmp_path, monkeypatch):
    """Guards runner._execute's sweep key (the spec but its batch): with the sweep on (the full
    profile), the tricks' latency units, one batch each at the same images/s, are no doublings
    of one sweep; keyed by (metric, mode) the third would end a 'plateau' and skip the rest."""
    _synthetic_sweep(monkeypatch, {16: 320.0})
    config = make_config(models=("nin",), metrics=("tricks",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), isolation="none",
                         given={"sweep": True, "threads": 1, "seeds": (0, 1, 2),
                                "tricks": ("channels_last", "compile", "bf16")})  # fmt: skip
    units = [u for u in runner.plan(config, "nin") if u.metric == "latency"]
    assert len(units) == 8  # the baseline and three tricks, inference and a training step each
    monkeypatch.setattr(workload, "largest_tensor_elements", lambda spec: 1)
    events = list(runner._execute(harnesses.Context(config), units))
    assert [k for k, _ in events if k == "skip"] == []
    records = [p for k, p in events if k == "record"]
    assert len(records) == 8 and all(r.status == "ok" and r.values["sweep_end"] is None for r in records)
