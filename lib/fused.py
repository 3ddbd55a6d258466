r"""Fused float64 evaluation of the multi-class Chernoff objective (eq. 24), one pass per pair.

The bound of :mod:`lib.chernoff` for a (test point, rival) pair is a sum over the n training
points of one exponential and one logarithm. Written as array operations it makes about thirty
passes over an (n, pairs) array, so its cost is memory traffic, not arithmetic. The kernel here
makes one pass: for each pair it reads the test point's weights and the labels once and keeps
the running sums in registers. It computes the same float64 quantity as
:func:`lib.chernoff._pair_log_bound` (the same formula, term by term) and rounds it up by the same
kind of error bound, with the error of a sequential sum in place of a pairwise one, so the value
returned is never below the exact F(t).

Compiled by numba on first use (a few seconds, then cached on disk); pairs run in parallel.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["pair_log_bound"]

_EPS = float(np.finfo(np.float64).eps)


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
    aT = np.ascontiguousarray(a.T, dtype=np.float64)
    tt = np.ascontiguousarray(t, dtype=np.float64)
    out = np.empty((tt.size, 6))
    keep, off = 1.0 - q, q / (k - 1)
    p0_cr, p0_other = q * (k - 2) / (k - 1), 1.0 - 2.0 * off  # the values of lib.chernoff._pair_probs
    _pair_kernel(aT, np.ascontiguousarray(y, dtype=np.int64), np.ascontiguousarray(cols, dtype=np.int64),
                 np.ascontiguousarray(cls, dtype=np.int64), np.ascontiguousarray(rival, dtype=np.int64),
                 tt, keep, off, p0_cr, p0_other, bool(with_step), out)
    grow = 1.0 + 1e-9
    err = 4.0 * n + grow * (1.5 * out[:, 1] + out[:, 2] + ((n - 1) * grow / 2.0 + 1.0) * out[:, 3])
    bound = out[:, 0] + 2.0 * _EPS * err
    if not with_step:
        return bound
    g, h = out[:, 4], out[:, 5]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.where(h > 0, g / h, np.where(g == 0, 0.0, np.inf))
    return bound, step
