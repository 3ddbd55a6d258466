"""Label-free feature maps h (paper, Sec. 4.1: h may be trained without the training labels).

The label-flip certificate treats the features as fixed: anything that reads the (poisonable)
training labels must not shape h. Principal components of the training images read the images
only, so they are safe; so are features from a network trained on other classes (chapters 6 and 7).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks

__all__ = ["pca_features", "flatten_images", "significant_components"]


def flatten_images(images: ArrayLike) -> NDArray[np.float64]:
    """(N, H, W) uint8 images as (N, H*W) floats in [0, 1]."""
    x = np.asarray(images)
    return x.reshape(x.shape[0], -1).astype(np.float64) / 255.0


def pca_features(
    train: ArrayLike, test: ArrayLike, k: int, whiten: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Project train and test onto the top-k principal directions of the TRAINING inputs.

    Reads the training inputs only, never a label. With ``whiten`` the components are scaled to
    unit variance on the training set (better conditioned X^T X for the least-squares step).
    Returns (n_train, k) and (n_test, k).
    """
    xtr = _checks.finite_matrix(train, "train")
    xte = _checks.finite_matrix(test, "test")
    kk = _checks.count(k, "k")
    if kk > min(xtr.shape):
        raise ValueError(f"k = {kk} exceeds the rank bound min{xtr.shape}")
    if xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test has {xte.shape[1]} dimensions, train has {xtr.shape[1]}")
    mean = xtr.mean(axis=0)
    xc = xtr - mean
    comps, s = _top_directions(xc, kk)
    if whiten:
        comps = comps / (s / np.sqrt(xtr.shape[0]))
    return xc @ comps, (xte - mean) @ comps


def _top_directions(xc: NDArray[np.float64], k: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The top-k right singular vectors (as columns) and singular values of the centred ``xc``.

    With many more rows than columns (MNIST: 60,000 x 784) they are the eigenvectors of the
    d x d scatter matrix xc^T xc, whose eigenvalues are the squared singular values: one product
    and a symmetric eigendecomposition, far cheaper than an SVD of xc. Directions are defined up
    to sign, and a feature's sign changes no least-squares prediction. Where the scatter matrix
    would lose the small singular values (k near the rank, or fewer rows than columns), the SVD.
    """
    n, d = xc.shape
    if n >= 2 * d:
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        top = np.argsort(evals)[::-1][:k]
        s = np.sqrt(np.maximum(evals[top], 0.0))
        # squaring loses directions whose singular value is below ~1e-8 of the largest
        if s.size and s[-1] > 1e-6 * s[0]:
            return evecs[:, top], s
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:k].T, s[:k]


def significant_components(train: ArrayLike, rtol: float = 1e-3) -> int:
    """Number of principal directions of the training inputs whose singular value exceeds
    ``rtol`` times the largest (reads no label).

    Whitening divides each component by its training standard deviation; a direction with
    almost no training variance (a nearly dead unit) is then mostly noise, and a test point that
    leaves the training span along it gets a huge coordinate there. Keep at most this many
    components when whitening.
    """
    x = _checks.finite_matrix(train, "train")
    if not (0.0 < rtol < 1.0):
        raise ValueError(f"rtol must lie in (0, 1); got {rtol!r}")
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
