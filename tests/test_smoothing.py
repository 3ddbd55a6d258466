"""Chapter 1's guarantees, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from lib import smoothing


def test_gaussian_guarantee_is_tight_for_a_half_space():
    """For phi = 1{x_1 > -a}, G = Phi(a/sigma); moving by exactly f(p) sigma puts G at 1/2."""
    for p in [0.6, 0.9, 0.999]:
        r = smoothing.gaussian_guarantee(p)
        sigma = 0.7
        a = sigma * norm.ppf(p)  # distance of x to the boundary
        assert r * sigma == pytest.approx(a)
        assert norm.cdf((a - r * sigma) / sigma) == pytest.approx(0.5)


def test_kl_guarantee_is_weaker_than_gaussian_and_matches_binary_kl():
    p = np.linspace(0.51, 0.9999, 200)
    assert np.all(smoothing.kl_guarantee_in_gaussian_units(p) <= smoothing.gaussian_guarantee(p) + 1e-12)
    # f(p) is the binary KL kl(1/2 || p): the data-processing argument behind eq. (5)
    kl_half = 0.5 * np.log(0.5 / p) + 0.5 * np.log(0.5 / (1 - p))
    np.testing.assert_allclose(smoothing.kl_guarantee(p), kl_half, rtol=1e-12)


def test_kl_guarantee_by_monte_carlo_for_gaussians():
    """Move the Gaussian by the KL-certified distance towards the worst (half-space) set A with
    mu(A) = p: a Monte Carlo estimate of rho(A) stays above 1/2 (and the Gaussian bound is the
    distance at which it reaches exactly 1/2)."""
    rng = np.random.default_rng(0)
    sigma = 1.3
    for p in [0.7, 0.95, 0.999]:
        a = sigma * norm.ppf(p)  # A = {x_1 < a} has mu(A) = p under mu = N(0, sigma^2)
        shift = smoothing.kl_guarantee_in_gaussian_units(p) * sigma
        x = rng.normal(size=400_000) * sigma + shift  # rho = N(shift, sigma^2)
        assert np.mean(x < a) > 0.5
        tight = smoothing.gaussian_guarantee(p) * sigma
        assert np.mean(rng.normal(size=400_000) * sigma + tight < a) == pytest.approx(0.5, abs=0.003)


def test_discrete_radius_symmetric_and_matches_tight():
    from lib.labelflip import tight_radius

    assert smoothing.discrete_radius(0.9, 0.8, 3) == smoothing.discrete_radius(0.1, 0.8, 3)
    assert smoothing.discrete_radius(0.9, 0.8, 3) == tight_radius(0.9, 0.2, 3)
    assert smoothing.discrete_kl_radius(0.99, 0.8, 3) <= smoothing.discrete_radius(0.99, 0.8, 3)


def test_vote_shares_for_a_half_space_match_closed_form():
    def f(x):
        return torch.stack([-x[:, 0], x[:, 0]], dim=1)

    pts = np.array([[0.0, 0.0], [0.5, 1.0], [-1.0, 3.0]])
    shares = smoothing.vote_shares(f, pts, 2, sigma=0.5, num_samples=40_000, seed=1, progress=False)
    np.testing.assert_allclose(shares[:, 1], norm.cdf(pts[:, 0] / 0.5), atol=0.01)
    again = smoothing.vote_shares(f, pts, 2, sigma=0.5, num_samples=40_000, seed=1, progress=False)
    np.testing.assert_array_equal(shares, again)


def test_bad_input():
    with pytest.raises(ValueError, match="p"):
        smoothing.gaussian_guarantee(1.5)
    with pytest.raises(ValueError, match="sigma"):
        smoothing.vote_shares(lambda x: x, np.zeros((1, 2)), 2, sigma=-1, num_samples=5)
    with pytest.raises(ValueError, match="points"):
        smoothing.vote_shares(lambda x: x, np.full((1, 2), np.nan), 2, sigma=1, num_samples=5)
