r"""The tight (Neyman-Pearson) certificate for label-flip smoothing, after Lee et al. (2019).

Setting. Training labels Y1 in {0..K-1}^n are smoothed by replacing each label, independently
with probability q, by one of the other K-1 classes chosen uniformly: this is mu. Labels Y2
that differ from Y1 in r places give rho. A set A (the noisy labellings on which the base
learner votes for the predicted class) with mu(A) >= p keeps the vote if rho(A) > 1/2.
The certificate is the largest r for which EVERY set with mu(A) >= p has rho(A) > 1/2.

Likelihood-ratio levels (our derivation). Only the r coordinates where Y1 and Y2 differ
matter. On such a coordinate with Y1_i = a, Y2_i = b, a noisy label equal to a has ratio
rho/mu = (q/(K-1)) / (1-q) = 1/gamma, equal to b has ratio gamma = (1-q)(K-1)/q, and any
other class has ratio 1. So the ratio of a whole labelling is gamma^D with

    D = #{changed coordinates whose noisy label equals Y2} - #{... equals Y1},  D in [-r, r].

Under mu, D is a sum of r i.i.d. steps: -1 w.p. 1-q, +1 w.p. q/(K-1), 0 w.p. q(K-2)/(K-1);
under rho the law of D is the mirror image, P_rho(D = d) = P_mu(D = -d). (K = 2: D = 2M - r
with M ~ Bin(r, q).) By the Neyman-Pearson lemma the worst set A fills the levels of smallest
ratio first, so its complement A^c holds the levels of largest D. Write tail = 1 - p for the
mu-mass allowed outside A. Then rho(A) > 1/2 for all such A iff tail < c*(r), where c*(r) is
the mu-mass of the top levels at which their rho-mass reaches exactly 1/2 (the last level
filled fractionally):

    c*(r) = P_mu(D >= d+1) + (1/2 - P_rho(D >= d+1)) * P_mu(D = d) / P_rho(D = d),
    d = max{d : P_rho(D >= d) >= 1/2}.

This is the paper's F^{-1}_{1-q,1,n}(r) of eq. (4) seen from the tail (c* = 1 - p*(r)).
The certificate is the largest r with tail < c*(r') for all r' <= r.

Computation. For K = 2, c*(r) has a binomial closed form (:func:`binary_log_cstar`), computed
for all r at once. For K > 2 it is computed for r = 1, 2, ... by convolving the law of D one
step at a time in log space (so tails of e^-1000 are exact, which the deterministic Chernoff bounds
need), cached per (q, K) and extended on demand: certifying a whole test set is then one
vectorised ``searchsorted``. Rounding is made safe: the r convolution steps accumulate a
rounding error that grows with r and with |log c*|, so log c*(r) is lowered by
1e-9 + 64 r eps (1 + |log c*(r)|) (eps = float64 machine epsilon) and the fractional part by
1e-12. A second reader measured the accumulated error against 50-digit arithmetic at
r = 20000 (about 1e-8 relative): the margin covers it with room to spare and costs far less
than one flip (log c* moves by 0.3 to 5 per flip). A convolution table costs O(R^2) (about
45 s for R = 25000 on one core); the binary closed form O(R) (about 3 s for R = 25000).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaln, logsumexp
from scipy.stats import binom

__all__ = ["ThresholdTable", "threshold_table"]

_FRAC_SAFETY = 1e-12
_EPS = np.finfo(np.float64).eps
MAX_TABLE = 30_000  # K > 2: refuse to grow beyond this many flips (O(R^2) work, about a minute)
MAX_TABLE_BINARY = 2_000_000  # K = 2: closed form, O(R) work (about 2 minutes at this size)


class ThresholdTable:
    """log c*(r) for r = 1..R (running minimum over r), for one (q, K); grows on demand."""

    def __init__(self, q: float, k: int) -> None:
        self.q, self.k = float(q), int(k)
        self.log_gamma = np.log1p(-q) + np.log(k - 1) - np.log(q)
        off = q / (k - 1)
        with np.errstate(divide="ignore"):
            # log-probabilities of a step of D under mu: -1, 0, +1
            self._lstep = np.log(np.array([1.0 - q, q * (k - 2) / (k - 1), off]))
        self._law = np.zeros(1)  # log P_mu(D = d), d = -r..r, currently r = 0
        self._r = 0
        self._logc: list[float] = []
        self._lock = threading.Lock()
        self.closed_form = True  # K = 2: binomial closed form; False: the convolution (for checks)

    @property
    def size(self) -> int:
        return self._r

    def log_thresholds(self) -> NDArray[np.float64]:
        """Non-increasing array; entry r-1 is the safe log c*(r), minimised over r' <= r."""
        return np.minimum.accumulate(np.asarray(self._logc, dtype=np.float64))

    def _step(self) -> None:
        law = self._law
        new = np.full(law.size + 2, -np.inf)
        lm, l0, lp = self._lstep
        # new[i] indexes d = i - (r+1); a -1 step from old d+1, 0 from d, +1 from d-1
        new[:-2] = law + lm
        new[1:-1] = np.logaddexp(new[1:-1], law + l0)
        new[2:] = np.logaddexp(new[2:], law + lp)
        self._law = new
        self._r += 1
        self._logc.append(self._log_cstar(new, self._r))

    def _log_cstar(self, mu_law: NDArray, r: int) -> float:
        d = np.arange(-r, r + 1)
        rho_law = mu_law[::-1]  # P_rho(D = d) = P_mu(D = -d)
        # rho-mass of the levels >= d, summed from the top (small terms first)
        rho_tail = np.cumsum(np.exp(rho_law)[::-1])[::-1]
        idx = int(np.nonzero(rho_tail >= 0.5)[0][-1])  # the level d* where 1/2 is crossed
        above = rho_tail[idx + 1] if idx + 1 < d.size else 0.0
        log_mu_above = logsumexp(mu_law[idx + 1 :]) if idx + 1 < d.size else -np.inf
        frac = max(0.0, min(1.0, (0.5 - above) / np.exp(rho_law[idx])) - _FRAC_SAFETY)
        log_part = np.log(frac) + mu_law[idx] if frac > 0 else -np.inf
        log_c = float(np.logaddexp(log_mu_above, log_part))
        return log_c - (1e-9 + 64.0 * r * _EPS * (1.0 + abs(log_c)))  # rounding, on the safe side

    def extend_to(self, r_max: int) -> None:
        """Compute thresholds up to radius ``r_max`` (thread-safe)."""
        with self._lock:
            while self.k == 2 and self.closed_form and r_max > self._r:
                r = np.arange(self._r + 1, min(r_max, self._r + 20_000) + 1)  # chunks bound memory
                self._logc.extend(binary_log_cstar(self.q, r).tolist())
                self._r = int(r[-1])
            while self._r < r_max:
                self._step()

    def radii(self, log_tail: NDArray[np.float64], max_radius: int | None) -> NDArray[np.int64]:
        """Largest r with log_tail < log c*(r') for all r' <= r (vectorised), capped at max_radius.

        The table grows by doubling, but never past ``min(max_radius, limit)`` (``limit`` is
        :data:`MAX_TABLE`, or :data:`MAX_TABLE_BINARY` for K = 2), so the answer does not depend
        on what an earlier call cached. Where a tail certifies every radius up to ``limit`` and
        ``max_radius`` is larger, the radius returned is ``limit`` (a valid, smaller
        certificate) and a ``RuntimeWarning`` says so; with no ``max_radius`` that is an error.
        """
        lt = np.asarray(log_tail, dtype=np.float64)
        cap = np.inf if max_radius is None else int(max_radius)
        limit = MAX_TABLE_BINARY if (self.k == 2 and self.closed_form) else MAX_TABLE
        finite = lt[np.isfinite(lt)]
        need = float(finite.min()) if finite.size else None
        # grow until the smallest tail no longer certifies the last radius, or the cap is hit
        target = min(max(self._r, 16), cap, limit)
        while True:
            self.extend_to(int(target))
            thr = self.log_thresholds()
            if need is None or thr.size == 0 or thr[-1] <= need or self._r >= min(cap, limit):
                break
            target = min(2 * self._r, cap, limit)
        thr = thr[:limit]  # a table grown further (by required_tail) must not change the answer
        if need is not None and thr.size == limit and thr[-1] > need and limit < cap:
            # the smallest tail certifies every radius the table may hold
            if max_radius is None:
                raise ValueError(
                    f"certifying these vote shares needs thresholds beyond {limit} flips "
                    "(q close to (K-1)/K or a tail near 0); pass max_radius, the number of labels"
                )
            warnings.warn(
                f"some radii exceed the {limit}-flip threshold table; they are reported as {limit} "
                f"(certified, but fewer than the max_radius = {max_radius} they may reach)",
                RuntimeWarning,
                stacklevel=3,
            )
        # thr is non-increasing: count r with lt < thr[r-1]
        out = np.searchsorted(-thr, -lt, side="left").astype(np.int64)
        if max_radius is not None:
            out = np.minimum(out, int(max_radius))
            out[np.isneginf(lt)] = int(max_radius)
        return out


_WINDOW = 512  # terms of the mu tail summed per window beyond the crossing (the rest only lowers c*)


def binary_log_cstar(q: float, r: NDArray[np.int64]) -> NDArray[np.float64]:
    """Safe log c*(r) for K = 2 from binomial formulas, for many r at once, in O(len(r) * 512).

    With M the number of changed labels whose noisy value agrees with Y2, M ~ Bin(r, 1-q) under
    rho and Bin(r, q) under mu (D = 2M - r). The crossing m* = max{m : P_rho(M >= m) >= 1/2}
    lies next to the median of Bin(r, 1-q), so it is found among a few candidates with the
    incomplete-beta tail (scipy's binom.sf); the mu-tail above it is a log-sum of binomial
    log-pmfs (gammaln) over the next levels, in windows of 512 until the terms are below e^-80
    of the sum (they fall geometrically, ratio about (q/(1-q))^2, for q well below 1/2, and
    like a Gaussian tail near q = 1/2); dropping the rest can only lower c*. Same safety
    margins as the table.
    """
    r = np.asarray(r, dtype=np.int64)
    rf = r.astype(np.float64)
    lq, l1q = np.log(q), np.log1p(-q)

    def logpmf(m, p_log, p1_log):
        mf = m.astype(np.float64)
        nn = rf[:, None] if m.ndim == 2 else rf
        return gammaln(nn + 1) - gammaln(mf + 1) - gammaln(nn - mf + 1) + mf * p_log + (nn - mf) * p1_log

    centre = np.floor(rf * (1 - q)).astype(np.int64)
    cand = centre[:, None] + np.arange(-3, 5)[None, :]  # the median of Bin(r, 1-q) is within 1
    cand = np.clip(cand, 0, r[:, None])
    s = binom.sf(cand - 1, r[:, None], 1 - q)  # P_rho(M >= m)
    m_star = np.max(np.where(s >= 0.5, cand, -1), axis=1)
    above = binom.sf(m_star, r, 1 - q)  # P_rho(M >= m* + 1)

    # mu-mass of M >= m* + 1, in log space, over windows of levels: the first 512 for every r,
    # more for the rows whose terms still matter (q near 1/2: the terms then fall slowly, like a
    # Gaussian of width sqrt(r q (1-q)), not geometrically)
    def window(rows: NDArray, start: NDArray) -> tuple[NDArray, NDArray]:
        m_win = start[:, None] + np.arange(_WINDOW)[None, :]
        valid = m_win <= r[rows, None]
        mf = np.minimum(m_win, r[rows, None]).astype(np.float64)
        nn = rf[rows, None]
        lp = gammaln(nn + 1) - gammaln(mf + 1) - gammaln(nn - mf + 1) + mf * lq + (nn - mf) * l1q
        lp = np.where(valid, lp, -np.inf)
        return logsumexp(lp, axis=1), lp[:, -1]

    rows = np.arange(r.size)
    log_mu_above, last = window(rows, m_star + 1)
    start = m_star + 1 + _WINDOW
    # beyond the mode of Bin(r, q) (m* + 1 > r q) the terms decrease: stop once the last one is
    # below e^-80 of the sum (the rest then changes log c* by far less than its safety margin)
    more = (last > log_mu_above - 80.0) & (start <= r)
    while np.any(more):
        rows = np.nonzero(more)[0]
        part, last_r = window(rows, start[rows])
        log_mu_above[rows] = np.logaddexp(log_mu_above[rows], part)
        start[rows] += _WINDOW
        last = np.full(r.size, -np.inf)
        last[rows] = last_r
        more = (last > log_mu_above - 80.0) & (start <= r)
    rho_star = np.exp(logpmf(m_star, l1q, lq))
    frac = np.clip((0.5 - above) / rho_star, 0.0, 1.0) - _FRAC_SAFETY
    with np.errstate(divide="ignore"):
        log_part = np.where(frac > 0, np.log(np.maximum(frac, 1e-300)) + logpmf(m_star, lq, l1q), -np.inf)
    log_c = np.logaddexp(log_mu_above, log_part)
    return log_c - (1e-9 + 64.0 * rf * _EPS * (1.0 + np.abs(log_c)))


_TABLES: dict[tuple[float, int], ThresholdTable] = {}
_TABLES_LOCK = threading.Lock()


def threshold_table(q: float, k: int) -> ThresholdTable:
    """The cached :class:`ThresholdTable` for (q, K)."""
    key = (float(q), int(k))
    with _TABLES_LOCK:
        if key not in _TABLES:
            _TABLES[key] = ThresholdTable(*key)
        return _TABLES[key]
