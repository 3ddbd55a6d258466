r"""The generic randomized-smoothing guarantee and its three instances (paper, Sec. 3).

For a base function phi and a smoothing measure mu, G(mu, phi) = E_{x~mu} phi(x) and
g(mu, phi) = 1{G(mu, phi) >= 1/2} (eq. 1). A randomized smoothing guarantee (Definition 1) is a
distance d and a function f with g(rho, phi) = g(mu, phi) whenever d(mu, rho) <= f(G(mu, phi))
(eq. 2). The instances:

* Gaussian (Cohen et al.; Example 1, eq. 3): d = ||delta||_2 / sigma, f(p) = |Phi^{-1}(p)|;
* discrete (Lee et al.; Example 2, eq. 4): d = number of changed coordinates, f = the
  Neyman-Pearson count (:func:`discrete_radius`);
* generic KL (Example 3, eq. 5): d = KL(rho || mu), f(p) = -1/2 log(4 p (1 - p)).

Each f is in its own unit. To compare them on one axis, :func:`kl_guarantee_in_gaussian_units`
expresses the KL guarantee for Gaussians, where KL(rho || mu) = ||delta||^2 / (2 sigma^2).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm
from tqdm import tqdm

from . import _checks
from .labelflip import radius_from_log_tail

__all__ = [
    "gaussian_guarantee",
    "kl_guarantee",
    "kl_guarantee_in_gaussian_units",
    "discrete_radius",
    "discrete_kl_radius",
    "vote_shares",
]


def gaussian_guarantee(p: ArrayLike) -> NDArray[np.float64]:
    """f(p) = |Phi^{-1}(p)| of eq. (3): the certified ||delta||_2 / sigma."""
    return np.abs(norm.ppf(_checks.probability_array(p)))


def kl_guarantee(p: ArrayLike) -> NDArray[np.float64]:
    """f(p) = -1/2 log(4 p (1-p)) of eq. (5): the certified KL(rho || mu)."""
    pa = _checks.probability_array(p)
    with np.errstate(divide="ignore"):
        return -0.5 * np.log(4.0 * pa * (1.0 - pa))


def kl_guarantee_in_gaussian_units(p: ArrayLike) -> NDArray[np.float64]:
    """The KL guarantee (5) for two Gaussians, as ||delta||_2 / sigma = sqrt(2 f_KL(p)).

    For mu = N(x, sigma^2 I), rho = N(x + delta, sigma^2 I), KL(rho || mu) = ||delta||^2 / (2 sigma^2),
    so KL <= f(p) iff ||delta|| / sigma <= sqrt(2 f(p)) = sqrt(-log(4 p (1 - p))).
    """
    return np.sqrt(2.0 * kl_guarantee(p))


def _log_min_tail(p: ArrayLike) -> NDArray[np.float64]:
    """log(1 - max(p, 1-p)) = log(min(p, 1-p)), never below the exact value.

    float64 p: log1p(-p) above 1/2 (1 - p exact) and log(p) below (p itself is the tail: forming
    1 - p there would round 1 - 1e-20 up to 1). Wider p: both tails rounded up from p's own
    precision (:func:`lib._checks.probability_tail`)."""
    arr = np.asarray(p)
    with np.errstate(divide="ignore"):
        if arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and arr.dtype.itemsize <= 8):
            pa = _checks.probability_array(arr)
            return np.where(pa >= 0.5, np.log1p(-np.minimum(pa, 1.0)), np.log(pa))
        tail = np.minimum(_checks.probability_tail(arr), _checks.probability_array(arr, up=True))
        return np.log(tail)


def discrete_radius(p: ArrayLike, keep_prob: float, num_values: int):
    """F_{alpha,K,d}(max(p, 1-p)) of eq. (4): coordinates that may change (Lee et al.).

    Each of the coordinates keeps its value with probability ``keep_prob`` (alpha) and otherwise
    takes one of the other ``num_values - 1`` values uniformly. This is the label-flip setting
    with q = 1 - alpha and K = num_values, so the count is :func:`lib.labelflip.tight_radius`,
    computed from the tail min(p, 1-p) so that no rounding of 1 - p can over-certify.
    """
    k = _checks.num_classes(num_values, "num_values")
    q = 1.0 - _checks.real(keep_prob, "keep_prob")
    out = radius_from_log_tail(_log_min_tail(p), q, k, bound="tight")
    return int(out) if out.ndim == 0 else out


def discrete_kl_radius(p: ArrayLike, keep_prob: float, num_values: int):
    """The same discrete smoothing certified through the generic KL guarantee (eq. 5 and 25)."""
    k = _checks.num_classes(num_values, "num_values")
    q = 1.0 - _checks.real(keep_prob, "keep_prob")
    out = radius_from_log_tail(_log_min_tail(p), q, k, bound="kl")
    return int(out) if out.ndim == 0 else out


@torch.no_grad()
def vote_shares(
    base_classifier: Callable[[torch.Tensor], torch.Tensor],
    points: ArrayLike,
    num_classes: int,
    sigma: float,
    num_samples: int,
    seed: int = 0,
    batch_points: int = 256,
    progress: bool = True,
) -> NDArray[np.float64]:
    """Monte Carlo estimate of G(N(x, sigma^2 I), phi_c) for every point x and class c.

    ``points`` is (P, d); returns (P, num_classes) vote frequencies from ``num_samples`` seeded
    Gaussian draws per point. The smoothed classifier is g(x) = argmax of a row (eq. 17).
    """
    k = _checks.num_classes(num_classes)
    s = _checks.positive(sigma, "sigma")
    num_samples = _checks.count(num_samples, "num_samples")
    batch_points = _checks.count(batch_points, "batch_points")
    x = torch.as_tensor(_checks.finite_matrix(points, "points"))
    gen = torch.Generator().manual_seed(int(seed))
    out = np.zeros((x.shape[0], k))
    starts = range(0, x.shape[0], batch_points)
    for start in tqdm(starts, desc="vote shares", leave=False, **({} if progress else {"disable": True})):
        xb = x[start : start + batch_points]
        noise = torch.randn((num_samples, *xb.shape), generator=gen, dtype=xb.dtype)
        scores = base_classifier((xb[None] + s * noise).reshape(-1, xb.shape[1]))
        if torch.isnan(scores).any():  # argmax would read NaN as the largest score
            raise ValueError("base_classifier returned NaN scores: the vote is undefined")
        labels = scores.argmax(dim=1)
        labels = labels.reshape(num_samples, xb.shape[0])
        onehot = torch.nn.functional.one_hot(labels, k).sum(dim=0)
        out[start : start + xb.shape[0]] = onehot.numpy() / num_samples
    return out
