"""Training is seeded, the cache key tracks every input, and the cache returns the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.training import SmallCNN, accuracy, cache_key, cached_model, train_gaussian_noise


def _tiny(rng, n=64):
    x = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
    y = (x[:, :14].mean(axis=(1, 2)) > x[:, 14:].mean(axis=(1, 2))).astype(np.int64)
    return x, y


def test_training_is_seeded(rng):
    x, y = _tiny(rng)
    a = train_gaussian_noise(
        x, y, 0.25, num_classes=2, epochs=1, batch_size=32, seed=3, device="cpu", progress=False
    )
    b = train_gaussian_noise(
        x, y, 0.25, num_classes=2, epochs=1, batch_size=32, seed=3, device="cpu", progress=False
    )
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert 0.0 <= accuracy(a, x, y) <= 1.0


def test_cache_key_changes_with_every_input(rng):
    x, y = _tiny(rng)
    base = cache_key(x, y, sigma=0.25, epochs=1)
    assert base == cache_key(x, y, sigma=0.25, epochs=1)
    assert base != cache_key(x, y, sigma=0.5, epochs=1)
    y2 = y.copy()
    y2[0] ^= 1
    assert base != cache_key(x, y2, sigma=0.25, epochs=1)


def test_cached_model_roundtrip(rng, tmp_path):
    x, y = _tiny(rng)
    calls = []

    def make():
        calls.append(1)
        return train_gaussian_noise(x, y, 0.0, num_classes=2, epochs=1, device="cpu", progress=False)

    m1, hit1, _ = cached_model("t", lambda: SmallCNN(2), make, cache_key(x, y), folder=tmp_path)
    m2, hit2, _ = cached_model("t", lambda: SmallCNN(2), make, cache_key(x, y), folder=tmp_path)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    inp = torch.rand(3, 1, 28, 28)
    assert torch.allclose(m1.cpu()(inp), m2.cpu()(inp))


def test_bad_input(rng):
    x, y = _tiny(rng, 8)
    with pytest.raises(ValueError, match="sigma"):
        train_gaussian_noise(x, y, -1.0, device="cpu")
    with pytest.raises(ValueError, match="y_train"):
        train_gaussian_noise(x, y[:-1], 0.1, device="cpu")


def test_channels_last_training_is_seeded_and_returns_the_default_layout(rng):
    """The NHWC layout changes how the kernels store the tensors, not the network: seeded runs
    agree with each other, stay close to the default layout's run, and the weights come back in
    the default layout (as the cache stores and loads them)."""
    x, y = _tiny(rng)
    kw = {"num_classes": 2, "epochs": 2, "batch_size": 16, "seed": 5, "device": "cpu", "progress": False}
    a = train_gaussian_noise(x, y, 0.0, channels_last=True, **kw)
    b = train_gaussian_noise(x, y, 0.0, channels_last=True, **kw)
    c = train_gaussian_noise(x, y, 0.0, **kw)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert pa.is_contiguous()
        torch.testing.assert_close(pa, pc, rtol=0, atol=1e-2)  # Adam moves a weight by <= lr per step
    with pytest.raises(ValueError, match="channels_last"):
        train_gaussian_noise(x, y, 0.0, channels_last="yes", **kw)
    with pytest.raises(ValueError, match="batch_size"):
        train_gaussian_noise(x, y, 0.0, **{**kw, "batch_size": 0})
