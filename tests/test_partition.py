"""Partition aggregation against label flips: SS-DPA (Levine and Feizi 2021) and Finite Aggregation
(Wang, Levine and Feizi 2022), checked against brute force over every labelling on tiny problems."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lib.partition import (
    EMPTY_VOTE,
    apply_flips,
    attack,
    centroid_votes,
    certified_accuracy,
    certify,
    dpa_certificate,
    fa_certificate,
    median_certified,
    partition,
    plurality,
    ridge_votes,
    spread_shifts,
    verify_flips,
    vote_counts,
)


def _all_labellings(n: int, k: int) -> np.ndarray:
    return np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)


def _exhaustive_min_flips(X, y, Xt, k, parts, num_parts, shifts=None) -> np.ndarray:
    """For every test point, the fewest flips over ALL labellings that change the prediction
    (inf if none does), each labelling trained from scratch."""
    pred0 = plurality(vote_counts(centroid_votes(X, y, Xt, k, parts, num_parts, shifts=shifts), k))
    best = np.full(Xt.shape[0], np.inf)
    for lab in _all_labellings(len(y), k):
        dist = int(np.sum(lab != y))
        pred = plurality(vote_counts(centroid_votes(X, lab, Xt, k, parts, num_parts, shifts=shifts), k))
        best = np.where(pred != pred0, np.minimum(best, dist), best)
    return best


# ------------------------------------------------------------------------------------------------
# the certificate formula and its tie-break


@pytest.mark.parametrize(
    ("counts", "pred", "cert"),
    [
        ([3, 3], 0, 0),  # a tie goes to class 0
        ([1, 3], 1, 0),  # (3 - (1 + 1)) / 2 floored: the tie-break term matters
        ([3, 1], 0, 1),
        ([0, 5, 2], 1, 1),  # gap 3: the floor matters
        ([2, 5, 0], 1, 1),  # rival 0 counts 2 + 1
        ([4, 0, 0], 0, 2),
        ([0, 0, 4], 2, 1),  # rivals 0 and 1 both count 0 + 1
        ([0, 0, 5], 2, 2),
        ([1, 1, 1], 0, 0),
        ([0, 4, 1], 1, 1),
        ([0, 0], 0, 0),
    ],
)
def test_dpa_certificate_by_hand(counts, pred, cert):
    p, r = dpa_certificate(np.array([counts]))
    assert (int(p[0]), int(r[0])) == (pred, cert)


def test_tie_break_and_certificate_match_the_authors_code(rng):
    """DPA's certify.py: stable argsort of -counts, diffs = (val - valsecond - (idxsecond <= idx)) / 2
    truncated; here on 5,000 random count vectors with many ties."""
    counts = rng.integers(0, 6, size=(5000, 4))
    idxsort = np.argsort(-counts, axis=1, kind="stable")
    valsort = -np.sort(-counts, axis=1, kind="stable")
    idx, idxsecond = idxsort[:, 0], idxsort[:, 1]
    diffs = ((valsort[:, 0] - valsort[:, 1] - (idxsecond <= idx)) / 2).astype(int)
    pred, cert = dpa_certificate(counts)
    np.testing.assert_array_equal(pred, idx)
    np.testing.assert_array_equal(cert, diffs)
    np.testing.assert_array_equal(plurality(counts), idx)
    assert plurality(np.array([[2, 2, 1], [0, 3, 3], [1, 1, 1]])).tolist() == [0, 1, 0]


@pytest.mark.parametrize(("num_parts", "k"), [(1, 2), (4, 2), (6, 2), (3, 3), (5, 3), (4, 4)])
def test_dpa_certificate_is_exact_on_the_votes(num_parts, k):
    """When every part can be turned to any class, the fewest vote changes that change the
    plurality (brute force over all vote vectors) is exactly the certificate + 1."""
    vecs = _all_labellings(num_parts, k)
    counts = np.stack([np.bincount(v, minlength=k) for v in vecs])
    pred, cert = dpa_certificate(counts)
    hamming = (vecs[:, None, :] != vecs[None, :, :]).sum(axis=2)
    other = pred[:, None] != pred[None, :]
    fewest = np.where(other, hamming, 10**9).min(axis=1)
    np.testing.assert_array_equal(fewest, cert + 1)


# ------------------------------------------------------------------------------------------------
# label flips, brute force over every labelling


def test_parts_of_one_point_make_the_certificate_tight(rng):
    """n = k = 7 parts of one point each: a part's vote is its label, so every vote can be turned
    by one flip and the exhaustive minimum is exactly certificate + 1 at every test point."""
    n, k = 7, 3
    X = rng.normal(size=(n, 2))
    Xt = rng.normal(size=(12, 2))
    y = rng.integers(0, k, n)
    parts = np.arange(n)
    votes = centroid_votes(X, y, Xt, k, parts, n)
    np.testing.assert_array_equal(votes, np.broadcast_to(y, votes.shape))
    _, cert = dpa_certificate(vote_counts(votes, k))
    fewest = _exhaustive_min_flips(X, y, Xt, k, parts, n)
    np.testing.assert_array_equal(fewest, cert + 1)


@pytest.mark.parametrize(
    ("seed", "n", "k", "num_parts", "method"), [(0, 7, 3, 3, "sorted"), (1, 10, 2, 4, "features")]
)
def test_certificate_is_sound_over_every_labelling(seed, n, k, num_parts, method):
    """Nearest-centroid parts of several points: no labelling within the certificate changes the
    prediction (exhaustively), and the attack's flips, never fewer than the true minimum, do."""
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, 2))
    Xt = r.normal(size=(10, 2))
    y = r.integers(0, k, n)
    agg = certify(X, y, Xt, k, num_parts, method=method, seed=seed)
    fewest = _exhaustive_min_flips(X, y, Xt, k, agg.parts, num_parts)
    assert np.all(agg.certificate < fewest)
    for i in range(Xt.shape[0]):
        a = attack(X, y, Xt[i], k, agg.parts, num_parts)
        if not np.isfinite(a.num_flips):
            assert not np.isfinite(fewest[i])
            continue
        assert a.num_flips >= fewest[i] > agg.certificate[i]
        assert a.prediction == agg.prediction[i] != a.new_prediction
        assert np.all(a.labels != y[a.indices])
        assert verify_flips(X, y, Xt[i], k, agg.parts, num_parts, a.indices, a.labels)


def test_finite_aggregation_is_sound_over_every_labelling():
    """FA with k = 2, d = 2 (4 buckets, each point in 2 of 4 classifiers): no labelling within the
    certificate changes the prediction, with and without empty buckets."""
    for seed, method, n, k in [(3, "sorted", 7, 3), (4, "features", 7, 3), (5, "index", 9, 2)]:
        r = np.random.default_rng(seed)
        X = r.normal(size=(n, 2))
        Xt = r.normal(size=(10, 2))
        y = r.integers(0, k, n)
        agg = certify(X, y, Xt, k, 2, spread=2, method=method, seed=seed)
        assert agg.votes.shape == (10, 4) and agg.shifts.size == 2
        fewest = _exhaustive_min_flips(X, y, Xt, k, agg.parts, 4, shifts=agg.shifts)
        assert np.all(agg.certificate < fewest)
        assert np.all(np.where(np.isinf(fewest), agg.certificate == n, True))


@pytest.mark.parametrize("seed", range(4))
def test_finite_aggregation_is_sound_on_the_votes(seed):
    """Vote-level brute force: touching a set of non-empty buckets lets the adversary set every
    classifier they feed to any class; FA's certificate is below the fewest buckets that change
    the plurality (and equals sum(bucket_sizes) when no set of buckets does)."""
    r = np.random.default_rng(seed)
    kd, k = 4, 3
    shifts = spread_shifts(kd, 2, seed=seed)
    sizes = r.integers(0, 3, kd)
    sizes[r.integers(kd)] = 1  # at least one non-empty bucket
    feeds = [{(b + int(s)) % kd for s in shifts} for b in range(kd)]
    touchable = np.flatnonzero(sizes > 0)
    vecs = _all_labellings(kd, k)
    pred, cert = fa_certificate(vecs, k, shifts, bucket_sizes=sizes)
    for v, p, c in zip(vecs, pred, cert):
        fewest = np.inf
        for size in range(1, touchable.size + 1):
            for chosen in itertools.combinations(touchable, size):
                free = sorted(set().union(*(feeds[b] for b in chosen)))
                trial = np.tile(v, (k ** len(free), 1))
                trial[:, free] = _all_labellings(len(free), k)
                if np.any(plurality(vote_counts(trial, k)) != p):
                    fewest = size
                    break
            if np.isfinite(fewest):
                break
        assert c < fewest
        if not np.isfinite(fewest):
            assert c == sizes.sum()


def test_finite_aggregation_with_spread_one_is_dpa(rng):
    votes = rng.integers(0, 4, size=(3000, 7))
    p1, c1 = fa_certificate(votes, 4, [0])
    p2, c2 = dpa_certificate(vote_counts(votes, 4))
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)


def test_empty_parts_vote_for_no_class(rng):
    X = rng.normal(size=(5, 2))
    y = np.array([0, 1, 1, 0, 1])
    parts = np.array([0, 0, 2, 2, 2])  # part 1 is empty
    votes = centroid_votes(X, y, rng.normal(size=(4, 2)), 2, parts, 3)
    assert np.all(votes[:, 1] == EMPTY_VOTE) and np.all(votes[:, [0, 2]] >= 0)
    assert vote_counts(votes, 2).sum(axis=1).tolist() == [2, 2, 2, 2]
    assert np.all(ridge_votes(X, y, rng.normal(size=(4, 2)), 2, parts, 3)[:, 1] == EMPTY_VOTE)


def test_base_learners_break_exact_ties_toward_the_smallest_class():
    X = np.array([[-1.0], [1.0], [-3.0], [3.0]])
    y = np.array([1, 0, 1, 0])
    x = np.array([[0.0]])  # equidistant from both centroids, and both ridge scores are 1/2
    assert centroid_votes(X, y, x, 2, np.zeros(4, np.int64), 1).tolist() == [[0]]
    assert ridge_votes(X, y, x, 2, np.zeros(4, np.int64), 1).tolist() == [[0]]


# ------------------------------------------------------------------------------------------------
# the partition


def test_partition_is_deterministic_label_free_and_follows_the_rows(rng):
    X = rng.normal(size=(500, 5))
    for method in ("features", "index", "sorted"):
        p = partition(X, 17, method=method, seed=3)
        assert p.shape == (500,) and p.min() >= 0 and p.max() < 17
        np.testing.assert_array_equal(p, partition(X, 17, method=method, seed=3))
    assert not np.array_equal(partition(X, 17, seed=3), partition(X, 17, seed=4))
    perm = rng.permutation(500)
    np.testing.assert_array_equal(partition(X[perm], 17), partition(X, 17)[perm])
    np.testing.assert_array_equal(
        partition(X[perm], 17, method="sorted"), partition(X, 17, method="sorted")[perm]
    )
    sizes = np.bincount(partition(X, 17, method="sorted"), minlength=17)
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(partition(X, 17, method="index"), partition(-X, 17, method="index"))


def test_one_flip_changes_one_part_and_no_partition(rng):
    X = rng.normal(size=(400, 4))
    Xt = rng.normal(size=(60, 4))
    y = rng.integers(0, 3, 400)
    for spread in (1, 2):
        a = certify(X, y, Xt, 3, 20, spread=spread)
        y2 = y.copy()
        y2[7] = (y2[7] + 1) % 3
        b = certify(X, y2, Xt, 3, 20, spread=spread)
        np.testing.assert_array_equal(a.parts, b.parts)
        changed = np.flatnonzero(np.any(a.votes != b.votes, axis=0))
        fed = {(int(a.parts[7]) + int(s)) % (20 * spread) for s in a.shifts}
        assert set(changed.tolist()) <= fed


# ------------------------------------------------------------------------------------------------
# base learners


def test_centroid_votes_match_a_loop_over_parts(rng):
    X = rng.normal(size=(120, 3))
    y = rng.integers(0, 4, 120)
    Xt = rng.normal(size=(30, 3))
    parts = rng.integers(0, 9, 120)
    parts[parts == 8] = 7  # part 8 empty
    for shifts in (None, np.array([0, 2, 5])):
        got = centroid_votes(X, y, Xt, 4, parts, 9, shifts=shifts, chunk=7)
        for j in range(9):
            buckets = [j] if shifts is None else [(j - s) % 9 for s in shifts]
            mask = np.isin(parts, buckets)
            if not mask.any():
                assert np.all(got[:, j] == EMPTY_VOTE)
                continue
            classes = np.unique(y[mask])
            mus = np.stack([X[mask & (y == c)].mean(axis=0) for c in classes])
            want = classes[np.argmin(((Xt[:, None, :] - mus[None]) ** 2).sum(axis=2), axis=1)]
            np.testing.assert_array_equal(got[:, j], want)


def test_ridge_votes_match_a_loop_over_parts(rng):
    X = rng.normal(size=(90, 3))
    y = rng.integers(0, 3, 90)
    Xt = rng.normal(size=(25, 3))
    parts = rng.integers(0, 5, 90)
    got = ridge_votes(X, y, Xt, 3, parts, 5, lam=0.5, chunk=4)
    for j in range(5):
        A = np.hstack([X[parts == j], np.ones(((parts == j).sum(), 1))])
        W = np.linalg.solve(A.T @ A + 0.5 * np.eye(4), A.T @ np.eye(3)[y[parts == j]])
        np.testing.assert_array_equal(got[:, j], np.argmax(np.hstack([Xt, np.ones((25, 1))]) @ W, axis=1))


def test_attack_on_a_larger_problem(rng):
    n, k, p = 400, 3, 15
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)
    Xt = rng.normal(size=(6, 4))
    agg = certify(X, y, Xt, k, p, method="sorted")
    for i in range(6):
        a = attack(X, y, Xt[i], k, agg.parts, p)
        assert np.isfinite(a.num_flips) and a.num_flips > agg.certificate[i]
        assert a.num_flips == a.indices.size == np.unique(a.indices).size
        assert verify_flips(X, y, Xt[i], k, agg.parts, p, a.indices, a.labels)
        y2 = apply_flips(y, a.indices, a.labels, k)
        assert int(np.sum(y2 != y)) == a.num_flips


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_names_the_argument(rng):
    X = rng.normal(size=(6, 2))
    y = np.array([0, 1, 0, 1, 0, 1])
    Xt = rng.normal(size=(3, 2))
    parts = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="num_parts"):
        partition(X, 0)
    with pytest.raises(ValueError, match="num_parts"):
        partition(X, 7)
    with pytest.raises(ValueError, match="num_parts"):
        certify(X, y, Xt, 2, 4, spread=2)
    with pytest.raises(ValueError, match="method"):
        partition(X, 2, method="labels")
    with pytest.raises(ValueError, match="X"):
        partition(X[0], 2)
    with pytest.raises(ValueError, match="X_test"):
        centroid_votes(X, y, rng.normal(size=(3, 3)), 2, parts, 3)
    with pytest.raises(ValueError, match="y"):
        centroid_votes(X, y[:5], Xt, 2, parts, 3)
    with pytest.raises(ValueError, match="y"):
        centroid_votes(X, np.array([0, 1, 2, 0, 1, 0]), Xt, 2, parts, 3)
    with pytest.raises(ValueError, match="parts"):
        centroid_votes(X, y, Xt, 2, np.array([0, 0, 1, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match="parts"):
        centroid_votes(X, y, Xt, 2, parts[:5], 3)
    with pytest.raises(ValueError, match="num_classes"):
        centroid_votes(X, y, Xt, 1, parts, 3)
    with pytest.raises(ValueError, match="lam"):
        ridge_votes(X, y, Xt, 2, parts, 3, lam=0.0)
    with pytest.raises(ValueError, match="chunk"):
        centroid_votes(X, y, Xt, 2, parts, 3, chunk=0)
    with pytest.raises(ValueError, match="shifts"):
        centroid_votes(X, y, Xt, 2, parts, 3, shifts=[0, 0])
    with pytest.raises(ValueError, match="votes"):
        vote_counts(np.array([[0, 2]]), 2)
    with pytest.raises(ValueError, match="votes"):
        vote_counts(np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="counts"):
        dpa_certificate(np.array([[1, -1]]))
    with pytest.raises(ValueError, match="counts"):
        dpa_certificate(np.array([3, 1]))
    with pytest.raises(ValueError, match="bucket_sizes"):
        fa_certificate(np.array([[0, 1, 1]]), 2, [0, 1], bucket_sizes=[1, 1])
    with pytest.raises(ValueError, match="spread"):
        spread_shifts(4, 5)
    with pytest.raises(ValueError, match="x"):
        attack(X, y, rng.normal(size=3), 2, parts, 3)
    with pytest.raises(ValueError, match="indices"):
        apply_flips(y, [0, 0], [1, 1], 2)
    with pytest.raises(ValueError, match="labels"):
        apply_flips(y, [0], [2], 2)
    with pytest.raises(ValueError, match="learner"):
        certify(X, y, Xt, 2, 3, learner="knn")


# ------------------------------------------------------------------------------------------------
# summaries: certified accuracy and the median certified robustness


def test_median_certified_is_the_largest_radius_with_half_certified(rng):
    for n in (1, 2, 5, 10, 101):
        for _ in range(50):
            pred = rng.integers(0, 3, n)
            y = rng.integers(0, 3, n)
            cert = rng.integers(0, 8, n)
            m = median_certified(pred, cert, y)
            radii = np.arange(0, 10)
            acc = certified_accuracy(pred, cert, y, radii)
            if np.mean(pred == y) < 0.5:
                assert m == -1
            else:
                assert acc[m] >= 0.5 and (m + 1 >= radii.size or acc[m + 1] < 0.5)
            scored = np.where(pred == y, cert, -1)
            assert m == max(r for r in range(-1, 9) if np.mean(scored >= r) >= 0.5)


def test_certified_accuracy_matches_the_smoothing_certificate(rng):
    from lib.labelflip import Certificate

    pred = rng.integers(0, 2, 40)
    y = rng.integers(0, 2, 40)
    radius = rng.integers(0, 20, 40)
    c = Certificate(pred, radius, np.zeros(40), 1.0)
    radii = np.arange(0, 25)
    mine = certified_accuracy(pred, radius, y, radii)
    np.testing.assert_allclose(mine, c.certified_accuracy(y, radii))
    assert median_certified(np.array([1, 1, 0]), np.array([5, 3, 9]), np.array([1, 1, 1])) == 3
    assert median_certified(np.array([0, 0]), np.array([5, 3]), np.array([1, 1])) == -1
    with pytest.raises(ValueError, match="certificate"):
        median_certified(pred, radius.astype(float), y)
    with pytest.raises(ValueError, match="prediction"):
        median_certified(pred, radius[:3], y)
    with pytest.raises(ValueError, match="radii"):
        certified_accuracy(pred, radius, y, [-1])
