import pytest
import torch

from cnnbench import models
from cnnbench.measure.shapes import check_input_size, min_input_size, summarize
from cnnbench.models import InputTooSmallError
from cnnbench.results import Spec


@pytest.mark.parametrize("name", ["alexnet", "vgg11_quarter", "nin"])
def test_min_input_size_agrees_with_a_real_forward(name):
    found = min_input_size(name)
    model = models.create(name, image_size=found.min_size).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, found.min_size, found.min_size)).shape == (1, 10)
        with pytest.raises((RuntimeError, InputTooSmallError)):
            below = found.min_size - 1
            models.create(name, image_size=below).eval()(torch.rand(1, 1, below, below))
    assert found.failing_layer


def test_too_small_names_the_layer():
    with pytest.raises(InputTooSmallError) as info:
        check_input_size("nin", 40)
    assert info.value.layer.startswith("pool")


def test_summary_rows_sum_to_totals():
    s = summarize(models.create("googlenet"), Spec("googlenet", 96), depth=2)
    assert sum(r.params for r in s.rows) == s.params_total
    assert sum(r.macs for r in s.rows) == s.macs_total
    assert abs(sum(r.macs_share for r in s.rows) - 1) < 1e-9
    assert s.rows[0].name == "b1.0" and s.rows[-1].name == "fc"
