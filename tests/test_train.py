"""Short training on the real data: the loss falls, accuracy beats chance, seeds reproduce."""

import dataclasses
import math
import time

import pytest
import torch

from cnnbench.data import load_fashion_mnist
from cnnbench.measure import train
from cnnbench.measure.train import TrainConfig, balanced_subset
from cnnbench.results import Spec


@pytest.fixture(scope="module")
def fmnist():
    return load_fashion_mnist()


def test_short_training_learns(fmnist):
    # NiN at 72x72 (its smallest workable size, rounded up), Adam: the quick profile's recipe.
    # 2,000 images (measured on one thread: 0.458 test accuracy, 17 s; 3,000 read 0.419 in 25 s;
    # 1,500 only 0.318, too near the bound to hold on another CPU)
    cfg = TrainConfig(
        epochs=2, batch_size=16, optimizer="adam", lr=5e-4, train_subset=2000, test_subset=1000
    )
    r = train.train(Spec("nin", 72, 16, mode="train", threads=torch.get_num_threads()), cfg, fmnist)
    first, second = r.runs[0].epochs
    assert second.train_loss < first.train_loss < math.log(10) + 0.05
    assert r.test_accuracy_mean > 0.3  # chance is 0.1
    assert r.recipe == "modified" and r.train_images == 2000 and r.test_images == 1000
    assert first.images_per_s == pytest.approx(2000 / first.wall_s)


def test_same_seed_same_result_on_cpu(fmnist):
    cfg = TrainConfig(
        epochs=1, batch_size=16, optimizer="adam", lr=5e-4, train_subset=160, test_subset=100
    )
    spec = Spec("googlenet", 28, 16, mode="train", threads=torch.get_num_threads())
    a, b = train.train(spec, cfg, fmnist), train.train(spec, cfg, fmnist)
    assert a.runs[0].epochs[0].train_loss == b.runs[0].epochs[0].train_loss
    assert a.test_accuracy_mean == b.test_accuracy_mean
    other = train.train(spec, TrainConfig(**{**cfg.__dict__, "seeds": (1,)}), fmnist)
    assert other.runs[0].epochs[0].train_loss != a.runs[0].epochs[0].train_loss


def test_several_seeds_summarised(fmnist):
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=5e-4, train_subset=100, test_subset=100,
                      seeds=(0, 1, 2), target_accuracy=0.0)  # fmt: skip
    r = train.train(Spec("googlenet", 28, 16, mode="train"), cfg, fmnist)
    accs = [run.final_test_accuracy for run in r.runs]
    assert r.test_accuracy_mean == pytest.approx(sum(accs) / 3)
    assert r.test_accuracy_min == min(accs) and r.test_accuracy_max == max(accs)
    assert all(run.time_to_target_s == run.epochs[0].wall_s for run in r.runs)


def test_divergence_is_recorded_not_hidden(fmnist):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e6, train_subset=200, test_subset=100)
    r = train.train(Spec("nin", 72, 16, mode="train"), cfg, fmnist)
    assert r.diverged_seeds == (0,)
    assert r.runs[0].diverged and r.runs[0].final_test_accuracy is None
    assert r.test_accuracy_mean is None


def test_chapter_recipe_is_labelled(fmnist):
    # the label depends on the recipe and the input size, not on how much is trained: one full
    # batch of 128 (and a last one of 2) is enough to be the recipe
    cfg = TrainConfig(epochs=1, batch_size=128, train_subset=130, test_subset=100)
    r = train.train(Spec("googlenet", 96, 128, mode="train"), cfg, fmnist)
    assert r.recipe == "d2l" and r.lr == 0.01 and r.optimizer == "sgd" and r.momentum == 0.0


def test_balanced_subset():
    labels = torch.arange(10).repeat(50)
    idx = balanced_subset(labels, 100)
    assert labels[idx].bincount().tolist() == [10] * 10
    assert torch.equal(idx, balanced_subset(labels, 100))
    with pytest.raises(ValueError):
        balanced_subset(labels, 15)


def test_quick_sizes():
    assert [
        train.small_train_size(m) for m in ("alexnet", "vgg11_quarter", "nin", "googlenet")
    ] == [72, 32, 72, 28]


def _patterns(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """28x28 uint8 images: a bright 6x6 patch at a place of the label's own, on noise."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (labels.numel(), 28, 28), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        row, col = divmod(c, 4)
        images[i, 2 + 7 * row : 8 + 7 * row, 2 + 7 * col : 8 + 7 * col] = 250
    return images


def test_test_accuracy_is_scored_on_the_test_images_and_labels(monkeypatch):
    """A data set whose test labels are its classes shifted by one: a model that learned the
    training images scores near 0 on the test set, and near its training accuracy if it were
    scored on training images (or with training labels) instead."""
    from types import SimpleNamespace

    classes = torch.arange(10).repeat(30)  # 300 images, 30 per class
    data = SimpleNamespace(
        train_images=_patterns(classes, 0), train_labels=classes,
        test_images=_patterns(classes, 1), test_labels=(classes + 1) % 10,
    )  # fmt: skip
    monkeypatch.setattr(train.workload, "build_model", lambda spec: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)))  # fmt: skip
    built = []
    real_loader = train.DeviceLoader
    monkeypatch.setattr(train, "DeviceLoader", lambda images, labels, **kw: built.append(
        (images, labels, kw)) or real_loader(images, labels, **kw))  # fmt: skip
    cfg = TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=1e-2, train_subset=300, test_subset=300)
    r = train.train(Spec("nin", 28, 16, mode="train"), cfg, data)
    last = r.runs[0].epochs[-1]
    assert last.train_accuracy > 0.8  # it learned the training images
    assert r.test_accuracy_mean < 0.05  # and is scored against the shifted test labels
    # by content: the evaluation loader holds the test images and labels, the training one not
    (train_x, train_y, _), (test_x, test_y, kw) = built
    assert torch.equal(test_x, data.test_images) and torch.equal(test_y, data.test_labels)
    assert torch.equal(train_x, data.train_images) and not kw.get("shuffle")


# -- the untimed warm-up before epoch 1's clock (issue 23) --------------------------------------


def _tiny(spec):
    """Batch norm (running statistics), dropout (the global RNG): what a warm-up could move."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.5),
        torch.nn.Linear(4, 10),
    )  # fmt: skip


# 40 training images in batches of 16 (a last one of 8), 30 test images in batches of 20 (and 10);
# momentum, so the optimizer has state a warm-up step would leave behind
WARM_CFG = TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, train_subset=40,
                       test_subset=30, eval_batch_size=20)  # fmt: skip
WARM_SPEC = Spec("googlenet", 28, 16, mode="train")


@pytest.fixture
def tiny_models(monkeypatch):
    """Every model a training run builds, kept; and the number of training steps taken."""
    built, steps = [], []
    monkeypatch.setattr(train.workload, "build_model", lambda spec: built.append(_tiny(spec)) or built[-1])
    real_step = train.workload.train_step
    monkeypatch.setattr(train.workload, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    return built, steps


def test_the_warm_up_leaves_the_trained_weights_as_without_it(fmnist, tiny_models, monkeypatch):
    built, steps = tiny_models
    warmed = train.train(WARM_SPEC, WARM_CFG, fmnist)
    warm_steps = len(steps)
    monkeypatch.setattr(train, "_warm_up", lambda *a, **k: train._Warmup((), (), 0.0, None))
    steps.clear()
    cold = train.train(WARM_SPEC, WARM_CFG, fmnist)
    assert warm_steps == len(steps) + 2  # it ran: one step at batch 16, one at 8
    a, b = (m.state_dict() for m in built)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # buffers too
    assert [e.train_loss for e in warmed.runs[0].epochs] == [e.train_loss for e in cold.runs[0].epochs]
    assert warmed.test_accuracy_mean == cold.test_accuracy_mean


def test_the_epoch_clock_excludes_the_warm_up(fmnist, tiny_models, monkeypatch):
    """The first step pays a slow one-off cost (cuDNN autotuning, compilation): made 0.5 s here.
    The warm-up takes it, the epochs' wall time does not hold it."""
    _, steps = tiny_models
    step = train.workload.train_step
    monkeypatch.setattr(train.workload, "train_step",
                        lambda *a, **k: (time.sleep(0.5) if not steps else None) or step(*a, **k))  # fmt: skip
    warmups = []
    real_warm_up = train._warm_up
    monkeypatch.setattr(train, "_warm_up", lambda *a: warmups.append(real_warm_up(*a)) or warmups[-1])
    r = train.train(WARM_SPEC, dataclasses.replace(WARM_CFG, target_accuracy=0.0), fmnist)
    (warm,) = warmups
    assert warm.seconds >= 0.5 and warm.first_step_s >= 0.5
    assert (warm.train_batches, warm.eval_batches) == ((16, 8), (20, 10))
    first = r.runs[0].epochs[0]
    assert first.wall_s < 0.5 and r.runs[0].time_to_target_s == first.wall_s
    if "warmup" in {f.name for f in dataclasses.fields(train.SeedRun)}:
        assert r.runs[0].warmup == warm.as_record()


def test_batch_sizes_an_epoch_yields():
    def loader(n, b, drop_last=False):
        return train.DeviceLoader(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.zeros(n, dtype=torch.long),
                                  batch_size=b, image_size=28, drop_last=drop_last)  # fmt: skip

    assert train._batch_sizes(loader(40, 16)) == (16, 8)
    assert train._batch_sizes(loader(32, 16)) == (16,)
    assert train._batch_sizes(loader(10, 16)) == (10,)
    assert train._batch_sizes(loader(40, 16, drop_last=True)) == (16,)
    for n, b in ((40, 16), (32, 16), (10, 16)):  # the same sizes the loader yields
        assert train._batch_sizes(loader(n, b)) == tuple(dict.fromkeys(len(y) for _, y in loader(n, b)))
