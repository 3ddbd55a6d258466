r"""Chernoff bounds that replace sampling in label-flip smoothing (paper, Sec. 4.1 and App. B.2).

The least-squares prediction on a test point is linear in the training labels, ``alpha^T y``
(eq. 11/12). Under label noise each noisy label is an independent random variable, so the
probability that the smoothed classifier votes for the other class is bounded by a Chernoff
bound, which is a one-dimensional convex problem in t. No sampling is involved: the resulting
``p_lower`` is a deterministic lower bound on G(mu, phi) of the predicted class.

Soundness does not depend on how well t is optimised: every t gives a valid bound, so an
early stop of Newton's method only costs tightness. What matters is that the bound is
evaluated, in float64, at the t that is returned; that is what :func:`chernoff_bound` does.
The float64 evaluation is then rounded up by a bound on its own rounding error (summed in a
pairwise tree of known depth, see :func:`_float64_bound`), so the reported log B is never
below the exact log of the Chernoff bound: no caller depends on a margin of its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, logsumexp

from . import _checks, fused

__all__ = ["ChernoffResult", "chernoff_bound", "chernoff_certify", "binary_objective"]

LOG_HALF = float(np.log(0.5))
_EPS = float(np.finfo(np.float64).eps)
_EXACT_VOTE_OUTCOMES = 256  # K^s noisy labellings of the s non-zero weights: g by enumeration


@dataclass(frozen=True)
class ChernoffResult:
    """Output of :func:`chernoff_bound` for m test points.

    Attributes
    ----------
    pred: (m,) int array, the predicted class. Where ``log_tail < log(1/2)`` it is the smoothed
        prediction g (binary: the side of t, ``1{t >= 0}``). Where nothing is certified it is g
        computed exactly by enumeration when alpha has few non-zero weights (K^s <= 256
        labellings of its s non-zero entries), and otherwise the class of largest expected
        score (binary: ``1{E[alpha^T Y] >= 1/2}``, the side of t* in exact arithmetic), which
        can differ from g: g is the majority vote, not the sign of the expected vote.
    log_tail: (m,) float64, ``min(log B, log 1/2)`` where B bounds the probability that the
        base learner does not vote for ``pred`` (rounded up: never below the exact log B).
        Only where it is below log(1/2) is ``1 - exp(log_tail)`` a lower bound on
        G(mu, phi, pred) (and pred = g); at log(1/2) nothing is certified (radius 0).
    t: (m,) for K = 2, (m, K-1) for K > 2: the Chernoff parameters at which the bound was
        evaluated (for K > 2 one per rival of the class of largest expected score, in
        increasing class order; that class is ``pred`` wherever something is certified).
    iterations: (m,) Newton iterations each test point took on the full problem (for K > 2,
        the most over its rivals).
    """

    pred: NDArray[np.int64]
    log_tail: NDArray[np.float64]
    t: NDArray[np.float64]
    iterations: NDArray[np.int64]

    @property
    def p_lower(self) -> NDArray[np.float64]:
        """``max(1 - B, 1/2)`` (Algorithm 1, step 2): a lower bound on G(mu, phi, pred) where it
        exceeds 1/2; the value 1/2 itself means "no certificate", not a bound. Rounded down
        (one float64 step below ``-expm1(log_tail)``), so it never exceeds 1 - B."""
        lt = self.log_tail
        return np.where(lt < LOG_HALF, np.maximum(np.nextafter(-np.expm1(lt), 0.0), 0.5), 0.5)


def binary_objective(t: ArrayLike, alpha: ArrayLike, y: ArrayLike, q: float) -> NDArray[np.float64]:
    r"""Eq. (7):
    :math:`t/2 + \sum_{y_i=1}\log(q+(1-q)e^{-t\alpha_i}) + \sum_{y_i=0}\log(1-q+qe^{-t\alpha_i})`.

    For t > 0 this is the log of the Chernoff bound (13) on P(alpha^T Y <= 1/2); for t < 0 it is
    the log of the bound on P(alpha^T Y >= 1/2) at |t|. Evaluated in float64, stably
    (``log(a + b e^{-s}) = log a + softplus(log(b/a) - s)``), and rounded up by a bound on the
    rounding error of that evaluation, so the value returned is never below the exact one.
    ``alpha`` is (n,) or (n, m), ``t`` broadcasts against its trailing axis; ``y`` holds labels
    in {0, 1} and q lies in (0, 1/2).
    """
    qf = _checks.flip_probability(q, 2)
    a = np.asarray(alpha, dtype=np.float64) if np.asarray(alpha).dtype.kind != "c" else None
    if a is None or a.ndim not in (1, 2):
        raise ValueError("alpha must be a real (n,) or (n, m) array")
    a2 = _checks.finite_matrix(a[:, None] if a.ndim == 1 else a, "alpha")
    tt = np.asarray(_checks.finite_matrix(np.atleast_1d(t).reshape(1, -1), "t")).reshape(np.shape(t))
    log_a, c = _binary_coefficients(_checks.labels(y, a2.shape[0], 2), qf)
    out, _ = _float64_bound(torch.from_numpy(np.ascontiguousarray(a2)), c, log_a, np.atleast_1d(tt))
    return out.reshape(np.broadcast_shapes(tt.shape, a.shape[1:])) if a.ndim > 1 or tt.ndim else float(out[0])


def _tree_sum(x: torch.Tensor) -> tuple[NDArray, int]:
    """Column sums of an (n, m) tensor by pairwise halving, and the most roundings any entry
    went through (``depth``): the computed sum is within depth * u * sum |x_i| of the exact one
    (u = eps/2), whatever order a library reduction would have used. Overwrites ``x`` (the
    halves are added in place)."""
    depth = 0
    while x.shape[0] > 1:
        h = x.shape[0] // 2
        if x.shape[0] % 2:
            x[0] += x[2 * h]  # the odd row: one more rounding for that entry
            depth += 1
        x[:h] += x[h : 2 * h]
        x = x[:h]
        depth += 1
    return x[0].numpy().copy() if x.shape[0] else np.zeros(x.shape[1]), depth


def _float64_bound(A: torch.Tensor, c: NDArray, log_a: NDArray, t: NDArray) -> tuple[NDArray, torch.Tensor]:
    """f(t) of eq. (7), in float64 and rounded up, for (n, m) weights A and t of shape (m,) (or
    any shape broadcasting against A's columns), and the (n, m) array u = c - t alpha it was
    computed from.

    The one place where the reported bound is computed. torch's logaddexp is exact (no softplus
    threshold) and multi-threaded. Rounding (eps = float64 machine epsilon, L = |log q| +
    |log(1-q)|): u_i = c_i - t alpha_i is within eps (|u_i| + 2|c| + L) of the exact value
    (c and log a are themselves rounded logs); softplus is 1-Lipschitz and evaluated to 2 eps
    relative; the pairwise tree sum adds depth/2 * eps * sum softplus; n1 log q + n0 log(1-q)
    is within 3 n L eps; the two final additions eps of their magnitudes. Twice that total,

        2 eps [sum |u_i| + (depth/2 + 3) sum softplus(u_i) + 2 n |c| + 4 n L + |t|/2 + |sum log a|],

    is added to f, so the value returned is never below the exact f(t).
    """
    n = A.shape[0]
    u = torch.addcmul(torch.from_numpy(c[:, None]), A, torch.from_numpy(t), value=-1.0)
    sp = torch.logaddexp(torch.zeros((), dtype=torch.float64), u)
    terms, depth = _tree_sum(sp)  # overwrites sp
    abs_u = u.abs().sum(dim=0).numpy()
    vals, counts = np.unique(log_a, return_counts=True)  # two values: n1 log q + n0 log(1-q)
    sum_log_a = float(np.dot(counts.astype(np.float64), vals))
    max_c = float(np.max(np.abs(c), initial=0.0))
    big_l = max_c + 2.0 * float(np.max(np.abs(log_a), initial=0.0))  # >= |log q| + |log(1-q)|
    f = t / 2.0 + sum_log_a + terms
    err = abs_u + (depth / 2.0 + 3.0) * np.abs(terms) + 2.0 * n * max_c + 4.0 * n * big_l
    err = err + np.abs(t) / 2.0 + abs(sum_log_a)
    return f + 2.0 * _EPS * err, u


def _binary_coefficients(y: NDArray, q: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per training point: log a_i and c_i = log(b_i / a_i) with E e^{-t a Y} = a + b e^{-t alpha}."""
    lq, l1q = np.log(q), np.log1p(-q)
    one = y == 1
    log_a = np.where(one, lq, l1q)
    c = np.where(one, l1q - lq, lq - l1q)
    return log_a, c


def _safeguarded_newton(
    derivatives,
    t: NDArray,
    bracket: tuple[NDArray, NDArray],
    lower: NDArray,
    upper: NDArray,
    scale: NDArray,
    max_iter: int,
    tol: float,
) -> tuple[NDArray, NDArray]:
    """Vectorised safeguarded Newton for m independent convex problems in one variable each.

    ``derivatives(active, t_active)`` returns f'(t) and f''(t) for the still-active problems
    (``active`` are their indices, in increasing order). Keeps a bracket [lo, hi] with
    f'(lo) < 0 < f'(hi), starting from ``bracket`` (infinite ends allowed); a Newton step outside the
    bracket is replaced by bisection, or by a step of max(|t|, scale) towards the descent side while the
    bracket is open on that side; iterates are clipped to [lower, upper]. A problem stops when a
    step moves t by less than ``tol * (|t| + scale)`` (Newton converges quadratically, so the
    point after that step is far more accurate than ``tol``), when f'(t) = 0, or at ``lower``
    with f' >= 0. Returns (t, iterations). Any t is a valid Chernoff parameter: the callers
    evaluate the bound in float64 at the returned t, so an early stop costs tightness only.
    """
    m = t.size
    t = np.array(t, dtype=np.float64)
    lo = np.array(np.broadcast_to(bracket[0], m), dtype=np.float64)
    hi = np.array(np.broadcast_to(bracket[1], m), dtype=np.float64)
    active = np.arange(m)
    iters = np.zeros(m, dtype=np.int64)
    for _ in range(max_iter):
        iters[active] += 1
        ta = t[active]
        g, h = derivatives(active, ta)
        lo[active] = np.where(g < 0, np.maximum(lo[active], ta), lo[active])
        hi[active] = np.where(g > 0, np.minimum(hi[active], ta), hi[active])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf: a step outside the bracket
            new = ta - np.where(h > 0, g / h, np.inf * np.sign(g))
        la, ha, sc = lo[active], hi[active], scale[active]
        inside = np.isfinite(new) & (new > la) & (new < ha)
        both = np.isfinite(la) & np.isfinite(ha)
        mid = 0.5 * np.where(both, la, 0.0) + 0.5 * np.where(both, ha, 0.0)  # no inf - inf where open
        grow = np.where(g < 0, ta + np.maximum(np.abs(ta), sc), ta - np.maximum(np.abs(ta), sc))
        new = np.clip(np.where(inside, new, np.where(both, mid, grow)), lower[active], upper[active])
        done = (np.abs(new - ta) <= tol * (np.abs(ta) + sc)) | (g == 0) | ((ta <= lower[active]) & (g >= 0))
        t[active] = new
        active = active[~done]
        if active.size == 0:
            break
    return t, iters


def _newton_binary(
    alpha: NDArray,
    c: NDArray,
    max_iter: int,
    tol: float,
    t0: NDArray | None = None,
    weights: NDArray | None = None,
) -> tuple[NDArray, NDArray]:
    """:func:`_safeguarded_newton` on f'(t) = 1/2 - w sum_i alpha_i expit(c_i - t alpha_i) (eq. 7).

    Works in float32 on the active columns only: the final bound is re-evaluated in float64 by
    the caller, and any t is a valid Chernoff parameter, so lower precision here costs
    tightness, not soundness. ``t0`` is the starting point (default 0); ``weights`` (same shape
    as ``alpha``) multiply the terms of the sums, for the binned warm start of
    :func:`_binned_start`. ``c`` is (n,) or (n, m).

    Columns whose largest |alpha| lies outside [2^-40, 2^40] (float32 would overflow or lose
    alpha^2) are solved in the variable t' = s t for alpha' = alpha / s, s a power of two near
    max |alpha|: then f'(t') = 1/(2s) - w sum alpha'_i expit(c_i - t' alpha'_i), same minimiser.
    """
    n, m = alpha.shape
    col_max = np.abs(alpha).max(axis=0) if n else np.zeros(m)
    extreme = (col_max > 0) & ((col_max > 2.0**40) | (col_max < 2.0**-40))
    s = np.ones(m)
    if np.any(extreme):
        # alpha' max in [1/2, 1); s >= 2^-1000 keeps 1/(2s) finite (subnormal weights never
        # reach the threshold 1/2 anyway)
        s[extreme] = np.maximum(np.ldexp(1.0, np.frexp(col_max[extreme])[1]), 2.0**-1000)
        alpha = alpha / s[None, :]
        col_max = col_max / s
    half = 0.5 / s  # f'(t') = 1/(2s) - ...
    a32 = alpha.astype(np.float32, copy=False)
    wa = a32 if weights is None else (a32 * weights).astype(np.float32)
    A2 = wa * a32
    c32 = c.astype(np.float32)
    c32 = c32[:, None] if c32.ndim == 1 else c32

    def derivatives(active: NDArray, t: NDArray) -> tuple[NDArray, NDArray]:
        full = active.size == m
        A = a32 if full else a32[:, active]
        sig = expit(
            (c32 if full or c32.shape[1] == 1 else c32[:, active]) - A * t.astype(np.float32)[None, :]
        )
        g = half[active] - np.einsum("ij,ij->j", wa if full else wa[:, active], sig, dtype=np.float64)
        sig *= 1.0 - sig
        return g, np.einsum("ij,ij->j", A2 if full else A2[:, active], sig, dtype=np.float64)

    scale = 1.0 / np.maximum(col_max, 1e-300)  # t alpha ~ 1
    t_max = np.minimum(1e4 * scale, 1e30)  # further changes the bound negligibly; float32-safe
    t = np.zeros(m) if t0 is None else np.array(t0, dtype=np.float64) * s
    t, iters = _safeguarded_newton(derivatives, t, (-np.inf, np.inf), -t_max, t_max, scale, max_iter, tol)
    with np.errstate(over="ignore"):
        return np.clip(t / s, -1e300, 1e300), iters


_BINS = 256


def _binned_start(alpha: NDArray, y: NDArray, c: NDArray, max_iter: int) -> NDArray:
    """A close starting point for Newton: minimise eq. (7) with each column's weights grouped
    into ``_BINS`` equal-width bins per label (count and mean weight per bin).

    Cheap (Newton then runs on 2 * _BINS terms instead of n) and, since the exact Newton
    iterations that follow start from here and run to the same tolerance, it changes how fast
    the optimum is found, not which optimum or which bound.
    """
    counts, sums = fused.histogram(alpha, y, 2, _BINS, signed=True)  # (2 * _BINS, m): label 0, then 1
    mean = sums / np.maximum(counts, 1)
    c_bins = np.repeat(
        np.array([c[y == 0][0] if np.any(y == 0) else 0.0, c[y == 1][0] if np.any(y == 1) else 0.0]), _BINS
    )
    t0, _ = _newton_binary(mean, c_bins, max_iter, 1e-4, weights=counts.astype(np.float32))
    return t0


def _exact_f_and_newton_step(t: NDArray, alpha: NDArray, c: NDArray, log_a: NDArray):
    """f(t) of eq. (7) in float64 at the given t (one per column), with f'(t) / f''(t).

    One multi-threaded float64 pass: the bound itself and the Newton step that says whether t is
    already optimal to the tolerance.
    """
    A = torch.from_numpy(alpha)
    f, u = _float64_bound(A, c, log_a, t)
    sig = u.sigmoid_()  # reuse the buffers: three n x m arrays in all
    tmp = A * sig
    g = 0.5 - tmp.sum(dim=0).numpy()
    tmp.mul_(A).mul_(sig.neg_().add_(1.0))  # alpha^2 sigma (1 - sigma)
    h = tmp.sum(dim=0).numpy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.where(h > 0, g / h, np.where(g == 0, 0.0, np.inf))
    return f, step


def _polish_warm_start(a, yv, c, q, max_iter, tol):
    """Binned warm start, then one fused float64 pass (:func:`lib.fused.binary_log_bound`) that
    evaluates the bound and the Newton step at once; only columns whose Newton step is larger
    than 1e-4 relative run exact Newton to ``tol``. A relative error d in t costs about d^2 |f|
    in log B (f is quadratic at its minimum), i.e. below 1e-8 relative: tightness only, never
    soundness."""
    t = _binned_start(a, yv, c, max_iter)
    f, step = fused.binary_log_bound(a, yv, t, q, with_step=True)
    scale = 1.0 / np.maximum(np.abs(a).max(axis=0), 1e-300)
    need = ~(np.abs(step) <= max(tol, 1e-4) * (np.abs(t) + scale))
    iters = np.ones(t.size, dtype=np.int64)
    if np.any(need):
        t_need, it = _newton_binary(a[:, need], c, max_iter, tol, t0=t[need])
        t[need] = t_need
        iters[need] += it
        f[need] = fused.binary_log_bound(a[:, need], yv, t_need, q)
    return t, f, iters


def chernoff_bound(
    alpha: ArrayLike,
    y: ArrayLike,
    q: float,
    num_classes: int = 2,
    *,
    max_iter: int = 60,
    tol: float = 1e-5,
    warm_start: bool = True,
) -> ChernoffResult:
    r"""Deterministic smoothed prediction and Chernoff tail bound for every column of ``alpha``.

    With probability one (no sampling), for each test point j the smoothed least-squares
    classifier g (eq. 1 / eq. 17) predicts ``pred[j]`` whenever ``log_tail[j] < log(1/2)``, and
    G(mu, phi, pred[j]) >= 1 - exp(log_tail[j]). Where nothing is certified, ``pred[j]`` is g
    computed exactly when alpha[:, j] has few non-zero weights, else the side of the expected
    vote, which may differ from g (see :class:`ChernoffResult`).

    Binary (K = 2, labels {0, 1}, threshold 1/2 as in the paper): minimise eq. (7) over t by
    safeguarded Newton; B = exp(f(t)) at the returned t (eq. 13; for t < 0 it is the mirrored
    bound on P(alpha^T Y >= 1/2)). f is convex with f(0) = 0 and f'(0) = 1/2 - E[alpha^T Y], so
    f(t) < log(1/2) only on the side of t*: where the bound certifies, ``pred = 1{t >= 0}`` = g.

    Multi-class (K > 2, labels {0..K-1}, each flipped label uniform over the other K-1 classes):
    the bound is computed for the class with the largest expected score E[alpha^T Y_c] (the
    multi-class analogue of the sign of t*: for K = 2 the two coincide). For each rival c' the bound (24)
    on P(alpha^T Y_pred <= alpha^T Y_c') is minimised over t >= 0, and the bounds are combined
    by the UNION bound, B = sum_c' B_c'. The event "pred does not win the vote" is the union of
    the events "c' scores at least as much as pred", so this B bounds it. Taking only the worst
    rival (max_c' B_c'), as App. B.2 suggests, bounds the probability of losing to that one
    rival, not of losing: it is not a bound on G and is not used.

    Parameters
    ----------
    alpha: (n,) or (n, m) kernel weights (eq. 12), one column per test point.
    y: (n,) training labels in {0, ..., K-1}.
    q: flip probability in (0, (K-1)/K).
    max_iter, tol: Newton's budget and relative step tolerance (early stops cost tightness only).
    warm_start: for n > 8 * 256, start from the optimum of a binned problem (K = 2:
        :func:`_binned_start`, polished by :func:`_polish_warm_start`; K > 2:
        :func:`_multiclass_binned_start`); False starts every Newton at t = 0. Either way the
        bound is the float64 bound at the returned t.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    raw = np.asarray(alpha)
    if raw.ndim == 1:
        raw = raw[:, None]
    a = np.ascontiguousarray(_checks.finite_matrix(raw, "alpha"))
    yv = _checks.labels(y, a.shape[0], k)
    max_iter = _checks.count(max_iter, "max_iter")
    tol = _checks.positive(tol, "tol")
    warm_start = _checks.flag(warm_start, "warm_start")
    m = a.shape[1]
    if k == 2:
        log_a, c = _binary_coefficients(yv, qf)
        if m == 0:
            t, log_b, iters = np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
        elif warm_start and a.shape[0] > 8 * _BINS:
            t, log_b, iters = _polish_warm_start(a, yv, c, qf, max_iter, tol)
        else:
            t, iters = _newton_binary(a, c, max_iter, tol)
            # Final bound in float64 at the returned t (any t is valid; f(0) = 0: "no bound").
            log_b = binary_objective(t, a, yv, qf)
        log_tail = np.minimum(log_b, LOG_HALF)
        # certified: the side of t is g (f convex, f(0) = 0: f(t) < 0 only on the side of t*)
        expected = a.T @ np.where(yv == 1, 1.0 - qf, qf)  # E[alpha^T Y]; f'(0) = 1/2 - E
        pred = np.where(log_tail < LOG_HALF, t >= 0, expected >= 0.5).astype(np.int64)
        pred = _exact_where_uncertified(pred, log_tail, a, yv, qf, k)
        return ChernoffResult(pred, log_tail, t, iters)
    if m == 0:
        return ChernoffResult(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, k - 1)), np.zeros(0, np.int64))
    # Multi-class: one Newton problem per (test point, rival); stream the test points in chunks
    # so that the work arrays stay near 2e7 entries (warm start) or 4e6 (without it).
    warm = warm_start and a.shape[0] > 8 * _BINS
    # (n, chunk) histograms for the warm start; (n, chunk * (K-1)) work arrays without it
    chunk = max(1, int((2e7 if warm else 4e6 / (k - 1)) // max(a.shape[0], 1)))
    parts = [_multiclass(a[:, s : s + chunk], yv, qf, k, max_iter, tol, warm) for s in range(0, m, chunk)]
    res = ChernoffResult(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("pred", "log_tail", "t", "iterations"))
    )
    pred = _exact_where_uncertified(res.pred, res.log_tail, a, yv, qf, k)
    return ChernoffResult(pred, res.log_tail, res.t, res.iterations)


def _exact_vote(alpha: NDArray, y: NDArray, q: float, k: int) -> int | None:
    """g = the smoothed prediction (eq. 1 / 17), exactly, for one column of weights with few
    non-zero entries; None when there are more than :data:`_EXACT_VOTE_OUTCOMES` labellings.

    Only the s coordinates with alpha_i != 0 move the vote, so g is a sum over the K^s noisy
    labellings of those coordinates, in rational arithmetic (weights and q are floats, hence
    exact rationals). Base vote: binary 1{alpha^T y >= 1/2}; K > 2 the first class of largest
    score sum_{i: y_i = c} alpha_i (numpy's argmax). g: binary 1{G_1 >= 1/2}; K > 2 the first
    class of largest G_c.
    """
    support = np.nonzero(alpha)[0]
    if k**support.size > _EXACT_VOTE_OUTCOMES:
        return None
    qf = Fraction(q)
    keep, other = 1 - qf, qf / (k - 1)
    w = [Fraction(float(alpha[i])) for i in support]
    clean = [int(y[i]) for i in support]
    G = [Fraction(0)] * k
    for labels in itertools.product(range(k), repeat=support.size):
        prob = Fraction(1)
        for lab, c0 in zip(labels, clean):
            prob *= keep if lab == c0 else other
        if k == 2:
            vote = int(sum((wi for wi, lab in zip(w, labels) if lab == 1), Fraction(0)) >= Fraction(1, 2))
        else:
            scores = [sum((wi for wi, lab in zip(w, labels) if lab == c), Fraction(0)) for c in range(k)]
            vote = scores.index(max(scores))
        G[vote] += prob
    if k == 2:
        return int(G[1] >= Fraction(1, 2))
    return G.index(max(G))


def _exact_where_uncertified(
    pred: NDArray, log_tail: NDArray, a: NDArray, y: NDArray, q: float, k: int
) -> NDArray:
    """Replace ``pred`` by the exact g (:func:`_exact_vote`) in the uncertified columns whose
    weights have few non-zero entries; elsewhere leave it."""
    pred = np.array(pred, dtype=np.int64)
    limit = int(np.floor(np.log(_EXACT_VOTE_OUTCOMES) / np.log(k) + 1e-9))
    uncertified = np.nonzero(log_tail >= LOG_HALF)[0]
    if uncertified.size == 0:
        return pred
    small = uncertified[np.count_nonzero(a[:, uncertified], axis=0) <= limit]
    for j in small:
        g = _exact_vote(a[:, j], y, q, k)
        if g is not None:
            pred[j] = g
    return pred


def chernoff_certify(
    alpha: ArrayLike, y: ArrayLike, q: float, num_classes: int = 2
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``(pred, p_lower)`` of :func:`chernoff_bound`; ``p_lower = max(1 - B, 1/2)``.

    ``p_lower`` is rounded down to float64, so it stops at 1 - 2^-53 when B < 1e-16; use
    :func:`chernoff_bound` and its ``log_tail`` to keep the full range (the certification
    pipeline does).
    """
    res = chernoff_bound(alpha, y, q, num_classes)
    return res.pred, res.p_lower


# --------------------------------------------------------------------------------------------
# Multi-class, eq. (22)-(24)
# --------------------------------------------------------------------------------------------


def _pair_probs(yv: NDArray, c: NDArray, r: NDArray, q: float, k: int) -> tuple[torch.Tensor, ...]:
    """P(Z_j = +1), P(Z_j = 0), P(Z_j = -1) for Z_j = Y_jc - Y_jr (eq. 23), as float64 tensors.

    ``c`` and ``r`` are (P,) class indices; each result has shape (n, P).
    """
    off = q / (k - 1)
    yt = torch.as_tensor(yv)[:, None]
    is_c = yt == torch.as_tensor(c)[None, :]
    is_r = yt == torch.as_tensor(r)[None, :]
    f64 = torch.float64
    p_plus = torch.where(is_c, torch.tensor(1.0 - q, dtype=f64), torch.tensor(off, dtype=f64))
    p_minus = torch.where(is_r, torch.tensor(1.0 - q, dtype=f64), torch.tensor(off, dtype=f64))
    p_zero = torch.where(
        is_c | is_r, torch.tensor(q * (k - 2) / (k - 1), dtype=f64), torch.tensor(1.0 - 2.0 * off, dtype=f64)
    )
    return p_plus, p_zero, p_minus


def _pair_terms(
    a: NDArray, yv: NDArray, c: NDArray, r: NDArray, q: float, k: int
) -> tuple[torch.Tensor, ...]:
    """Eq. (24) rewritten for t >= 0 with one exponential per term and nothing that overflows.

    Each term log(p+ e^{-t a_j} + p0 + p- e^{t a_j}) equals
    t|a_j| + log(p_near + p0 e^{-t|a_j|} + p_far e^{-2t|a_j|}), with (p_near, p_far) = (p-, p+)
    where a_j >= 0 and (p+, p-) where a_j < 0. p_near >= q/(K-1) > 0, so the logarithm never
    sees 0. Returns |a|, p_near, p_far, p0 as float64 (n, P) tensors, one column per (c, r) pair.
    """
    p_plus, p_zero, p_minus = _pair_probs(yv, c, r, q, k)
    A = torch.from_numpy(a)
    pos = A >= 0
    return A.abs(), torch.where(pos, p_minus, p_plus), torch.where(pos, p_plus, p_minus), p_zero


def _pair_log_bound(
    t: torch.Tensor, terms: tuple[torch.Tensor, ...], *, with_step: bool = False
) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.float64]]:
    """F(t) of eq. (24), the log of the Chernoff bound on P(alpha^T Y_c <= alpha^T Y_r), in
    float64 for t >= 0 (one per column), rounded up: the one place the multi-class bound is
    computed. With ``with_step`` also the Newton step F'(t) / F''(t) from the same pass (in
    float64; it only decides whether t is already optimal, see :func:`_pair_newton_step`).

    Rounding (u = eps/2): s_j = t |a_j| is off by u s_j, which moves e = e^{-s} by a relative
    u (1 + s_j); z = p_near + p0 e + p_far e^2 (with p's rounded from q) is then within a
    relative u (7 + 2 s_j), so log z within u (7 + 2 s_j + |log z_j|) absolute; adding s_j and
    the pairwise tree sum add u (depth + 1) sum |s_j + log z_j|. Twice the total,

        2 eps [4 n + 1.5 sum s_j + sum |log z_j| + (depth/2 + 1) sum |s_j + log z_j|],

    is added, so the value returned is never below the exact F(t)."""
    abs_a, near, far, p0 = terms
    s = abs_a * t[None, :]
    e = torch.exp(-s)
    z = near + p0 * e + far * e * e
    if with_step:
        fe2 = far * e * e
        g = (abs_a * (near - fe2) / z).sum(dim=0).numpy()
        h = (abs_a * abs_a * (p0 * e * (near + fe2) + 4.0 * near * fe2) / (z * z)).sum(dim=0).numpy()
        del fe2
    del e
    log_z = torch.log(z)
    del z
    term = s + log_z
    err = (1.5 * s.sum(dim=0) + log_z.abs().sum(dim=0)).numpy() + 4.0 * s.shape[0]
    del s, log_z
    abs_term = term.abs().sum(dim=0).numpy()
    total, depth = _tree_sum(term)  # overwrites term
    err = err + (depth / 2.0 + 1.0) * abs_term
    bound = total + 2.0 * _EPS * err
    if not with_step:
        return bound
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.where(h > 0, g / h, np.where(g == 0, 0.0, np.inf))
    return bound, step


def _pair_newton_step(t: torch.Tensor, terms32: tuple[torch.Tensor, ...]) -> tuple[NDArray, NDArray]:
    """F'(t) and F''(t) of eq. (24) from float32 terms (|a|, w|a|, w a^2, p_near, p_far, p0),
    summed in float64; w are term multiplicities (1, or the bin counts of
    :func:`_multiclass_binned_start`). With e = e^{-t|a|} and z = p_near + p0 e + p_far e^2:
    F' = sum w |a| (p_near - p_far e^2) / z and
    F'' = sum w a^2 (p0 e (p_near + p_far e^2) + 4 p_near p_far e^2) / z^2,
    a form of F'' with no cancellation (every term is positive). Only Newton's path uses this;
    the bound is :func:`_pair_log_bound`, in float64."""
    abs_a, wa, wa2, near, far, p0 = terms32
    e = torch.exp(abs_a * -t.to(torch.float32)[None, :])
    pe = p0 * e
    fe2 = e.mul_(e).mul_(far)  # p_far e^2, in e's buffer
    z = near + pe + fe2
    g = (near - fe2).mul_(wa).div_(z).sum(dim=0, dtype=torch.float64)
    num = pe.mul_(near + fe2).add_(fe2 * near, alpha=4.0)
    h = num.mul_(wa2).div_(z.mul_(z)).sum(dim=0, dtype=torch.float64)
    return g.numpy(), h.numpy()


def _pair_newton(
    work: tuple[torch.Tensor, ...], t0: NDArray, scale: NDArray, max_iter: int, tol: float
) -> tuple[NDArray, NDArray]:
    """Safeguarded Newton on t' >= 0 for the pair problems whose float32 terms are ``work`` (as in
    :func:`_pair_newton_step`, one column per problem, weights already divided by the column's
    scale), from ``t0``; finished columns are dropped from the work arrays as Newton goes."""
    state = {"active": np.arange(t0.size), "work": work}

    def derivatives(active: NDArray, t: NDArray) -> tuple[NDArray, NDArray]:
        if active.size < state["active"].size:  # drop the finished pairs' columns
            keep = torch.from_numpy(np.searchsorted(state["active"], active))
            state["work"] = tuple(w[:, keep] if w.shape[1] > 1 else w for w in state["work"])
            state["active"] = active
        return _pair_newton_step(torch.from_numpy(t), state["work"])

    zero = np.zeros(t0.size)
    return _safeguarded_newton(derivatives, t0, (0.0, np.inf), zero, 1e4 * scale, scale, max_iter, tol)


# Per-category probabilities of the pair problem (c = the predicted class, r = the rival) for a
# weight a_j >= 0 or < 0: (p_near, p_far, p0) of :func:`_pair_terms`. The five categories: y_j = c
# with a_j >= 0 / < 0, y_j = r with a_j >= 0 / < 0, and y_j any other class (either sign).
def _category_probs(q: float, k: int) -> tuple[NDArray, NDArray, NDArray]:
    off = q / (k - 1)
    keep = 1.0 - q
    pz = q * (k - 2) / (k - 1)
    near = np.array([off, keep, keep, off, off])  # (p-, p+) where a >= 0, (p+, p-) where a < 0
    far = np.array([keep, off, off, keep, off])
    p0 = np.array([pz, pz, pz, pz, 1.0 - 2.0 * off])
    return near, far, p0


def _multiclass_binned_start(
    a: NDArray, yv: NDArray, pred: NDArray, rivals: NDArray, q: float, k: int, max_iter: int
) -> NDArray:
    """A close starting point t >= 0 for every (test point, rival) pair: minimise eq. (24) with
    each test point's |alpha_j| grouped into ``_BINS`` equal-width bins per category (class of
    y_j and sign of alpha_j), each bin represented by its count and mean |alpha|.

    One pass over the (n, m) weights builds the histograms, shared by the K-1 rivals of a test
    point (the categories y_j = c, y_j = r and "other" of a pair are sums of per-class bins);
    Newton then runs on 5 * _BINS terms per pair instead of n. The exact Newton steps that follow
    (:func:`_multiclass`) start from here, so this changes how fast the optimum is found, not
    the bound: that is always the float64 bound at the returned t.
    """
    n, m = a.shape
    cnt, sm = fused.histogram(a, yv, 2 * k, _BINS, signed=False, sign_split=True)  # (2K * _BINS, m)
    counts = torch.from_numpy(cnt.T.reshape(m, 2 * k, _BINS))
    sums = torch.from_numpy(sm.T.reshape(m, 2 * k, _BINS))
    col_max = torch.from_numpy(np.abs(a).max(axis=0) if n else np.zeros(m))
    # per pair (j, r): the five categories' bins, (5, _BINS, P) -> (5 * _BINS, P)
    cols = torch.from_numpy(np.repeat(np.arange(m), k - 1))
    pc = torch.from_numpy(pred[np.repeat(np.arange(m), k - 1)])
    pr = torch.from_numpy(rivals.reshape(-1))

    def pick(t: torch.Tensor) -> torch.Tensor:
        c_pos, c_neg = t[cols, 2 * pc], t[cols, 2 * pc + 1]
        r_pos, r_neg = t[cols, 2 * pr], t[cols, 2 * pr + 1]
        other = t[cols].sum(dim=1) - c_pos - c_neg - r_pos - r_neg
        return torch.stack([c_pos, c_neg, r_pos, r_neg, other]).permute(0, 2, 1).reshape(5 * _BINS, -1)

    w = pick(counts).clamp_(min=0.0)  # the subtraction is exact for counts; sums may round
    mean = (pick(sums) / w.clamp(min=1.0)).clamp_(min=0.0)
    cm = col_max.numpy()[cols.numpy()]
    s = np.where(cm > 0, np.ldexp(1.0, np.frexp(np.where(cm > 0, cm, 1.0))[1]), 1.0)
    mean_s = (mean / torch.from_numpy(s)[None, :]).to(torch.float32)
    w32 = w.to(torch.float32)
    near, far, p0 = (
        torch.from_numpy(np.repeat(x, _BINS)[:, None]).to(torch.float32) for x in _category_probs(q, k)
    )
    work = (mean_s, w32 * mean_s, w32 * mean_s * mean_s, near, far, p0)
    scale = 1.0 / np.maximum(cm / s, 1e-300)
    t, _ = _pair_newton(work, np.zeros(cols.numel()), scale, max_iter, 1e-4)
    with np.errstate(over="ignore"):
        return np.minimum(t / s, 1e308)


def _multiclass(
    a: NDArray, yv: NDArray, q: float, k: int, max_iter: int, tol: float, warm_start: bool = False
) -> ChernoffResult:
    n, m = a.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), yv] = 1.0
    clean = a.T @ onehot  # (m, K): alpha^T Y_c on the clean labels
    pred = np.argmax(clean, axis=1).astype(np.int64)  # = argmax of the expected scores
    rivals = np.array([[c for c in range(k) if c != p] for p in pred])  # (m, K-1)
    # One problem per (test point, rival) pair, t >= 0.
    cols = np.repeat(np.arange(m), k - 1)
    pc = pred[cols]
    pr = rivals.reshape(-1)
    if warm_start:
        # binned warm start, then one fused float64 pass (lib.fused) that gives the bound and the
        # Newton step at once; only pairs whose step is larger than 1e-4 relative run exact Newton
        # to ``tol`` (a relative error d in t costs about d^2 |F| in log B: tightness only)
        t = _multiclass_binned_start(a, yv, pred, rivals, q, k, max_iter)
        log_b, step = fused.pair_log_bound(a, yv, cols, pc, pr, t, q, k, with_step=True)
        col_max = (np.abs(a).max(axis=0) if n else np.zeros(m))[cols]
        need = np.nonzero(
            ~(np.abs(step) <= max(tol, 1e-4) * (np.abs(t) + 1.0 / np.maximum(col_max, 1e-300)))
        )[0]
        iters = np.ones(cols.size, dtype=np.int64)
        per = max(1, int(4e6 // max(n, 1)))  # pairs per exact Newton batch: (n, per) work arrays
        for s0 in range(0, need.size, per):
            sub = need[s0 : s0 + per]
            t_sub, it = _pair_newton_exact(a, yv, cols[sub], pc[sub], pr[sub], q, k, max_iter, tol, t[sub])
            t[sub] = t_sub
            iters[sub] += it
            log_b[sub] = fused.pair_log_bound(a, yv, cols[sub], pc[sub], pr[sub], t_sub, q, k)
    else:
        t, iters = _pair_newton_exact(a, yv, cols, pc, pr, q, k, max_iter, tol)
        # The bound: eq. (24) in float64 at the returned t, rounded up.
        terms = _pair_terms(np.ascontiguousarray(a[:, cols]), yv, pc, pr, q, k)
        log_b = _pair_log_bound(torch.from_numpy(t), terms)
    log_b = np.minimum(log_b, 0.0).reshape(m, k - 1)
    # union bound over rivals; logsumexp = max + log(sum e^(x - max)) is within (K + 4) eps
    # (|max| + 1) of the exact value
    lse = logsumexp(log_b, axis=1)
    lse = lse + (k + 4) * _EPS * (np.abs(log_b).min(axis=1) + 1.0)
    log_tail = np.minimum(lse, LOG_HALF)
    return ChernoffResult(pred, log_tail, t.reshape(m, k - 1), iters.reshape(m, k - 1).max(axis=1))


def _pair_newton_exact(
    a: NDArray,
    yv: NDArray,
    cols: NDArray,
    pc: NDArray,
    pr: NDArray,
    q: float,
    k: int,
    max_iter: int,
    tol: float,
    t0: NDArray | None = None,
) -> tuple[NDArray, NDArray]:
    """Newton on the full pair problems (column ``cols[p]`` of ``a``, class ``pc[p]``, rival
    ``pr[p]``) from ``t0`` (default 0), in float32 on |a| / s, s a power of two near each
    column's max |a|, so that no weight overflows float32 (or squares to 0); F(t) depends on
    t |a| only, so t = t' / s. Any t >= 0 gives a valid bound: precision here costs tightness
    only. Returns (t, iterations)."""
    terms = _pair_terms(np.ascontiguousarray(a[:, cols]), yv, pc, pr, q, k)
    col_max = terms[0].amax(dim=0).numpy() if a.shape[0] else np.zeros(cols.size)
    s = np.where(col_max > 0, np.ldexp(1.0, np.frexp(np.where(col_max > 0, col_max, 1.0))[1]), 1.0)
    abs_a = (terms[0] / torch.from_numpy(s)[None, :]).to(torch.float32)
    work = (abs_a, abs_a, abs_a * abs_a, *(x.to(torch.float32) for x in terms[1:]))
    del terms
    scale = 1.0 / np.maximum(col_max / s, 1e-300)
    start = np.zeros(cols.size) if t0 is None else np.asarray(t0, dtype=np.float64) * s
    t, iters = _pair_newton(work, start, scale, max_iter, tol)
    with np.errstate(over="ignore"):
        return np.minimum(t / s, 1e308), iters  # finite: t |a| is then at most about 1e4
