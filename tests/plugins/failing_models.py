"""Models that fail on purpose, registered through $CNNBENCH_PLUGINS by the failure-path tests."""

import os
import signal

from torch import nn

from cnnbench.models import register_model


class _Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        raise RuntimeError("this model always raises")


class _Dies(_Raises):
    def forward(self, x):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does to a worker


@register_model(family="test", section=None, input_size=8, description="raises in forward")
def raises_in_forward() -> nn.Module:
    return _Raises()


@register_model(family="test", section=None, input_size=8, description="its process dies")
def dies_in_forward() -> nn.Module:
    return _Dies()
