"""Exact label-noise distributions on tiny problems, by enumerating every labelling.

The reference against which the certificates are checked (tests, chapter 3): with n labels
and K classes there are K^n labellings, so n must stay small (K^n up to about 10^5).
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

__all__ = ["all_labellings", "noise_probabilities", "kl_divergence", "base_votes", "change_labels"]


def all_labellings(n: int, k: int) -> NDArray[np.int64]:
    """Every labelling in {0..k-1}^n, shape (k**n, n), in lexicographic order."""
    if k**n > 2_000_000:
        raise ValueError(f"{k}^{n} labellings is too many to enumerate")
    return np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64).reshape(k**n, n)


def noise_probabilities(Z: NDArray, y: NDArray, q: float, k: int) -> NDArray[np.float64]:
    """mu_y(z) for each row z of Z: each label kept w.p. 1-q, else uniform over the other k-1."""
    per = np.where(Z == np.asarray(y)[None, :], 1.0 - q, q / (k - 1))
    return np.prod(per, axis=1)


def change_labels(y: NDArray, r: int, k: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """A copy of y with r randomly chosen labels moved to another class (the adversary's Y2)."""
    y2 = np.array(y, dtype=np.int64)
    idx = rng.choice(len(y2), r, replace=False)
    y2[idx] = (y2[idx] + rng.integers(1, k, r)) % k
    return y2


def kl_divergence(y1: NDArray, y2: NDArray, q: float, k: int) -> float:
    """KL(rho || mu) between the noise distributions around y2 (rho) and y1 (mu), by enumeration."""
    Z = all_labellings(len(y1), k)
    mu = noise_probabilities(Z, y1, q, k)
    rho = noise_probabilities(Z, y2, q, k)
    return float(np.sum(rho * np.log(rho / mu)))


def base_votes(Z: NDArray, alpha: NDArray, k: int) -> NDArray[np.int64]:
    """The least-squares learner phi on each labelling z (rows of Z), for each column of alpha.

    Binary: 1{alpha^T z >= 1/2}; K > 2: argmax_c alpha^T onehot(z)_c. Shape (len(Z), m).
    """
    if k == 2:
        return (Z @ alpha >= 0.5).astype(np.int64)
    onehot = np.eye(k)[Z]
    return np.argmax(np.einsum("Nnk,nm->Nmk", onehot, alpha), axis=2)
