"""What the label-flip experiments of chapters 6 to 9 measure beside their certificates: the
undefended models attacked (exactly for least squares, by the paper's App. C orders for logistic
regression), the accuracy an attacker leaves them, the check that no attack on the smoothed
classifier beats a certified radius, and the certified-curves figure that puts these together.

The attacks themselves are in :mod:`lib.attacks`; the feature maps in :mod:`lib.features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks, style
from .attacks import (
    attack_logistic_orders,
    attack_smoothed,
    attack_smoothed_multiclass,
    logistic_fit,
    min_flips_least_squares,
    min_flips_multiclass,
)
from .labelflip import Certificate
from .least_squares import add_intercept, kernel_weights

__all__ = [
    "attacked_accuracy",
    "first_below",
    "Undefended",
    "attack_undefended",
    "attack_certified",
    "plot_certified_curves",
]


def attacked_accuracy(
    pred: ArrayLike, needed: ArrayLike, truth: ArrayLike, radii: ArrayLike
) -> NDArray[np.float64]:
    """Fraction of points predicted correctly AND needing more than r flips to change, for each r:
    the accuracy an attacker with r flips per test point leaves (an upper bound when ``needed``
    comes from heuristic attacks, exact when it comes from an exact attack)."""
    ok = np.asarray(pred) == np.asarray(truth)
    return np.mean(ok[None, :] & (np.asarray(needed)[None, :] > np.asarray(radii)[:, None]), axis=1)


def first_below(curve: ArrayLike, radii: ArrayLike, level: float) -> int | None:
    """The first r at which ``curve`` drops below ``level`` (None if it never does)."""
    below = np.flatnonzero(np.asarray(curve) < level)
    return int(np.asarray(radii)[below[0]]) if below.size else None


@dataclass
class Undefended:
    """Predictions of the undefended models and the flips their attacks need per test point."""

    ls_pred: NDArray
    ls_flips: NDArray  # exact minimal attack on least squares (lambda -> 0), all test points
    lr_pred: NDArray | None = None  # logistic regression (binary tasks only)
    lr_flips: NDArray | None = None  # best of the paper's App. C orderings, on lr_points
    lr_points: NDArray | None = None


def attack_undefended(
    F: NDArray,
    y: NDArray,
    Ft: NDArray,
    num_classes: int = 2,
    attack_points: int = 0,
    attack_max_flips: int = 0,
    chunk_entries: int = 20_000_000,
) -> Undefended:
    """The undefended models on the same (label-free) features: least squares with lambda -> 0
    (a 1e-6 relative ridge, for numerical safety), attacked exactly; for K = 2 also a logistic-
    regression head attacked by the paper's orderings (App. C: l2 distance in feature space,
    nearest and farthest first, and influence), keeping the best per point, on the first
    ``attack_points`` test points (the three searches run together,
    :func:`lib.attacks.attack_logistic_orders`).
    The test points are processed in chunks of about ``chunk_entries`` kernel weights
    (160 MB in float64), so memory stays bounded whatever the size of the test set."""
    X, Xt = add_intercept(F), add_intercept(Ft)
    lam = 1e-6 * np.trace(X.T @ X) / X.shape[1]
    step = max(1, chunk_entries // X.shape[0])
    preds, flips = [], []
    for s in range(0, Xt.shape[0], step):
        alpha = kernel_weights(X, Xt[s : s + step], lam)
        if num_classes > 2:
            f, p = min_flips_multiclass(alpha, y, num_classes)
        else:
            f, p = min_flips_least_squares(alpha, y), (alpha.T @ y >= 0.5).astype(np.int64)
        flips.append(f)
        preds.append(p)
    out = Undefended(np.concatenate(preds).astype(np.int64), np.concatenate(flips))
    if num_classes == 2 and attack_points > 0:
        sub = np.arange(min(attack_points, len(Ft)))
        found = attack_logistic_orders(
            X, y, Xt[sub], attack_max_flips, orders=("distance", "distance_reverse", "influence")
        )
        best = np.min(list(found.values()), axis=0)
        w = logistic_fit(X, y.astype(float))
        out.lr_pred, out.lr_flips, out.lr_points = (Xt @ w >= 0).astype(np.int64), best, sub
    return out


def attack_certified(
    F: NDArray,
    y: NDArray,
    Ft: NDArray,
    cert: Certificate,
    q: float,
    points: NDArray,
    num_classes: int = 2,
    slack: int = 30,
    *,
    distance_order: bool = False,
) -> NDArray[np.float64]:
    """Attack the smoothed classifier on the test points ``points`` (with the certificate's lambda)
    and return the flips each proven attack needed (inf: none found within radius + ``slack``).

    Binary tasks: the influence order of App. C, which for least squares is the exact greedy order
    (:func:`lib.attacks.attack_smoothed`). The paper's other App. C order, by l2 distance to the
    test point in feature space (training points of the predicted class first), cannot do better:
    in the Chernoff exponent of eq. (7) every flip contributes a term that decreases with its move
    towards the other side, at every t, so for each number of flips r the greedy set has the
    smallest exponent of all sets of r flips, and the first r at which the greedy attack is proven
    is at most the r of any other order. ``distance_order=True`` runs it as well and keeps the
    best per point (the same numbers, at about twice the cost).
    K > 2: the exact gap-closing order of :func:`lib.attacks.attack_smoothed_multiclass`.

    Raises AssertionError if any attack succeeds with no more flips than the certified radius:
    that would be a soundness bug, so every chapter calls this and a test does too.
    """
    distance_order = _checks.flag(distance_order, "distance_order")
    X, Xt = add_intercept(F), add_intercept(Ft[points])
    alpha = kernel_weights(X, Xt, cert.lam)
    budget = int(cert.radius[points].max()) + slack
    if num_classes > 2:
        flips, pred = attack_smoothed_multiclass(alpha, y, q, num_classes, max_flips=budget)
    else:
        flips, pred = attack_smoothed(alpha, y, q, max_flips=budget)
        if distance_order:
            T = Ft[points]
            dist = (F * F).sum(1)[:, None] + (T * T).sum(1)[None, :] - 2.0 * F @ T.T  # squared l2, (n, m)
            same = y[:, None] == pred[None, :]
            near = np.argsort(np.where(same, dist, np.inf), axis=0, kind="stable")[:budget]
            flips = np.minimum(flips, attack_smoothed(alpha, y, q, max_flips=budget, order=near)[0])
    if not np.array_equal(pred, cert.pred[points]):
        raise AssertionError("the attack's smoothed prediction differs from the certificate's")
    bad = np.flatnonzero(flips <= cert.radius[points])
    if bad.size:
        raise AssertionError(
            f"attacks changed certified predictions within their radius at test points "
            f"{points[bad].tolist()}: soundness bug"
        )
    return flips


def plot_certified_curves(
    ax,
    radii: NDArray,
    certs: dict[float, Certificate],
    y_test: NDArray,
    undefended: Undefended | None = None,
    title: str = "",
    lr_max_flips: int | None = None,
):
    """The paper's figure on one axis: certified accuracy (solid) per q against flips, the
    non-robust accuracy of each smoothed classifier (dashed), the undefended models' attacked
    accuracy and, for binary tasks, the constant classifier at 50% (dotted)."""
    for q, c in certs.items():
        col = style.q_colour(q)
        ax.plot(radii, 100 * c.certified_accuracy(y_test, radii), color=col, label=f"q = {q}")
        ax.axhline(100 * np.mean(c.pred == y_test), color=col, ls="--", lw=0.8)
    if undefended is not None:
        ls_attacked = attacked_accuracy(undefended.ls_pred, undefended.ls_flips, y_test, radii)
        ax.plot(
            radii,
            100 * ls_attacked,
            color=style.ROLE["undefended"],
            label="undefended least squares (exact attack)",
        )
        if undefended.lr_flips is not None:
            within = radii <= (lr_max_flips if lr_max_flips is not None else radii.max())
            sub = undefended.lr_points
            ax.plot(
                radii[within],
                100
                * attacked_accuracy(undefended.lr_pred[sub], undefended.lr_flips, y_test[sub], radii[within]),
                color=style.ROLE["attack"],
                label=f"undefended logistic regression (App. C attacks, {len(sub)} points)",
            )
    if len(np.unique(y_test)) == 2:
        ax.axhline(50, color=style.ROLE["chance"], ls=":", lw=0.8, label="constant classifier")
    ax.set_xlabel("training labels flipped by the adversary (per test point)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
