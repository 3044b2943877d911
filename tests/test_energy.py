"""Energy per image (cnnbench/measure/energy.py): NVML through a fake pynvml whose counter
advances with the clock, RAPL through a fake powercap tree, and the real CPU run here, which has
no counter and must say so rather than report a number."""

from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from cnnbench.measure import energy
from cnnbench.measure.train import Unsupported
from cnnbench.results import Record, Spec

POWER_W = 250.0  # the fake board's constant draw


def _fake_pynvml(*, period_s: float = 0.05, counter: bool = True) -> types.ModuleType:
    """A pynvml whose energy counter holds POWER_W x time since it was made, updated every
    ``period_s`` (NVML's counter updates every 20-100 ms, in millijoules)."""
    mod = types.ModuleType("pynvml")
    origin = time.perf_counter()

    class NVMLError(Exception):
        pass

    def energy_mj(handle):
        if not counter:
            raise NVMLError("Not Supported")
        ticks = math.floor((time.perf_counter() - origin) / period_s)
        return round(POWER_W * 1e3 * ticks * period_s)

    mod.NVMLError = NVMLError
    mod.nvmlInit = lambda: None
    mod.nvmlShutdown = lambda: None
    mod.nvmlDeviceGetHandleByUUID = lambda uuid: ("handle", uuid)
    mod.nvmlDeviceGetName = lambda handle: b"Fake GPU"
    mod.nvmlDeviceGetTotalEnergyConsumption = energy_mj
    return mod


class _Step:
    """A step that takes ``seconds`` and counts its calls (the test's own image count)."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self):
        self.calls += 1
        time.sleep(self.seconds)


SPEC = Spec(model="nin", image_size=64, batch_size=8, device="cpu", mode="inference")


def _nvml_meter(monkeypatch, **fake) -> energy.NvmlMeter:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(**fake))
    return energy.NvmlMeter.open("cuda:0", uuid=b"GPU-fake")


def test_nvml_joules_per_image_is_the_fakes_energy_over_the_images(monkeypatch):
    meter = _nvml_meter(monkeypatch, period_s=0.1)  # NVML's slowest
    step = _Step(0.002)
    result = energy.measure(step, meter, SPEC, warmup_steps=2, min_s=0.5, min_updates=5)
    images = (step.calls - 2) * SPEC.batch_size  # every call after the warm-up, counted here
    assert result.images == images
    # the fake drew POWER_W the whole block: its energy is POWER_W x the block's time; the block
    # starts and ends on counter updates, so only the polling's lag (ms) separates the two
    # (a block not aligned on updates is off by up to one 100 ms period)
    assert result.energy_j == pytest.approx(POWER_W * result.block_s, abs=POWER_W * 0.01)
    assert result.joules_per_image == pytest.approx(POWER_W * result.block_s / images,
                                                    rel=0.01 / 0.5)  # fmt: skip
    assert result.joules_per_image == result.energy_j / images
    assert result.update_period_ms == pytest.approx(100, abs=10)  # the fake's, timed
    assert result.block_s >= 0.5 and not result.short
    assert result.mean_power_w == pytest.approx(POWER_W, rel=0.02)
    assert result.source == "nvml_total_energy" and "Fake GPU" in result.scope


def test_a_counter_too_slow_for_the_cap_is_flagged_short_not_stretched(monkeypatch):
    meter = _nvml_meter(monkeypatch, period_s=0.2)
    result = energy.measure(_Step(0.002), meter, SPEC, warmup_steps=0, min_s=0.1,
                            min_updates=10, max_s=0.5)  # fmt: skip
    assert result.short  # 10 updates of 0.2 s cannot fit in 0.5 s
    assert result.block_s < 0.5 + 0.2 + 0.05  # the cap, the tail's wait for an update, slack
    assert result.energy_j == pytest.approx(POWER_W * result.block_s, abs=POWER_W * 0.01)


class _AsyncStep:
    """A step as CUDA runs one: it returns at once and keeps the device busy ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds, self.calls, self.until = seconds, 0, 0.0

    def __call__(self):
        self.calls += 1
        # the launch queue is bounded: a host ahead by a step waits for the device, as CUDA's
        time.sleep(max(0.0, self.until - time.perf_counter() - self.seconds))
        self.until = max(self.until, time.perf_counter()) + self.seconds

    def busy(self) -> bool:
        return time.perf_counter() < self.until

    def sync(self):
        time.sleep(max(0.0, self.until - time.perf_counter()))


def test_steps_longer_than_an_update_end_the_block_on_the_update_inside_the_step(monkeypatch):
    meter = _nvml_meter(monkeypatch, period_s=0.02)
    step = _AsyncStep(0.06)  # three updates per step, as a large batch on a GPU
    block = energy.run_block(step, meter, step.sync, busy=step.busy, min_s=0.1, min_updates=10)
    assert not block.short and block.steps == step.calls
    assert block.update_period_s == pytest.approx(0.02, abs=0.005)
    # 10 periods = 0.2 s, the queue's two steps drained, then the tail's step until the next
    # update: the end is that update, caught while the step runs (read when the step ended, it
    # would lag by up to a period)
    assert 0.2 <= block.seconds < 0.2 + 3 * 0.06 + 0.05
    assert block.energy_j == pytest.approx(POWER_W * block.seconds, abs=POWER_W * 0.005)


def test_a_gpu_without_an_energy_counter_is_unsupported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(counter=False))
    with pytest.raises(Unsupported, match="no energy counter.*Not Supported"):
        energy.NvmlMeter.open("cuda:0", uuid=b"GPU-fake")


def test_no_pynvml_is_unsupported_and_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(Unsupported, match="nvidia-ml-py"):
        energy.open_meter("cuda:0")


# --- RAPL ---------------------------------------------------------------------------------------

MAX_UJ = 262_143_328_850  # a real package zone's max_energy_range_uj


def _zone(root: Path, name: str, dirname: str, energy_uj: int) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    return d / "energy_uj"


def _powercap(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "powercap"
    p0 = _zone(root, "package-0", "intel-rapl:0", MAX_UJ - 100)
    p1 = _zone(root, "package-1", "intel-rapl:1", 5_000_000)
    _zone(root, "core", "intel-rapl:0:0", 7)  # a subzone: inside package-0 already
    _zone(root, "psys", "intel-rapl:2", 9)  # the platform: overlaps the packages
    return root, p0, p1


def test_rapl_sums_the_packages_and_undoes_a_wrap(tmp_path):
    root, p0, p1 = _powercap(tmp_path)
    meter = energy.RaplMeter.open(root)
    assert [z.name for z in meter.zones] == ["package-0", "package-1"]
    assert meter.read_j() == 0.0
    p0.write_text("50\n")  # wrapped: 100 µJ up to the range, then 50 past 0
    p1.write_text("5250000\n")  # 250,000 µJ more
    assert meter.read_j() == pytest.approx((150 + 250_000) / 1e6)
    assert meter.wraps == 1
    p0.write_text("1050\n")  # 1000 µJ more, no wrap
    assert meter.read_j() == pytest.approx((150 + 250_000 + 1000) / 1e6)
    assert meter.wraps == 1


def test_rapl_permission_denied_is_unsupported_and_says_root(tmp_path, monkeypatch):
    root, p0, _ = _powercap(tmp_path)
    read_text = Path.read_text

    def denied(self, *a, **kw):  # tests run as root here, where chmod 000 does not stop a read
        if self == p0:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", denied)
    denied_line = r"permission denied reading .*intel-rapl:0/energy_uj.*root"
    with pytest.raises(Unsupported, match=denied_line):
        energy.open_meter("cpu", powercap=root)


def test_no_powercap_is_unsupported_and_names_the_folder(tmp_path):
    with pytest.raises(Unsupported, match=r"powercap-none does not exist"):
        energy.open_meter("cpu", powercap=tmp_path / "powercap-none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Unsupported, match="no RAPL package zone"):
        energy.open_meter("cpu", powercap=tmp_path / "empty")


# --- the run, the record, the training loop's tally -------------------------------------------


def _readable_rapl() -> bool:
    try:
        energy.open_meter("cpu").close()
    except Unsupported:
        return False
    return True


@pytest.mark.skipif(_readable_rapl(), reason="this machine can read RAPL: the record is ok here")
def test_a_cpu_run_without_a_counter_records_unsupported_with_the_reason(tmp_path):
    from cnnbench import runner
    from cnnbench.config import make_config

    config = make_config(models=("nin",), metrics=("energy",), device="cpu", profile="smoke",
                         out_dir=str(tmp_path / "run"), isolation="none")  # fmt: skip
    result = runner.run(config)
    assert [r.spec.mode for r in result.records] == ["inference", "train"]
    assert all(r.metric == "energy" and r.status == "unsupported" for r in result.records)
    assert all("powercap" in r.reason and not r.values for r in result.records)
    # at the accuracy run's batch, as the harness promises
    assert {r.spec.batch_size for r in result.records} == {config.train.batch_size}
    assert not result.failed


def test_an_energy_record_round_trips_through_json(monkeypatch):
    meter = _nvml_meter(monkeypatch, period_s=0.02)
    result = energy.measure(_Step(0.001), meter, SPEC, warmup_steps=0, min_s=0.1, min_updates=3)
    rec = Record.from_dict(json.loads(Record.of("energy", SPEC, result).to_json()))
    assert rec.result == result


class _HandMeter:
    source, scope = "hand", "a counter the test sets"

    def __init__(self):
        self.value_j = 10.0

    def read_j(self) -> float:
        return self.value_j

    def close(self) -> None:
        pass


def test_the_training_tally_sums_its_spans_only():
    meter = _HandMeter()
    tally = energy.EnergyTally(meter, torch.device("cpu"))
    with tally.span():
        meter.value_j = 13.5  # an epoch's pass: 3.5 J
    meter.value_j = 20.0  # evaluation, between spans: not training energy
    with tally.span():
        meter.value_j = 22.0
    assert tally.joules == pytest.approx(3.5 + 2.0)
    assert tally.spans == 2 and tally.short_spans == 2  # each far below MIN_BLOCK_S


def test_a_tally_without_a_counter_says_why_and_has_no_joules(tmp_path):
    tally = energy.EnergyTally.for_device("cpu", powercap=tmp_path / "none")
    with tally.span():
        pass
    assert tally.joules is None and "does not exist" in tally.unsupported
