"""Comparing feature maps at radii given as a fraction of n: the subset never reads a label, the
table rows and curves agree with the certificate counted directly, bad input is named."""

from __future__ import annotations

import numpy as np
import pytest

from lib import feature_study
from lib.labelflip import Certificate


def _cert(rng, m=40):
    pred = rng.integers(0, 2, m)
    return Certificate(pred, rng.integers(-1, 30, m), np.zeros(m), 1.0)


def test_label_free_subset_is_seeded_sorted_and_reads_no_label():
    a = feature_study.label_free_subset(100, 50, 20, 10, seed=3)
    b = feature_study.label_free_subset(100, 50, 20, 10, seed=3)
    c = feature_study.label_free_subset(100, 50, 20, 10, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    tr, te = a
    assert len(np.unique(tr)) == 20 and len(np.unique(te)) == 10
    assert np.all(np.diff(tr) > 0) and tr.max() < 100 and te.max() < 50
    # the same draw as a generator seeded by (seed, 8): only the counts enter
    rng = np.random.default_rng([3, 8])
    np.testing.assert_array_equal(tr, np.sort(rng.choice(100, 20, replace=False)))
    # a subset larger than the set is the whole set
    tr_all, te_all = feature_study.label_free_subset(5, 4, 50, 50, seed=0)
    np.testing.assert_array_equal(tr_all, np.arange(5))
    np.testing.assert_array_equal(te_all, np.arange(4))


def test_row_and_curve_count_the_certificate_directly(rng):
    cert = _cert(rng)
    yt = rng.integers(0, 2, 40)
    n = 1000
    row = feature_study.certified_row("map", cert, n, yt, 7, (0.0, 0.004, 0.01))
    assert row["accuracy"] == np.mean(cert.pred == yt) and row["k"] == 7 and row["training reviews"] == n
    for f, r in ((0.0, 0), (0.004, 4), (0.01, 10)):
        direct = np.mean((cert.pred == yt) & (cert.radius >= r))
        assert row[f"certified at {100 * f:g}% of n"] == direct
    frac, acc = feature_study.fraction_curve(cert, n, yt, 0.02)
    np.testing.assert_array_equal(frac, np.arange(21) / n)
    np.testing.assert_array_equal(acc, [np.mean((cert.pred == yt) & (cert.radius >= r)) for r in range(21)])
    assert np.all(np.diff(acc) <= 0)


def test_bad_input_is_named(rng):
    cert = _cert(rng)
    with pytest.raises(ValueError, match="size_train"):
        feature_study.label_free_subset(10, 10, 0, 5, seed=0)
    with pytest.raises(ValueError, match="n_test"):
        feature_study.label_free_subset(10, 2.5, 5, 5, seed=0)
    with pytest.raises(ValueError, match="fractions"):
        feature_study.certified_row("m", cert, 100, np.zeros(40, int), 3, (0.5, 1.5))
    with pytest.raises(ValueError, match="y_test"):
        feature_study.certified_row("m", cert, 100, np.zeros(39, int), 3, (0.1,))
    with pytest.raises(ValueError, match="frac_max"):
        feature_study.fraction_curve(cert, 100, np.zeros(40, int), -0.1)


def test_compare_maps_certifies_each_whitened_map(rng):
    """Each row and curve is the certificate of the map whitened to its k components, counted
    directly: correct and radius >= floor(f n)."""
    from lib.features import pca_features
    from lib.labelflip import certify

    A, At = rng.normal(size=(150, 6)), rng.normal(size=(30, 6))
    y = (A[:, 0] + 0.3 * rng.normal(size=150) > 0).astype(int)
    yt = (At[:, 0] > 0).astype(int)
    rows, curves = feature_study.compare_maps(
        [("six", A, At, 6), ("two", A, At, 2)], y, yt, 0.05, [0.02], 0.1
    )
    assert [r["features"] for r in rows] == ["six", "two"] and list(curves) == ["six", "two"]
    for row, k in zip(rows, (6, 2)):
        G, Gt = pca_features(A, At, k)
        c = certify(G, y, Gt, 0.05)
        assert row["k"] == k and row["accuracy"] == np.mean(c.pred == yt)
        assert row["certified at 2% of n"] == np.mean((c.pred == yt) & (c.radius >= 3))
        frac, acc = curves[row["features"]]
        np.testing.assert_array_equal(frac, np.arange(16) / 150)
        np.testing.assert_array_equal(acc, [np.mean((c.pred == yt) & (c.radius >= r)) for r in range(16)])


def test_width_sweep_recomputes_what_it_is_not_given(rng):
    """A k given in ``known`` is read, not recomputed: passing the sweep's own result for k = 3
    gives the same row; the undefended column is the exact attack's accuracy at r."""
    from lib.evaluation import attack_undefended
    from lib.features import pca_features
    from lib.labelflip import certify

    E, Et = rng.normal(size=(120, 5)), rng.normal(size=(25, 5))
    y = (E[:, 1] + 0.5 * rng.normal(size=120) > 0).astype(int)
    yt = (Et[:, 1] > 0).astype(int)
    sweep = feature_study.width_sweep(E, Et, y, yt, [1, 3], 0.05, 2)
    G, Gt = pca_features(E, Et, 3)
    c, u = certify(G, y, Gt, 0.05), attack_undefended(G, y, Gt)
    again = feature_study.width_sweep(E, Et, y, yt, [1, 3], 0.05, 2, known={3: (c, u)})
    assert sweep.equals(again) and list(sweep.index) == [1, 3]
    assert sweep.loc[3, "certified at 2"] == np.mean((c.pred == yt) & (c.radius >= 2))
    assert sweep.loc[3, "undefended at 2"] == np.mean((u.ls_pred == yt) & (u.ls_flips > 2))
    assert sweep.loc[3, "median radius"] == np.median(np.where(c.pred == yt, c.radius, 0))
