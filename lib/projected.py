r"""Projected base classifiers: a fast base classifier whose Gaussian noise has an exact, cheaper law.

CERTIFY (Cohen et al., 2019) evaluates the base classifier f on n = 100,000 noisy copies
x + eps, eps ~ N(0, sigma^2 I_d), per input. For a network whose first map is linear the noise
can be pushed through that map exactly. Here

    f(x) = W_2 relu(V Q (x - m) + b_1) + b_2,

with Q (k x d) a basis with orthonormal rows (Q Q^T = I_k), m a centre, V (h x k) the first
hidden layer. Then

    f(x + eps) = W_2 relu(a_0(x) + V xi) + b_2,   a_0(x) = V Q (x - m) + b_1,   xi = Q eps,

and xi ~ N(0, sigma^2 I_k) exactly, because Q eps is Gaussian with covariance sigma^2 Q Q^T.
So a noisy vote costs k Gaussian draws and h k + h K multiply-adds instead of d draws and a
full forward pass; the counts have exactly the law of Cohen's procedure for this f. Projecting
before smoothing is the idea of Pfrommer et al. (2023); here it is used only as a way to sample
the same smoothed classifier faster, the certificate is Cohen's l2 certificate in input space.

The basis is the top-k principal directions of the training images (label-free), the usual
choice for MNIST; :func:`train_projected` trains V, W_2 under Gaussian noise drawn directly in
the k dimensions (Cohen et al.'s training, which is the same law as noise added to the image).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from tqdm import tqdm

from . import _checks

__all__ = ["ProjectedMLP", "pca_basis", "train_projected", "trained_projected"]


def pca_basis(images: ArrayLike, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre m (d,) and the top-k principal directions Q (k, d), orthonormal rows, of the rows
    of ``images`` (float, flattened to d columns). Reads no labels."""
    k = _checks.count(k, "k")
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(len(images), -1)
    if k > min(x.shape):
        raise ValueError(f"k must be at most min(number of images, dimension) = {min(x.shape)}; got {k}")
    mean = x.mean(0)
    # float64 SVD: the basis must be orthonormal to float32 precision for the exact noise law
    _, _, vh = torch.linalg.svd((x - mean).double(), full_matrices=False)
    return mean, vh[:k].float().contiguous()


class ProjectedMLP(torch.nn.Module):
    """f(x) = W_2 relu(V Q (x - m) + b_1) + b_2 on flattened inputs (module docstring).

    ``basis`` Q (k, d) must have orthonormal rows (checked to 1e-4): that is what makes
    Q eps ~ N(0, sigma^2 I_k) for eps ~ N(0, sigma^2 I_d).
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, hidden: int, num_classes: int = 10):
        super().__init__()
        basis = torch.as_tensor(basis, dtype=torch.float32)
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if basis.ndim != 2 or mean.shape != (basis.shape[1],):
            raise ValueError(
                f"basis must be (k, d) and mean (d,); got {tuple(basis.shape)}, {tuple(mean.shape)}"
            )
        gram = basis.double() @ basis.double().T
        if not torch.allclose(gram, torch.eye(len(basis), dtype=torch.float64), atol=1e-4):
            raise ValueError("basis must have orthonormal rows (Q Q^T = I)")
        self.register_buffer("mean", mean)
        self.register_buffer("basis", basis)
        self.first = torch.nn.Linear(basis.shape[0], _checks.count(hidden, "hidden"))
        self.out = torch.nn.Linear(hidden, _checks.num_classes(num_classes))

    @property
    def noise_dim(self) -> int:
        """k: the dimension in which the noise is drawn."""
        return self.basis.shape[0]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Q (x - m) for a batch of inputs (any trailing shape with d entries)."""
        return (x.reshape(len(x), -1) - self.mean) @ self.basis.T

    def scores_from_projection(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.first(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from_projection(self.project(x))

    # the three maps CERTIFY's fast path uses (lib.gaussian.Smooth)
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """a_0(x) = V Q (x - m) + b_1 for one input x: shape (h,)."""
        return self.first(self.project(x.unsqueeze(0)))[0]

    def noise_matrix(self) -> torch.Tensor:
        """V (h, k): the first hidden layer's pre-activation moves by V xi for noise xi = Q eps."""
        return self.first.weight

    def scores_from_pre_activation(self, a: torch.Tensor) -> torch.Tensor:
        """W_2 relu(a) + b_2 for pre-activations a (B, h); ``a`` is overwritten by relu(a)."""
        return self.out(a.relu_())


def _consistency_penalty(logits: torch.Tensor, copies: int, weight: float, entropy: float) -> torch.Tensor:
    """weight * mean_j KL(p_bar || p_j) + entropy * H(p_bar) over ``copies`` blocks of rows."""
    log_p = logits.log_softmax(1).reshape(copies, -1, logits.shape[1])
    p_bar = log_p.exp().mean(0)
    log_bar = p_bar.clamp_min(1e-12).log()
    kl = (p_bar * (log_bar - log_p)).sum(2).mean()
    return weight * kl - entropy * (p_bar * log_bar).sum(1).mean()


def train_projected(
    x_train: NDArray,
    y_train: NDArray,
    sigma: float,
    mean: torch.Tensor,
    basis: torch.Tensor,
    hidden: int = 1024,
    num_classes: int = 10,
    epochs: int = 10,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    consistency: float = 0.0,
    copies: int = 1,
    entropy: float = 0.5,
) -> ProjectedMLP:
    """Train :class:`ProjectedMLP` under N(0, sigma^2) noise (Cohen et al.'s training; sigma = 0
    trains on clean inputs). The projection Q (x - m) is computed once; the noise is drawn
    directly in the k projected dimensions, which has the law of Q eps for image noise eps.
    AdamW with a one-cycle learning rate; seeded: same inputs, same weights on the same device.

    ``consistency`` > 0 adds the consistency regularisation of Jeong & Shin (2020) over
    ``copies`` noisy copies of each input: cross-entropy on every copy, plus ``consistency``
    times the mean KL(p_bar || p_j) of each copy's softmax p_j from their mean p_bar, plus
    ``entropy`` times the entropy of p_bar. It trains f to vote the same way under noise, which
    raises p_A and so the certified radius; the smoothed classifier is still certified by
    Cohen et al.'s procedure, whatever the training."""
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0; got {sigma!r}")
    epochs = _checks.count(epochs, "epochs")
    copies = _checks.count(copies, "copies")
    if not np.isfinite(consistency) or consistency < 0:
        raise ValueError(f"consistency must be a finite number >= 0; got {consistency!r}")
    batch_size = _checks.count(batch_size, "batch_size")
    x = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    if y.shape != (len(x),):
        raise ValueError(f"y_train must have shape ({len(x)},); got {tuple(y.shape)}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ProjectedMLP(mean, basis, hidden, num_classes)
    with torch.no_grad():
        z = model.project(x)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(z) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    bar = tqdm(
        total=steps, desc=f"train sigma={sigma}", leave=False, **({} if progress else {"disable": True})
    )
    for _ in range(epochs):
        perm = torch.randperm(len(z), generator=gen)
        for start in range(0, len(z), batch_size):
            idx = perm[start : start + batch_size]
            zb = z[idx].repeat(copies, 1) + sigma * torch.randn(copies * len(idx), z.shape[1], generator=gen)
            logits = model.scores_from_projection(zb)
            loss = torch.nn.functional.cross_entropy(logits, y[idx].repeat(copies))
            if consistency > 0:
                loss = loss + _consistency_penalty(logits, copies, consistency, entropy)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            bar.update()
    bar.close()
    model.eval()
    return model


def trained_projected(
    x_train: ArrayLike,
    y_train: ArrayLike,
    sigma: float,
    mean: torch.Tensor,
    basis: torch.Tensor,
    hidden: int,
    *,
    epochs: int,
    seed: int,
    consistency: float = 0.0,
    copies: int = 2,
    name: str = "mnist-projected",
):
    """:func:`train_projected` under noise ``sigma`` (``copies`` noisy copies per image when
    ``consistency`` > 0, else one), or its weights from the cache of :func:`lib.training.cached_model`
    when the data, the hyper-parameters and the training code are unchanged.
    Returns (model, loaded_from_cache, seconds)."""
    from .training import cache_key, cached_model

    key = cache_key(
        x_train,
        y_train,
        sigma=sigma,
        epochs=epochs,
        seed=seed,
        k=int(basis.shape[0]),
        hidden=hidden,
        consistency=consistency,
        copies=copies,
        model="ProjectedMLP",
    )
    return cached_model(
        f"{name}-{sigma}",
        lambda: ProjectedMLP(mean, basis, hidden),
        lambda: train_projected(
            x_train,
            y_train,
            sigma,
            mean,
            basis,
            hidden,
            epochs=epochs,
            seed=seed,
            consistency=consistency,
            copies=copies if consistency > 0 else 1,
        ),
        key,
    )
