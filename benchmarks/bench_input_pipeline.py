"""The chapter's input pipeline against cnnbench's device-resident loader, same model, same device.

d2l-style: torchvision ``FashionMNIST`` + ``transforms.Resize`` + ``ToTensor`` + ``DataLoader``
(batch 128, shuffled, worker processes as d2l's ``FashionMNIST`` uses them), each batch copied to
the device. cnnbench: the uint8 set on the device, ``randperm`` + bilinear ``F.interpolate`` there.
Both feed the same GoogLeNet at 96x96 through SGD training steps; images/s is end to end, data
included, over a slice of an epoch. On a GPU cnnbench's should be several times faster. On the CPU
the model dominates end to end, so the loaders are also timed alone: cnnbench's must be faster
there, and end to end not grossly slower (see ``GROSS_SLOWDOWN_RATIO``).
"""

from __future__ import annotations

import gzip
import math
import shutil
import statistics
import time

import pytest
import torch

from cnnbench.data import IDX_FILES, DeviceLoader, load_fashion_mnist
from cnnbench.measure import workload
from cnnbench.measure._device import synchronize
from cnnbench.results import Spec

pytestmark = pytest.mark.serial  # timed, and compared across slices: the machine to itself

IMAGE_SIZE = 96
BATCH = 128
RESULTS: dict[str, float] = {}


def slice_batches(device: torch.device) -> int:
    return 3 if device.type == "cpu" else 100


def torchvision_layout(root):
    """torchvision's layout (<root>/FashionMNIST/raw, decompressed) from the located files; the
    GPU acceptance script calls it too (a fixture cannot be called outside pytest)."""
    loc = load_fashion_mnist().location
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, spec in IDX_FILES.items():
        src = loc.files[key]
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rb") as f, open(raw / spec.stem, "wb") as out:
            shutil.copyfileobj(f, out)
    return root


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    return torchvision_layout(tmp_path_factory.mktemp("tv"))


def d2l_batches(root, device):
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor()])
    ds = datasets.FashionMNIST(root=str(root), train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2)
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def cnnbench_batches(device, channels_last):
    data = load_fashion_mnist()
    loader = DeviceLoader(
        data.train_images, data.train_labels, batch_size=BATCH, image_size=IMAGE_SIZE,
        device=device, shuffle=True, seed=0, channels_last=channels_last,
    )  # fmt: skip
    yield from loader


def train_slice(batches, device, n_batches, dtype="fp32", channels_last=False) -> float:
    """Images/s over ``n_batches`` SGD steps after one untimed warm-up step, data included."""
    torch.manual_seed(0)
    spec = Spec("googlenet", IMAGE_SIZE, BATCH, device=str(device), dtype=dtype,
                channels_last=channels_last, mode="train")  # fmt: skip
    model = workload.build_model(spec).train()
    opt = workload.make_optimizer(model.parameters(), "sgd", lr=0.01)

    def step(x, y):
        workload.train_step(model, opt, x, y, dtype=dtype)

    it = iter(batches)
    step(*next(it))  # warm-up: allocator, oneDNN/cuDNN, DataLoader workers start
    synchronize(device)
    t0 = time.perf_counter()
    seen = 0
    for _ in range(n_batches):
        x, y = next(it)
        step(x, y)
        seen += y.numel()
    synchronize(device)
    return seen / (time.perf_counter() - t0)


VARIANTS = [
    pytest.param("d2l", "fp32", False, id="d2l-fp32"),
    pytest.param("cnnbench", "fp32", False, id="cnnbench-fp32"),
    pytest.param("cnnbench", "bf16", True, id="cnnbench-bf16-channels_last"),
]


@pytest.mark.parametrize("pipeline,dtype,channels_last", VARIANTS)
def test_input_pipeline_end_to_end(benchmark, device, raw_root, pipeline, dtype, channels_last):
    """One row per pipeline on a GPU (the aim there: cnnbench several times the d2l pipeline)."""
    if device.type == "cpu":
        pytest.skip("on CPU the alternating comparison below is the measurement")
    n = slice_batches(device)

    def run():
        batches = (
            d2l_batches(raw_root, device)
            if pipeline == "d2l"
            else cnnbench_batches(device, channels_last)
        )
        return train_slice(batches, device, n, dtype, channels_last)

    images_per_s = benchmark.pedantic(run, rounds=1, iterations=1)
    RESULTS[f"{pipeline}-{dtype}{'-channels_last' if channels_last else ''}"] = images_per_s
    benchmark.extra_info.update(
        model="googlenet", input_size=IMAGE_SIZE, batch=BATCH, device=str(device), dtype=dtype,
        channels_last=channels_last, threads=torch.get_num_threads(), images_per_s=images_per_s,
        batches=n, pipeline=pipeline,
    )  # fmt: skip
    if pipeline == "cnnbench" and "d2l-fp32" in RESULTS:
        benchmark.extra_info["speedup_vs_d2l_fp32"] = images_per_s / RESULTS["d2l-fp32"]


def loader_slice(batches, min_batches=10, min_time_s=0.5, warmup_batches=5) -> float:
    """Images/s of making batches with no model: at least ``min_batches`` and ``min_time_s`` (a
    stall of a noisy machine then weighs little), after ``warmup_batches`` untimed ones (the
    DataLoader's workers start and its prefetch queue, filled meanwhile, is drained; cnnbench's
    loader reads the set)."""
    it = iter(batches)
    for _ in range(warmup_batches):
        next(it)
    t0 = time.perf_counter()
    seen = made = 0
    for _, y in it:  # a fast machine may reach the epoch's end (469 batches) first: rate so far
        seen += y.numel()
        made += 1
        if made >= min_batches and time.perf_counter() - t0 >= min_time_s:
            break
    return seen / (time.perf_counter() - t0)


def alternate(measure, repeats=3) -> dict[str, list[float]]:
    """d2l, cnnbench, d2l, ... so that a noisy moment on a shared machine hits both."""
    rates: dict[str, list[float]] = {"d2l": [], "cnnbench": []}
    for _ in range(repeats):
        for name in rates:
            rates[name].append(measure(name))
    return rates


# End to end, a GoogLeNet step on 2 cores takes seconds and either loader's share of it is under
# 1% (loader_share_of_step in extra_info: cnnbench 0.06-0.1%, d2l 0.5-0.7% on 2 Zen 4 cores),
# while two-batch slices of one pipeline ranged from 58.4 to 68.4 images/s in one run there, and
# CI once saw the best cnnbench slice 6.3% below the best d2l slice. Three slices each cannot
# resolve the loader end to end, so there only a gross slowdown is called: every cnnbench slice
# below every d2l slice, and the median paired ratio below this.
GROSS_SLOWDOWN_RATIO = 0.85


def test_cnnbench_loader_not_slower_on_cpu(benchmark, device, raw_root):
    """CPU, two measurements, each alternating the pipelines three times:

    1. the loaders alone, half a second each: what differs between the two pipelines. cnnbench's
       (one batched ``F.interpolate`` in the training process) must be faster than the d2l-style
       DataLoader (per-image PIL resize in 2 worker processes) outside the noise: its slowest
       slice above d2l's fastest;
    2. end to end, GoogLeNet SGD steps with data, two-batch slices: reported, and a failure only
       for a gross slowdown (``GROSS_SLOWDOWN_RATIO``), since the model dominates there.
    """
    if device.type != "cpu":
        pytest.skip("the GPU rows above are the measurement there")

    def batches(name):
        return d2l_batches(raw_root, device) if name == "d2l" else cnnbench_batches(device, False)

    def both():
        loader = alternate(lambda name: loader_slice(batches(name)))
        end_to_end = alternate(lambda name: train_slice(batches(name), device, 2))
        return loader, end_to_end

    loader, end_to_end = benchmark.pedantic(both, rounds=1, iterations=1)
    ratios = [c / d for c, d in zip(end_to_end["cnnbench"], end_to_end["d2l"])]
    median_ratio = statistics.median(ratios)
    # images/s end to end over images/s of the loader alone: the loader's wall time per batch
    # over a training step's (d2l's with its 2 worker processes, so in one process it would
    # take up to twice that; there they run beside the step instead)
    share = {k: statistics.median(end_to_end[k]) / statistics.median(loader[k]) for k in loader}
    benchmark.extra_info.update(
        model="googlenet", input_size=IMAGE_SIZE, batch=BATCH, device="cpu", dtype="fp32",
        threads=torch.get_num_threads(),
        d2l_loader_images_per_s=loader["d2l"], cnnbench_loader_images_per_s=loader["cnnbench"],
        d2l_images_per_s=end_to_end["d2l"], cnnbench_images_per_s=end_to_end["cnnbench"],
        paired_ratios=ratios, median_paired_ratio=median_ratio, loader_share_of_step=share,
    )  # fmt: skip
    for rates in (*loader.values(), *end_to_end.values()):
        assert all(math.isfinite(r) and r > 0 for r in rates), (loader, end_to_end)
    assert min(loader["cnnbench"]) > max(loader["d2l"]), loader
    assert share["cnnbench"] < 0.01, share  # the premise of judging end to end only grossly
    below_every_d2l_slice = max(end_to_end["cnnbench"]) < min(end_to_end["d2l"])
    assert not (below_every_d2l_slice and median_ratio < GROSS_SLOWDOWN_RATIO), end_to_end
