"""Issue 23's CUDA findings that a CPU can show: cuBLAS/cuDNN warmed before the memory baseline,
cuDNN's scratch reported apart from the peak, TF32 set through torch's current API and recorded
as torch reports it. The numbers themselves need a GPU (benchmarks/gpu_acceptance.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnbench import env
from cnnbench.measure import _device, memory, workload
from cnnbench.results import Spec
from tests.fake_cuda import FakeAllocator, patch_cuda_memory

MiB = 2**20


def _fake_cuda(monkeypatch, mem: FakeAllocator, events: list) -> None:
    patch_cuda_memory(monkeypatch, mem, on_read=lambda: events.append("read allocated"))


# --- HIGH: the libraries' workspaces are in the baseline, not in the model's peak -----------------


def test_libraries_are_warmed_before_the_cuda_baseline_is_read(monkeypatch):
    """cuBLAS's first calls (forward, and backward in autograd's thread) leave two 32 MiB
    workspaces allocated for good. Warmed before the baseline, they are in it (7 + 64 MiB) and
    the model's peak is its own 1,000 + 100 bytes; read before, they would count as the model's."""
    mem, events = FakeAllocator(leftover=7), []
    _fake_cuda(monkeypatch, mem, events)

    def warm(device, dtype, convs):
        events.append("warm")
        mem.alloc(64 * MiB)  # kept: empty_cache never frees a library's workspace
        return ("cublas forward", "cublas backward")

    class Step:
        def __call__(self):
            mem.alloc(100)
            mem.free(100)

    fake = type("W", (), {"step": Step(), "device": torch.device("cuda")})()

    def build(spec, **kw):
        events.append("build")
        mem.alloc(1_000)
        return fake

    monkeypatch.setattr(memory, "_warm_libraries", warm)
    monkeypatch.setattr(workload, "build", build)
    monkeypatch.setattr(memory, "analytic_breakdown", lambda w: memory.Breakdown(1, 0, 0, 0, 0))
    monkeypatch.setattr(memory, "_conv_scratch", lambda w: 0)
    result = memory._measure_cuda(Spec("nin", 224, device="cuda"), ("sgd", 0.01, 0.0))
    assert result.baseline_bytes == 7 + 64 * MiB
    assert result.measured_bytes == 1_000 + 100
    assert result.cuda_warmup == {"ran": ["cublas forward", "cublas backward"],
                                  "bytes_kept": 64 * MiB}  # fmt: skip
    # the baseline is the last reading before the model is built, and it comes after the warm-up
    last_read = max(i for i, e in enumerate(events[: events.index("build")]) if e == "read allocated")
    assert events.index("warm") < last_read < events.index("build")


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("convs", [False, True])
def test_the_warm_up_calls_matmul_and_convolution_forward_and_backward(convs):
    """The same code runs on a CPU: a bias matmul (addmm: cuBLASLt's path on CUDA) and a plain
    one forward; backward, two matmuls for each of the two (gradients of both operands), and
    a convolution and its backward where the model has convolutions."""
    with _Ops() as seen:
        ran = memory._warm_libraries(torch.device("cpu"), torch.float32, convs=convs)
    assert seen.ops.count("addmm.default") == 1
    assert seen.ops.count("mm.default") == 1 + 2 * 2
    assert seen.ops.count("convolution.default") == int(convs)
    assert seen.ops.count("convolution_backward.default") == int(convs)
    cudnn = ("cudnn conv forward", "cudnn conv backward") if convs else ()
    assert ran == ("cublas forward", "cublas backward", *cudnn)


# --- MEDIUM: cuDNN's scratch, apart from the peak ----------------------------------------------------


class _Scratch(torch.autograd.Function):
    """Identity forward; its backward holds 7,000 scratch bytes for the length of the call."""

    mem: FakeAllocator

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _Scratch.mem.alloc(7_000)
        _Scratch.mem.free(7_000)
        return grad


class _ConvWithWorkspace(nn.Conv2d):
    """A convolution whose call allocates its output (100) and a 5,000-byte workspace it frees."""

    mem: FakeAllocator

    def forward(self, x):
        self.mem.alloc(100)
        self.mem.alloc(5_000)
        self.mem.free(5_000)
        return _Scratch.apply(super().forward(x))


@pytest.mark.parametrize("mode, scratch", [("inference", 5_000), ("train", 7_000)])
def test_conv_scratch_is_the_most_one_convolution_call_held(monkeypatch, mode, scratch):
    mem, events = FakeAllocator(leftover=123), []
    _fake_cuda(monkeypatch, mem, events)
    _ConvWithWorkspace.mem = _Scratch.mem = mem
    model = nn.Sequential(_ConvWithWorkspace(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    mem.alloc(50_000)  # something large before the conv: a peak that is not the conv's
    x, y = torch.rand(2, 1, 6, 6), torch.tensor([0, 1])
    spec = Spec("fake", 6, 2, mode=mode)
    w = workload.Workload(spec, model, model, x, y, torch.optim.SGD(model.parameters(), lr=0.1))
    assert memory._conv_scratch(w) == scratch  # the backward's 7,000 only where there is one
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --- LOW: TF32 through fp32_precision, recorded as torch reports it ---------------------------------

_NEW = ("cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn")


def _owner(path):
    owner = torch.backends
    for part in path.split("."):
        owner = getattr(owner, part)
    return owner


@pytest.fixture
def tf32_restored():
    """TF32 restored as found, readable through either API for the tests after these. torch
    keeps the legacy flags apart from the new strings and raises on a legacy read where the two
    disagree, so both are restored: the legacy flags first (they overwrite the strings), then
    the strings."""
    state = env.tf32_state()
    saved = [(p, _owner(p).fp32_precision) for p in _NEW]
    yield
    torch.backends.cuda.matmul.allow_tf32 = state["matmul_allow_tf32"]
    torch.backends.cudnn.allow_tf32 = state["cudnn_allow_tf32"]
    for path, value in saved:
        _owner(path).fp32_precision = value


@pytest.mark.parametrize("enabled, value", [(True, "tf32"), (False, "ieee")])
def test_set_tf32_uses_fp32_precision_and_returns_torchs_state(tf32_restored, enabled, value):
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.fp32_precision = "none"
    torch.backends.cudnn.conv.fp32_precision = "tf32" if value == "ieee" else "ieee"  # opposite
    state = _device.set_tf32(enabled)
    assert [_owner(p).fp32_precision for p in _NEW] == [value] * 4
    assert state == {"matmul_allow_tf32": enabled, "cudnn_allow_tf32": enabled,
                     "matmul_fp32_precision": value, "cudnn_conv_fp32_precision": value,
                     "tf32_api": "fp32_precision"}  # fmt: skip


def test_tf32_state_reads_each_backend_and_resolves_none(tf32_restored):
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    state = env.tf32_state()
    assert (state["matmul_allow_tf32"], state["cudnn_allow_tf32"]) == (True, False)
    # "none" on a convolution defers to cuDNN's own setting
    torch.backends.cudnn.conv.fp32_precision = "none"
    torch.backends.cudnn.fp32_precision = "tf32"
    assert env.tf32_state()["cudnn_allow_tf32"] is True
    # "none" all the way up: the legacy flag decides (readable: nothing set through the new API)
    for path in _NEW:
        _owner(path).fp32_precision = "none"
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = True
    state = env.tf32_state()
    assert (state["matmul_allow_tf32"], state["cudnn_allow_tf32"]) == (True, False)


def test_the_record_is_what_torch_reports_not_what_was_asked(tf32_restored, monkeypatch):
    """A backend that keeps its own setting (an override, a torch that refuses): asked for TF32,
    the record says fp32."""

    class Stubborn:
        allow_tf32 = False

        @property
        def fp32_precision(self):
            return "ieee"

        @fp32_precision.setter
        def fp32_precision(self, value):
            pass

    monkeypatch.setattr(torch.backends.cuda, "matmul", Stubborn())
    state = _device.set_tf32(True)
    assert state["matmul_allow_tf32"] is False and state["cudnn_allow_tf32"] is True


def test_older_torch_falls_back_to_allow_tf32(tf32_restored, monkeypatch):
    monkeypatch.delattr(type(torch.backends.cudnn), "conv")  # torch < 2.9 has no cudnn.conv
    assert not env.has_fp32_precision_api()
    for enabled in (True, False):
        state = _device.set_tf32(enabled)
        assert torch.backends.cuda.matmul.allow_tf32 is enabled
        assert torch.backends.cudnn.allow_tf32 is enabled
        assert state == {"matmul_allow_tf32": enabled, "cudnn_allow_tf32": enabled,
                         "matmul_fp32_precision": None, "cudnn_conv_fp32_precision": None,
                         "tf32_api": "allow_tf32"}  # fmt: skip


def test_tf32_mode_restores_what_it_found(tf32_restored):
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.fp32_precision = "tf32"
    before = [_owner(p).fp32_precision for p in _NEW]
    with _device.tf32_mode(False) as state:
        assert state["matmul_allow_tf32"] is False and state["cudnn_allow_tf32"] is False
    assert [_owner(p).fp32_precision for p in _NEW] == before



def test_tf32_mode_leaves_legacy_flags_readable(tf32_restored):
    """A process that set the legacy flags (as benchmarks/conftest.py does) reads them after the
    block as before: the same values, and no RuntimeError from torch's mixed-API check."""
    for path in _NEW:
        _owner(path).fp32_precision = "none"  # nothing set through the new API yet
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
    with _device.tf32_mode(True):
        pass
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, False)
