"""Argument checks shared by the certificates.

A certificate computed from a bad argument is worse than no certificate, so every public
function validates its inputs here and raises a ``ValueError`` that names the argument.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def probability_array(p: ArrayLike, name: str = "p") -> NDArray[np.float64]:
    """``p`` as a float64 array with every entry in [0, 1] (NaN rejected)."""
    arr = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]; got values outside it (or NaN/inf)")
    return arr


def num_classes(k: int, name: str = "num_classes") -> int:
    """An integer number of classes K >= 2."""
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ValueError(f"{name} must be an integer >= 2; got {k!r}")
    return int(k)


def flip_probability(q: float, k: int, name: str = "q") -> float:
    """Label-flip probability q in the open interval (0, (K-1)/K).

    At q = (K-1)/K the noisy label is uniform whatever the clean label is, so nothing can be
    certified; q = 0 is no smoothing at all (infinite divergence).
    """
    qf = float(q)
    upper = (k - 1) / k
    if not np.isfinite(qf) or not (0.0 < qf < upper):
        raise ValueError(f"{name} must lie in (0, {upper:g}) for {k} classes; got {q!r}")
    return qf


def level(alpha: float, name: str = "alpha") -> float:
    """A failure probability alpha in (0, 1)."""
    a = float(alpha)
    if not np.isfinite(a) or not (0.0 < a < 1.0):
        raise ValueError(f"{name} must lie in (0, 1); got {alpha!r}")
    return a


def positive(x: float, name: str) -> float:
    """A finite, strictly positive float."""
    v = float(x)
    if not np.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0; got {x!r}")
    return v


def count(n: int, name: str, minimum: int = 1) -> int:
    """An integer count >= ``minimum``."""
    if isinstance(n, bool) or int(n) != n or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {n!r}")
    return int(n)


def finite_matrix(x: ArrayLike, name: str, ndim: int = 2) -> NDArray[np.float64]:
    """A float64 array with ``ndim`` dimensions and only finite entries."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def labels(y: ArrayLike, n: int, k: int, name: str = "y") -> NDArray[np.int64]:
    """Integer labels in {0, ..., K-1}, one per training point."""
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the training features; got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if np.any((out < 0) | (out >= k)):
        raise ValueError(f"{name} must hold labels in {{0, ..., {k - 1}}}")
    return out
