"""A plugin that registers one model fine, then one under a built-in's name."""

from torch import nn

from cnnbench.models import register_model


@register_model(family="test", section=None, input_size=8, description="registered, then undone")
def plugin_model_before_the_duplicate() -> nn.Module:
    return nn.Linear(4, 10)


@register_model("googlenet", family="test", section=None, input_size=8, description="duplicate")
def not_googlenet() -> nn.Module:
    return nn.Linear(4, 10)
