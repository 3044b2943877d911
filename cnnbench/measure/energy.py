"""Energy per image of inference and of a training step, read from the device's own counter.

Counters (never an estimate: where none can be read, the unit is ``unsupported`` and says why):

- CUDA: NVML's total energy (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the
  driver loaded; Volta and later) through nvidia-ml-py's ``pynvml``. It covers the whole board
  and every process on it, and it updates every 20-100 ms.
- CPU: RAPL through powercap (``/sys/class/powercap/intel-rapl:N/energy_uj``, microjoules), the
  package zones summed: cores, caches and uncore of every process on the socket, not DRAM. The
  counter wraps at ``max_energy_range_uj``; since Linux 5.10 it is readable by root only
  (CVE-2020-8694, "Platypus").

Method: warm-up steps first (cuDNN autotuning and compilation stay out of the block); one update
period of the counter is timed; the block starts on an update and runs the step until it spans
``MIN_BLOCK_S`` and ``MIN_COUNTER_UPDATES`` periods (at most ``MAX_BLOCK_S``; a block that could
not is kept and flagged ``short``), then runs synchronized steps until the counter updates again,
so that both ends of the energy sit on updates and the device was busy in between. Joules per
image = the counter's difference / the images of every step in the block.

:class:`EnergyTally` is the same counter for a training loop (joules to a target accuracy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

import torch

from ..results import Spec
from ..results.types import EnergyResult
from . import workload
from ._device import synchronize

__all__ = [
    "EnergyResult",
    "EnergyTally",
    "Block",
    "Meter",
    "NvmlMeter",
    "RaplMeter",
    "POWERCAP",
    "open_meter",
    "run_block",
    "measure",
    "measure_unit",
]

MIN_BLOCK_S = 1.0  # a block lasts at least this long ...
MIN_COUNTER_UPDATES = 10  # ... and this many update periods (NVML's 100 ms: 1 s; RAPL's 1 ms)
MAX_BLOCK_S = 10.0  # ... unless this much time passed first: then it is flagged short
TICK_WAIT_S = 0.5  # longest wait for one counter update at either end of a block (5x NVML's 100 ms)
POLL_S = 0.0005  # sleep between reads while waiting for an update
POWERCAP = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+$")  # a top-level zone; "intel-rapl:0:1" is a subzone


def _unsupported(reason: str) -> NoReturn:
    # lazy: train.py imports this module for its training loop's energy
    from .train import Unsupported

    raise Unsupported(reason)


class Meter(Protocol):
    source: str  # "nvml_total_energy" or "rapl_powercap"
    scope: str  # what the counter covers

    def read_j(self) -> float:
        """Joules since an arbitrary origin, never decreasing."""
        ...

    def close(self) -> None: ...


# --- CUDA: NVML -----------------------------------------------------------------------------


def _import_pynvml():
    try:
        import pynvml
    except ImportError:
        _unsupported("no NVML: the pynvml module (pip install nvidia-ml-py) is not installed")
    return pynvml


def _nvml_uuid(device: str) -> bytes:
    """The NVML UUID of the torch device: by UUID, not index, because CUDA orders devices fastest
    first and renumbers them under CUDA_VISIBLE_DEVICES, while NVML counts by PCI bus."""
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    uuid = str(torch.cuda.get_device_properties(index).uuid)  # torch prints it without "GPU-"
    return (uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}").encode()


class NvmlMeter:
    """NVML's total-energy counter of one GPU (millijoules)."""

    source = "nvml_total_energy"

    def __init__(self, nvml, handle, scope: str):
        self._nvml, self._handle, self.scope = nvml, handle, scope

    @classmethod
    def open(cls, device: str, *, uuid: bytes | None = None) -> NvmlMeter:
        """The counter of ``device`` (``uuid`` given: that NVML device); ``Unsupported`` where
        NVML does not start or the GPU has no energy counter (before Volta)."""
        nvml = _import_pynvml()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            _unsupported(f"NVML did not start: {exc}")
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid or _nvml_uuid(device))
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            name = nvml.nvmlDeviceGetName(handle)
        except nvml.NVMLError as exc:
            nvml.nvmlShutdown()
            _unsupported(f"NVML has no energy counter for {device}: {exc}")
        name = name.decode() if isinstance(name, bytes) else str(name)
        return cls(nvml, handle, f"{name}, whole board (every process on it)")

    def read_j(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3

    def close(self) -> None:
        self._nvml.nvmlShutdown()


# --- CPU: RAPL powercap ---------------------------------------------------------------------


@dataclass(frozen=True)
class RaplZone:
    name: str  # "package-0"
    energy_path: Path  # energy_uj: microjoules, wrapping at max_range_uj
    max_range_uj: int


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError:
        _unsupported(f"permission denied reading {path}: RAPL energy is readable by root only "
                     "since Linux 5.10 (CVE-2020-8694)")  # fmt: skip
    except (OSError, ValueError) as exc:
        _unsupported(f"could not read {path}: {exc}")


def rapl_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """The package zones under ``root`` (``Unsupported`` when there are none, or one cannot be
    read). psys (the whole platform, overlapping the packages) and subzones are left out."""
    if not root.is_dir():
        _unsupported(f"{root} does not exist: this kernel exposes no RAPL powercap (a VM, a "
                     "CPU without RAPL, or the intel_rapl driver not loaded)")  # fmt: skip
    zones = []
    for path in sorted(root.iterdir()):
        if not _PACKAGE_ZONE.match(path.name) or not (path / "name").exists():
            continue
        name = (path / "name").read_text().strip()
        if name.startswith("package"):
            max_range_uj = _read_int(path / "max_energy_range_uj")
            zones.append(RaplZone(name, path / "energy_uj", max_range_uj))
    if not zones:
        _unsupported(f"{root} has no RAPL package zone (intel-rapl:N named package-N)")
    return zones


class RaplMeter:
    """The RAPL package zones' energy, summed, with each zone's wrap-arounds undone. Read it more
    often than a zone wraps (hours at a package's power)."""

    source = "rapl_powercap"

    def __init__(self, zones: list[RaplZone]):
        self.zones = zones
        self.scope = " + ".join(z.name for z in zones) + " (every process on the socket; no DRAM)"
        self.wraps = 0
        self._last_uj = [_read_int(z.energy_path) for z in zones]
        self._total_uj = 0

    @classmethod
    def open(cls, root: Path = POWERCAP) -> RaplMeter:
        return cls(rapl_zones(root))

    def read_j(self) -> float:
        for i, zone in enumerate(self.zones):
            now = _read_int(zone.energy_path)
            delta = now - self._last_uj[i]
            if delta < 0:  # wrapped: counted up to max_range_uj, then on from 0
                delta += zone.max_range_uj
                self.wraps += 1
            self._total_uj += delta
            self._last_uj[i] = now
        return self._total_uj / 1e6

    def close(self) -> None:
        pass


def open_meter(device: str, *, powercap: Path = POWERCAP) -> Meter:
    """The energy counter of ``device``, or ``Unsupported`` with the reason there is none."""
    if device.startswith("cuda"):
        return NvmlMeter.open(device)
    if device == "cpu":
        return RaplMeter.open(powercap)
    _unsupported(f"no energy counter is known for device '{device}'")


# --- one block of steps between two counter updates --------------------------------------------


@dataclass(frozen=True)
class Block:
    energy_j: float  # the counter's difference, update to update
    seconds: float  # wall time between those updates (as the host saw them)
    steps: int  # every step run in between (the tail's included)
    update_period_s: float  # the counter's update period, timed just before the block
    short: bool  # it could not last MIN_BLOCK_S and MIN_COUNTER_UPDATES periods within MAX_BLOCK_S


def _next_update(meter: Meter, last_j: float, wait_s: float) -> tuple[float, float]:
    """(joules, time) at the counter's next update after ``last_j``; ``Unsupported`` if none
    comes within ``wait_s`` (a stalled counter gives no energy, rather than zero)."""
    deadline = time.perf_counter() + wait_s
    while time.perf_counter() < deadline:
        now = meter.read_j()
        if now != last_j:
            return now, time.perf_counter()
        time.sleep(POLL_S)
    _unsupported(f"the {meter.source} counter did not change in {wait_s:g} s")


def run_block(
    step: Callable[[], object], meter: Meter, sync: Callable[[], None], *,
    busy: Callable[[], bool] = lambda: False, min_s: float = MIN_BLOCK_S,
    min_updates: int = MIN_COUNTER_UPDATES, max_s: float = MAX_BLOCK_S,
    tick_wait_s: float = TICK_WAIT_S,
) -> Block:  # fmt: skip
    """Time one update period, then run ``step`` from the next update until the block spans
    ``min_s`` and ``min_updates`` periods; then the tail (:func:`_tail_to_update`) ends it on
    the next update with the device busy up to it."""
    _, t_prev = _next_update(meter, meter.read_j(), tick_wait_s)
    e0, t0 = _next_update(meter, meter.read_j(), tick_wait_s)
    period = t0 - t_prev
    need_s = max(min_s, min_updates * period)
    steps = 0
    while (elapsed := time.perf_counter() - t0) < need_s and elapsed < max_s:
        step()
        steps += 1
    sync()
    e1, t1, tail = _tail_to_update(step, meter, sync, busy, tick_wait_s)
    return Block(e1 - e0, t1 - t0, steps + tail, period, short=elapsed < need_s)


def _tail_to_update(step, meter: Meter, sync, busy, wait_s: float) -> tuple[float, float, int]:
    """Steps one at a time until the counter updates: (joules, time, steps). While a step still
    runs on the device (``busy``: CUDA's stream not done) the counter is polled, so the update
    is caught when it comes, not when the step ends; a step the update fell inside is counted
    in full (high by at most one step's images). Host-synchronous steps (CPU) are read after
    each step: RAPL updates about every millisecond."""
    last = meter.read_j()
    deadline = time.perf_counter() + wait_s
    steps = 0
    while time.perf_counter() < deadline:
        step()
        steps += 1
        while busy() and meter.read_j() == last:
            time.sleep(POLL_S)
        now = meter.read_j()
        if now != last:
            t = time.perf_counter()
            sync()
            return now, t, steps
        sync()
    _unsupported(f"the {meter.source} counter did not change in {wait_s:g} s")


# --- the harness --------------------------------------------------------------------------------


def _busy(device: torch.device) -> Callable[[], bool]:
    """Whether work issued to ``device`` still runs (CUDA: its current stream is not done); a
    CPU step has finished when it returns."""
    if device.type != "cuda":
        return lambda: False
    stream = torch.cuda.current_stream(device)
    return lambda: not stream.query()


def measure(
    step: Callable[[], object], meter: Meter, spec: Spec, *, warmup_steps: int = 3, **block_kw
) -> EnergyResult:
    """Energy of ``spec``'s step (``step``: one batch of ``spec.batch_size`` images) on
    ``meter``, after ``warmup_steps`` untimed steps. On a CPU the share of the machine that other
    processes used is recorded with it: RAPL counts their energy too."""
    from .latency import CpuContention

    device = torch.device(spec.device)
    for _ in range(warmup_steps):
        step()
    synchronize(device)
    load = CpuContention() if device.type == "cpu" else contextlib.nullcontext()
    with load:
        block = run_block(step, meter, lambda: synchronize(device), busy=_busy(device), **block_kw)
    images = block.steps * spec.batch_size
    return EnergyResult(
        source=meter.source,
        scope=meter.scope,
        joules_per_image=block.energy_j / images,
        energy_j=block.energy_j,
        block_s=block.seconds,
        images=images,
        steps=block.steps,
        mean_power_w=block.energy_j / block.seconds,
        images_per_s=images / block.seconds,
        update_period_ms=block.update_period_s * 1e3,
        min_block_s=block_kw.get("min_s", MIN_BLOCK_S),
        min_counter_updates=block_kw.get("min_updates", MIN_COUNTER_UPDATES),
        short=block.short,
        warmup_steps=warmup_steps,
        other_cpu_share=getattr(load, "other_share", None),
        rapl_wraps=getattr(meter, "wraps", 0),
    )


def measure_unit(spec: Spec, ctx) -> EnergyResult:
    """The harness entry: the counter first (no counter, no work), then the workload; a training
    step uses the accuracy run's optimizer, as the latency harness does."""
    from .train import optimizer_for

    meter = open_meter(spec.device)
    try:
        opt = optimizer_for(ctx.config, spec.model) if spec.mode == "train" else None
        kw = dict(optimizer=opt.name, lr=opt.lr, momentum=opt.momentum) if opt else {}
        step = workload.build(spec, **kw).step
        result = measure(step, meter, spec, warmup_steps=ctx.config.timing.warmup_runs + 1)
    finally:
        meter.close()
    return dataclasses.replace(result, optimizer=opt.label) if opt else result


# --- a training loop's energy (joules to a target accuracy) ------------------------------------


class EnergyTally:
    """Joules summed over spans of a training loop: ``with tally.span(): <an epoch's pass>``, then
    ``tally.joules`` at the epoch where the target accuracy is first reached. Each span starts
    and ends synchronized; a span shorter than ``MIN_BLOCK_S`` is counted in ``short_spans``
    (its joules are off by up to one counter update). Without a counter ``joules`` is None and
    ``unsupported`` says why."""

    def __init__(self, meter: Meter | None, device: torch.device, unsupported: str | None = None):
        self.meter, self.device, self.unsupported = meter, device, unsupported
        self.source = meter.source if meter else None
        self._joules, self.seconds, self.spans, self.short_spans = 0.0, 0.0, 0, 0

    @classmethod
    def for_device(cls, device: torch.device | str, *, powercap: Path = POWERCAP) -> EnergyTally:
        from .train import Unsupported

        device = torch.device(device)
        try:
            return cls(open_meter(str(device), powercap=powercap), device)
        except Unsupported as exc:
            return cls(None, device, str(exc))

    @property
    def joules(self) -> float | None:
        return self._joules if self.meter else None

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        if self.meter is None:
            yield
            return
        synchronize(self.device)
        e0, t0 = self.meter.read_j(), time.perf_counter()
        yield
        synchronize(self.device)
        seconds = time.perf_counter() - t0
        self._joules += self.meter.read_j() - e0
        self.seconds += seconds
        self.spans += 1
        self.short_spans += seconds < MIN_BLOCK_S

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
