r"""Certified robustness to label flips by randomized smoothing over the training labels.

Paper: Rosenfeld, Winston, Ravikumar and Kolter, "Certified robustness to label-flipping attacks via
randomized smoothing" (ICML 2020), Sec. 4 and App. B. The smoothed classifier g is the
majority vote of a learner trained on noisy labels: each label is kept with probability 1-q and
otherwise replaced by one of the other K-1 classes uniformly (mu). Two certificates turn a lower
bound p on the vote share of the predicted class into a number of flips r:

* :func:`kl_radius`: the generic KL guarantee (5) with KL(rho || mu) = r (1 - Kq/(K-1))
  log((1-q)(K-1)/q) (eq. 9, App. B.3), i.e. eq. (10) / (25);
* :func:`tight_radius`: the exact Neyman-Pearson certificate (eq. 4; derivation in
  :mod:`lib.neyman_pearson`), about twice as many flips.

:func:`certify` is the whole pipeline of Algorithm 1 (least squares + Chernoff, no sampling);
:func:`certify_monte_carlo` is its sampling counterpart (Algorithm 2 with Clopper-Pearson).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks
from .chernoff import chernoff_bound
from .gaussian import ABSTAIN, clopper_pearson_lower  # one abstention value for the book
from .least_squares import add_intercept, kernel_weights, ridge_lambda, ridge_lambda_label_free
from .neyman_pearson import threshold_table

LOG_HALF = float(np.log(0.5))

__all__ = [
    "kl_per_flip",
    "kl_radius",
    "tight_radius",
    "radius_from_log_tail",
    "required_p",
    "required_tail",
    "flip_labels",
    "Certificate",
    "certify",
    "certify_monte_carlo",
    "certify_tight_and_kl",
]

_KL_SAFETY = 1e-9


def kl_per_flip(q: float, num_classes: int = 2) -> float:
    r"""KL(rho_i || mu_i) for one changed label: (1 - Kq/(K-1)) log((1-q)(K-1)/q) (eq. 9, App. B.3).

    KL divergence of the product measures is additive, so r changed labels give r times this.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    return (1.0 - k * qf / (k - 1)) * (np.log1p(-qf) + np.log(k - 1) - np.log(qf))


def _log_tail_from_p(p: ArrayLike) -> NDArray[np.float64]:
    """log(1 - p), never below the exact value: for float64 p, log1p(-p) (1 - p is exact for
    p >= 1/2); for wider p (longdouble, Fraction, Decimal, mpmath) the log of 1 - p formed at
    p's own precision and rounded up (:func:`lib._checks.probability_tail`), so 1 - 1e-19 is
    certified as such instead of being rounded to p = 1."""
    arr = np.asarray(p)
    if arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and arr.dtype.itemsize <= 8):
        pa = _checks.probability_array(arr)
        with np.errstate(divide="ignore"):
            return np.log1p(-pa)
    tail = _checks.probability_tail(arr)
    with np.errstate(divide="ignore"):
        # log is faithful to about one ulp; the radii keep a relative margin far larger
        return np.log(tail)


_RADIUS_CEILING = 2**62  # radii are int64: a larger certificate is reported as this (still valid)


def _kl_from_log_tail(log_tail: NDArray, q: float, k: int, max_radius: int | None) -> NDArray[np.int64]:
    lt = np.asarray(log_tail, dtype=np.float64)
    ok = lt < np.log(0.5)
    cap = float(_RADIUS_CEILING) if max_radius is None else float(min(max_radius, _RADIUS_CEILING))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # log(4 p (1-p)) with p = 1 - tail, in log space so tiny tails keep their precision
        log4p1p = np.log(4.0) + np.log1p(-np.exp(lt)) + lt
        r = -log4p1p / (2.0 * kl_per_flip(q, k))
        # strict inequality and rounding, on the safe side (inf, from a tail near 0, stays inf)
        r = np.where(np.isfinite(r), r - _KL_SAFETY * np.maximum(1.0, np.abs(r)), r)
        r = np.minimum(r, cap)
    r = np.where(ok & np.isfinite(r), np.floor(np.where(ok & np.isfinite(r), r, 0.0)), 0.0)
    if max_radius is not None:
        r = np.where(ok & np.isneginf(lt), max_radius, r)
    return np.maximum(r, 0).astype(np.int64)


def _check_cap(log_tail: NDArray, max_radius: int | None) -> int | None:
    """``max_radius`` as an int (or None); p = 1 without a cap is an error."""
    if max_radius is None:
        if np.any(np.isneginf(log_tail)):
            raise ValueError(
                "p = 1 certifies every radius; pass max_radius (e.g. the number of training labels)"
            )
        return None
    return _checks.count(max_radius, "max_radius", minimum=0)


def kl_radius(p: ArrayLike, q: float, num_classes: int = 2, *, max_radius: int | None = None):
    r"""Flips certified by the generic KL guarantee, eq. (8) / (10) / (25).

    .. math:: r = \left\lfloor \frac{\log(4p(1-p))}{2(1-\frac{Kq}{K-1})\log\frac{q}{(1-q)(K-1)}} \right\rfloor

    ``p`` is a lower bound on G(mu, phi) of the predicted class (scalar or array); 0 where
    p <= 1/2. The floor is taken after a relative 1e-9 shrink, so rounding never over-certifies.
    ``p`` may be wider than float64 (``np.longdouble``, ``Fraction``, ``Decimal``, mpmath): 1 - p
    is then formed at its precision and rounded up. Without ``max_radius``, radii beyond 2^62
    are reported as 2^62. Returns an int for scalar ``p``, else an int64 array.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    lt = _log_tail_from_p(p)
    cap = _check_cap(lt, max_radius)
    out = _kl_from_log_tail(lt, qf, k, cap)
    return int(out) if out.ndim == 0 else out


def tight_radius(p: ArrayLike, q: float, num_classes: int = 2, *, max_radius: int | None = None):
    r"""Exact (Neyman-Pearson) certified number of flips: eq. (4) with the Lee et al. construction.

    The largest r such that every set with mu-probability >= p has rho-probability > 1/2 for
    every training labelling that differs in r places (flipped labels go uniformly to the other
    K-1 classes). 0 where p <= 1/2. Thresholds are precomputed per (q, K) and cached, so an
    array of p is certified by one vectorised search (see :mod:`lib.neyman_pearson`). ``p``
    may be wider than float64; 1 - p is then formed at its precision and rounded up.
    Returns an int for scalar ``p``, else an int64 array.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    lt = _log_tail_from_p(p)
    cap = _check_cap(lt, max_radius)
    out = radius_from_log_tail(lt, qf, k, bound="tight", max_radius=cap)
    return int(out) if out.ndim == 0 else out


def required_tail(
    r: int, q: float, num_classes: int = 2, *, bound: Literal["tight", "kl"] = "tight"
) -> float:
    """1 - p for the smallest vote share p that certifies r flips (kept exact when it is tiny).

    Any p with 1 - p below the returned value certifies r flips. Tight: c*(r) minimised over
    r' <= r (:mod:`lib.neyman_pearson`). KL: the root p > 1/2 of 4p(1-p) = exp(-2 r KL_per_flip)
    (eq. 10 / 25 solved for p), whose tail is (1 - sqrt(1 - e^{-2 r KL})) / 2.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    rr = _checks.count(r, "r")
    if bound == "kl":
        e = np.exp(-2.0 * rr * kl_per_flip(qf, k))
        return float(0.5 * e / (1.0 + np.sqrt(-np.expm1(np.log(e)))))  # (1 - sqrt(1-e))/2, stably
    if bound != "tight":
        raise ValueError(f"bound must be 'tight' or 'kl'; got {bound!r}")
    table = threshold_table(qf, k)
    table.extend_to(rr)
    return float(np.exp(table.log_thresholds()[rr - 1]))


def required_p(r: int, q: float, num_classes: int = 2, *, bound: Literal["tight", "kl"] = "tight") -> float:
    """The smallest vote share p that certifies r flips (the paper's Figure 5, left):
    1 - :func:`required_tail`."""
    return 1.0 - required_tail(r, q, num_classes, bound=bound)


def radius_from_log_tail(
    log_tail: ArrayLike,
    q: float,
    num_classes: int = 2,
    *,
    bound: Literal["tight", "kl"] = "tight",
    max_radius: int | None = None,
) -> NDArray[np.int64]:
    """Certified flips from ``log(1 - p)`` directly, keeping the precision of tiny tails.

    The Chernoff bounds of :mod:`lib.chernoff` are often far below 1e-16, where ``p`` itself
    rounds to 1.0; the radii are then computed from the log tail (``-inf`` means p = 1).
    Tight radii come from a table of at most :data:`lib.neyman_pearson.MAX_TABLE` flips
    (``MAX_TABLE_BINARY`` for K = 2): beyond it a radius is reported as the table size, with a
    ``RuntimeWarning``, if ``max_radius`` is larger, and is an error if ``max_radius`` is None.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    raw = np.asarray(log_tail)
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"log_tail must hold real numbers; got dtype {raw.dtype}")
    lt = raw.astype(np.float64)
    if raw.dtype.kind == "f" and raw.dtype.itemsize > 8:  # round a wider log tail up, never down
        lt = np.where(lt < raw, np.nextafter(lt, np.inf), lt)
    if np.any(np.isnan(lt)) or np.any(lt > 0):
        raise ValueError("log_tail must be <= 0 (the log of a probability) and not NaN")
    cap = _check_cap(lt, max_radius)
    if bound == "kl":
        return _kl_from_log_tail(lt, qf, k, cap)
    if bound != "tight":
        raise ValueError(f"bound must be 'tight' or 'kl'; got {bound!r}")
    table = threshold_table(qf, k)
    return table.radii(np.atleast_1d(lt), cap).reshape(lt.shape)


def flip_labels(y: NDArray[np.int64], q: float, num_classes: int, rng: np.random.Generator, size: int):
    """``size`` noisy copies of ``y`` from mu: each label flipped w.p. q to a uniform other class."""
    flip = rng.random((size, y.size)) < q
    shift = rng.integers(1, num_classes, size=(size, y.size)) if num_classes > 2 else 1
    return np.where(flip, (y[None, :] + shift) % num_classes, y[None, :])


@dataclass(frozen=True)
class Certificate:
    """Predictions of the smoothed classifier and their certified numbers of label flips.

    ``radius[j] = r`` means: the prediction ``pred[j]`` of the smoothed classifier would be
    the same had any r training labels been changed (deterministically for :func:`certify`,
    with probability >= 1 - alpha for :func:`certify_monte_carlo`). ``pred`` is ``ABSTAIN``
    (-1) where the Monte Carlo procedure abstains. ``lam`` is the ridge parameter used.
    """

    pred: NDArray[np.int64]
    radius: NDArray[np.int64]
    log_tail: NDArray[np.float64]
    lam: float

    @property
    def p_lower(self) -> NDArray[np.float64]:
        """Lower bound on the vote share of ``pred`` where > 1/2; exactly 1/2 means uncertified.

        ``1 - exp(log_tail)`` rounded down (one float64 step below ``-expm1``), so it never
        exceeds the exact value; ``log_tail`` keeps the full range (tails below 1e-16).
        """
        return _p_from_log_tail(self.log_tail)

    def certified_accuracy(self, y_true: ArrayLike, radii: ArrayLike) -> NDArray[np.float64] | float:
        """Fraction of test points correctly classified AND certified at each r in ``radii``.

        At r = 0 this is the plain accuracy of ``pred`` (as in the paper's figures), including
        predictions whose vote share could not be bounded above 1/2. A scalar ``radii`` gives a
        float, an array one fraction per radius.
        """
        yt = np.asarray(y_true)
        if yt.shape != self.pred.shape:
            raise ValueError(
                f"y_true must have shape {self.pred.shape} (one label per test point); got {yt.shape}"
            )
        rr = np.asarray(radii)
        if rr.dtype.kind not in "biuf" or np.any(np.isnan(rr)):
            raise ValueError(f"radii must be numbers of flips; got {radii!r}")
        correct = self.pred == yt
        out = np.mean(correct[None, :] & (self.radius[None, :] >= rr.reshape(-1)[:, None]), axis=1)
        return float(out[0]) if rr.ndim == 0 else out.reshape(rr.shape)


def _p_from_log_tail(log_tail: NDArray) -> NDArray[np.float64]:
    """max(1 - exp(log_tail), 1/2), rounded down where above 1/2 (expm1 is faithful to < 1 ulp)."""
    lt = np.asarray(log_tail, dtype=np.float64)
    p = -np.expm1(lt)
    return np.where(lt < LOG_HALF, np.maximum(np.nextafter(p, 0.0), 0.5), 0.5)


def _resolve_lambda(lam, X: NDArray, y: NDArray, q: float, k: int = 2) -> float:
    if isinstance(lam, str):
        if lam == "auto":
            return ridge_lambda_label_free(X, q)
        if lam == "paper":
            warnings.warn(
                "lam='paper' reads the (poisonable) training labels: the certificate then "
                "does not hold as stated (see lib.least_squares.ridge_lambda)",
                stacklevel=3,
            )
            return ridge_lambda(X, y, q, num_classes=k)
        raise ValueError(f"lam must be 'auto', 'paper' or a number >= 0; got {lam!r}")
    try:
        lf = _checks.real(lam, "lam")
    except ValueError:
        raise ValueError(f"lam must be 'auto', 'paper' or a finite number >= 0; got {lam!r}") from None
    if not np.isfinite(lf) or lf < 0:
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
    return lf


def _training_data(X_train: ArrayLike, y_train: ArrayLike, X_test: ArrayLike, k: int):
    """Validated (X_train, X_test, y_train): real finite matrices, at least one training point,
    as many features in both, labels in {0..K-1}."""
    Xtr = _checks.finite_matrix(X_train, "X_train")
    Xte = _checks.finite_matrix(X_test, "X_test")
    if Xtr.shape[0] == 0:
        raise ValueError("X_train must hold at least one training point; got 0 rows")
    if Xte.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_test has {Xte.shape[1]} features but X_train has {Xtr.shape[1]}")
    y = _checks.labels(y_train, Xtr.shape[0], k, "y_train")
    return Xtr, Xte, y


def certify(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    q: float,
    lam: float | Literal["auto", "paper"] = "auto",
    bound: Literal["tight", "kl"] = "tight",
    num_classes: int = 2,
    *,
    fit_intercept: bool = True,
    batch_size: int = 4096,
) -> Certificate:
    """Algorithm 1: certify every test point against label flips, with no sampling.

    alpha = X (X^T X + lam I)^-1 h(x) (eq. 12) for all test points with one factorisation, the
    Chernoff bound (7)/(13) (or (24) for K > 2) minimised by Newton, and the radius from the
    tight (eq. 4) or KL (eq. 8/25) certificate. ``lam='auto'`` is the label-free rule
    :func:`lib.least_squares.ridge_lambda_label_free`, which keeps the certificate sound: alpha
    must not depend on the training labels. Radii are capped at n, the number of labels.
    ``fit_intercept`` appends a constant feature (labels are {0, 1} and the threshold 1/2, so
    features without a constant cannot express the offset); it reads no label.
    Test points are processed in batches of ``batch_size`` so memory stays O(n * batch_size).
    ``pred`` is the smoothed prediction g wherever the radius is positive; where nothing is
    certified it is the class that :func:`lib.chernoff.chernoff_bound` reports (g itself when
    alpha has few non-zero weights, else the class of largest expected score).
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    Xtr, Xte, y = _training_data(X_train, y_train, X_test, k)
    batch_size = _checks.count(batch_size, "batch_size")
    if _checks.flag(fit_intercept, "fit_intercept"):
        Xtr, Xte = add_intercept(Xtr), add_intercept(Xte)
    lam_v = _resolve_lambda(lam, Xtr, y, qf, k)
    preds, tails = [], []
    for start in range(0, Xte.shape[0], batch_size):
        alpha = kernel_weights(Xtr, Xte[start : start + batch_size], lam_v)
        res = chernoff_bound(alpha, y, qf, k)
        preds.append(res.pred)
        tails.append(res.log_tail)
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    log_tail = np.concatenate(tails) if tails else np.zeros(0)
    radius = radius_from_log_tail(log_tail, qf, k, bound=bound, max_radius=Xtr.shape[0])
    return Certificate(pred, radius, log_tail, lam_v)


def certify_monte_carlo(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    q: float,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    lam: float | Literal["auto", "paper"] = "auto",
    bound: Literal["tight", "kl"] = "tight",
    num_classes: int = 2,
    *,
    fit_intercept: bool = True,
    seed: int = 0,
    batch_size: int = 256,
) -> Certificate:
    """Sampling counterpart of :func:`certify` (Algorithm 2 with CERTIFY's two draws).

    With probability at least 1 - alpha (per test point), the returned class equals the
    smoothed prediction g and the radius is certified. Each noisy labelling costs one
    matrix-vector product per test point (alpha^T y), not a refit. ``n0`` noisy labellings
    select the class, ``n`` fresh ones estimate its vote share with a one-sided
    Clopper-Pearson bound; abstain (``pred = -1``, radius 0) where that bound is <= 1/2.
    """
    k = _checks.num_classes(num_classes)
    qf = _checks.flip_probability(q, k)
    n0 = _checks.count(n0, "n0")
    n = _checks.count(n, "n")
    batch_size = _checks.count(batch_size, "batch_size")
    lv = _checks.level(alpha, "alpha")
    Xtr, Xte, y = _training_data(X_train, y_train, X_test, k)
    if _checks.flag(fit_intercept, "fit_intercept"):
        Xtr, Xte = add_intercept(Xtr), add_intercept(Xte)
    lam_v = _resolve_lambda(lam, Xtr, y, qf, k)
    A = kernel_weights(Xtr, Xte, lam_v)  # (n_train, m)
    rng = np.random.default_rng(seed)

    def votes(num: int) -> NDArray[np.int64]:
        counts = np.zeros((A.shape[1], k), dtype=np.int64)
        for start in range(0, num, batch_size):
            Y = flip_labels(y, qf, k, rng, min(batch_size, num - start))  # (b, n)
            if k == 2:
                cls = (Y @ A >= 0.5).astype(np.int64)  # phi = 1{alpha^T y >= 1/2}
            else:
                onehot = np.eye(k)[Y]  # (b, n, K)
                cls = np.argmax(np.einsum("bnk,nm->bmk", onehot, A), axis=2)
            for c in range(k):
                counts[:, c] += np.sum(cls == c, axis=0)
        return counts

    c_hat = np.argmax(votes(n0), axis=1)
    counts = votes(n)
    n_a = counts[np.arange(c_hat.size), c_hat]
    # beta.ppf is accurate to a few ulps in either direction: lower it by a relative 1e-12
    p_low = np.asarray(clopper_pearson_lower(n_a, n, lv), dtype=np.float64) * (1.0 - 1e-12)
    certified = p_low > 0.5
    with np.errstate(divide="ignore"):
        log_tail = np.where(certified, np.log1p(-p_low), np.log(0.5))
    pred = np.where(certified, c_hat, ABSTAIN).astype(np.int64)
    radius = radius_from_log_tail(log_tail, qf, k, bound=bound, max_radius=Xtr.shape[0])
    return Certificate(pred, radius, log_tail, lam_v)


def certify_tight_and_kl(
    F: NDArray, y: NDArray, Ft: NDArray, q: float, num_classes: int = 2
) -> tuple[Certificate, Certificate]:
    """:func:`lib.labelflip.certify` with ``bound='tight'`` and with ``bound='kl'``, from one
    Chernoff pass: both read their radius off the same log tail (eq. 4 with the Neyman-Pearson
    construction, and eq. 8 / 25), so the KL certificate is the tight one's predictions and log
    tails with :func:`lib.labelflip.radius_from_log_tail` (``bound='kl'``, capped at n, as
    certify caps it). Equal to the two calls of certify."""
    tight = certify(F, y, Ft, q, bound="tight", num_classes=num_classes)
    radius = radius_from_log_tail(tight.log_tail, q, num_classes, bound="kl", max_radius=len(y))
    return tight, Certificate(tight.pred, radius, tight.log_tail, tight.lam)


def lambda_sweep(
    X: ArrayLike, y: ArrayLike, X_test: ArrayLike, y_test: ArrayLike, q: float, lams: ArrayLike, radii
):
    """What the ridge parameter does (chapter 4): for each lambda of ``lams``, the accuracy of
    ridge on the clean labels (1{alpha^T y >= 1/2}, eq. 12), of the smoothed classifier at
    ``q``, and its certified accuracy (tight, eq. 4) at each r of ``radii``. ``X`` and
    ``X_test`` are used as given (no intercept is added). One row per lambda."""
    import pandas as pd

    Xtr, Xte, yv = _training_data(X, y, X_test, 2)
    yt = np.asarray(y_test)
    qf = _checks.flip_probability(q, 2)
    rows = []
    for lam in np.asarray(lams, dtype=np.float64):
        a = kernel_weights(Xtr, Xte, float(lam))
        res = chernoff_bound(a, yv, qf)
        radius = radius_from_log_tail(res.log_tail, qf, max_radius=len(yv))
        row = {
            "lambda": lam,
            "clean accuracy": np.mean(((a.T @ yv) >= 0.5) == yt),
            "smoothed accuracy": np.mean(res.pred == yt),
        }
        row.update({f"certified at r = {r}": np.mean((res.pred == yt) & (radius >= r)) for r in radii})
        rows.append(row)
    return pd.DataFrame(rows)


def certify_lambdas(F, y, F_test, y_test, q: float, lams: dict, radii, known: Certificate | None = None):
    """Certify at ``q`` with each named ridge parameter of ``lams`` (name -> lambda), on features
    ``F`` (:func:`certify` adds the intercept): one row per name with the value, the accuracy and
    the certified accuracy (tight) at each r of ``radii``. ``known``, a certificate already
    computed at ``q``, is reused for the lambda it was computed with. A lambda that reads the
    training labels gives numbers that are not certificates (chapter 6)."""
    import pandas as pd

    yt = np.asarray(y_test)
    rows = []
    for name, lam in lams.items():
        c = known if known is not None and lam == known.lam else certify(F, y, F_test, q, lam=lam)
        rows.append(
            {
                "lambda": name,
                "value": lam,
                "accuracy": float(np.mean(c.pred == yt)),
                **{f"certified at r = {r}": float(c.certified_accuracy(yt, r)) for r in radii},
            }
        )
    return pd.DataFrame(rows).set_index("lambda")
