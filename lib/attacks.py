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
with fewer flips than its radius. It is also the strongest attack on the Chernoff bound itself:
in eq. (7) a flip replaces one term by another that depends on t and on the flip's move m_i only,
increasingly in m_i for every t on the side to be certified, so for every t the greedy set of r
flips gives the smallest exponent among all sets of r flips (:func:`attack_smoothed`).

The attacks evaluate many (test point, number of flips) pairs at once: one call of
:func:`lib.chernoff.chernoff_bound` on many columns (each column its own flipped labelling,
:func:`_bounds_after_flips`), and one batch of warm-started refits of the logistic regression
(:func:`_logistic_fit_many`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from contextlib import nullcontext

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_factor, cho_solve
from scipy.special import expit
from tqdm import tqdm

from . import _checks
from .chernoff import chernoff_bound

__all__ = [
    "min_flips_least_squares",
    "attack_smoothed",
    "logistic_fit",
    "attack_logistic",
    "attack_logistic_orders",
    "min_flips_multiclass",
    "attack_smoothed_multiclass",
]

LOG_HALF = float(np.log(0.5))

try:  # installed with the book's lock (scikit-learn's dependency); without it BLAS keeps its threads
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None


def _one_blas_thread():
    """A context in which BLAS runs on one thread. The logistic refits multiply thin matrices
    (problems x n by n x k), where a second BLAS thread mostly waits for the first: on a busy
    machine each product then waits for a time slice, and the refits ran ten times slower."""
    return _threadpool_limits(limits=1, user_api="blas") if _threadpool_limits is not None else nullcontext()


_CHUNK_ENTRIES = 4_000_000  # weights per batched Chernoff call, labels per batch of refits (32 MB in float64)


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
    alpha: ArrayLike,
    y: ArrayLike,
    q: float,
    max_flips: int,
    order: NDArray | None = None,
    *,
    chunk_entries: int = _CHUNK_ENTRIES,
    progress: bool = True,
) -> tuple[NDArray, NDArray]:
    r"""Attack the smoothed (Chernoff) prediction, up to ``max_flips`` flips.

    For each test column, flips the labels in an order and reports a number of flips r after
    which the smoothed prediction changes AND the new prediction is certified (the bound of
    :func:`lib.chernoff.chernoff_bound` on the flipped labels has log tail < log 1/2), i.e. an
    attack proven to succeed. ``order=None`` is the greedy order, which moves the expected noisy
    score E_r = E[alpha^T Y] (eq. 11) towards the other side fastest; for least squares this is
    also the influence order of App. C, exact here because the score is linear in the labels.
    ``order`` may instead give, per column, training indices to flip in turn ((n', m) integer
    array, e.g. by l2 distance in feature space, App. C). Returns (flips, pred): flips[j] is that
    number (inf if none up to ``max_flips``), pred the smoothed prediction before the attack. A
    certificate of radius R is contradicted if flips[j] <= R.

    Which r is reported, and why it is found fast:

    * A certified class c' = 1{t >= 0} needs f(t) < log 1/2 < 0 for the objective f of eq. (7),
      which is convex with f(0) = 0 and f'(0) = 1/2 - E_r; so it needs E_r strictly on the side
      of c'. E_r moves by (1 - 2q) alpha_i (1 - 2 y_i) per flip (a cumulative sum along the
      order), so every r at which the exact E_r has not crossed 1/2 is a failure, decided without
      evaluating the bound (with a margin far above the rounding of those sums).
    * Greedy order (monotone): flipping point i changes its term of eq. (7), at every t on the
      side of c', by phi(|t| m_i), where m_i = +-alpha_i is its move of alpha^T y towards the
      other side and phi(x) = log((q + (1 - q) e^{-x}) / (1 - q + q e^{-x})) decreases, with
      phi(0) = 0. So each strictly helpful flip lowers the exponent at every such t, success is
      monotone in r, and the reported r is the FIRST success up to the number of helpful moves:
      found by an exponential search from a guess (the first r at which the expected score has
      moved past 1/2 by the Gaussian margin sqrt(2 ln 2 q (1 - q) sum alpha_i^2)), then
      bisection. For the same reason no set of r flips (in whatever order) gets a smaller
      exponent than the r largest moves at any t: no order succeeds with fewer flips.
    * Any other order: the doubling-then-bisection search of :func:`_proven_success` (a success
      it returns is proven; along a non-monotone order it may be a later boundary than the first).
    * The bound is evaluated for many (column, r) pairs in one call (:func:`_bounds_after_flips`),
      ``chunk_entries`` weights at a time; test columns are processed in groups of about
      ``chunk_entries / n``.
    """
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], 2)
    qf = _checks.flip_probability(q, 2)
    max_flips = _checks.count(max_flips, "max_flips", minimum=0)
    chunk_entries = _checks.count(chunk_entries, "chunk_entries")
    n, m = a.shape
    greedy = order is None
    if not greedy:
        order = np.asarray(order)
        if order.ndim != 2 or order.shape[1] != m:
            raise ValueError(f"order must have shape (n', {m}); got {order.shape}")
        if order.size and (order.dtype.kind not in "iu" or order.min() < 0 or order.max() >= n):
            raise ValueError(f"order must hold training indices in [0, {n}); got dtype {order.dtype}")
    base = chernoff_bound(a, yv, qf)
    flips = np.full(m, np.inf)
    group = max(1, chunk_entries // max(n, 1))
    starts = range(0, m, group)
    for s in tqdm(
        starts,
        desc=f"attacks on the smoothed classifier (q = {qf})",
        leave=False,
        **({} if progress and len(starts) > 1 else {"disable": True}),
    ):
        cols = slice(s, min(s + group, m))
        flips[cols] = _attack_group(
            a[:, cols], yv, qf, base.pred[cols], max_flips, None if greedy else order[:, cols], chunk_entries
        )
    return flips, base.pred


def _attack_group(
    a: NDArray,
    yv: NDArray,
    q: float,
    base_pred: NDArray,
    max_flips: int,
    order: NDArray | None,
    chunk_entries: int,
) -> NDArray[np.float64]:
    """:func:`attack_smoothed` on a group of test columns."""
    n, m = a.shape
    moves = (1 - 2 * q) * a * (1 - 2 * yv)[:, None]
    up = base_pred == 0
    helpful = np.where(up[None, :], moves, -moves)  # how far each flip moves E_r towards the other side
    expected = a.T @ np.where(yv == 1, 1.0 - q, q)  # E_0 = E[alpha^T Y], as chernoff_bound computes it
    need = np.where(up, 0.5 - expected, expected - 0.5)  # E_r crosses 1/2 once the moves add up to more
    # rounding of expected and of the cumulative sums: a few n eps sum|alpha|, far below this margin
    tol = 1e-9 * (np.abs(a).sum(axis=0) + 1.0)
    greedy = order is None
    if greedy:
        order = np.argsort(-helpful, axis=0)
        # beyond the helpful moves a flip only undoes progress, so stop there
        caps = np.minimum(max_flips, np.sum(helpful > 0, axis=0))
    else:
        caps = np.full(m, min(max_flips, order.shape[0]))
    depth = int(caps.max(initial=0))
    flips = np.full(m, np.inf)
    if depth == 0:
        return flips
    order = np.ascontiguousarray(order[:depth])
    progress = np.cumsum(np.take_along_axis(helpful, order, axis=0), axis=0)  # after r flips: row r - 1
    ones = np.cumsum(1 - 2 * yv[order], axis=0)  # change in the number of labels 1 after r flips
    crossed = progress > (need - tol)[None, :]  # False: E_r has not crossed, no certificate possible
    n1 = int(np.sum(yv))

    def changed(cols: NDArray, rs: NDArray) -> NDArray[np.bool_]:
        out = np.zeros(cols.size, dtype=bool)
        live = crossed[rs - 1, cols]
        if live.any():
            c, r = cols[live], rs[live]
            pred, tail = _bounds_after_flips(a, yv, q, c, r, order, n1 + ones[r - 1, c], chunk_entries)
            out[live] = (pred != base_pred[c]) & (tail < LOG_HALF)
        return out

    if greedy:
        first = np.where(crossed.any(axis=0), np.argmax(crossed, axis=0) + 1, depth + 1)
        margin = np.sqrt(2.0 * np.log(2.0) * q * (1 - q) * np.sum(a * a, axis=0))
        past = progress > (need + margin)[None, :]
        guess = np.where(past.any(axis=0), np.argmax(past, axis=0) + 1, caps)
        todo = np.flatnonzero(first <= caps)
        searches = [_first_success(int(first[j]) - 1, int(caps[j]), int(guess[j])) for j in todo]
    else:
        todo = np.arange(m)
        searches = [_search(int(caps[j]), monotone=False) for j in todo]
    flips[todo] = _run_searches(searches, lambda idx, rs: changed(todo[idx], rs))
    return flips


def _bounds_after_flips(
    a: NDArray,
    yv: NDArray,
    q: float,
    cols: NDArray,
    rs: NDArray,
    order: NDArray,
    ones: NDArray,
    chunk_entries: int,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """(pred, log_tail) of :func:`lib.chernoff.chernoff_bound` for column ``cols[p]`` of ``a``
    with the labels ``order[:rs[p], cols[p]]`` flipped, for every p, in few calls.

    chernoff_bound takes one label vector for all its columns; each flipped labelling is laid out
    as its own column against the shared labels (1, ..., 1, 0, ..., 0): the weights of the points
    labelled 1 first, then those labelled 0, and zero weights in the rows left over. A zero
    weight adds log(q + (1 - q)) = 0 to eq. (7) and nothing to its derivatives, and the float64
    evaluation of chernoff_bound rounds up over every row, padding included: the bound is a bound
    on the flipped problem itself (``ones[p]`` is its number of labels 1). Pairs are sorted by
    that number, so that a call pads little, and sent ``chunk_entries`` weights at a time.
    """
    n = a.shape[0]
    pred = np.empty(cols.size, dtype=np.int64)
    tail = np.empty(cols.size)
    by_ones = np.argsort(ones, kind="stable")
    step = max(1, chunk_entries // max(n, 1))
    for s in range(0, cols.size, step):
        pick = by_ones[s : s + step]
        c, r, b = cols[pick], rs[pick], pick.size
        labels = np.repeat(yv.astype(np.int8)[:, None], b, axis=1)
        depth = int(r.max())
        valid = np.arange(depth)[:, None] < r[None, :]
        k, j = np.nonzero(valid)
        labels[order[k, c[j]], j] ^= 1
        before = np.cumsum(labels, axis=0, dtype=np.int32)  # labels 1 up to each row, inclusive
        count1 = before[-1].astype(np.int64)
        top1, top0 = int(count1.max()), int((n - count1).max())
        # row i labelled 1 goes to row (ones up to i) - 1, labelled 0 to top1 + (zeros up to i) - 1
        rows = np.where(labels == 1, before - 1, np.arange(n, dtype=np.int32)[:, None] - before + top1)
        weights = np.zeros((top1 + top0, b))
        weights[rows, np.arange(b)[None, :]] = a[:, c]
        shared = np.r_[np.ones(top1, dtype=np.int64), np.zeros(top0, dtype=np.int64)]
        res = chernoff_bound(weights, shared, q)
        pred[pick], tail[pick] = res.pred, res.log_tail
    return pred, tail


Search = Generator[int, bool, float]


def _search(cap: int, monotone: bool = False) -> Search:
    """The search of :func:`_proven_success` as a generator: it yields the numbers of flips to
    try, is sent whether each succeeded, and returns its result (see there)."""
    if cap < 1:
        return np.inf
    if monotone and not (yield cap):
        return np.inf
    lo, hi = 0, 1  # changed(lo) is False (or lo = 0)
    while hi < cap and not (yield hi):
        lo, hi = hi, 2 * hi
    hi = min(hi, cap)
    if not monotone and not (yield hi):
        return np.inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if (yield mid) else (mid, hi)
    return float(hi)


def _first_success(lo: int, cap: int, guess: int) -> Search:
    """The first r in (lo, cap] at which a MONOTONE changed(r) holds (inf if changed(cap) fails),
    given that changed(lo) fails: exponential search from ``guess`` (up or down, steps 1, 2, 4,
    ...), then bisection. A generator like :func:`_search`."""
    hi = cap + 1  # the smallest r known to succeed (cap + 1: none yet)
    x = min(max(guess, lo + 1), cap)
    step = 1
    if (yield x):
        hi = x
        while hi - lo > 1:  # down from the guess
            x = max(hi - step, lo + 1)
            step *= 2
            if not (yield x):
                lo = x
                break
            hi = x
    else:
        lo = x
        while hi - lo > 1:  # up from the guess
            x = min(lo + step, cap)
            step *= 2
            if (yield x):
                hi = x
                break
            lo = x
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if (yield mid) else (mid, hi)
    return float(hi) if hi <= cap else np.inf


def _run_searches(
    searches: Sequence[Search], changed_many: Callable[[NDArray, NDArray], NDArray]
) -> NDArray[np.float64]:
    """Run searches in lockstep: each round collects the pending number of flips of every search
    and answers them all with ONE call ``changed_many(indices, flips)`` (a bool array). A number
    a search asks for again gets the answer it got before. Returns the searches' results."""
    out = np.full(len(searches), np.inf)
    memo: list[dict[int, bool]] = [{} for _ in searches]
    pending: dict[int, int] = {}

    def advance(i: int, answer: bool | None) -> None:
        try:
            r = searches[i].send(answer)
            while r in memo[i]:
                r = searches[i].send(memo[i][r])
            pending[i] = int(r)
        except StopIteration as stop:
            out[i] = stop.value

    for i in range(len(searches)):
        advance(i, None)
    while pending:
        idx = np.fromiter(pending.keys(), dtype=np.int64, count=len(pending))
        rs = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
        pending = {}
        for i, r, ok in zip(idx.tolist(), rs.tolist(), np.asarray(changed_many(idx, rs)).tolist()):
            memo[i][r] = bool(ok)
            advance(i, bool(ok))
    return out


def _proven_success(changed: Callable[[int], bool], cap: int, monotone: bool = False) -> float:
    """A number of flips r <= cap with changed(r) True, found along a fixed order by doubling
    then bisection, O(log cap) evaluations. Bisection finds a boundary where changed flips from
    False to True, the first one when changed is monotone in r; any r it returns is a proven
    success, so the attack stays valid either way.

    ``monotone=True`` (for orders of strictly helpful moves, largest first, capped at their
    number: each flip moves the expected score further the same way) first evaluates
    changed(cap) and gives up at once if it is False, so a rival that cannot win costs one
    evaluation instead of log2(cap). Along other orders (e.g. by feature-space distance)
    changed can be True early and False at cap, so they keep the plain search.
    The search itself is :func:`_search`; :func:`_run_searches` runs many of them at once.
    """
    return _run_searches(
        [_search(cap, monotone)], lambda idx, rs: np.array([changed(int(r)) for r in rs], dtype=bool)
    )[0]


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
    with _one_blas_thread():
        return _logistic_fit(X, y, l2, w0, iters)


def _logistic_fit(X: NDArray, y: NDArray, l2: float, w0: NDArray | None, iters: int) -> NDArray:
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


_LOGISTIC_ORDERS = ("distance", "distance_reverse", "influence")


def _logistic_hessian(X: NDArray, w: NDArray, l2: float) -> NDArray:
    """X^T diag(p (1 - p)) X + l2 n I, p = expit(X w): the Hessian of :func:`logistic_fit`'s loss at w."""
    p = expit(X @ w)
    return (X * (p * (1 - p))[:, None]).T @ X + l2 * X.shape[0] * np.eye(X.shape[1])


def _logistic_losses(X: NDArray, Y: NDArray, W: NDArray, l2: float) -> tuple[NDArray, NDArray]:
    """The loss of :func:`logistic_fit` for every row of labels ``Y`` (P, n) and of weights ``W``
    (P, k), each summed along its row as :func:`logistic_fit` sums it; with the probabilities
    expit(W X^T), from the same exp(-|z|) as the loss, for the next step."""
    Z = W @ X.T
    E = np.exp(-np.abs(Z))
    loss = np.sum(np.maximum(Z, 0.0) + np.log1p(E) - Y * Z, axis=1)  # log(1 + e^z) - y z
    P = np.where(Z >= 0.0, 1.0, E) / (1.0 + E)
    return loss + 0.5 * l2 * X.shape[0] * np.sum(W * W, axis=1), P


_PRODUCTS_MAX = 1 << 23  # entries of the (n, k(k+1)/2) products x_ia x_ib kept for batched Hessians (64 MB)


def _hessian_products(X: NDArray) -> NDArray | None:
    """The products x_ia x_ib (a <= b) of the columns of X, (n, k(k+1)/2), or None where they
    would exceed :data:`_PRODUCTS_MAX` entries (wide features: Newton steps by conjugate gradients)."""
    n, k = X.shape
    if n * k * (k + 1) // 2 > _PRODUCTS_MAX:
        return None
    upper = np.triu_indices(k)
    return X[:, upper[0]] * X[:, upper[1]]


def _newton_steps_cg(
    X: NDArray,
    S: NDArray,
    G: NDArray,
    ridge: float,
    factor,
    tol: NDArray | float = 1e-12,
    max_iter: int | None = None,
) -> NDArray[np.float64]:
    """Solve (X^T diag(S[p]) X + ridge I) step = G[p] for every row p by conjugate gradients
    preconditioned with the Cholesky ``factor`` of one such matrix (the clean model's Hessian),
    until the residual is below ``tol[p]`` |G[p]| or after ``max_iter`` iterations (2k + 10 by
    default). Each iteration is two matrix products for all rows together; the Hessians are never
    formed. Every iterate of conjugate gradients started at 0 is a descent direction."""
    k = X.shape[1]
    max_iter = 2 * k + 10 if max_iter is None else max_iter
    x = np.zeros_like(G)
    r = G.copy()
    z = cho_solve(factor, r.T, check_finite=False).T
    d = z.copy()
    rz = np.sum(r * z, axis=1)
    goal = np.broadcast_to(tol, G.shape[:1]) * np.linalg.norm(G, axis=1)
    active = np.flatnonzero(np.linalg.norm(r, axis=1) > goal)
    for _ in range(max_iter):
        if active.size == 0:
            break
        da = d[active]
        Ad = (S[active] * (da @ X.T)) @ X + ridge * da
        step = rz[active] / np.sum(da * Ad, axis=1)
        x[active] += step[:, None] * da
        r[active] -= step[:, None] * Ad
        active = active[np.linalg.norm(r[active], axis=1) > goal[active]]
        if active.size == 0:
            break
        za = cho_solve(factor, r[active].T, check_finite=False).T
        rz_new = np.sum(r[active] * za, axis=1)
        d[active] = za + (rz_new / rz[active])[:, None] * d[active]
        rz[active] = rz_new
    return x


def _logistic_fit_many(
    X: NDArray,
    Y: NDArray,
    l2: float,
    W0: NDArray,
    H0: NDArray | None = None,
    products: NDArray | None = None,
    iters: int = 50,
    test: NDArray | None = None,
    at_h0: NDArray | None = None,
) -> NDArray[np.float64]:
    """:func:`logistic_fit` for every row of the labels ``Y`` (P, n) at once, row p started at
    ``W0[p]``; returns the weights (P, k).

    The same damped Newton iteration: each problem's Newton step H^{-1} grad, halved until its
    loss does not increase, and its own stop once a step moves no weight by more than 1e-10 (or
    after ``iters`` steps), or once its gradient proves it within 1e-10 of its minimiser w*: the
    loss is (l2 n)-strongly convex, so |w - w*| <= |grad(w)| / (l2 n) at every iterate w.

    The work of all problems is shared: X w and the gradients are two matrix products, and so is
    each solve. With ``products`` (the x_ia x_ib of :func:`_hessian_products`) the P Hessians
    X^T diag(p (1 - p)) X + l2 n I are one more product, (P, n) x (n, k(k+1)/2), and are solved
    directly. Without them (wide features, where the Hessians cost n k^2 each) the steps are
    truncated Newton steps: the Newton systems are solved by conjugate gradients preconditioned
    with ``H0`` (:func:`_newton_steps_cg`) to a relative residual min(1/2, sqrt|grad|), which
    still converges superlinearly to the same minimiser (each step is a descent direction, the
    loss is checked as before). ``H0`` is the Hessian at the start of the problems flagged in
    ``at_h0`` (all of them by default; the clean fit, for the attacks): their first step uses it
    instead of computing it once per problem. It is also the preconditioner.

    ``test`` (P, k): problem p only needs the side of test[p] . w* of its minimiser w* (the
    retrained prediction), and stops as soon as that side is proven: |test . w| above
    |test| |grad(w)| / (l2 n) (with a margin for the rounding of both) puts test . w* strictly on
    the side of test . w. The weights returned for such a problem are that iterate: test . w has
    the sign of test . w* (never 0).
    """
    n, k = X.shape
    upper = np.triu_indices(k)
    W = np.array(W0, dtype=np.float64)
    loss, prob = _logistic_losses(X, Y, W, l2)
    active = np.arange(Y.shape[0])
    ridge = l2 * n
    at_h0 = np.broadcast_to(H0 is not None if at_h0 is None else np.asarray(at_h0, dtype=bool), (W.shape[0],))
    if H0 is None and products is None:  # a preconditioner for the conjugate gradients
        H0 = _logistic_hessian(X, W[0], l2) if W.shape[0] else np.eye(k)
    factor = cho_factor(H0, check_finite=False) if H0 is not None else None
    for it in range(iters):
        if active.size == 0:
            break
        Wa, Ya, P = W[active], Y[active], prob[active]
        grad = (P - Ya) @ X + ridge * Wa
        # |w - w*| <= |grad| / (l2 n): stop where that is below 1e-10 (as close as logistic_fit's
        # last step), or where the side of test . w* is proven
        size = np.linalg.norm(grad, axis=1) / ridge
        stop = size <= 1e-10
        if test is not None:
            ta = test[active]
            side = np.abs(np.sum(ta * Wa, axis=1)) - 1e-12 * np.sum(np.abs(ta * Wa), axis=1)
            slack = 1e-6 * size + 1e-9 * (1.0 + np.linalg.norm(Wa, axis=1))
            stop |= side > np.linalg.norm(ta, axis=1) * (size + slack)
        if stop.any():
            keep = ~stop
            active, Wa, Ya, P, grad = active[keep], Wa[keep], Ya[keep], P[keep], grad[keep]
            if active.size == 0:
                break
        step = np.empty_like(grad)
        first = at_h0[active] if it == 0 else np.zeros(active.size, dtype=bool)
        if first.any():  # still at the start where H0 is the Hessian
            step[first] = cho_solve(factor, grad[first].T, check_finite=False).T
        rest = ~first
        if not rest.any():
            pass
        elif products is not None:
            flat = (P[rest] * (1 - P[rest])) @ products  # the upper triangles of the Hessians
            H = np.empty((flat.shape[0], k, k))
            H[:, upper[0], upper[1]] = flat
            H[:, upper[1], upper[0]] = flat
            H += ridge * np.eye(k)
            step[rest] = np.linalg.solve(H, grad[rest][:, :, None])[:, :, 0]
        else:  # truncated Newton: the systems solved to a relative residual min(1/2, sqrt|grad|)
            forcing = np.clip(np.sqrt(np.linalg.norm(grad[rest], axis=1)), 1e-12, 0.5)
            step[rest] = _newton_steps_cg(X, P[rest] * (1 - P[rest]), grad[rest], ridge, factor, tol=forcing)
        eta = np.ones(active.size)
        new_loss = np.empty(active.size)
        trial = np.arange(active.size)
        new_prob = np.empty_like(P)
        while trial.size:  # backtracking, per problem
            new_loss[trial], new_prob[trial] = _logistic_losses(
                X, Ya[trial], Wa[trial] - eta[trial, None] * step[trial], l2
            )
            ok = (new_loss[trial] <= loss[active[trial]]) | (eta[trial] < 1e-10)
            trial = trial[~ok]
            eta[trial] *= 0.5
        W[active] = Wa - eta[:, None] * step
        loss[active] = new_loss
        prob[active] = new_prob
        active = active[np.max(np.abs(eta[:, None] * step), axis=1) >= 1e-10]
    return W


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
    each retraining run to convergence (:func:`_logistic_fit_many`, warm-started at the clean model).
    Returns (m,) floats: a number of flips after which the retrained prediction differs (checked
    by that retraining), inf if not within ``max_flips``. Where the prediction does not change
    monotonically along the order, bisection may return a later boundary than the first one;
    either way it is an attack that works, an upper bound on the undefended model's robustness.
    """
    if order not in _LOGISTIC_ORDERS:
        raise ValueError(f"order must be 'distance', 'distance_reverse' or 'influence'; got {order!r}")
    return attack_logistic_orders(X, y, Xt, max_flips, l2, orders=(order,))[order]


def attack_logistic_orders(
    X: ArrayLike,
    y: ArrayLike,
    Xt: ArrayLike,
    max_flips: int,
    l2: float = 1e-3,
    orders: Sequence[str] = _LOGISTIC_ORDERS,
    *,
    chunk_entries: int = _CHUNK_ENTRIES,
    progress: bool = True,
) -> dict[str, NDArray[np.float64]]:
    """:func:`attack_logistic` for several orders at once: {order: flips}, each exactly what
    :func:`attack_logistic` returns for that order.

    The searches of all (test point, order) pairs run in lockstep (:func:`_run_searches`): each
    round retrains the logistic regression once for every pending pair, as one batch of
    Newton fits warm-started at the clean model (:func:`_logistic_fit_many`, ``chunk_entries``
    labels at a time; the Hessian of their first step is the clean model's, computed once).
    """
    Xa = _checks.finite_matrix(X, "X")
    Xta = _checks.finite_matrix(Xt, "Xt")
    yv = _checks.labels(y, Xa.shape[0], 2).astype(np.float64)
    if Xta.shape[1] != Xa.shape[1]:
        raise ValueError(f"Xt has {Xta.shape[1]} columns but X has {Xa.shape[1]}")
    max_flips = _checks.count(max_flips, "max_flips", minimum=0)
    chunk_entries = _checks.count(chunk_entries, "chunk_entries")
    orders = tuple(orders)
    bad = [o for o in orders if o not in _LOGISTIC_ORDERS]
    if bad or not orders:
        raise ValueError(f"orders must be among 'distance', 'distance_reverse', 'influence'; got {orders!r}")
    w = logistic_fit(Xa, yv, l2)
    pred = (Xta @ w >= 0).astype(np.int64)
    hess = _logistic_hessian(Xa, w, l2)  # every refit starts at the clean fit w
    if "influence" in orders:
        # d loss_test / d(flip i) ~ -grad_test^T H^-1 (grad(z_i^-) - grad(z_i)); flipping y_i
        # changes the training gradient by x_i (y_i - (1 - y_i)) = x_i (2 y_i - 1)
        Hinv_X = np.linalg.solve(hess, (Xa * (2 * yv - 1)[:, None]).T)  # (k, n)
    cands, points = [], []
    for o in orders:
        for j in range(Xta.shape[0]):
            if o in ("distance", "distance_reverse"):
                same = np.flatnonzero(yv == pred[j])
                cand = same[np.argsort(np.linalg.norm(Xa[same] - Xta[j], axis=1))]
                cand = cand[::-1] if o == "distance_reverse" else cand
            else:
                pt = expit(Xta[j] @ w)
                grad_test = Xta[j] * (pt - pred[j])  # loss gradient w.r.t. w at the predicted label
                score = -(grad_test @ Hinv_X)  # increase of the test loss per flip (to first order)
                cand = np.argsort(-score)
            cands.append(cand)
            points.append(j)
    points_a = np.asarray(points, dtype=np.int64)
    products = _hessian_products(Xa)
    bar = tqdm(
        desc="logistic-regression attacks (refits)", leave=False, **({} if progress else {"disable": True})
    )

    # the weights each search got at each number of flips it tried: a refit starts from those of
    # the nearest number tried (0: the clean fit), whose labels differ in the fewest places
    tried: list[dict[int, NDArray]] = [{0: w} for _ in cands]

    def changed(idx: NDArray, rs: NDArray) -> NDArray[np.bool_]:
        out = np.empty(idx.size, dtype=bool)
        step = max(1, chunk_entries // Xa.shape[0])
        for s in range(0, idx.size, step):
            sub, r = idx[s : s + step], rs[s : s + step]
            Y = np.repeat(yv[None, :], sub.size, axis=0)
            W0 = np.empty((sub.size, Xa.shape[1]))
            clean = np.zeros(sub.size, dtype=bool)
            for c, (i, ri) in enumerate(zip(sub.tolist(), r.tolist())):
                flip = cands[i][:ri]
                Y[c, flip] = 1.0 - Y[c, flip]
                near = min(tried[i], key=lambda t, ri=ri: (abs(t - ri), t))
                W0[c], clean[c] = tried[i][near], near == 0
            jj = points_a[sub]
            W = _logistic_fit_many(Xa, Y, l2, W0, H0=hess, products=products, test=Xta[jj], at_h0=clean)
            for c, (i, ri) in enumerate(zip(sub.tolist(), r.tolist())):
                tried[i][ri] = W[c]
            out[s : s + step] = (np.sum(Xta[jj] * W, axis=1) >= 0).astype(np.int64) != pred[jj]
            bar.update(sub.size)
        return out

    searches = [_search(min(max_flips, len(c))) for c in cands]
    with _one_blas_thread():
        flips = _run_searches(searches, changed)
    bar.close()
    m = Xta.shape[0]
    return {o: flips[i * m : (i + 1) * m] for i, o in enumerate(orders)}


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


def min_flips_multiclass(alpha: ArrayLike, y: ArrayLike, num_classes: int) -> tuple[NDArray, NDArray]:
    """Exact fewest label flips that change the undefended prediction argmax_c alpha^T Y_c.

    A rival wins when it scores at least as much as the prediction (ties count as a change: the
    attack is then at most one flip too optimistic, which errs on the side of a stronger attack).
    Per (test point, rival) each training point has one best gap-closing relabelling
    (:func:`_pair_gains`) and the moves add up, so the fewest flips take the largest gains
    first. ``alpha`` (n, m), ``y`` (n,) in {0..K-1}. Returns (flips (m,), pred (m,)); inf where
    impossible.

    The gains of one test point fall into groups that the K - 1 rivals share: 2 alpha_i for the
    points labelled p, |alpha_i| and -2 alpha_i for those labelled c != p. Rival r's gains are the
    first group, -2 alpha_i of class r and |alpha_i| of every other class. Each group is sorted
    once per test point, lazily (a heap, only as far as some rival reads it), and every rival
    merges its groups, largest first, summing in the same order as sorting all its n gains
    would; a rival stops once it cannot beat the best rival so far. The one-sort-per-rival
    form, :func:`_min_flips_multiclass_sorted`, gives the same numbers (checked in the tests).
    """
    k = _checks.num_classes(num_classes)
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], k)
    scores, pred = _multiclass_scores(a, yv, k)
    gap = scores[np.arange(a.shape[1]), pred][:, None] - scores  # (m, K), >= 0
    flips = np.empty(a.shape[1])
    _fewest_multiclass_kernel(
        np.ascontiguousarray(a),
        yv.astype(np.int64),
        pred.astype(np.int64),
        np.ascontiguousarray(gap),
        k,
        flips,
    )
    return flips, pred


def _multiclass_scores(a: NDArray, yv: NDArray, k: int) -> tuple[NDArray, NDArray]:
    onehot = np.zeros((a.shape[0], k))
    onehot[np.arange(a.shape[0]), yv] = 1.0
    scores = a.T @ onehot
    return scores, np.argmax(scores, axis=1)


def _min_flips_multiclass_sorted(
    alpha: ArrayLike, y: ArrayLike, num_classes: int, top: int = 1024
) -> tuple[NDArray, NDArray]:
    """:func:`min_flips_multiclass` by one (partial) sort of all n gains per (test point,
    rival) (:func:`_fewest_moves`): the reference the grouped merge is tested against."""
    k = _checks.num_classes(num_classes)
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], k)
    m = a.shape[1]
    scores, pred = _multiclass_scores(a, yv, k)
    rivals = np.array([[c for c in range(k) if c != p] for p in pred]).reshape(m, k - 1)
    cols = np.arange(m)
    flips = np.full(m, np.inf)
    for rho in range(k - 1):
        r = rivals[:, rho]
        gap = scores[cols, pred] - scores[cols, r]  # >= 0
        gain = np.maximum(_pair_gains(a, yv, pred, r), 0.0)  # a move that widens the gap is never taken
        flips = np.minimum(flips, _fewest_moves(gain, gap, strict=False, top=top))  # a tie counts
    return flips, pred


@numba.njit(cache=True, nogil=True)
def _sift_down(h, lo, size, i):
    """Restore the max-heap h[lo : lo + size] below position i."""
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and h[lo + child + 1] > h[lo + child]:
            child += 1
        if h[lo + child] <= h[lo + i]:
            return
        h[lo + child], h[lo + i] = h[lo + i], h[lo + child]
        i = child


@numba.njit(cache=True, nogil=True)
def _column_fewest(a, y, p, gap, k, buf):
    """Fewest flips for one test point: weights ``a`` (n,), prediction ``p``, ``gap[c]`` =
    s_p - s_c; ``buf`` is scratch of length >= 2n.

    Groups (positive gains only: a zero or negative move is never taken): 0, 2 a_i for y_i = p;
    1 + c, |a_i| for y_i = c; 1 + K + c, -2 a_i for y_i = c. Each group is a max-heap in ``buf``
    that is sorted lazily: popping the largest moves it to the group's end, so the group's
    h-th largest gain sits at end - 1 - h once h + 1 gains were popped, and no group is sorted
    further than some rival reads it.
    """
    n = a.size
    ng = 2 * k + 1
    size = np.zeros(ng, np.int64)
    for i in range(n):
        c = y[i]
        x = a[i]
        if c == p:
            if x > 0.0:
                size[0] += 1
        else:
            if x != 0.0:
                size[1 + c] += 1
            if x < 0.0:
                size[1 + k + c] += 1
    start = np.zeros(ng + 1, np.int64)
    for g in range(ng):
        start[g + 1] = start[g] + size[g]
    fill = start[:-1].copy()
    for i in range(n):
        c = y[i]
        x = a[i]
        if c == p:
            if x > 0.0:
                buf[fill[0]] = 2 * x
                fill[0] += 1
        else:
            if x != 0.0:
                buf[fill[1 + c]] = abs(x)
                fill[1 + c] += 1
            if x < 0.0:
                buf[fill[1 + k + c]] = -2 * x
                fill[1 + k + c] += 1
    heap = size.copy()  # current heap size of each group
    for g in range(ng):
        for i in range(heap[g] // 2 - 1, -1, -1):
            _sift_down(buf, start[g], heap[g], i)
    best = np.inf
    lists = np.empty(k, np.int64)
    head = np.empty(k, np.int64)
    for r in range(k):
        if r == p:
            continue
        need = gap[r]
        if need <= 0.0:  # a tie: the first move (gain >= 0) already reaches it
            best = min(best, 1.0)
            continue
        nl = 0
        lists[nl] = 0
        nl += 1
        lists[nl] = 1 + k + r
        nl += 1
        for c in range(k):
            if c != p and c != r:
                lists[nl] = 1 + c
                nl += 1
        head[:nl] = 0
        cum = 0.0
        count = 0
        while count + 1 < best:  # a longer answer cannot lower the minimum over rivals
            pick = -1
            v = 0.0
            for li in range(nl):
                g = lists[li]
                h = head[li]
                if h >= size[g]:
                    continue
                if h == size[g] - heap[g]:  # the group's next gain is still in its heap: pop it
                    top = buf[start[g]]
                    heap[g] -= 1
                    buf[start[g]] = buf[start[g] + heap[g]]
                    _sift_down(buf, start[g], heap[g], 0)
                    buf[start[g] + heap[g]] = top
                w = buf[start[g] + size[g] - 1 - h]
                if pick < 0 or w > v:
                    pick = li
                    v = w
            if pick < 0:
                break  # every gain is used and the gap stays open
            head[pick] += 1
            cum += v
            count += 1
            if cum >= need:
                best = count
                break
    return best


_KERNEL_BLOCK = 16  # test points per parallel task: a row of the block is one or two cache lines


@numba.njit(parallel=True, cache=True, nogil=True)
def _fewest_multiclass_kernel(a, y, pred, gap, k, out):
    n, m = a.shape
    for b in numba.prange((m + _KERNEL_BLOCK - 1) // _KERNEL_BLOCK):
        lo = b * _KERNEL_BLOCK
        hi = min(lo + _KERNEL_BLOCK, m)
        cols = np.empty((hi - lo, n))
        for i in range(n):  # read the row-ordered weights a block of columns at a time
            for j in range(lo, hi):
                cols[j - lo, i] = a[i, j]
        buf = np.empty(2 * n)
        for j in range(lo, hi):
            out[j] = _column_fewest(cols[j - lo], y, pred[j], gap[j], k, buf)


def attack_smoothed_multiclass(
    alpha: ArrayLike, y: ArrayLike, q: float, num_classes: int, max_flips: int, *, prune: bool = True
) -> tuple[NDArray, NDArray]:
    """Attack the K-class smoothed (Chernoff) prediction; proven successes only.

    For each test column: for every rival, the exact best order of relabellings of
    :func:`min_flips_multiclass` (the smoothed prediction is the argmax of the expected scores,
    an affine function of the same one-hot labels); along it, the smallest number of flips found
    by doubling then bisection (:func:`_proven_success`) at which the multi-class Chernoff bound
    CERTIFIES a prediction other than the original one (log tail < log 1/2), so the attack
    provably changed g. Returns (flips, pred): flips[j] is that number, minimised over rivals
    (inf if none up to ``max_flips``). A certificate of radius R is contradicted if flips[j] <= R.
    Rivals are tried closest first, and a later rival only below the best count so far (one
    evaluation when it cannot do better), which returns the same minimum when success is
    monotone along each order (``prune=False`` searches every rival in full, as a reference;
    the tests compare the two).
    """
    k = _checks.num_classes(num_classes)
    a = _checks.finite_matrix(np.atleast_2d(np.asarray(alpha, dtype=np.float64).T).T, "alpha")
    yv = _checks.labels(y, a.shape[0], k)
    qf = _checks.flip_probability(q, k)
    base = chernoff_bound(a, yv, qf, k)
    flips = np.full(a.shape[1], np.inf)
    cap = min(max_flips, a.shape[0])
    scores, _ = _multiclass_scores(a, yv, k)
    for j in range(a.shape[1]):
        col, p = a[:, j : j + 1], base.pred[j]
        # closest rivals first (the expected scores are an increasing affine map of the clean
        # ones): once one rival succeeds at b flips, the others are searched below b only
        for r in np.argsort(scores[j, p] - scores[j], kind="stable"):
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
            below = cap if (np.isinf(flips[j]) or not prune) else int(flips[j]) - 1
            found = _proven_success(changed, min(below, int(np.sum(gain > 0))), monotone=True)
            flips[j] = min(flips[j], found)
    return flips, base.pred
