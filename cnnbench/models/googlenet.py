"""GoogLeNet as d2l section 8.4 builds it (Szegedy et al. 2015), sized for 1 x 96 x 96 inputs.

Five blocks and a classifier, as the chapter's ``b1`` ... ``b5`` and ``LazyLinear``:

- b1: 7x7/2 convolution with 64 channels and a 3x3/2 max-pool   → 64 x 24 x 24
- b2: 1x1 (64) and 3x3 (192) convolutions and a max-pool         → 192 x 12 x 12
- b3: two Inception blocks and a max-pool                         → 480 x 6 x 6
- b4: five Inception blocks and a max-pool                        → 832 x 3 x 3
- b5: two Inception blocks, global average pooling, flatten       → 1024
- fc: a linear classifier                                          → 10

Unlike torchvision's ``googlenet`` there is no batch normalization, no auxiliary classifier and
the "5x5" branch really is 5x5 (torchvision uses 3x3 there, pytorch/vision#906).

The network is data: ``GOOGLENET_STAGES`` lists each Inception block's channel numbers, and every
convolution is made by an injected ``conv_block`` (conv + activation), the way torchvision's
``Inception(conv_block=...)`` does, so that the exercise variants replace a block or a row instead
of copying the network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._common import init_cnn
from ._registry import register_model

__all__ = [
    "ConvBlock",
    "ConvReLU",
    "Inception",
    "GoogLeNet",
    "GOOGLENET_STAGES",
    "googlenet",
]

# conv_block(in_channels, out_channels, kernel_size, stride=1, padding=0) -> nn.Module
ConvBlock = Callable[..., nn.Module]


class ConvReLU(nn.Sequential):
    """A convolution followed by ReLU: the chapter's building unit."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
            nn.ReLU(),
        )


# One Inception block: (c1, (c2_reduce, c2), (c3_reduce, c3), c4) as in the chapter's calls.
InceptionCfg = tuple[int, tuple[int, int], tuple[int, int], int]


class Inception(nn.Module):
    """Four parallel paths concatenated on channels: 1x1; 1x1→3x3; 1x1→5x5; 3x3 max-pool→1x1."""

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c2: tuple[int, int],
        c3: tuple[int, int],
        c4: int,
        *,
        conv_block: ConvBlock = ConvReLU,
    ):
        super().__init__()
        self.b1 = conv_block(in_channels, c1, kernel_size=1)
        self.b2 = nn.Sequential(
            conv_block(in_channels, c2[0], kernel_size=1),
            conv_block(c2[0], c2[1], kernel_size=3, padding=1),
        )
        self.b3 = nn.Sequential(
            conv_block(in_channels, c3[0], kernel_size=1),
            conv_block(c3[0], c3[1], kernel_size=5, padding=2),
        )
        self.b4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            conv_block(in_channels, c4, kernel_size=1),
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


# The chapter's Inception rows for b3, b4 and b5; a max-pool closes b3 and b4.
GOOGLENET_STAGES: dict[str, tuple[InceptionCfg, ...]] = {
    "b3": (
        (64, (96, 128), (16, 32), 32),  # → 256
        (128, (128, 192), (32, 96), 64),  # → 480
    ),
    "b4": (
        (192, (96, 208), (16, 48), 64),  # → 512
        (160, (112, 224), (24, 64), 64),  # → 512
        (128, (128, 256), (24, 64), 64),  # → 512
        (112, (144, 288), (32, 64), 64),  # → 528
        (256, (160, 320), (32, 128), 128),  # → 832
    ),
    "b5": (
        (256, (160, 320), (32, 128), 128),  # → 832
        (384, (192, 384), (48, 128), 128),  # → 1024
    ),
}


class GoogLeNet(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        stages: dict[str, tuple[InceptionCfg, ...]] = GOOGLENET_STAGES,
        conv_block: ConvBlock = ConvReLU,
        inception_block: Callable[..., nn.Module] = Inception,
    ):
        super().__init__()
        self.b1 = nn.Sequential(
            conv_block(in_channels, 64, kernel_size=7, stride=2, padding=3),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.b2 = nn.Sequential(
            conv_block(64, 64, kernel_size=1),
            conv_block(64, 192, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        channels = 192
        for name in ("b3", "b4", "b5"):
            layers: list[nn.Module] = []
            for c1, c2, c3, c4 in stages[name]:
                block = inception_block(channels, c1, c2, c3, c4, conv_block=conv_block)
                channels = block.out_channels
                layers.append(block)
            if name == "b5":
                layers += [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()]
            else:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            self.add_module(name, nn.Sequential(*layers))
        self.fc = nn.Linear(channels, num_classes)
        self.apply(init_cnn)

    def forward_features(self, x: Tensor) -> Tensor:
        # N x 1 x 96 x 96
        x = self.b1(x)  # N x 64 x 24 x 24
        x = self.b2(x)  # N x 192 x 12 x 12
        x = self.b3(x)  # N x 480 x 6 x 6
        x = self.b4(x)  # N x 832 x 3 x 3
        return self.b5(x)  # N x 1024

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(x)  # N x num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    family="googlenet",
    section="8.4",
    input_size=96,
    lr=0.01,
    description="GoogLeNet: nine Inception blocks and global average pooling",
    default=True,
)
def googlenet(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels)
