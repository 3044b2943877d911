"""Fashion-MNIST: find the real files, verify them, read them, and feed them from the device.

A folder that is *named* is the only place looked: the ``data_dir`` argument (``--data-dir``)
or, when no argument is given, ``$CNNBENCH_DATA``. If it does not hold the four files (or does
not exist), :class:`DataNotFound` names it; there is no falling back to some other copy, so a
typo in a path never silently measures other data. Only when nothing is named is the data
searched for, in order:

1. the user cache, ``~/.cache/cnnbench/fashion-mnist`` (where ``cnnbench data --download`` puts it);
2. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``dataset-fashion-mnist``).

Every folder, named or searched, may also hold torchvision's layout, ``<dir>/FashionMNIST/raw``.
Files may be gzipped or not. Verification is of the *decompressed* bytes — size, IDX magic
number, dimensions and SHA-256 — because the ``.gz`` files differ between sources (Debian
rewrote their gzip headers) while their content does not. Random data never stands in for the
real set.

The loader keeps the whole uint8 set on the device (47 MB for the training images) and makes
each batch there: ``randperm`` shuffling, bilinear ``F.interpolate`` to the model's size and
scaling to [0, 1], as the chapter's ``Resize`` + ``ToTensor`` do, with no per-sample Python and no
DataLoader workers.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "IDX_FILES",
    "DataNotFound",
    "DataCorrupt",
    "DataLocation",
    "FashionMNIST",
    "CLASSES",
    "GET_DATA",
    "candidate_dirs",
    "named_dir",
    "locate",
    "read_idx",
    "load_fashion_mnist",
    "download",
    "DeviceLoader",
]

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

GET_DATA = "sudo apt-get install dataset-fashion-mnist   (or: cnnbench data --download)"


@dataclass(frozen=True)
class IdxFile:
    stem: str  # file name without .gz
    magic: int  # 2051 for images, 2049 for labels (big-endian int32)
    shape: tuple[int, ...]  # dimensions stored in the header
    nbytes: int  # decompressed size: header + data
    sha256: str  # of the decompressed bytes, computed from the real files

    @property
    def header_bytes(self) -> int:
        return 4 + 4 * len(self.shape)


IDX_FILES: dict[str, IdxFile] = {
    "train_images": IdxFile(
        "train-images-idx3-ubyte", 2051, (60000, 28, 28), 47040016,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train_labels": IdxFile(
        "train-labels-idx1-ubyte", 2049, (60000,), 60008,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "test_images": IdxFile(
        "t10k-images-idx3-ubyte", 2051, (10000, 28, 28), 7840016,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "test_labels": IdxFile(
        "t10k-labels-idx1-ubyte", 2049, (10000,), 10008,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}  # fmt: skip


def _wanted() -> str:
    return ", ".join(f.stem for f in IDX_FILES.values()) + " (each gzipped or not)"


class DataNotFound(FileNotFoundError):
    """No searched folder holds the four files.

    ``searched`` lists ``(folder, why it was searched)``; ``problems`` says, per folder, what is
    wrong with it ("does not exist", "missing: ..."). ``named`` is the folder that was named
    (``--data-dir`` or ``$CNNBENCH_DATA``), the only one searched then; None when the default
    places were searched.
    """

    def __init__(
        self,
        searched: list[tuple[Path, str]],
        named: tuple[Path, str] | None = None,
        problems: dict[Path, str] | None = None,
    ):
        self.searched = searched
        self.named = named
        self.problems = problems or {}
        wanted = _wanted()
        if named is not None:
            folder, why = named
            problem = self.problems.get(folder, "does not hold the files")
            raw = folder / "FashionMNIST" / "raw"
            super().__init__(
                f"Fashion-MNIST not found in {folder} (named by {why}; the only folder searched, "
                f"with its torchvision layout {raw}): {problem}. Looked for {wanted}. "
                f"Get it: cnnbench data --download {folder}; or sudo apt-get install "
                f"dataset-fashion-mnist and name /usr/share/datasets/fashion-mnist (or no folder)"
            )
        else:
            where = "; ".join(
                f"{p} ({why}: {self.problems[p]})" if p in self.problems else f"{p} ({why})"
                for p, why in searched
            )
            super().__init__(
                f"Fashion-MNIST not found (looked in: {where}). Looked for {wanted}. "
                f"Get it: {GET_DATA}"
            )


class DataCorrupt(ValueError):
    def __init__(self, path: Path, problem: str):
        self.path = path
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class DataLocation:
    root: Path  # the folder holding the four files
    source: str  # which rule found it ("--data-dir", "$CNNBENCH_DATA", "user cache", ...)
    files: dict[str, Path]  # IDX_FILES key → file (.gz or decompressed)


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnbench" / "fashion-mnist"


def named_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, str] | None:
    """The folder the user named — ``data_dir``, else ``$CNNBENCH_DATA`` — or None."""
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir"
    if os.environ.get("CNNBENCH_DATA"):
        return Path(os.environ["CNNBENCH_DATA"]).expanduser(), "$CNNBENCH_DATA"
    return None


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders :func:`locate` tries, in order: the named one only, else the default places."""
    named = named_dir(data_dir)
    if named is not None:
        dirs = [named]
    else:
        dirs = [
            (user_cache(), "user cache"),
            (Path("/usr/share/datasets/fashion-mnist"), "Debian package dataset-fashion-mnist"),
        ]
    out = []
    for path, why in dirs:
        out.append((path, why))
        out.append((path / "FashionMNIST" / "raw", f"{why}, torchvision layout"))
    return out


def _find_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _probe(root: Path) -> tuple[dict[str, Path | None], str | None]:
    """The four files found in ``root`` and, when not all are there, what is wrong."""
    try:
        if not root.exists():
            return {}, "does not exist"
        if not root.is_dir():
            return {}, "is not a folder"
        files = {key: _find_file(root, f.stem) for key, f in IDX_FILES.items()}
    except OSError as exc:  # e.g. a folder we may not read
        return {}, f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})"
    missing = [IDX_FILES[key].stem for key, path in files.items() if path is None]
    if not missing:
        return files, None
    if len(missing) == len(IDX_FILES):
        return files, "holds none of the files"
    return files, "missing " + ", ".join(missing)


def locate(data_dir: str | os.PathLike | None = None) -> DataLocation:
    """The first candidate folder that holds all four files; :class:`DataNotFound` otherwise.

    A named folder (``data_dir`` or ``$CNNBENCH_DATA``) is the only one searched, with its
    torchvision layout; see the module docstring.
    """
    searched = candidate_dirs(data_dir)
    problems: dict[Path, str] = {}
    for root, why in searched:
        files, problem = _probe(root)
        if problem is None:
            return DataLocation(root, why, files)  # type: ignore[arg-type]
        problems[root] = problem
    named = named_dir(data_dir)
    if named is not None:  # report the folder itself; its raw/ subfolder is named in the message
        problems = {named[0]: problems[named[0]]}
    raise DataNotFound(searched, named, problems)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataCorrupt(path, f"cannot read ({type(exc).__name__}: {exc})") from None


def read_idx(path: str | os.PathLike, spec: IdxFile, *, verify: bool = True) -> torch.Tensor:
    """The file's uint8 payload shaped as its header says, checked against ``spec``."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < spec.header_bytes:
        raise DataCorrupt(path, f"truncated: {len(data)} bytes, not even an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != spec.magic:
        raise DataCorrupt(path, f"wrong IDX magic number {magic}, expected {spec.magic}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(spec.shape)))
    if dims != spec.shape:
        raise DataCorrupt(path, f"dimensions {dims}, expected {spec.shape}")
    if len(data) != spec.nbytes:
        raise DataCorrupt(path, f"truncated or padded: {len(data)} bytes, expected {spec.nbytes}")
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise DataCorrupt(path, f"SHA-256 {digest[:16]}… does not match the real data set")
    payload = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=spec.header_bytes)
    return payload.reshape(spec.shape)


@dataclass(frozen=True)
class FashionMNIST:
    train_images: torch.Tensor  # uint8, 60000 x 28 x 28
    train_labels: torch.Tensor  # int64, 60000
    test_images: torch.Tensor  # uint8, 10000 x 28 x 28
    test_labels: torch.Tensor  # int64, 10000
    location: DataLocation
    verified: bool  # SHA-256 of every decompressed file checked


def load_fashion_mnist(data_dir=None, *, verify: bool = True) -> FashionMNIST:
    loc = locate(data_dir)
    t = {key: read_idx(loc.files[key], spec, verify=verify) for key, spec in IDX_FILES.items()}
    return FashionMNIST(
        train_images=t["train_images"],
        train_labels=t["train_labels"].long(),
        test_images=t["test_images"],
        test_labels=t["test_labels"].long(),
        location=loc,
        verified=verify,
    )


def download(dest: str | os.PathLike | None = None) -> Path:
    """Fetch the upstream files with torchvision's downloader into ``dest`` (the user cache).

    Raises ``OSError`` with a plain message when the internet cannot be reached.
    """
    from torchvision.datasets import FashionMNIST as TV
    from torchvision.datasets.utils import download_url

    dest = Path(dest) if dest else user_cache()
    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    for filename, md5 in TV.resources:
        for mirror in TV.mirrors:
            try:
                download_url(mirror + filename, root=str(dest), filename=filename, md5=md5)
                break
            except Exception as exc:  # URLError, HTTPError, socket errors: try the next mirror
                errors.append(f"{mirror}{filename}: {type(exc).__name__}: {exc}")
        else:
            raise OSError(
                "cannot download Fashion-MNIST (no internet here?): "
                + errors[-1]
                + f". Instead: {GET_DATA.split('   ')[0]}"
            )
    return dest


class DeviceLoader:
    """Batches made on the device from uint8 images that live there.

    Each epoch draws a fresh ``randperm`` from a seeded device generator (when ``shuffle``), so
    the same seed gives the same batches. Images are resized with bilinear ``F.interpolate`` to
    ``image_size`` and scaled to [0, 1]; labels are int64.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        image_size: int,
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        drop_last: bool = False,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.image_size = image_size
        self.shuffle = shuffle
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        n = self.images.shape[0]
        return len(self) * self.batch_size if self.drop_last else n

    def _prepare(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].unsqueeze(1).float()  # N x 1 x 28 x 28
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        x = x.div_(255.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        if self.shuffle:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            yield self._prepare(order[i * self.batch_size : (i + 1) * self.batch_size])
