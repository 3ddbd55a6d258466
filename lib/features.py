"""Label-free feature maps h (paper, Sec. 4.1: h may be trained without the training labels).

The label-flip certificate treats the features as fixed: anything that reads the (poisonable)
training labels must not shape h. Principal components of the training images read the images
only, so they are safe; so are features from a network trained on other classes (chapters 6 and 7,
:func:`train_on_other_classes` and :func:`embed`; :func:`live_columns` drops the units that
such a network leaves dead on the training images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from . import _checks
from .data import MNIST
from .training import SmallCNN, cache_key, cached_model, default_device, train_gaussian_noise

__all__ = [
    "pca_features",
    "flatten_images",
    "significant_components",
    "FeatureNetwork",
    "train_on_other_classes",
    "embed",
    "live_columns",
]


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


FEATURE_BATCH = 128  # images per step when training a feature network (Adam, lr 1e-3)


@dataclass
class FeatureNetwork:
    """A :class:`SmallCNN` trained on the classes in ``classes`` only, and its test accuracy there."""

    net: SmallCNN
    classes: tuple[int, ...]
    accuracy: float
    test_images: int
    from_cache: bool
    seconds: float


def train_on_other_classes(
    ds: MNIST,
    exclude: tuple[int, ...],
    embed_dim: int,
    epochs: int,
    n_examples: int,
    seed: int,
    name: str,
    batch_size: int = FEATURE_BATCH,
) -> FeatureNetwork:
    """Train (or load from the cache) a CNN on a seeded subsample of ``n_examples`` training images
    of every class NOT in ``exclude``; its ``embed_dim``-wide penultimate layer is the feature map.
    The excluded classes' labels are never read. Reports accuracy on the kept classes' test images.
    Trained in ``batch_size`` steps with channels-last convolutions (:func:`train_gaussian_noise`);
    the weights are cached under a key of the images, labels and every setting."""
    kept = tuple(c for c in range(int(ds.y_train.max()) + 1) if c not in exclude)
    remap = np.full(int(ds.y_train.max()) + 1, -1)
    remap[list(kept)] = np.arange(len(kept))
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(np.isin(ds.y_train, kept))
    idx = np.sort(rng.choice(pool, min(n_examples, pool.size), replace=False))
    x, y = ds.x_train[idx], remap[ds.y_train[idx]]
    batch_size = _checks.count(batch_size, "batch_size")
    key = cache_key(
        x,
        y,
        epochs=epochs,
        embed_dim=embed_dim,
        seed=seed,
        model=f"SmallCNN-{len(kept)}",
        batch_size=batch_size,
        channels_last=True,
    )
    net, cached, secs = cached_model(
        f"{name}-{embed_dim}",
        build=lambda: SmallCNN(len(kept), embed_dim),
        make=lambda: train_gaussian_noise(
            x,
            y,
            0.0,
            num_classes=len(kept),
            epochs=epochs,
            seed=seed,
            device=default_device(),
            embed_dim=embed_dim,
            batch_size=batch_size,
            channels_last=True,
        ),
        key=key,
    )
    test = np.flatnonzero(np.isin(ds.y_test, kept))
    logits = _batched(net, ds.x_test[test], lambda m, xb: m(xb))
    acc = float((logits.argmax(1).numpy() == remap[ds.y_test[test]]).mean())
    return FeatureNetwork(net, kept, acc, int(test.size), cached, secs)


def _batched(net: SmallCNN, images: NDArray, fn, batch: int = 2000) -> torch.Tensor:
    """fn(net, x) on uint8 images scaled to [0, 1], ``batch`` at a time, under inference mode; on the CPU."""
    dev = next(net.parameters()).device
    x = np.asarray(images)
    with torch.inference_mode():
        parts = [
            fn(net, torch.as_tensor(x[i : i + batch], dtype=torch.float32).to(dev) / 255.0).cpu()
            for i in range(0, len(x), batch)
        ]
    return torch.cat(parts) if parts else torch.zeros(0)


def embed(net: SmallCNN, images: NDArray, batch: int = 2000) -> NDArray[np.float64]:
    """The network's embedding of uint8 images, (N, embed_dim) float64."""
    return _batched(net, images, lambda m, xb: m.embed(xb), batch).double().numpy()


def live_columns(F: ArrayLike, tol: float = 1e-8, rtol: float = 0.0) -> NDArray[np.bool_]:
    """Columns of the TRAINING features whose standard deviation exceeds ``tol`` and ``rtol``
    times the largest one's. Reads no label.

    Dead ReLU units make X^T X singular. A nearly dead one (a spread of 1e-5 of the others')
    keeps it nearly singular: its condition number, and with it the label-free ridge parameter
    of :func:`lib.least_squares.ridge_lambda_label_free` (proportional to kappa(X^T X)), grows
    so large that lambda swamps the data; ``rtol`` (e.g. 1e-3) drops such units too.
    """
    sd = _checks.finite_matrix(F, "F").std(axis=0)
    if not (np.isfinite(rtol) and 0.0 <= rtol < 1.0):
        raise ValueError(f"rtol must lie in [0, 1); got {rtol!r}")
    return sd > max(tol, rtol * float(sd.max(initial=0.0)))
