"""Peak memory of inference and of one training step, beside an analytic breakdown.

Measured:

- CUDA: the caching allocator's own statistics. Before the baseline is read, cuBLAS/cuBLASLt and
  cuDNN are made to create what they create on first use (``cuda_warmup``); then one warm-up
  step (cuDNN's autotuning trials), a synchronize, the peak statistics reset, and a few
  iterations in a loop of their own (never inside the latency loop). ``measured_bytes`` is
  ``max_memory_allocated`` minus what was allocated before the model was built
  (``baseline_bytes``), ``reserved_bytes`` is ``max_memory_reserved``. ``conv_scratch_bytes``
  is the most one convolution call held beyond its inputs and outputs (cuDNN's workspace): part
  of ``measured_bytes``, in no analytic term.
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

import dataclasses
import resource
from dataclasses import dataclass

import torch
from torch import nn

from ..results import Spec
from ..results.types import MemoryResult
from . import workload
from ._device import release, synchronize
from .worker import WorkerError, call_in_worker

__all__ = [
    "MemoryResult",
    "Breakdown",
    "WorkerOOM",
    "analytic_breakdown",
    "measure",
    "measure_unit",
    "set_memory_cap",
]

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


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _run(w: workload.Workload) -> None:
    for _ in range(ITERATIONS):
        w.step()
    synchronize(w.device)


def analytic_breakdown(w: workload.Workload) -> Breakdown:
    """What the step of ``w`` must hold, tensor by tensor (see the module docstring)."""
    model, spec, x = w.model, w.spec, w.x
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
        # the optimizer step materializes its state, if it keeps any
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            w.train_step()
        activation_bytes = sum(saved.values())
        state_bytes = sum(
            _nbytes(v) for s in w.optimizer.state.values() for v in s.values() if torch.is_tensor(v)
        )
        w.optimizer.zero_grad(set_to_none=True)
    else:
        largest = 0

        def hook(_m, inputs, output):
            nonlocal largest
            ins = sum(_nbytes(i) for i in inputs if torch.is_tensor(i))
            largest = max(largest, ins + (_nbytes(output) if torch.is_tensor(output) else 0))

        handles = [m.register_forward_hook(hook) for _, m in workload.leaf_modules(model)]
        try:
            model.eval()
            w.forward()
        finally:
            for h in handles:
                h.remove()
        activation_bytes, state_bytes = largest, 0
    return Breakdown(param_bytes, grad_bytes, state_bytes, _nbytes(x), activation_bytes)


def _result(source, measured, peak, baseline, reserved, b: Breakdown) -> MemoryResult:
    return MemoryResult(
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


WARM_N = 64  # the warm-up's matmul side and convolution channels: small, but real library calls


def _warm_libraries(device: torch.device, dtype: torch.dtype, convs: bool) -> tuple[str, ...]:
    """Call cuBLAS (a bias matmul, cuBLASLt's path, and a plain one) and, where ``convs``,
    cuDNN once forward and once backward, on the current stream: the one the unit's steps use.

    Their first call on a thread and stream allocates workspaces through the caching allocator
    (cuBLAS: one per handle and stream, 32 MiB on Hopper) that ``empty_cache`` never frees.
    Backward runs in autograd's device thread, which has handles of its own: forward alone would
    leave half of them to the measured step. Returns what ran, in order."""
    ran = []
    x, w = (torch.randn(WARM_N, WARM_N, device=device, dtype=dtype, requires_grad=True)
            for _ in range(2))  # fmt: skip
    bias = torch.zeros(WARM_N, device=device, dtype=dtype, requires_grad=True)
    y = nn.functional.linear(x, w, bias) @ w
    ran.append("cublas forward")
    y.sum().backward()
    ran.append("cublas backward")
    if convs:
        image = torch.randn(1, 8, 8, 8, device=device, dtype=dtype, requires_grad=True)
        kernel = torch.randn(8, 8, 3, 3, device=device, dtype=dtype, requires_grad=True)
        out = nn.functional.conv2d(image, kernel, padding=1)
        ran.append("cudnn conv forward")
        out.sum().backward()
        ran.append("cudnn conv backward")
    synchronize(device)
    return tuple(ran)


def _warm_before_baseline(device: torch.device, spec: Spec) -> dict:
    """:func:`_warm_libraries`, and the bytes it left allocated (the libraries' workspaces: its
    own tensors are released), for the record."""
    release(device)
    before = torch.cuda.memory_allocated(device)
    cudnn = torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled
    ran = _warm_libraries(device, workload.TORCH_DTYPES[spec.dtype], convs=cudnn)
    release(device)
    return {"ran": list(ran), "bytes_kept": torch.cuda.memory_allocated(device) - before}


def _conv_scratch(w: workload.Workload) -> int | None:
    """One more step, each convolution call (forward, and its backward node) watched: the most
    it held above what it started and ended with. Run after the unit's peak was read, since it
    resets the peak statistics per call. None for a compiled model (hooks would recompile it).

    Why a separate number rather than a cap: torch's cuDNN path picks the fastest algorithm whose
    workspace fits the free memory (``Conv_v8.cpp``: ``get_available_workspace``), gigabytes on
    a 139 GB card. ``CUDNN_CONV_WSCAP_DBG`` is documented for cuDNN's legacy find/get calls, not
    for the backend API torch uses, so a cap through it could not be shown to hold; turning
    ``benchmark`` off would measure another algorithm than the one the latency unit timed. So
    ``measured_bytes`` stays the step's true peak and this says how much of it was scratch."""
    if w.spec.compiled:
        return None
    device, starts, largest = w.device, [], [0]

    def start(*_):
        torch.cuda.reset_peak_memory_stats(device)
        starts.append(torch.cuda.memory_allocated(device))

    def end(*_):
        now = torch.cuda.memory_allocated(device)
        largest[0] = max(largest[0], torch.cuda.max_memory_allocated(device) - max(now, starts.pop()))

    def forward_end(_module, _inputs, output):
        end()
        if torch.is_tensor(output) and output.grad_fn is not None:  # training: its backward too
            output.grad_fn.register_prehook(lambda _grads: start())
            output.grad_fn.register_hook(lambda _inputs, _outputs: end())

    convs = [m for _, m in workload.leaf_modules(w.model) if isinstance(m, nn.modules.conv._ConvNd)]
    handles = [h for m in convs
               for h in (m.register_forward_pre_hook(start), m.register_forward_hook(forward_end))]  # fmt: skip
    try:
        w.step()
        synchronize(device)
    finally:
        for h in handles:
            h.remove()
    return largest[0]


def _measure_cuda(spec: Spec, opt: tuple[str, float, float]) -> MemoryResult:
    """The libraries warmed first, so that their workspaces are in the baseline and not the
    model's peak (a cold unit would otherwise read 64-128 MiB higher than a warm one). One
    warm-up step, synchronized, and only then the peak statistics reset: cuDNN's autotuning
    tries algorithms with workspaces of their own on a cold cache, and those trials are not what
    the step needs. What was allocated before the model (leftovers, workspaces) is the baseline,
    recorded and subtracted."""
    device = torch.device(spec.device)
    warmup = _warm_before_baseline(device, spec)
    baseline = torch.cuda.memory_allocated(device)
    w = workload.build(spec, optimizer=opt[0], lr=opt[1], momentum=opt[2])
    w.step()  # warm: autotuning, lazily created optimizer state
    synchronize(device)
    torch.cuda.empty_cache()  # the autotuning trials' cached segments out of the reserved peak
    torch.cuda.reset_peak_memory_stats(device)
    _run(w)
    peak = torch.cuda.max_memory_allocated(device)
    reserved = torch.cuda.max_memory_reserved(device)
    result = _result("cuda_allocator", peak - baseline, peak, baseline, reserved,
                     analytic_breakdown(w))  # fmt: skip
    return dataclasses.replace(result, cuda_warmup=warmup, conv_scratch_bytes=_conv_scratch(w))


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

    # the soft limit only, and never above the hard one: a process may lower its soft limit
    # again (a second cap, a worker that inherited one) but may not raise a hard limit
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = psutil.Process().memory_info().vms + cap_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


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


def _rss_worker(spec: Spec, opt: tuple[str, float, float], cap_bytes: int | None,
                threads: int | None):  # fmt: skip
    """Runs in a fresh process: baseline RSS, build, run, peak RSS; returns the result."""
    if threads:
        torch.set_num_threads(threads)
    set_memory_cap(cap_bytes)
    reset = _reset_peak_rss()  # import transients must not count as this model's peak
    baseline = _anon_rss()
    w = workload.build(spec, optimizer=opt[0], lr=opt[1], momentum=opt[2])
    _run(w)
    peak = _peak_anon_rss() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    source = "rss_worker" if reset else "rss_worker_maxrss"
    return _result(source, peak - baseline, peak, baseline, None, analytic_breakdown(w))


class WorkerOOM(MemoryError):
    """The RSS worker ran out of memory (an allocation refused, or the worker was killed)."""


def _measure_cpu(spec: Spec, opt: tuple[str, float, float], cap_bytes: int | None) -> MemoryResult:
    try:
        return call_in_worker(_rss_worker, spec, opt, cap_bytes, spec.threads, name="cnnbench-rss")
    except WorkerError as exc:
        if exc.oom:
            raise WorkerOOM(f"memory worker: {exc}") from None
        raise RuntimeError(f"memory worker failed: {exc}\n{exc.remote_traceback}") from None


def measure(
    spec: Spec,
    *,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    cap_bytes: int | None = None,
) -> MemoryResult:
    """Peak memory of ``spec`` (its model is built afresh: on CPU inside a worker process); a
    training step uses ``optimizer`` (plain SGD at 0.01 unless told otherwise)."""
    opt = (optimizer, lr, momentum)
    if spec.device.startswith("cuda"):
        return _measure_cuda(spec, opt)
    return _measure_cpu(spec, opt, cap_bytes)


def measure_unit(spec: Spec, ctx) -> MemoryResult:
    """The harness entry: the run's memory cap and, for a training step, the accuracy run's
    optimizer (Adam keeps two tensors per parameter that plain SGD does not)."""
    from .train import optimizer_for

    cap = ctx.config.memory.cap_bytes
    if spec.mode != "train":
        return measure(spec, cap_bytes=cap)
    opt = optimizer_for(ctx.config, spec.model)
    result = measure(spec, lr=opt.lr, optimizer=opt.name, momentum=opt.momentum, cap_bytes=cap)
    return dataclasses.replace(result, optimizer=opt.label)
