"""The zoo against the chapter: shapes it prints, parameter counts from layer formulas."""

import pytest
import torch
from torch import nn

from cnnbench import models
from cnnbench.measure.shapes import summarize
from cnnbench.results import Spec

ALL = models.list_models()
CHAPTER = ["alexnet", "vgg11", "vgg11_quarter", "nin", "googlenet"]


def conv(cin, cout, k):  # k·k·c_in·c_out weights + c_out biases
    return k * k * cin * cout + cout


def linear(fan_in, fan_out):
    return fan_in * fan_out + fan_out


def inception(cin, c1, c2, c3, c4):
    return (
        conv(cin, c1, 1)
        + conv(cin, c2[0], 1)
        + conv(c2[0], c2[1], 3)
        + conv(cin, c3[0], 1)
        + conv(c3[0], c3[1], 5)
        + conv(cin, c4, 1)
    )


def vgg_params(arch, flat_side=7):
    total, cin = 0, 1
    for num_convs, cout in arch:
        for _ in range(num_convs):
            total += conv(cin, cout, 3)
            cin = cout
    return total + linear(cin * flat_side**2, 4096) + linear(4096, 4096) + linear(4096, 10)


def nin_block(cin, cout, k):
    return conv(cin, cout, k) + 2 * conv(cout, cout, 1)


# Written out from the chapter's code, independently of cnnbench's GOOGLENET_STAGES table.
GOOGLENET_INCEPTIONS = [
    (192, 64, (96, 128), (16, 32), 32),
    (256, 128, (128, 192), (32, 96), 64),
    (480, 192, (96, 208), (16, 48), 64),
    (512, 160, (112, 224), (24, 64), 64),
    (512, 128, (128, 256), (24, 64), 64),
    (512, 112, (144, 288), (32, 64), 64),
    (528, 256, (160, 320), (32, 128), 128),
    (832, 256, (160, 320), (32, 128), 128),
    (832, 384, (192, 384), (48, 128), 128),
]

EXPECTED_PARAMS = {
    "alexnet": conv(1, 96, 11)
    + conv(96, 256, 5)
    + conv(256, 384, 3)
    + conv(384, 384, 3)
    + conv(384, 256, 3)
    + linear(6400, 4096)
    + linear(4096, 4096)
    + linear(4096, 10),
    "vgg11": vgg_params(((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))),
    "vgg11_quarter": vgg_params(((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))),
    "nin": nin_block(1, 96, 11)
    + nin_block(96, 256, 5)
    + nin_block(256, 384, 3)
    + nin_block(384, 10, 3),
    "googlenet": conv(1, 64, 7)
    + conv(64, 64, 1)
    + conv(64, 192, 3)
    + sum(inception(*row) for row in GOOGLENET_INCEPTIONS)
    + linear(1024, 10),
}


@pytest.mark.parametrize("name", CHAPTER)
def test_parameter_count_matches_layer_formulas(name):
    model = models.create(name)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]


def test_googlenet_block_shapes_as_the_chapter_prints():
    summary = summarize(models.create("googlenet"), Spec("googlenet", 96), depth=1)
    shapes = [row.output_shape for row in summary.rows]
    assert shapes == [(64, 24, 24), (192, 12, 12), (480, 6, 6), (832, 3, 3), (1024,), (10,)]


def test_alexnet_layer_shapes_as_the_chapter_prints():
    summary = summarize(models.create("alexnet"), Spec("alexnet", 224), depth=2)
    got = [(row.layer, row.output_shape) for row in summary.rows]
    expected = [
        ("Conv2d", (96, 54, 54)), ("ReLU", (96, 54, 54)), ("MaxPool2d", (96, 26, 26)),
        ("Conv2d", (256, 26, 26)), ("ReLU", (256, 26, 26)), ("MaxPool2d", (256, 12, 12)),
        ("Conv2d", (384, 12, 12)), ("ReLU", (384, 12, 12)),
        ("Conv2d", (384, 12, 12)), ("ReLU", (384, 12, 12)),
        ("Conv2d", (256, 12, 12)), ("ReLU", (256, 12, 12)), ("MaxPool2d", (256, 5, 5)),
        ("Flatten", (6400,)), ("Linear", (4096,)), ("ReLU", (4096,)), ("Dropout", (4096,)),
        ("Linear", (4096,)), ("ReLU", (4096,)), ("Dropout", (4096,)), ("Linear", (10,)),
    ]  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(
    "name,size,flat", [("alexnet", 128, 256 * 2 * 2), ("vgg11_quarter", 64, 128 * 2 * 2)]
)
def test_sized_head_matches_what_lazylinear_infers(name, size, flat):
    # The chapter's LazyLinear takes its fan-in from the first forward pass; ours from image_size.
    model = models.create(name, image_size=size)
    assert model.fc6[1].in_features == flat
    assert model(torch.rand(2, 1, size, size)).shape == (2, 10)


def test_xavier_init_as_d2l():
    # Xavier-uniform bound is sqrt(6 / (fan_in + fan_out)); PyTorch's default is far tighter.
    fc = models.create("alexnet").fc7[0]
    bound = (6 / (4096 + 4096)) ** 0.5
    w = fc.weight.detach()
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound
    assert abs(w.std().item() - bound / 3**0.5) < 0.01 * bound


@pytest.mark.parametrize("name", ALL)
def test_forward_shape_finite_and_every_parameter_gets_a_gradient(name):
    spec = models.get_spec(name)
    model = models.create(name)
    torch.manual_seed(0)
    x = torch.rand(2, spec.in_channels, spec.input_size, spec.input_size)
    y = model(x)
    assert y.shape == (2, spec.num_classes)
    assert torch.isfinite(y).all()
    y.logsumexp(dim=1).sum().backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing


def test_builders_are_strict():
    with pytest.raises(TypeError):
        models.create("googlenet", num_clases=5)
    assert models.create("googlenet", num_classes=5)(torch.rand(1, 1, 96, 96)).shape == (1, 5)


def test_explicit_channels_no_lazy_modules():
    for name in CHAPTER:
        lazy = [
            m
            for m in models.create(name).modules()
            if isinstance(m, nn.modules.lazy.LazyModuleMixin)
        ]
        assert not lazy, name
