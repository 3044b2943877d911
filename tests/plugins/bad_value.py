"""A plugin whose register_model call gives an impossible input size."""

from torch import nn

from cnnbench.models import register_model


@register_model(family="test", section=None, input_size=0, description="zero-pixel input")
def zero_input_size() -> nn.Module:
    return nn.Linear(4, 10)
