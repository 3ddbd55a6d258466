"""Gaussian smoothing: Clopper-Pearson, CERTIFY and PREDICT on a classifier with known p_A."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from lib.gaussian import ABSTAIN, Smooth, clopper_pearson_lower, gaussian_radius


def test_clopper_pearson_matches_statsmodels():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 5000, 300)
    k = rng.integers(0, n + 1)
    for alpha in [0.001, 0.05]:
        ours = clopper_pearson_lower(k, n, alpha)
        # one-sided level alpha = the lower end of a two-sided 2 alpha interval
        ref = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
        np.testing.assert_allclose(ours, np.nan_to_num(ref, nan=0.0), rtol=1e-10, atol=1e-14)
    assert clopper_pearson_lower(0, 10, 0.01) == 0.0
    assert clopper_pearson_lower(10, 10, 0.01) == pytest.approx(0.01 ** (1 / 10))


def test_clopper_pearson_coverage_by_simulation():
    rng = np.random.default_rng(1)
    p, n, alpha = 0.83, 200, 0.05
    k = rng.binomial(n, p, 20000)
    miss = np.mean(clopper_pearson_lower(k, n, alpha) > p)
    assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / 20000)


class Linear(torch.nn.Module):
    """f(x) = 1{w.x + b > 0}: p_A = Phi(|w.x + b| / (sigma ||w||)) in closed form."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64), requires_grad=False)
        self.b = b

    def forward(self, x):
        s = x @ self.w + self.b
        return torch.stack([-s, s], dim=1)


def test_certify_linear_classifier_radius_within_cp_slack():
    w, b, sigma = [3.0, 4.0], -1.0, 0.5
    model = Linear(w, b)
    x = torch.tensor([1.0, 0.5], dtype=torch.float64)
    margin = (np.dot(w, [1.0, 0.5]) + b) / np.linalg.norm(w)
    p_a = norm.cdf(margin / sigma)
    exact = sigma * norm.ppf(p_a)  # = margin: the distance to the decision boundary
    assert exact == pytest.approx(margin)
    smooth = Smooth(model, 2, sigma, seed=0)
    n = 20000
    cls, radius = smooth.certify(x, n0=100, n=n, alpha=0.001, batch_size=1000)
    assert cls == 1
    slack = np.sqrt(np.log(1 / 1e-6) / (2 * n))  # Hoeffding, far wider than the CP interval
    assert sigma * norm.ppf(p_a - slack) <= radius <= exact


def test_certify_is_seeded_and_repeatable():
    model = Linear([1.0, 0.0], 0.0)
    x = torch.tensor([0.3, 0.0], dtype=torch.float64)
    a = Smooth(model, 2, 0.5, seed=5).certify(x, 50, 500, 0.01, 128)
    b = Smooth(model, 2, 0.5, seed=5).certify(x, 50, 500, 0.01, 128)
    assert a == b


def test_certify_abstains_on_the_boundary():
    model = Linear([1.0, 0.0], 0.0)
    x = torch.tensor([0.0, 0.0], dtype=torch.float64)
    assert Smooth(model, 2, 1.0).certify(x, 100, 1000, 0.001, 500) == (ABSTAIN, 0.0)


def test_predict_errs_at_rate_at_most_alpha():
    """Near the boundary (p_A = 0.52) PREDICT must return the wrong class at rate <= alpha."""
    sigma, alpha = 1.0, 0.05
    x0 = sigma * norm.ppf(0.52)
    model = Linear([1.0], 0.0)
    smooth = Smooth(model, 2, sigma, seed=11)
    x = torch.tensor([x0], dtype=torch.float64)
    trials, wrong, abstain = 1500, 0, 0
    for _ in range(trials):
        out = smooth.predict(x, n=200, alpha=alpha, batch_size=200)
        wrong += out == 0
        abstain += out == ABSTAIN
    assert abstain > trials / 2  # the test is informative: most calls abstain
    assert wrong / trials <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def test_predict_returns_the_clear_winner():
    model = Linear([1.0], 0.0)
    x = torch.tensor([3.0], dtype=torch.float64)
    assert Smooth(model, 2, 0.5).predict(x, 500, 0.001, 250) == 1


def test_gaussian_radius():
    assert gaussian_radius(0.5, 1.0) == 0.0
    assert gaussian_radius(norm.cdf(2.0), 0.25) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, x: s.certify(x, 0, 10, 0.01, 10), "n0"),
        (lambda s, x: s.certify(x, 10, 0, 0.01, 10), "n"),
        (lambda s, x: s.certify(x, 10, 10, 1.0, 10), "alpha"),
        (lambda s, x: s.predict(x, 10, 0.0, 10), "alpha"),
        (lambda s, x: s.certify(x * float("nan"), 10, 10, 0.01, 10), "NaN"),
    ],
)
def test_bad_input(call, match):
    s = Smooth(Linear([1.0], 0.0), 2, 0.5)
    with pytest.raises(ValueError, match=match):
        call(s, torch.tensor([1.0], dtype=torch.float64))


def test_bad_constructor_and_cp_input():
    with pytest.raises(ValueError, match="sigma"):
        Smooth(Linear([1.0], 0.0), 2, 0.0)
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(Linear([1.0], 0.0), 1, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(3, 10, 0.0)
    with pytest.raises(ValueError, match="counts"):
        clopper_pearson_lower(11, 10, 0.1)
    with pytest.raises(ValueError, match="output|scores"):
        Smooth(lambda x: x[:, :1], 2, 0.5).certify(torch.zeros(1), 5, 5, 0.1, 5)


def test_certified_accuracy_counts_correct_answers_at_least_r(rng):
    from lib.gaussian import ABSTAIN, certified_accuracy

    classes = rng.integers(-1, 3, 60)
    radii = np.where(classes == ABSTAIN, 0.0, rng.uniform(0, 2, 60))
    y = rng.integers(0, 3, 60)
    grid = [0.0, 0.5, 1.0, 1.999, 3.0]
    expect = [sum(1 for c, r, t in zip(classes, radii, y) if c == t and r >= g) / 60 for g in grid]
    np.testing.assert_allclose(certified_accuracy(classes, radii, y, grid), expect)
    with pytest.raises(ValueError, match="one length"):
        certified_accuracy(classes, radii[:-1], y, grid)


def test_votes_per_second_is_a_positive_rate():
    from lib.gaussian import Smooth, votes_per_second

    sm = Smooth(lambda b: torch.stack([b.sum(1), -b.sum(1)], 1), 2, 0.5, seed=0)
    rate = votes_per_second(sm, torch.zeros(4), 2000, 500)
    assert np.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="samples"):
        votes_per_second(sm, torch.zeros(4), 0, 500)


def _linear_smooth(seed):
    return Smooth(
        lambda b: torch.stack([b.reshape(len(b), -1).sum(1), torch.zeros(len(b))], 1), 2, 0.5, seed=seed
    )


def test_abstention_tradeoff_and_predict_errors_equal_their_loops():
    """The helpers draw from the generator in the same order as the loops they replace."""
    from lib.gaussian import abstention_tradeoff, predict_errors

    xs = torch.linspace(-0.3, 0.3, 5).reshape(5, 1) * torch.ones(5, 4)
    rows = abstention_tradeoff(_linear_smooth(1), xs, 50, [100, 400], [0.01, 0.001], 64)
    sm, ref = _linear_smooth(1), []
    for x in xs:
        c_a = int(np.argmax(sm.sample_counts(x, 50, 64)))
        for m in (100, 400):
            k_a = int(sm.sample_counts(x, m, 64)[c_a])
            for a in (0.01, 0.001):
                p = clopper_pearson_lower(k_a, m, a)
                ref.append(
                    {"n": m, "alpha": a, "abstain": p <= 0.5, "radius": 0.5 * norm.ppf(p) if p > 0.5 else 0.0}
                )
    assert rows == ref
    wrong, abstained, total = predict_errors(_linear_smooth(2), xs, 7, 60, 0.05, 64, reference=2000)
    sm, counts = _linear_smooth(2), [0, 0, 0]
    bank = sm.noise_bank(2000, (4,))
    for x in xs:
        g_x = int(np.argmax(sm.sample_counts(x, 2000, 64, bank=bank)))
        for _ in range(7):
            out = sm.predict(x, 60, 0.05, 64)
            counts[0] += out not in (ABSTAIN, g_x)
            counts[1] += out == ABSTAIN
            counts[2] += 1
    assert (wrong, abstained, total) == tuple(counts) and total == 35
