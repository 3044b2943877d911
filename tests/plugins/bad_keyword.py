"""A plugin whose register_model call misspells a keyword (``famly``)."""

from torch import nn

from cnnbench.models import register_model


@register_model(famly="test", section=None, input_size=8, description="misspelled")
def misspelled_keyword() -> nn.Module:
    return nn.Linear(4, 10)
