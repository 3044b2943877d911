"""What the numbers depend on: versions, device, CPU, threads, backend flags, git commit."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["collect_env", "cpu_facts", "cpu_model", "device_name"]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the ISA flags that decide a CPU's arithmetic speed (recorded; the roofline's roof uses them)
SPEED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")  # fmt: skip


def cpu_facts() -> dict[str, Any]:
    """What /proc/cpuinfo, /sys and psutil say about this CPU: vendor, family, model, stepping,
    the speed-relevant ISA flags, physical and logical cores, and the clock with its source.
    A fact that cannot be read is left out (None), never guessed."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key and key not in info:  # the first processor's lines
                info[key] = value.strip()
    except OSError:
        pass

    def number(key: str) -> int | None:
        value = info.get(key)
        return int(value) if value and value.isdigit() else None

    flags = set(info.get("flags", "").split())
    clock_hz, clock_source = None, None
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip()
        clock_hz, clock_source = int(khz) * 1000, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        mhz = info.get("cpu MHz")
        if mhz:
            clock_hz, clock_source = float(mhz) * 1e6, "/proc/cpuinfo cpu MHz (nominal on a VM)"
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        physical = None
    return {
        "vendor": info.get("vendor_id"),
        "family": number("cpu family"),
        "model": number("model"),
        "stepping": number("stepping"),
        "model_name": info.get("model name"),
        "flags": [f for f in SPEED_FLAGS if f in flags],
        "physical_cores": physical,
        "logical_cpus": os.cpu_count(),
        "clock_hz": clock_hz,
        "clock_source": clock_source,
        "cache_size": info.get("cache size"),
    }


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def collect_env(device: str = "cpu") -> dict[str, Any]:
    env: dict[str, Any] = {
        "collected_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "fvcore": _version("fvcore"),
            "cnnbench": _version("cnnbench"),
            "numpy": _version("numpy"),
            "pandas": _version("pandas"),
        },
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "cpu": {
            "model": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "mkldnn_enabled": torch.backends.mkldnn.enabled,
            "facts": cpu_facts(),
        },
        "device": device,
        "device_name": device_name(device),
        "cuda": None,
    }
    try:
        import psutil

        env["cpu"]["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    if device.startswith("cuda"):
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        env["cuda"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_bytes": props.total_memory,
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            # clocks, power limit, MIG and ECC state, driver: what nvidia-smi says of this GPU.
            # (The math flags the workers ran with are under "worker_flags": this process is
            # not set up like them.)
            "smi": nvidia_smi(str(getattr(props, "uuid", "")) or None, dev.index or 0),
        }
    env["env_vars"] = {k: os.environ.get(k) for k in SPEED_ENV_VARS}
    return env


# environment variables that change what a measurement means (unset: None)
SPEED_ENV_VARS = ("NVIDIA_TF32_OVERRIDE", "PYTORCH_CUDA_ALLOC_CONF", "CUBLAS_WORKSPACE_CONFIG",
                  "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "OMP_NUM_THREADS",
                  "MKL_NUM_THREADS", "TORCHINDUCTOR_MAX_AUTOTUNE")  # fmt: skip

SMI_FIELDS = ("uuid", "name", "driver_version", "pstate", "clocks.sm", "clocks.max.sm",
              "clocks.mem", "clocks.max.mem", "power.limit", "power.max_limit",
              "mig.mode.current", "ecc.mode.current", "persistence_mode", "temperature.gpu")  # fmt: skip


def parse_smi(text: str, uuid: str | None, index: int) -> dict[str, str] | None:
    """The row of ``nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader`` output that is
    this GPU: the one whose UUID ends with torch's ``uuid``, else the ``index``-th row."""
    rows = [[c.strip() for c in line.split(",")] for line in text.strip().splitlines() if line.strip()]
    rows = [dict(zip(SMI_FIELDS, r, strict=False)) for r in rows if len(r) == len(SMI_FIELDS)]
    if not rows:
        return None
    if uuid:
        for row in rows:
            if row["uuid"].removeprefix("GPU-") == uuid.removeprefix("GPU-"):
                return row
    return rows[index] if index < len(rows) else None


def nvidia_smi(uuid: str | None, index: int) -> dict[str, str] | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_smi(done.stdout, uuid, index) if done.returncode == 0 else None
