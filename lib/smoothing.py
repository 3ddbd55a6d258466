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

from typing import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm
from tqdm import tqdm

from . import _checks
from .labelflip import kl_radius, tight_radius

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


def discrete_radius(p: ArrayLike, keep_prob: float, num_values: int):
    """F_{alpha,K,d}(max(p, 1-p)) of eq. (4): coordinates that may change (Lee et al.).

    Each of the coordinates keeps its value with probability ``keep_prob`` (alpha) and otherwise
    takes one of the other ``num_values - 1`` values uniformly. This is the label-flip setting
    with q = 1 - alpha and K = num_values, so the count is :func:`lib.labelflip.tight_radius`.
    """
    pa = _checks.probability_array(p)
    return tight_radius(np.maximum(pa, 1.0 - pa), 1.0 - float(keep_prob), num_values)


def discrete_kl_radius(p: ArrayLike, keep_prob: float, num_values: int):
    """The same discrete smoothing certified through the generic KL guarantee (eq. 5 and 25)."""
    pa = _checks.probability_array(p)
    return kl_radius(np.maximum(pa, 1.0 - pa), 1.0 - float(keep_prob), num_values)


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
    _checks.count(num_samples, "num_samples")
    x = torch.as_tensor(_checks.finite_matrix(points, "points"))
    gen = torch.Generator().manual_seed(int(seed))
    out = np.zeros((x.shape[0], k))
    starts = range(0, x.shape[0], batch_points)
    for start in tqdm(starts, desc="vote shares", leave=False, **({} if progress else {"disable": True})):
        xb = x[start : start + batch_points]
        noise = torch.randn((num_samples, *xb.shape), generator=gen, dtype=xb.dtype)
        labels = base_classifier((xb[None] + s * noise).reshape(-1, xb.shape[1])).argmax(dim=1)
        labels = labels.reshape(num_samples, xb.shape[0])
        onehot = torch.nn.functional.one_hot(labels, k).sum(dim=0)
        out[start : start + xb.shape[0]] = onehot.numpy() / num_samples
    return out
