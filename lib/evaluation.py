"""What the label-flip experiments of chapters 6 to 9 measure beside their certificates: the
undefended models attacked (exactly for least squares, by the paper's App. C orders for logistic
regression), the accuracy an attacker leaves them, the check that no attack on the smoothed
classifier beats a certified radius, and the certified-curves figure that puts these together.

The attacks themselves are in :mod:`lib.attacks`; the feature maps in :mod:`lib.features`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from tqdm import tqdm

from . import _checks, style
from .attacks import (
    attack_logistic_orders,
    attack_smoothed,
    attack_smoothed_multiclass,
    logistic_fit,
    min_flips_least_squares,
    min_flips_multiclass,
)
from .labelflip import Certificate, certify_tight_and_kl
from .least_squares import add_intercept, kernel_weights
from .partition import median_certified

__all__ = [
    "attacked_accuracy",
    "first_below",
    "Undefended",
    "attack_undefended",
    "attack_certified",
    "plot_certified_curves",
    "QGrid",
    "certify_grid",
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

    def accuracy_under_attack(self, y_test: ArrayLike, radii: ArrayLike) -> NDArray[np.float64]:
        """The least-squares model's accuracy left by an exact attack with r flips, per r."""
        return attacked_accuracy(self.ls_pred, self.ls_flips, y_test, radii)


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
    verbose: bool = False,
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
    that would be a soundness bug, so every chapter calls this and a test does too. With
    ``verbose``, prints how many attacks were proven and how far beyond the radius the closest was.
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
    if verbose:
        found = np.isfinite(flips)
        excess = flips[found] - cert.radius[points][found]
        closest = (
            f", the closest {int(np.min(excess))} flips beyond the certified radius" if found.any() else ""
        )
        print(
            f"q = {q}: attacked the reported class at {len(points)} test points; "
            f"{int(found.sum())} proven attacks{closest}; none within a certified radius"
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
    ax.set_ylim(-1, 102)  # a curve at 0% or 100% stays visible above the frame
    ax.set_title(title)


@dataclass
class QGrid:
    """The certificates of one test set for each flip probability q of a grid: ``tight`` (eq. 4
    with the Neyman-Pearson construction) and ``kl`` (eq. 8 / 25), both read off one Chernoff
    bound per test point, with the seconds each q took. Fractions, not percentages."""

    y_test: NDArray
    tight: dict[float, Certificate] = field(default_factory=dict)
    kl: dict[float, Certificate] = field(default_factory=dict)
    seconds: dict[float, float] = field(default_factory=dict)

    @property
    def q_grid(self) -> list[float]:
        return list(self.tight)

    def accuracy(self, q: float) -> float:
        """Non-robust accuracy of the smoothed classifier at ``q``."""
        return float(np.mean(self.tight[q].pred == self.y_test))

    def certified(self, q: float, r: int, bound: str = "tight") -> float:
        """Certified accuracy at ``q`` against ``r`` flips (``bound``: 'tight' or 'kl')."""
        certs = {"tight": self.tight, "kl": self.kl}[bound]
        return float(certs[q].certified_accuracy(self.y_test, r))

    def median(self, q: float, bound: str = "tight") -> int:
        """The median certified flips (:func:`lib.partition.median_certified`: the largest r at
        which at least half of the test points are correct and certified) at ``q``."""
        c = {"tight": self.tight, "kl": self.kl}[bound][q]
        return median_certified(c.pred, c.radius, self.y_test)

    def best_q(self, r: int) -> float:
        """The q of the grid that certifies most at ``r`` flips (the first such q on ties)."""
        return max(self.q_grid, key=lambda q: self.certified(q, r))

    def table(self, radii: Sequence[int]) -> pd.DataFrame:
        """One row per q: accuracy, the median lower bound on the prediction's vote share, and the
        certified accuracy at each r of ``radii`` (columns ``certified at r = ...``; tight)."""
        rows = [
            {
                "q": q,
                "accuracy": self.accuracy(q),
                "median vote share bound": float(np.median(c.p_lower)),
                **{f"certified at r = {r}": self.certified(q, r) for r in radii},
            }
            for q, c in self.tight.items()
        ]
        return pd.DataFrame(rows).set_index("q")

    def figure(
        self,
        radii: NDArray,
        undefended: Undefended | None = None,
        lr_max_flips: int | None = None,
        titles: tuple[str, str] = ("tight certificate", "KL certificate"),
        legend_panel: int = 0,
    ):
        """The paper's figure, tight certificate left and KL right (:func:`plot_certified_curves`)."""
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, certs, title in zip(axes, (self.tight, self.kl), titles):
            plot_certified_curves(ax, radii, certs, self.y_test, undefended, title, lr_max_flips)
        # the x-axis ends a little after the last radius at which any curve is above zero
        ends = [int(np.max(c.radius[c.pred == self.y_test], initial=0)) for c in self.tight.values()]
        if undefended is not None:
            broken = undefended.ls_flips[
                (undefended.ls_pred == self.y_test) & np.isfinite(undefended.ls_flips)
            ]
            ends.append(int(np.max(broken, initial=0)))
        right = min(float(radii[-1]), max(10.0, 1.1 * max(ends)))
        for ax in axes:
            ax.set_xlim(float(radii[0]), right)
        axes[1].set_ylabel("")
        axes[legend_panel].legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        return fig


def certify_grid(
    F: NDArray,
    y: NDArray,
    Ft: NDArray,
    y_test: ArrayLike,
    q_grid: Sequence[float],
    num_classes: int = 2,
    *,
    chunk: int | None = None,
    report_at: int | None = None,
    verbose: bool = True,
) -> QGrid:
    """Certify the test set for every q of ``q_grid`` with :func:`lib.labelflip.certify_tight_and_kl`
    (one Chernoff solve per test point gives both radii), ``chunk`` test points at a time when
    given (with a progress bar; lambda and a test point's alpha do not depend on the other test
    points, so the certificates are those of one call, up to the rounding of alpha's matrix
    products, which differs with the chunk's shape in the last digits). Prints one line per q: the time,
    the accuracy and, with ``report_at``, the certified accuracy at that many flips."""
    yt = np.asarray(y_test)
    if len(Ft) == 0:
        raise ValueError("Ft must hold at least one test point")
    if yt.shape != (len(Ft),):
        raise ValueError(f"y_test must hold one label per row of Ft ({len(Ft)}); got shape {yt.shape}")
    if len(q_grid) == 0:
        raise ValueError("q_grid must hold at least one flip probability")
    step = len(Ft) if chunk is None else _checks.count(chunk, "chunk")
    out = QGrid(yt)
    for q in q_grid:
        start = time.perf_counter()
        starts = range(0, len(Ft), max(step, 1))
        if chunk is not None:
            starts = tqdm(starts, desc=f"q = {q}")
        parts = [certify_tight_and_kl(F, y, Ft[s : s + step], q, num_classes) for s in starts]
        out.seconds[q] = time.perf_counter() - start
        for i, certs in enumerate((out.tight, out.kl)):
            cs = [p[i] for p in parts]
            certs[q] = Certificate(
                *(np.concatenate([getattr(c, a) for c in cs]) for a in ("pred", "radius", "log_tail")),
                cs[0].lam,
            )
        if verbose:
            line = (
                f"q = {q}: {len(yt):,} test points certified in {out.seconds[q]:.1f} s "
                f"({1e3 * out.seconds[q] / max(len(yt), 1):.1f} ms each); accuracy {out.accuracy(q):.1%}"
            )
            if report_at is not None:
                line += f"; certified at {report_at} flips {out.certified(q, report_at):.1%}"
            print(line)
    return out
