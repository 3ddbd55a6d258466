r"""Deterministic certificates against label flips by partition aggregation (no noise, no sampling).

Papers:

* Levine and Feizi, "Deep Partition Aggregation: Provable Defense against General Poisoning
  Attacks" (ICLR 2021): DPA and its label-flip variant SS-DPA. The training set is split into
  k disjoint parts by a deterministic rule, one base classifier is trained per part, and the
  ensemble predicts the plurality of the k votes, ties going to the smallest class index:

  .. math:: g(x) = \arg\max_c n_c(x), \qquad n_c(x) = |\{i : f_i(x) = c\}|.

  Theorem 1 (DPA) and Theorem 2 (SS-DPA) certify

  .. math:: \bar\rho(x) = \left\lfloor \frac{n_c(x) - \max_{c' \ne c}\,(n_{c'}(x) + 1[c' < c])}{2}
            \right\rfloor, \qquad c = g(x).

  For SS-DPA the partition reads only the unlabeled points, so a flipped label leaves every part's
  membership unchanged and alters the training set of exactly one part, hence at most one vote;
  a vote moved from c to c' closes the gap n_c - n_{c'} by at most 2. The authors' code
  (github.com/alevine0/DPA, ``certify.py``) computes the same number as
  ``(val - valsecond - (idxsecond <= idx)) / 2`` truncated, with a stable sort of the counts.
* Wang, Levine and Feizi, "Improved Certified Defenses against Data Poisoning with (Deterministic)
  Finite Aggregation" (ICML 2022): FA. Points are hashed into kd buckets; bucket b feeds the d
  classifiers (b + s) mod kd, s in a fixed set of d shifts (the spread h_spr), so classifier j is
  trained on the d buckets (j - s) mod kd, about n/k points as in DPA. The certificate (the paper's
  Sec. 3, as computed by the authors' ``FiniteAggregation_cerfity.py``) is, for each rival c', the largest r
  such that the r largest bucket weights

  .. math:: \Delta_b(c') = \sum_{s} \big(1 + 1[f_{b+s}(x) = c] - 1[f_{b+s}(x) = c']\big)

  sum to at most n_c - n_{c'} - 1[c' < c]; the certificate is the minimum over c'.

Adaptation to label flips (proof sketch, also in :func:`fa_certificate`): the bucket of a point is
a function of its features (or index) only, so a flip changes the training set of one bucket and
therefore of at most d classifiers; r flips touch at most r buckets, and only buckets that hold a
training point can be touched. Changing the vote of classifier j lowers n_c - n_{c'} by at most
1[f_j = c] + 1[f_j != c'], which is the summand above; a classifier shared by two touched buckets
is counted twice, which only overstates the damage. So r is certified when the r largest weights
over the non-empty buckets fit in the gap; if all non-empty buckets together fit, no number of flips
changes the prediction. With d = 1 FA is DPA (each bucket weight is 2, 1 or 0).

Base learners (:func:`centroid_votes`, :func:`ridge_votes`) run on fixed label-free features (e.g.
the book's whitened PCA features); a part with no training point votes for no class
(:data:`EMPTY_VOTE`). :func:`attack` is the matching upper bound: explicit flips, verified by
retraining, that change the prediction, so ``certificate < attack(...).num_flips`` always.

Run-off Election (Rezaei, Banihashem, Chegini and Feizi, ICML 2023) is not implemented: its
second round compares per-part scores between the two leading classes, and its certificate needs
the bound on how far one flip moves both rounds at once; the DPA and FA certificates here are the
ones checked exactly against brute force.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks

__all__ = [
    "EMPTY_VOTE",
    "partition",
    "spread_shifts",
    "centroid_votes",
    "ridge_votes",
    "vote_counts",
    "plurality",
    "dpa_certificate",
    "fa_certificate",
    "Aggregate",
    "certify",
    "Attack",
    "attack",
    "apply_flips",
    "verify_flips",
    "certified_accuracy",
    "median_certified",
]

EMPTY_VOTE = -1
"""The vote of a classifier with no training point: it counts for no class. Label flips cannot
give such a part a training point, so its vote is fixed under the threat model."""

_MEMORY_FLOATS = 2**23  # about 64 MiB of float64 per chunk of test points


# ---------------------------------------------------------------------------------------------
# argument checks


def _features(X: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = _checks.finite_matrix(X, name)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {arr.shape}")
    return arr


def _num_parts(num_parts: int, n: int, name: str = "num_parts") -> int:
    k = _checks.count(num_parts, name, minimum=1)
    if k > n:
        raise ValueError(f"{name} must be at most the number of training points ({n}); got {k}")
    return k


def _parts(parts: ArrayLike, n: int, num_parts: int) -> NDArray[np.int64]:
    arr = np.asarray(parts)
    if arr.shape != (n,):
        raise ValueError(f"parts must have shape ({n},), one part per training point; got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"parts must hold integer part indices; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if np.any((out < 0) | (out >= num_parts)):
        raise ValueError(f"parts must hold part indices in {{0, ..., {num_parts - 1}}}")
    return out


def _shifts(shifts: ArrayLike | None, num_buckets: int) -> NDArray[np.int64]:
    if shifts is None:
        return np.zeros(1, dtype=np.int64)
    arr = np.asarray(shifts)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"shifts must be a non-empty 1-D array of integers; got {arr!r}")
    out = arr.astype(np.int64)
    if np.any((out < 0) | (out >= num_buckets)) or np.unique(out).size != out.size:
        raise ValueError(f"shifts must be distinct integers in {{0, ..., {num_buckets - 1}}}")
    return out


def _chunk(chunk: int | None, per_row: int) -> int:
    if chunk is None:
        return max(1, _MEMORY_FLOATS // max(per_row, 1))
    return _checks.count(chunk, "chunk", minimum=1)


def _test_features(X_test: ArrayLike, dim: int) -> NDArray[np.float64]:
    Xt = _checks.finite_matrix(X_test, "X_test")
    if Xt.shape[1] != dim:
        raise ValueError(f"X_test has {Xt.shape[1]} features but X_train has {dim}")
    return Xt


# ---------------------------------------------------------------------------------------------
# the partition


def _keyed_hash(rows: NDArray[np.uint8] | list[bytes], seed: int, modulus: int) -> NDArray[np.int64]:
    key = seed.to_bytes(16, "little")
    out = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(bytes(row), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "little") % modulus
    return out


def partition(
    X: ArrayLike,
    num_parts: int,
    *,
    method: Literal["features", "index", "sorted"] = "features",
    seed: int = 0,
) -> NDArray[np.int64]:
    r"""The part (0 ... num_parts - 1) of every training point, computed without any label.

    * ``"features"`` (default): a keyed BLAKE2b hash of the row's float64 bytes (little-endian,
      -0.0 read as 0.0), modulo ``num_parts``. A point's part depends on its own features and the
      seed only: not on its label, its position, or the other points (the hash partition of
      Levine and Feizi 2021, Sec. 3, which hashes the image).
    * ``"index"``: the same hash of the point's index. Label-free as well; a point's part then
      depends on where it sits in the training set.
    * ``"sorted"``: the rows in lexicographic order dealt round-robin, so part sizes differ by at
      most one and no part is empty. This is what the SS-DPA code does (``partition_data_
      unsupervised.py``): it depends on the whole unlabeled set, which label flips do not change.

    Labels are never an argument, so flipping any label leaves the partition as it was; that is
    what makes one flip reach one part. ``num_parts`` must lie in 1 ... n. Returns an int64 array
    of shape (n,).
    """
    Xa = _features(X, "X")
    n = Xa.shape[0]
    k = _num_parts(num_parts, n)
    s = _checks.count(seed, "seed", minimum=0)
    if s >= 2**128:
        raise ValueError(f"seed must be below 2**128; got {seed!r}")
    if method == "features":
        rows = np.ascontiguousarray(Xa + 0.0, dtype="<f8").view(np.uint8).reshape(n, -1)
        return _keyed_hash(rows, s, k)
    if method == "index":
        return _keyed_hash([i.to_bytes(8, "little") for i in range(n)], s, k)
    if method == "sorted":
        order = np.lexsort(Xa.T[::-1])  # first column is the primary key
        out = np.empty(n, dtype=np.int64)
        out[order] = np.arange(n) % k
        return out
    raise ValueError(f"method must be 'features', 'index' or 'sorted'; got {method!r}")


def spread_shifts(num_buckets: int, spread: int, *, seed: int = 0) -> NDArray[np.int64]:
    """FA's spread h_spr as d distinct shifts in 0 ... kd - 1 (Wang, Levine and Feizi 2022, Sec. 3).

    Bucket b feeds the classifiers (b + s) mod kd. The shifts are 0 and d - 1 others drawn from a
    generator seeded with ``seed`` (the authors draw all d with Python's ``random.sample``; shift 0
    only renames the classifiers). d = 1 gives [0], i.e. DPA. Reads no data at all.
    """
    b = _checks.count(num_buckets, "num_buckets", minimum=1)
    d = _checks.count(spread, "spread", minimum=1)
    if d > b:
        raise ValueError(f"spread must be at most num_buckets ({b}); got {d}")
    s = _checks.count(seed, "seed", minimum=0)
    rng = np.random.default_rng(s)
    others = rng.choice(np.arange(1, b), size=d - 1, replace=False) if d > 1 else np.array([], int)
    return np.sort(np.concatenate([[0], others]).astype(np.int64))


def _spread(stat: NDArray, shifts: NDArray[np.int64]) -> NDArray:
    """Classifier statistics from bucket statistics: classifier j sums buckets (j - s) mod kd."""
    if shifts.size == 1 and shifts[0] == 0:
        return stat
    return sum(np.roll(stat, int(s), axis=0) for s in shifts)


# ---------------------------------------------------------------------------------------------
# base learners: one vote per part (or per FA classifier) and test point


def _centroid_stats(X, y, parts, num_buckets, num_classes):
    sums = np.zeros((num_buckets, num_classes, X.shape[1]))
    np.add.at(sums, (parts, y), X)  # sequential in index order, so a part alone sums the same way
    counts = np.zeros((num_buckets, num_classes))
    np.add.at(counts, (parts, y), 1.0)
    return sums, counts


def centroid_votes(
    X_train: ArrayLike,
    y: ArrayLike,
    X_test: ArrayLike,
    num_classes: int,
    parts: ArrayLike,
    num_parts: int,
    *,
    shifts: ArrayLike | None = None,
    chunk: int | None = None,
) -> NDArray[np.int64]:
    r"""Nearest class-centroid votes of every part at every test point, shape (n_test, num_parts).

    Part p predicts :math:`\arg\min_c \|x - \mu_{p,c}\|^2` over the classes present in p
    (:math:`\mu_{p,c}` the mean of p's points labelled c), computed as
    :math:`\|\mu\|^2 - 2 x^\top \mu`; a class absent from p cannot be predicted by p, exact ties go to
    the smallest class, and a part with no point votes :data:`EMPTY_VOTE`. With FA ``shifts``, the
    ``num_parts`` entries of ``parts`` are buckets and classifier j is trained on the buckets
    (j - s) mod num_parts. Test points are processed ``chunk`` at a time (default: about 64 MiB of
    scores per chunk), so memory does not grow with n_test.
    """
    Xtr = _features(X_train, "X_train")
    n, dim = Xtr.shape
    k = _checks.num_classes(num_classes)
    yv = _checks.labels(y, n, k)
    p = _num_parts(num_parts, n)
    pv = _parts(parts, n, p)
    sh = _shifts(shifts, p)
    Xt = _test_features(X_test, dim)
    sums, counts = _centroid_stats(Xtr, yv, pv, p, k)
    sums, counts = _spread(sums, sh), _spread(counts, sh)
    present = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(present[..., None], sums / counts[..., None], 0.0)
    sq = np.where(present, np.einsum("pkd,pkd->pk", means, means), np.inf)
    empty = ~present.any(axis=1)
    M = means.transpose(1, 0, 2).reshape(k * p, dim)  # class-major: rows c * p + j
    out = np.empty((Xt.shape[0], p), dtype=np.int64)
    step = _chunk(chunk, p * k)
    for a in range(0, Xt.shape[0], step):
        dots = (Xt[a : a + step] @ M.T).reshape(-1, k, p)
        best = sq[:, 0][None] - 2.0 * dots[:, 0]
        votes = np.zeros(best.shape, dtype=np.int64)
        for c in range(1, k):  # a running minimum; strict < keeps the smallest class on ties
            score = sq[:, c][None] - 2.0 * dots[:, c]
            better = score < best
            votes[better] = c
            np.minimum(best, score, out=best)
        votes[:, empty] = EMPTY_VOTE
        out[a : a + step] = votes
    return out


def ridge_votes(
    X_train: ArrayLike,
    y: ArrayLike,
    X_test: ArrayLike,
    num_classes: int,
    parts: ArrayLike,
    num_parts: int,
    *,
    lam: float = 1.0,
    shifts: ArrayLike | None = None,
    chunk: int | None = None,
) -> NDArray[np.int64]:
    r"""Per-part ridge regression on one-hot labels, shape (n_test, num_parts).

    Part p fits :math:`W_p = (\tilde X_p^\top \tilde X_p + \lambda I)^{-1} \tilde X_p^\top Y_p`
    (:math:`\tilde X` the features with an intercept column, :math:`Y_p` one-hot) and votes
    :math:`\arg\max_c \tilde x^\top W_p` (ties to the smallest class). Unlike the centroid, it can
    predict a class absent from the part. A part with no point votes :data:`EMPTY_VOTE`. The
    Gram matrices read no labels; only :math:`\tilde X_p^\top Y_p` does. ``shifts`` and ``chunk``
    as in :func:`centroid_votes`.
    """
    Xtr = _features(X_train, "X_train")
    n, dim = Xtr.shape
    k = _checks.num_classes(num_classes)
    yv = _checks.labels(y, n, k)
    p = _num_parts(num_parts, n)
    pv = _parts(parts, n, p)
    sh = _shifts(shifts, p)
    Xt = _test_features(X_test, dim)
    lam_f = _checks.positive(lam, "lam")
    Xa = np.hstack([Xtr, np.ones((n, 1))])
    d1 = dim + 1
    gram = np.zeros((p, d1, d1))
    xty = np.zeros((p, d1, k))
    sizes = np.bincount(pv, minlength=p).astype(np.float64)
    for j in np.flatnonzero(sizes):
        rows = Xa[pv == j]
        gram[j] = rows.T @ rows
        xty[j] = rows.T @ np.eye(k)[yv[pv == j]]
    gram, xty, sizes = _spread(gram, sh), _spread(xty, sh), _spread(sizes, sh)
    gram[:, np.arange(d1), np.arange(d1)] += lam_f
    W = np.linalg.solve(gram, xty)  # (p, d1, k)
    Wf = W.transpose(1, 0, 2).reshape(d1, p * k)
    empty = sizes == 0
    out = np.empty((Xt.shape[0], p), dtype=np.int64)
    step = _chunk(chunk, p * k)
    for a in range(0, Xt.shape[0], step):
        xa = np.hstack([Xt[a : a + step], np.ones((min(step, Xt.shape[0] - a), 1))])
        votes = np.argmax((xa @ Wf).reshape(-1, p, k), axis=2)
        votes[:, empty] = EMPTY_VOTE
        out[a : a + step] = votes
    return out


# ---------------------------------------------------------------------------------------------
# aggregation and certificates


def _votes(votes: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    arr = np.asarray(votes)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"votes must have shape (n_test, num_parts) with num_parts >= 1; got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"votes must hold integer class indices; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if np.any((out < EMPTY_VOTE) | (out >= num_classes)):
        raise ValueError(f"votes must hold classes in {{0, ..., {num_classes - 1}}} or EMPTY_VOTE")
    return out


def vote_counts(votes: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """n_c(x) for every test point and class, shape (n_test, num_classes); EMPTY_VOTE counts for
    no class."""
    k = _checks.num_classes(num_classes)
    v = _votes(votes, k)
    counts = np.zeros((v.shape[0], k), dtype=np.int64)
    for c in range(k):
        counts[:, c] = np.count_nonzero(v == c, axis=1)
    return counts


def _counts(counts: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(counts)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(
            f"counts must have shape (n_test, num_classes) with num_classes >= 2; got {arr.shape}"
        )
    if arr.dtype.kind not in "iu":
        raise ValueError(f"counts must hold integer vote counts; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if np.any(out < 0):
        raise ValueError("counts must be >= 0")
    return out


def plurality(counts: ArrayLike) -> NDArray[np.int64]:
    """g(x) = argmax_c n_c(x), exact ties to the smallest class index (Levine and Feizi 2021, Sec. 3)."""
    return np.argmax(_counts(counts), axis=1).astype(np.int64)


def dpa_certificate(counts: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    r"""The DPA / SS-DPA prediction and certified number of label flips (Theorems 1 and 2).

    .. math:: \bar\rho(x) = \left\lfloor \frac{n_c - \max_{c' \ne c} (n_{c'} + 1[c' < c])}{2}
              \right\rfloor, \qquad c = \arg\max_c n_c \text{ (smallest index on ties)}.

    Sound for any partition that reads no label: a flip changes one part's training set, hence at
    most one vote, and a vote moved from c to c' closes the gap by 2. It is exact on the votes:
    if every part could be turned to any class by one flip, :math:`\bar\rho + 1` flips would
    change the prediction. ``counts`` has shape (n_test, num_classes); returns two int64 arrays.
    """
    c = _counts(counts)
    pred = np.argmax(c, axis=1)
    idx = np.arange(c.shape[1])
    rival = c + (idx[None, :] < pred[:, None])
    rival[np.arange(c.shape[0]), pred] = np.iinfo(np.int64).min
    gap = c[np.arange(c.shape[0]), pred] - rival.max(axis=1)
    return pred.astype(np.int64), (gap // 2).astype(np.int64)


def fa_certificate(
    votes: ArrayLike,
    num_classes: int,
    shifts: ArrayLike,
    *,
    bucket_sizes: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    r"""The Finite Aggregation prediction and certified number of label flips (Wang et al. 2022, Sec. 3).

    ``votes`` (n_test, kd) are the votes of the kd classifiers, classifier j trained on the buckets
    (j - s) mod kd for s in ``shifts``. For the plurality c and each rival c', bucket b weighs
    :math:`\Delta_b(c') = \sum_s (1 + 1[f_{b+s} = c] - 1[f_{b+s} = c'])` and the certificate is

    .. math:: \min_{c' \ne c} \max\{r : \text{sum of the } r \text{ largest } \Delta_b(c')
              \le n_c - n_{c'} - 1[c' < c]\}.

    Label flips (the adaptation): r flips change the training sets of at most r buckets, and
    never of an empty one; each changed vote of classifier j closes the gap by at most its summand,
    so the damage of r flips is at most the r largest weights over the non-empty buckets. Pass
    ``bucket_sizes`` (training points per bucket) to leave empty buckets out; then a prediction
    that survives every non-empty bucket is certified for ``bucket_sizes.sum()`` flips (all of
    them). Without it every bucket counts and such a prediction gets kd (what the authors' code
    starts from). Weights are integers in 0 ... 2d, so the largest-first sum is taken from a
    histogram, O(kd) per test point and rival.
    """
    k = _checks.num_classes(num_classes)
    v = _votes(votes, k)
    n_test, kd = v.shape
    sh = _shifts(shifts, kd)
    d = sh.size
    if bucket_sizes is None:
        touchable = np.ones(kd, dtype=bool)
        cap = kd
    else:
        sizes = np.asarray(bucket_sizes)
        if sizes.shape != (kd,) or sizes.dtype.kind not in "iu" or np.any(sizes < 0):
            raise ValueError(f"bucket_sizes must be {kd} non-negative integers (one per bucket)")
        touchable = sizes > 0
        cap = int(sizes.sum())
    counts = vote_counts(v, k)
    pred = np.argmax(counts, axis=1)
    # classifiers (b + s) mod kd seen from each non-empty bucket b: index table (buckets, d)
    table = ((np.arange(kd)[:, None] + sh[None, :]) % kd)[touchable]
    cert = np.empty(n_test, dtype=np.int64)
    step = max(1, _MEMORY_FLOATS // max(4 * table.size, 1))
    for a in range(0, n_test, step):
        sl = slice(a, a + step)
        cert[sl] = _fa_chunk(v[sl], counts[sl], pred[sl], table, k, 2 * d, cap)
    return pred.astype(np.int64), cert


def _fa_chunk(v, counts, pred, table, k, max_weight, cap):
    n_test = v.shape[0]
    rows = np.arange(n_test)
    d = table.shape[1]
    small = v.astype(np.int16)
    seen = [small[:, table[:, s]] for s in range(d)]  # vote of classifier (b + s) from bucket b
    base = d + sum((vs == pred[:, None]).astype(np.int16) for vs in seen)  # d + #votes for c
    cert = np.full(n_test, np.iinfo(np.int64).max, dtype=np.int64)
    for rival in range(k):
        active = pred != rival
        if not np.any(active):
            continue
        gap = counts[rows, pred] - counts[:, rival] - (rival < pred)
        weights = base - sum((vs == rival).astype(np.int16) for vs in seen)  # Delta_b, in 0 ... 2d
        r = np.zeros(n_test, dtype=np.int64)
        rem = gap.copy()
        done = np.zeros(n_test, dtype=bool)
        for w in range(max_weight, 0, -1):
            hist = np.count_nonzero(weights == w, axis=1)
            take = np.where(done, 0, np.minimum(hist, rem // w))
            r += take
            rem -= take * w
            done |= take < hist
        # weight 0: touching such a bucket costs this rival nothing
        r += np.where(done, 0, np.count_nonzero(weights == 0, axis=1))
        r = np.where(done, r, cap)  # every non-empty bucket fits: no number of flips suffices
        cert = np.where(active, np.minimum(cert, r), cert)
    return cert


# ---------------------------------------------------------------------------------------------
# the pipeline


@dataclass(frozen=True)
class Aggregate:
    """One partition-aggregation run: what :func:`certify` returns.

    ``parts`` (n_train,) bucket of each training point; ``shifts`` FA's spread ([0] for DPA);
    ``votes`` (n_test, num_classifiers); ``counts`` (n_test, num_classes); ``prediction`` and
    ``certificate`` (n_test,), the certificate in label flips.
    """

    parts: NDArray[np.int64]
    shifts: NDArray[np.int64]
    votes: NDArray[np.int64]
    counts: NDArray[np.int64]
    prediction: NDArray[np.int64]
    certificate: NDArray[np.int64]


def _learner_votes(learner, Xtr, y, Xt, k, parts, p, shifts, lam, chunk):
    if learner == "centroid":
        return centroid_votes(Xtr, y, Xt, k, parts, p, shifts=shifts, chunk=chunk)
    if learner == "ridge":
        return ridge_votes(Xtr, y, Xt, k, parts, p, lam=lam, shifts=shifts, chunk=chunk)
    raise ValueError(f"learner must be 'centroid' or 'ridge'; got {learner!r}")


def certify(
    X_train: ArrayLike,
    y: ArrayLike,
    X_test: ArrayLike,
    num_classes: int,
    num_parts: int,
    *,
    spread: int = 1,
    learner: Literal["centroid", "ridge"] = "centroid",
    method: Literal["features", "index", "sorted"] = "features",
    seed: int = 0,
    lam: float = 1.0,
    chunk: int | None = None,
) -> Aggregate:
    """Partition, train, vote and certify in one call.

    ``spread`` = 1 is SS-DPA with ``num_parts`` parts and the certificate of
    :func:`dpa_certificate`; ``spread`` = d > 1 is FA with k = ``num_parts``: kd buckets from
    :func:`partition`, kd classifiers, the spread of :func:`spread_shifts` and the certificate of
    :func:`fa_certificate` over the non-empty buckets. Nothing but the last step of each base
    learner reads ``y``.
    """
    Xtr = _features(X_train, "X_train")
    k = _checks.num_classes(num_classes)
    d = _checks.count(spread, "spread", minimum=1)
    kk = _num_parts(num_parts, Xtr.shape[0])
    buckets = _num_parts(kk * d, Xtr.shape[0], "num_parts * spread")
    parts = partition(Xtr, buckets, method=method, seed=seed)
    shifts = spread_shifts(buckets, d, seed=seed)
    votes = _learner_votes(learner, Xtr, y, X_test, k, parts, buckets, shifts, lam, chunk)
    counts = vote_counts(votes, k)
    if d == 1:
        pred, cert = dpa_certificate(counts)
    else:
        sizes = np.bincount(parts, minlength=buckets)
        pred, cert = fa_certificate(votes, k, shifts, bucket_sizes=sizes)
    return Aggregate(parts, shifts, votes, counts, pred, cert)


# ---------------------------------------------------------------------------------------------
# the attack: explicit flips, an upper bound beside the certificate


@dataclass(frozen=True)
class Attack:
    """Flips that change the DPA prediction at one test point (empty when none was found).

    ``indices`` / ``labels``: the training points relabelled and their new labels (each new label
    differs from the old one); ``num_flips`` = len(indices) (``inf`` when no attack was found);
    ``prediction`` before, ``new_prediction`` after (recomputed by retraining every part);
    ``rival`` the class the flips were aimed at.
    """

    indices: NDArray[np.int64]
    labels: NDArray[np.int64]
    num_flips: float
    prediction: int
    new_prediction: int
    rival: int


def apply_flips(y: ArrayLike, indices: ArrayLike, labels: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """A copy of ``y`` with ``y[indices] = labels`` (indices distinct, labels in range)."""
    k = _checks.num_classes(num_classes)
    if np.ndim(y) != 1:
        raise ValueError(f"y must be a 1-D array of labels; got shape {np.shape(y)}")
    yv = _checks.labels(y, np.shape(y)[0], k)
    idx = np.asarray(indices)
    lab = np.asarray(labels)
    if idx.ndim != 1 or lab.shape != idx.shape:
        raise ValueError(f"indices and labels must be 1-D of equal length; got {idx.shape}, {lab.shape}")
    if idx.size and (idx.dtype.kind not in "iu" or np.any((idx < 0) | (idx >= yv.size))):
        raise ValueError(f"indices must be integers in {{0, ..., {yv.size - 1}}}")
    if np.unique(idx).size != idx.size:
        raise ValueError("indices must be distinct")
    out = yv.copy()
    out[idx.astype(np.int64)] = _checks.labels(lab, idx.size, k, "labels")
    return out


def _part_cost(Xp, yp, x, k, target):
    """Fewest relabellings to ``target`` among p's points, nearest to x first, after which p's
    centroid vote is ``target``; returns (m, candidate order). m = len(order) always works: the
    part then holds the one class ``target``."""
    cand = np.flatnonzero(yp != target)
    order = cand[np.argsort(((Xp[cand] - x) ** 2).sum(axis=1), kind="stable")]
    onehot = np.eye(k)[yp[order]]  # (m, k)
    sums0 = np.zeros((k, Xp.shape[1]))
    np.add.at(sums0, yp, Xp)
    cnt0 = np.bincount(yp, minlength=k).astype(np.float64)
    csum = np.cumsum(onehot[:, :, None] * Xp[order][:, None, :], axis=0)  # (m, k, dim)
    ccnt = np.cumsum(onehot, axis=0)
    sums = sums0[None] - csum
    cnt = cnt0[None] - ccnt
    sums[:, target] += csum.sum(axis=1)
    cnt[:, target] += ccnt.sum(axis=1)
    present = cnt > 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(present[..., None], sums / cnt[..., None], 0.0)
    dist = np.where(present, (mu * mu).sum(axis=2) - 2.0 * mu @ x, np.inf)
    hit = np.flatnonzero(np.argmin(dist, axis=1) == target)
    m = int(hit[0]) + 1 if hit.size else order.size
    return m, order


def _knapsack(a1: NDArray, a2: NDArray, need: int):
    """Cheapest choice, one option per item (none, benefit 1 at a1, benefit 2 at a2), with total
    benefit >= need. Returns (cost, option per item)."""
    best = np.full(need + 1, np.inf)
    best[0] = 0.0
    choices = np.zeros((a1.size, need + 1), dtype=np.int8)
    for i in range(a1.size):
        prev1 = np.concatenate([best[:1], best[:-1]]) + a1[i]
        prev2 = np.concatenate([best[:1], best[:1], best[:-2]])[: need + 1] + a2[i]
        stack = np.stack([best, prev1, prev2])
        choices[i] = np.argmin(stack, axis=0)
        best = stack.min(axis=0)
    option = np.zeros(a1.size, dtype=np.int8)
    b = need
    for i in range(a1.size - 1, -1, -1):
        option[i] = choices[i, b]
        b = max(b - int(option[i]), 0)
    return float(best[need]), option


def attack(
    X_train: ArrayLike,
    y: ArrayLike,
    x: ArrayLike,
    num_classes: int,
    parts: ArrayLike,
    num_parts: int,
) -> Attack:
    """Flips that change the SS-DPA nearest-centroid prediction at the test point ``x``.

    Per part and target class t, a constructive relabelling: the part's points not labelled t,
    nearest to x first, are relabelled t until the part votes t (at worst all of them, after which
    t is the part's only class, so the vote is t). For each rival c' the parts are then chosen by
    an exact knapsack on these costs: a part voting c = g(x) turned to c' closes the gap
    n_c - n_{c'} - 1[c' < c] by 2, a part voting neither turned to c', or a c-voter turned to its
    cheapest other class, by 1; the gap must close by gap + 1. The cheapest rival wins. Each
    chosen part is retrained with :func:`centroid_votes` (falling back to relabelling all of it)
    and the whole ensemble is retrained at the end, so the flips returned provably change the
    prediction, and ``num_flips`` > the certificate of :func:`dpa_certificate`.
    """
    Xtr = _features(X_train, "X_train")
    n, dim = Xtr.shape
    k = _checks.num_classes(num_classes)
    yv = _checks.labels(y, n, k)
    p = _num_parts(num_parts, n)
    pv = _parts(parts, n, p)
    xv = _checks.finite_matrix(np.atleast_2d(x), "x")
    if xv.shape != (1, dim):
        raise ValueError(f"x must be one test point with {dim} features; got shape {np.shape(x)}")
    votes = centroid_votes(Xtr, yv, xv, k, pv, p)[0]
    counts = vote_counts(votes[None], k)[0]
    c = int(np.argmax(counts))
    members = [np.flatnonzero(pv == j) for j in range(p)]
    cost = np.full((p, k), np.inf)
    orders: dict[tuple[int, int], tuple[int, NDArray]] = {}
    for j in range(p):
        if votes[j] == EMPTY_VOTE:
            continue
        Xp, yp = Xtr[members[j]], yv[members[j]]
        for t in range(k):
            if t == votes[j]:
                continue
            m, order = _part_cost(Xp, yp, xv[0], k, t)
            cost[j, t] = m
            orders[(j, t)] = (m, order)
    others_c = cost.copy()
    others_c[:, c] = np.inf
    best_other = np.argmin(others_c, axis=1)
    best_other_cost = others_c[np.arange(p), best_other]
    plan = None
    for rival in range(k):
        if rival == c:
            continue
        gap = int(counts[c] - counts[rival] - (rival < c))
        a1 = np.where(votes == c, best_other_cost, np.where(votes == rival, np.inf, cost[:, rival]))
        a2 = np.where(votes == c, cost[:, rival], np.inf)
        total, option = _knapsack(a1, a2, gap + 1)
        if np.isfinite(total) and (plan is None or total < plan[0]):
            plan = (total, rival, option, a1, a2)
    if plan is None:
        return Attack(np.zeros(0, np.int64), np.zeros(0, np.int64), float("inf"), c, c, c)
    _, rival, option, _, _ = plan
    flips_i: list[NDArray] = []
    flips_l: list[NDArray] = []
    for j in np.flatnonzero(option):
        t = rival if (option[j] == 2 or votes[j] != c) else int(best_other[j])
        m, order = orders[(int(j), t)]
        idx = members[j]
        for mm in (m, order.size):  # the prefix, then (if retraining disagrees) the whole part
            yp = yv[idx].copy()
            yp[order[:mm]] = t
            if centroid_votes(Xtr[idx], yp, xv, k, np.zeros(idx.size, np.int64), 1)[0, 0] == t:
                break
        flips_i.append(idx[order[:mm]])
        flips_l.append(np.full(mm, t, dtype=np.int64))
    ind = np.concatenate(flips_i).astype(np.int64)
    lab = np.concatenate(flips_l)
    y_new = apply_flips(yv, ind, lab, k)
    new_pred = int(np.argmax(vote_counts(centroid_votes(Xtr, y_new, xv, k, pv, p), k)[0]))
    if new_pred == c:  # cannot happen: every turned part was retrained above
        raise RuntimeError("the attack's flips did not change the prediction")
    return Attack(ind, lab, float(ind.size), c, new_pred, rival)


def verify_flips(
    X_train: ArrayLike,
    y: ArrayLike,
    x: ArrayLike,
    num_classes: int,
    parts: ArrayLike,
    num_parts: int,
    indices: ArrayLike,
    labels: ArrayLike,
    *,
    shifts: ArrayLike | None = None,
    learner: Literal["centroid", "ridge"] = "centroid",
    lam: float = 1.0,
) -> bool:
    """Apply the flips, retrain every part from scratch and report whether the plurality at ``x``
    changed. ``shifts`` as in :func:`centroid_votes` (FA); the base learner as in :func:`certify`."""
    k = _checks.num_classes(num_classes)
    Xtr = _features(X_train, "X_train")
    xv = np.atleast_2d(x)
    y_new = apply_flips(y, indices, labels, k)
    before = vote_counts(_learner_votes(learner, Xtr, y, xv, k, parts, num_parts, shifts, lam, None), k)
    after = vote_counts(_learner_votes(learner, Xtr, y_new, xv, k, parts, num_parts, shifts, lam, None), k)
    return bool(np.argmax(before[0]) != np.argmax(after[0]))


# ---------------------------------------------------------------------------------------------
# summaries shared with the smoothing certificate


def _scored(prediction: ArrayLike, certificate: ArrayLike, y_true: ArrayLike) -> NDArray[np.int64]:
    """The certificate where the prediction is right, -1 where it is wrong (one value per point)."""
    pred, cert, yt = np.asarray(prediction), np.asarray(certificate), np.asarray(y_true)
    if pred.ndim != 1 or pred.size == 0 or cert.shape != pred.shape or yt.shape != pred.shape:
        raise ValueError(
            f"prediction, certificate and y_true must be 1-D of one equal, non-zero length; "
            f"got {pred.shape}, {cert.shape}, {yt.shape}"
        )
    if cert.dtype.kind not in "iu":
        raise ValueError(f"certificate must hold integer numbers of flips; got dtype {cert.dtype}")
    return np.where(pred == yt, cert.astype(np.int64), -1)


def certified_accuracy(
    prediction: ArrayLike, certificate: ArrayLike, y_true: ArrayLike, radii: ArrayLike
) -> NDArray[np.float64]:
    """Fraction of test points predicted correctly AND certified against r flips, for each r of
    ``radii`` (certificate >= r). The same quantity as
    :meth:`lib.labelflip.Certificate.certified_accuracy`, for any certificate in label flips: at
    r = 0 it is the plain accuracy. Returns one fraction per radius."""
    scored = _scored(prediction, certificate, y_true)
    rr = np.atleast_1d(np.asarray(radii))
    if rr.ndim != 1 or rr.dtype.kind not in "iu" or np.any(rr < 0):
        raise ValueError(f"radii must be non-negative integers; got {radii!r}")
    return np.mean(scored[None, :] >= rr[:, None], axis=1)


def median_certified(prediction: ArrayLike, certificate: ArrayLike, y_true: ArrayLike) -> int:
    """The median certified robustness: the largest r such that at least half of the test points
    are predicted correctly and certified against r flips, i.e. :func:`certified_accuracy` >= 1/2
    (the papers' "median certified robustness", wrong predictions counted as -1). Returns -1 when
    fewer than half of the predictions are correct. With an odd number n of points it is the median
    of the scored certificates; with an even n the larger of the two middle values (the authors'
    ``torch.median`` takes the smaller, so the two can differ by one tie step)."""
    scored = np.sort(_scored(prediction, certificate, y_true))[::-1]
    return int(scored[(scored.size + 1) // 2 - 1])
