r"""Fused float64 evaluation of the Chernoff objectives, eq. (7) (binary) and eq. (24) (K classes).

The bound of :mod:`lib.chernoff` for a (test point, rival) pair is a sum over the n training
points of one exponential and one logarithm. Written as array operations it makes about thirty
passes over an (n, pairs) array, so its cost is memory traffic, not arithmetic. The kernel here
makes one pass: for each pair it reads the test point's weights and the labels once and keeps
the running sums in registers. It computes the same float64 quantity as
:func:`lib.chernoff._pair_log_bound` (the same formula, term by term) and rounds it up by the same
kind of error bound, with the error of a sequential sum in place of a pairwise one, so the value
returned is never below the exact F(t).

:func:`binary_log_bound` does the same for eq. (7) (:func:`lib.chernoff._float64_bound`).
Compiled by numba on first use (a few seconds, then cached on disk); columns run in parallel.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["pair_log_bound", "binary_log_bound"]

_EPS = float(np.finfo(np.float64).eps)


_BLOCK = 16  # columns per parallel task of the binary kernel: a row of a block is one or two cache lines


@numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _pair_kernel(aT, y, cols, cls, rival, t, keep, off, p0_cr, p0_other, with_step, out):
    """out[p] = (sum term, sum s, sum |log z|, sum |term|, F', F'') for pair p at t[p]."""
    n = aT.shape[1]
    for p in numba.prange(t.size):
        j = cols[p]
        c = cls[p]
        r = rival[p]
        tp = t[p]
        st = 0.0
        ss = 0.0
        slz = 0.0
        sat = 0.0
        g = 0.0
        h = 0.0
        for i in range(n):
            x = aT[j, i]
            yi = y[i]
            if yi == c:
                pp = keep
                pm = off
                p0 = p0_cr
            elif yi == r:
                pp = off
                pm = keep
                p0 = p0_cr
            else:
                pp = off
                pm = off
                p0 = p0_other
            if x >= 0.0:
                near = pm
                far = pp
                ax = x
            else:
                near = pp
                far = pm
                ax = -x
            s = ax * tp
            e = math.exp(-s)
            z = near + p0 * e + far * e * e
            lz = math.log(z)
            term = s + lz
            st += term
            ss += s
            slz += abs(lz)
            sat += abs(term)
            if with_step:
                fe2 = far * e * e
                g += ax * (near - fe2) / z
                h += ax * ax * (p0 * e * (near + fe2) + 4.0 * near * fe2) / (z * z)
        out[p, 0] = st
        out[p, 1] = ss
        out[p, 2] = slz
        out[p, 3] = sat
        out[p, 4] = g
        out[p, 5] = h


def pair_log_bound(
    a: NDArray[np.float64],
    y: NDArray[np.int64],
    cols: NDArray[np.int64],
    cls: NDArray[np.int64],
    rival: NDArray[np.int64],
    t: NDArray[np.float64],
    q: float,
    k: int,
    *,
    with_step: bool = False,
) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""F(t) of eq. (24) for pair p = (test point ``cols[p]``, class ``cls[p]``, rival ``rival[p]``),
    in float64 and rounded up; with ``with_step`` also the Newton step F'(t) / F''(t).

    F(t) = sum_j [ s_j + log(p_near + p0 e^{-s_j} + p_far e^{-2 s_j}) ], s_j = t |a_j|, the
    overflow-free form of :func:`lib.chernoff._pair_terms`. ``a`` is (n, m), one column of kernel
    weights per test point; ``t`` >= 0. Rounding (u = eps/2): as in
    :func:`lib.chernoff._pair_log_bound`, except that the n terms are summed one after another,
    so that sum is within gamma_{n-1} sum |term_j| <= (n - 1)(1 + 1e-9) u sum |term_j| (n u < 1e-9)
    of the exact one. Twice the total,

        2 eps [4 n + 1.5 sum s_j + sum |log z_j| + ((n - 1)(1 + 1e-9)/2 + 1) sum |term_j|],

    is added (the three sums enlarged by a relative 1e-9 for their own rounding), so the value
    returned is never below the exact F(t).
    """
    n = a.shape[0]
    if n * _EPS > 1e-9:
        raise ValueError(f"a has {n} rows; the error bound assumes n * eps < 1e-9")
    aT = np.ascontiguousarray(a.T, dtype=np.float64)  # K-1 pairs read each column: transpose once
    tt = np.ascontiguousarray(t, dtype=np.float64)
    out = np.empty((tt.size, 6))
    keep, off = 1.0 - q, q / (k - 1)
    p0_cr, p0_other = q * (k - 2) / (k - 1), 1.0 - 2.0 * off  # the values of lib.chernoff._pair_probs
    _pair_kernel(
        aT,
        np.ascontiguousarray(y, dtype=np.int64),
        np.ascontiguousarray(cols, dtype=np.int64),
        np.ascontiguousarray(cls, dtype=np.int64),
        np.ascontiguousarray(rival, dtype=np.int64),
        tt,
        keep,
        off,
        p0_cr,
        p0_other,
        bool(with_step),
        out,
    )
    grow = 1.0 + 1e-9
    err = 4.0 * n + grow * (1.5 * out[:, 1] + out[:, 2] + ((n - 1) * grow / 2.0 + 1.0) * out[:, 3])
    bound = out[:, 0] + 2.0 * _EPS * err
    if not with_step:
        return bound
    g, h = out[:, 4], out[:, 5]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.where(h > 0, g / h, np.where(g == 0, 0.0, np.inf))
    return bound, step


# --------------------------------------------------------------------------------------------
# Binary, eq. (7)
# --------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _binary_kernel(a, y, c_of_label, t, with_step, out):
    """out[j] = (sum softplus(u), sum |u|, sum alpha sigma(u), sum alpha^2 sigma (1 - sigma)) at
    t[j], u_i = c_i - t alpha_i (softplus(u) = max(u, 0) + log1p(e^{-|u|}), as torch's
    logaddexp); columns of the row-ordered (n, m) ``a`` in blocks of _BLOCK."""
    n = a.shape[0]
    m = t.size
    for b in numba.prange((m + _BLOCK - 1) // _BLOCK):
        lo = b * _BLOCK
        hi = min(lo + _BLOCK, m)
        acc = np.zeros((hi - lo, 4))
        for i in range(n):
            ci = c_of_label[y[i]]
            for j in range(lo, hi):
                x = a[i, j]
                u = ci - x * t[j]
                au = abs(u)
                e = math.exp(-au)
                k = j - lo
                acc[k, 0] += max(u, 0.0) + math.log1p(e)
                acc[k, 1] += au
                if with_step:
                    sig = 1.0 / (1.0 + e) if u >= 0.0 else e / (1.0 + e)
                    acc[k, 2] += x * sig
                    acc[k, 3] += x * x * sig * (1.0 - sig)
        for j in range(lo, hi):
            for f in range(4):
                out[j, f] = acc[j - lo, f]


def binary_log_bound(
    a: NDArray[np.float64], y: NDArray[np.int64], t: NDArray[np.float64], q: float, *, with_step: bool = False
) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""f(t) of eq. (7) for every column of the (n, m) weights ``a`` at its own t, in float64 and
    rounded up; with ``with_step`` also the Newton step f'(t) / f''(t).

    f(t) = t/2 + sum_i log a_i + sum_i softplus(c_i - t alpha_i), with log a_i, c_i of
    :func:`lib.chernoff._binary_coefficients` (labels y in {0, 1}). The same quantity, term by
    term, as :func:`lib.chernoff._float64_bound`, and the same rounding analysis with a
    sequential sum (error gamma_{n-1} <= (n - 1)(1 + 1e-9) u times the sum of the terms, n u <
    1e-9) in place of the pairwise one: the value returned is never below the exact f(t).
    """
    n = a.shape[0]
    if n * _EPS > 1e-9:
        raise ValueError(f"a has {n} rows; the error bound assumes n * eps < 1e-9")
    lq, l1q = np.log(q), np.log1p(-q)
    c_of_label = np.array([lq - l1q, l1q - lq])  # c_i for y_i = 0 and y_i = 1
    yv = np.ascontiguousarray(y, dtype=np.int64)
    n1 = int(np.count_nonzero(yv))
    sum_log_a = float(n1 * lq + (n - n1) * l1q)  # the two values times their counts, as the array form
    max_c = abs(lq - l1q) if n else 0.0
    big_l = max_c + 2.0 * max(abs(lq), abs(l1q))
    tt = np.ascontiguousarray(t, dtype=np.float64)
    out = np.empty((tt.size, 4))
    _binary_kernel(np.ascontiguousarray(a, dtype=np.float64), yv, c_of_label, tt, bool(with_step), out)
    grow = 1.0 + 1e-9
    terms = out[:, 0]
    f = tt / 2.0 + sum_log_a + terms
    err = grow * (out[:, 1] + ((n - 1) * grow / 2.0 + 3.0) * np.abs(terms))
    err = err + 2.0 * n * max_c + 4.0 * n * big_l
    err = err + np.abs(tt) / 2.0 + abs(sum_log_a)
    bound = f + 2.0 * _EPS * err
    if not with_step:
        return bound
    g = 0.5 - out[:, 2]
    h = out[:, 3]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.where(h > 0, g / h, np.where(g == 0, 0.0, np.inf))
    return bound, step


# --------------------------------------------------------------------------------------------
# Histograms for the binned warm starts of lib.chernoff
# --------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _histogram_kernel(a, cat, bins, signed, sign_split, counts, sums):
    """Per column j of the row-ordered (n, m) ``a``: equal-width bins of a (``signed``) or of |a|
    over [min, max] of that column (0 as the lower end for |a|), per category: ``cat[i]``, or
    2 cat[i] + (a[i, j] < 0) with ``sign_split``; counts[c * bins + b, j] and the sums of the
    binned values."""
    n, m = a.shape
    for blk in numba.prange((m + _BLOCK - 1) // _BLOCK):
        lo_j = blk * _BLOCK
        hi_j = min(lo_j + _BLOCK, m)
        w = hi_j - lo_j
        lo = np.full(w, np.inf)
        hi = np.full(w, -np.inf)
        for i in range(n):
            for j in range(lo_j, hi_j):
                x = a[i, j] if signed else abs(a[i, j])
                if x < lo[j - lo_j]:
                    lo[j - lo_j] = x
                if x > hi[j - lo_j]:
                    hi[j - lo_j] = x
        width = np.empty(w)
        for k in range(w):
            if not signed:
                lo[k] = 0.0
            width[k] = (hi[k] - lo[k]) / bins
            if not (width[k] > 0.0 and np.isfinite(width[k])):
                width[k] = 1.0
        for i in range(n):
            for j in range(lo_j, hi_j):
                x = a[i, j] if signed else abs(a[i, j])
                v = (x - lo[j - lo_j]) / width[j - lo_j]
                b = 0
                if v >= bins - 1:
                    b = bins - 1
                elif v > 0.0:
                    b = int(v)
                c = 2 * cat[i] + (1 if a[i, j] < 0.0 else 0) if sign_split else cat[i]
                counts[c * bins + b, j] += 1.0
                sums[c * bins + b, j] += x


def histogram(
    a: NDArray[np.float64],
    cat: NDArray[np.int64],
    n_cat: int,
    bins: int,
    *,
    signed: bool,
    sign_split: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Counts and sums of ``a``'s entries (of |a| unless ``signed``) per column, per category and
    per equal-width bin of the column's range: two (n_cat * bins, m) arrays. The category of
    entry (i, j) is ``cat[i]`` (ints in 0 .. n_cat-1), or 2 cat[i] + 1{a[i, j] < 0} with
    ``sign_split`` (then n_cat counts both signs). A warm start only
    (:func:`lib.chernoff._binned_start`, :func:`lib.chernoff._multiclass_binned_start`): it
    changes where Newton starts, not a bound."""
    aa = np.ascontiguousarray(a, dtype=np.float64)
    counts = np.zeros((n_cat * bins, aa.shape[1]))
    sums = np.zeros((n_cat * bins, aa.shape[1]))
    if aa.size:
        _histogram_kernel(
            aa, np.ascontiguousarray(cat, dtype=np.int64), bins, bool(signed), bool(sign_split), counts, sums
        )
    return counts, sums
