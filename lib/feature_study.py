r"""Comparing label-free feature maps by what they certify (chapter 8).

A feature map that never reads the training labels leaves the certificate of eq. (12)-(13)
valid unchanged, so any such map may be chosen for its accuracy and its robustness. Two maps
certified on different numbers n of training labels are compared at radii given as a
*fraction* of n: r = floor(f n) flips, the same share of the labels an adversary controls.

- :func:`label_free_subset`: a random subset of the training and test points, drawn from a
  generator seeded by ``(seed, 8)`` without reading a label (a costly map, e.g. a sentence
  encoder, then embeds only these points, and the cheap map is certified again on them).
- :func:`certified_row`: accuracy and certified accuracy at the radii ``f n``.
- :func:`fraction_curve`: certified accuracy against the flipped fraction of the labels.
- :func:`compare_maps`: certify several maps on the same points; a table row and a curve each.
- :func:`width_sweep`: the same embedding cut to its top k whitened principal components, for
  several k (chapter 7): accuracy, certified accuracy and the undefended model's exact attacked
  accuracy at r flips. The number of directions is chosen without reading a label.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from . import style
from .evaluation import attack_undefended
from .features import pca_features
from .labelflip import Certificate, certify

__all__ = [
    "label_free_subset",
    "certified_row",
    "fraction_curve",
    "compare_maps",
    "width_sweep",
    "plot_fraction_curves",
]


def label_free_subset(
    n_train: int, n_test: int, size_train: int, size_test: int, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Sorted random indices of ``min(size_train, n_train)`` training and ``min(size_test,
    n_test)`` test points, without replacement, from ``numpy.random.default_rng([seed, 8])``;
    only the counts are read, never a label."""
    for name, v in (
        ("n_train", n_train),
        ("n_test", n_test),
        ("size_train", size_train),
        ("size_test", size_test),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    rng = np.random.default_rng([seed, 8])
    tr = np.sort(rng.choice(n_train, min(size_train, n_train), replace=False))
    te = np.sort(rng.choice(n_test, min(size_test, n_test), replace=False))
    return tr, te


def _radii(n_train: int, fractions: Sequence[float]) -> list[int]:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size == 0 or not np.all((f >= 0) & (f <= 1)):
        raise ValueError(f"fractions must be a non-empty list of numbers in [0, 1]; got {fractions!r}")
    return [int(x * n_train) for x in f]


def certified_row(
    name: str, cert: Certificate, n_train: int, y_test: NDArray, k: int, fractions: Sequence[float]
) -> dict:
    """One row of the comparison table: the map's ``name``, n, the number of test points, the
    feature dimension ``k``, the accuracy of the smoothed prediction, and the certified accuracy
    at r = floor(f n) flips for each f in ``fractions`` (column ``certified at {100 f}% of n``)."""
    yt = np.asarray(y_test)
    if yt.shape != cert.pred.shape:
        raise ValueError(f"y_test has shape {yt.shape} but the certificate {cert.pred.shape}")
    radii = _radii(n_train, fractions)
    acc = cert.certified_accuracy(yt, radii)
    return {
        "features": name,
        "training reviews": int(n_train),
        "test reviews": len(yt),
        "k": int(k),
        "accuracy": float(np.mean(cert.pred == yt)),
        **{f"certified at {100 * f:g}% of n": float(a) for f, a in zip(fractions, acc)},
    }


def fraction_curve(
    cert: Certificate, n_train: int, y_test: NDArray, frac_max: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(r / n, certified accuracy at r) for r = 0, 1, ..., floor(frac_max n)."""
    if not (0.0 <= frac_max <= 1.0):
        raise ValueError(f"frac_max must lie in [0, 1]; got {frac_max!r}")
    r = np.arange(0, int(frac_max * n_train) + 1)
    return r / n_train, cert.certified_accuracy(np.asarray(y_test), r)


def compare_maps(
    maps: Sequence[tuple[str, NDArray, NDArray, int]],
    y: NDArray,
    y_test: NDArray,
    q: float,
    fractions: Sequence[float],
    frac_max: float,
) -> tuple[list[dict], dict[str, tuple[NDArray, NDArray]]]:
    """Certify each map ``(name, train features, test features, k)`` on the labels ``y`` at flip
    probability ``q`` (tight certificate), each whitened to its top k principal components from
    its own training rows (:func:`lib.features.pca_features`, no label read). Returns one
    :func:`certified_row` and one :func:`fraction_curve` per map, keyed by name."""
    rows, curves = [], {}
    for name, A, At, k in maps:
        G, Gt = pca_features(np.asarray(A, np.float64), np.asarray(At, np.float64), k)
        cert = certify(G, y, Gt, q)
        rows.append(certified_row(name, cert, len(y), y_test, k, fractions))
        curves[name] = fraction_curve(cert, len(y), y_test, frac_max)
    return rows, curves


def width_sweep(
    E: NDArray,
    Et: NDArray,
    y: NDArray,
    y_test: NDArray,
    ks: Sequence[int],
    q: float,
    r: int,
    known: dict[int, tuple[Certificate, object]] | None = None,
) -> pd.DataFrame:
    """For each k of ``ks``: the embedding ``E`` / ``Et`` whitened to its top k principal
    components, certified at ``q`` (tight) and its undefended least-squares model attacked
    exactly (:func:`lib.evaluation.attack_undefended`). Columns: accuracy, certified at r,
    undefended at r (the accuracy an r-flip attack leaves), median radius (0 where wrong).
    ``known`` maps a k already certified and attacked to its (certificate, undefended)."""
    yt = np.asarray(y_test)
    rows = []
    for k in ks:
        if known and k in known:
            cert, und = known[k]
        else:
            G, Gt = pca_features(E, Et, k)
            cert, und = certify(G, y, Gt, q), attack_undefended(G, y, Gt)
        rows.append(
            {
                "k": int(k),
                "accuracy": float(np.mean(cert.pred == yt)),
                f"certified at {r}": float(cert.certified_accuracy(yt, r)),
                f"undefended at {r}": float(und.accuracy_under_attack(yt, [r])[0]),
                "median radius": float(np.median(np.where(cert.pred == yt, cert.radius, 0))),
            }
        )
    return pd.DataFrame(rows).set_index("k")


def plot_fraction_curves(
    curves: dict[str, tuple[NDArray, NDArray]], title: str, points: str = "points", chance: float | None = 0.5
):
    """The curves of :func:`fraction_curve` in one figure, in percent, with the constant
    classifier's accuracy ``chance`` (dotted; None for none)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, (frac, acc) in curves.items():
        ax.plot(100 * frac, 100 * acc, label=name)
    if chance is not None:
        ax.axhline(100 * chance, color=style.ROLE["chance"], ls=":", lw=0.8, label="constant classifier")
    ax.set(
        xlabel=f"training labels flipped by the adversary (% of the n training {points})",
        ylabel="certified test accuracy (%)",
        title=title,
        ylim=(0, 100),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
