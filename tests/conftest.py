"""Shared helpers for the tests: exact enumeration of label-noise distributions on tiny problems."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def all_labellings(n: int, k: int) -> np.ndarray:
    """Every labelling in {0..k-1}^n, shape (k**n, n)."""
    return np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)


def noise_probabilities(Z: np.ndarray, y: np.ndarray, q: float, k: int) -> np.ndarray:
    """mu(z) for each row z of Z: keep w.p. 1-q, else uniform over the other k-1 classes."""
    same = (Z == y[None, :])
    per = np.where(same, 1.0 - q, q / (k - 1))
    return np.prod(per, axis=1)


def base_votes(Z: np.ndarray, alpha: np.ndarray, k: int) -> np.ndarray:
    """The least-squares base learner phi on each noisy labelling z (rows of Z), per test column.

    Binary: 1{alpha^T z >= 1/2}. K > 2: argmax_c alpha^T onehot(z)_c. Shape (len(Z), m).
    """
    if k == 2:
        return (Z @ alpha >= 0.5).astype(np.int64)
    onehot = np.eye(k)[Z]  # (N, n, k)
    scores = np.einsum("Nnk,nm->Nmk", onehot, alpha)
    return np.argmax(scores, axis=2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
