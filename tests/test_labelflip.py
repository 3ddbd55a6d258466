"""Label-flip certificates checked against exact enumeration and exact rational arithmetic."""

from __future__ import annotations

from fractions import Fraction
from math import comb, log

import numpy as np
import pytest
from conftest import all_labellings, base_votes, noise_probabilities
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import labelflip
from lib.enumeration import change_labels
from lib.labelflip import kl_per_flip, kl_radius, tight_radius
from lib.neyman_pearson import ThresholdTable

# ------------------------------------------------------------------ KL divergence (eq. 9, 25)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("q", [0.01, 0.2, 0.4])
def test_kl_of_product_measures_matches_enumeration(k, q, rng):
    """KL(rho || mu) summed over every labelling equals r * kl_per_flip (eq. 9 / App. B.3)."""
    if q >= (k - 1) / k:
        pytest.skip("q out of range")
    n = 5 if k < 5 else 4
    y1 = rng.integers(0, k, n)
    for r in range(n + 1):
        y2 = change_labels(y1, r, k, rng)
        Z = all_labellings(n, k)
        mu = noise_probabilities(Z, y1, q, k)
        rho = noise_probabilities(Z, y2, q, k)
        kl_enum = float(np.sum(rho * np.log(rho / mu)))
        assert kl_enum == pytest.approx(r * kl_per_flip(q, k), rel=1e-10, abs=1e-12)
        kl_rev = float(np.sum(mu * np.log(mu / rho)))
        assert kl_rev == pytest.approx(kl_enum, rel=1e-10, abs=1e-12)  # symmetric, as eq. (9) says


def test_kl_radius_closed_form():
    """kl_radius is the floor of eq. (10); and eq. (25) with K = 2 is eq. (10)."""
    for q in [0.05, 0.2, 0.35]:
        for p in [0.6, 0.9, 0.999, 1 - 1e-9]:
            r = log(4 * p * (1 - p)) / (2 * (1 - 2 * q) * log(q / (1 - q)))
            assert kl_radius(p, q) in (int(np.floor(r)), int(np.floor(r)) - 1)
            assert kl_radius(p, q) <= r
    assert kl_radius(0.5, 0.1) == 0 and kl_radius(0.3, 0.1) == 0


def test_kl_radius_is_a_valid_guarantee_by_enumeration(rng):
    """At r = kl_radius(p), every set with mu(A) >= p keeps rho(A) > 1/2 (worst case by NP)."""
    for _ in range(200):
        k = int(rng.choice([2, 3]))
        n = 6 if k == 2 else 4
        q = float(rng.uniform(0.02, 0.6 if k == 3 else 0.45))
        p = float(rng.uniform(0.5, 1.0))
        r = min(kl_radius(p, q, k), n)
        _, worst = _np_worst_case(n, k, q, r, p, rng)
        if r > 0:
            assert worst > 0.5


# ------------------------------------------------------------------ the tight certificate


def _np_worst_case(n, k, q, r, p, rng):
    """Smallest rho(A) over sets with mu(A) = p, for labellings y2 at distance r from y1.

    Brute force over all k^n labellings: sort them by the likelihood ratio rho/mu and fill
    with mu-mass p, the last atom fractionally (Neyman-Pearson).
    """
    y1 = rng.integers(0, k, n)
    y2 = change_labels(y1, r, k, rng)
    Z = all_labellings(n, k)
    mu = noise_probabilities(Z, y1, q, k)
    rho = noise_probabilities(Z, y2, q, k)
    order = np.argsort(rho / mu, kind="stable")
    cm = np.cumsum(mu[order])
    cr = np.cumsum(rho[order])
    j = int(np.searchsorted(cm, p))
    j = min(j, len(cm) - 1)
    prev_m = cm[j - 1] if j > 0 else 0.0
    prev_r = cr[j - 1] if j > 0 else 0.0
    a = order[j]
    return (y1, y2), prev_r + (p - prev_m) / mu[a] * rho[a]


@pytest.mark.parametrize("k", [2, 3])
def test_tight_radius_is_sound_and_tight_by_enumeration(k):
    """At r = tight_radius(p) the worst set keeps rho > 1/2; at r + 1 it falls to <= 1/2."""
    rng = np.random.default_rng(7 + k)
    n = 9 if k == 2 else 5
    checked_tight = 0
    for _ in range(300):
        q = float(rng.uniform(0.01, 0.45 if k == 2 else 0.6))
        p = float(rng.uniform(0.5, 1.0))
        r = tight_radius(p, q, k)
        for rr in range(0, min(r, n) + 1):
            _, worst = _np_worst_case(n, k, q, rr, p, rng)
            assert worst > 0.5, (q, p, r, rr)
        if r + 1 <= n:
            _, worst = _np_worst_case(n, k, q, r + 1, p, rng)
            assert worst <= 0.5 + 1e-9, (q, p, r)
            checked_tight += 1
    assert checked_tight > 100


def _exact_log_cstar(r: int, q: Fraction, k: int) -> float:
    """c*(r) in exact rational arithmetic, from the multinomial law of D (independent of lib)."""
    pa, pb, po = 1 - q, q / (k - 1), q * (k - 2) / (k - 1)
    mu: dict[int, Fraction] = {}
    for na in range(r + 1):
        for nb in range(r - na + 1):
            no = r - na - nb
            if k == 2 and no:
                continue
            w = Fraction(comb(r, na) * comb(r - na, nb)) * pa**na * pb**nb * po**no
            mu[nb - na] = mu.get(nb - na, Fraction(0)) + w
    levels = sorted(mu, reverse=True)  # largest ratio first: the complement of the worst set
    rho_acc, mu_acc = Fraction(0), Fraction(0)
    half = Fraction(1, 2)
    for d in levels:
        rho_d = mu.get(-d, Fraction(0))
        if rho_acc + rho_d >= half:
            frac = (half - rho_acc) / rho_d
            c = mu_acc + frac * mu[d]
            return log(c.numerator) - log(c.denominator)
        rho_acc += rho_d
        mu_acc += mu[d]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("q", [Fraction(1, 1000), Fraction(1, 10), Fraction(2, 5)])
def test_threshold_table_matches_exact_rationals(k, q):
    table = ThresholdTable(float(q), k)
    r_max = 40 if k == 2 else 18
    table.extend_to(r_max)
    raw = np.asarray(table._logc)
    for r in range(1, r_max + 1):
        exact = _exact_log_cstar(r, q, k)
        assert raw[r - 1] <= exact  # never over-certifies
        assert raw[r - 1] == pytest.approx(exact, abs=1e-7)


@pytest.mark.parametrize("q", [0.001, 0.05, 0.2, 0.45])
def test_binary_closed_form_matches_the_convolution(q):
    """Two independent computations of the K = 2 thresholds: binomial formulas, convolution."""
    closed = ThresholdTable(q, 2)
    conv = ThresholdTable(q, 2)
    conv.closed_form = False
    closed.extend_to(400)
    conv.extend_to(400)
    np.testing.assert_allclose(closed._logc, conv._logc, rtol=1e-7, atol=1e-9)


def test_binary_table_matches_binomial_closed_form():
    """K = 2 against scipy's binomial tails (a second, independent formula), r up to 300."""
    from scipy.stats import binom

    q = 0.2
    table = ThresholdTable(q, 2)
    table.extend_to(300)
    for r in [1, 2, 7, 50, 123, 300]:
        m = np.arange(r + 1)  # m = number of changed coordinates whose noisy label agrees with y2
        rho_tail = binom.sf(m - 1, r, 1 - q)  # P_rho(M >= m)
        ms = int(np.nonzero(rho_tail >= 0.5)[0][-1])
        above = binom.sf(ms, r, 1 - q)
        c = binom.sf(ms, r, q) + (0.5 - above) * binom.pmf(ms, r, q) / binom.pmf(ms, r, 1 - q)
        assert table._logc[r - 1] == pytest.approx(np.log(c), rel=1e-8)


def test_tight_at_least_kl_everywhere():
    p = np.concatenate([np.linspace(0.5, 1 - 1e-6, 3000), 1 - np.logspace(-6, -15, 200)])
    for k in [2, 3, 10]:
        for q in [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.45]:
            t = tight_radius(p, q, k)
            kl = kl_radius(p, q, k)
            assert np.all(t >= kl), (k, q)


def test_tight_roughly_twice_kl_for_large_margins():
    """The paper's Figure 5: the tight bound certifies about twice as many flips."""
    p = 1 - 1e-10
    for q in [0.1, 0.2, 0.3]:
        ratio = tight_radius(p, q) / kl_radius(p, q)
        assert 1.5 < ratio < 2.5


@settings(max_examples=60, deadline=None)
@given(
    p1=st.floats(0.0, 1.0, exclude_max=True),
    p2=st.floats(0.0, 1.0, exclude_max=True),
    q=st.floats(0.001, 0.45),
    k=st.sampled_from([2, 3, 10]),
)
def test_radii_non_decreasing_in_p(p1, p2, q, k):
    lo, hi = sorted([p1, p2])
    assert tight_radius(lo, q, k) <= tight_radius(hi, q, k)
    assert kl_radius(lo, q, k) <= kl_radius(hi, q, k)


def test_radius_from_log_tail_handles_tails_below_float_resolution():
    """A Chernoff tail of e^-200 certifies far more than p = 1 - 1e-16 would."""
    r_deep = labelflip.radius_from_log_tail(np.array([-200.0]), 0.1, max_radius=10**6)[0]
    r_p = tight_radius(1 - 1e-16, 0.1)
    assert r_deep > 3 * r_p
    assert labelflip.radius_from_log_tail(np.array([-np.inf]), 0.1, max_radius=77)[0] == 77


# ------------------------------------------------------------------ the whole pipeline


def _exact_smoothed(alpha, y, q, k, Z=None):
    """Exact G(mu, phi, c) for every class c and test column, by enumeration of k^n labellings."""
    n = y.size
    Z = all_labellings(n, k) if Z is None else Z
    w = noise_probabilities(Z, y, q, k)
    votes = base_votes(Z, alpha, k)  # (N, m)
    return np.stack([w @ (votes == c) for c in range(k)], axis=1)  # (m, k)


@pytest.mark.parametrize("k", [2, 3])
def test_chernoff_pipeline_never_exceeds_exact_probability(k):
    """Exhaustive soundness on thousands of tiny instances (n <= 14 binary, n <= 8 for K = 3)."""
    rng = np.random.default_rng(100 + k)
    instances = 0
    informative = 0
    Zcache = {}
    while instances < (2000 if k == 2 else 800):
        n = int(rng.integers(3, 15 if k == 2 else 9))
        m = 8
        d = int(rng.integers(1, 4))
        X = rng.normal(size=(n, d))
        Xt = rng.normal(size=(m, d)) * rng.uniform(0.2, 3.0)
        y = rng.integers(0, k, n)
        q = float(rng.uniform(0.01, 0.45 if k == 2 else 0.6))
        lam = float(rng.uniform(0.01, 2.0))
        from lib.least_squares import kernel_weights

        alpha = kernel_weights(X, Xt, lam) * rng.uniform(0.5, 3.0)
        from lib.chernoff import chernoff_bound

        res = chernoff_bound(alpha, y, q, k)
        key = (n, k)
        if key not in Zcache:
            Zcache[key] = all_labellings(n, k)
        G = _exact_smoothed(alpha, y, q, k, Zcache[key])
        p_exact = G[np.arange(m), res.pred]
        p_low = res.p_lower
        ok = p_low > 0.5
        assert np.all(p_low[ok] <= p_exact[ok] + 1e-12)
        # where certified, pred is the exact majority (its probability exceeds 1/2)
        assert np.all(p_exact[ok] > 0.5)
        informative += int(ok.sum())
        instances += 1
    assert informative > (500 if k == 2 else 250)  # the check was not vacuous


@pytest.mark.parametrize("k", [2, 3])
def test_certified_prediction_never_changes_within_radius(k):
    """For every training labelling within r = tight_radius flips the exact g stays the same."""
    rng = np.random.default_rng(200 + k)
    n = 10 if k == 2 else 6
    Z = all_labellings(n, k)
    checked = 0
    for _ in range(25 if k == 2 else 60):
        X = rng.normal(size=(n, 2))
        Xt = rng.normal(size=(4, 2)) * 2.0
        y = rng.integers(0, k, n)
        q = float(rng.uniform(0.02, 0.3 if k == 2 else 0.1))
        from lib.least_squares import kernel_weights

        alpha = kernel_weights(X, Xt, 0.1) * (1.5 if k == 2 else 3.0)
        G = _exact_smoothed(alpha, y, q, k, Z)
        pred = np.argmax(G, axis=1)
        p = G[np.arange(4), pred]
        radii = tight_radius(np.clip(p, 0.0, 1.0), q, k, max_radius=n)
        # exact smoothed prediction for every possible training labelling y' at once
        diff = Z[:, None, :] != Z[None, :, :]  # (N_y', N_z, n)
        W = np.prod(np.where(diff, q / (k - 1), 1 - q), axis=2)  # mu_{y'}(z)
        votes = base_votes(Z, alpha, k)  # (N_z, m)
        ham = np.sum(Z != y[None, :], axis=1)  # distance of each y' from y
        for j in range(4):
            if radii[j] == 0:
                continue
            Gj = np.stack([W @ (votes[:, j] == c) for c in range(k)], axis=1)  # (N_y', k)
            within = ham <= radii[j]
            assert np.all(Gj[within, pred[j]] > 0.5)
            checked += int(within.sum())
    assert checked > (100 if k == 2 else 30)


def test_certify_pipeline_radii_match_components(rng):
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    Xt = rng.normal(size=(50, 5))
    cert = labelflip.certify(X, y, Xt, q=0.1)
    from lib.chernoff import chernoff_bound
    from lib.least_squares import add_intercept, kernel_weights, ridge_lambda_label_free

    Xa, Xta = add_intercept(X), add_intercept(Xt)
    lam = ridge_lambda_label_free(Xa, 0.1)
    res = chernoff_bound(kernel_weights(Xa, Xta, lam), y, 0.1)
    assert cert.lam == lam
    np.testing.assert_array_equal(cert.pred, res.pred)
    expected = labelflip.radius_from_log_tail(res.log_tail, 0.1, max_radius=200)
    np.testing.assert_array_equal(cert.radius, expected)
    assert np.mean(cert.pred == (Xt[:, 0] > 0)) > 0.8
    assert cert.radius.max() > 0
    kl = labelflip.certify(X, y, Xt, q=0.1, bound="kl")
    assert np.all(kl.radius <= cert.radius)


def test_pipeline_alpha_does_not_move_when_labels_are_flipped(rng):
    """The default (label-free) lambda makes alpha a function of X only: sound."""
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] > 0).astype(int)
    Xt = rng.normal(size=(20, 6))
    base = labelflip.certify(X, y, Xt, q=0.2)
    y_flipped = y.copy()
    y_flipped[:40] = 1 - y_flipped[:40]
    moved = labelflip.certify(X, y_flipped, Xt, q=0.2)
    assert moved.lam == base.lam
    with pytest.warns(UserWarning, match="poisonable"):
        paper = labelflip.certify(X, y, Xt, q=0.2, lam="paper")
    with pytest.warns(UserWarning):
        paper_flipped = labelflip.certify(X, y_flipped, Xt, q=0.2, lam="paper")
    assert paper.lam != paper_flipped.lam  # the label-reading rule does move: the trap


def test_monte_carlo_certificate_agrees_with_chernoff(rng):
    X = rng.normal(size=(150, 4))
    y = (X[:, 0] > 0).astype(int)
    Xt = rng.normal(size=(30, 4))
    det = labelflip.certify(X, y, Xt, q=0.2)
    mc = labelflip.certify_monte_carlo(X, y, Xt, q=0.2, n0=50, n=2000, alpha=0.001, seed=3)
    decided = mc.pred >= 0
    both = decided & (det.radius > 0)
    np.testing.assert_array_equal(mc.pred[both], det.pred[both])
    again = labelflip.certify_monte_carlo(X, y, Xt, q=0.2, n0=50, n=2000, alpha=0.001, seed=3)
    np.testing.assert_array_equal(again.radius, mc.radius)  # seeded and repeatable


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kl_radius(0.9, 0.0), "q"),
        (lambda: kl_radius(0.9, 0.5), "q"),
        (lambda: tight_radius(0.9, 0.7, 3), "q"),
        (lambda: tight_radius(1.2, 0.1), "p"),
        (lambda: tight_radius(float("nan"), 0.1), "p"),
        (lambda: tight_radius(0.9, 0.1, 1), "num_classes"),
        (lambda: tight_radius(1.0, 0.1), "max_radius"),
        (lambda: kl_radius(-0.1, 0.1), "p"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pipeline_bad_input(rng):
    X = rng.normal(size=(20, 3))
    y = rng.integers(0, 2, 20)
    Xt = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="y_train"):
        labelflip.certify(X, y[:-1], Xt, q=0.1)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X_train"):
        labelflip.certify(bad, y, Xt, q=0.1)
    with pytest.raises(ValueError, match="features"):
        labelflip.certify(X, y, Xt[:, :2], q=0.1)
    with pytest.raises(ValueError, match="y_train"):
        labelflip.certify(X, y + 2, Xt, q=0.1)
    with pytest.raises(ValueError, match="lam"):
        labelflip.certify(X, y, Xt, q=0.1, lam=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        labelflip.certify_monte_carlo(X, y, Xt, q=0.1, alpha=1.5)
    with pytest.raises(ValueError, match="n0"):
        labelflip.certify_monte_carlo(X, y, Xt, q=0.1, n0=0)


def test_enumeration_helpers_are_distributions(rng):
    from lib.enumeration import all_labellings, kl_divergence, noise_probabilities

    for k in [2, 3]:
        Z = all_labellings(4, k)
        assert Z.shape == (k**4, 4) and len({tuple(z) for z in Z}) == k**4
        assert noise_probabilities(Z, rng.integers(0, k, 4), 0.2, k).sum() == pytest.approx(1.0)
    assert kl_divergence(np.array([0, 1, 1]), np.array([0, 1, 1]), 0.1, 2) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("bound", ["tight", "kl"])
def test_required_p_is_the_threshold(k, bound):
    for q in [0.01, 0.1, 0.3]:
        for r in [1, 2, 5, 20]:
            p = labelflip.required_p(r, q, k, bound=bound)
            assert 0.5 < p <= 1.0
            if p > 1 - 1e-12:
                continue  # 1 - p below float64 resolution: only the log tail can express it
            radius = tight_radius if bound == "tight" else kl_radius
            assert radius(min(p * (1 + 1e-7), np.nextafter(1.0, 0)), q, k) >= r
            assert radius(p * (1 - 1e-7), q, k) < r


def test_threshold_table_sound_at_large_r_against_50_digit_arithmetic():
    """The accumulated rounding of the log-space convolution stays inside the safety margin."""
    import mpmath as mp

    mp.mp.dps = 50
    for q, r_values in [(0.01, [500, 2500]), (0.3, [2500])]:
        table = ThresholdTable(q, 2)
        table.extend_to(max(r_values))
        for r in r_values:
            qm = mp.mpf(q)
            pmf = lambda m, p, r=r: mp.binomial(r, m) * p**m * (1 - p) ** (r - m)  # noqa: E731
            # rho-mass of the top levels (m = agreements with y2 among the r changed labels)
            acc_rho, m = mp.mpf(0), r
            while acc_rho + pmf(m, 1 - qm) < mp.mpf(1) / 2:
                acc_rho += pmf(m, 1 - qm)
                m -= 1
            mu_above = mp.fsum(pmf(j, qm) for j in range(m + 1, r + 1))
            exact = mu_above + (mp.mpf(1) / 2 - acc_rho) / pmf(m, 1 - qm) * pmf(m, qm)
            lib = table._logc[r - 1]
            assert lib < float(mp.log(exact)), (q, r)
            assert lib == pytest.approx(float(mp.log(exact)), rel=1e-6)


def test_kl_radius_edge_cases_return_sane_integers(rng):
    assert kl_radius(1.0, 0.1, max_radius=100) == 100
    assert tight_radius(1.0, 0.1, max_radius=100) == 100
    r = labelflip.radius_from_log_tail(np.array([-5e303, -np.inf]), 0.499, bound="kl", max_radius=25000)
    assert r.tolist() == [25000, 25000]
    # a test point with alpha = 0 always votes 0: certified against every flip, no garbage
    X = rng.normal(size=(30, 3))
    y = rng.integers(0, 2, 30)
    Xt = np.vstack([np.zeros(3), rng.normal(size=3)])
    cert = labelflip.certify(X, y, Xt, q=0.3, bound="kl", fit_intercept=False)
    assert cert.radius[0] == 30 and cert.pred[0] == 0
    assert np.all(cert.radius >= 0)


def test_growth_is_refused_beyond_the_table_limit(monkeypatch):
    from lib import neyman_pearson

    monkeypatch.setattr(neyman_pearson, "MAX_TABLE", 2000)  # the real limits, reached sooner
    monkeypatch.setattr(neyman_pearson, "MAX_TABLE_BINARY", 2000)
    with pytest.raises(ValueError, match="max_radius"):
        labelflip.radius_from_log_tail(np.array([-1e9]), 0.4999)


def test_lambda_sweep_rows_are_certify_at_each_lambda(rng):
    """Each row of the sweep is what certify reports with that lambda (features used as given),
    and the clean accuracy is that of ridge refitted on the clean labels."""
    from lib.least_squares import ridge_fit_predict

    X = np.c_[rng.normal(size=(150, 3)), np.ones(150)]
    y = (X[:, 0] + 0.4 * rng.normal(size=150) > 0).astype(int)
    Xt = np.c_[rng.normal(size=(20, 3)), np.ones(20)]
    yt = (Xt[:, 0] > 0).astype(int)
    lams = [1e-3, 1.0, 100.0]
    sweep = labelflip.lambda_sweep(X, y, Xt, yt, 0.1, lams, [1, 4])
    assert list(sweep["lambda"]) == lams
    for lam, (_, row) in zip(lams, sweep.iterrows()):
        c = labelflip.certify(X, y, Xt, 0.1, lam=lam, fit_intercept=False)
        assert row["smoothed accuracy"] == np.mean(c.pred == yt)
        assert row["certified at r = 4"] == np.mean((c.pred == yt) & (c.radius >= 4))
        assert row["clean accuracy"] == np.mean((ridge_fit_predict(X, y, Xt, lam) >= 0.5) == yt)


def test_certify_lambdas_reuses_the_known_certificate_and_certifies_the_rest(rng):
    F = rng.normal(size=(120, 3))
    y = (F[:, 0] + 0.4 * rng.normal(size=120) > 0).astype(int)
    Ft = rng.normal(size=(15, 3))
    yt = (Ft[:, 0] > 0).astype(int)
    default = labelflip.certify(F, y, Ft, 0.1)
    table = labelflip.certify_lambdas(
        F, y, Ft, yt, 0.1, {"auto": default.lam, "big": 50.0}, [2], known=default
    )
    assert list(table.index) == ["auto", "big"]
    for name, cert in (("auto", default), ("big", labelflip.certify(F, y, Ft, 0.1, lam=50.0))):
        assert table.loc[name, "accuracy"] == np.mean(cert.pred == yt)
        assert table.loc[name, "certified at r = 2"] == np.mean((cert.pred == yt) & (cert.radius >= 2))
