"""Models that hang or fail the way a CUDA library does when memory runs out, registered through
$CNNBENCH_PLUGINS by tests/test_hangs.py."""

import os
import sys
import time

from torch import nn

from cnnbench.models import register_model

# the messages a CUDA allocation failure carries when it surfaces from cuBLAS or cuDNN rather
# than from torch's allocator (as torch 2.x prints them)
ALLOC_FAILURES = {
    "cublas_alloc_fails": "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cudnn_alloc_fails": "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "cudnn_find_fails": "FIND was unable to find an engine to execute this computation",
}  # fmt: skip


class _Sleeps(nn.Module):
    """A forward pass that never returns (a hung CUDA call). Writes its pid to
    $CNNBENCH_TEST_PID_FILE first, so that a test can check the process was ended."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        path = os.environ.get("CNNBENCH_TEST_PID_FILE")
        if path:
            with open(path, "a") as f:
                f.write(f"{os.getpid()}\n")
        while True:
            time.sleep(3600)


class _AllocFails(nn.Module):
    """Runs at batch 1; from batch 2 on raises ``message`` (the device is out of memory there)."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message
        self.fc = nn.Linear(8 * 8, 10)

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError(self.message)
        return self.fc(x.flatten(1))


@register_model(family="test", section=None, input_size=8, description="hangs in forward")
def sleeps_in_forward() -> nn.Module:
    return _Sleeps()


def _register(name: str, message: str) -> None:
    def build() -> nn.Module:
        return _AllocFails(message)

    register_model(name=name, family="test", section=None, input_size=8,
                   description=message[:40])(build)  # fmt: skip


for _name, _message in ALLOC_FAILURES.items():
    _register(_name, _message)


def loaded_modules(names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a worker process has imported (run in a worker by the tests)."""
    return [n for n in names if n in sys.modules]
