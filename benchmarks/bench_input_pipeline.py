"""The chapter's input pipeline against cnnbench's device-resident loader, same model, same device.

d2l-style: torchvision ``FashionMNIST`` + ``transforms.Resize`` + ``ToTensor`` + ``DataLoader``
(batch 128, shuffled, worker processes as d2l's ``FashionMNIST`` uses them), each batch copied to
the device. cnnbench: the uint8 set on the device, ``randperm`` + bilinear ``F.interpolate`` there.
Both feed the same GoogLeNet at 96x96 through SGD training steps; images/s is end to end, data
included, over a slice of an epoch. On the CPU cnnbench's must not be slower (the model dominates,
and DataLoader workers compete with it for the cores); on a GPU it should be several times faster.
"""

from __future__ import annotations

import gzip
import shutil
import time

import pytest
import torch

from cnnbench.data import IDX_FILES, DeviceLoader, load_fashion_mnist
from cnnbench.measure import workload
from cnnbench.measure._device import synchronize
from cnnbench.results import Spec

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


def test_cnnbench_loader_not_slower_on_cpu(benchmark, device, raw_root):
    """CPU: the two pipelines alternate (d2l, cnnbench, three times each, two-batch slices) so
    that a noisy moment on a shared 2-core machine hits both; the best slice of each is compared."""
    if device.type != "cpu":
        pytest.skip("the GPU rows above are the measurement there")

    def alternate():
        rates = {"d2l": [], "cnnbench": []}
        for _ in range(3):
            rates["d2l"].append(train_slice(d2l_batches(raw_root, device), device, 2))
            rates["cnnbench"].append(train_slice(cnnbench_batches(device, False), device, 2))
        return rates

    rates = benchmark.pedantic(alternate, rounds=1, iterations=1)
    best = {k: max(v) for k, v in rates.items()}
    benchmark.extra_info.update(
        model="googlenet", input_size=IMAGE_SIZE, batch=BATCH, device="cpu", dtype="fp32",
        threads=torch.get_num_threads(), d2l_images_per_s=rates["d2l"],
        cnnbench_images_per_s=rates["cnnbench"], speedup_vs_d2l=best["cnnbench"] / best["d2l"],
    )  # fmt: skip
    assert best["cnnbench"] >= 0.97 * best["d2l"], rates  # not slower, within timing noise
