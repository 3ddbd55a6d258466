r"""Gaussian randomized smoothing with sampling: CERTIFY and PREDICT (Cohen et al., 2019).

The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I), is robust in
l2: if p_A = P(f(x+eps) = c_A) >= p_lower > 1/2 then g(x + delta) = c_A for every
||delta||_2 < sigma * Phi^{-1}(p_lower) (the paper's Example 1, eq. 3, binary bound p_B = 1 - p_A).
p_A is estimated by Monte Carlo with a one-sided Clopper-Pearson bound.

Follows the structure of locuslab/smoothing's ``core.py`` (one class, the paper's two procedures),
but device-agnostic, vectorised class counting, and SciPy's maintained ``binomtest``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from tqdm import tqdm

from . import _checks

__all__ = [
    "ABSTAIN",
    "NoiseBank",
    "clopper_pearson_lower",
    "gaussian_radius",
    "certified_accuracy",
    "Smooth",
    "votes_per_second",
    "abstention_tradeoff",
    "predict_errors",
]

ABSTAIN = -1


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: float) -> NDArray[np.float64] | float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    P(p >= bound) >= 1 - alpha for k ~ Bin(n, p): the alpha-quantile of Beta(k, n - k + 1),
    and 0 when k = 0. Accepts arrays (broadcast); returns a float for scalar input.
    """
    lv = _checks.level(alpha)
    ka = np.asarray(k)
    na = np.asarray(n)
    if (
        np.any(na < 1)
        or np.any(ka < 0)
        or np.any(ka > na)
        or np.any(ka != np.floor(ka))
        or np.any(na != np.floor(na))
    ):
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


def certified_accuracy(
    classes: ArrayLike, radii: ArrayLike, y_true: ArrayLike, r_grid: ArrayLike
) -> NDArray[np.float64]:
    """Fraction of points whose CERTIFY answer is the true class with radius >= r, for each r of
    ``r_grid`` (an abstention, class ABSTAIN, is never correct). Cohen et al.'s certified accuracy."""
    c, rad, yt = np.asarray(classes), np.asarray(radii, dtype=np.float64), np.asarray(y_true)
    if not (c.shape == rad.shape == yt.shape) or c.ndim != 1:
        raise ValueError(
            f"classes, radii and y_true must be 1-d of one length; got {c.shape}, {rad.shape}, {yt.shape}"
        )
    r = np.asarray(r_grid, dtype=np.float64).reshape(-1)
    return np.mean((c == yt)[None, :] & (rad[None, :] >= r[:, None]), axis=1)


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


_PROJECTED_API = ("pre_activation", "noise_matrix", "scores_from_pre_activation")


class NoiseBank:
    """``num`` noise draws made once and reused for many inputs (see :meth:`Smooth.noise_bank`).

    For a projected base classifier (``lib.projected``) it holds the first layer's noise
    sigma V xi, shape (num, h); otherwise the input noise sigma eps, shape (num, *input_shape).
    For every single input, counts over a bank have exactly the law of counts over fresh draws;
    two inputs counted over the same bank are dependent, so each input's guarantee holds on its
    own (marginally), not jointly.
    """

    def __init__(self, values: torch.Tensor, projected: bool, sigma: float):
        self.values = values
        self.projected = projected
        self.sigma = sigma

    def __len__(self) -> int:
        return len(self.values)


class Smooth:
    """The Gaussian-smoothed classifier g of a base classifier f.

    Parameters
    ----------
    base_classifier: maps a batch (B, *input_shape) to class scores (B, num_classes); a
        ``torch.nn.Module`` (its parameters' device is used) or any callable on CPU tensors.
    num_classes: number of classes K >= 2.
    sigma: noise level, > 0.
    seed: seed of the ``torch.Generator`` used when no generator is passed to a call.
    use_projection: when the base classifier is a projected network (it has ``pre_activation``,
        ``noise_matrix`` and ``scores_from_pre_activation``, as :class:`lib.projected.ProjectedMLP`),
        draw the noise in its k projected dimensions and push it through the first layer
        (exact: same law of the counts, see :mod:`lib.projected`). ``False`` forces the direct
        path, noise in input space through ``base_classifier``.
    """

    def __init__(
        self,
        base_classifier: Callable,
        num_classes: int,
        sigma: float,
        seed: int = 0,
        use_projection: bool = True,
    ):
        self.base_classifier = base_classifier
        self.num_classes = _checks.num_classes(num_classes)
        self.sigma = _checks.positive(sigma, "sigma")
        self.device = _model_device(base_classifier)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.projected = bool(use_projection) and all(hasattr(base_classifier, a) for a in _PROJECTED_API)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
        banks: tuple[NoiseBank, NoiseBank] | None = None,
    ) -> tuple[int, float]:
        """CERTIFY: with probability >= 1 - alpha, the returned class is g(x) and g is constant on
        the l2 ball of the returned radius around x. Returns ``(ABSTAIN, 0.0)`` when the
        Clopper-Pearson bound on p_A is not above 1/2.

        ``x``: one input without batch dimension. ``n0`` samples select the class, ``n`` fresh
        samples estimate p_A. ``banks``: two independent :class:`NoiseBank` of sizes n0 and n
        to use instead of fresh draws (the guarantee for this x is unchanged).
        """
        n0 = _checks.count(n0, "n0")
        n = _checks.count(n, "n")
        lv = _checks.level(alpha)
        batch_size = _checks.count(batch_size, "batch_size")
        bank0, bank = (None, None) if banks is None else banks
        counts0 = self.sample_counts(x, n0, batch_size, generator, bank=bank0)
        c_a = int(np.argmax(counts0))
        counts = self.sample_counts(x, n, batch_size, generator, bank=bank)
        p_a = clopper_pearson_lower(int(counts[c_a]), n, lv)
        if p_a <= 0.5:
            return ABSTAIN, 0.0
        return c_a, float(self.sigma * norm.ppf(p_a))

    def certify_many(
        self,
        xs: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        shared_noise: bool = True,
        progress: bool = True,
        desc: str = "CERTIFY",
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """CERTIFY for every input of ``xs`` (first axis). With ``shared_noise`` two noise banks
        (n0 and n draws, independent of each other) are drawn once and reused for every input:
        each input's answer has exactly the law of CERTIFY with fresh draws, so each holds with
        probability >= 1 - alpha on its own, but the answers for different inputs are dependent.
        Returns (classes, radii)."""
        shape = tuple(xs.shape[1:])
        banks = (self.noise_bank(n0, shape), self.noise_bank(n, shape)) if shared_noise else None
        classes = np.empty(len(xs), dtype=np.int64)
        radii = np.empty(len(xs), dtype=np.float64)
        for i in tqdm(range(len(xs)), desc=desc, leave=False, **({} if progress else {"disable": True})):
            classes[i], radii[i] = self.certify(xs[i], n0, n, alpha, batch_size, banks=banks)
        return classes, radii

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
        bank: NoiseBank | None = None,
    ) -> int:
        """PREDICT: returns g(x) or ABSTAIN; the probability of returning a class other than g(x)
        is at most alpha (two-sided binomial test of the top two counts, ``scipy.stats.binomtest``).
        """
        n = _checks.count(n, "n")
        lv = _checks.level(alpha)
        batch_size = _checks.count(batch_size, "batch_size")
        counts = self.sample_counts(x, n, batch_size, generator, bank=bank)
        top2 = np.argsort(counts)[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, p=0.5).pvalue > lv:
            return ABSTAIN
        return int(top2[0])

    @torch.no_grad()
    def noise_bank(
        self, num: int, input_shape: tuple[int, ...] | None = None, generator: torch.Generator | None = None
    ) -> NoiseBank:
        """``num`` noise draws for reuse across inputs. For a projected base classifier: the
        first layer's noise sigma V xi, xi ~ N(0, I_k), shape (num, h), drawn in chunks;
        otherwise sigma eps with eps ~ N(0, I) of ``input_shape`` (required then)."""
        num = _checks.count(num, "num")
        gen = self.generator if generator is None else generator
        if self.projected:
            v = self.base_classifier.noise_matrix().detach()
            out = torch.empty(num, v.shape[0], device=self.device, dtype=v.dtype)
            for s in range(0, num, 16384):
                xi = torch.randn(
                    min(16384, num - s), v.shape[1], generator=gen, device=self.device, dtype=v.dtype
                )
                torch.mm(xi, v.T, out=out[s : s + len(xi)])
            return NoiseBank(out.mul_(self.sigma), True, self.sigma)
        if input_shape is None:
            raise ValueError(
                "input_shape is needed for a noise bank of a base classifier that is not projected"
            )
        eps = torch.randn((num, *input_shape), generator=gen, device=self.device)
        return NoiseBank(eps.mul_(self.sigma), False, self.sigma)

    @torch.no_grad()
    def sample_counts(
        self,
        x: torch.Tensor,
        num: int,
        batch_size: int,
        generator: torch.Generator | None = None,
        bank: NoiseBank | None = None,
    ) -> NDArray[np.int64]:
        """Class counts of f(x + eps) over ``num`` draws of eps ~ N(0, sigma^2 I), ``batch_size``
        at a time (never all ``num`` noisy copies at once). Shape (num_classes,).

        For a projected base classifier the draws are made in its k dimensions and pushed
        through its first layer (same law, :mod:`lib.projected`); with ``bank`` the draws are
        the bank's (``num`` must equal its size)."""
        num = _checks.count(num, "num")
        batch_size = _checks.count(batch_size, "batch_size")
        gen = self.generator if generator is None else generator
        x = torch.as_tensor(x).to(self.device)
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype())
        if not torch.all(torch.isfinite(x)):
            raise ValueError("x contains NaN or inf")
        if bank is not None:
            if len(bank) != num or bank.projected != self.projected or bank.sigma != self.sigma:
                raise ValueError(f"bank must hold {num} draws made by this Smooth (same sigma and path)")
            if not self.projected and bank.values.shape[1:] != x.shape:
                raise ValueError(
                    f"bank draws have shape {tuple(bank.values.shape[1:])}; x has {tuple(x.shape)}"
                )
        a0 = self.base_classifier.pre_activation(x) if self.projected else None
        if a0 is not None:
            v = self.base_classifier.noise_matrix()
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        buffer = None
        for start in range(0, num, batch_size):
            b = min(batch_size, num - start)
            if a0 is not None:
                # first-layer pre-activations a0 + sigma V xi, in a reused buffer
                if buffer is None or len(buffer) != b:
                    buffer = torch.empty(b, len(a0), device=self.device, dtype=a0.dtype)
                if bank is not None:
                    torch.add(bank.values[start : start + b], a0, out=buffer)
                else:
                    xi = torch.randn(b, v.shape[1], generator=gen, device=self.device, dtype=v.dtype)
                    torch.addmm(a0, xi, v.T, beta=1.0, alpha=self.sigma, out=buffer)
                scores = self.base_classifier.scores_from_pre_activation(buffer)
            else:
                noise = (
                    bank.values[start : start + b]
                    if bank is not None
                    else torch.randn((b, *x.shape), generator=gen, device=self.device, dtype=x.dtype).mul_(
                        self.sigma
                    )
                )
                scores = self.base_classifier(noise + x)
            if scores.ndim != 2 or scores.shape[1] != self.num_classes:
                raise ValueError(
                    f"base_classifier must return (batch, {self.num_classes}) scores; "
                    f"got {tuple(scores.shape)}"
                )
            if torch.isnan(scores).any():  # argmax would read NaN as the largest score
                raise ValueError("base_classifier returned NaN scores: the vote is undefined")
            counts += torch.bincount(scores.argmax(dim=1), minlength=self.num_classes)
        return counts.cpu().numpy()


def votes_per_second(
    smooth: Smooth, x: torch.Tensor, samples: int, batch_size: int, bank: NoiseBank | None = None
) -> float:
    """Votes counted per second by :meth:`Smooth.sample_counts` at ``x`` (over ``bank`` when
    given), timed after one warm-up batch: the cost of CERTIFY's counting for this classifier."""
    samples = _checks.count(samples, "samples")
    smooth.sample_counts(x, min(samples, batch_size), batch_size)
    start = time.perf_counter()
    smooth.sample_counts(x, samples, batch_size, bank=bank)
    return samples / (time.perf_counter() - start)


def abstention_tradeoff(smooth: Smooth, xs: torch.Tensor, n0: int, ns, alphas, batch_size: int) -> list[dict]:
    """How n and alpha decide CERTIFY's abstentions and radii (Cohen et al., Sec. 3.2): at each
    input of ``xs``, the class chosen from ``n0`` draws, then for each n of ``ns`` the votes for it
    among n fresh draws (from ``smooth``'s generator, inputs in order, n in order) and, for each
    alpha of ``alphas``, whether CERTIFY abstains and its radius (0 when it does). One row per
    (input, n, alpha)."""
    rows = []
    for x in xs:
        c_a = int(np.argmax(smooth.sample_counts(x, n0, batch_size)))
        for m in ns:
            k_a = int(smooth.sample_counts(x, m, batch_size)[c_a])
            for a in alphas:
                p_low = clopper_pearson_lower(k_a, m, a)
                rows.append(
                    {
                        "n": m,
                        "alpha": a,
                        "abstain": p_low <= 0.5,
                        "radius": smooth.sigma * norm.ppf(p_low) if p_low > 0.5 else 0.0,
                    }
                )
    return rows


def predict_errors(
    smooth: Smooth, xs: torch.Tensor, trials: int, n: int, alpha: float, batch_size: int, reference: int
) -> tuple[int, int, int]:
    """PREDICT's guarantee checked empirically: g(x) at each input of ``xs`` from one bank of
    ``reference`` draws, then ``trials`` calls of PREDICT(n, alpha) per input. Returns (wrong,
    abstained, total): the answers that were a class other than g(x), the abstentions, the calls.
    P(wrong) <= alpha per call (Cohen et al., Prop. 1) when the reference finds g(x)."""
    trials = _checks.count(trials, "trials")
    bank = smooth.noise_bank(reference, tuple(xs.shape[1:]))
    wrong = abstained = total = 0
    for x in xs:
        g_x = int(np.argmax(smooth.sample_counts(x, reference, batch_size, bank=bank)))
        for _ in range(trials):
            out = smooth.predict(x, n=n, alpha=alpha, batch_size=batch_size)
            wrong += out not in (ABSTAIN, g_x)
            abstained += out == ABSTAIN
            total += 1
    return wrong, abstained, total
