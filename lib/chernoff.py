r"""Chernoff bounds that replace sampling in label-flip smoothing (paper, Sec. 4.1 and App. B.2).

The least-squares prediction on a test point is linear in the training labels, ``alpha^T y``
(eq. 11/12). Under label noise each noisy label is an independent random variable, so the
probability that the smoothed classifier votes for the other class is bounded by a Chernoff
bound, which is a one-dimensional convex problem in t. No sampling is involved: the resulting
``p_lower`` is a deterministic lower bound on G(mu, phi) of the predicted class.

Soundness does not depend on how well t is optimised: every t gives a valid bound, so an
early stop of Newton's method only costs tightness. What matters is that the bound is
evaluated, in float64, at the t that is returned; that is what :func:`chernoff_bound` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, logsumexp

from . import _checks

__all__ = ["ChernoffResult", "chernoff_bound", "chernoff_certify", "binary_objective"]

LOG_HALF = float(np.log(0.5))


@dataclass(frozen=True)
class ChernoffResult:
    """Output of :func:`chernoff_bound` for m test points.

    Attributes
    ----------
    pred: (m,) int array, the predicted class (binary: ``1{t* >= 0}``).
    log_tail: (m,) float64, ``min(log B, log 1/2)`` where B bounds the probability that the
        base learner does not vote for ``pred``. Only where it is below log(1/2) is
        ``1 - exp(log_tail)`` a lower bound on G(mu, phi, pred) (and pred = g); at log(1/2)
        nothing is certified (radius 0).
    t: (m,) for K = 2, (m, K-1) for K > 2: the Chernoff parameters at which the bound was
        evaluated (for K > 2 one per rival class, in increasing class order skipping ``pred``).
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
        exceeds 1/2; the value 1/2 itself means "no certificate", not a bound."""
        return -np.expm1(self.log_tail)


def binary_objective(t: ArrayLike, alpha: ArrayLike, y: ArrayLike, q: float) -> NDArray[np.float64]:
    r"""Eq. (7): :math:`t/2 + \sum_{y_i=1}\log(q+(1-q)e^{-t\alpha_i}) + \sum_{y_i=0}\log(1-q+qe^{-t\alpha_i})`.

    For t > 0 this is the log of the Chernoff bound (13) on P(alpha^T Y <= 1/2); for t < 0 it is
    the log of the bound on P(alpha^T Y >= 1/2) at |t|. Evaluated in float64, stably
    (``log(a + b e^{-s}) = log a + softplus(log(b/a) - s)``). ``alpha`` is (n,) or (n, m), ``t``
    broadcasts against its trailing axis.
    """
    a = np.asarray(alpha, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64)
    log_a, c = _binary_coefficients(np.asarray(y), q)
    a2 = a[:, None] if a.ndim == 1 else a  # (n, 1) broadcasts against any t; (n, m) against (m,)
    out, _ = _float64_bound(torch.from_numpy(np.ascontiguousarray(a2)), c, log_a, np.atleast_1d(tt))
    return out.reshape(np.broadcast_shapes(tt.shape, a.shape[1:])) if a.ndim > 1 or tt.ndim else float(out[0])


def _float64_bound(A: torch.Tensor, c: NDArray, log_a: NDArray, t: NDArray) -> tuple[NDArray, torch.Tensor]:
    """f(t) of eq. (7), in float64, for (n, m) weights A and t of shape (m,) (or any shape
    broadcasting against A's columns), and the (n, m) array u = c - t alpha it was computed from.

    The one place where the reported bound is computed. torch's logaddexp is exact (no softplus
    threshold) and multi-threaded.
    """
    u = torch.addcmul(torch.from_numpy(c[:, None]), A, torch.from_numpy(t), value=-1.0)
    terms = torch.logaddexp(torch.zeros((), dtype=torch.float64), u).sum(dim=0).numpy()
    return t / 2.0 + float(np.sum(log_a)) + terms, u


def _binary_coefficients(y: NDArray, q: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per training point: log a_i and c_i = log(b_i / a_i) with E e^{-t a Y} = a + b e^{-t alpha}."""
    lq, l1q = np.log(q), np.log1p(-q)
    one = y == 1
    log_a = np.where(one, lq, l1q)
    c = np.where(one, l1q - lq, lq - l1q)
    return log_a, c


def _safeguarded_newton(
    derivatives, t: NDArray, bracket: tuple[NDArray, NDArray], lower: NDArray, upper: NDArray, scale: NDArray,
    max_iter: int, tol: float,
) -> tuple[NDArray, NDArray]:
    """Vectorised safeguarded Newton for m independent convex problems in one variable each.

    ``derivatives(active, t_active)`` returns f'(t) and f''(t) for the still-active problems
    (``active`` are their indices, in increasing order). Keeps a bracket [lo, hi] with
    f'(lo) < 0 < f'(hi), starting from ``bracket`` (infinite ends allowed); a Newton step outside the bracket is
    replaced by bisection, or by a step of max(|t|, scale) towards the descent side while the
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
        with np.errstate(divide="ignore", invalid="ignore"):
            new = ta - np.where(h > 0, g / h, np.inf * np.sign(g))
        la, ha, sc = lo[active], hi[active], scale[active]
        inside = np.isfinite(new) & (new > la) & (new < ha)
        both = np.isfinite(la) & np.isfinite(ha)
        grow = np.where(g < 0, ta + np.maximum(np.abs(ta), sc), ta - np.maximum(np.abs(ta), sc))
        new = np.clip(np.where(inside, new, np.where(both, 0.5 * (la + ha), grow)), lower[active], upper[active])
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
    """
    n, m = alpha.shape
    a32 = alpha.astype(np.float32, copy=False)
    wa = a32 if weights is None else (a32 * weights).astype(np.float32)
    A2 = wa * a32
    c32 = c.astype(np.float32)
    c32 = c32[:, None] if c32.ndim == 1 else c32

    def derivatives(active: NDArray, t: NDArray) -> tuple[NDArray, NDArray]:
        full = active.size == m
        A = a32 if full else a32[:, active]
        sig = expit((c32 if full or c32.shape[1] == 1 else c32[:, active]) - A * t.astype(np.float32)[None, :])
        g = 0.5 - np.einsum("ij,ij->j", wa if full else wa[:, active], sig, dtype=np.float64)
        sig *= 1.0 - sig
        return g, np.einsum("ij,ij->j", A2 if full else A2[:, active], sig, dtype=np.float64)

    scale = 1.0 / np.maximum(np.abs(alpha).max(axis=0), 1e-300)  # t alpha ~ 1
    t_max = np.minimum(1e4 * scale, 1e30)  # further changes the bound negligibly; float32-safe
    t = np.zeros(m) if t0 is None else np.array(t0, dtype=np.float64)
    return _safeguarded_newton(derivatives, t, (-np.inf, np.inf), -t_max, t_max, scale, max_iter, tol)


_BINS = 256


def _binned_start(alpha: NDArray, y: NDArray, c: NDArray, max_iter: int) -> NDArray:
    """A close starting point for Newton: minimise eq. (7) with each column's weights grouped
    into ``_BINS`` equal-width bins per label (count and mean weight per bin).

    Cheap (Newton then runs on 2 * _BINS terms instead of n) and, since the exact Newton
    iterations that follow start from here and run to the same tolerance, it changes how fast
    the optimum is found, not which optimum or which bound.
    """
    n, m = alpha.shape
    A = torch.from_numpy(alpha)  # torch: the binning passes run multi-threaded
    lo = A.amin(dim=0)
    width = (A.amax(dim=0) - lo) / _BINS
    width[width <= 0] = 1.0
    idx = ((A - lo) / width).to(torch.int64).clamp_(max=_BINS - 1)
    idx += torch.from_numpy(_BINS * y)[:, None]
    idx += (2 * _BINS * torch.arange(m))[None, :]
    flat = idx.view(-1)
    size = 2 * _BINS * m
    counts = torch.bincount(flat, minlength=size).reshape(m, 2 * _BINS).T.numpy()
    sums = torch.bincount(flat, weights=A.reshape(-1), minlength=size).reshape(m, 2 * _BINS).T.numpy()
    mean = sums / np.maximum(counts, 1)
    c_bins = np.repeat(np.array([c[y == 0][0] if np.any(y == 0) else 0.0,
                                 c[y == 1][0] if np.any(y == 1) else 0.0]), _BINS)
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
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(h > 0, g / h, np.where(g == 0, 0.0, np.inf))
    return f, step


def _polish_warm_start(a, yv, c, log_a, max_iter, tol):
    """Binned warm start, then one exact float64 pass that evaluates the bound and the Newton
    step at once; only columns whose Newton step is larger than 1e-4 relative run exact Newton
    to ``tol``. A relative error d in t costs about d^2 |f| in log B (f is quadratic at its
    minimum), i.e. below 1e-8 relative: tightness only, never soundness."""
    t = _binned_start(a, yv, c, max_iter)
    f, step = _exact_f_and_newton_step(t, a, c, log_a)
    scale = 1.0 / np.maximum(np.abs(a).max(axis=0), 1e-300)
    need = ~(np.abs(step) <= max(tol, 1e-4) * (np.abs(t) + scale))
    iters = np.ones(t.size, dtype=np.int64)
    if np.any(need):
        t_need, it = _newton_binary(a[:, need], c, max_iter, tol, t0=t[need])
        t[need] = t_need
        iters[need] += it
        f[need], _ = _exact_f_and_newton_step(t_need, a[:, need], c, log_a)
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
    G(mu, phi, pred[j]) >= 1 - exp(log_tail[j]).

    Binary (K = 2, labels {0, 1}, threshold 1/2 as in the paper): minimise eq. (7) over t by
    safeguarded Newton; ``pred = 1{t* >= 0}`` and B = exp(f(t*)) (eq. 13; for t* < 0 it is the
    mirrored bound on P(alpha^T Y >= 1/2)).

    Multi-class (K > 2, labels {0..K-1}, each flipped label uniform over the other K-1 classes):
    ``pred`` is the class with the largest expected score E[alpha^T Y_c] (the multi-class
    analogue of the sign of t*: for K = 2 the two coincide). For each rival c' the bound (24)
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
    warm_start: for K = 2 and n > 8 * 256, start from the optimum of a binned problem
        (:func:`_binned_start`, polished by :func:`_polish_warm_start`); False starts every test
        point's Newton at t = 0.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    a = _checks.finite_matrix(a, "alpha")
    yv = _checks.labels(y, a.shape[0], k)
    _checks.count(max_iter, "max_iter")
    if k == 2:
        log_a, c = _binary_coefficients(yv, qf)
        if warm_start and a.shape[0] > 8 * _BINS:
            t, log_b, iters = _polish_warm_start(a, yv, c, log_a, max_iter, tol)
        else:
            t, iters = _newton_binary(a, c, max_iter, tol)
            # Final bound in float64 at the returned t (any t is valid; f(0) = 0: "no bound").
            log_b = binary_objective(t, a, yv, qf)
        log_tail = np.minimum(log_b, LOG_HALF)
        pred = (t >= 0).astype(np.int64)
        return ChernoffResult(pred, log_tail, t, iters)
    # Multi-class: one Newton problem per (test point, rival); stream the test points in chunks
    # so that the (3, n, chunk * (K-1)) work arrays stay near 6e6 entries (~50 MB each).
    chunk = max(1, int(2e6 // (a.shape[0] * (k - 1))))
    parts = [_multiclass(a[:, s : s + chunk], yv, qf, k, max_iter, tol) for s in range(0, a.shape[1], chunk)]
    return ChernoffResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("pred", "log_tail", "t", "iterations")))


def chernoff_certify(
    alpha: ArrayLike, y: ArrayLike, q: float, num_classes: int = 2
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``(pred, p_lower)`` of :func:`chernoff_bound`; ``p_lower = max(1 - B, 1/2)``.

    ``p_lower`` is rounded to float64 and may be exactly 1.0 when B < 1e-16; use
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
    p_zero = torch.where(is_c | is_r, torch.tensor(q * (k - 2) / (k - 1), dtype=f64),
                         torch.tensor(1.0 - 2.0 * off, dtype=f64))
    return p_plus, p_zero, p_minus


def _pair_terms(a: NDArray, yv: NDArray, c: NDArray, r: NDArray, q: float, k: int) -> tuple[torch.Tensor, ...]:
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


def _pair_log_bound(t: torch.Tensor, terms: tuple[torch.Tensor, ...]) -> NDArray[np.float64]:
    """F(t) of eq. (24), the log of the Chernoff bound on P(alpha^T Y_c <= alpha^T Y_r), in
    float64 for t >= 0 (one per column): the one place the multi-class bound is computed."""
    abs_a, near, far, p0 = terms
    s = abs_a * t[None, :]
    e = torch.exp(-s)
    return (s + torch.log(near + p0 * e + far * e * e)).sum(dim=0).numpy()


def _pair_newton_step(t: torch.Tensor, terms32: tuple[torch.Tensor, ...]) -> tuple[NDArray, NDArray]:
    """F'(t) and F''(t) of eq. (24) from float32 terms (|a|, a^2, p_near, p_far, p0), summed in
    float64. With e = e^{-t|a|} and z = p_near + p0 e + p_far e^2:
    F' = sum |a| (p_near - p_far e^2) / z and
    F'' = sum a^2 (p0 e (p_near + p_far e^2) + 4 p_near p_far e^2) / z^2,
    a form of F'' with no cancellation (every term is positive). Only Newton's path uses this;
    the bound is :func:`_pair_log_bound`, in float64."""
    abs_a, a2, near, far, p0 = terms32
    e = torch.exp(abs_a * -t.to(torch.float32)[None, :])
    pe = p0 * e
    fe2 = e.mul_(e).mul_(far)  # p_far e^2, in e's buffer
    z = near + pe + fe2
    g = (near - fe2).mul_(abs_a).div_(z).sum(dim=0, dtype=torch.float64)
    num = pe.mul_(near + fe2).add_(fe2 * near, alpha=4.0)
    h = num.mul_(a2).div_(z.mul_(z)).sum(dim=0, dtype=torch.float64)
    return g.numpy(), h.numpy()


def _multiclass(a: NDArray, yv: NDArray, q: float, k: int, max_iter: int, tol: float) -> ChernoffResult:
    n, m = a.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), yv] = 1.0
    clean = a.T @ onehot  # (m, K): alpha^T Y_c on the clean labels
    pred = np.argmax(clean, axis=1).astype(np.int64)  # = argmax of the expected scores
    rivals = np.array([[c for c in range(k) if c != p] for p in pred])  # (m, K-1)
    # One Newton problem per (test point, rival) pair, t >= 0, run in float32 (any t >= 0 gives
    # a valid bound, so precision on Newton's path costs tightness only).
    cols = np.repeat(np.arange(m), k - 1)
    pc = pred[cols]
    pr = rivals.reshape(-1)
    A_np = np.ascontiguousarray(a[:, cols])
    terms = _pair_terms(A_np, yv, pc, pr, q, k)
    abs_a = terms[0].to(torch.float32)
    work = (abs_a, abs_a * abs_a, *(x.to(torch.float32) for x in terms[1:]))
    state = {"active": np.arange(cols.size), "work": work}

    def derivatives(active: NDArray, t: NDArray) -> tuple[NDArray, NDArray]:
        if active.size < state["active"].size:  # drop the finished pairs' columns
            keep = np.searchsorted(state["active"], active)
            state["work"] = tuple(w[:, torch.from_numpy(keep)] for w in state["work"])
            state["active"] = active
        return _pair_newton_step(torch.from_numpy(t), state["work"])

    scale = 1.0 / np.maximum(np.abs(A_np).max(axis=0), 1e-300)
    zero = np.zeros(cols.size)
    t, iters = _safeguarded_newton(derivatives, zero, (0.0, np.inf), zero, 1e4 * scale, scale, max_iter, tol)
    # The bound: eq. (24) in float64 at the returned t.
    log_b = np.minimum(_pair_log_bound(torch.from_numpy(t), terms), 0.0).reshape(m, k - 1)
    log_tail = np.minimum(logsumexp(log_b, axis=1), LOG_HALF)  # union bound over rivals
    return ChernoffResult(pred, log_tail, t.reshape(m, k - 1), iters.reshape(m, k - 1).max(axis=1))
