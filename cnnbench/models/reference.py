"""torchvision's AlexNet, VGG-11 and GoogLeNet as cross-check references.

They are registered at ImageNet's shape (3 x 224 x 224, 1,000 classes) so that cnnbench's
parameter and FLOP counters can be compared with the ``num_params`` and ``_ops`` that torchvision
publishes in its weights metadata. They are *not* the chapter's networks: torchvision's GoogLeNet
has batch normalization and a 3x3 "5x5" branch (pytorch/vision#906). No weights are loaded.
"""

from __future__ import annotations

from torch import nn

from ._registry import register_model

__all__ = ["tv_alexnet", "tv_vgg11", "tv_googlenet"]

_COMMON = dict(family="torchvision", section=None, input_size=224, in_channels=3, num_classes=1000)


@register_model(description="torchvision alexnet (ImageNet shape), counter cross-check", **_COMMON)
def tv_alexnet(*, num_classes: int = 1000) -> nn.Module:
    from torchvision.models import alexnet

    return alexnet(weights=None, num_classes=num_classes)


@register_model(description="torchvision vgg11 (ImageNet shape), counter cross-check", **_COMMON)
def tv_vgg11(*, num_classes: int = 1000) -> nn.Module:
    from torchvision.models import vgg11

    return vgg11(weights=None, num_classes=num_classes)


@register_model(
    description="torchvision googlenet, BN, no aux heads (ImageNet shape), counter cross-check",
    **_COMMON,
)
def tv_googlenet(*, num_classes: int = 1000) -> nn.Module:
    from torchvision.models import googlenet

    # aux_logits=False: the auxiliary classifiers are training-only and excluded from the
    # published num_params; init_weights=False skips scipy's truncated-normal init (speed only).
    return googlenet(weights=None, num_classes=num_classes, aux_logits=False, init_weights=False)
