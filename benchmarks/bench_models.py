"""Forward passes, training steps and FLOP counting of the chapter's models, for pytest-benchmark.

The timed callables are the latency harness's own (``cnnbench.measure.workload``'s step): the
same model builders, the same step. pytest-benchmark times with the wall clock, so on CUDA every
timed call ends with a synchronize — otherwise it would time kernel launches, not kernels.
Warm-up rounds run first (cuDNN autotuning, oneDNN primitive creation). ``extra_info`` carries the
conditions, so ``--benchmark-json`` files describe themselves and ``--benchmark-compare`` works.

Default batches are small on CPU so that ``pytest --benchmark-only`` takes a few minutes on 2
cores; ``--full-sweep`` times the whole list.
"""

from __future__ import annotations

import pytest
import torch

from cnnbench import models
from cnnbench.measure import flops, workload
from cnnbench.measure._device import synchronize
from cnnbench.results import Spec
from cnnbench.runner import process_flags

CHAPTER = models.default_models()
FULL_BATCHES = (1, 8, 32, 128, 256)


def _batches(config, device: torch.device, train: bool) -> tuple[int, ...]:
    if config.getoption("--full-sweep"):
        return FULL_BATCHES
    if device.type == "cuda":
        return (1, 32, 128)
    return (8,) if train else (1, 8)


def pytest_generate_tests(metafunc):
    if "batch" not in metafunc.fixturenames:
        return
    device = torch.device(metafunc.config.getoption("--device"))
    train = metafunc.function.__name__.startswith("test_train")
    metafunc.parametrize("batch", _batches(metafunc.config, device, train), ids=lambda b: f"b{b}")


_COUNTS: dict[str, tuple[int, float]] = {}


def _counts(name: str) -> tuple[int, float]:
    """(parameters, GMACs at the default input) for extra_info, counted once per model."""
    if name not in _COUNTS:
        model = models.create(name)
        size = models.get_spec(name).input_size
        _COUNTS[name] = (
            sum(p.numel() for p in model.parameters()),
            flops.count_macs(model, Spec(name, size)) / 1e9,
        )
    return _COUNTS[name]


def _timed(benchmark, name: str, batch: int, device: torch.device, mode: str):
    size = models.get_spec(name).input_size
    spec = Spec(name, size, batch, device=str(device), mode=mode,
                threads=None if device.type == "cuda" else torch.get_num_threads())  # fmt: skip
    step = workload.build(spec).step

    def synchronized_step():
        step()
        synchronize(device)  # the wall clock must see the kernels finish

    params, gmacs = _counts(name)
    benchmark.extra_info.update(
        model=name, input_size=size, batch=batch, device=str(device), dtype="fp32", mode=mode,
        threads=spec.threads, params=params, gmacs=gmacs, **process_flags(),
    )  # fmt: skip
    benchmark.pedantic(
        synchronized_step, warmup_rounds=2, rounds=5 if device.type == "cpu" else 50, iterations=1
    )


@pytest.mark.parametrize("name", CHAPTER)
def test_forward(benchmark, device, name, batch):
    _timed(benchmark, name, batch, device, "inference")


@pytest.mark.parametrize("name", CHAPTER)
def test_train_step(benchmark, device, name, batch):
    _timed(benchmark, name, batch, device, "train")


@pytest.mark.parametrize("name", CHAPTER)
def test_flop_counting(benchmark, name):
    """fvcore's trace + count and the FlopCounterMode cross-check: the cost of `cnnbench list`."""
    model = models.create(name)
    spec = Spec(name, models.get_spec(name).input_size)
    params, gmacs = _counts(name)
    benchmark.extra_info.update(model=name, input_size=spec.image_size, batch=1, device="cpu",
                                dtype="fp32", threads=torch.get_num_threads(), params=params, gmacs=gmacs)  # fmt: skip
    result = benchmark.pedantic(flops.measure, args=(model, spec), rounds=3, iterations=1)
    assert result.crosscheck_ratio == 1.0
