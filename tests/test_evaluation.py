"""What the experiment chapters measure: attacks never beat
certificates (and the check does fire on an inflated certificate); attacked accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from lib import evaluation, features, labelflip
from lib.attacks import attack_smoothed_multiclass
from lib.chernoff import chernoff_bound
from lib.least_squares import add_intercept, kernel_weights


def test_multiclass_smoothed_attacks_are_proven_and_never_beat_the_certificate(rng):
    k, q, n = 3, 0.05, 150
    centers = rng.normal(size=(k, 4)) * 2
    y = rng.integers(0, k, n)
    F = centers[y] + rng.normal(size=(n, 4))
    Ft = centers[rng.integers(0, k, 12)] + rng.normal(size=(12, 4))
    cert = labelflip.certify(F, y, Ft, q, num_classes=k)
    pts = np.arange(12)
    flips = evaluation.attack_certified(F, y, Ft, cert, q, pts, num_classes=k, slack=60)
    assert np.all(flips > cert.radius)
    assert np.isfinite(flips).sum() >= 6  # the attack does find changes
    # recompute one attack by hand: the reported number of flips does certify another class
    alpha = kernel_weights(add_intercept(F), add_intercept(Ft), cert.lam)
    fl, _ = attack_smoothed_multiclass(alpha[:, :1], y, q, k, max_flips=int(flips[np.isfinite(flips)].max()))
    assert fl[0] == flips[0]
    # an inflated certificate is caught: the check can fail
    fake = labelflip.Certificate(
        cert.pred, np.where(np.isfinite(flips), flips.astype(int), cert.radius), cert.log_tail, cert.lam
    )
    with pytest.raises(AssertionError, match="soundness bug"):
        evaluation.attack_certified(F, y, Ft, fake, q, pts, num_classes=k, slack=60)


def test_binary_attack_check_fires_on_an_inflated_certificate(rng, capsys):
    X = rng.normal(size=(100, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=100) > 0).astype(int)
    Xt = rng.normal(size=(10, 3))
    cert = labelflip.certify(X, y, Xt, 0.1)
    flips = evaluation.attack_certified(X, y, Xt, cert, 0.1, np.arange(10), slack=80, verbose=True)
    assert np.all(flips > cert.radius) and np.isfinite(flips).any()
    found = np.isfinite(flips)
    closest = int(np.min(flips[found] - cert.radius[found]))
    assert f"{int(found.sum())} proven attacks, the closest {closest} flips beyond" in capsys.readouterr().out
    fake = labelflip.Certificate(
        cert.pred, np.where(np.isfinite(flips), flips, cert.radius).astype(int), cert.log_tail, cert.lam
    )
    with pytest.raises(AssertionError, match="soundness bug"):
        evaluation.attack_certified(X, y, Xt, fake, 0.1, np.arange(10), slack=80)


def test_attacked_accuracy_and_crossing():
    pred, truth = np.array([1, 1, 0, 0]), np.array([1, 1, 0, 1])
    needed = np.array([3.0, 1.0, np.inf, 2.0])
    r = np.arange(5)
    acc = evaluation.attacked_accuracy(pred, needed, truth, r)
    np.testing.assert_allclose(acc, [0.75, 0.5, 0.5, 0.25, 0.25])
    assert evaluation.first_below(acc, r, 0.5) == 3
    assert evaluation.first_below(acc, r, 0.1) is None


def test_live_columns_drop_constant_features():
    F = np.c_[np.arange(5.0), np.zeros(5), np.ones(5) * 3]
    assert features.live_columns(F).tolist() == [True, False, False]


def test_live_columns_drop_nearly_dead_units_relative_to_the_largest(rng):
    """A unit with a spread 1e-5 of the others' is kept by the absolute test and dropped with
    rtol; it is what makes kappa(X^T X), and the label-free lambda, explode."""
    from lib.least_squares import add_intercept, ridge_lambda_label_free

    F = np.c_[rng.normal(size=(400, 3)) * [1.0, 2.0, 3.0], 5.0 + 1e-5 * rng.normal(size=400)]
    assert features.live_columns(F).tolist() == [True, True, True, True]
    keep = features.live_columns(F, rtol=1e-3)
    assert keep.tolist() == [True, True, True, False]
    X, Xk = add_intercept(F), add_intercept(F[:, keep])
    assert ridge_lambda_label_free(X, 0.1) > 1e6 * ridge_lambda_label_free(Xk, 0.1)
    with pytest.raises(ValueError, match="rtol"):
        features.live_columns(F, rtol=1.0)


def test_undefended_multiclass_attack_matches_direct(rng):
    k, n = 4, 80
    F = rng.normal(size=(n, 3))
    y = rng.integers(0, k, n)
    Ft = rng.normal(size=(5, 3))
    und = evaluation.attack_undefended(F, y, Ft, num_classes=k)
    X, Xt = add_intercept(F), add_intercept(Ft)
    alpha = kernel_weights(X, Xt, 1e-6 * np.trace(X.T @ X) / X.shape[1])
    onehot = np.eye(k)[y]
    np.testing.assert_array_equal(und.ls_pred, np.argmax(alpha.T @ onehot, axis=1))
    assert np.all(und.ls_flips >= 1)
    # the smoothed prediction of the multi-class bound is the same argmax for the same alpha
    np.testing.assert_array_equal(chernoff_bound(alpha, y, 0.1, k).pred, und.ls_pred)


def test_certify_tight_and_kl_equals_the_two_certify_calls(rng):
    """One Chernoff pass, two radii: the same certificates as certify with each bound."""
    F = rng.normal(size=(300, 3))
    y = (F[:, 0] + 0.4 * rng.normal(size=300) > 0).astype(int)
    Ft = rng.normal(size=(40, 3))
    for q in (0.01, 0.2):
        tight, kl = labelflip.certify_tight_and_kl(F, y, Ft, q)
        for got, bound in ((tight, "tight"), (kl, "kl")):
            ref = labelflip.certify(F, y, Ft, q, bound=bound)
            np.testing.assert_array_equal(got.pred, ref.pred)
            np.testing.assert_array_equal(got.radius, ref.radius)
            np.testing.assert_array_equal(got.log_tail, ref.log_tail)
            assert got.lam == ref.lam
        assert (kl.radius <= tight.radius).all() and (tight.radius > kl.radius).any()


def test_distance_order_never_beats_the_greedy_attack_on_the_smoothed_classifier(rng):
    """attack_certified runs the greedy (influence) order only: with the l2-distance order as well,
    best per point (the previous behaviour), the numbers are the same."""
    F = rng.normal(size=(250, 3))
    y = (F[:, 0] + 0.5 * rng.normal(size=250) > 0).astype(int)
    Ft = rng.normal(size=(30, 3))
    for q in (0.02, 0.15):
        cert = labelflip.certify(F, y, Ft, q)
        pts = np.arange(30)
        greedy = evaluation.attack_certified(F, y, Ft, cert, q, pts, slack=80)
        both = evaluation.attack_certified(F, y, Ft, cert, q, pts, slack=80, distance_order=True)
        np.testing.assert_array_equal(greedy, both)
        assert np.isfinite(greedy).sum() >= 10
    with pytest.raises(ValueError, match="distance_order"):
        evaluation.attack_certified(F, y, Ft, cert, q, pts, distance_order=1)


def test_undefended_logistic_attacks_equal_the_best_of_the_three_orders(rng):
    from lib.attacks import attack_logistic

    F = rng.normal(size=(180, 3))
    y = (F[:, 0] + 0.4 * rng.normal(size=180) > 0).astype(int)
    Ft = rng.normal(size=(8, 3)) * 0.5
    und = evaluation.attack_undefended(F, y, Ft, attack_points=6, attack_max_flips=40)
    X, Xt = add_intercept(F), add_intercept(Ft[:6])
    orders = ("distance", "distance_reverse", "influence")
    best = np.min([attack_logistic(X, y, Xt, 40, order=o) for o in orders], axis=0)
    np.testing.assert_array_equal(und.lr_flips, best)
    np.testing.assert_array_equal(und.lr_points, np.arange(6))
    assert np.isfinite(best).any()


def test_embedding_in_inference_mode_equals_the_plain_forward(rng):
    import torch

    from lib.training import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN(3, 16).eval()
    images = rng.integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    with torch.no_grad():
        ref = net.embed(torch.as_tensor(images, dtype=torch.float32) / 255.0).double().numpy()
    np.testing.assert_array_equal(features.embed(net, images), ref)
    # in batches: the same up to float32 rounding (the kernels may sum in another order)
    np.testing.assert_allclose(features.embed(net, images, batch=3), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_certify_grid_in_chunks_equals_one_certify_call_per_q_and_bound(rng, k):
    """The grid's certificates, certified 7 test points at a time, are those of certify on the
    whole test set with each bound (log tails to the last digits: BLAS rounds alpha differently
    for a different chunk shape); best_q, certified and accuracy read them."""
    F = rng.normal(size=(200, 3))
    y = rng.integers(0, k, 200) if k > 2 else (F[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    Ft, yt = rng.normal(size=(23, 3)), rng.integers(0, k, 23)
    grid = evaluation.certify_grid(F, y, Ft, yt, [0.02, 0.2], num_classes=k, chunk=7, report_at=3)
    whole = evaluation.certify_grid(F, y, Ft, yt, [0.02, 0.2], num_classes=k, verbose=False)
    for q in (0.02, 0.2):
        for bound, certs in (("tight", grid.tight), ("kl", grid.kl)):
            ref = labelflip.certify(F, y, Ft, q, bound=bound, num_classes=k)
            np.testing.assert_array_equal(certs[q].pred, ref.pred)
            np.testing.assert_array_equal(certs[q].radius, ref.radius)
            np.testing.assert_allclose(certs[q].log_tail, ref.log_tail, rtol=1e-12)
            np.testing.assert_array_equal({"tight": whole.tight, "kl": whole.kl}[bound][q].radius, ref.radius)
            assert grid.certified(q, 3, bound) == pytest.approx(np.mean((ref.pred == yt) & (ref.radius >= 3)))
        assert grid.accuracy(q) == pytest.approx(np.mean(grid.tight[q].pred == yt))
    for r in (0, 2, 5):
        assert grid.certified(grid.best_q(r), r) == max(grid.certified(q, r) for q in grid.q_grid)
    fig = grid.figure(np.arange(400))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) >= 2
    reach = max(int(np.max(c.radius[c.pred == yt], initial=0)) for c in grid.tight.values())
    assert max(10, reach) <= fig.axes[0].get_xlim()[1] <= min(399, max(10, 1.1 * reach) + 1e-9)
    with pytest.raises(ValueError, match="y_test"):
        evaluation.certify_grid(F, y, Ft, yt[:-1], [0.1], num_classes=k)
    with pytest.raises(ValueError, match="chunk"):
        evaluation.certify_grid(F, y, Ft, yt, [0.1], num_classes=k, chunk=0)


def test_qgrid_table_reads_the_certificates(rng):
    F = rng.normal(size=(120, 3))
    y = (F[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    Ft = rng.normal(size=(15, 3))
    yt = (Ft[:, 0] > 0).astype(int)
    grid = evaluation.certify_grid(F, y, Ft, yt, [0.05, 0.3], verbose=False)
    table = grid.table([0, 4])
    assert list(table.index) == [0.05, 0.3]
    for q in (0.05, 0.3):
        c = grid.tight[q]
        assert table.loc[q, "accuracy"] == np.mean(c.pred == yt)
        assert table.loc[q, "certified at r = 4"] == np.mean((c.pred == yt) & (c.radius >= 4))
        assert table.loc[q, "median vote share bound"] == np.median(c.p_lower)


def test_refit_vs_inner_product_times_both_per_size(rng):
    from lib.bench import refit_vs_inner_product

    X = np.c_[rng.normal(size=(300, 3)), np.ones(300)]
    y = (X[:, 0] > 0).astype(int)
    table = refit_vs_inner_product(X, y, X[:2], 1.0, 0.1, [50, 300, 1000], rng, refits=2, dots=20)
    assert list(table["n"]) == [50, 300, 300]
    assert (table[["refit (s)", "alpha^T y (s)"]] > 0).all().all()


def test_qgrid_median_is_the_largest_radius_half_the_points_reach(rng):
    """Against a direct count: at least half of the test points are correct and certified at the
    median, fewer than half at the median + 1."""
    F = rng.normal(size=(150, 3))
    y = (F[:, 0] + 0.3 * rng.normal(size=150) > 0).astype(int)
    Ft = rng.normal(size=(31, 3))
    yt = (Ft[:, 0] > 0).astype(int)
    grid = evaluation.certify_grid(F, y, Ft, yt, [0.02, 0.2], verbose=False)
    for q in grid.q_grid:
        for bound, certs in (("tight", grid.tight), ("kl", grid.kl)):
            c, med = certs[q], grid.median(q, bound)
            ok = c.pred == yt
            assert 2 * (len(yt) if med < 0 else np.sum(ok & (c.radius >= med))) >= len(yt)
            assert 2 * np.sum(ok & (c.radius >= med + 1)) < len(yt)
