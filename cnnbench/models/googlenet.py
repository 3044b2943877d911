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

The chapter's exercises are variants registered with ``parent`` set, each a different block, stem
or training option injected into the same ``GoogLeNet`` (exercise 1: ``googlenet_bn``,
``googlenet_v3``, ``googlenet_v3_asym``, ``googlenet_res``, ``googlenet_ls``; exercise 3:
``googlenet28``, for Fashion-MNIST's native 28x28 — see :func:`stem_28` for what changed and why).

The network is data: ``GOOGLENET_STAGES`` lists each Inception block's channel numbers, and every
convolution is made by an injected ``conv_block`` (conv + activation), the way torchvision's
``Inception(conv_block=...)`` does, so that the exercise variants replace a block or a row instead
of copying the network.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from ._common import init_cnn
from ._registry import register_model

__all__ = [
    "ConvBlock",
    "ConvReLU",
    "ConvBNReLU",
    "Inception",
    "InceptionV3",
    "InceptionRes",
    "GoogLeNet",
    "GOOGLENET_STAGES",
    "stem_28",
    "googlenet",
    "googlenet_bn",
    "googlenet_v3",
    "googlenet_v3_asym",
    "googlenet_res",
    "googlenet_ls",
    "googlenet28",
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
        stem: nn.Module | None = None,
    ):
        super().__init__()
        # b1, the stem: 64 channels out, as the chapter's 7x7/2 convolution and 3x3/2 max-pool
        self.b1 = stem or nn.Sequential(
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


# --- The exercise variants (d2l 8.4, exercises 1 and 3): a different block or stem, same network.


class ConvBNReLU(nn.Sequential):
    """Convolution, batch normalization, ReLU (Ioffe & Szegedy 2015). The convolution drops its
    bias: BN's shift makes it redundant, so each layer gains 2 x C_out - C_out = C_out parameters."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding=0
    ):
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class InceptionV3(Inception):
    """Inception with the 5x5 branch factored into two 3x3 convolutions (Szegedy et al. 2016),
    the same receptive field for 18/25 of the weights per channel pair; with ``asymmetric`` every
    3x3 is further factored into 1x3 then 3x1."""

    def __init__(
        self,
        in_channels,
        c1,
        c2,
        c3,
        c4,
        *,
        conv_block: ConvBlock = ConvReLU,
        asymmetric: bool = False,
    ):
        super().__init__(in_channels, c1, c2, c3, c4, conv_block=conv_block)

        def conv3x3(cin: int, cout: int) -> nn.Module:
            if not asymmetric:
                return conv_block(cin, cout, kernel_size=3, padding=1)
            return nn.Sequential(
                conv_block(cin, cout, kernel_size=(1, 3), padding=(0, 1)),
                conv_block(cout, cout, kernel_size=(3, 1), padding=(1, 0)),
            )

        self.b2 = nn.Sequential(
            conv_block(in_channels, c2[0], kernel_size=1), conv3x3(c2[0], c2[1])
        )
        self.b3 = nn.Sequential(
            conv_block(in_channels, c3[0], kernel_size=1),
            conv3x3(c3[0], c3[1]),
            conv3x3(c3[1], c3[1]),
        )


class InceptionRes(Inception):
    """Inception-ResNet-style block (Szegedy et al. 2017): the concatenated branches are added to
    the input, through a 1x1 projection where the channel counts differ, then ReLU."""

    def __init__(self, in_channels, c1, c2, c3, c4, *, conv_block: ConvBlock = ConvReLU):
        super().__init__(in_channels, c1, c2, c3, c4, conv_block=conv_block)
        out = self.out_channels
        self.shortcut = (
            nn.Identity() if in_channels == out else nn.Conv2d(in_channels, out, kernel_size=1)
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.shortcut(x) + super().forward(x))


def stem_28(in_channels: int, conv_block: ConvBlock = ConvReLU) -> nn.Sequential:
    """Stem for Fashion-MNIST's native 28x28: a 3x3/1 convolution and one 3x3/2 max-pool → 14x14.

    The 96x96 stem (7x7/2 convolution + max-pool) shrinks its input 4x to 24x24; at 28x28 that
    would leave 7x7 before the body and 1x1 maps by b4. Shrinking only 2x keeps the body's maps
    close to the 96x96 network's (14, 7, 4, 2 against 12, 6, 3, 1.5): body and head are unchanged.
    """
    return nn.Sequential(
        conv_block(in_channels, 64, kernel_size=3, stride=1, padding=1),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


# Every variant shares the chapter section, family and learning rate of its root.
_variant = partial(register_model, family="googlenet", section="8.4", lr=0.01)


@_variant(
    input_size=96,
    description="GoogLeNet with batch normalization after every convolution (exercise 1)",
    parent="googlenet",
)
def googlenet_bn(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, conv_block=ConvBNReLU)


@_variant(
    input_size=96,
    description="GoogLeNet with Inception-v3-style blocks: 5x5 as two 3x3 (exercise 1)",
    parent="googlenet",
)
def googlenet_v3(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, inception_block=InceptionV3)


@_variant(
    input_size=96,
    description="Inception-v3-style blocks with every 3x3 as 1x3 + 3x1 (exercise 1)",
    parent="googlenet_v3",
)
def googlenet_v3_asym(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    block = partial(InceptionV3, asymmetric=True)
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, inception_block=block)


@_variant(
    input_size=96,
    description="Inception-ResNet-style blocks: residual add, 1x1 projection (exercise 1)",
    parent="googlenet",
)
def googlenet_res(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, inception_block=InceptionRes)


@_variant(
    input_size=96,
    description="GoogLeNet trained with label smoothing 0.1 (exercise 1): same network",
    parent="googlenet",
    train_overrides={"label_smoothing": 0.1},
)
def googlenet_ls(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels)


@_variant(
    input_size=28,
    description="GoogLeNet for native 28x28 input: 3x3/1 stem, one max-pool (exercise 3)",
    parent="googlenet",
)
def googlenet28(*, num_classes: int = 10, in_channels: int = 1) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, stem=stem_28(in_channels))
