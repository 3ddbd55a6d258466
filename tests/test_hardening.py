"""Edge cases of the certificates: wide-precision p, huge and tiny weights, the threshold-table
limits, rounding of the bounds, and argument checks.

Every bound touched here is compared with an independent computation: mpmath or exact
rational arithmetic over every noisy labelling.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from decimal import Decimal, localcontext
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib import chernoff, labelflip, neyman_pearson, smoothing
from lib._checks import count
from lib.chernoff import binary_objective, chernoff_bound
from lib.gaussian import Smooth, clopper_pearson_lower
from lib.labelflip import kl_per_flip, kl_radius, radius_from_log_tail, tight_radius
from lib.least_squares import condition_number, kernel_weights, ridge_lambda
from lib.neyman_pearson import ThresholdTable, binary_log_cstar

WIDE = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
needs_wide = pytest.mark.skipif(not WIDE, reason="np.longdouble is float64 on this platform")


# ------------------------------------------------------------------ independent references


def _mp_log_cstar(q: float, r: int, dps: int = 40) -> mp.mpf:
    """log c*(r) for K = 2 (module docstring of lib.neyman_pearson) by summing binomial pmfs
    in mpmath, with the ratio recurrence pmf(m+1) = pmf(m) (r-m)/(m+1) p/(1-p)."""
    with mp.workdps(dps):
        qm = mp.mpf(q)
        pm = 1 - qm

        def pmf(m, p):
            return mp.exp(
                mp.loggamma(r + 1)
                - mp.loggamma(m + 1)
                - mp.loggamma(r - m + 1)
                + m * mp.log(p)
                + (r - m) * mp.log(1 - p)
            )

        def tail(m0, p):  # P(M >= m0), M ~ Bin(r, p)
            if m0 > r:
                return mp.mpf(0)
            term, s, m = pmf(m0, p), mp.mpf(0), m0
            while m <= r:
                s += term
                if m > r * p and term < s * mp.mpf(10) ** (-dps):
                    break
                term = term * (r - m) / (m + 1) * p / (1 - p)
                m += 1
            return s

        centre = int(r * (1 - q))
        ms = max(m for m in range(max(centre - 6, 0), min(centre + 6, r) + 1) if tail(m, pm) >= mp.mpf(1) / 2)
        c = tail(ms + 1, qm) + (mp.mpf(1) / 2 - tail(ms + 1, pm)) / pmf(ms, pm) * pmf(ms, qm)
        return mp.log(c)


@functools.cache
def _mp_log_cstar_all(q: float, r_max: int, dps: int = 30) -> tuple:
    """log c*(r) for r = 1..r_max (K = 2) in mpmath, from the binomial laws built one flip at
    a time (P_r(m) = P_{r-1}(m) (1-p) + P_{r-1}(m-1) p) and their suffix sums."""
    out = []
    with mp.workdps(dps):
        qm = mp.mpf(q)
        mu, rho = [mp.mpf(1)], [mp.mpf(1)]  # laws of M (agreements with y2) under mu and rho
        half = mp.mpf(1) / 2
        for r in range(1, r_max + 1):
            mu = [(mu[m] if m < r else 0) * (1 - qm) + (mu[m - 1] * qm if m > 0 else 0) for m in range(r + 1)]
            rho = [
                (rho[m] if m < r else 0) * qm + (rho[m - 1] * (1 - qm) if m > 0 else 0) for m in range(r + 1)
            ]
            rho_acc, mu_acc, m = mp.mpf(0), mp.mpf(0), r
            while rho_acc + rho[m] < half:  # fill the levels of largest ratio first
                rho_acc += rho[m]
                mu_acc += mu[m]
                m -= 1
            out.append(mp.log(mu_acc + (half - rho_acc) / rho[m] * mu[m]))
    return tuple(out)


def _mp_tight_radius(log_tail: mp.mpf, q: float, r_max: int) -> int:
    """Largest r <= r_max with log_tail < log c*(r') for all r' <= r, all in mpmath (K = 2)."""
    r = 0
    for c in _mp_log_cstar_all(q, r_max):
        if not log_tail < c:
            break
        r += 1
    return r


def _exact_G(alpha: np.ndarray, y: np.ndarray, q: float, k: int) -> list[Fraction]:
    """G(mu, phi, c) for every class c, in rational arithmetic over all k^n noisy labellings.

    Base vote: binary 1{alpha^T y >= 1/2}; K > 2 the first class of largest score."""
    qf = Fraction(q)
    a = [Fraction(float(v)) for v in alpha]
    G = [Fraction(0)] * k
    for z in itertools.product(range(k), repeat=len(a)):
        w = Fraction(1)
        for zi, yi in zip(z, y):
            w *= (1 - qf) if zi == yi else qf / (k - 1)
        if k == 2:
            vote = int(sum((ai for ai, zi in zip(a, z) if zi == 1), Fraction(0)) >= Fraction(1, 2))
        else:
            s = [sum((ai for ai, zi in zip(a, z) if zi == c), Fraction(0)) for c in range(k)]
            vote = s.index(max(s))
        G[vote] += w
    return G


def _exact_g(G: list[Fraction]) -> int:
    return int(G[1] >= Fraction(1, 2)) if len(G) == 2 else G.index(max(G))


def _log_fraction(x: Fraction) -> mp.mpf:
    with mp.workdps(60):
        return mp.log(mp.mpf(x.numerator)) - mp.log(mp.mpf(x.denominator))


# ------------------------------------------------------------------ threshold-table limits


def _private_thresholds(q, k, size):
    table = ThresholdTable(q, k)
    table.extend_to(size)
    return table.log_thresholds()


@pytest.mark.parametrize("k, limit_name", [(3, "MAX_TABLE"), (2, "MAX_TABLE_BINARY")])
def test_radii_do_not_depend_on_what_is_cached(monkeypatch, k, limit_name):
    """A radius below the table limit is computed whatever is cached, even when max_radius
    exceeds the limit (the table used to double past the limit before clipping to max_radius)."""
    monkeypatch.setattr(neyman_pearson, limit_name, 2000)
    q = 1e-3 if k == 3 else 0.3
    thr = _private_thresholds(q, k, 2000)
    lt = np.array([0.5 * (thr[1299] + thr[1300])])
    expected = int(np.searchsorted(-thr, -lt)[0])
    assert 1024 < expected < 2000
    monkeypatch.setattr(neyman_pearson, "_TABLES", {})  # a fresh process: nothing cached
    assert radius_from_log_tail(lt, q, k, max_radius=3000)[0] == expected
    monkeypatch.setattr(neyman_pearson, "_TABLES", {})
    radius_from_log_tail(lt, q, k, max_radius=1500)  # caches a table of 1500
    assert radius_from_log_tail(lt, q, k, max_radius=3000)[0] == expected
    # a table grown past the limit by required_tail does not change the answer either
    labelflip.required_tail(2500, q, k)
    assert radius_from_log_tail(lt, q, k, max_radius=3000)[0] == expected


def test_multiclass_certify_with_more_labels_than_the_table_limit(monkeypatch):
    """End to end: n = 2600 labels, table limit 2000, a radius of about 1100 flips."""
    monkeypatch.setattr(neyman_pearson, "MAX_TABLE", 2000)
    monkeypatch.setattr(neyman_pearson, "_TABLES", {})
    y = np.repeat([0, 1, 2], [2470, 65, 65])
    X = np.eye(3)[y] + 1e-3 * np.random.default_rng(0).normal(size=(2600, 3))
    cert = labelflip.certify(X, y, np.eye(3), 1e-6, lam=1e-9, num_classes=3, fit_intercept=False)
    thr = _private_thresholds(1e-6, 3, 2000)
    expected = np.searchsorted(-thr, -cert.log_tail)
    np.testing.assert_array_equal(cert.radius, expected)
    assert cert.radius[0] > 1024 and cert.pred.tolist() == [0, 1, 2]


def test_radii_beyond_the_table_limit_are_capped_with_a_warning(monkeypatch):
    monkeypatch.setattr(neyman_pearson, "MAX_TABLE_BINARY", 2000)
    monkeypatch.setattr(neyman_pearson, "_TABLES", {})
    q = 0.3
    thr = _private_thresholds(q, 2, 2600)
    lt = np.array([thr[2499] - 1.0, -3.0])  # the first certifies more than 2000 flips
    with pytest.warns(RuntimeWarning, match="2000"):
        r = radius_from_log_tail(lt, q, max_radius=5000)
    assert r[0] == 2000  # a valid certificate: the exact one is at least 2500
    assert r[1] == np.searchsorted(-thr, -lt[1:])[0]
    with pytest.raises(ValueError, match="max_radius"):
        radius_from_log_tail(lt, q)


# ------------------------------------------------------------------ p wider than float64


@needs_wide
def test_tight_radius_rounds_extended_precision_p_down():
    p = np.longdouble(1) - np.longdouble(1e-19)
    tail = 1 - Fraction(*p.as_integer_ratio())  # 2 ulps of longdouble: about 1.08e-19
    exact = _mp_tight_radius(_log_fraction(tail), 0.4, 830)
    assert exact < 830
    assert tight_radius(p, 0.4, max_radius=10000) == exact
    with mp.workdps(50):
        lt = _log_fraction(tail)
        p_m = 1 - mp.exp(lt)
        kl_per = (1 - 2 * mp.mpf(0.4)) * mp.log(mp.mpf(0.6) / mp.mpf(0.4))  # eq. (9), K = 2
        kl_exact = int(mp.floor(-mp.log(4 * p_m * (1 - p_m)) / (2 * kl_per)))
    assert kl_radius(p, 0.4, max_radius=10000) == kl_exact
    assert smoothing.discrete_radius(p, 0.6, 2) == exact
    assert smoothing.discrete_radius(1 - p, 0.6, 2) == exact


@pytest.mark.parametrize(
    "make_p",
    [
        lambda: 1 - Fraction(1, 10**30),
        lambda: _mpf_p("1e-30"),
        lambda: _decimal_p("1e-30"),
    ],
    ids=["Fraction", "mpmath", "Decimal"],
)
def test_tight_radius_keeps_the_tail_of_exact_and_arbitrary_precision_p(make_p):
    p = make_p()
    exact = _mp_tight_radius(mp.log(mp.mpf(10) ** -30), 0.4, 830)
    assert exact < 830
    assert tight_radius(p, 0.4, max_radius=10000) == exact  # 810, not 10000
    assert tight_radius([p, p], 0.4, max_radius=10000).tolist() == [exact, exact]


def _mpf_p(tail: str):
    with mp.workdps(60):
        return 1 - mp.mpf(tail)


def _decimal_p(tail: str):
    with localcontext() as ctx:
        ctx.prec = 60
        return Decimal(1) - Decimal(tail)


def test_wide_p_outside_the_unit_interval_or_not_real_is_rejected():
    with pytest.raises(ValueError, match="p"):
        tight_radius(Fraction(3, 2), 0.1)
    with pytest.raises(ValueError, match="p"):
        tight_radius(_mpf_p("-1e-30"), 0.1)  # 1 + 1e-30
    with pytest.raises(ValueError, match="p"):
        kl_radius(np.array([0.9 + 0.1j]), 0.1)
    with pytest.raises(ValueError, match="p"):
        tight_radius(Decimal("NaN"), 0.1)


def _wide_p(kind: str, tail: Fraction):
    if kind == "longdouble":
        return np.longdouble(1) - np.longdouble(tail.numerator) / np.longdouble(tail.denominator)
    if kind == "fraction":
        return 1 - tail
    if kind == "mpmath":
        with mp.workdps(40):
            return 1 - mp.mpf(tail.numerator) / tail.denominator
    with localcontext() as ctx:
        ctx.prec = 40
        return Decimal(1) - Decimal(tail.numerator) / Decimal(tail.denominator)


def _exact_value(p) -> Fraction:
    if hasattr(p, "man_exp"):
        man, exp = p.man_exp
        return Fraction(int(man)) * Fraction(2) ** int(exp)
    return Fraction(*p.as_integer_ratio()) if not isinstance(p, Fraction) else p


wide_p = st.tuples(
    st.sampled_from((["longdouble"] if WIDE else []) + ["fraction", "mpmath", "decimal"]),
    st.integers(1, 9),
    st.integers(1, 40),
).map(lambda t: _wide_p(t[0], Fraction(t[1], 10 ** t[2])))  # 1 - p from 9e-1 down to 1e-40


@settings(max_examples=60, deadline=None)
@given(p=wide_p, q=st.sampled_from([0.05, 0.2, 0.4]))
def test_wide_precision_p_never_over_certifies(p, q):
    """The radius of a wide p is sound against its exact tail (checked in mpmath against the
    table's thresholds) and at least what its float64 rounding toward 0 would certify."""
    tail = 1 - _exact_value(p)
    r = tight_radius(p, q, max_radius=100_000)
    if r > 0:
        thr = labelflip.threshold_table(q, 2).log_thresholds()
        assert _log_fraction(tail) < mp.mpf(float(thr[:r].min()))
    down = float(np.nextafter(float(_exact_value(p)), 0.0))
    assert r >= tight_radius(min(down, float(_exact_value(p))), q)
    r_kl = kl_radius(p, q, max_radius=100_000)
    with mp.workdps(50):
        pe = 1 - mp.exp(_log_fraction(tail))
        bound = -mp.log(4 * pe * (1 - pe)) / (2 * mp.mpf(kl_per_flip(q)))
    assert r_kl <= bound * (1 + mp.mpf(10) ** -12)


# ------------------------------------------------------------------ huge log tails (KL)


def test_kl_radius_from_a_huge_log_tail_is_non_negative():
    lt = chernoff_bound(np.zeros((8, 1)), np.zeros(8, int), 0.1).log_tail
    assert lt[0] < -1e19
    r = radius_from_log_tail(lt, 0.1, bound="kl")
    assert r[0] >= 0 and r[0] == 2**62
    assert radius_from_log_tail(lt, 0.1, bound="kl", max_radius=8)[0] == 8
    assert kl_radius(np.nextafter(1.0, 0.0), 0.1) > 0


@settings(max_examples=80, deadline=None)
@given(lt1=st.floats(-1e308, 0.0), lt2=st.floats(-1e308, 0.0), q=st.floats(0.001, 0.45))
def test_kl_radius_is_non_negative_and_monotone_in_the_log_tail(lt1, lt2, q):
    lo, hi = sorted([lt1, lt2])
    r = radius_from_log_tail(np.array([lo, hi]), q, bound="kl")
    assert np.all(r >= 0)
    assert r[0] >= r[1]


# ------------------------------------------------------------------ counts, batch sizes


def test_monte_carlo_rejects_non_positive_batch_size(rng):
    X = rng.normal(size=(30, 2))
    y = rng.integers(0, 2, 30)
    for bad in (-5, 0, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            labelflip.certify_monte_carlo(X, y, X[:3], 0.1, n0=10, n=20, batch_size=bad)


class _Linear(torch.nn.Module):
    def forward(self, x):
        s = x.reshape(x.shape[0], -1).sum(dim=1)
        return torch.stack([-s, s], dim=1)


def test_whole_number_floats_are_accepted_as_counts(rng):
    x = torch.tensor([0.4], dtype=torch.float64)
    as_int = Smooth(_Linear(), 2, 0.5, seed=1).certify(x, 10, 1000, 0.1, 300)
    assert Smooth(_Linear(), 2, 0.5, seed=1).certify(x, 10.0, 1000.0, 0.1, 300.0) == as_int
    pred_f = Smooth(_Linear(), 2, 0.5, seed=1).predict(x, 100.0, 0.1, 7.0)
    assert pred_f == Smooth(_Linear(), 2, 0.5, seed=1).predict(x, 100, 0.1, 7)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    a = labelflip.certify(X, y, X[:5], 0.1, batch_size=2.0)
    b = labelflip.certify(X, y, X[:5], 0.1, batch_size=2)
    np.testing.assert_array_equal(a.radius, b.radius)
    mc_f = labelflip.certify_monte_carlo(X, y, X[:5], 0.1, n0=10.0, n=100.0, batch_size=16.0)
    mc_i = labelflip.certify_monte_carlo(X, y, X[:5], 0.1, n0=10, n=100, batch_size=16)
    np.testing.assert_array_equal(mc_f.radius, mc_i.radius)
    np.testing.assert_array_equal(mc_f.pred, mc_i.pred)
    assert chernoff_bound(X[:, :1] * 0.1, y, 0.1, max_iter=5.0).t.shape == (1,)
    for bad in (7.5, float("nan"), None, "7", True):
        with pytest.raises(ValueError, match="n"):
            Smooth(_Linear(), 2, 0.5).certify(x, 10, bad, 0.1, 300)


@settings(max_examples=40, deadline=None)
@given(v=st.integers(0, 10**6), name=st.sampled_from(["n", "batch_size", "max_radius"]))
def test_whole_number_floats_become_the_same_int(v, name):
    assert count(float(v), name, minimum=0) == v and type(count(float(v), name, minimum=0)) is int
    assert count(np.float32(v) if v < 2**24 else v, name, minimum=0) == v
    with pytest.raises(ValueError, match=name):
        count(v + 0.5, name, minimum=0)


def test_radii_are_integers_for_a_float_max_radius():
    r = tight_radius(0.99, 0.1, max_radius=5.0)
    assert type(r) is int and r <= 5
    arr = tight_radius(np.array([0.99, 1.0]), 0.1, max_radius=5.0)
    assert arr.dtype == np.int64 and arr.tolist()[1] == 5
    assert kl_radius(np.array([0.99, 1.0]), 0.1, max_radius=5.0).dtype == np.int64
    assert radius_from_log_tail(np.array([-np.inf]), 0.1, max_radius=5.0).dtype == np.int64


# ------------------------------------------------------------------ bad scores and bad input


def _nan_classifier(where):
    def f(x):
        s = torch.stack([-x.sum(dim=1), x.sum(dim=1)], dim=1)
        if where == "all":
            return torch.full_like(s, float("nan"))
        s[::3, 0] = float("nan")
        return s

    return f


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["all", "some"]), batch=st.integers(1, 50))
def test_nan_scores_from_the_base_classifier_are_rejected(where, batch):
    x = torch.tensor([0.3], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        Smooth(_nan_classifier(where), 2, 0.5).certify(x, 10, 100, 0.1, batch)
    with pytest.raises(ValueError, match="NaN"):
        Smooth(_nan_classifier(where), 2, 0.5).predict(x, 100, 0.1, batch)
    with pytest.raises(ValueError, match="NaN"):
        smoothing.vote_shares(_nan_classifier(where), np.zeros((2, 1)), 2, 0.5, 30, progress=False)


def test_clopper_pearson_rejects_fractional_n():
    with pytest.raises(ValueError, match="counts"):
        clopper_pearson_lower(1, 2.5, 0.1)
    with pytest.raises(ValueError, match="counts"):
        clopper_pearson_lower(1, float("nan"), 0.1)


def test_binary_objective_validates_labels_and_q():
    a = np.array([0.3, 0.4])
    with pytest.raises(ValueError, match="y"):
        binary_objective(1.0, a, np.array([0, 5]), 0.1)
    for q in (0.0, 1.5, 0.5):
        with pytest.raises(ValueError, match="q"):
            binary_objective(1.0, a, np.array([0, 1]), q)
    with pytest.raises(ValueError, match="alpha"):
        binary_objective(1.0, np.array([0.3, np.nan]), np.array([0, 1]), 0.1)


def test_ridge_lambda_validates_labels(rng):
    X = rng.normal(size=(20, 3))
    y = rng.integers(0, 2, 20)
    y[0] = 7
    with pytest.raises(ValueError, match="y"):
        ridge_lambda(X, y, 0.1)
    y[0] = 2
    assert ridge_lambda(X, y, 0.1, num_classes=3) > 0


def test_complex_input_is_rejected(rng):
    X = rng.normal(size=(20, 3)) + 0j
    X[0, 0] += 1j
    y = rng.integers(0, 2, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="X_train"):
            labelflip.certify(X, y, X.real[:2], 0.1)
        with pytest.raises(ValueError, match="X_train"):
            kernel_weights(X, X.real[:2], 1.0)
        with pytest.raises(ValueError, match="alpha"):
            chernoff_bound(X[:, :1], y, 0.1)
        with pytest.raises(ValueError, match="q"):
            tight_radius(0.9, 0.1 + 0j)


def test_fit_intercept_must_be_a_bool(rng):
    X = rng.normal(size=(20, 3))
    y = rng.integers(0, 2, 20)
    for bad in ("no", 0, None):
        with pytest.raises(ValueError, match="fit_intercept"):
            labelflip.certify(X, y, X[:2], 0.1, fit_intercept=bad)
    with pytest.raises(ValueError, match="fit_intercept"):
        labelflip.certify_monte_carlo(X, y, X[:2], 0.1, n0=5, n=5, fit_intercept="no")


def test_multiclass_bound_with_no_test_points_is_empty(rng):
    y = rng.integers(0, 3, 10)
    res = chernoff_bound(np.zeros((10, 0)), y, 0.1, 3)
    assert res.pred.shape == (0,) and res.log_tail.shape == (0,) and res.t.shape == (0, 2)
    res2 = chernoff_bound(np.zeros((10, 0)), y % 2, 0.1)
    assert res2.pred.shape == (0,) and res2.log_tail.shape == (0,)
    cert = labelflip.certify(rng.normal(size=(10, 2)), y, np.zeros((0, 2)), 0.1, num_classes=3)
    assert cert.radius.shape == (0,)


def test_certify_rejects_an_empty_training_set():
    with pytest.raises(ValueError, match="X_train"):
        labelflip.certify(np.zeros((0, 3)), np.zeros(0, int), np.zeros((2, 3)), 0.1)
    with pytest.raises(ValueError, match="X_train"):
        labelflip.certify_monte_carlo(np.zeros((0, 3)), np.zeros(0, int), np.zeros((2, 3)), 0.1)


def test_lambda_none_is_rejected_by_name(rng):
    X = rng.normal(size=(20, 3))
    y = rng.integers(0, 2, 20)
    for bad in (None, "1e-3x", [1.0]):
        with pytest.raises(ValueError, match="lam"):
            labelflip.certify(X, y, X[:2], 0.1, lam=bad)
    with pytest.raises(ValueError, match="lam"):
        kernel_weights(X, X[:2], None)


def test_certified_accuracy_accepts_a_scalar_radius(rng):
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    cert = labelflip.certify(X, y, X[:6], 0.1)
    at0 = cert.certified_accuracy(y[:6], 0)
    assert isinstance(at0, float)
    assert at0 == cert.certified_accuracy(y[:6], [0])[0] == np.mean(cert.pred == y[:6])
    with pytest.raises(ValueError, match="y_true"):
        cert.certified_accuracy(y[:5], 0)


def test_condition_number_rejects_more_features_than_points(rng):
    with pytest.raises(ValueError, match="rank deficient"):
        condition_number(rng.normal(size=(3, 6)))
    assert condition_number(rng.normal(size=(6, 3))) >= 1.0


# ------------------------------------------------------------------ rounding of the bounds


def test_chernoff_bound_rounds_toward_no_certificate():
    res = chernoff_bound([0.5], [0], 0.1)
    exact = 1 - Fraction(0.1)  # G(mu, phi, 0): the vote is 1 exactly when the label flips
    assert res.pred[0] == 0
    assert Fraction(float(res.p_lower[0])) <= exact
    assert mp.exp(mp.mpf(float(res.log_tail[0]))) >= mp.mpf(0.1)
    n = 100_000
    a = np.zeros(n)
    a[0] = 0.5
    res = chernoff_bound(a, np.zeros(n, int), 1e-6)
    with mp.workdps(30):
        assert mp.exp(mp.mpf(float(res.log_tail[0]))) >= mp.mpf(1e-6)  # B >= the exact tail q
    assert res.log_tail[0] - np.log(1e-6) < 1e-5  # and still close to it
    # the multi-class bound as well: P(class 0 loses) = q exactly when one weight is non-zero
    a3 = np.zeros((50, 1))
    a3[0] = 2.0
    res3 = chernoff_bound(a3, np.zeros(50, int), 0.01, 3)
    assert mp.exp(mp.mpf(float(res3.log_tail[0]))) >= mp.mpf(0.01)


def test_binary_objective_is_never_below_its_exact_value(rng):
    """eq. (7) in mpmath at 50 digits, against the rounded-up float64 evaluation."""
    for n, t in [(40, -30.0), (300, 12.0), (2000, -400.0), (5, 0.0)]:
        a = rng.normal(size=n) / n
        y = rng.integers(0, 2, n)
        q = 0.15
        got = binary_objective(t, a, y, q)
        with mp.workdps(50):
            qm, tm = mp.mpf(q), mp.mpf(t)
            exact = tm / 2 + mp.fsum(
                mp.log(qm + (1 - qm) * mp.exp(-tm * mp.mpf(ai)))
                if yi == 1
                else mp.log(1 - qm + qm * mp.exp(-tm * mp.mpf(ai)))
                for ai, yi in zip(a, y)
            )
            assert mp.mpf(got) >= exact
            assert abs(mp.mpf(got) - exact) <= 1e-9 * max(1, abs(exact))


def test_p_lower_is_rounded_down():
    lt = np.array([np.log(0.1), -40.0, np.log(0.5), -1e-300])
    zeros = np.zeros(4, int)
    res = chernoff.ChernoffResult(zeros, np.minimum(lt, np.log(0.5)), np.zeros(4), zeros)
    for p, log_t in zip(res.p_lower, lt):
        with mp.workdps(40):
            exact = max(1 - mp.exp(mp.mpf(min(float(log_t), float(np.log(0.5))))), mp.mpf(0.5))
        assert mp.mpf(float(p)) <= exact
    assert labelflip.Certificate(np.zeros(1, int), np.zeros(1, int), np.array([-40.0]), 0.0).p_lower[0] < 1.0


# ------------------------------------------------------------------ pred where nothing is certified


def test_prediction_matches_the_smoothed_classifier_where_nothing_is_certified():
    res = chernoff_bound([0.5], [1], 0.1)  # votes 1 with probability 0.9, E[alpha^T Y] = 0.45
    assert res.log_tail[0] == np.log(0.5) and res.pred[0] == 1
    res = chernoff_bound([[0.5], [0.5]], [0, 1], 0.1)  # the exact tie E[alpha^T Y] = 1/2
    assert res.pred[0] == 1
    res = chernoff_bound([1e39] + [0] * 5, [0] * 6, 0.1)  # g = 0 (votes 1 iff label 0 flips)
    assert res.pred[0] == 0 and np.all(np.isfinite(res.log_tail))
    # K = 3: class 2 has the largest expected score, but ties go to class 0, which wins the vote
    for a, y, q in [([2.0, 2.0], [2, 2], 0.6), ([0.25, 0.0, 0.25], [1, 1, 2], 0.5)]:
        res = chernoff_bound(a, y, q, 3)
        G = _exact_G(np.array(a), np.array(y), q, 3)
        assert res.log_tail[0] == np.log(0.5) and res.pred[0] == _exact_g(G) == 0


def test_huge_and_tiny_weights_are_solved_not_overflowed():
    """alpha far outside float32: Newton runs on rescaled weights, the bound in float64."""
    for scale in (1e39, 1e-39, 1e200, 1e-200):
        a = np.array([0.3, -0.2, 0.9, 0.1]) * scale
        y = np.array([1, 0, 1, 1])
        res = chernoff_bound(a, y, 0.05)
        ref = chernoff_bound(a / scale, y, 0.05) if scale > 1 else None
        G = _exact_G(a, y, 0.05, 2)
        assert res.pred[0] == _exact_g(G)
        if res.log_tail[0] < np.log(0.5):
            assert Fraction(float(res.p_lower[0])) <= G[res.pred[0]]
        if scale == 1e-39 or scale == 1e-200:  # the vote is always 0: certified, B tiny
            assert res.pred[0] == 0 and res.log_tail[0] < -100
        if ref is not None and ref.log_tail[0] < np.log(0.5):
            assert res.log_tail[0] < np.log(0.5)  # as certified as the unscaled problem allows


def test_chernoff_bound_runs_without_floating_point_warnings(rng):
    X = np.hstack([rng.normal(size=(300, 3)), np.ones((300, 1))])
    y = (X[:, 0] > 0).astype(int)
    alpha = kernel_weights(X, X[:20], 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="warn"):
            chernoff_bound(alpha, y, 0.1)
            chernoff_bound(alpha, y, 0.1, warm_start=False)
            chernoff_bound(np.array([1e39, 0, 0]), np.array([0, 1, 0]), 0.1)
            chernoff_bound(alpha * 3, rng.integers(0, 3, 300), 0.1, 3)


weights = st.one_of(
    st.just(0.0),
    st.sampled_from([0.25, 0.5, 1.0, 2.0, -0.5]),  # ties between scores and at the threshold 1/2
    st.floats(-1.0, 1.0, allow_nan=False),
    st.builds(lambda s, e: s * 10.0**e, st.sampled_from([-1.0, 1.0]), st.integers(-300, 300)),
)


@settings(max_examples=120, deadline=None)
@given(alpha=st.lists(weights, min_size=1, max_size=7), seed=st.integers(0, 10**6), q=st.floats(0.01, 0.45))
def test_binary_bound_and_prediction_against_exact_enumeration(alpha, seed, q):
    """Huge, tiny and zero weights: B never below the exact tail, pred always the exact g."""
    a = np.array(alpha)
    y = np.random.default_rng(seed).integers(0, 2, a.size)
    res = chernoff_bound(a, y, q)
    G = _exact_G(a, y, q, 2)
    assert res.pred[0] == _exact_g(G)
    tail = 1 - G[res.pred[0]]
    if res.log_tail[0] < np.log(0.5):
        if tail > 0:
            assert mp.mpf(float(res.log_tail[0])) >= _log_fraction(tail)
        assert Fraction(float(res.p_lower[0])) <= G[res.pred[0]]


@settings(max_examples=60, deadline=None)
@given(alpha=st.lists(weights, min_size=1, max_size=5), seed=st.integers(0, 10**6), q=st.floats(0.01, 0.6))
def test_multiclass_bound_and_prediction_against_exact_enumeration(alpha, seed, q):
    a = np.array(alpha)
    y = np.random.default_rng(seed).integers(0, 3, a.size)
    res = chernoff_bound(a, y, q, 3)
    G = _exact_G(a, y, q, 3)
    assert res.pred[0] == _exact_g(G)
    if res.log_tail[0] < np.log(0.5):
        tail = 1 - G[res.pred[0]]
        if tail > 0:
            assert mp.mpf(float(res.log_tail[0])) >= _log_fraction(tail)


# ------------------------------------------------------------------ the binary threshold near q = 1/2


def test_binary_threshold_is_tight_near_one_half_against_mpmath():
    """q = 0.4999: the mu-tail above the crossing decays like a Gaussian of width ~160 at
    r = 1e5, far wider than one 512-term window; log c* is still within its safety margin."""
    for q, r in [(0.4999, 100_000), (0.45, 20_000), (0.4999, 1000)]:
        lib = float(binary_log_cstar(q, np.array([r]))[0])
        exact = _mp_log_cstar(q, r)
        assert mp.mpf(lib) < exact  # never over-certifies
        # loose by no more than about its safety margin (it was 8e-4 at r = 1e5 with one window)
        assert exact - mp.mpf(lib) <= 2 * (1e-9 + 64 * r * np.finfo(float).eps * (1 + abs(lib)))
