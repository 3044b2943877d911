"""The real Fashion-MNIST (CI installs Debian's dataset-fashion-mnist) and its verification."""

import gzip
import shutil

import pytest
import torch

from cnnbench import data
from cnnbench.data import IDX_FILES, DataCorrupt, DataNotFound, DeviceLoader, load_fashion_mnist

DEBIAN = data.Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fmnist():
    return load_fashion_mnist()


def test_shapes_dtypes_and_label_balance(fmnist):
    assert fmnist.verified
    assert fmnist.train_images.shape == (60000, 28, 28) and fmnist.train_images.dtype == torch.uint8
    assert fmnist.test_images.shape == (10000, 28, 28)
    assert fmnist.train_labels.dtype == torch.int64
    assert fmnist.train_labels.bincount().tolist() == [6000] * 10
    assert fmnist.test_labels.bincount().tolist() == [1000] * 10
    assert 0 < fmnist.train_images.float().mean() < 255


def _copy_raw(tmp_path):
    """The Debian files, decompressed (as torchvision's raw folder holds them)."""
    for spec in IDX_FILES.values():
        with (
            gzip.open(DEBIAN / (spec.stem + ".gz"), "rb") as src,
            open(tmp_path / spec.stem, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    return tmp_path


def test_search_order_and_torchvision_layout(tmp_path, monkeypatch):
    raw = _copy_raw(_mk(tmp_path / "tv" / "FashionMNIST" / "raw"))
    monkeypatch.setenv("CNNBENCH_DATA", str(tmp_path / "tv"))
    loc = data.locate()
    assert loc.root == raw and loc.source == "$CNNBENCH_DATA, torchvision layout"
    assert data.locate(DEBIAN).source == "--data-dir"  # the argument wins over $CNNBENCH_DATA
    assert load_fashion_mnist(tmp_path / "tv").train_labels.bincount().tolist() == [6000] * 10


def _mk(path):
    path.mkdir(parents=True)
    return path


def test_truncated_file_is_named(tmp_path):
    root = _copy_raw(tmp_path)
    target = root / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:5000])
    with pytest.raises(DataCorrupt, match="t10k-labels-idx1-ubyte: truncated"):
        load_fashion_mnist(root)


def test_corrupted_bytes_fail_the_checksum(tmp_path):
    root = _copy_raw(tmp_path)
    target = root / "train-images-idx3-ubyte"
    raw = bytearray(target.read_bytes())
    raw[1_000_000] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DataCorrupt, match="train-images-idx3-ubyte: SHA-256"):
        load_fashion_mnist(root)


def test_wrong_magic_and_bad_gzip(tmp_path):
    root = _copy_raw(tmp_path)
    target = root / "t10k-images-idx3-ubyte"
    raw = bytearray(target.read_bytes())
    raw[3] = 0x01  # 2051 → 2049
    target.write_bytes(bytes(raw))
    with pytest.raises(DataCorrupt, match="wrong IDX magic number 2049"):
        load_fashion_mnist(root)
    target.unlink()
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataCorrupt, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_fashion_mnist(root)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "candidate_dirs", _without_debian(data.candidate_dirs))
    with pytest.raises(DataNotFound) as info:
        data.locate()  # nothing named: the default places, here without Debian's
    message = str(info.value)
    assert str(tmp_path / "cache" / "cnnbench" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "cnnbench data --download" in message
    assert all(spec.stem in message for spec in IDX_FILES.values())


def _without_debian(original):
    return lambda data_dir=None: [(p, w) for p, w in original(data_dir) if "Debian" not in w]


def _assert_names_the_folder(info, folder, problem):
    message = str(info.value)
    assert f"Fashion-MNIST not found in {folder} " in message
    assert problem in message
    assert "the only folder searched" in message
    assert all(spec.stem in message for spec in IDX_FILES.values())
    assert "gzipped or not" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert f"cnnbench data --download {folder}" in message
    assert str(DEBIAN) not in {str(p) for p, _ in info.value.searched}


def test_an_explicit_folder_is_the_only_place_searched(tmp_path, monkeypatch):
    assert data.locate(DEBIAN).root == DEBIAN  # the data is on this machine, just not there
    monkeypatch.setenv("CNNBENCH_DATA", str(DEBIAN))  # nor does $CNNBENCH_DATA stand in for it
    empty = _mk(tmp_path / "empty")
    with pytest.raises(DataNotFound) as info:
        load_fashion_mnist(empty)
    _assert_names_the_folder(info, empty, "holds none of the files")
    assert [p for p, _ in info.value.searched] == [empty, empty / "FashionMNIST" / "raw"]


def test_cnnbench_data_is_the_only_place_searched(tmp_path, monkeypatch):
    empty = _mk(tmp_path / "empty")
    monkeypatch.setenv("CNNBENCH_DATA", str(empty))
    with pytest.raises(DataNotFound) as info:
        load_fashion_mnist()
    _assert_names_the_folder(info, empty, "holds none of the files")
    assert "$CNNBENCH_DATA" in str(info.value)


def test_a_folder_that_does_not_exist_or_is_a_file_or_is_incomplete(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNBENCH_DATA", raising=False)
    with pytest.raises(DataNotFound) as info:
        load_fashion_mnist(tmp_path / "no" / "such")
    _assert_names_the_folder(info, tmp_path / "no" / "such", "does not exist")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataNotFound) as info:
        load_fashion_mnist(tmp_path / "a-file")
    _assert_names_the_folder(info, tmp_path / "a-file", "is not a folder")
    partial = _mk(tmp_path / "partial")
    (partial / "train-images-idx3-ubyte.gz").symlink_to(DEBIAN / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataNotFound) as info:
        load_fashion_mnist(partial)
    _assert_names_the_folder(info, partial, "missing train-labels-idx1-ubyte, t10k-images")


def test_an_explicit_folder_with_the_files_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNBENCH_DATA", str(_mk(tmp_path / "empty")))  # the argument wins
    mine = _mk(tmp_path / "mine")
    for spec in IDX_FILES.values():
        (mine / (spec.stem + ".gz")).symlink_to(DEBIAN / (spec.stem + ".gz"))
    found = load_fashion_mnist(mine)
    assert (found.location.root, found.location.source) == (mine, "--data-dir")
    assert found.verified and found.test_labels.bincount().tolist() == [1000] * 10


def test_device_loader_resizes_scales_and_shuffles_reproducibly(fmnist):
    images, labels = fmnist.test_images[:100], fmnist.test_labels[:100]
    loader = DeviceLoader(images, labels, batch_size=32, image_size=96, shuffle=True, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    x, y = batches[0]
    assert x.shape == (32, 1, 96, 96) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    # every example exactly once per epoch
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(labels.tolist())
    again = list(DeviceLoader(images, labels, batch_size=32, image_size=96, shuffle=True, seed=3))
    assert torch.equal(again[0][0], x)
    # at the native size no resampling happens: pixels are the bytes / 255
    plain = next(iter(DeviceLoader(images, labels, batch_size=8, image_size=28)))[0]
    assert torch.equal(plain[:, 0], images[:8].float() / 255)
