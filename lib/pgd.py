r"""l2 attacks beside the Gaussian certificate: an upper bound on robust accuracy.

A certificate is a lower bound on the accuracy an adversary can leave; an attack that succeeds
is an upper bound. Two attacks, both projected gradient ascent in l2 (Madry et al., 2018) with
steps of length ``2.5 eps / steps`` along the normalised gradient, projected back onto the
ball ||delta||_2 <= eps and onto the pixel box [0, 1]:

* on the undefended base classifier: ascend the cross-entropy of f(x + delta);
* on the smoothed classifier (SmoothAdv, Salman et al., 2019): ascend
  -log( (1/m) sum_j softmax(f(x + delta + sigma eps_j))_y ), the cross-entropy of the soft
  smoothed classifier estimated with m fresh noise draws per step; the perturbed point is then
  judged by PREDICT, as the smoothed classifier itself would answer.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from . import _checks
from .gaussian import ABSTAIN, NoiseBank, Smooth

__all__ = [
    "pgd_l2",
    "attacked_accuracy_curve",
    "soundness_violations",
    "predict_many",
    "attack_base",
    "attack_smoothed_predict",
]


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    delta = delta * (eps / norms).clamp(max=1.0).view(-1, *[1] * (delta.ndim - 1))
    return (x + delta).clamp(0.0, 1.0) - x


def pgd_l2(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 20,
    sigma: float = 0.0,
    samples: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Adversarial inputs x + delta with ||delta||_2 <= eps (and in [0, 1]) for a batch x (B, ...).

    ``sigma`` = 0 attacks the base classifier; ``sigma`` > 0 attacks the soft smoothed classifier
    with ``samples`` noise draws per step (module docstring). Seeded."""
    eps = _checks.positive(eps, "eps")
    steps = _checks.count(steps, "steps")
    samples = _checks.count(samples, "samples")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0; got {sigma!r}")
    gen = torch.Generator().manual_seed(seed)
    step = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        if sigma > 0:
            noisy = (x + delta).repeat(samples, *[1] * (x.ndim - 1))
            noisy = noisy + sigma * torch.randn(noisy.shape, generator=gen)
            probs = model(noisy).softmax(1).view(samples, len(x), -1).mean(0)
            loss = -probs.gather(1, y.view(-1, 1)).clamp_min(1e-12).log().sum()
        else:
            loss = torch.nn.functional.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
            delta = _project(delta + step * g, x, eps)
    return (x + delta).detach()


def attacked_accuracy_curve(still_correct: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Attacked accuracy at each radius of an increasing grid, from ``still_correct`` (points x
    radii): a point counts as broken at radius r when the attack succeeded at any radius <= r
    (a perturbation within a smaller ball is within every larger one)."""
    ok = np.asarray(still_correct, dtype=bool)
    if ok.ndim != 2:
        raise ValueError(f"still_correct must be (points, radii); got shape {ok.shape}")
    return np.logical_and.accumulate(ok, axis=1).mean(axis=0)


def soundness_violations(
    classes: NDArray, radii: NDArray, attacked_classes: NDArray, eps_grid: NDArray
) -> NDArray[np.bool_]:
    """(points, radii) mask of contradictions of the certificate: the attacked point lies strictly
    inside the certified ball (eps < radius) and PREDICT there returns a class that is neither
    the certified one nor ABSTAIN."""
    c = np.asarray(classes).reshape(-1, 1)
    r = np.asarray(radii).reshape(-1, 1)
    a = np.asarray(attacked_classes)
    e = np.asarray(eps_grid).reshape(1, -1)
    return (c != ABSTAIN) & (e < r) & (a != ABSTAIN) & (a != c)


def predict_many(
    smooth: Smooth, xs: torch.Tensor, n: int, alpha: float, batch_size: int, bank: NoiseBank | None = None
) -> NDArray[np.int64]:
    """PREDICT at every input of ``xs`` (first axis), over ``bank`` when given."""
    return np.array([smooth.predict(x, n, alpha, batch_size, bank=bank) for x in xs], dtype=np.int64)


def attack_base(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid: ArrayLike, steps: int, seed: int = 0
) -> NDArray[np.float64]:
    """The accuracy that :func:`pgd_l2` on the base classifier leaves at 0 and at each eps of
    ``eps_grid`` (increasing), by :func:`attacked_accuracy_curve`."""
    truth = y.numpy()
    with torch.no_grad():
        ok = [model(x).argmax(1).numpy() == truth]
    for e in np.asarray(eps_grid, dtype=float):
        adv = pgd_l2(model, x, y, e, steps=steps, seed=seed)
        with torch.no_grad():
            ok.append(model(adv).argmax(1).numpy() == truth)
    return attacked_accuracy_curve(np.array(ok).T)


def attack_smoothed_predict(
    smooth: Smooth,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_grid: ArrayLike,
    *,
    steps: int,
    samples: int,
    predict_n: int,
    batch_size: int,
    alpha: float = 0.001,
    seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """SmoothAdv (:func:`pgd_l2` with ``sigma = smooth.sigma``) on ``smooth``'s base classifier at
    each eps of ``eps_grid``, each attacked point judged by PREDICT (``predict_n`` draws, level
    ``alpha``) from ``smooth``'s generator: PREDICT at the clean points first, then at each eps.
    Returns (curve, preds): the attacked accuracy at 0 and each eps, counting a point as broken
    once PREDICT returned a wrong class (an abstention is not a wrong answer of g), and the
    PREDICT answers, (points, 1 + len(eps_grid))."""
    eps = np.asarray(eps_grid, dtype=float)
    preds = [predict_many(smooth, x, predict_n, alpha, batch_size)]
    for e in eps:
        adv = pgd_l2(
            smooth.base_classifier, x, y, e, steps=steps, sigma=smooth.sigma, samples=samples, seed=seed
        )
        preds.append(predict_many(smooth, adv, predict_n, alpha, batch_size))
    out = np.array(preds).T
    truth = y.numpy()[:, None]
    return attacked_accuracy_curve((out == truth) | (out == ABSTAIN)), out
