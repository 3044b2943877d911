"""AlexNet as d2l section 8.1 builds it (Krizhevsky et al. 2012, one tower, no LRN).

Layer for layer the chapter's ``AlexNet``: 11x11/4 convolution with 96 channels, 5x5 with 256,
three 3x3 (384, 384, 256), three 3x3/2 max-pools, two 4096-wide fully connected layers with
dropout 0.5 and a classifier. The chapter's ``LazyLinear`` becomes an explicit ``nn.Linear``
sized at ``image_size`` exactly as the lazy layer would infer it (6400 inputs at 224).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ._common import flat_features, init_cnn
from ._registry import register_model

__all__ = ["AlexNet", "alexnet"]


def _features(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            stage1=nn.Sequential(
                nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
            ),
            stage2=nn.Sequential(
                nn.Conv2d(96, 256, kernel_size=5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
            ),
            stage3=nn.Sequential(
                nn.Conv2d(256, 384, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 384, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
            ),
        )
    )


class AlexNet(nn.Module):
    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 224):
        super().__init__()
        n_flat = flat_features(lambda: _features(in_channels), in_channels, image_size)
        for name, block in _features(in_channels).named_children():
            self.add_module(name, block)  # stage1..stage3: the blocks a summary shows
        self.fc6 = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.fc7 = nn.Sequential(nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.fc8 = nn.Linear(4096, num_classes)
        self.apply(init_cnn)

    def forward_features(self, x: Tensor) -> Tensor:
        # N x 1 x 224 x 224
        x = self.stage1(x)  # N x 96 x 26 x 26 (54 x 54 after the convolution)
        x = self.stage2(x)  # N x 256 x 12 x 12
        x = self.stage3(x)  # N x 256 x 5 x 5
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        x = self.fc6(x)  # N x 4096 (flattened from 6400)
        x = self.fc7(x)  # N x 4096
        return self.fc8(x)  # N x num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    family="alexnet",
    section="8.1",
    input_size=224,
    lr=0.01,
    description="AlexNet, the chapter's single-tower version",
    default=True,
)
def alexnet(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 224) -> AlexNet:
    return AlexNet(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
