import pytest

from cnnbench import models
from cnnbench.models import UnknownModelError


def test_default_selection_is_the_four_chapter_models():
    assert models.default_models() == ["alexnet", "vgg11_quarter", "nin", "googlenet"]


def test_patterns_commas_and_all():
    assert models.list_models("googlenet") == ["googlenet"]
    assert models.list_models("nin,alexnet") == ["nin", "alexnet"]
    assert models.list_models(["vgg*"]) == ["vgg11", "vgg11_quarter"]
    assert models.list_models("tv_*") == ["tv_alexnet", "tv_googlenet", "tv_vgg11"]
    assert models.list_models("all") == models.list_models()
    assert models.list_models("alexnet,alexnet") == ["alexnet"]
    assert len(models.list_models()) == 14
    assert models.list_models("googlenet*")[0] == "googlenet"


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UnknownModelError) as info:
        models.list_models("googlent")
    assert (
        str(info.value) == "unknown model 'googlent' — did you mean 'googlenet'? see: cnnbench list"
    )
    with pytest.raises(UnknownModelError):
        models.list_models("resnet*")
    with pytest.raises(UnknownModelError):
        models.create("lenet")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("googlenet", family="x", section=None, input_size=1, description="")(
            lambda: None
        )


def test_metadata():
    spec = models.get_spec("nin")
    assert (spec.section, spec.input_size, spec.lr, spec.in_channels, spec.num_classes) == (
        "8.3",
        224,
        0.05,
        1,
        10,
    )
    assert models.get_spec("googlenet").input_size == 96
    assert models.get_spec("alexnet").sized_head and not models.get_spec("googlenet").sized_head
    chapter = ["alexnet", "vgg11", "vgg11_quarter", "nin", "googlenet"]
    assert all(models.get_spec(n).parent is None for n in chapter)
    variants = [n for n in models.list_models() if models.get_spec(n).parent]
    assert len(variants) == 6 and all(models.get_spec(n).family == "googlenet" for n in variants)
