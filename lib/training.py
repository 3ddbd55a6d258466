"""Base classifiers for the book's experiments: a small CNN, Gaussian-noise training, a weight cache.

Training is seeded, and trained weights are cached on disk under a key that hashes everything
they depend on: the training data (bytes), the hyper-parameters, and the source code of this
module. Rerunning a chapter with the same inputs loads the weights instead of training again;
changing any input trains anew.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from . import _checks
from .data import data_dir

__all__ = ["SmallCNN", "train_gaussian_noise", "cached_model", "cache_key", "accuracy", "default_device"]


def default_device() -> torch.device:
    """CUDA when present, else CPU (the book runs on either)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SmallCNN(torch.nn.Module):
    """Two conv layers and two dense layers for 28 x 28 grey images in [0, 1].

    ``embed_dim`` is the width of the penultimate layer; :meth:`embed` returns it (used as the
    feature map h in the label-flip experiments).
    """

    def __init__(self, num_classes: int = 10, embed_dim: int = 128):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 7 * 7, embed_dim),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.reshape(-1, 1, 28, 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _as_float_images(x: NDArray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0


def train_gaussian_noise(
    x_train: NDArray[np.uint8],
    y_train: NDArray[np.int64],
    sigma: float,
    num_classes: int = 10,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    embed_dim: int = 128,
    channels_last: bool = False,
) -> SmallCNN:
    """Train :class:`SmallCNN` on images in [0, 1] with N(0, sigma^2 I) noise added to every
    batch (Cohen et al.'s training; sigma = 0 trains on clean images). Seeded: the same inputs
    give the same weights on the same device. ``channels_last`` stores the weights and every
    batch in the NHWC layout, where the CPU's convolution and pooling kernels are faster (the
    same network and the same mathematics; the weights returned are in the default layout)."""
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0; got {sigma!r}")
    _checks.count(epochs, "epochs")
    y = np.asarray(y_train)
    if y.shape != (len(x_train),):
        raise ValueError(f"y_train must have shape ({len(x_train)},); got {y.shape}")
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    batch_size = _checks.count(batch_size, "batch_size")
    channels_last = _checks.flag(channels_last, "channels_last")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = SmallCNN(num_classes, embed_dim).to(dev).to(memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = _as_float_images(x_train)
    yt = torch.as_tensor(y, dtype=torch.long)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        batches = range(0, len(x), batch_size)
        # progress=True leaves tqdm's defaults alone, so TQDM_DISABLE=1 (set for book builds) wins
        for start in tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{epochs} sigma={sigma}",
            leave=False,
            **({} if progress else {"disable": True}),
        ):
            idx = perm[start : start + batch_size]
            xb = x[idx]
            xb = (xb + sigma * torch.randn(xb.shape, generator=gen)).to(dev).contiguous(memory_format=layout)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model.to(memory_format=torch.contiguous_format)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, x: NDArray, y: NDArray, sigma: float = 0.0, seed: int = 0) -> float:
    """Accuracy of ``model`` on images x (uint8), optionally under one draw of N(0, sigma^2) noise."""
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    xs = _as_float_images(x)
    correct = 0
    for start in range(0, len(xs), 1000):
        xb = xs[start : start + 1000]
        xb = xb + sigma * torch.randn(xb.shape, generator=gen)
        correct += int((model(xb.to(dev)).argmax(1).cpu() == torch.as_tensor(y[start : start + 1000])).sum())
    return correct / len(xs)


def cache_key(*arrays: NDArray, **params: Any) -> str:
    """SHA-256 over the arrays' bytes, the parameters (as sorted JSON) and this module's source."""
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(arr.tobytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(inspect.getsource(inspect.getmodule(cache_key)).encode())
    return h.hexdigest()


def cached_model(
    name: str,
    build: Callable[[], torch.nn.Module],
    make: Callable[[], torch.nn.Module],
    key: str,
    folder: Path | None = None,
) -> tuple[torch.nn.Module, bool, float]:
    """Load the weights cached under (name, key), or train with ``make()`` and cache them.

    ``build()`` makes an untrained model of the right shape to load weights into. Returns
    (model, loaded_from_cache, seconds spent).
    """
    folder = (data_dir() / "models") if folder is None else Path(folder)
    path = folder / f"{name}-{key[:20]}.pt"
    start = time.perf_counter()
    if path.exists():
        model = build()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        return model.to(default_device()), True, time.perf_counter() - start
    model = make()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
    return model, False, time.perf_counter() - start
