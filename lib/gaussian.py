r"""Gaussian randomized smoothing with sampling: CERTIFY and PREDICT (Cohen et al., 2019).

The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I), is robust in
l2: if p_A = P(f(x+eps) = c_A) >= p_lower > 1/2 then g(x + delta) = c_A for every
||delta||_2 < sigma * Phi^{-1}(p_lower) (the paper's Example 1, eq. 3, binary bound p_B = 1 - p_A).
p_A is estimated by Monte Carlo with a one-sided Clopper-Pearson bound.

Follows the structure of locuslab/smoothing's ``core.py`` (one class, the paper's two procedures),
but device-agnostic, vectorised class counting, and SciPy's maintained ``binomtest``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from . import _checks

__all__ = ["ABSTAIN", "clopper_pearson_lower", "gaussian_radius", "Smooth"]

ABSTAIN = -1


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: float) -> NDArray[np.float64] | float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    P(p >= bound) >= 1 - alpha for k ~ Bin(n, p): the alpha-quantile of Beta(k, n - k + 1),
    and 0 when k = 0. Accepts arrays (broadcast); returns a float for scalar input.
    """
    lv = _checks.level(alpha)
    ka = np.asarray(k)
    na = np.asarray(n)
    if np.any(na < 1) or np.any(ka < 0) or np.any(ka > na) or np.any(ka != np.floor(ka)) or np.any(na != np.floor(na)):
        raise ValueError("clopper_pearson_lower needs integer counts 0 <= k <= n and n >= 1")
    kf = ka.astype(np.float64)
    nf = na.astype(np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(kf > 0, beta_dist.ppf(lv, np.maximum(kf, 1.0), nf - kf + 1.0), 0.0)
    return float(out) if out.ndim == 0 else out


def gaussian_radius(p: ArrayLike, sigma: float) -> NDArray[np.float64] | float:
    """Certified l2 radius sigma * Phi^{-1}(p) for p > 1/2 (Example 1, eq. 3); 0 for p <= 1/2."""
    pa = _checks.probability_array(p)
    s = _checks.positive(sigma, "sigma")
    out = np.where(pa > 0.5, s * norm.ppf(pa), 0.0)
    return float(out) if out.ndim == 0 else out


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


class Smooth:
    """The Gaussian-smoothed classifier g of a base classifier f.

    Parameters
    ----------
    base_classifier: maps a batch (B, *input_shape) to class scores (B, num_classes); a
        ``torch.nn.Module`` (its parameters' device is used) or any callable on CPU tensors.
    num_classes: number of classes K >= 2.
    sigma: noise level, > 0.
    seed: seed of the ``torch.Generator`` used when no generator is passed to a call.
    """

    def __init__(self, base_classifier: Callable, num_classes: int, sigma: float, seed: int = 0):
        self.base_classifier = base_classifier
        self.num_classes = _checks.num_classes(num_classes)
        self.sigma = _checks.positive(sigma, "sigma")
        self.device = _model_device(base_classifier)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """CERTIFY: with probability >= 1 - alpha, the returned class is g(x) and g is constant on
        the l2 ball of the returned radius around x. Returns ``(ABSTAIN, 0.0)`` when the
        Clopper-Pearson bound on p_A is not above 1/2.

        ``x``: one input without batch dimension. ``n0`` samples select the class, ``n`` fresh
        samples estimate p_A.
        """
        n0 = _checks.count(n0, "n0")
        n = _checks.count(n, "n")
        lv = _checks.level(alpha)
        batch_size = _checks.count(batch_size, "batch_size")
        counts0 = self.sample_counts(x, n0, batch_size, generator)
        c_a = int(np.argmax(counts0))
        counts = self.sample_counts(x, n, batch_size, generator)
        p_a = clopper_pearson_lower(int(counts[c_a]), n, lv)
        if p_a <= 0.5:
            return ABSTAIN, 0.0
        return c_a, float(self.sigma * norm.ppf(p_a))

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """PREDICT: returns g(x) or ABSTAIN; the probability of returning a class other than g(x)
        is at most alpha (two-sided binomial test of the top two counts, ``scipy.stats.binomtest``).
        """
        n = _checks.count(n, "n")
        lv = _checks.level(alpha)
        batch_size = _checks.count(batch_size, "batch_size")
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = np.argsort(counts)[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, p=0.5).pvalue > lv:
            return ABSTAIN
        return int(top2[0])

    @torch.no_grad()
    def sample_counts(
        self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> NDArray[np.int64]:
        """Class counts of f(x + eps) over ``num`` draws of eps ~ N(0, sigma^2 I), ``batch_size``
        at a time (never all ``num`` noisy copies at once). Shape (num_classes,)."""
        gen = self.generator if generator is None else generator
        x = torch.as_tensor(x).to(self.device)
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype())
        if not torch.all(torch.isfinite(x)):
            raise ValueError("x contains NaN or inf")
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        remaining = num
        while remaining > 0:
            b = min(batch_size, remaining)
            remaining -= b
            batch = x.unsqueeze(0).expand(b, *x.shape)
            noise = torch.randn(batch.shape, generator=gen, device=self.device, dtype=batch.dtype)
            scores = self.base_classifier(batch + noise * self.sigma)
            if scores.ndim != 2 or scores.shape[1] != self.num_classes:
                raise ValueError(
                    f"base_classifier must return (batch, {self.num_classes}) scores; got {tuple(scores.shape)}"
                )
            if torch.isnan(scores).any():  # argmax would read NaN as the largest score
                raise ValueError("base_classifier returned NaN scores: the vote is undefined")
            counts += torch.bincount(scores.argmax(dim=1), minlength=self.num_classes)
        return counts.cpu().numpy()
