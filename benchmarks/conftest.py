import pytest
import torch


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
