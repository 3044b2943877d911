"""GoogLeNet's exercise variants: each builds, trains a step, and differs from its parent exactly
where it should (parameter deltas by formula); minsize against real forwards; the roofline join."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnbench import models
from cnnbench.config import make_config
from cnnbench.measure import roofline
from cnnbench.measure.shapes import min_input_size, summarize
from cnnbench.results import Spec
from cnnbench.measure.train import config_for as train_config

# The chapter's Inception rows (in_channels, c1, (c2r, c2), (c3r, c3), c4), written out here.
ROWS = [
    (192, 64, (96, 128), (16, 32), 32), (256, 128, (128, 192), (32, 96), 64),
    (480, 192, (96, 208), (16, 48), 64), (512, 160, (112, 224), (24, 64), 64),
    (512, 128, (128, 256), (24, 64), 64), (512, 112, (144, 288), (32, 64), 64),
    (528, 256, (160, 320), (32, 128), 128), (832, 256, (160, 320), (32, 128), 128),
    (832, 384, (192, 384), (48, 128), 128),
]  # fmt: skip
VARIANTS = [
    "googlenet_bn",
    "googlenet_v3",
    "googlenet_v3_asym",
    "googlenet_res",
    "googlenet_ls",
    "googlenet28",
]


def n_params(name):
    return sum(p.numel() for p in models.create(name).parameters())


def conv(cin, cout, kh, kw=None):
    return kh * (kw or kh) * cin * cout + cout


def test_batch_norm_adds_one_parameter_per_output_channel():
    # bias dropped (−c_out), BN's scale and shift added (+2 c_out): +c_out for every convolution
    outs = [64, 64, 192] + [c1 + c2[0] + c2[1] + c3[0] + c3[1] + c4 for _, c1, c2, c3, c4 in ROWS]
    assert n_params("googlenet_bn") - n_params("googlenet") == sum(outs)


def test_v3_factors_the_5x5_into_two_3x3():
    delta = sum(
        conv(c3[0], c3[1], 3) + conv(c3[1], c3[1], 3) - conv(c3[0], c3[1], 5)
        for _, _, _, c3, _ in ROWS
    )
    assert n_params("googlenet_v3") - n_params("googlenet") == delta


def test_asymmetric_factors_every_3x3_into_1x3_and_3x1():
    def factored(cin, cout):
        return conv(cin, cout, 1, 3) + conv(cout, cout, 3, 1) - conv(cin, cout, 3)

    delta = sum(
        factored(c2[0], c2[1]) + factored(c3[0], c3[1]) + factored(c3[1], c3[1])
        for _, _, c2, c3, _ in ROWS
    )
    assert n_params("googlenet_v3_asym") - n_params("googlenet_v3") == delta


def test_residual_projects_only_where_channels_differ():
    delta = 0
    for cin, c1, c2, c3, c4 in ROWS:
        cout = c1 + c2[1] + c3[1] + c4
        delta += 0 if cin == cout else cin * cout + cout  # 1x1 projection with bias
    assert n_params("googlenet_res") - n_params("googlenet") == delta
    res = models.create("googlenet_res")
    assert isinstance(res.b4[1].shortcut, nn.Identity)  # 512 → 512: identity
    assert isinstance(res.b3[0].shortcut, nn.Conv2d)  # 192 → 256: projection


def test_label_smoothing_variant_is_the_same_network_trained_differently():
    assert n_params("googlenet_ls") == n_params("googlenet")
    config = make_config(
        models=("googlenet_ls",), metrics=("accuracy",), device="cpu", profile="smoke", out_dir="x"
    )
    assert train_config(config, "googlenet_ls").label_smoothing == 0.1
    assert train_config(config, "googlenet").label_smoothing == 0.0
    explicit = make_config(models=("googlenet_ls",), metrics=("accuracy",), device="cpu", profile="smoke",
                           out_dir="x", given={"label_smoothing": 0.2})  # fmt: skip
    assert train_config(explicit, "googlenet_ls").label_smoothing == 0.2  # the command line wins


def test_native_28_changes_only_the_stem():
    assert n_params("googlenet28") - n_params("googlenet") == conv(1, 64, 3) - conv(1, 64, 7)
    shapes = [
        row.output_shape
        for row in summarize(models.create("googlenet28"), Spec("googlenet28", 28)).rows
    ]
    assert shapes == [(64, 14, 14), (192, 7, 7), (480, 4, 4), (832, 2, 2), (1024,), (10,)]


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_builds_and_trains_a_step(name):
    spec = models.get_spec(name)
    assert spec.parent in models.list_models()
    model = models.create(name)
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, spec.input_size, spec.input_size), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)
    )


@pytest.mark.parametrize("name", ["googlenet28", "googlenet_v3", "vgg11"])
def test_minsize_agrees_with_real_forwards(name):
    found = min_input_size(name)
    s = found.min_size
    with torch.no_grad():
        assert models.create(name, image_size=s).eval()(torch.rand(1, 1, s, s)).shape == (1, 10)
        if s > 1:
            with pytest.raises((RuntimeError, ValueError)):
                models.create(name, image_size=s - 1).eval()(torch.rand(1, 1, s - 1, s - 1))


def test_roofline_join_covers_every_conv_and_linear_layer():
    model = models.create("googlenet")
    peaks = roofline.measure_peaks(torch.device("cpu"))
    assert peaks.peak_flops > 1e9 and peaks.peak_bytes_per_s > 1e8
    r = roofline.measure(model, Spec("googlenet", 96, 2, threads=torch.get_num_threads()), peaks)
    expected = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {lay.name for lay in r.layers} == expected
    assert all(lay.time_ms and lay.time_ms > 0 for lay in r.layers)
    for lay in r.layers:
        # a convolution's work is its taps on real data (fewer than fvcore's nominal MACs where it
        # pads), a linear layer's its MACs; intensity and rate both use the work
        assert lay.work_macs <= lay.macs and (lay.layer != "Linear" or lay.work_macs == lay.macs)
        assert lay.intensity == pytest.approx(2 * lay.work_macs / lay.bytes_moved)
        assert lay.achieved_flops == pytest.approx(2 * lay.work_macs / (lay.time_ms / 1e3))
        assert lay.roof_flops == pytest.approx(
            min(peaks.peak_flops, peaks.peak_bytes_per_s * lay.intensity)
        )
    assert r.mfu == pytest.approx(r.model_achieved_flops / peaks.peak_flops)
    assert 0 < r.mfu < 1.5  # a forward pass cannot beat the machine by much
