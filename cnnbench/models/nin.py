"""Network in Network as d2l section 8.3 builds it (Lin et al. 2013).

Four NiN blocks (a convolution followed by two 1x1 convolutions, each with ReLU), three 3x3/2
max-pools, dropout 0.5 and global average pooling over a last block with one channel per class:
no fully connected layer at all, which is where NiN saves its parameters.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ._common import init_cnn
from ._registry import register_model

__all__ = ["NiN", "nin_block", "nin"]


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.ReLU(),
    )


class NiN(nn.Sequential):
    """The chapter's ``nn.Sequential``, with its entries named so that summaries read well.

    Shapes at 1 x 224 x 224: nin1 96 x 54 x 54, pool1 96 x 26 x 26, nin2 256 x 26 x 26,
    pool2 256 x 12 x 12, nin3 384 x 12 x 12, pool3 384 x 5 x 5, nin4 num_classes x 5 x 5,
    gap num_classes.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1):
        super().__init__(
            OrderedDict(
                nin1=nin_block(in_channels, 96, kernel_size=11, stride=4, padding=0),
                pool1=nn.MaxPool2d(3, stride=2),
                nin2=nin_block(96, 256, kernel_size=5, stride=1, padding=2),
                pool2=nn.MaxPool2d(3, stride=2),
                nin3=nin_block(256, 384, kernel_size=3, stride=1, padding=1),
                pool3=nn.MaxPool2d(3, stride=2),
                dropout=nn.Dropout(0.5),
                nin4=nin_block(384, num_classes, kernel_size=3, stride=1, padding=1),
                gap=nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()),
            )
        )
        self.apply(init_cnn)


@register_model(
    family="nin",
    section="8.3",
    input_size=224,
    lr=0.05,
    description="Network in Network: 1x1 convolutions and global average pooling, no FC layer",
    default=True,
)
def nin(*, num_classes: int = 10, in_channels: int = 1) -> NiN:
    return NiN(num_classes=num_classes, in_channels=in_channels)
