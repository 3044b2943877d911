import pytest
import torch


def pytest_addoption(parser):
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.addoption(
        "--device", default=default, help=f"device to benchmark on (default: {default})"
    )


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    return dev
