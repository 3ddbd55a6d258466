r"""The least-squares trick: training as a linear function of the labels (paper, Sec. 4.1).

Ridge regression on fixed features X (n x k) predicts h(x) beta_hat with
beta_hat = (X^T X + lam I)^-1 X^T y, which equals alpha^T y for the kernel weights

    alpha = X (X^T X + lam I)^-1 h(x)^T            (eq. 11 for lam = 0, eq. 12 for lam > 0).

So every noisy relabelling y' is "trained and predicted" by one inner product alpha^T y'.

The regulariser of the paper, lam = (1+q) sigma_hat^2 k / (2n) * kappa(X^T X) (Sec. 4.1,
after Suggala et al. 2018), estimates sigma_hat^2 from the residuals of the training LABELS.
Those labels are what the adversary flips, so with that rule alpha itself depends on the
poisoned labels and the smoothed function is no longer a fixed function of the noisy labels:
the certificate does not hold as stated. :func:`ridge_lambda_label_free` reads only X and q
and is the default of :func:`lib.labelflip.certify`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_factor, cho_solve, lstsq

from . import _checks

__all__ = [
    "kernel_weights",
    "ridge_fit_predict",
    "ridge_lambda",
    "ridge_lambda_label_free",
    "condition_number",
    "add_intercept",
]


def add_intercept(X: ArrayLike) -> NDArray[np.float64]:
    """Append a column of ones (the intercept is then one more, regularised, feature)."""
    Xa = _checks.finite_matrix(X, "X")
    return np.hstack([Xa, np.ones((Xa.shape[0], 1))])


def _gram_factor(X: NDArray, lam: float):
    k = X.shape[1]
    G = X.T @ X
    G[np.diag_indices(k)] += lam
    try:
        return cho_factor(G, lower=False, check_finite=False)
    except np.linalg.LinAlgError as e:
        raise ValueError(
            "X^T X + lam I is singular (k >= n or collinear features with lam = 0): use lam > 0"
        ) from e


def kernel_weights(X_train: ArrayLike, X_test: ArrayLike, lam: float) -> NDArray[np.float64]:
    r"""Columns alpha_j = X (X^T X + lam I)^{-1} h(x_j)^T, eq. (12), shape (n_train, n_test).

    One Cholesky factorisation of the k x k matrix X^T X + lam I serves every test point; no
    explicit inverse is formed. ``alpha[:, j] @ y`` is the ridge prediction at test point j for
    labels y (any y, which is what makes label smoothing cheap).
    """
    Xtr = _checks.finite_matrix(X_train, "X_train")
    Xte = _checks.finite_matrix(X_test, "X_test")
    if Xte.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_test has {Xte.shape[1]} features but X_train has {Xtr.shape[1]}")
    lam_f = _checks.real(lam, "lam")
    if not np.isfinite(lam_f) or lam_f < 0:
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
    factor = _gram_factor(Xtr, lam_f)
    return Xtr @ cho_solve(factor, Xte.T, check_finite=False)


def ridge_fit_predict(X_train: ArrayLike, y: ArrayLike, X_test: ArrayLike, lam: float) -> NDArray[np.float64]:
    """Refit ridge on labels y and predict: h(x) (X^T X + lam I)^-1 X^T y (the slow way).

    Used to check :func:`kernel_weights` and to time refitting against one inner product.
    """
    Xtr = np.asarray(X_train, dtype=np.float64)
    beta = cho_solve(_gram_factor(Xtr, float(lam)), Xtr.T @ np.asarray(y, dtype=np.float64))
    return np.asarray(X_test, dtype=np.float64) @ beta


def condition_number(X: ArrayLike) -> float:
    """kappa(X^T X) = sigma_max / sigma_min of X^T X, i.e. the squared condition number of X.

    Raises ValueError when X is numerically rank deficient (kappa infinite or beyond 1/eps):
    the lambda rules below would then return an infinite or meaningless lambda. That includes
    k > n: X^T X is k x k of rank at most n < k, although X itself has only n singular values.
    """
    Xa = _checks.finite_matrix(X, "X")
    n, k = Xa.shape
    if n == 0 or k == 0 or k > n:
        raise ValueError(
            f"X is rank deficient (k = {k} features > n = {n} points, or empty): kappa(X^T X) is "
            "infinite and the lambda rule undefined; remove the dependent columns or pass lam"
        )
    s = np.linalg.svd(Xa, compute_uv=False)
    if s[-1] <= s[0] * np.finfo(np.float64).eps * max(np.shape(X)):
        raise ValueError(
            "X is rank deficient (e.g. a repeated or constant column, or k > n): kappa(X^T X) is "
            "infinite and the lambda rule undefined; remove the dependent columns or pass lam"
        )
    return float((s[0] / s[-1]) ** 2)


def ridge_lambda(X: ArrayLike, y: ArrayLike, q: float, *, num_classes: int = 2) -> float:
    r"""The paper's rule, lam = (1+q) sigma_hat^2 k / (2n) * kappa(X^T X) (Sec. 4.1, Alg. 1).

    sigma_hat^2 = ||y - X beta_OLS||^2 / (n - k) (Dicker, 2014). WARNING: sigma_hat^2 reads the
    training labels, which the adversary controls; alpha then depends on the poisoned labels,
    and the label-flip certificate (which assumes one fixed function of the noisy labels) is
    not sound as stated. Kept to reproduce the paper; certify with
    :func:`ridge_lambda_label_free`. ``y`` must hold labels in {0, ..., num_classes - 1}.
    """
    Xa = _checks.finite_matrix(X, "X")
    n, k = Xa.shape
    if n <= k:
        raise ValueError(f"ridge_lambda needs n > k (got n={n}, k={k}) for sigma_hat^2")
    yv = _checks.labels(y, n, _checks.num_classes(num_classes)).astype(np.float64)
    qf = _checks.real(q, "q")
    if not (0.0 <= qf < 1.0):
        raise ValueError(f"q must lie in [0, 1); got {q!r}")
    beta, *_ = lstsq(Xa, yv)
    sigma2 = float(np.sum((yv - Xa @ beta) ** 2) / (n - k))
    return (1.0 + qf) * sigma2 * k / (2.0 * n) * condition_number(Xa)


def ridge_lambda_label_free(X: ArrayLike, q: float, sigma2: float = 0.25) -> float:
    r"""Label-free version of the paper's rule: sigma_hat^2 replaced by a constant (default 1/4).

    lam = (1+q) * sigma2 * k / (2n) * kappa(X^T X). 1/4 is the largest variance of a {0, 1}
    label, so it is the natural label-free stand-in for sigma_hat^2. What matters for soundness
    is only that lam reads X and q, never y: then alpha is a fixed function of the features and
    the smoothed classifier is exactly what the certificate analyses.
    """
    Xa = _checks.finite_matrix(X, "X")
    n, k = Xa.shape
    qf = _checks.real(q, "q")
    if not (0.0 <= qf < 1.0):
        raise ValueError(f"q must lie in [0, 1); got {q!r}")
    s2 = _checks.positive(sigma2, "sigma2")
    kappa = condition_number(Xa)  # raises for an empty or rank-deficient X (n = 0 included)
    return (1.0 + qf) * s2 * k / (2.0 * n) * kappa
