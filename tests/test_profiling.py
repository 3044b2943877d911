"""Roofline profiling (issue 23): the profiler's schedule, a layer's time over the events it
actually has, a layer short of events flagged, CUPTI's messages kept apart from Kineto's noise,
and the TF32 flags recorded as torch reports them while the peaks are probed."""

from __future__ import annotations

import contextlib
import os
import time
import warnings

import pytest
import torch
from torch import nn

from cnnbench import env
from cnnbench.measure import roofline

SLEEP_S = 0.005  # a layer's own time: sleeping is CPU time the profiler sees as wall time


def test_a_layers_time_is_divided_by_its_own_events():
    """600 µs in 3 events of a once-per-pass layer is 0.2 ms a pass, not 600 / 5 passes = 0.12;
    800 µs in 10 events of a twice-per-pass layer is 800 / 5 = 0.16 ms a pass."""
    totals = {"conv": (600.0, 3), "twice": (800.0, 10), roofline.WHOLE: (1000.0, 5)}
    times = roofline.layer_times(totals, {"conv": 1, "twice": 2})
    assert times == pytest.approx({"conv": 0.2, "twice": 0.16, roofline.WHOLE: 0.2})


def test_a_layer_short_of_events_is_flagged():
    totals = {"conv": (600.0, 3), "twice": (800.0, 10), roofline.WHOLE: (1000.0, 5)}
    per_pass = {"conv": 1, "twice": 2, "gone": 1}
    assert roofline.short_of_events(totals, per_pass, active=5) == {"conv": 3, "gone": 0}
    assert roofline.short_of_events(totals, per_pass, active=3) == {"twice": 10, "gone": 0,
                                                                     roofline.WHOLE: 5}  # fmt: skip


class _Sleepy(nn.Module):
    """A layer whose time is known: it sleeps ``SLEEP_S`` per call."""

    def forward(self, x):
        time.sleep(SLEEP_S)
        return x


class _Net(nn.Module):
    """``once`` runs once a pass, ``twice`` twice, ``sometimes`` only on even-numbered passes."""

    def __init__(self):
        super().__init__()
        self.once, self.twice, self.sometimes = _Sleepy(), _Sleepy(), _Sleepy()
        self.passes = 0

    def forward(self, x):
        x = self.twice(self.twice(self.once(x)))
        if self.passes % 2 == 0:
            x = self.sometimes(x)
        self.passes += 1
        return x


def test_the_real_profiler_runs_its_schedule_and_divides_by_the_events():
    """One pass unprofiled (calls per pass), then wait + warm-up + 5 counted passes. Passes are
    numbered from 0: ``sometimes`` runs in the unprofiled pass 0, and of the counted passes
    4..8 in 4, 6 and 8: three events, flagged, and its time is 3 sleeps over 3 passes."""
    net = _Net()
    x = torch.zeros(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = roofline._profile_layers(net, lambda: net(x), torch.device("cpu"))
    steps = roofline.PROFILE_WAIT + roofline.PROFILE_WARMUP + roofline.PROFILE_ACTIVE
    assert net.passes == 1 + steps == 9
    assert p.active_steps == 5 and p.ranges == 4.0  # once + twice x 2 + sometimes, per pass
    assert p.short_of_events == {"sometimes": 3}
    assert any("sometimes" in str(w.message) for w in caught)
    # ms per pass: at least the sleeps, and well under what a wrong divisor would give
    for name, sleeps in (("once", 1), ("twice", 2), ("sometimes", 1)):
        assert sleeps * SLEEP_S * 1e3 <= p.layer_ms[name] < sleeps * SLEEP_S * 1e3 * 1.5, name
    assert p.layer_ms[roofline.WHOLE] >= 3.6 * SLEEP_S * 1e3  # 3 sleeps + 3 of 5 passes' 4th


def test_kinetos_noise_is_dropped_and_cupti_kept():
    text = ("USDT:2026-12-07 15:35:41 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n"
            "ERROR:2026-12-07 1:1 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35\n"
            "STAGE:2026-12-07 1:1 ActivityProfilerController.cpp:314] Completed Stage: Warm Up\n"
            "WARNING:2026-12-07 1:1 CuptiActivityApi.cpp:78] CUPTI_ERROR_INSUFFICIENT_PRIVILEGES\n"
            "Completed Stage: Collection, cupti buffers dropped 3\n"
            "\n"
            "something else\n")  # fmt: skip
    assert roofline.profiler_messages(text) == [
        "WARNING:2026-12-07 1:1 CuptiActivityApi.cpp:78] CUPTI_ERROR_INSUFFICIENT_PRIVILEGES",
        "Completed Stage: Collection, cupti buffers dropped 3",
        "something else",
    ]


def test_the_native_stderr_lets_cupti_through(capfd):
    messages: list[str] = []
    with roofline._native_stderr(messages):
        os.write(2, b"USDT:x SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"CUPTI_ERROR_NOT_INITIALIZED: kernels are missing\n")
    assert messages == ["CUPTI_ERROR_NOT_INITIALIZED: kernels are missing"]
    err = capfd.readouterr().err
    assert "CUPTI_ERROR_NOT_INITIALIZED" in err and "profiler_start" not in err


@pytest.fixture
def fake_probes(monkeypatch):
    """measure_peaks without its probes or a GPU: the FLOP probe records torch's TF32 state."""
    seen = []

    def probe(device, torch_dtype, cuda):
        seen.append(env.tf32_state())
        return {"matmul 8": 2.0, "conv3x3 1x2x3": 1.0}

    monkeypatch.setattr(roofline, "_probe_flops", probe)
    monkeypatch.setattr(roofline, "_probe_bandwidth", lambda device, cuda: (1.0, 4))
    monkeypatch.setattr(roofline, "_sheet", lambda device, mode: (None, None, None, None))
    saved = env.tf32_state()
    yield seen
    assert env.tf32_state() == saved  # tf32_mode put TF32 back


@pytest.mark.parametrize("tf32", [True, False])
def test_peaks_record_the_tf32_flags_torch_reported_while_probing(fake_probes, tf32):
    peaks = roofline.measure_peaks(torch.device("cuda"), "fp32", tf32=tf32)
    (state,) = fake_probes
    assert (state["matmul_allow_tf32"], state["cudnn_allow_tf32"]) == (tf32, tf32)
    assert peaks.tf32_flags == {"matmul": tf32, "cudnn": tf32}
    assert peaks.math_mode == ("tf32" if tf32 else "fp32")


def test_peaks_record_torchs_report_not_the_intent(fake_probes, monkeypatch):
    """Where torch reports other than was asked (an override, a backend that refused), the
    record says what torch reported."""

    @contextlib.contextmanager
    def refused(enabled):
        yield {"matmul_allow_tf32": False, "cudnn_allow_tf32": True}

    monkeypatch.setattr(roofline, "tf32_mode", refused)
    peaks = roofline.measure_peaks(torch.device("cuda"), "fp32", tf32=True)
    assert peaks.math_mode == "tf32" and peaks.tf32_flags == {"matmul": False, "cudnn": True}
    cpu = roofline.measure_peaks(torch.device("cpu"), "fp32")
    assert cpu.tf32_flags is None
