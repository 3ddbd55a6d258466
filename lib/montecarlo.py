r"""Monte Carlo votes of a least-squares learner on noisy binary labels, by sparse updates.

The base learner of the label-flip paper (Sec. 4.1) votes 1 at a test point when
alpha^T Y >= 1/2, where alpha are the kernel weights of eq. (12) and Y the noisy labels: each
training label y_i flipped independently with probability q (the smoothing law mu, Sec. 4).
Estimating the vote share of the smoothed classifier g by sampling draws many such Y. Two facts
make a draw cheap:

* only about q n labels differ from y, and alpha^T Y = alpha^T y + sum_{i flipped}
  alpha_i (1 - 2 y_i): a draw costs O(q n) per test point, not O(n);
* the weights of m test points, an (n, m) matrix, have low rank (alpha = X (X^T X + lam I)^-1
  X_test^T has rank at most the number of features, eq. 12), so with alpha = U V (U of shape
  (n, r)) a draw needs only the r sums z = U^T Y, updated in O(q n r), and then
  alpha^T Y = V^T z for all m test points at once.

The flip positions are drawn directly, with the law of flipping each label on its own
(``labelflip.flip_labels``): the flips of ``size`` labellings of n labels form a Bernoulli(q)
process on the n * size sites, whose gaps are independent Geometric(q) variables
(:func:`flip_positions`). The sites are read label by label, so the update streams through the
training labels in order.

Votes are exact. Every float64 value alpha_j^T Y - 1/2 comes with a rigorous bound on its
rounding error and on the error of the factorisation (which is measured, not assumed); a draw
whose value lies within that bound of 0 is decided again by an exactly rounded sum
(``math.fsum``) of the weights of the labels that are 1, and -1/2, whose sign is the sign of the
exact alpha_j^T Y - 1/2. The vote is therefore 1{alpha^T Y >= 1/2} in exact arithmetic on the
float64 weights: a dense float64 product ``Y @ alpha >= 0.5`` gives the same vote except where
its own rounding crosses the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from tqdm import tqdm

from . import _checks
from .gaussian import clopper_pearson_lower

__all__ = ["flip_positions", "VoteCounts", "vote_counts", "sampled_bound"]

_U = float(np.finfo(np.float64).eps) / 2  # unit roundoff u = 2^-53
_SITES_PER_BATCH = 1 << 23  # noisy labels per batch of draws: about q times as many positions in memory
_EIG_RTOL = 2.0**-30  # eigenvalues of alpha^T alpha below this fraction of the largest are dropped
_MAX_RESIDUAL = 1e-9  # a factorisation that errs by more is not used (it would widen the exact-check band)


# --------------------------------------------------------------------------------------------
# Flip positions
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _advance(e, lam, last, sites, out, filled):
    """Append the positions last + ceil(e_k / lam), ... below ``sites`` to ``out``; returns
    (filled, last), with last = sites once the process has left the sites."""
    for k in range(e.size):
        g = math.ceil(e[k] / lam)  # Geometric(q) on {1, 2, ...} for e ~ Exp(1), lam = -log(1 - q)
        if g < 1.0:
            g = 1.0  # e = 0 exactly (probability about 2^-53)
        if g >= sites - last:
            return filled, sites
        last += int(g)
        out[filled] = last
        filled += 1
    return filled, last


def _draw_sites(sites: int, q: float, rng: np.random.Generator) -> NDArray[np.int64]:
    """Sorted positions of the successes of a Bernoulli(q) process on ``sites`` sites."""
    lam = -math.log1p(-q)
    out = np.empty(int(q * sites + 8.0 * math.sqrt(q * sites) + 16), dtype=np.int64)
    filled, last = 0, -1
    while last < sites:
        need = q * (sites - 1 - last)
        e = rng.standard_exponential(int(need + 8.0 * math.sqrt(need) + 16))
        if filled + e.size > out.size:
            out = np.concatenate([out[:filled], np.empty(e.size, dtype=np.int64)])
        filled, last = _advance(e, lam, last, sites, out, filled)
    return out[:filled]


def flip_positions(n: int, q: float, size: int, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    r"""Positions of the flipped labels in ``size`` independent noisy labellings of n labels.

    Each of the n * size labels is flipped independently with probability q (the law mu of
    binary label-flip smoothing, Sec. 4). The sites are numbered i * size + d (label i of
    labelling d); the flips form a Bernoulli(q) process on them, so the position of the first
    flip and the gaps between consecutive ones are independent Geometric(q) variables on
    {1, 2, ...}, drawn as ceil(E / -log(1 - q)) with E ~ Exp(1) (the inversion numpy's
    ``Generator.geometric`` uses, exact up to the resolution of the floating-point generator, as
    ``rng.random() < q`` is), until the process leaves the sites. :func:`vote_counts` draws its
    flips with this function's stream. Returns CSR-style ``(indptr, indices)``: the flipped
    labels of labelling d are ``indices[indptr[d]:indptr[d + 1]]``, increasing.
    """
    n = _checks.count(n, "n")
    size = _checks.count(size, "size")
    qf = _checks.flip_probability(q, 2)
    _generator(rng)
    pos = _draw_sites(n * size, qf, rng)
    label, draw = np.divmod(pos, size)
    order = np.argsort(draw, kind="stable")  # labels stay increasing within a labelling
    indptr = np.searchsorted(draw[order], np.arange(size + 1))
    return indptr, label[order]


def _generator(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    return rng


# --------------------------------------------------------------------------------------------
# Votes
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, fastmath=False, nogil=True)
def _flip_sums(delta, start, pos, size, out):
    """out[d] = start + sum of delta[i] over the labels i flipped in draw d, for the sorted flip
    sites pos (site i * size + d), added in the order of i. One pass over delta and pos; the
    rows of ``out`` (one per draw of the batch) stay in cache."""
    r = delta.shape[1]
    for d in range(size):
        for j in range(r):
            out[d, j] = start[j]
    i = 0
    base = 0  # i * size
    for p in range(pos.size):
        site = pos[p]
        while site >= base + size:
            i += 1
            base += size
        acc = out[site - base]
        row = delta[i]
        for j in range(r):
            acc[j] += row[j]


@dataclass(frozen=True)
class VoteCounts:
    """Votes of the base learner over ``draws`` noisy labellings, per test point.

    ``ones[j]`` counts the draws with alpha_j^T Y >= 1/2 (exactly); ``rechecked`` counts the
    (draw, test point) pairs whose float64 value fell within its error bound of 1/2 and were
    decided by an exactly rounded sum instead; ``rank`` is the number of sums updated per draw
    (r of the factorisation alpha = U V, or m when alpha is used as it is).
    """

    ones: NDArray[np.int64]
    draws: int
    rechecked: int
    rank: int


def _factor(A: NDArray[np.float64]):
    """(U, V, e): U = A Q, V = Q^T for the eigenvectors Q of A^T A whose eigenvalues are not
    negligible, and e[j] >= sum_i |A_ij - (U V)_ij| in exact arithmetic. None where r > m / 2
    (no gain) or the factorisation errs by more than _MAX_RESIDUAL."""
    n, m = A.shape
    if m < 4:
        return None
    w, Q = np.linalg.eigh(A.T @ A)
    keep = w > w[-1] * _EIG_RTOL
    r = max(1, int(np.sum(keep)))
    if 2 * r > m:
        return None
    V = np.ascontiguousarray(Q[:, -r:].T)
    U = np.ascontiguousarray(A @ V.T)
    # fl(U V) = U V + delta with |delta| <= gamma_r |U| |V|; the residual is rounded once; sums
    # of non-negative terms lose at most a relative gamma_n: all covered by the factors below
    resid = np.abs(A - U @ V).sum(axis=0)
    spread = (np.abs(U) @ np.abs(V)).sum(axis=0)
    e = (resid + 2.0 * (r + 2) * _U * spread) * (1.0 + 2.0 * (n + r + 4) * _U)
    if not np.all(e <= _MAX_RESIDUAL):
        return None
    return U, V, e


@dataclass(frozen=True)
class _Learner:
    """alpha and y prepared for counting: the update rows delta, the start z0, V (None: U = alpha)
    and the per-column bound ``tol`` on the error of the float64 value alpha_j^T Y - 1/2."""

    A: NDArray[np.float64]
    ones_y: NDArray[np.bool_]
    delta: NDArray[np.float64]
    z0: NDArray[np.float64]
    V: NDArray[np.float64] | None
    tol: NDArray[np.float64]


def _prepare(alpha: ArrayLike, y: ArrayLike) -> _Learner:
    A = _checks.finite_matrix(alpha, "alpha")
    n, m = A.shape
    if n == 0:
        raise ValueError("alpha must have at least one row (one weight per training label); got 0")
    if n * _U > 1e-9:
        raise ValueError(f"alpha has {n} rows; the error bound assumes n * 2^-53 < 1e-9")
    yv = _checks.labels(y, n, 2, "y")
    ones_y = yv == 1
    factor = _factor(A)
    if factor is None:
        U, V = A, None
        z0 = np.array([math.fsum(A[ones_y, j].tolist() + [-0.5]) for j in range(m)])  # alpha^T y - 1/2
        tol = 2.0 * (n + 3) * _U * (np.abs(A).sum(axis=0) + 0.5)
    else:
        U, V, e = factor
        z0 = np.array([math.fsum(U[ones_y, j].tolist()) for j in range(U.shape[1])])
        spread = np.abs(U).sum(axis=0) @ np.abs(V)  # sum_l sigma_l |V_lj|
        tol = 2.0 * ((n + U.shape[1] + 6) * _U * spread + _U) + e
    tol = tol * (1.0 + 1e-6)  # the bound itself was computed in float64
    delta = np.ascontiguousarray(U * (1 - 2 * yv)[:, None])
    return _Learner(A, ones_y, delta, z0, V, tol)


def _count(
    lr: _Learner, q: float, draws: int, rng: np.random.Generator, batch: int, progress: bool
) -> VoteCounts:
    n, m = lr.A.shape
    rank = lr.delta.shape[1]
    ones = np.zeros(m, dtype=np.int64)
    rechecked = 0
    bar = tqdm(total=draws, desc="noisy labellings", leave=False, **({} if progress else {"disable": True}))
    for start in range(0, draws, batch):
        size = min(batch, draws - start)
        pos = _draw_sites(n * size, q, rng)
        z = np.empty((size, rank))
        _flip_sums(lr.delta, lr.z0, pos, size, z)
        value = z if lr.V is None else z @ lr.V - 0.5  # alpha^T Y - 1/2
        vote = value >= 0.0
        close = np.abs(value) <= lr.tol[None, :]
        if close.any():
            label, draw = np.divmod(pos, size)
            for d, j in zip(*np.nonzero(close)):
                labels = lr.ones_y.copy()
                labels[label[draw == d]] ^= True
                vote[d, j] = math.fsum(lr.A[labels, j].tolist() + [-0.5]) >= 0.0
                rechecked += 1
        ones += vote.sum(axis=0)
        bar.update(size)
    bar.close()
    return VoteCounts(ones, draws, rechecked, rank)


def _batch(n: int, draws: int, batch_size: int | None) -> int:
    batch = max(1, _SITES_PER_BATCH // n) if batch_size is None else _checks.count(batch_size, "batch_size")
    return min(batch, draws)


def vote_counts(
    alpha: ArrayLike,
    y: ArrayLike,
    q: float,
    draws: int,
    rng: np.random.Generator,
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> VoteCounts:
    r"""Count, per column alpha_j of ``alpha`` (n x m), the draws Y ~ mu with alpha_j^T Y >= 1/2.

    Y is y with each label flipped independently with probability q (Sec. 4, binary case), the
    flips of each batch of draws drawn by :func:`flip_positions`; every column sees the same
    draws. With alpha = U V (or U = alpha when a low rank does not pay), d_i = U_i (1 - 2 y_i)
    (exact: a sign change) and z0 = U^T y (exactly rounded), a draw with flip set S has
    z = z0 + sum_{i in S} d_i, summed in float64, and alpha^T Y = V^T z + eps with |eps| <= e_j,
    the measured error of the factorisation.

    Error bound (u = 2^-53; Higham, Accuracy and Stability of Numerical Algorithms, Sec. 3-4):
    with sigma_l = sum_i |U_il| >= |z_l|, the update errs by at most (|S| + 3) u sigma_l
    <= (n + 3) u sigma_l, the product V^T z by (r + 2) u sum_l |V_lj| sigma_l and the subtraction
    of 1/2 by u (sum_l |V_lj| sigma_l + 1); twice their sum plus e_j bounds the error of the value.
    Within that bound of 0 the vote is recomputed with ``math.fsum``.

    ``batch_size`` draws share one pass (default: about 8 million labels per batch). The
    counts depend only on ``rng``'s state and ``batch_size``. Cost: O(n m^2) once (alpha^T alpha
    and its eigenvectors), then O(q n r + r m) per draw.
    """
    lr = _prepare(alpha, y)
    qf = _checks.flip_probability(q, 2)
    draws = _checks.count(draws, "draws")
    _generator(rng)
    batch = _batch(lr.A.shape[0], draws, batch_size)
    return _count(lr, qf, draws, rng, batch, _checks.flag(progress, "progress"))


def sampled_bound(
    alpha: ArrayLike,
    y: ArrayLike,
    q: float,
    *,
    n0: int,
    n: int,
    fail_prob: float,
    rng: np.random.Generator,
    votes: VoteCounts | None = None,
    progress: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    r"""The sampled counterpart of the Chernoff bound: CERTIFY's two draws (Algorithm 2).

    ``n0`` noisy labellings pick the class c of each test point (the majority vote, ties to 0),
    ``n`` fresh ones give the one-sided (1 - ``fail_prob``) Clopper-Pearson lower bound p on the
    vote share of c, lowered by a relative 1e-12 for the accuracy of the beta quantile. Returns
    ``(pred, log_tail)``: pred = c where p > 1/2, else -1 (abstain); log_tail = log(1 - p),
    log(1/2) where abstaining, ready for :func:`lib.labelflip.radius_from_log_tail`. As
    :func:`lib.labelflip.certify_monte_carlo` (binary case) with the votes of
    :func:`vote_counts`; the guarantee holds with probability >= 1 - fail_prob per test point.

    ``votes``: the ``n`` estimation draws already counted by :func:`vote_counts` for the same
    ``alpha`` and ``y`` (a vote-share estimate, say), drawn from a stream independent of ``rng``;
    only the ``n0`` selection draws are then made here. The guarantee needs the two sets of draws
    to be independent, not drawn in a particular order.
    """
    lr = _prepare(alpha, y)
    qf = _checks.flip_probability(q, 2)
    n0 = _checks.count(n0, "n0")
    n = _checks.count(n, "n")
    lv = _checks.level(fail_prob, "fail_prob")
    _generator(rng)
    progress = _checks.flag(progress, "progress")
    rows, m = lr.A.shape
    if votes is not None:
        if not isinstance(votes, VoteCounts) or votes.draws != n or np.shape(votes.ones) != (m,):
            raise ValueError(f"votes must be the VoteCounts of n = {n} draws for {m} test points")
    pick = (2 * _count(lr, qf, n0, rng, _batch(rows, n0, None), progress).ones > n0).astype(np.int64)
    ones = votes.ones if votes is not None else _count(lr, qf, n, rng, _batch(rows, n, None), progress).ones
    n_c = np.where(pick == 1, ones, n - ones)
    p_low = np.asarray(clopper_pearson_lower(n_c, n, lv), dtype=np.float64) * (1.0 - 1e-12)
    certified = p_low > 0.5
    with np.errstate(divide="ignore"):
        log_tail = np.where(certified, np.log1p(-p_low), np.log(0.5))
    return np.where(certified, pick, -1).astype(np.int64), log_tail
