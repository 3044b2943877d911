"""Accuracy after short Fashion-MNIST training, the chapter's recipe by default.

The recipe (d2l 8.1-8.4): plain SGD (no momentum, no weight decay), cross-entropy, batch 128,
each model's learning rate from the registry, Xavier init, inputs resized to the model's size
with pixels in [0, 1]. Everything that differs from it is a field of :class:`TrainConfig` and is
recorded with the result, so a report can say exactly what was done.

Per epoch: mean train loss, train accuracy (on the batches as they were trained), test accuracy,
wall time of the training pass (data preparation included: the loader works on the device inside
the loop) and images/s end to end. With a target accuracy, two clocks per seed: training passes
only up to the first epoch at the target (``time_to_target_s``), and MLPerf Training's
run_start→run_stop (``mlperf_time_to_target_s``): from the start of epoch 1's pass to the end of
the evaluation that first reaches the target, every pass and every evaluation inside, with the
epochs it took. Before epoch 1's clock starts, one untimed warm-up step per batch shape
(:func:`_warm_up`) takes cuDNN's autotuning and torch.compile's compilation out of the epochs'
time, and out of both clocks; it leaves the trained weights and the data order as they would be
without it. A NaN or infinite loss ends that seed's run as ``diverged``;
the epochs before it are kept. Several seeds give mean, std, min and max of the final accuracy.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..config import OPTIONS, RunConfig, TrainConfig
from ..data import DataNotFound, DeviceLoader, FashionMNIST, load_fashion_mnist
from ..models import create, get_spec
from ..results import Spec
from ..results.types import CurvePoint, EpochStats, Optimizer, SeedRun, TrainResult
from . import workload
from ._device import synchronize

__all__ = [
    "TrainConfig",
    "EpochStats",
    "SeedRun",
    "TrainResult",
    "Unsupported",
    "balanced_subset",
    "config_for",
    "evaluate",
    "image_size_for",
    "learning_rate",
    "measure_unit",
    "optimizer_for",
    "small_train_size",
    "trained_cost",
    "train",
]

CHECK_EVERY_STEPS = 50  # how often the loss is checked for NaN/inf (a host sync on CUDA)


CURVE_POINTS_PER_EPOCH = 20  # training-curve points per epoch (one host sync each)


@dataclass(frozen=True)
class _Piece:
    """Loss and correct predictions summed on the device since the last curve point."""

    loss: torch.Tensor
    correct: torch.Tensor
    images: int

    @classmethod
    def empty(cls, device) -> _Piece:
        zero = torch.zeros((), device=device)
        return cls(zero, torch.zeros((), dtype=torch.long, device=device), 0)

    def add(self, loss: torch.Tensor, correct: torch.Tensor, images: int) -> _Piece:
        return _Piece(self.loss + loss, self.correct + correct, self.images + images)

    def point(self, step: int, images: int) -> CurvePoint:
        n = max(self.images, 1)
        return CurvePoint(step, images, self.loss.item() / n, self.correct.item() / n)


class Unsupported(Exception):
    """The measurement cannot run as configured (no data, no learning rate): an ``unsupported``
    record with this reason."""


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
        with workload.autocast(loader.device, dtype):
            correct += (model(x).argmax(dim=1) == y).sum()
    return correct.item() / loader.num_images


def _loaders(spec: Spec, cfg: TrainConfig, data: FashionMNIST, train_idx, test_idx, seed):
    """The training loader (shuffled by ``seed``) and the test loader, both on the device."""
    common = dict(image_size=spec.image_size, device=torch.device(spec.device),
                  channels_last=spec.channels_last)  # fmt: skip
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
    return train_loader, test_loader


@dataclass
class _Progress:
    """One seed's training so far, across epochs: steps and images done, the training curve and
    its open piece."""

    device: torch.device
    every: int  # steps per curve point
    curve: list[CurvePoint]
    piece: _Piece
    steps: int = 0
    images: int = 0


@dataclass(frozen=True)
class _Pass:
    """One epoch's training pass: summed loss and correct predictions (on the device), images,
    wall seconds, and whether a checked loss was NaN or infinite."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    images: int
    wall_s: float
    diverged: bool

    @property
    def mean_loss(self) -> float:
        return self.loss_sum.item() / max(self.images, 1)


def _train_pass(run, opt, scaler, loader: DeviceLoader, spec: Spec, cfg: TrainConfig,
                done: _Progress) -> _Pass:  # fmt: skip
    """One epoch over ``loader``; ``done`` gains its steps, images and curve points."""
    device = done.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    diverged = False
    synchronize(device)
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        loss, out = workload.train_step(
            run, opt, x, y, dtype=spec.dtype, label_smoothing=cfg.label_smoothing, scaler=scaler,
        )  # fmt: skip
        step_loss = loss.detach() * y.numel()
        step_correct = (out.argmax(dim=1) == y).sum()
        loss_sum += step_loss
        correct += step_correct
        seen += y.numel()
        done.piece = done.piece.add(step_loss, step_correct, y.numel())
        done.steps += 1
        if done.steps % done.every == 0 or step == len(loader) - 1:
            done.curve.append(done.piece.point(done.steps, done.images + seen))
            done.piece = _Piece.empty(device)
        if step % CHECK_EVERY_STEPS == 0 and not math.isfinite(loss.item()):
            diverged = True
            break
    done.images += seen
    synchronize(device)
    return _Pass(loss_sum, correct, seen, time.perf_counter() - t0, diverged)


@dataclass(frozen=True)
class _Warmup:
    """What ran before epoch 1's clock: batch sizes warmed, and their untimed wall seconds."""

    train_batches: tuple[int, ...]  # one training step at each (full batch, a smaller last one)
    eval_batches: tuple[int, ...]  # one evaluation forward at each
    seconds: float  # all of it, never in an epoch's wall_s
    first_step_s: float | None  # the first training step alone (compilation, with torch.compile)

    def as_record(self) -> dict:
        return {"train_batches": list(self.train_batches), "eval_batches": list(self.eval_batches),
                "s": self.seconds, "state": "restored"}  # fmt: skip


def _batch_sizes(loader: DeviceLoader) -> tuple[int, ...]:
    """The batch sizes an epoch over ``loader`` yields: the full batch and a smaller last one."""
    n, b = loader.images.shape[0], loader.batch_size
    if n <= b:
        return (n,) if n == b or not loader.drop_last else ()
    return (b, n % b) if n % b and not loader.drop_last else (b,)


def _first_images(loader: DeviceLoader, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images prepared as ``loader`` prepares them (size, dtype, memory format), by a
    loader of their own: ``loader``'s shuffling generator is not drawn from."""
    one = type(loader)(loader.images[:size], loader.labels[:size], batch_size=size,
                       image_size=loader.image_size, device=loader.device,
                       channels_last=loader.channels_last)  # fmt: skip
    return next(iter(one))


def _warm_up(run, model: nn.Module, opt, spec: Spec, cfg: TrainConfig,
             loaders: tuple[DeviceLoader, DeviceLoader]) -> _Warmup:  # fmt: skip
    """One training step per training batch shape and one evaluation forward per evaluation
    shape, untimed, then every state they touched put back.

    They run on the very model, compiled wrapper and optimizer that the epochs use, so that
    whatever the caches are keyed on (cuDNN's autotuner: shape, dtype, layout; Dynamo: code,
    class, shapes, and whatever else its guards check) is exactly what the epochs look up; a
    copy would rest on Dynamo guarding nothing about the instance. A learning rate of 0 would
    not undo the steps: batch norm's running statistics, momentum and Adam's moments, and
    dropout's draws from the global RNG all move without it. So weights and buffers, the
    optimizer's state, gradients and the global RNG are saved and restored; fp16 gets a scaler
    of its own (the run's loss scale stays untouched); the data order is the loader's own
    generator, not drawn from here. Dynamo's counters include the warm-up's compilations."""
    device = torch.device(spec.device)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())
    train_loader, test_loader = loaders
    rng = []  # the devices whose RNG fork_rng saves besides the CPU's
    if device.type == "cuda":
        rng = [torch.cuda.current_device() if device.index is None else device.index]
    synchronize(device)
    t0 = time.perf_counter()
    first_s = None
    with torch.random.fork_rng(devices=rng, device_type=device.type):
        model.train()
        for size in _batch_sizes(train_loader):
            x, y = _first_images(train_loader, size)
            workload.train_step(run, opt, x, y, dtype=spec.dtype, label_smoothing=cfg.label_smoothing,
                                scaler=workload.grad_scaler(device, spec.dtype))  # fmt: skip
            if first_s is None:
                synchronize(device)
                first_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad(), workload.autocast(device, spec.dtype):
            for size in _batch_sizes(test_loader):
                run(_first_images(test_loader, size)[0])
        synchronize(device)
    seconds = time.perf_counter() - t0
    model.load_state_dict(weights)
    opt.load_state_dict(opt_state)
    opt.zero_grad(set_to_none=True)
    return _Warmup(_batch_sizes(train_loader), _batch_sizes(test_loader), seconds, first_s)


def _train_seed(
    spec: Spec, cfg: TrainConfig, lr: float, data: FashionMNIST, train_idx, test_idx, seed
):
    device = torch.device(spec.device)
    torch.manual_seed(seed)
    model = workload.build_model(spec)
    run = workload.compiled(model) if spec.compiled else model
    opt = workload.make_optimizer(model.parameters(), cfg.optimizer, lr, cfg.momentum)
    scaler = workload.grad_scaler(device, spec.dtype)  # fp16: loss scaling, else None
    train_loader, test_loader = _loaders(spec, cfg, data, train_idx, test_idx, seed)
    warm = _warm_up(run, model, opt, spec, cfg, (train_loader, test_loader))
    done = _Progress(device, max(1, len(train_loader) // CURVE_POINTS_PER_EPOCH), [],
                     _Piece.empty(device))  # fmt: skip
    epochs: list[EpochStats] = []
    diverged = False
    elapsed = 0.0
    to_target = None
    mlperf = (None, None)  # (seconds, epochs) from run_start to the evaluation that reached it
    synchronize(device)
    run_start = time.perf_counter()  # MLPerf's run_start: after the untimed warm-up, as its init
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        p = _train_pass(run, opt, scaler, train_loader, spec, cfg, done)
        if p.diverged or not math.isfinite(p.mean_loss):
            diverged = True
            break
        t1 = time.perf_counter()
        test_acc = evaluate(run, test_loader, spec.dtype)
        eval_s = time.perf_counter() - t1
        elapsed += p.wall_s
        epochs.append(EpochStats(epoch, p.mean_loss, p.correct.item() / p.images, test_acc,
                                 p.wall_s, eval_s, p.images / p.wall_s))  # fmt: skip
        target = cfg.target_accuracy
        if to_target is None and target is not None and test_acc >= target:
            to_target = elapsed
            # run_stop: the end of this evaluation; every pass and evaluation before it counts
            mlperf = (time.perf_counter() - run_start, epoch)
    return SeedRun(
        seed=seed,
        epochs=tuple(epochs),
        diverged=diverged,
        final_test_accuracy=None if diverged or not epochs else epochs[-1].test_accuracy,
        train_time_s=sum(e.wall_s for e in epochs),
        time_to_target_s=to_target,
        mlperf_time_to_target_s=mlperf[0],
        epochs_to_target=mlperf[1],
        # the first step, compilation included: the warm-up's, outside the epochs' clock
        compile_s=warm.first_step_s if spec.compiled else None,
        curve=tuple(p for p in done.curve if math.isfinite(p.train_loss)),
        # a partial last batch and the evaluation batch each compile a graph of their own
        dynamo=workload.dynamo_counters() if spec.compiled else None,
        warmup=warm.as_record(),
    )


def chapter_recipe_differences(model: str, **setting) -> tuple[str, ...]:
    """The settings of a training that are not the chapter's recipe for ``model`` (d2l 8.1-8.4:
    plain SGD at the model's learning rate, no momentum, no label smoothing, batch 128, the
    model's own input, fp32), by name; () for the chapter's own. ``setting`` holds batch_size,
    optimizer, lr, momentum, label_smoothing, image_size and dtype; one left out is not judged
    (the GPU acceptance trains in bf16 and leaves the dtype out)."""
    spec = get_spec(model)
    chapter = {"batch_size": 128, "optimizer": "sgd", "lr": spec.lr, "momentum": 0.0,
               "label_smoothing": 0.0, "image_size": spec.input_size, "dtype": "fp32"}  # fmt: skip
    return tuple(k for k, want in chapter.items() if k in setting and setting[k] != want)


def train(spec: Spec, cfg: TrainConfig, data: FashionMNIST) -> TrainResult:
    """Train ``spec.model`` once per seed at :func:`learning_rate`; ``spec.batch_size`` must equal
    ``cfg.batch_size``."""
    if spec.batch_size != cfg.batch_size:
        raise ValueError("spec.batch_size must be the training batch size")
    lr = learning_rate(cfg, spec.model)
    train_idx = balanced_subset(data.train_labels, cfg.train_subset)
    test_idx = balanced_subset(data.test_labels, cfg.test_subset)
    runs = tuple(_train_seed(spec, cfg, lr, data, train_idx, test_idx, s) for s in cfg.seeds)
    finished = [r.final_test_accuracy for r in runs if r.final_test_accuracy is not None]
    all_epochs = [e for r in runs for e in r.epochs]
    differs = chapter_recipe_differences(
        spec.model, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=lr,
        momentum=cfg.momentum, label_smoothing=cfg.label_smoothing, image_size=spec.image_size,
        dtype=spec.dtype,
    )  # fmt: skip
    return TrainResult(
        recipe="modified" if differs else "d2l",
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


def config_for(config: RunConfig, model: str) -> TrainConfig:
    """The run's training options for ``model``: a variant's own options (``googlenet_ls``'s
    label smoothing) apply unless the run overrides the same option."""
    ours = {OPTIONS[name].field for name in config.overrides if OPTIONS[name].section == "train"}
    variant = {k: v for k, v in get_spec(model).train_overrides.items() if k not in ours}
    return dataclasses.replace(config.train, **variant)


def learning_rate(cfg: TrainConfig, model: str) -> float:
    """The one rule for the learning rate ``model`` trains with: ``cfg.lr`` where the run (its
    ``--lr`` or its profile) sets one, else the model's chapter learning rate (``ModelSpec.lr``,
    d2l 8.1-8.4), else :class:`Unsupported`.

    A model the chapter never trains (the torchvision references, a plugin registered without
    ``lr``) gets no made-up rate: a learning rate decides what accuracy is reached, and a record
    must not carry a recipe that nobody chose (0.01 would even read as the chapter's own). Its
    training, and the training step's time and memory, which name their optimizer, are recorded
    as ``unsupported`` with this reason until the run sets ``train.lr``."""
    if cfg.lr is not None:
        return cfg.lr
    chapter = get_spec(model).lr
    if chapter is None:
        raise Unsupported(f"'{model}' has no chapter learning rate to train with; set one "
                          f"(train.lr, {OPTIONS['lr'].flag})")  # fmt: skip
    return chapter


def optimizer_for(config: RunConfig, model: str) -> Optimizer:
    """The optimizer ``model`` trains with in this run (:func:`learning_rate`): what the accuracy
    uses, and what the timed training step and its memory use too."""
    cfg = config_for(config, model)
    lr = learning_rate(cfg, model)
    return Optimizer(cfg.optimizer, lr, cfg.momentum if cfg.optimizer == "sgd" else 0.0)


def image_size_for(config: RunConfig, model: str) -> int:
    """The side ``model`` trains at: --train-image-size, else --image-size, else the profile's
    resolution ("small": :func:`small_train_size`; "chapter": the model's own size)."""
    if config.train.image_size:
        return config.train.image_size
    if config.workload.image_size:
        return config.workload.image_size
    if config.train.resolution == "small":
        try:
            return small_train_size(model)
        except ValueError:
            pass  # runs on no size we tried: train at its own size and let that unit fail there
    return get_spec(model).input_size


def measure_unit(spec: Spec, ctx) -> TrainResult:
    """The harness entry: the run's data and training options; no data is ``Unsupported``."""
    try:
        data = load_fashion_mnist(ctx.config.data_dir)
    except DataNotFound as exc:
        raise Unsupported(str(exc)) from None
    cost = trained_cost(spec)  # first: a failure here must not cost a training run
    result = train(spec, config_for(ctx.config, spec.model), data)
    return dataclasses.replace(
        result, data_dir=str(data.location.root), data_verified=data.verified, **cost
    )


def trained_cost(spec: Spec) -> dict[str, int]:
    """Parameters, MACs and training-step FLOPs per image of the network as trained (at its
    training size, its head sized for it): what an accuracy is paired with."""
    from .flops import count_macs, example_input, train_step_flops

    model = create(spec.model, image_size=spec.image_size)
    one = dataclasses.replace(spec, batch_size=1)
    # the step is counted at batch 2 and halved (FLOPs are linear in the batch): batch norm in
    # training mode needs more than one value per channel, and a 1x1 map at batch 1 has one
    two = dataclasses.replace(spec, batch_size=2)
    return dict(
        trained_params=sum(p.numel() for p in model.parameters()),
        trained_macs=count_macs(model, one),
        trained_step_flops=train_step_flops(model.train(), example_input(two)) // 2,
    )
