"""The least-squares trick (eq. 11-12) and the lambda rules."""

from __future__ import annotations

import numpy as np
import pytest

from lib.least_squares import (
    condition_number,
    kernel_weights,
    ridge_fit_predict,
    ridge_lambda,
    ridge_lambda_label_free,
)


@pytest.mark.parametrize("lam", [0.0, 1e-3, 2.5])
def test_kernel_weights_equal_refitting_ridge(lam, rng):
    X = rng.normal(size=(80, 7))
    Xt = rng.normal(size=(9, 7))
    alpha = kernel_weights(X, Xt, lam)
    assert alpha.shape == (80, 9)
    for _ in range(5):
        y = rng.integers(0, 2, 80)
        np.testing.assert_allclose(alpha.T @ y, ridge_fit_predict(X, y, Xt, lam), rtol=1e-9, atol=1e-10)
    # and against an independent solver: sklearn-free normal equations via lstsq on the augmented system
    y = rng.normal(size=80)
    aug = np.vstack([X, np.sqrt(lam) * np.eye(7)])
    beta = np.linalg.lstsq(aug, np.concatenate([y, np.zeros(7)]), rcond=None)[0]
    np.testing.assert_allclose(alpha.T @ y, Xt @ beta, rtol=1e-8, atol=1e-9)


def test_condition_number_and_paper_rule(rng):
    X = rng.normal(size=(100, 4)) * [1, 2, 3, 10]
    s = np.linalg.svd(X.T @ X, compute_uv=False)
    assert condition_number(X) == pytest.approx(s[0] / s[-1], rel=1e-8)
    y = rng.integers(0, 2, 100).astype(float)
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    sigma2 = np.sum((y - X @ beta) ** 2) / (100 - 4)
    q = 0.3
    expected = (1 + q) * sigma2 * 4 / (2 * 100) * s[0] / s[-1]
    assert ridge_lambda(X, y, q) == pytest.approx(expected, rel=1e-8)
    assert ridge_lambda_label_free(X, q) == pytest.approx(expected * 0.25 / sigma2, rel=1e-8)


def test_label_free_rule_ignores_labels_and_paper_rule_does_not(rng):
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    y2 = y.copy()
    y2[:30] = 1 - y2[:30]
    assert ridge_lambda(X, y, 0.1) != ridge_lambda(X, y2, 0.1)
    assert ridge_lambda_label_free(X, 0.1) == ridge_lambda_label_free(X, 0.1)


def test_bad_input(rng):
    X = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="features"):
        kernel_weights(X, rng.normal(size=(2, 4)), 1.0)
    with pytest.raises(ValueError, match="lam"):
        kernel_weights(X, X, -1.0)
    with pytest.raises(ValueError, match="X_train"):
        kernel_weights(X[0], X, 1.0)
    with pytest.raises(ValueError, match="singular"):
        kernel_weights(np.ones((10, 3)), X, 0.0)
    with pytest.raises(ValueError, match="rank deficient"):
        ridge_lambda_label_free(np.hstack([X, X[:, :1]]), 0.1)  # a repeated column
    with pytest.raises(ValueError, match="n > k"):
        ridge_lambda(X[:3], np.zeros(3), 0.1)
