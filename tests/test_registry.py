import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench import models
from cnnbench.models import PluginError, UnknownModelError

# The zoo itself, in list order. Other tests register plugin models in this process
# (tests/plugins/failing_models.py), so the registry may hold more: compare against these.
BUILT_IN = [
    "alexnet", "vgg11", "vgg11_quarter", "nin", "googlenet", "googlenet28", "googlenet_bn",
    "googlenet_ls", "googlenet_res", "googlenet_v3", "googlenet_v3_asym",
    "tv_alexnet", "tv_googlenet", "tv_vgg11",
]  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent


def built_in(names):
    """``names`` without the models that plugins registered (their builders live elsewhere)."""
    return [n for n in names if models.get_spec(n).builder.__module__.startswith("cnnbench.")]


def test_default_selection_is_the_four_chapter_models():
    assert models.default_models() == ["alexnet", "vgg11_quarter", "nin", "googlenet"]


def test_patterns_commas_and_all():
    assert models.list_models("googlenet") == ["googlenet"]
    assert models.list_models("nin,alexnet") == ["nin", "alexnet"]
    assert models.list_models(["vgg*"]) == ["vgg11", "vgg11_quarter"]
    assert models.list_models("tv_*") == ["tv_alexnet", "tv_googlenet", "tv_vgg11"]
    assert models.list_models("all") == models.list_models()
    assert models.list_models("alexnet,alexnet") == ["alexnet"]
    assert built_in(models.list_models("all")) == BUILT_IN
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


def test_a_plugin_is_loaded_on_the_first_lookup(monkeypatch):
    monkeypatch.setenv("CNNBENCH_PLUGINS", " tests.plugins.failing_models , ")
    assert "raises_in_forward" in models.list_models("all")
    assert models.get_spec("dies_in_forward").family == "test"
    assert built_in(models.list_models("all")) == BUILT_IN  # plugins add; they change nothing


FAILING_PLUGINS = [
    ("tests.plugins.no_such_plugin",
     "failed to import: ModuleNotFoundError: No module named 'tests.plugins.no_such_plugin'"),
    ("tests.plugins.broken_import",
     "failed to import at {root}/tests/plugins/broken_import.py:3: ModuleNotFoundError: "
     "No module named 'cnnbench_no_such_package'"),
    ("tests.plugins.duplicate_model",
     "failed to register a model at {root}/tests/plugins/duplicate_model.py:13: "
     "RegistrationError: a model is already registered as 'googlenet'"),
    ("tests.plugins.bad_keyword",
     "failed to register a model at {root}/tests/plugins/bad_keyword.py:8: "
     "TypeError: register_model() got an unexpected keyword argument 'famly'"),
    ("tests.plugins.bad_value",
     "failed to register a model at {root}/tests/plugins/bad_value.py:8: "
     "RegistrationError: input_size must be a positive int, not 0"),
]  # fmt: skip


@pytest.mark.parametrize("module,error", FAILING_PLUGINS, ids=[m for m, _ in FAILING_PLUGINS])
def test_a_failing_plugin_is_one_plugin_error_naming_it(monkeypatch, module, error):
    monkeypatch.setenv("CNNBENCH_PLUGINS", f"tests.plugins.failing_models,{module}")
    with pytest.raises(PluginError) as info:
        models.list_models()
    message = str(info.value)
    assert message == f"plugin '{module}' (from $CNNBENCH_PLUGINS) " + error.format(root=ROOT)
    assert "\n" not in message and info.value.module == module
    assert isinstance(info.value, ValueError)
    # every lookup fails the same way, with the same error: the plugin is not imported again
    for lookup in (models.default_models, lambda: models.get_spec("nin"),
                   lambda: models.create("nin"), models.load_plugins):  # fmt: skip
        with pytest.raises(PluginError) as again:
            lookup()
        assert again.value is info.value
    monkeypatch.delenv("CNNBENCH_PLUGINS")  # not named any more: the zoo works again
    assert built_in(models.list_models()) == BUILT_IN
    assert "plugin_model_before_the_duplicate" not in models.list_models()  # undone


def test_a_spawned_worker_fails_the_same_way(monkeypatch):
    monkeypatch.setenv("CNNBENCH_PLUGINS", "tests.plugins.bad_value")
    with pytest.raises(PluginError) as here:
        models.get_spec("nin")
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # as the runner starts workers
        with pytest.raises(PluginError) as there:
            pool.apply(models.create, ("nin",))
    assert str(there.value) == str(here.value) and there.value.module == "tests.plugins.bad_value"


def test_cnnbench_list_reports_a_failing_plugin_in_one_line():
    env = dict(os.environ, CNNBENCH_PLUGINS="tests.plugins.broken_import")
    proc = subprocess.run([sys.executable, "-m", "cnnbench", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("cnnbench: plugin 'tests.plugins.broken_import' "), proc.stderr
    assert "ModuleNotFoundError: No module named 'cnnbench_no_such_package'" in proc.stderr
    assert proc.returncode == 2
