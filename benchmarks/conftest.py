import pytest
import torch

from cnnbench.measure import _device


def pytest_addoption(parser):
    default = "cuda" if torch.cuda.is_available() else "cpu"
    group = parser.getgroup("cnnbench benchmarks")
    group.addoption(
        "--device", default=default, help=f"device to benchmark on (default: {default})"
    )
    group.addoption(
        "--full-sweep",
        action="store_true",
        help="time every batch of the full list (1 to 256) instead of the quick default",
    )


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    return dev


@pytest.fixture(autouse=True)
def math_flags():
    """Every benchmark runs with the flags cnnbench's workers set, never with what an earlier
    test left behind: cuDNN autotuning on (its trials fall in the warm-up rounds), TF32 off for
    both cuBLAS and cuDNN (true fp32), through torch's ``fp32_precision`` API as the workers set
    it (``_device.tf32_mode``). Restored afterwards; extra_info records them
    (``cnnbench.runner.process_flags``)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with _device.tf32_mode(False):
            yield
    finally:
        torch.backends.cudnn.benchmark = saved
