"""Parameter and MAC counters against formulas, torchvision's published metadata and a second tool."""

import pytest
import torch
from torch import nn

from cnnbench import models
from cnnbench.measure import flops, params
from cnnbench.measure.flops import analysis, train_step_flops
from cnnbench.results import Spec


def spec_for(name):
    return Spec(name, models.get_spec(name).input_size)


def test_single_convolution_and_linear_macs_by_formula():
    c = nn.Conv2d(3, 8, kernel_size=5, padding=1, stride=2)
    x = torch.rand(2, 3, 33, 33)
    out_side = (33 + 2 - 5) // 2 + 1
    assert analysis(c, x).total() == 2 * 8 * out_side**2 * 3 * 5 * 5
    lin = nn.Linear(300, 70)
    assert analysis(lin, torch.rand(4, 300)).total() == 4 * 300 * 70


def test_train_step_flops_by_formula():
    n, a, b, c = 8, 30, 20, 5
    model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c))
    # forward 2N(ab+bc); backward: second layer input and weight grads 2·2Nbc, first layer's
    # weight grad 2Nab (the input needs no gradient).
    expected = 2 * n * (a * b + b * c) + 4 * n * b * c + 2 * n * a * b
    assert train_step_flops(model, torch.rand(n, a)) == expected


TORCHVISION = {
    "tv_alexnet": "AlexNet_Weights",
    "tv_vgg11": "VGG11_Weights",
    "tv_googlenet": "GoogLeNet_Weights",
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_references_match_published_metadata(name):
    import torchvision.models as tvm

    meta = getattr(tvm, TORCHVISION[name]).IMAGENET1K_V1.meta
    model = models.create(name)
    p = params.measure(model, spec_for(name))
    f = flops.measure(model, spec_for(name))
    assert p.params_total == meta["num_params"]
    # torchvision's _ops is fvcore's multiply-add count of the convolutions and linear layers
    # (for GoogLeNet the batch-norm and pooling MACs fvcore adds would give 1.505, not 1.498).
    assert round(f.conv_linear_macs / 1e9, 3) == meta["_ops"]


@pytest.mark.parametrize("name", models.list_models())
def test_fvcore_agrees_with_flopcountermode(name):
    f = flops.measure(models.create(name), spec_for(name))
    assert f.flopcounter_forward_flops == 2 * f.conv_linear_macs
    assert f.crosscheck_ratio == 1.0
    assert "aten::max_pool2d" in f.unsupported_ops
    # backward costs about two forwards (input and weight gradients), minus the first layer's
    # input gradient, which is not needed
    assert (
        2.5 * f.flopcounter_forward_flops
        < f.flopcounter_train_step_flops
        < 3 * f.flopcounter_forward_flops
    )
    assert sum(f.macs_by_block.values()) == f.macs
    assert f.gmacs == f.macs / 1e9


def test_googlenet_macs_by_formula():
    # conv MACs = out_h·out_w·k·k·c_in·c_out; the chapter's network at 96.
    def conv(side, cin, cout, k):
        return side * side * k * k * cin * cout

    def inception(side, cin, c1, c2, c3, c4):
        return (
            conv(side, cin, c1, 1) + conv(side, cin, c2[0], 1) + conv(side, c2[0], c2[1], 3)
            + conv(side, cin, c3[0], 1) + conv(side, c3[0], c3[1], 5) + conv(side, cin, c4, 1)
        )  # fmt: skip

    expected = conv(48, 1, 64, 7) + conv(24, 64, 64, 1) + conv(24, 64, 192, 3)
    expected += inception(12, 192, 64, (96, 128), (16, 32), 32) + inception(
        12, 256, 128, (128, 192), (32, 96), 64
    )
    for cin, *cfg in [
        (480, 192, (96, 208), (16, 48), 64),
        (512, 160, (112, 224), (24, 64), 64),
        (512, 128, (128, 256), (24, 64), 64),
        (512, 112, (144, 288), (32, 64), 64),
        (528, 256, (160, 320), (32, 128), 128),
    ]:
        expected += inception(6, cin, *cfg)
    expected += inception(3, 832, 256, (160, 320), (32, 128), 128) + inception(
        3, 832, 384, (192, 384), (48, 128), 128
    )
    expected += 1024 * 10  # classifier
    f = flops.measure(models.create("googlenet"), spec_for("googlenet"))
    assert f.conv_linear_macs == expected
    assert f.macs == expected + 1024 * 3 * 3  # fvcore also counts the global average pool


def test_params_breakdown():
    model = models.create("alexnet")
    p = params.measure(model, spec_for("alexnet"))
    assert p.params_total == p.params_trainable == sum(p.params_by_block.values())
    assert list(p.params_by_block) == ["stage1", "stage2", "stage3", "fc6", "fc7", "fc8"]
    assert (
        p.params_by_layer_type["linear"] == 6400 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    )
    assert p.params_by_layer_type["norm"] == 0
    assert sum(p.params_by_layer_type.values()) == p.params_total
    assert (p.bytes_fp32, p.bytes_bf16) == (4 * p.params_total, 2 * p.params_total)
    bn = params.measure(models.create("tv_googlenet"), spec_for("tv_googlenet"))
    assert bn.params_by_layer_type["norm"] > 0


def test_frozen_parameters_are_not_trainable():
    model = models.create("googlenet")
    for p in model.b1.parameters():
        p.requires_grad_(False)
    count = params.measure(model, spec_for("googlenet"))
    b1_params = 7 * 7 * 1 * 64 + 64  # the stem's only layer with parameters is the 7x7 conv
    assert count.params_total - count.params_trainable == b1_params
