"""Accuracy after short Fashion-MNIST training, the chapter's recipe by default.

The recipe (d2l 8.1-8.4): plain SGD (no momentum, no weight decay), cross-entropy, batch 128,
each model's learning rate from the registry, Xavier init, inputs resized to the model's size
with pixels in [0, 1]. Everything that differs from it is a field of :class:`TrainConfig` and is
recorded with the result, so a report can say exactly what was done.

Per epoch: mean train loss, train accuracy (on the batches as they were trained), test accuracy,
wall time of the training pass (data preparation included: the loader works on the device inside
the loop) and images/s end to end. A NaN or infinite loss ends that seed's run as ``diverged``;
the epochs before it are kept. Several seeds give mean, std, min and max of the final accuracy.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DeviceLoader, FashionMNIST
from ..models import create, get_spec
from ..results import Spec
from ._device import autocast, synchronize

__all__ = [
    "TrainConfig",
    "EpochStats",
    "SeedRun",
    "TrainResult",
    "balanced_subset",
    "evaluate",
    "train",
]

CHECK_EVERY_STEPS = 50  # how often the loss is checked for NaN/inf (a host sync on CUDA)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # the chapter's
    lr: float | None = None  # None: the model's chapter learning rate (registry)
    optimizer: str = "sgd"  # "sgd" (the chapter's) or "adam"
    momentum: float = 0.0  # SGD momentum; 0: the chapter's plain SGD
    train_subset: int | None = None  # class-balanced subset of the 60,000; None: all
    test_subset: int | None = None  # class-balanced subset of the 10,000; None: all
    seeds: tuple[int, ...] = (0,)  # one training run per seed (init and shuffling)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (Szegedy et al. 2016)
    target_accuracy: float | None = None  # report time until test accuracy first reaches it
    eval_batch_size: int = 512


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches, weighted by batch size
    train_accuracy: float  # on the batches as they were trained (dropout on)
    test_accuracy: float
    wall_s: float  # the training pass, data preparation included; evaluation excluded
    eval_s: float
    images_per_s: float  # training images / wall_s


@dataclass(frozen=True)
class SeedRun:
    seed: int
    epochs: tuple[EpochStats, ...]
    diverged: bool  # a NaN or infinite loss ended it
    final_test_accuracy: float | None  # None when it diverged before finishing an epoch
    train_time_s: float  # sum of the epochs' wall_s
    time_to_target_s: float | None  # training time until test accuracy first reached the target
    compile_s: float | None  # first step with torch.compile, compilation included


@dataclass(frozen=True)
class TrainResult:
    spec: Spec  # batch_size is the training batch; mode "train"
    recipe: str  # "d2l" when every recipe field is the chapter's, else "modified"
    epochs: int
    optimizer: str
    lr: float
    momentum: float
    label_smoothing: float
    train_images: int  # images per epoch
    test_images: int
    target_accuracy: float | None
    seeds: tuple[int, ...]
    runs: tuple[SeedRun, ...]
    diverged_seeds: tuple[int, ...]
    test_accuracy_mean: float | None  # over seeds that did not diverge
    test_accuracy_std: float | None  # sample std; 0.0 for one seed
    test_accuracy_min: float | None
    test_accuracy_max: float | None
    train_time_s_mean: float | None
    images_per_s_mean: float | None  # end to end, over every epoch of every seed


def balanced_subset(
    labels: torch.Tensor, n: int | None, *, num_classes: int = 10, seed: int = 1234
):
    """Indices of ``n`` examples, ``n / num_classes`` per class, the same for every run.

    The subset does not depend on the training seed, so seeds differ only in init and order.
    """
    if n is None or n >= labels.numel():
        return torch.arange(labels.numel())
    if n % num_classes:
        raise ValueError(f"subset size {n} is not a multiple of {num_classes} classes")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[: n // num_classes]])
    return torch.cat(picks).sort().values


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, dtype: str = "fp32") -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=loader.device)
    for x, y in loader:
        with autocast(loader.device, dtype):
            correct += (model(x).argmax(dim=1) == y).sum()
    return correct.item() / loader.num_images


def _train_seed(
    spec: Spec, cfg: TrainConfig, lr: float, data: FashionMNIST, train_idx, test_idx, seed
):
    device = torch.device(spec.device)
    torch.manual_seed(seed)
    fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = create(spec.model, image_size=spec.image_size).to(device=device, memory_format=fmt)
    run = torch.compile(model) if spec.compiled else model
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    common = dict(image_size=spec.image_size, device=device, channels_last=spec.channels_last)
    train_loader = DeviceLoader(
        data.train_images[train_idx], data.train_labels[train_idx],
        batch_size=cfg.batch_size, shuffle=True, seed=seed, **common,
    )  # fmt: skip
    test_loader = DeviceLoader(
        data.test_images[test_idx],
        data.test_labels[test_idx],
        batch_size=cfg.eval_batch_size,
        **common,
    )
    epochs: list[EpochStats] = []
    diverged = False
    compile_s = None
    elapsed = 0.0
    to_target = None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        synchronize(device)
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(train_loader):
            with autocast(device, spec.dtype):
                out = run(x)
                loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if compile_s is None and spec.compiled:
                synchronize(device)
                compile_s = time.perf_counter() - t0
            loss_sum += loss.detach() * y.numel()
            correct += (out.argmax(dim=1) == y).sum()
            seen += y.numel()
            if step % CHECK_EVERY_STEPS == 0 and not math.isfinite(loss.item()):
                diverged = True
                break
        synchronize(device)
        wall = time.perf_counter() - t0
        mean_loss = loss_sum.item() / max(seen, 1)
        if diverged or not math.isfinite(mean_loss):
            diverged = True
            break
        t1 = time.perf_counter()
        test_acc = evaluate(run, test_loader, spec.dtype)
        eval_s = time.perf_counter() - t1
        elapsed += wall
        epochs.append(
            EpochStats(epoch, mean_loss, correct.item() / seen, test_acc, wall, eval_s, seen / wall)
        )
        if (
            to_target is None
            and cfg.target_accuracy is not None
            and test_acc >= cfg.target_accuracy
        ):
            to_target = elapsed
    return SeedRun(
        seed=seed,
        epochs=tuple(epochs),
        diverged=diverged,
        final_test_accuracy=None if diverged or not epochs else epochs[-1].test_accuracy,
        train_time_s=sum(e.wall_s for e in epochs),
        time_to_target_s=to_target,
        compile_s=compile_s,
    )


def train(spec: Spec, cfg: TrainConfig, data: FashionMNIST) -> TrainResult:
    """Train ``spec.model`` once per seed; ``spec.batch_size`` must equal ``cfg.batch_size``."""
    if spec.batch_size != cfg.batch_size:
        raise ValueError("spec.batch_size must be the training batch size")
    model_spec = get_spec(spec.model)
    lr = cfg.lr if cfg.lr is not None else model_spec.lr
    if lr is None:
        raise ValueError(f"'{spec.model}' has no chapter learning rate; pass one")
    train_idx = balanced_subset(data.train_labels, cfg.train_subset)
    test_idx = balanced_subset(data.test_labels, cfg.test_subset)
    runs = tuple(_train_seed(spec, cfg, lr, data, train_idx, test_idx, s) for s in cfg.seeds)
    finished = [r.final_test_accuracy for r in runs if r.final_test_accuracy is not None]
    all_epochs = [e for r in runs for e in r.epochs]
    chapter = (
        cfg.batch_size == 128 and cfg.lr in (None, model_spec.lr) and cfg.momentum == 0.0
        and cfg.optimizer == "sgd"
        and cfg.label_smoothing == 0.0 and spec.image_size == model_spec.input_size
        and spec.dtype == "fp32"
    )  # fmt: skip
    return TrainResult(
        spec=spec,
        recipe="d2l" if chapter else "modified",
        epochs=cfg.epochs,
        optimizer=cfg.optimizer,
        lr=lr,
        momentum=cfg.momentum,
        label_smoothing=cfg.label_smoothing,
        train_images=int(train_idx.numel()),
        test_images=int(test_idx.numel()),
        target_accuracy=cfg.target_accuracy,
        seeds=tuple(cfg.seeds),
        runs=runs,
        diverged_seeds=tuple(r.seed for r in runs if r.diverged),
        test_accuracy_mean=statistics.fmean(finished) if finished else None,
        test_accuracy_std=(statistics.stdev(finished) if len(finished) > 1 else 0.0)
        if finished
        else None,
        test_accuracy_min=min(finished) if finished else None,
        test_accuracy_max=max(finished) if finished else None,
        train_time_s_mean=statistics.fmean(r.train_time_s for r in runs) if runs else None,
        images_per_s_mean=statistics.fmean(e.images_per_s for e in all_epochs)
        if all_epochs
        else None,
    )


def small_train_size(name: str) -> int:
    """The ``quick`` profile's training size: the smallest size the model runs on, rounded up to
    a multiple of 8, and never below Fashion-MNIST's native 28 (AlexNet 72, VGG 32, NiN 72,
    GoogLeNet 28)."""
    from .shapes import min_input_size

    smallest = min_input_size(name).min_size
    return max(28, -(-smallest // 8) * 8)
