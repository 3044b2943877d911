"""VGG as d2l section 8.2 builds it (Simonyan & Zisserman 2014).

The network is data: an ``arch`` tuple of ``(num_convs, out_channels)`` per block, exactly the
chapter's. Each block is ``num_convs`` 3x3 convolutions with ReLU and a 2x2/2 max-pool; the head is
two 4096-wide fully connected layers with dropout 0.5 and a classifier. ``vgg11`` has the paper's
widths; ``vgg11_quarter`` is the quarter-width VGG-11 that the chapter actually trains on
Fashion-MNIST (``ratio = 4``). The chapter's ``LazyLinear`` is an ``nn.Linear`` sized at
``image_size`` as the lazy layer would infer it (512 x 7 x 7 = 25088 inputs at 224).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ._common import flat_features, init_cnn
from ._registry import register_model

__all__ = ["VGG", "VGG11_ARCH", "VGG11_QUARTER_ARCH", "vgg_block", "vgg11", "vgg11_quarter"]

Arch = tuple[tuple[int, int], ...]

VGG11_ARCH: Arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
# The chapter trains VGG-11 with every width divided by 4 to fit Fashion-MNIST training time.
VGG11_QUARTER_ARCH: Arch = tuple((n, c // 4) for n, c in VGG11_ARCH)


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _features(arch: Arch, in_channels: int) -> nn.Sequential:
    blocks = OrderedDict()
    for i, (num_convs, out_channels) in enumerate(arch, start=1):
        blocks[f"block{i}"] = vgg_block(num_convs, in_channels, out_channels)
        in_channels = out_channels
    return nn.Sequential(blocks)


class VGG(nn.Module):
    def __init__(
        self, arch: Arch, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 224
    ):
        super().__init__()
        n_flat = flat_features(lambda: _features(arch, in_channels), in_channels, image_size)
        for name, block in _features(arch, in_channels).named_children():
            self.add_module(name, block)  # block1..block5
        self.num_blocks = len(arch)
        self.fc6 = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.fc7 = nn.Sequential(nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.fc8 = nn.Linear(4096, num_classes)
        self.apply(init_cnn)

    def forward_features(self, x: Tensor) -> Tensor:
        # N x 1 x 224 x 224; each block halves the side: 112, 56, 28, 14, 7
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        return x  # N x 512 x 7 x 7 (N x 128 x 7 x 7 at quarter width)

    def forward_head(self, x: Tensor) -> Tensor:
        x = self.fc6(x)  # N x 4096
        x = self.fc7(x)  # N x 4096
        return self.fc8(x)  # N x num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    family="vgg",
    section="8.2",
    input_size=224,
    lr=0.01,
    description="VGG-11 at the paper's full widths (64-512 channels)",
)
def vgg11(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 224) -> VGG:
    return VGG(VGG11_ARCH, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@register_model(
    family="vgg",
    section="8.2",
    input_size=224,
    lr=0.01,
    description="VGG-11 at quarter width (16-128 channels), as the chapter trains it",
    default=True,
)
def vgg11_quarter(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 224) -> VGG:
    return VGG(
        VGG11_QUARTER_ARCH, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
