"""Chernoff bounds (eq. 7, 13, 24) against a generic minimiser, Monte Carlo and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from scipy.stats import beta as beta_dist

from lib.chernoff import binary_objective, chernoff_bound, chernoff_certify
from lib.labelflip import flip_labels
from lib.least_squares import kernel_weights


def _problem(rng, n=200, m=30, d=5):
    X = rng.normal(size=(n, d))
    X = np.hstack([X, np.ones((n, 1))])
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    Xt = np.hstack([rng.normal(size=(m, d)), np.ones((m, 1))])
    return kernel_weights(X, Xt, 1.0), y


def test_binary_objective_matches_direct_formula(rng):
    alpha, y = _problem(rng, n=40, m=3)
    q = 0.15
    for t in [-30.0, -1.0, 0.0, 0.5, 12.0]:
        a = alpha[:, 0]
        direct = t / 2 + sum(
            np.log(q + (1 - q) * np.exp(-t * ai)) if yi == 1 else np.log(1 - q + q * np.exp(-t * ai))
            for ai, yi in zip(a, y)
        )
        assert binary_objective(t, a, y, q) == pytest.approx(direct, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("q", [0.01, 0.1, 0.3, 0.45])
def test_newton_matches_generic_scalar_minimiser(q, rng):
    alpha, y = _problem(rng)
    res = chernoff_bound(alpha, y, q)
    for j in range(alpha.shape[1]):
        f = lambda t, j=j: binary_objective(t, alpha[:, j], y, q)  # noqa: E731
        scale = 1.0 / np.abs(alpha[:, j]).max()
        ref = minimize_scalar(
            f, bounds=(-1e3 * scale, 1e3 * scale), method="bounded", options={"xatol": 1e-10 * scale}
        )
        best = min(ref.fun, 0.0)
        # Newton is at least as good as the reference minimiser, up to rounding
        assert res.log_tail[j] <= max(best, np.log(0.5)) + 1e-6 * max(1.0, abs(best))
        if ref.fun < np.log(0.5):
            assert np.sign(res.t[j]) == np.sign(ref.x)


def test_prediction_is_sign_of_expected_score_minus_half(rng):
    """f'(0) = 1/2 - E[alpha^T Y], and f is convex: t* >= 0 iff E[alpha^T Y] >= 1/2."""
    alpha, y = _problem(rng)
    q = 0.2
    expected = alpha.T @ np.where(y == 1, 1 - q, q)
    res = chernoff_bound(alpha, y, q)
    clear = np.abs(expected - 0.5) > 1e-9
    np.testing.assert_array_equal(res.pred[clear], (expected >= 0.5)[clear].astype(int))


def test_bound_is_evaluated_at_returned_t_in_float64(rng):
    alpha, y = _problem(rng)
    res = chernoff_bound(alpha, y, 0.1)
    direct = np.minimum(binary_objective(res.t, alpha, y, 0.1), np.log(0.5))
    np.testing.assert_array_equal(res.log_tail, direct)
    assert res.log_tail.dtype == np.float64


def test_early_stop_is_still_sound(rng):
    """Any t is a valid Chernoff parameter: one Newton step gives a looser, still valid bound."""
    alpha, y = _problem(rng)
    full = chernoff_bound(alpha, y, 0.1)
    one = chernoff_bound(alpha, y, 0.1, max_iter=1)
    assert np.all(one.log_tail >= full.log_tail - 1e-9)
    np.testing.assert_array_equal(
        one.log_tail, np.minimum(binary_objective(one.t, alpha, y, 0.1), np.log(0.5))
    )


def test_stable_for_large_t_alpha():
    """Huge weights: no overflow, finite bounds, correct prediction."""
    alpha = np.array([[400.0], [-300.0], [250.0]])
    y = np.array([1, 0, 1])
    res = chernoff_bound(alpha, y, 0.05)
    assert np.all(np.isfinite(res.log_tail))
    assert res.pred[0] == 1


def _cp_upper(k, n, level):
    """One-sided Clopper-Pearson upper bound (1 where every draw voted for the class)."""
    with np.errstate(invalid="ignore"):
        return np.where(k >= n, 1.0, beta_dist.ppf(1 - level, k + 1, np.maximum(n - k, 1)))


def _mc_probability(alpha, y, q, k, draws, rng):
    Y = flip_labels(y, q, k, rng, draws)
    if k == 2:
        return (Y @ alpha >= 0.5).mean(axis=0)
    onehot = np.eye(k)[Y]
    return np.argmax(np.einsum("bnk,nm->bmk", onehot, alpha), axis=2)


def _assert_below_monte_carlo(alpha, y, q, draws, level, rng):
    """Chernoff p_lower <= the one-sided Clopper-Pearson upper bound of a Monte Carlo estimate."""
    pred, p_low = chernoff_certify(alpha, y, q)
    freq1 = _mc_probability(alpha, y, q, 2, draws, rng)
    k_pred = np.round(np.where(pred == 1, freq1, 1 - freq1) * draws)
    assert np.all(p_low <= _cp_upper(k_pred, draws, level))


@pytest.mark.parametrize("q", [0.05, 0.2])
def test_binary_p_lower_never_above_monte_carlo(q, rng):
    alpha, y = _problem(rng, n=120, m=40)
    _assert_below_monte_carlo(alpha, y, q, 20000, 1e-6, rng)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.floats(0.01, 0.45))
def test_invariant_to_order_of_training_points(seed, q):
    r = np.random.default_rng(seed)
    alpha, y = _problem(r, n=60, m=5)
    perm = r.permutation(60)
    a = chernoff_bound(alpha, y, q)
    b = chernoff_bound(alpha[perm], y[perm], q)
    np.testing.assert_array_equal(a.pred, b.pred)
    np.testing.assert_allclose(a.log_tail, b.log_tail, rtol=1e-6, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.floats(0.02, 0.4))
def test_p_lower_not_above_monte_carlo_property(seed, q):
    r = np.random.default_rng(seed)
    alpha, y = _problem(r, n=50, m=6)
    _assert_below_monte_carlo(alpha, y, q, 4000, 1e-7, r)


# ------------------------------------------------------------------ multi-class (eq. 24)


def _pair_objective_direct(t, a, y, c, r, q, k):
    total = 0.0
    off = q / (k - 1)
    for aj, yj in zip(a, y):
        if yj == c:
            p = ((1 - q), q * (k - 2) / (k - 1), off)
        elif yj == r:
            p = (off, q * (k - 2) / (k - 1), 1 - q)
        else:
            p = (off, 1 - 2 * off, off)
        total += np.log(p[0] * np.exp(-t * aj) + p[1] + p[2] * np.exp(t * aj))
    return total


def test_multiclass_pairs_match_generic_minimiser_and_union_bound(rng):
    k, n, m = 4, 80, 6
    X = np.hstack([rng.normal(size=(n, 3)), np.ones((n, 1))])
    y = rng.integers(0, k, n)
    y[X[:, 0] > 1] = 0
    Xt = np.hstack([rng.normal(size=(m, 3)) + [2, 0, 0], np.ones((m, 1))])
    alpha = kernel_weights(X, Xt, 0.5) * 3
    q = 0.1
    res = chernoff_bound(alpha, y, q, k)
    onehot = np.eye(k)[y]
    np.testing.assert_array_equal(res.pred, np.argmax(alpha.T @ onehot, axis=1))
    for j in range(m):
        c = res.pred[j]
        logs = []
        for r in [x for x in range(k) if x != c]:
            f = lambda t, j=j, c=c, r=r: _pair_objective_direct(t, alpha[:, j], y, c, r, q, k)  # noqa: E731
            ref = minimize_scalar(f, bounds=(0, 1e3 / np.abs(alpha[:, j]).max()), method="bounded")
            logs.append(min(ref.fun, 0.0))
        union = np.log(np.sum(np.exp(logs)))
        assert res.log_tail[j] <= max(min(union, np.log(0.5)), -1e300) + 1e-6 * max(1, abs(union))


def test_multiclass_pair_bound_and_derivatives_match_the_direct_formula(rng):
    """The float64 bound F(t) of eq. (24), evaluated in its overflow-free form, equals the
    direct sum at any t >= 0 (a second formula); the float32 Newton derivatives match
    central differences of it (they steer Newton only, so a looser tolerance)."""
    import torch

    from lib.chernoff import _pair_log_bound, _pair_newton_step, _pair_terms

    k, n = 5, 40
    y = rng.integers(0, k, n)
    a = rng.normal(size=(n, 1)) * 0.3
    c, r, q = np.array([1]), np.array([3]), 0.15
    terms = _pair_terms(np.ascontiguousarray(a), y, c, r, q, k)
    abs_a = terms[0].to(torch.float32)
    terms32 = (abs_a, abs_a, abs_a * abs_a, *(x.to(torch.float32) for x in terms[1:]))
    for t in [0.0, 0.3, 2.0, 11.0, 40.0]:
        got = _pair_log_bound(torch.tensor([t], dtype=torch.float64), terms)[0]
        ref = _pair_objective_direct(t, a[:, 0], y, 1, 3, q, k)
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-12)
        h = 1e-4 * max(t, 1.0)
        fd = lambda u: _pair_objective_direct(u, a[:, 0], y, 1, 3, q, k)  # noqa: E731
        g, hess = _pair_newton_step(torch.tensor([t], dtype=torch.float64), terms32)
        assert g[0] == pytest.approx((fd(t + h) - fd(t - h)) / (2 * h), rel=1e-3, abs=1e-5)
        assert hess[0] == pytest.approx((fd(t + h) - 2 * fd(t) + fd(t - h)) / h**2, rel=1e-2, abs=1e-4)
        assert hess[0] > 0
    # far out (t |a| ~ 1e3) the direct exponentials overflow; the stable form stays finite and
    # grows linearly, by the slope sum |a| p-weighted, i.e. at most sum |a|
    big = _pair_log_bound(torch.tensor([4e3], dtype=torch.float64), terms)[0]
    assert np.isfinite(big)


def test_bad_input(rng):
    alpha, y = _problem(rng, n=20, m=2)
    with pytest.raises(ValueError, match="q"):
        chernoff_bound(alpha, y, 0.6)
    with pytest.raises(ValueError, match="y"):
        chernoff_bound(alpha, y[:-1], 0.1)
    with pytest.raises(ValueError, match="y"):
        chernoff_bound(alpha, y + 1, 0.1)
    bad = alpha.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="alpha"):
        chernoff_bound(bad, y, 0.1)
    with pytest.raises(ValueError, match="num_classes"):
        chernoff_bound(alpha, y, 0.1, num_classes=1)


def test_binned_warm_start_reaches_the_same_optimum(rng):
    """Large n takes the binned warm start; the bound equals plain Newton's from t = 0."""
    from lib import chernoff

    n = 8 * chernoff._BINS + 100
    X = np.hstack([rng.normal(size=(n, 4)), np.ones((n, 1))])
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(int)
    Xt = np.hstack([rng.normal(size=(12, 4)), np.ones((12, 1))])
    alpha = kernel_weights(X, Xt, 5.0)
    for q in [0.01, 0.2]:
        res = chernoff_bound(alpha, y, q)
        _, c = chernoff._binary_coefficients(y, q)
        t_plain, _ = chernoff._newton_binary(alpha, c, 100, 1e-12)
        plain = np.minimum(binary_objective(t_plain, alpha, y, q), np.log(0.5))
        np.testing.assert_allclose(res.log_tail, plain, rtol=1e-8, atol=1e-10)
        assert res.iterations.max() <= 3
        assert np.all(res.log_tail <= plain + 1e-6 * np.maximum(1, np.abs(plain)))
        # the bound reported is the fused float64 bound at the t reported, on this path too; its
        # rounding margin (a sequential sum) is wider than the array form's, never narrower
        from lib import fused

        at_t = np.minimum(fused.binary_log_bound(alpha, y, res.t, q), np.log(0.5))
        np.testing.assert_array_equal(res.log_tail, at_t)
        array_form = np.minimum(binary_objective(res.t, alpha, y, q), np.log(0.5))
        assert np.all(res.log_tail >= array_form)
        np.testing.assert_allclose(res.log_tail, array_form, rtol=1e-9, atol=1e-8)


def test_multiclass_streams_test_points_in_chunks(rng):
    """Chunking the test points (to bound memory) gives the same bounds as one at a time."""
    n, m, k = 1000, 2100, 3  # chunk = 4e6 / (n (K-1)) = 2000 columns: two chunks
    X = np.hstack([rng.normal(size=(n, 3)), np.ones((n, 1))])
    y = rng.integers(0, k, n)
    y[X[:, 0] > 0.5] = 1
    alpha = kernel_weights(X, np.hstack([rng.normal(size=(m, 3)), np.ones((m, 1))]), 1.0) * 3
    full = chernoff_bound(alpha, y, 0.1, k)
    assert full.log_tail.shape == (m,) and full.t.shape == (m, k - 1)
    for j in [0, 999, 1000, 2099]:
        one = chernoff_bound(alpha[:, j], y, 0.1, k)
        assert one.pred[0] == full.pred[j]
        assert one.log_tail[0] == pytest.approx(full.log_tail[j], rel=1e-9, abs=1e-12)


def test_safeguarded_newton_finds_interior_and_boundary_minima():
    """The shared Newton driver on f(t) = e^{b t} - 2t (minimum at ln(2/b)/b, or at the lower
    bound 0 when that is negative), against the closed form; also from a bad start far out."""
    from lib.chernoff import _safeguarded_newton

    b = np.array([0.5, 1.0, 3.0, 0.1])

    def derivatives(active, t):
        return b[active] * np.exp(b[active] * t) - 2.0, b[active] ** 2 * np.exp(b[active] * t)

    for t0 in (np.zeros(4), np.full(4, 5.0)):
        t, iters = _safeguarded_newton(
            derivatives, t0, (0.0, np.inf), np.zeros(4), np.full(4, 1e3), np.ones(4), 100, 1e-12
        )
        np.testing.assert_allclose(t, np.maximum(np.log(2 / b) / b, 0.0), atol=1e-9)
        assert iters.max() < 100


def test_fused_pair_bound_matches_the_array_form_and_exceeds_the_exact_value(rng):
    """The one-pass float64 kernel (lib.fused) against the array evaluation of the same bound
    (lib.chernoff._pair_log_bound) and against F(t) summed in 50-digit arithmetic: equal to
    1e-12 relative, never below the exact value, and the same Newton step."""
    import mpmath
    import torch

    from lib import fused
    from lib.chernoff import _pair_log_bound, _pair_terms

    k, n, m, q = 6, 300, 4, 0.12
    y = rng.integers(0, k, n)
    a = rng.normal(size=(n, m)) * rng.choice([1e-3, 1.0, 30.0], size=(1, m))
    cols = np.repeat(np.arange(m), 3)
    pc = np.array([0, 0, 0, 1, 1, 1, 5, 5, 5, 2, 2, 2])
    pr = np.array([1, 2, 5, 0, 3, 4, 0, 1, 2, 3, 4, 5])
    t = rng.uniform(0, 50, size=cols.size) / np.abs(a[:, cols]).max(axis=0)
    got, step = fused.pair_log_bound(a, y, cols, pc, pr, t, q, k, with_step=True)
    terms = _pair_terms(np.ascontiguousarray(a[:, cols]), y, pc, pr, q, k)
    ref, ref_step = _pair_log_bound(torch.from_numpy(t), terms, with_step=True)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(step, ref_step, rtol=1e-9, atol=1e-15)
    mpmath.mp.dps = 50
    off = mpmath.mpf(q) / (k - 1)
    for p in range(cols.size):
        exact = mpmath.mpf(0)
        tp = mpmath.mpf(t[p])
        for j in range(n):
            aj = mpmath.mpf(a[j, cols[p]])
            p_plus = 1 - mpmath.mpf(q) if y[j] == pc[p] else off
            p_minus = 1 - mpmath.mpf(q) if y[j] == pr[p] else off
            exact += mpmath.log(
                p_plus * mpmath.exp(-tp * aj) + (1 - p_plus - p_minus) + p_minus * mpmath.exp(tp * aj)
            )
        assert got[p] >= exact
        assert got[p] - exact <= 1e-9 * max(1.0, abs(float(exact)))


def test_multiclass_warm_start_and_fused_bound_agree_with_plain_newton(rng):
    """Large n takes the binned warm start and the fused float64 bound; the result equals plain
    Newton from t = 0 with the array bound (same prediction, same log tail to 1e-8), and the log
    tail reported is the union bound of the float64 pair bounds at the t reported."""
    from lib import chernoff, fused

    n, k = 8 * chernoff._BINS + 500, 10
    X = np.hstack([rng.normal(size=(n, 5)), np.ones((n, 1))])
    y = rng.integers(0, k, n)
    y[X[:, 0] > 0.7] = 2
    y[X[:, 1] > 1.0] = 7
    Xt = np.hstack([rng.normal(size=(15, 5)), np.ones((15, 1))])
    alpha = kernel_weights(X, Xt, 1.0) * rng.choice([1.0, 3.0, 10.0], size=(1, 15))
    for q in [0.02, 0.3]:
        warm = chernoff_bound(alpha, y, q, k)
        cold = chernoff_bound(alpha, y, q, k, warm_start=False)
        np.testing.assert_array_equal(warm.pred, cold.pred)
        np.testing.assert_allclose(warm.log_tail, cold.log_tail, rtol=1e-8, atol=1e-10)
        assert np.any(warm.log_tail < np.log(0.5)) and np.any(warm.log_tail < -20)
        rivals = np.array([[c for c in range(k) if c != p] for p in warm.pred])
        cols = np.repeat(np.arange(15), k - 1)
        log_b = fused.pair_log_bound(
            alpha, y, cols, warm.pred[cols], rivals.reshape(-1), warm.t.reshape(-1), q, k
        )
        union = logsumexp(np.minimum(log_b, 0.0).reshape(15, k - 1), axis=1)
        np.testing.assert_allclose(warm.log_tail, np.minimum(union, np.log(0.5)), rtol=1e-13, atol=1e-13)
        assert np.all(warm.log_tail >= np.minimum(union, np.log(0.5)))


def test_fused_binary_bound_matches_the_array_form_and_exceeds_the_exact_value(rng):
    """The one-pass float64 kernel of eq. (7) (lib.fused) against the array evaluation
    (lib.chernoff._exact_f_and_newton_step) and against f(t) in 50-digit arithmetic: equal to
    1e-12 relative, never below the exact value, the same Newton step."""
    import mpmath

    from lib import chernoff, fused

    n, m, q = 400, 6, 0.07
    y = rng.integers(0, 2, n)
    a = rng.normal(size=(n, m)) * rng.choice([1e-4, 1e-2, 1.0], size=(1, m))
    t = rng.normal(size=m) * 20 / np.abs(a).max(axis=0)
    got, step = fused.binary_log_bound(a, y, t, q, with_step=True)
    log_a, c = chernoff._binary_coefficients(y, q)
    ref, ref_step = chernoff._exact_f_and_newton_step(t, a, c, log_a)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(step, ref_step, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got, binary_objective(t, a, y, q), rtol=1e-12, atol=1e-12)
    mpmath.mp.dps = 50
    qm = mpmath.mpf(q)
    for j in range(m):
        tj = mpmath.mpf(t[j])
        exact = tj / 2
        for i in range(n):
            e = mpmath.exp(-tj * mpmath.mpf(a[i, j]))
            exact += mpmath.log(qm + (1 - qm) * e) if y[i] == 1 else mpmath.log(1 - qm + qm * e)
        assert got[j] >= exact
        assert got[j] - exact <= 1e-9 * max(1.0, abs(float(exact)))


def test_fused_histogram_matches_a_direct_count(rng):
    """The warm starts' per-column histograms (lib.fused.histogram) against a direct count."""
    from lib import fused

    n, m, bins = 500, 7, 16
    a = rng.normal(size=(n, m))
    a[:, 3] = 0.0  # a column with no spread: every entry in the first bin
    y = rng.integers(0, 3, n)
    for signed, split in [(True, False), (False, True)]:
        n_cat = 6 if split else 3
        counts, sums = fused.histogram(a, y, n_cat, bins, signed=signed, sign_split=split)
        for j in range(m):
            x = a[:, j] if signed else np.abs(a[:, j])
            lo = x.min() if signed else 0.0
            width = (x.max() - lo) / bins
            width = width if width > 0 else 1.0
            b = np.clip(np.floor((x - lo) / width), 0, bins - 1).astype(int)
            cat = 2 * y + (a[:, j] < 0) if split else y
            ref_c = np.bincount(cat * bins + b, minlength=n_cat * bins)
            ref_s = np.bincount(cat * bins + b, weights=x, minlength=n_cat * bins)
            np.testing.assert_array_equal(counts[:, j], ref_c)
            np.testing.assert_allclose(sums[:, j], ref_s, rtol=1e-12, atol=1e-12)
        assert counts.sum() == n * m
