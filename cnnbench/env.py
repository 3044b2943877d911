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

__all__ = ["collect_env", "cpu_facts", "cpu_model", "device_name", "differences", "digest",
           "fingerprint", "fingerprint_id", "hardware_id", "hardware_sentence", "has_fp32_precision_api",
           "label", "machine", "tf32_state"]


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


# --- TF32: what torch will actually do with fp32 matmuls and convolutions ------------------------


def has_fp32_precision_api() -> bool:
    """True where torch has the per-backend ``fp32_precision`` settings (torch >= 2.9):
    ``torch.backends.cuda.matmul.fp32_precision`` and ``torch.backends.cudnn.conv.fp32_precision``.
    (Both exist without a GPU: they are process settings, not device state.)"""
    try:
        torch.backends.cuda.matmul.fp32_precision  # noqa: B018 - an unknown name raises
        torch.backends.cudnn.conv.fp32_precision  # noqa: B018
    except AttributeError:
        return False
    return True


def _resolved(precision: str | None, legacy) -> bool:
    """"tf32" or "ieee" decide; "none" means the setting was left to its parent, in the end to
    the legacy flag (``legacy()`` reads it). The legacy flag is read only then: torch raises on
    reading it once the new API has set a value (it calls that mixing the two APIs)."""
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(legacy())


def tf32_state() -> dict[str, Any]:
    """Whether fp32 matmuls (cuBLAS) and convolutions (cuDNN) may run in TF32, as torch reports
    it now, not as it was asked: the record of a run must hold what the kernels were allowed.
    Keys: ``matmul_allow_tf32`` and ``cudnn_allow_tf32`` (the names env.json has always used),
    the raw ``fp32_precision`` values (None on a torch without them) and ``tf32_api``."""
    if not has_fp32_precision_api():
        return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                "matmul_fp32_precision": None, "cudnn_conv_fp32_precision": None,
                "tf32_api": "allow_tf32"}  # fmt: skip
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul.fp32_precision
    conv = cudnn.conv.fp32_precision
    # a convolution left at "none" inherits cuDNN's own setting, and that one the legacy flag
    conv_parent = conv if conv != "none" else cudnn.fp32_precision
    return {
        "matmul_allow_tf32": _resolved(matmul, lambda: torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _resolved(conv_parent, lambda: cudnn.allow_tf32),
        "matmul_fp32_precision": matmul,
        "cudnn_conv_fp32_precision": conv,
        "tf32_api": "fp32_precision",
    }


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


# --- the fingerprint: what decides speed, and a short id of it -------------------------------------

# fields whose difference means the runs measured different hardware (the rest: software, math)
HARDWARE = ("cpu.", "gpu.", "memory_gib")
_ISA_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16",
              "avx512_fp16": "AVX-512 FP16", "amx_tile": "AMX"}  # fmt: skip


def fingerprint(env: dict) -> dict[str, Any]:
    """The facts of ``env`` (an env.json) that decide speed, flat and named: CPU vendor, family,
    model, stepping, ISA flags, cores, cache, memory; GPU name, SMs, memory, clocks, power limit,
    driver, CUDA and cuDNN; torch, torchvision, fvcore; the workers' math flags and threads.
    Missing facts (older env.json files) are None."""
    cpu = env.get("cpu") or {}
    facts = cpu.get("facts") or {}
    cuda = env.get("cuda") or {}
    smi = cuda.get("smi") or {}
    flags = env.get("worker_flags") or {}
    versions = env.get("versions") or {}
    isa = set(facts.get("flags") or ())
    out: dict[str, Any] = {
        "cpu.vendor": facts.get("vendor"), "cpu.family": facts.get("family"),
        "cpu.model": facts.get("model"), "cpu.stepping": facts.get("stepping"),
        "cpu.name": facts.get("model_name") or cpu.get("model"),
        "cpu.physical_cores": facts.get("physical_cores"),
        "cpu.logical_cpus": facts.get("logical_cpus") or cpu.get("logical_cpus"),
        "cpu.cache": facts.get("cache_size"),
        "memory_gib": round(cpu["memory_bytes"] / 2**30) if cpu.get("memory_bytes") else None,
    }  # fmt: skip
    for flag, name in _ISA_NAMES.items():
        out[f"cpu.{name}"] = (flag in isa) if facts.get("flags") is not None else None
    if cuda:
        out.update({
            "gpu.name": cuda.get("name"), "gpu.sm_count": cuda.get("sm_count"),
            "gpu.memory_gib": round(cuda["memory_bytes"] / 2**30) if cuda.get("memory_bytes") else None,
            "gpu.capability": cuda.get("capability"), "gpu.driver": smi.get("driver_version"),
            "gpu.cuda": cuda.get("cuda_runtime"), "gpu.cudnn": cuda.get("cudnn"),
            "gpu.max_sm_clock": smi.get("clocks.max.sm"), "gpu.power_limit": smi.get("power.limit"),
        })  # fmt: skip
    out.update({
        "torch": versions.get("torch"), "torchvision": versions.get("torchvision"),
        "fvcore": versions.get("fvcore"),
        "threads": flags.get("torch_threads", cpu.get("torch_threads")),
        "tf32": (flags.get("matmul_allow_tf32"), flags.get("cudnn_allow_tf32")) if flags else None,
        "cudnn_benchmark": flags.get("cudnn_benchmark"),
    })  # fmt: skip
    return out


def digest(obj: Any, digits: int = 12) -> str:
    """The first ``digits`` hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys):
    the short ids of fingerprints, hardware and runs."""
    import hashlib
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


def fingerprint_id(env: dict) -> str:
    """12 hex digits that change when anything in :func:`fingerprint` does."""
    return digest(fingerprint(env))


def differences(env_a: dict, env_b: dict) -> list[tuple[str, Any, Any]]:
    """(field, A, B) for every fingerprint field that differs, where both runs recorded it."""
    fa, fb = fingerprint(env_a), fingerprint(env_b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if fa.get(k) is not None and fb.get(k) is not None and fa.get(k) != fb.get(k)]  # fmt: skip


def is_hardware(field: str) -> bool:
    return field.startswith(HARDWARE)


def label(field: str) -> str:
    """A fingerprint field in words: "CPU family", "AVX-512", "GPU power limit"."""
    name = field.split(".", 1)[-1]
    if name in _ISA_NAMES.values():
        return name
    prefix = {"cpu": "CPU ", "gpu": "GPU "}.get(field.split(".")[0], "") if "." in field else ""
    return prefix + name.replace("_", " ").replace("memory gib", "memory GiB")


def _shown(field: str, value: Any) -> str:
    if isinstance(value, bool):
        return "present" if value else "absent"
    return str(value)


def hardware_sentence(diffs: list[tuple[str, Any, Any]]) -> str | None:
    """"these runs measured different hardware: CPU family 25 → 26, AVX-512 absent → present;
    speed changes below compare hardware, not code", or None when the hardware is the same."""
    hw = [(k, a, b) for k, a, b in diffs if is_hardware(k)]
    if not hw:
        return None
    names = ", ".join(f"{label(k)} {_shown(k, a)} → {_shown(k, b)}" for k, a, b in hw)
    return (f"these runs measured different hardware: {names}; speed changes below compare "
            "hardware, not code")  # fmt: skip


def machine(fp: dict[str, Any], *, software: bool = True) -> str:
    """A fingerprint in a few words, for a legend or a table: "NVIDIA H200 (132 SMs, 700 W);
    AMD EPYC family 25 model 17, 2 CPUs, AVX-512; torch 2.14.1" (without the torch version when
    not ``software``)."""
    parts = []
    if fp.get("gpu.name"):
        extra = ", ".join(str(x) for x in (
            f"{fp['gpu.sm_count']} SMs" if fp.get("gpu.sm_count") else None, fp.get("gpu.power_limit"))
            if x)  # fmt: skip
        parts.append(fp["gpu.name"] + (f" ({extra})" if extra else ""))
    cpu = fp.get("cpu.name") or "CPU"
    if fp.get("cpu.family") is not None:
        cpu += f" family {fp['cpu.family']} model {fp.get('cpu.model')}"
    if fp.get("cpu.logical_cpus"):
        cpu += f", {fp['cpu.logical_cpus']} CPUs"
    isa = next((name for name in ("AMX", "AVX-512", "AVX2") if fp.get(f"cpu.{name}")), None)
    parts.append(cpu + (f", {isa}" if isa else ""))
    if software and fp.get("torch"):
        parts.append(f"torch {fp['torch']}")
    return "; ".join(parts)


def hardware_id(env: dict) -> str:
    """12 hex digits of the hardware part of :func:`fingerprint` (CPU, GPU, memory): what a
    history keeps apart. Software (torch, drivers, math flags) is not in it: an upgrade is a
    change to follow on the same machine, not another machine."""
    return digest({k: v for k, v in fingerprint(env).items() if is_hardware(k)})
