"""Label-flip attacks: upper bounds on robustness, to set beside the certified lower bounds.

The undefended least-squares classifier predicts 1{alpha^T y >= 1/2} (eq. 11/12), a linear
function of the labels, so the fewest flips that change its prediction is solvable exactly:
flipping label i moves the score by alpha_i (1 - 2 y_i), the moves add up, so the best attack
takes the largest helpful moves first (:func:`min_flips_least_squares`).

For K classes the undefended prediction argmax_c alpha^T Y_c is linear in the one-hot labels too.
To make rival r beat the prediction p, relabelling point i closes the gap s_p - s_r by at most
2 alpha_i (y_i = p, relabelled r), -2 alpha_i (y_i = r, relabelled p) or |alpha_i| (any other
label, relabelled r or p); these best moves add up, so sorting them solves each (p, r) pair
exactly and the fewest flips is the minimum over rivals (:func:`min_flips_multiclass`).

The same argument applies to the sign of the *expected* noisy score, which is the smoothed
prediction of :mod:`lib.chernoff` (the sign of t*): flipping label i moves
E[alpha^T Y] = q sum(alpha) + (1 - 2q) alpha^T y by (1 - 2q) alpha_i (1 - 2 y_i). So the same
greedy order gives the strongest attack on the smoothed prediction, and
:func:`attack_smoothed` uses it to test certificates: no attack may change a certified prediction
with fewer flips than its radius.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from . import _checks
from .chernoff import chernoff_bound

__all__ = ["min_flips_least_squares", "attack_smoothed", "logistic_fit", "attack_logistic",
           "min_flips_multiclass", "attack_smoothed_multiclass"]


def _fewest_moves(
    gains: NDArray, need: NDArray, strict: NDArray | bool, top: int = 1024
) -> NDArray[np.float64]:
    """Fewest moves per column, largest gains first, whose gains add up to at least ``need``
    (more than ``need`` where ``strict``). ``gains`` (n, m) >= 0, ``need`` (m,). inf where even
    all moves fall short. Only the ``top`` largest gains are sorted (``np.partition``); the
    columns they cannot settle get a full sort, so the answer is the same as sorting all."""
    n = gains.shape[0]
    strict = np.broadcast_to(strict, need.shape)

    def first(desc: NDArray, need: NDArray, strict: NDArray) -> NDArray[np.float64]:
        cum = np.cumsum(desc, axis=0)
        ok = np.where(strict[None, :], cum > need[None, :], cum >= need[None, :])
        return np.where(ok.any(axis=0), np.argmax(ok, axis=0) + 1.0, np.inf)

    t = min(top, n)
    largest = gains if t == n else np.partition(gains, n - t, axis=0)[n - t :]
    out = first(-np.sort(-largest, axis=0), need, strict)
    more = np.flatnonzero(np.isinf(out) & (t < n))  # the top gains were not enough
    if more.size:
        out[more] = first(-np.sort(-gains[:, more], axis=0), need[more], strict[more])
    return out


def _greedy_min_flips(score: NDArray, moves: NDArray, threshold: float) -> NDArray[np.float64]:
    """Fewest columns-wise moves to push ``score`` to the other side of ``threshold``.

    ``score`` (m,), ``moves`` (n, m): move i of column j changes score j by moves[i, j]. A score
    >= threshold must go below it; one below must reach >= threshold. inf where impossible.
    """
    up = score < threshold  # needs to rise
    helpful = np.maximum(np.where(up[None, :], moves, -moves), 0.0)  # a move the wrong way is never taken
    need = np.where(up, threshold - score, score - threshold)  # rise to >= thr / fall below thr
    return _fewest_moves(helpful, need, strict=~up)


def min_flips_least_squares(alpha: ArrayLike, y: ArrayLike) -> NDArray[np.float64]:
    """Exact fewest label flips that change the undefended prediction 1{alpha^T y >= 1/2}.

    ``alpha`` (n, m) kernel weights, ``y`` (n,) labels in {0, 1}. Returns (m,) floats; inf where no
    set of flips changes the prediction.
    """
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], 2)
    return _greedy_min_flips(a.T @ yv, a * (1 - 2 * yv)[:, None], 0.5)


def attack_smoothed(
    alpha: ArrayLike, y: ArrayLike, q: float, max_flips: int, order: NDArray | None = None
) -> tuple[NDArray, NDArray]:
    """Attack the smoothed (Chernoff) prediction, up to ``max_flips`` flips.

    For each test column, flips the labels in an order and reports a number of flips (by doubling
    then bisection, :func:`_proven_success`) after which the smoothed prediction changes AND the
    new prediction is certified (p_lower > 1/2), i.e. an attack proven to succeed. ``order=None``
    is the greedy order, which moves the expected noisy score towards the other side fastest; for
    least squares this is also the influence order of App. C, which is exact here because the
    score is linear in the labels. ``order`` may instead give, per column, training indices to
    flip in turn ((n', m) integer array, e.g. by l2 distance in feature space, App. C). Returns
    (flips, pred): flips[j] is that number (inf if none up to ``max_flips``). A certificate of
    radius R is contradicted if flips[j] <= R.
    """
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], 2)
    qf = _checks.flip_probability(q, 2)
    base = chernoff_bound(a, yv, qf)
    moves = (1 - 2 * qf) * a * (1 - 2 * yv)[:, None]
    up = base.pred == 0
    helpful = np.where(up[None, :], moves, -moves)  # how far each flip moves the score the needed way
    greedy = order is None
    if greedy:
        order = np.argsort(-helpful, axis=0)
    order = np.asarray(order)
    if order.ndim != 2 or order.shape[1] != a.shape[1]:
        raise ValueError(f"order must have shape (n', {a.shape[1]}); got {order.shape}")
    flips = np.full(a.shape[1], np.inf)
    for j in range(a.shape[1]):
        def changed(r: int, j: int = j) -> bool:
            y_att = yv.copy()
            idx = order[:r, j]
            y_att[idx] = 1 - y_att[idx]
            res = chernoff_bound(a[:, j : j + 1], y_att, qf)
            return bool(res.pred[0] != base.pred[j] and res.log_tail[0] < np.log(0.5))

        # greedy: beyond the helpful moves a flip only undoes progress, so stop there
        cap = int(np.sum(helpful[:, j] > 0)) if greedy else order.shape[0]
        flips[j] = _proven_success(changed, min(max_flips, cap), monotone=greedy)
    return flips, base.pred


def _proven_success(changed, cap: int, monotone: bool = False) -> float:
    """A number of flips r <= cap with changed(r) True, found along a fixed order by doubling
    then bisection, O(log cap) evaluations. Bisection finds a boundary where changed flips from
    False to True, the first one when changed is monotone in r; any r it returns is a proven
    success, so the attack stays valid either way.

    ``monotone=True`` (for orders of strictly helpful moves, largest first, capped at their
    number: each flip moves the expected score further the same way) first evaluates
    changed(cap) and gives up at once if it is False, so a rival that cannot win costs one
    evaluation instead of log2(cap). Along other orders (e.g. by feature-space distance)
    changed can be True early and False at cap, so they keep the plain search.
    """
    if cap < 1 or (monotone and not changed(cap)):
        return np.inf
    lo, hi = 0, 1  # changed(lo) is False (or lo = 0)
    while hi < cap and not changed(hi):
        lo, hi = hi, 2 * hi
    hi = min(hi, cap)
    if not monotone and not changed(hi):
        return np.inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if changed(mid) else (mid, hi)
    return float(hi)


def _logistic_loss(X: NDArray, y: NDArray, w: NDArray, l2: float) -> float:
    z = X @ w
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * len(y) * (w @ w))


def logistic_fit(
    X: NDArray, y: NDArray, l2: float = 1e-3, w0: NDArray | None = None, iters: int = 50
) -> NDArray:
    """L2-regularised logistic regression by damped Newton (the undefended model of App. C: a
    network's frozen features with a retrained top layer). Minimises
    sum_i log(1 + e^{x_i w}) - y_i x_i w + (l2 n / 2) |w|^2; warm-starts from ``w0``.

    Each Newton step is halved until the loss decreases (backtracking), so the iteration
    converges from any start (a plain Newton step from a warm start far from the optimum can
    diverge). ``X`` should contain an intercept column.
    """
    n, k = X.shape
    w = np.zeros(k) if w0 is None else np.array(w0, dtype=np.float64)
    loss = _logistic_loss(X, y, w, l2)
    for _ in range(iters):
        p = expit(X @ w)
        g = X.T @ (p - y) + l2 * n * w
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * n * np.eye(k)
        step = np.linalg.solve(H, g)
        eta = 1.0
        while True:
            new_loss = _logistic_loss(X, y, w - eta * step, l2)
            if new_loss <= loss or eta < 1e-10:
                break
            eta *= 0.5
        w = w - eta * step
        loss = new_loss
        if np.max(np.abs(eta * step)) < 1e-10:
            break
    return w


def attack_logistic(
    X: ArrayLike, y: ArrayLike, Xt: ArrayLike, max_flips: int, l2: float = 1e-3, order: str = "distance"
) -> NDArray[np.float64]:
    """Flips needed to change a retrained logistic regression's prediction (App. C), per test point.

    ``order='distance'``: flip the training points of the predicted class nearest to the test
    point in feature space first; ``'distance_reverse'``: the farthest first (App. C tries both);
    ``order='influence'``: flip first the points whose label flip
    most increases the test loss, by the influence function of Koh & Liang (2017) computed once
    at the clean model. Along that order the number of flips is found by doubling then bisection
    (:func:`_proven_success`): O(log max_flips) retrainings per point instead of one per flip,
    each retraining run to convergence (Newton, warm-started at the clean model). Returns (m,)
    floats: a number of flips after which the retrained prediction differs (checked by that
    retraining), inf if not within ``max_flips``. Where the prediction does not change
    monotonically along the order, bisection may return a later boundary than the first one;
    either way it is an attack that works, an upper bound on the undefended model's robustness.
    """
    Xa = _checks.finite_matrix(X, "X")
    Xta = _checks.finite_matrix(Xt, "Xt")
    yv = _checks.labels(y, Xa.shape[0], 2).astype(np.float64)
    if order not in ("distance", "distance_reverse", "influence"):
        raise ValueError(f"order must be 'distance', 'distance_reverse' or 'influence'; got {order!r}")
    w = logistic_fit(Xa, yv, l2)
    pred = (Xta @ w >= 0).astype(np.int64)
    if order == "influence":
        p = expit(Xa @ w)
        H = (Xa * (p * (1 - p))[:, None]).T @ Xa + l2 * len(yv) * np.eye(Xa.shape[1])
        # d loss_test / d(flip i) ~ -grad_test^T H^-1 (grad(z_i^-) - grad(z_i)); flipping y_i
        # changes the training gradient by x_i (y_i - (1 - y_i)) = x_i (2 y_i - 1)
        Hinv_X = np.linalg.solve(H, (Xa * (2 * yv - 1)[:, None]).T)  # (k, n)
    out = np.full(Xta.shape[0], np.inf)
    for j in range(Xta.shape[0]):
        if order in ("distance", "distance_reverse"):
            same = np.flatnonzero(yv == pred[j])
            cand = same[np.argsort(np.linalg.norm(Xa[same] - Xta[j], axis=1))]
            cand = cand[::-1] if order == "distance_reverse" else cand
        else:
            pt = expit(Xta[j] @ w)
            grad_test = Xta[j] * (pt - pred[j])  # loss gradient w.r.t. w at the predicted label
            score = -(grad_test @ Hinv_X)  # increase of the test loss per flip (to first order)
            cand = np.argsort(-score)

        def changed(r: int, j: int = j, cand: NDArray = cand) -> bool:
            y_att = yv.copy()
            y_att[cand[:r]] = 1.0 - y_att[cand[:r]]
            return int(Xta[j] @ logistic_fit(Xa, y_att, l2, w0=w) >= 0) != pred[j]

        out[j] = _proven_success(changed, min(max_flips, len(cand)))
    return out


def _pair_gains(a: NDArray, yv: NDArray, p, r) -> NDArray:
    """How much relabelling each training point at best closes the gap alpha^T(Y_p - Y_r): a
    point labelled p relabelled r gains 2 a_j, one labelled r relabelled p gains -2 a_j, any other
    gains |a_j| (relabelled r if a_j > 0, else p). ``a`` is (n,) with class ints ``p``, ``r``,
    or (n, m) with (m,) class arrays."""
    yc = yv[:, None] if a.ndim == 2 else yv
    return np.where(yc == p, 2 * a, np.where(yc == r, -2 * a, np.abs(a)))


def _pair_moves(a: NDArray, yv: NDArray, p: int, r: int) -> tuple[NDArray, NDArray]:
    """Best gap-closing move of each training point for rival r against p, and its new label."""
    new = np.where(yv == p, r, np.where(yv == r, p, np.where(a > 0, r, p)))
    return _pair_gains(a, yv, p, r), new


def min_flips_multiclass(
    alpha: ArrayLike, y: ArrayLike, num_classes: int, top: int = 1024
) -> tuple[NDArray, NDArray]:
    """Exact fewest label flips that change the undefended prediction argmax_c alpha^T Y_c.

    A rival wins when it scores at least as much as the prediction (ties count as a change: the
    attack is then at most one flip too optimistic, which errs on the side of a stronger attack).
    Per (test point, rival) each training point has one best gap-closing relabelling
    (:func:`_pair_gains`) and the moves add up, so the fewest flips take the largest gains
    first (:func:`_fewest_moves`, which sorts only the ``top`` largest gains unless a column
    needs more). Vectorised over test points. ``alpha`` (n, m),
    ``y`` (n,) in {0..K-1}. Returns (flips (m,), pred (m,)); inf where impossible.
    """
    k = _checks.num_classes(num_classes)
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], k)
    n, m = a.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), yv] = 1.0
    scores = a.T @ onehot
    pred = np.argmax(scores, axis=1)
    rivals = np.array([[c for c in range(k) if c != p] for p in pred]).reshape(m, k - 1)
    cols = np.arange(m)
    flips = np.full(m, np.inf)
    for rho in range(k - 1):
        r = rivals[:, rho]
        gap = scores[cols, pred] - scores[cols, r]  # >= 0
        gain = np.maximum(_pair_gains(a, yv, pred, r), 0.0)  # a move that widens the gap is never taken
        flips = np.minimum(flips, _fewest_moves(gain, gap, strict=False, top=top))  # a tie counts
    return flips, pred


def attack_smoothed_multiclass(
    alpha: ArrayLike, y: ArrayLike, q: float, num_classes: int, max_flips: int
) -> tuple[NDArray, NDArray]:
    """Attack the K-class smoothed (Chernoff) prediction; proven successes only.

    For each test column: for every rival, the exact best order of relabellings of
    :func:`min_flips_multiclass` (the smoothed prediction is the argmax of the expected scores,
    an affine function of the same one-hot labels); along it, the smallest number of flips found
    by doubling then bisection (:func:`_proven_success`) at which the multi-class Chernoff bound
    CERTIFIES a prediction other than the original one (log tail < log 1/2), so the attack
    provably changed g. Returns (flips, pred): flips[j] is that number, minimised over rivals
    (inf if none up to ``max_flips``). A certificate of radius R is contradicted if flips[j] <= R.
    """
    k = _checks.num_classes(num_classes)
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], k)
    qf = _checks.flip_probability(q, k)
    base = chernoff_bound(a, yv, qf, k)
    flips = np.full(a.shape[1], np.inf)
    cap = min(max_flips, a.shape[0])
    for j in range(a.shape[1]):
        col, p = a[:, j : j + 1], base.pred[j]
        for r in range(k):
            if r == p:
                continue
            gain, new = _pair_moves(a[:, j], yv, p, r)
            order = np.argsort(-gain, kind="stable")

            def changed(
                n_flips: int, col: NDArray = col, p: int = p, order: NDArray = order, new: NDArray = new
            ) -> bool:
                y_att = yv.copy()
                y_att[order[:n_flips]] = new[order[:n_flips]]
                res = chernoff_bound(col, y_att, qf, k)
                return bool(res.pred[0] != p and res.log_tail[0] < np.log(0.5))

            # the order's strictly helpful prefix only: later moves widen the gap again
            flips[j] = min(flips[j], _proven_success(changed, min(cap, int(np.sum(gain > 0))), monotone=True))
    return flips, base.pred
