"""Monte Carlo votes by sparse updates: the law of the flips, exact votes, agreement with the dense path."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binom as binom_dist
from scipy.stats import binomtest, chi2_contingency, chisquare

from lib.labelflip import flip_labels
from lib.montecarlo import flip_positions, sampled_bound, vote_counts


def _flip_matrix(n, q, draws, batch, seed):
    """The flip indicators that vote_counts(..., rng=default_rng(seed), batch_size=batch) draws."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, draws, batch):
        size = min(batch, draws - start)
        indptr, cols = flip_positions(n, q, size, rng)
        F = np.zeros((size, n), dtype=bool)
        F[np.repeat(np.arange(size), np.diff(indptr)), cols] = True
        out.append(F)
    return np.vstack(out)


def _exact_vote_share(alpha, y, q):
    """P(alpha_j^T Y >= 1/2) for every column, by enumerating all 2^n flip patterns (exact rationals)."""
    n, m = alpha.shape
    a = [[Fraction(float(v)) for v in row] for row in alpha]
    qf = Fraction(q)
    share = [Fraction(0)] * m
    for flips in itertools.product((0, 1), repeat=n):
        weight = qf ** sum(flips) * (1 - qf) ** (n - sum(flips))
        labels = [yi ^ f for yi, f in zip(y, flips)]
        for j in range(m):
            if sum(a[i][j] for i in range(n) if labels[i]) >= Fraction(1, 2):
                share[j] += weight
    return np.array([float(s) for s in share])


def _informative_problem(n, m, q, rng):
    """Positive weights scaled so that E[alpha_j^T Y] is near 1/2: both votes are frequent."""
    y = np.array([1, 0] * (n // 2))
    alpha = rng.uniform(0.2, 1.0, size=(n, m))
    mean = np.where(y == 1, 1 - q, q) @ alpha
    return alpha * (0.5 + rng.uniform(-0.05, 0.05, m)) / mean, y


def test_flip_positions_have_the_law_of_independent_flips():
    n, q, size = 7, 0.2, 40000
    indptr, cols = flip_positions(n, q, size, np.random.default_rng(3))
    assert indptr[0] == 0 and indptr[-1] == cols.size and np.all(np.diff(indptr) >= 0)
    rows = np.repeat(np.arange(size), np.diff(indptr))
    assert np.all((cols >= 0) & (cols < n))
    assert not np.any((np.diff(rows) == 0) & (np.diff(cols) <= 0)), "positions must increase within a row"
    F = np.zeros((size, n), dtype=bool)
    F[rows, cols] = True
    # the whole pattern of a row: 2^7 cells, each with probability q^|S| (1-q)^(n-|S|)
    code = F @ (1 << np.arange(n))
    observed = np.bincount(code, minlength=1 << n)
    k = np.array([bin(c).count("1") for c in range(1 << n)])
    expected = size * q**k * (1 - q) ** (n - k)
    assert chisquare(observed, expected).pvalue > 1e-6
    # and the same number of flips per row as flip_labels, on a bigger n
    n2 = 500
    indptr2, _ = flip_positions(n2, q, 4000, np.random.default_rng(4))
    dense = flip_labels(np.zeros(n2, dtype=np.int64), q, 2, np.random.default_rng(5), 4000).sum(axis=1)
    sparse = np.diff(indptr2)
    edges = np.concatenate([[-1], binom_dist.ppf(np.linspace(0.1, 0.9, 9), n2, q), [n2]])
    table = np.array([np.histogram(sparse, edges)[0], np.histogram(dense, edges)[0]])
    assert chi2_contingency(table).pvalue > 1e-6


def test_flip_positions_is_repeatable_and_covers_the_last_site():
    a = flip_positions(13, 0.3, 50, np.random.default_rng(0))
    b = flip_positions(13, 0.3, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # with q close to 1/2 and one long row, every site (the last included) is flipped sometimes
    hits = np.zeros(5, dtype=int)
    rng = np.random.default_rng(1)
    for _ in range(200):
        _, cols = flip_positions(5, 0.45, 1, rng)
        hits[cols] += 1
    assert np.all(hits > 40)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_votes_equal_the_dense_product_on_the_same_flips(batch):
    rng = np.random.default_rng(11)
    n, m, q, draws = 60, 9, 0.15, 300
    alpha = rng.normal(scale=0.1, size=(n, m))
    y = rng.integers(0, 2, n)
    got = vote_counts(alpha, y, q, draws, np.random.default_rng(2), batch_size=batch)
    Y = y[None, :] ^ _flip_matrix(n, q, draws, batch, 2)
    dense = (Y.astype(np.float64) @ alpha >= 0.5).sum(axis=0)
    np.testing.assert_array_equal(got.ones, dense)
    assert got.draws == draws
    assert 0 < got.ones.sum() < draws * m  # both votes occur: the comparison is not vacuous


def test_votes_are_exact_at_the_threshold():
    # weights whose subset sums hit 1/2 exactly or miss it by a few ulps: 0.1 + 0.2 + 0.2 > 1/2 in
    # exact arithmetic on the float64 values; float64 sums in some orders give 0.5 or more
    alpha = np.array([[0.1, 0.25, 0.1], [0.2, 0.25, 0.4], [0.2, 0.25, 1e-17], [0.3, 0.25, -1e-17]])
    y = np.array([1, 0, 1, 0])
    q, draws, batch = 0.3, 2000, 50
    got = vote_counts(alpha, y, q, draws, np.random.default_rng(5), batch_size=batch)
    Y = y[None, :] ^ _flip_matrix(4, q, draws, batch, 5)
    a = [[Fraction(float(v)) for v in row] for row in alpha]
    exact = [
        sum(sum((a[i][j] for i in range(4) if row[i]), Fraction(0)) >= Fraction(1, 2) for row in Y)
        for j in range(3)
    ]
    np.testing.assert_array_equal(got.ones, exact)
    assert got.rechecked > 0


def test_vote_share_matches_enumeration_and_the_flip_labels_path():
    n, m, q = 10, 4, 0.2
    alpha, y = _informative_problem(n, m, q, np.random.default_rng(7))
    alpha[:, 0] = 0.1  # a column whose vote is decided by a sum of exactly 0.5 up to rounding
    exact = _exact_vote_share(alpha, y, q)
    assert np.all((exact > 0.05) & (exact < 0.95)), exact  # informative columns
    draws = 40000
    sparse = vote_counts(alpha, y, q, draws, np.random.default_rng(8)).ones
    Y = flip_labels(y, q, 2, np.random.default_rng(9), draws)
    dense = (Y @ alpha >= 0.5).sum(axis=0)
    for j in range(m):
        # each count is Bin(draws, exact share): a test that fails when the law is wrong
        assert binomtest(int(sparse[j]), draws, exact[j]).pvalue > 1e-5, (j, sparse[j] / draws, exact[j])
        assert binomtest(int(dense[j]), draws, exact[j]).pvalue > 1e-5, (j, dense[j] / draws, exact[j])
        table = np.array([[sparse[j], draws - sparse[j]], [dense[j], draws - dense[j]]])
        assert chi2_contingency(table).pvalue > 1e-5


def test_a_wrong_law_is_detected():
    # the same check rejects votes drawn with q = 0.25 instead of 0.2: it has power
    alpha, y = _informative_problem(10, 3, 0.2, np.random.default_rng(7))
    exact = _exact_vote_share(alpha, y, 0.2)
    wrong = vote_counts(alpha, y, 0.25, 40000, np.random.default_rng(8)).ones
    assert min(binomtest(int(wrong[j]), 40000, exact[j]).pvalue for j in range(3)) < 1e-5


def test_vote_counts_is_repeatable():
    rng = np.random.default_rng(0)
    alpha = rng.normal(scale=0.05, size=(200, 5))
    y = rng.integers(0, 2, 200)
    a = vote_counts(alpha, y, 0.1, 500, np.random.default_rng(1))
    b = vote_counts(alpha, y, 0.1, 500, np.random.default_rng(1))
    np.testing.assert_array_equal(a.ones, b.ones)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"q": 0.5}, "q"),
        ({"q": 0.0}, "q"),
        ({"draws": 0}, "draws"),
        ({"draws": 2.5}, "draws"),
        ({"y": np.array([0, 1, 2])}, "y"),
        ({"y": np.array([0, 1])}, "y"),
        ({"alpha": np.ones(3)}, "alpha"),
        ({"alpha": np.full((3, 2), np.nan)}, "alpha"),
        ({"rng": 0}, "rng"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_is_named(kwargs, name):
    args = {
        "alpha": np.ones((3, 2)),
        "y": np.array([0, 1, 1]),
        "q": 0.1,
        "draws": 10,
        "rng": np.random.default_rng(0),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        vote_counts(**args)


def _low_rank_problem(rng, n=300, m=40, r=5):
    X = rng.normal(size=(n, r))
    alpha = X @ rng.normal(size=(r, m)) / (n * 0.5)
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    p = np.where(y == 1, 0.85, 0.15)  # P(Y_i = 1) at q = 0.15
    alpha += ((0.5 - p @ alpha) / p.sum())[None, :]  # a constant shift per column: E[alpha^T Y] = 1/2
    return alpha, y


@pytest.mark.parametrize("batch", [3, 64])
def test_low_rank_votes_equal_the_dense_product_on_the_same_flips(batch):
    rng = np.random.default_rng(12)
    alpha, y = _low_rank_problem(rng)
    q, draws = 0.15, 400
    got = vote_counts(alpha, y, q, draws, np.random.default_rng(3), batch_size=batch)
    assert got.rank == 6  # X W plus the constant shift: rank r + 1, not m
    Y = y[None, :] ^ _flip_matrix(len(y), q, draws, batch, 3)
    dense = (Y.astype(np.float64) @ alpha >= 0.5).sum(axis=0)
    np.testing.assert_array_equal(got.ones, dense)
    assert np.all((got.ones > 0) & (got.ones < draws))  # both votes at every test point


def test_low_rank_votes_are_exact_at_the_threshold():
    # dyadic weights of rank 2: sums of subsets hit 1/2 exactly, and the factorisation of alpha
    # is not exact in float64, so ties must go through the exactly rounded sum
    rng = np.random.default_rng(4)
    n, m = 24, 12
    X = rng.integers(0, 3, size=(n, 2)) / 8
    W = rng.integers(1, 3, size=(2, m)) / 4
    alpha = X @ W  # exact in float64: multiples of 1/32
    y = rng.integers(0, 2, n)
    q, draws, batch = 0.3, 3000, 100
    got = vote_counts(alpha, y, q, draws, np.random.default_rng(6), batch_size=batch)
    assert got.rank == 2
    Y = y[None, :] ^ _flip_matrix(n, q, draws, batch, 6)
    exact = (Y @ (alpha * 32).astype(np.int64) >= 16).sum(axis=0)  # integer arithmetic: no rounding
    np.testing.assert_array_equal(got.ones, exact)
    assert got.rechecked > 0
    assert np.any((Y @ (alpha * 32).astype(np.int64)) == 16)  # ties did occur


def test_sampled_bound_follows_the_vote_counts():
    from scipy.stats import beta as beta_dist

    alpha, y = _low_rank_problem(np.random.default_rng(21))
    q, n0, n, level = 0.1, 50, 2000, 0.001
    pred, log_tail = sampled_bound(alpha, y, q, n0=n0, n=n, fail_prob=level, rng=np.random.default_rng(5))
    rng = np.random.default_rng(5)
    pick = (2 * vote_counts(alpha, y, q, n0, rng).ones > n0).astype(int)
    ones = vote_counts(alpha, y, q, n, rng).ones
    k = np.where(pick == 1, ones, n - ones)
    p = np.where(k > 0, beta_dist.ppf(level, np.maximum(k, 1), n - k + 1), 0.0) * (1 - 1e-12)
    np.testing.assert_array_equal(pred, np.where(p > 0.5, pick, -1))
    np.testing.assert_allclose(log_tail, np.where(p > 0.5, np.log1p(-p), np.log(0.5)), rtol=1e-12)
    assert np.any(pred == -1) and np.any(pred >= 0)
    # estimation votes counted beforehand give the same certificate as drawing them here
    counted = vote_counts(alpha, y, q, n, np.random.default_rng(99))
    pick2 = (2 * vote_counts(alpha, y, q, n0, np.random.default_rng(5)).ones > n0).astype(int)
    pred2, tail2 = sampled_bound(
        alpha, y, q, n0=n0, n=n, fail_prob=level, rng=np.random.default_rng(5), votes=counted
    )
    k2 = np.where(pick2 == 1, counted.ones, n - counted.ones)
    p2 = np.where(k2 > 0, beta_dist.ppf(level, np.maximum(k2, 1), n - k2 + 1), 0.0) * (1 - 1e-12)
    np.testing.assert_array_equal(pred2, np.where(p2 > 0.5, pick2, -1))
    np.testing.assert_allclose(tail2, np.where(p2 > 0.5, np.log1p(-p2), np.log(0.5)), rtol=1e-12)
    with pytest.raises(ValueError, match="votes"):
        sampled_bound(
            alpha, y, q, n0=n0, n=n + 1, fail_prob=level, rng=np.random.default_rng(5), votes=counted
        )
    with pytest.raises(ValueError, match="votes"):
        sampled_bound(
            alpha[:, :3], y, q, n0=n0, n=n, fail_prob=level, rng=np.random.default_rng(5), votes=counted
        )


def test_sampled_bound_agrees_with_certify_monte_carlo():
    from lib.labelflip import certify_monte_carlo
    from lib.least_squares import add_intercept, kernel_weights, ridge_lambda_label_free

    rng = np.random.default_rng(8)
    F = rng.normal(size=(400, 3))
    y = (F[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(np.int64)
    Ft = rng.normal(size=(30, 3))
    q, n = 0.1, 4000
    X = add_intercept(F)
    alpha = kernel_weights(X, add_intercept(Ft), ridge_lambda_label_free(X, q))
    pred, log_tail = sampled_bound(alpha, y, q, n0=100, n=n, fail_prob=0.001, rng=np.random.default_rng(1))
    ref = certify_monte_carlo(F, y, Ft, q, n0=100, n=n, alpha=0.001, seed=2)
    # independent samples of the same procedure: the same class wherever both certify, and
    # lower bounds within a few standard errors of a share estimated from 4000 draws
    both = (pred >= 0) & (ref.pred >= 0)
    assert both.sum() >= 10
    np.testing.assert_array_equal(pred[both], ref.pred[both])
    p_new, p_ref = -np.expm1(log_tail), -np.expm1(ref.log_tail)
    assert np.all(np.abs(p_new - p_ref)[both] < 0.05)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n0": 0}, "n0"),
        ({"n": 1.5}, "n"),
        ({"fail_prob": 1.0}, "fail_prob"),
        ({"q": 0.7}, "q"),
        ({"rng": None}, "rng"),
    ],
)
def test_sampled_bound_bad_input_is_named(kwargs, name):
    args = {"n0": 10, "n": 10, "fail_prob": 0.01, "rng": np.random.default_rng(0), "q": 0.1}
    args.update(kwargs)
    q = args.pop("q")
    with pytest.raises(ValueError, match=name):
        sampled_bound(np.ones((3, 2)), np.array([0, 1, 1]), q, **args)


@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 0.1, 5), "n"), ((4, 0.6, 5), "q"), ((4, 0.1, 0), "size")],
)
def test_flip_positions_bad_input_is_named(args, name):
    with pytest.raises(ValueError, match=name):
        flip_positions(*args, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        flip_positions(4, 0.1, 5, 0)
