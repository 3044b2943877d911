"""One learning-rate rule (``measure.train.learning_rate``): the run's rate (``--lr`` or the
profile's) wins, else the model's chapter rate, else no rate at all; and the training and the
timed training step of one model in one run use the same rate."""

from types import SimpleNamespace

import pytest
import torch

from cnnbench import runner
from cnnbench.config import make_config
from cnnbench.measure import workload
from cnnbench.measure.harnesses import Context
from cnnbench.measure.train import Unsupported, config_for, learning_rate

# the rates d2l's PyTorch code trains with (8.1 AlexNet(lr=0.01), 8.3 NiN(lr=0.05)), typed here
# from the book, not read from the registry
CHAPTER_LR = {"alexnet": 0.01, "nin": 0.05}
NO_CHAPTER_LR = "tv_alexnet"  # a torchvision reference: the chapter never trains it


def _config(models, profile="full", **given):
    return make_config(models=models, metrics=("accuracy", "latency", "memory"), device="cpu",
                       profile=profile, out_dir="unused", given=given)  # fmt: skip


def _rate(model, profile="full", **given):
    return learning_rate(config_for(_config((model,), profile, **given), model), model)


def test_the_runs_rate_wins_over_the_chapters():
    assert _rate("nin", lr=0.2) == 0.2
    assert _rate(NO_CHAPTER_LR, lr=0.2) == 0.2
    assert _rate("nin", profile="quick") == 5e-4  # the profile's own rate is the run's rate too


@pytest.mark.parametrize("model", sorted(CHAPTER_LR))
def test_without_a_run_rate_the_chapters_rate(model):
    assert _rate(model) == CHAPTER_LR[model]


def test_a_model_without_a_chapter_rate_has_none_until_the_run_sets_one():
    with pytest.raises(Unsupported, match=f"'{NO_CHAPTER_LR}' has no chapter learning rate.*--lr"):
        _rate(NO_CHAPTER_LR)


def _data(n=20):
    """A tiny Fashion-MNIST stand-in: the harness loads it in place of the real files."""
    labels = torch.arange(10).repeat(n // 10)
    images = torch.randint(0, 255, (n, 28, 28), dtype=torch.uint8)
    return SimpleNamespace(train_images=images, train_labels=labels, test_images=images,
                           test_labels=labels, location=SimpleNamespace(root="synthetic"),
                           verified=False)  # fmt: skip


def _records(monkeypatch, model, **given):
    """The accuracy record and the train-mode latency and memory records of ``model`` as the
    runner makes them, and every rate an optimizer was built with, in order."""
    from cnnbench.measure import train

    monkeypatch.setattr(train, "load_fashion_mnist", lambda data_dir=None: _data())
    rates = []
    real = workload.make_optimizer

    def spy(params, name="sgd", lr=0.01, momentum=0.0):
        rates.append(lr)
        return real(params, name, lr, momentum)

    monkeypatch.setattr(workload, "make_optimizer", spy)
    config = _config((model,), epochs=1, train_subset=20, test_subset=20, seeds=(0,),
                     train_batch_size=10, batch_sizes=(2,), image_size=72, rounds=1, warmup=0,
                     min_runs=1, min_time=0.01, **given)  # fmt: skip
    ctx = Context(config)
    units = {(u.metric, u.spec.mode): u for u in runner.plan(config, model)}
    picked = [units[("accuracy", "train")], units[("latency", "train")], units[("memory", "train")]]
    return [runner._measure_unit(u, ctx) for u in picked], rates


@pytest.mark.parametrize("given", [{}, {"lr": 0.2}], ids=["chapter", "flag"])
def test_training_and_the_timed_step_use_the_same_rate(monkeypatch, given):
    (accuracy, latency, memory), rates = _records(monkeypatch, "nin", **given)
    expected = given.get("lr", CHAPTER_LR["nin"])
    assert [r.status for r in (accuracy, latency, memory)] == ["ok", "ok", "ok"]
    assert accuracy.values["lr"] == expected and accuracy.values["optimizer"] == "sgd"
    # the step's optimizer as the records label it (its memory is measured in a worker process)
    assert latency.values["optimizer"] == memory.values["optimizer"] == f"sgd {expected:g}"
    # and as built: the training's optimizer (one seed), then the timed step's
    assert rates == [expected, expected]


def test_without_a_rate_neither_trains_nor_times_a_step(monkeypatch):
    (accuracy, latency, memory), rates = _records(monkeypatch, NO_CHAPTER_LR)
    assert [r.status for r in (accuracy, latency, memory)] == ["unsupported"] * 3
    assert accuracy.reason == latency.reason == memory.reason
    assert "no chapter learning rate" in accuracy.reason and rates == []


def test_the_chapter_recipe_is_named_once_and_its_differences_by_name():
    """d2l 8.1-8.4 for NiN: plain SGD at lr 0.05 (typed in from the book), batch 128, 224 px,
    fp32; each setting that differs is named, and one left out is not judged."""
    from cnnbench.measure.train import chapter_recipe_differences

    book = dict(batch_size=128, optimizer="sgd", lr=0.05, momentum=0.0, label_smoothing=0.0,
                image_size=224, dtype="fp32")  # fmt: skip
    assert chapter_recipe_differences("nin", **book) == ()
    assert chapter_recipe_differences("nin", **{**book, "lr": 0.01, "dtype": "bf16"}) == ("lr", "dtype")
    assert chapter_recipe_differences("nin", **{**book, "momentum": 0.9}) == ("momentum",)
    without_dtype = {k: v for k, v in book.items() if k != "dtype"}
    assert chapter_recipe_differences("nin", **without_dtype) == ()
