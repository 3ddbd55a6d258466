"""Label-free feature maps h (paper, Sec. 4.1: h may be trained without the training labels).

The label-flip certificate treats the features as fixed: anything that reads the (poisonable)
training labels must not shape h. Principal components of the training images read the images
only, so they are safe; so are features from a network trained on other classes (chapter 6).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks

__all__ = ["pca_features", "flatten_images"]


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
    _, s, vt = np.linalg.svd(xtr - mean, full_matrices=False)
    comps = vt[:kk].T
    if whiten:
        comps = comps / (s[:kk] / np.sqrt(xtr.shape[0]))
    return (xtr - mean) @ comps, (xte - mean) @ comps
