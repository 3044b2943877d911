"""Peak memory of inference and of one training step, beside an analytic breakdown.

Measured:

- CUDA: the caching allocator's own statistics. Peak statistics are reset, then a few iterations
  run in a loop of their own (never inside the latency loop); ``measured_bytes`` is
  ``max_memory_allocated`` and ``reserved_bytes`` is ``max_memory_reserved``.
- CPU: peak resident set size of a fresh worker process that does nothing but this measurement,
  so that one model's allocations do not pollute another's. Once Python and torch are loaded the
  worker resets the kernel's high-water mark (``/proc/self/clear_refs``, value 5) so that import
  transients do not count, then builds the model and runs. Only anonymous memory counts (what
  allocations hold; the libtorch code that a first forward pages in is file-backed and is left
  out): ``measured_bytes`` is the peak anonymous RSS above the anonymous RSS before the model was
  built (``baseline_bytes``).

Analytic, for the same step:

- parameters, gradients (trainable parameters) and optimizer state (read from the optimizer after
  a step: plain SGD without momentum, the chapter's recipe, keeps none);
- ``input_bytes``: the input batch;
- ``activation_bytes``: training — every tensor autograd saves for backward (saved-tensor hooks),
  counted once per storage, parameters and the input excluded; inference — the largest working
  set of a single layer (its input plus its output), a lower bound on what must coexist.

``analytic_bytes`` is their sum and ``measured_over_analytic`` the ratio to the measured peak.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import traceback
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create, get_spec
from ..results import Spec
from ._device import autocast, is_oom, release, synchronize

__all__ = ["MemoryResult", "Breakdown", "analytic_breakdown", "measure", "set_memory_cap"]

ITERATIONS = 2  # the second iteration sees the allocator in its steady state


@dataclass(frozen=True)
class Breakdown:
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    input_bytes: int
    activation_bytes: int

    @property
    def total(self) -> int:
        return (
            self.param_bytes
            + self.grad_bytes
            + self.optimizer_state_bytes
            + self.input_bytes
            + self.activation_bytes
        )


@dataclass(frozen=True)
class MemoryResult:
    spec: Spec
    source: str  # "cuda_allocator", "rss_worker" (peak reset after imports) or "rss_worker_maxrss"
    measured_bytes: int  # CUDA: peak allocated; CPU: peak anonymous RSS above baseline_bytes
    peak_bytes: int  # CUDA: peak allocated; CPU: peak anonymous RSS of the worker, absolute
    baseline_bytes: int  # CUDA: allocated before the model; CPU: anonymous RSS before it
    reserved_bytes: int | None  # CUDA: peak reserved by the caching allocator
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    input_bytes: int
    activation_bytes: int
    analytic_bytes: int  # sum of the five above
    measured_over_analytic: float


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _inputs(spec: Spec, device: torch.device):
    fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
    channels = get_spec(spec.model).in_channels
    x = torch.rand(spec.batch_size, channels, spec.image_size, spec.image_size, device=device)
    labels = torch.randint(0, get_spec(spec.model).num_classes, (spec.batch_size,), device=device)
    return x.contiguous(memory_format=fmt), labels


def _prepare(spec: Spec) -> tuple[nn.Module, torch.device]:
    device = torch.device(spec.device)
    fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = create(spec.model, image_size=spec.image_size).to(device=device, memory_format=fmt)
    return model, device


def _run(model: nn.Module, spec: Spec, device: torch.device, x, labels, opt) -> None:
    for _ in range(ITERATIONS):
        if spec.mode == "inference":
            with torch.inference_mode(), autocast(device, spec.dtype):
                model(x)
        else:
            opt.zero_grad(set_to_none=True)
            with autocast(device, spec.dtype):
                loss = F.cross_entropy(model(x), labels)
            loss.backward()
            opt.step()
    synchronize(device)


def analytic_breakdown(model: nn.Module, spec: Spec, x: torch.Tensor, labels, opt) -> Breakdown:
    """What the step must hold, tensor by tensor (see the module docstring)."""
    device = x.device
    params = list(model.parameters())
    param_bytes = sum(_nbytes(p) for p in params)
    grad_bytes = sum(_nbytes(p) for p in params if p.requires_grad) if spec.mode == "train" else 0
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    input_storage = x.untyped_storage().data_ptr()
    if spec.mode == "train":
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in param_storages and ptr != input_storage:
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast(device, spec.dtype):
                loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()  # materializes optimizer state, if the optimizer keeps any
        activation_bytes = sum(saved.values())
        state_bytes = sum(
            _nbytes(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v)
        )
        opt.zero_grad(set_to_none=True)
    else:
        largest = 0

        def hook(_m, inputs, output):
            nonlocal largest
            ins = sum(_nbytes(i) for i in inputs if torch.is_tensor(i))
            largest = max(largest, ins + (_nbytes(output) if torch.is_tensor(output) else 0))

        leaves = [m for m in model.modules() if not any(True for _ in m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with torch.inference_mode(), autocast(device, spec.dtype):
                model.eval()(x)
        finally:
            for h in handles:
                h.remove()
        activation_bytes, state_bytes = largest, 0
    return Breakdown(param_bytes, grad_bytes, state_bytes, _nbytes(x), activation_bytes)


def _result(spec, source, measured, peak, baseline, reserved, b: Breakdown) -> MemoryResult:
    return MemoryResult(
        spec=spec,
        source=source,
        measured_bytes=int(measured),
        peak_bytes=int(peak),
        baseline_bytes=int(baseline),
        reserved_bytes=None if reserved is None else int(reserved),
        param_bytes=b.param_bytes,
        grad_bytes=b.grad_bytes,
        optimizer_state_bytes=b.optimizer_state_bytes,
        input_bytes=b.input_bytes,
        activation_bytes=b.activation_bytes,
        analytic_bytes=b.total,
        measured_over_analytic=measured / b.total if b.total else float("nan"),
    )


def _measure_cuda(spec: Spec, lr: float) -> MemoryResult:
    device = torch.device(spec.device)
    release(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    model, device = _prepare(spec)
    x, labels = _inputs(spec, device)
    model.train(spec.mode == "train")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    _run(model, spec, device, x, labels, opt)
    peak = torch.cuda.max_memory_allocated(device)
    reserved = torch.cuda.max_memory_reserved(device)
    breakdown = analytic_breakdown(model, spec, x, labels, opt)
    return _result(spec, "cuda_allocator", peak, peak, baseline, reserved, breakdown)


def set_memory_cap(cap_bytes: int | None, device: str = "cpu") -> None:
    """Cap this process's memory: address space above the current size (CPU), or the CUDA
    caching allocator's share of the device. A step that exceeds it fails as out of memory."""
    if cap_bytes is None:
        return
    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, cap_bytes / total), torch.device(device)
        )
        return
    import psutil

    limit = psutil.Process().memory_info().vms + cap_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status() -> dict[str, int]:
    """The memory lines of /proc/self/status, in bytes ({} where there is no procfs)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("Vm", "Rss")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024  # reported in kB
    except OSError:
        pass
    return out


def _anon_rss() -> int:
    """Anonymous resident memory now: what allocations hold, without mapped library code."""
    status = _proc_status()
    return status.get("RssAnon", psutil_rss())


def _peak_anon_rss() -> int:
    """Peak anonymous RSS since the last reset.

    The kernel keeps a peak of the *total* RSS only (VmHWM). File-backed pages, the code of
    libtorch that a first forward pass pages in, never shrink here (no memory pressure in a short
    worker), so the anonymous peak is VmHWM minus the file-backed and shared pages at the end.
    """
    status = _proc_status()
    if "VmHWM" not in status:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return status["VmHWM"] - status.get("RssFile", 0) - status.get("RssShmem", 0)


def psutil_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _rss_worker(spec: Spec, lr: float, cap_bytes: int | None, threads: int | None, conn) -> None:
    """Runs in a fresh process: baseline RSS, build, run, peak RSS; sends back the result."""
    try:
        if threads:
            torch.set_num_threads(threads)
        set_memory_cap(cap_bytes)
        reset = _reset_peak_rss()  # import transients must not count as this model's peak
        baseline = _anon_rss()
        model, device = _prepare(spec)
        x, labels = _inputs(spec, device)
        model.train(spec.mode == "train")
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        _run(model, spec, device, x, labels, opt)
        peak = (
            _peak_anon_rss() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        source = "rss_worker" if reset else "rss_worker_maxrss"
        breakdown = analytic_breakdown(model, spec, x, labels, opt)
        result = _result(spec, source, peak - baseline, peak, baseline, None, breakdown)
        conn.send(("ok", result))
    except BaseException as exc:  # report everything; the parent decides what it means
        kind = "oom" if is_oom(exc) else "error"
        conn.send(
            (kind, f"{type(exc).__name__}: {exc}".splitlines()[0][:500], traceback.format_exc())
        )
    finally:
        conn.close()


class WorkerOOM(MemoryError):
    """The RSS worker ran out of memory (an allocation refused, or the worker was killed)."""


def _measure_cpu(spec: Spec, lr: float, cap_bytes: int | None) -> MemoryResult:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_rss_worker, args=(spec, lr, cap_bytes, spec.threads, child))
    proc.start()
    child.close()
    try:
        message = parent.recv()
    except EOFError:
        proc.join()
        raise WorkerOOM(
            f"memory worker died with exit code {proc.exitcode} (killed: likely out of memory)"
        ) from None
    proc.join()
    if message[0] == "ok":
        return message[1]
    if message[0] == "oom":
        raise WorkerOOM(message[1])
    raise RuntimeError(f"memory worker failed: {message[1]}\n{message[2]}")


def measure(spec: Spec, *, lr: float = 0.01, cap_bytes: int | None = None) -> MemoryResult:
    """Peak memory of ``spec`` (its model is built afresh: on CPU inside a worker process)."""
    if spec.device.startswith("cuda"):
        return _measure_cuda(spec, lr)
    return _measure_cpu(spec, lr, cap_bytes)
