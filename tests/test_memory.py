import pytest
import torch
from torch import nn

from cnnbench.measure import memory
from cnnbench.measure.memory import analytic_breakdown
from cnnbench.measure.workload import Workload
from cnnbench.results import Spec


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))


def test_analytic_breakdown_of_a_training_step_by_formula():
    n, model = 8, tiny()
    x, y = torch.rand(n, 30), torch.randint(0, 5, (n,))
    spec = Spec("tiny", 1, n, mode="train")
    b = analytic_breakdown(Workload(spec, model, model, x, y, torch.optim.SGD(model.parameters(), lr=0.1)))
    params = 30 * 20 + 20 + 20 * 5 + 5
    assert b.param_bytes == b.grad_bytes == 4 * params
    assert b.optimizer_state_bytes == 0  # plain SGD keeps no state
    assert b.input_bytes == 4 * n * 30
    # saved for backward: the ReLU output (which the second Linear saves too: one storage),
    # cross-entropy's log-softmax output, the int64 labels and nll_loss's scalar total weight
    assert b.activation_bytes == 4 * n * 20 + 4 * n * 5 + 8 * n + 4
    momentum = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert (
        analytic_breakdown(Workload(spec, model, model, x, y, momentum)).optimizer_state_bytes
        == 4 * params
    )


def test_analytic_inference_is_the_largest_layer_working_set():
    n, model = 8, tiny()
    x, y = torch.rand(n, 30), torch.randint(0, 5, (n,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    b = analytic_breakdown(Workload(Spec("tiny", 1, n), model, model, x, y, opt))
    assert b.grad_bytes == 0
    assert b.activation_bytes == 4 * n * (30 + 20)  # first Linear: its input plus its output


def test_cpu_peak_rss_in_a_worker_process():
    train = memory.measure(Spec("googlenet", 96, batch_size=8, mode="train", threads=1))
    infer = memory.measure(Spec("googlenet", 96, batch_size=8, mode="inference", threads=1))
    assert train.source == infer.source == "rss_worker"
    assert train.param_bytes == 4 * 5_977_530
    # the worker holds at least the parameters, gradients and saved activations at its peak
    assert train.measured_bytes > train.param_bytes + train.grad_bytes + train.activation_bytes
    assert train.measured_bytes > infer.measured_bytes
    assert train.measured_over_analytic == pytest.approx(
        train.measured_bytes / train.analytic_bytes
    )
    assert train.reserved_bytes is None
    for r in (train, infer):  # the process's own memory before the model is not the model's
        assert r.baseline_bytes > 0 and r.measured_bytes == r.peak_bytes - r.baseline_bytes


def test_cpu_measured_bytes_are_the_peak_above_the_baseline(monkeypatch):
    """The RSS worker's arithmetic, with readings that are known: 1,234 bytes resident before the
    model is built, a peak 5,000,000 above that; what the step measured is exactly the
    difference."""
    baseline, above = 1_234, 5_000_000
    monkeypatch.setattr(memory, "_reset_peak_rss", lambda: True)
    monkeypatch.setattr(memory, "_anon_rss", lambda: baseline)
    monkeypatch.setattr(memory, "_peak_anon_rss", lambda: baseline + above)
    opt = ("sgd", 0.01, 0.0)
    r = memory._rss_worker(Spec("googlenet28", 28, batch_size=1, mode="train"), opt, None, None)
    assert (r.baseline_bytes, r.peak_bytes, r.measured_bytes) == (baseline, baseline + above, above)
    assert r.source == "rss_worker"
    assert r.measured_over_analytic == above / r.analytic_bytes


def test_worker_out_of_memory_under_a_cap():
    with pytest.raises(MemoryError):
        memory.measure(
            Spec("googlenet", 96, batch_size=1024, mode="train", threads=1), cap_bytes=2**30
        )


@pytest.mark.cuda
def test_cuda_peak_memory_from_the_allocator():
    r = memory.measure(Spec("googlenet", 96, batch_size=32, mode="train", device="cuda"))
    assert r.source == "cuda_allocator"
    assert r.measured_bytes >= r.param_bytes + r.grad_bytes
    assert r.reserved_bytes >= r.measured_bytes
