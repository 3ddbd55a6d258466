"""Attacks: the exact minimal-flip attack against brute force; no attack beats a certificate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lib import labelflip
from lib.attacks import (
    attack_smoothed,
    attack_smoothed_multiclass,
    min_flips_least_squares,
    min_flips_multiclass,
)
from lib.least_squares import add_intercept, kernel_weights


def test_min_flips_matches_brute_force(rng):
    for _ in range(60):
        n = int(rng.integers(3, 10))
        X = rng.normal(size=(n, 2))
        alpha = kernel_weights(X, rng.normal(size=(3, 2)) * 2, 0.3)
        y = rng.integers(0, 2, n)
        ours = min_flips_least_squares(alpha, y)
        for j in range(3):
            pred = alpha[:, j] @ y >= 0.5
            best = np.inf
            for size in range(1, n + 1):
                for subset in itertools.combinations(range(n), size):
                    y2 = y.copy()
                    y2[list(subset)] ^= 1
                    if (alpha[:, j] @ y2 >= 0.5) != pred:
                        best = size
                        break
                if best < np.inf:
                    break
            assert ours[j] == best


def test_no_attack_beats_the_certificate(rng):
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(int)
    Xt = rng.normal(size=(25, 3))
    q = 0.15
    cert = labelflip.certify(X, y, Xt, q)
    alpha = kernel_weights(add_intercept(X), add_intercept(Xt), cert.lam)
    flips, pred = attack_smoothed(alpha, y, q, max_flips=40)
    np.testing.assert_array_equal(pred, cert.pred)
    assert np.all(flips > cert.radius)  # a proven change within the radius would be a soundness bug
    assert np.isfinite(flips).sum() >= 5  # the attack does succeed beyond the radius, so the check bites
    undefended = min_flips_least_squares(alpha, y)
    assert np.all(undefended >= 1)


def test_logistic_attacks_find_real_flips(rng):
    from lib.attacks import attack_logistic, logistic_fit

    X = add_intercept(rng.normal(size=(150, 3)))
    y = (X[:, 0] + 0.3 * rng.normal(size=150) > 0).astype(int)
    Xt = add_intercept(rng.normal(size=(8, 3)) * 0.3)
    w = logistic_fit(X, y.astype(float))
    p = 1 / (1 + np.exp(-(X @ w)))
    grad = X.T @ (p - y) + 1e-3 * 150 * w
    assert np.abs(grad).max() < 1e-8  # Newton found the optimum
    for order in ["distance", "influence"]:
        flips = attack_logistic(X, y, Xt, max_flips=60, order=order)
        assert np.isfinite(flips).all()
    # farthest first (App. C's "reverse"): whatever it claims is a real change of prediction
    rev = attack_logistic(X, y, Xt, max_flips=100, order="distance_reverse")
    for j in np.flatnonzero(np.isfinite(rev)):
        pj = int(Xt[j] @ w >= 0)
        same = np.flatnonzero(y == pj)
        cand = same[np.argsort(np.linalg.norm(X[same] - Xt[j], axis=1))][::-1][: int(rev[j])]
        y_rev = y.copy()
        y_rev[cand] ^= 1
        assert int(Xt[j] @ logistic_fit(X, y_rev.astype(float)) >= 0) != pj
    with pytest.raises(ValueError, match="order"):
        attack_logistic(X, y, Xt, max_flips=5, order="nearest")
        # replay the attack's claim for one point: the flips really change the prediction
    j = 0
    flips = attack_logistic(X, y, Xt[:1], max_flips=60, order="distance")
    pred = int(Xt[0] @ w >= 0)
    same = np.flatnonzero(y == pred)
    cand = same[np.argsort(np.linalg.norm(X[same] - Xt[0], axis=1))][: int(flips[j])]
    y2 = y.copy()
    y2[cand] ^= 1
    assert int(Xt[0] @ logistic_fit(X, y2.astype(float)) >= 0) != pred


def test_logistic_bisection_agrees_with_a_flip_by_flip_scan(rng):
    """The attack finds its number of flips by doubling + bisection; a scan that retrains after
    every flip along the same (distance) order is the independent reference: the attack's
    number is a real success and never below the scan's first success."""
    from lib.attacks import attack_logistic, logistic_fit

    X = add_intercept(rng.normal(size=(120, 2)))
    y = (X[:, 1] + 0.5 * rng.normal(size=120) > 0).astype(int)
    Xt = add_intercept(rng.normal(size=(6, 2)) * 0.5)
    flips = attack_logistic(X, y, Xt, max_flips=80, order="distance")
    w = logistic_fit(X, y.astype(float))
    agree = 0
    for j in range(len(Xt)):
        pred = int(Xt[j] @ w >= 0)
        same = np.flatnonzero(y == pred)
        cand = same[np.argsort(np.linalg.norm(X[same] - Xt[j], axis=1))]
        first, y2 = np.inf, y.astype(float)
        for r, i in enumerate(cand[:80], start=1):
            y2[i] = 1 - y2[i]
            if int(Xt[j] @ logistic_fit(X, y2) >= 0) != pred:
                first = r
                break
        assert flips[j] >= first
        if np.isfinite(flips[j]):
            y3 = y.astype(float)
            y3[cand[: int(flips[j])]] = 1 - y3[cand[: int(flips[j])]]
            assert int(Xt[j] @ logistic_fit(X, y3) >= 0) != pred
        agree += flips[j] == first
    assert agree >= len(Xt) - 1  # along a near-monotone order bisection finds the first success


def test_proven_success_finds_the_first_success_of_a_monotone_order():
    from lib.attacks import _proven_success

    for monotone in (False, True):
        for threshold in (1, 2, 3, 7, 64, 99, 100):
            calls = []

            def changed(r, t=threshold, calls=calls):
                calls.append(r)
                return r >= t

            assert _proven_success(changed, 100, monotone=monotone) == threshold
            assert len(calls) <= 2 * 7 + 2  # O(log cap) evaluations
        assert _proven_success(lambda r: r >= 101, 100, monotone=monotone) == np.inf
        assert _proven_success(lambda r: True, 0, monotone=monotone) == np.inf
    calls = []
    assert _proven_success(lambda r: calls.append(r) or False, 100, monotone=True) == np.inf
    assert calls == [100]  # along a helpful-moves order a rival that cannot win costs one evaluation
    # a window of success (e.g. distance order: later flips undo earlier ones) is still found by
    # the plain search, and whatever it returns is a success
    window = lambda r: 5 <= r <= 20  # noqa: E731
    found = _proven_success(window, 100)
    assert window(int(found))


def test_fewest_moves_partial_sort_agrees_with_full_sort(rng):
    """The shared greedy count sorts only the top gains and falls back to a full sort where they
    fall short; tiny ``top`` forces both paths, strict and non-strict, and must match sorting all."""
    from lib.attacks import _fewest_moves

    gains = np.maximum(rng.normal(size=(200, 30)), 0.0)
    need = rng.uniform(0.0, 60.0, 30)
    need[:3] = 1e6  # impossible
    need[3] = 0.0  # reached by the first move (>=), or by the first positive one (>)
    strict = rng.random(30) < 0.5
    full = _fewest_moves(gains, need, strict, top=200)
    for top in (1, 3, 40):
        np.testing.assert_array_equal(_fewest_moves(gains, need, strict, top=top), full)
    assert np.isinf(full[:3]).all() and (full[3:] > 40).any() and (full[3:] <= 3).any()


# ---------------------------------------------------------------------------------------------
# The batched attacks against the one-column-at-a-time implementation they replaced
# ---------------------------------------------------------------------------------------------


def _reference_attack_smoothed(alpha, y, q, max_flips, order=None):
    """The previous attack_smoothed: one chernoff_bound call per (column, number of flips)."""
    from lib.attacks import _proven_success
    from lib.chernoff import chernoff_bound

    a = np.asarray(alpha, dtype=np.float64)
    base = chernoff_bound(a, y, q)
    moves = (1 - 2 * q) * a * (1 - 2 * y)[:, None]
    up = base.pred == 0
    helpful = np.where(up[None, :], moves, -moves)
    greedy = order is None
    if greedy:
        order = np.argsort(-helpful, axis=0)
    flips = np.full(a.shape[1], np.inf)
    for j in range(a.shape[1]):

        def changed(r, j=j):
            y_att = y.copy()
            idx = order[:r, j]
            y_att[idx] = 1 - y_att[idx]
            res = chernoff_bound(a[:, j : j + 1], y_att, q)
            return bool(res.pred[0] != base.pred[j] and res.log_tail[0] < np.log(0.5))

        cap = int(np.sum(helpful[:, j] > 0)) if greedy else order.shape[0]
        flips[j] = _proven_success(changed, min(max_flips, cap), monotone=greedy)
    return flips, base.pred


def _reference_attack_logistic(X, y, Xt, max_flips, l2=1e-3, order="distance"):
    """The previous attack_logistic: one logistic_fit per (test point, number of flips)."""
    from scipy.special import expit

    from lib.attacks import _proven_success, logistic_fit

    yv = y.astype(np.float64)
    w = logistic_fit(X, yv, l2)
    pred = (Xt @ w >= 0).astype(np.int64)
    p = expit(X @ w)
    H = (X * (p * (1 - p))[:, None]).T @ X + l2 * len(yv) * np.eye(X.shape[1])
    Hinv_X = np.linalg.solve(H, (X * (2 * yv - 1)[:, None]).T)
    out = np.full(Xt.shape[0], np.inf)
    for j in range(Xt.shape[0]):
        if order in ("distance", "distance_reverse"):
            same = np.flatnonzero(yv == pred[j])
            cand = same[np.argsort(np.linalg.norm(X[same] - Xt[j], axis=1))]
            cand = cand[::-1] if order == "distance_reverse" else cand
        else:
            grad_test = Xt[j] * (expit(Xt[j] @ w) - pred[j])
            score = -(grad_test @ Hinv_X)
            cand = np.argsort(-score)

        def changed(r, j=j, cand=cand):
            y_att = yv.copy()
            y_att[cand[:r]] = 1.0 - y_att[cand[:r]]
            return int(Xt[j] @ logistic_fit(X, y_att, l2, w0=w) >= 0) != pred[j]

        out[j] = _proven_success(changed, min(max_flips, len(cand)))
    return out


def _smoothed_problem(rng, n, m, q, noise=0.5):
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + noise * rng.normal(size=n) > 0).astype(int)
    Xt = rng.normal(size=(m, 3))
    cert = labelflip.certify(X, y, Xt, q)
    return kernel_weights(add_intercept(X), add_intercept(Xt), cert.lam), y, cert


@pytest.mark.parametrize("n, q", [(150, 0.1), (300, 0.02), (400, 0.3), (2600, 0.05)])
def test_batched_greedy_attack_returns_what_the_one_column_attack_returned(rng, n, q):
    """Same flips and predictions as the previous implementation, on small problems and on one
    with n > 2048 training points (where chernoff_bound starts Newton from a binned problem)."""
    m = 12 if n > 2048 else 25
    alpha, y, cert = _smoothed_problem(rng, n, m, q)
    budget = int(cert.radius.max()) + 40
    new, pred = attack_smoothed(alpha, y, q, max_flips=budget)
    old, pred_old = _reference_attack_smoothed(alpha, y, q, budget)
    np.testing.assert_array_equal(pred, pred_old)
    np.testing.assert_array_equal(new, old)
    assert np.isfinite(new).sum() >= m // 3  # the attacks do succeed, so the comparison bites
    # tiny batches and groups take the same path in many pieces
    again, _ = attack_smoothed(alpha, y, q, max_flips=budget, chunk_entries=3 * n)
    np.testing.assert_array_equal(again, new)


def test_batched_attack_along_a_given_order_returns_what_the_one_column_attack_returned(rng):
    """Along an arbitrary order (not monotone) the doubling-then-bisection search is replayed
    step for step, so the boundary it returns is the same."""
    n, m, q = 200, 15, 0.1
    alpha, y, cert = _smoothed_problem(rng, n, m, q)
    orders = [np.argsort(rng.random((n, m)), axis=0)[:120]]
    X = rng.normal(size=(n, 3))
    orders.append(np.argsort(np.abs(X[:, :1] - rng.normal(size=(1, m))), axis=0)[:150])
    for order in orders:
        new, _ = attack_smoothed(alpha, y, q, max_flips=130, order=order)
        old, _ = _reference_attack_smoothed(alpha, y, q, 130, order=order)
        np.testing.assert_array_equal(new, old)
        # the greedy order is never beaten: for every t its flips give the smallest exponent
        greedy, _ = attack_smoothed(alpha, y, q, max_flips=130)
        assert np.all(greedy <= new)


def test_bounds_after_flips_equal_the_bound_on_the_flipped_labels(rng):
    """The padded layout (one column per flipped labelling against shared labels) gives the
    bound of the flipped problem: same prediction, same log tail up to the rounding of a sum."""
    from lib.attacks import _bounds_after_flips
    from lib.chernoff import chernoff_bound

    n, m, q = 120, 6, 0.15
    alpha, y, _ = _smoothed_problem(rng, n, m, q)
    order = np.argsort(rng.random((n, m)), axis=0)
    cols = np.array([0, 1, 1, 3, 4, 5, 2])
    rs = np.array([1, 5, 40, 3, 60, 120, 17])
    ones = np.array([int(np.sum(y)) + int(np.sum(1 - 2 * y[order[:r, c]])) for c, r in zip(cols, rs)])
    pred, tail = _bounds_after_flips(alpha, y, q, cols, rs, order, ones, chunk_entries=2 * n)
    for p, (c, r) in enumerate(zip(cols, rs)):
        y_att = y.copy()
        y_att[order[:r, c]] ^= 1
        ref = chernoff_bound(alpha[:, c : c + 1], y_att, q)
        assert pred[p] == ref.pred[0]
        assert abs(tail[p] - ref.log_tail[0]) <= 1e-9 * max(1.0, abs(ref.log_tail[0]))


def test_first_success_finds_the_first_success_from_any_guess():
    """The greedy attack's search: from a known failure lo < cap and any guess, the first r at
    which a monotone predicate holds (inf past cap), asking only numbers in (lo, cap]."""
    from lib.attacks import _first_success, _run_searches

    for cap in (1, 2, 7, 100):
        for first in range(1, cap + 2):
            for lo in sorted({0, max(0, first - 3), min(first - 1, cap - 1)}):
                for guess in sorted({1, first - 1, first, first + 5, cap}):
                    calls = []

                    def changed(idx, rs, first=first, calls=calls):
                        calls.extend(rs.tolist())
                        return rs >= first

                    got = _run_searches([_first_success(lo, cap, guess)], changed)[0]
                    assert got == (first if first <= cap else np.inf)
                    assert all(lo < r <= cap for r in calls) and len(calls) <= 2 * 7 + 2
    # a guess at the answer costs two evaluations (the answer and the one below)
    calls = []
    _run_searches([_first_success(10, 100, 42)], lambda idx, rs: calls.extend(rs.tolist()) or rs >= 42)
    assert sorted(calls) == [41, 42]


def test_lockstep_searches_replay_the_scalar_search(rng):
    """Many searches answered together by one call per round return what each returns alone,
    monotone or not, and ask for no number of flips twice."""
    from lib.attacks import _proven_success, _run_searches, _search

    preds = [rng.random(60) < p for p in rng.uniform(0.05, 0.6, 40)]
    caps = rng.integers(0, 60, 40)
    for monotone in (False, True):
        truth = [np.maximum.accumulate(t) if monotone else t for t in preds]
        alone = [
            _proven_success(lambda r, t=t: bool(t[r - 1]), int(c), monotone) for t, c in zip(truth, caps)
        ]
        asked = [[] for _ in truth]

        def changed(idx, rs, truth=truth, asked=asked):
            for i, r in zip(idx, rs):
                asked[i].append(int(r))
            return np.array([truth[i][r - 1] for i, r in zip(idx, rs)])

        together = _run_searches([_search(int(c), monotone) for c in caps], changed)
        np.testing.assert_array_equal(together, alone)
        assert all(len(a) == len(set(a)) for a in asked)


def test_batched_logistic_refits_equal_logistic_fit(rng):
    from lib.attacks import _hessian_products, _logistic_fit_many, _logistic_hessian, logistic_fit

    X = add_intercept(rng.normal(size=(200, 4)))
    y = (X[:, 0] + 0.4 * rng.normal(size=200) > 0).astype(float)
    w = logistic_fit(X, y)
    Y = np.repeat(y[None, :], 6, axis=0)
    for p in range(6):
        flip = rng.choice(200, 8 * p, replace=False)
        Y[p, flip] = 1 - Y[p, flip]
    W0 = np.repeat(w[None, :], 6, axis=0)
    products = _hessian_products(X)
    H0 = _logistic_hessian(X, w, 1e-3)
    # Hessians formed from the products, or Newton systems solved by preconditioned conjugate
    # gradients (the path of wide features); with or without the shared first Hessian
    for h0, prods in ((None, products), (H0, products), (None, None), (H0, None)):
        W = _logistic_fit_many(X, Y, 1e-3, W0, H0=h0, products=prods)
        for p in range(6):
            np.testing.assert_allclose(W[p], logistic_fit(X, Y[p], w0=w), rtol=0, atol=1e-9)
    # only the side of test . w*: each problem stops once that side is proven
    T = add_intercept(rng.normal(size=(6, 4)))
    W = _logistic_fit_many(X, Y, 1e-3, W0, H0=H0, products=products, test=T)
    for p in range(6):
        exact = T[p] @ logistic_fit(X, Y[p], w0=w)
        assert np.sign(T[p] @ W[p]) == np.sign(exact) != 0


def test_logistic_attacks_of_all_orders_at_once_return_what_each_returned(rng, monkeypatch):
    """attack_logistic_orders runs the three App. C searches together with batched refits; each
    order's flips are those of the previous one-refit-at-a-time attack."""
    from lib import attacks
    from lib.attacks import attack_logistic, attack_logistic_orders

    X = add_intercept(rng.normal(size=(160, 3)))
    y = (X[:, 0] + 0.4 * rng.normal(size=160) > 0).astype(int)
    Xt = add_intercept(rng.normal(size=(7, 3)) * 0.4)
    both = attack_logistic_orders(X, y, Xt, 50)
    for order in ("distance", "distance_reverse", "influence"):
        ref = _reference_attack_logistic(X, y, Xt, 50, order=order)
        np.testing.assert_array_equal(both[order], ref)
        np.testing.assert_array_equal(attack_logistic(X, y, Xt, 50, order=order), ref)
    assert np.isfinite(both["distance"]).sum() >= 3
    small = attack_logistic_orders(X, y, Xt, 50, chunk_entries=2 * 160)  # refits two at a time
    for order in both:
        np.testing.assert_array_equal(small[order], both[order])
    # wide features: the Newton systems by conjugate gradients, the same flips
    monkeypatch.setattr(attacks, "_PRODUCTS_MAX", 0)
    wide = attack_logistic_orders(X, y, Xt, 50)
    for order in both:
        np.testing.assert_array_equal(wide[order], both[order])


def test_attack_arguments_are_checked(rng):
    from lib.attacks import attack_logistic_orders

    alpha, y, _ = _smoothed_problem(rng, 40, 3, 0.1)
    with pytest.raises(ValueError, match="max_flips"):
        attack_smoothed(alpha, y, 0.1, max_flips=-1)
    with pytest.raises(ValueError, match="order"):
        attack_smoothed(alpha, y, 0.1, max_flips=5, order=np.full((5, 3), 40))
    with pytest.raises(ValueError, match="order"):
        attack_smoothed(alpha, y, 0.1, max_flips=5, order=np.zeros((5, 2), dtype=int))
    X = add_intercept(rng.normal(size=(40, 2)))
    with pytest.raises(ValueError, match="orders"):
        attack_logistic_orders(X, y, X[:2], 5, orders=("nearest",))
    with pytest.raises(ValueError, match="Xt"):
        attack_logistic_orders(X, y, X[:2, :2], 5)
    assert np.isinf(attack_smoothed(alpha, y, 0.1, max_flips=0)[0]).all()


def _changed(alpha_col, labels, k, p):
    s = np.array([alpha_col[labels == c].sum() for c in range(k)])
    return any(s[r] >= s[p] for r in range(k) if r != p)


def test_min_flips_multiclass_matches_brute_force(rng):
    k = 3
    for _ in range(25):
        n = int(rng.integers(3, 7))
        X = rng.normal(size=(n, 2))
        alpha = kernel_weights(X, rng.normal(size=(2, 2)) * 2, 0.3)
        y = rng.integers(0, k, n)
        ours, pred = min_flips_multiclass(alpha, y, k)
        for j in range(2):
            best = np.inf
            for lab in itertools.product(range(k), repeat=n):
                lab = np.array(lab)
                d = int((lab != y).sum())
                if d < best and d > 0 and _changed(alpha[:, j], lab, k, pred[j]):
                    best = d
            assert ours[j] == best


@pytest.mark.parametrize("k", [2, 3, 10])
def test_min_flips_multiclass_grouped_merge_agrees_with_sorting_every_rival(rng, k):
    """The lazily sorted groups shared by the rivals give the same flips as one sort of all n
    gains per (test point, rival), also with ties and gaps closed exactly (dyadic weights),
    zeros, empty classes, a column-ordered alpha and blocks of columns that do not fill a
    parallel task."""
    from lib.attacks import _min_flips_multiclass_sorted

    for trial in range(12):
        n, m = int(rng.integers(1, 400)), int(rng.integers(1, 40))
        alpha = rng.normal(size=(n, m)) * (1e-3 if trial % 2 else 1.0)
        if trial % 3 == 0:
            alpha = np.round(alpha * 8) / 8  # dyadic: exact sums, so gaps closed exactly, ties, zeros
        y = rng.integers(0, max(1, k - trial % 2), n)  # the last class empty on odd trials
        if trial % 4 == 1:
            alpha = np.asfortranarray(alpha)
        ours, pred = min_flips_multiclass(alpha, y, k)
        for top in (1, 7, n):
            ref, pred_ref = _min_flips_multiclass_sorted(alpha, y, k, top=top)
            np.testing.assert_array_equal(ours, ref)
            np.testing.assert_array_equal(pred, pred_ref)


def test_multiclass_smoothed_attack_pruned_rivals_agree_with_searching_every_rival(rng):
    """Rivals tried closest first and later ones only below the best count so far: the same
    flips as searching every rival in full (success is monotone along each gap-closing order)."""
    k, q, n = 4, 0.05, 120
    centers = rng.normal(size=(k, 3)) * 1.5
    y = rng.integers(0, k, n)
    F = centers[y] + rng.normal(size=(n, 3))
    Ft = centers[rng.integers(0, k, 10)] + rng.normal(size=(10, 3))
    X, Xt = add_intercept(F), add_intercept(Ft)
    alpha = kernel_weights(X, Xt, 1e-3 * np.trace(X.T @ X))
    fast, pred = attack_smoothed_multiclass(alpha, y, q, k, max_flips=n)
    full, pred_full = attack_smoothed_multiclass(alpha, y, q, k, max_flips=n, prune=False)
    np.testing.assert_array_equal(fast, full)
    np.testing.assert_array_equal(pred, pred_full)
    assert np.isfinite(fast).sum() >= 5 and len(np.unique(fast[np.isfinite(fast)])) >= 3
