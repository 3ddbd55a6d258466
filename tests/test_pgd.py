"""l2 PGD on a linear classifier, where the smallest successful perturbation is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.gaussian import ABSTAIN
from lib.pgd import attacked_accuracy_curve, pgd_l2, soundness_violations


class TwoClassLinear(torch.nn.Module):
    """Scores (0, w.x + b): class 1 iff w.x + b > 0; the l2 distance to the boundary is |w.x+b|/||w||."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.b = float(b)

    def forward(self, x):
        s = x.reshape(len(x), -1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


@pytest.mark.parametrize("sigma", [0.0, 0.2])
def test_pgd_flips_exactly_beyond_the_boundary_distance(sigma):
    torch.manual_seed(0)
    w = torch.randn(16)
    model = TwoClassLinear(w.tolist(), 0.0)
    x = 0.4 + 0.2 * torch.rand(64, 16)  # away from the box edges
    x = x - ((x @ w) / w.dot(w)).view(-1, 1) * w * 0.5  # moves every point toward the boundary
    y = (x @ w > 0).long()
    dist = ((x @ w).abs() / w.norm()).numpy()
    for eps in (0.05, 0.2, 0.5):
        adv = pgd_l2(model, x, y, eps, steps=30, sigma=sigma, samples=4)
        assert torch.all((adv - x).norm(dim=1) <= eps * (1 + 1e-5))
        assert torch.all((adv >= 0) & (adv <= 1))
        flipped = (model(adv).argmax(1) != y).numpy()
        # a flip is impossible within the boundary distance, and PGD finds one well beyond it
        assert not np.any(flipped & (dist > eps))
        inside_box = ((x - 0.0) > 0.3).all(1).numpy() & ((1.0 - x) > 0.3).all(1).numpy()
        assert np.all(flipped[(dist < 0.8 * eps) & inside_box])


def test_attacked_accuracy_curve_counts_a_break_at_every_larger_radius():
    ok = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=bool)
    np.testing.assert_allclose(attacked_accuracy_curve(ok), [2 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="still_correct"):
        attacked_accuracy_curve(np.ones(3, dtype=bool))


def test_soundness_violations_only_inside_the_certified_ball():
    classes = np.array([1, 1, ABSTAIN, 2])
    radii = np.array([0.5, 0.5, 0.0, 1.0])
    attacked = np.array([[2, 2], [ABSTAIN, 1], [3, 3], [2, 0]])
    eps = np.array([0.25, 0.5])
    expected = np.array([[True, False], [False, False], [False, False], [False, True]])
    np.testing.assert_array_equal(soundness_violations(classes, radii, attacked, eps), expected)


def test_bad_arguments_are_named():
    model = TwoClassLinear([1.0, 0.0], 0.0)
    x, y = torch.rand(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps"):
        pgd_l2(model, x, y, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        pgd_l2(model, x, y, 0.1, sigma=-1)


def test_attack_helpers_equal_the_loops_they_replace():
    """attack_base and attack_smoothed_predict give the same curves and PREDICT answers as
    attacking and predicting eps by eps, with the same seeds and the same generator order;
    the linear model's boundary distance makes the base curve checkable in closed form too."""
    from lib.gaussian import Smooth
    from lib.pgd import attack_base, attack_smoothed_predict, predict_many

    torch.manual_seed(1)
    w = torch.randn(16)
    model = TwoClassLinear(w.tolist(), 0.0)
    x = 0.4 + 0.2 * torch.rand(12, 16)
    x = x - ((x @ w) / w.dot(w)).view(-1, 1) * w * 0.6
    y = (x @ w > 0).long()
    grid = [0.05, 0.3, 1.0]
    base = attack_base(model, x, y, grid, steps=30, seed=2)
    ok = [np.ones(12, bool)]
    for e in grid:
        ok.append(model(pgd_l2(model, x, y, e, steps=30, seed=2)).argmax(1).numpy() == y.numpy())
    np.testing.assert_array_equal(base, attacked_accuracy_curve(np.array(ok).T))
    dist = ((x @ w).abs() / w.norm()).numpy()
    assert np.all(
        base[1:] >= np.array([np.mean(dist > e) for e in grid]) - 1e-12
    )  # no flip within the distance

    curve, preds = attack_smoothed_predict(
        Smooth(model, 2, 0.1, seed=5), x, y, grid, steps=10, samples=2, predict_n=200, batch_size=64, seed=3
    )
    ref_smooth = Smooth(model, 2, 0.1, seed=5)
    ref = [predict_many(ref_smooth, x, 200, 0.001, 64)]
    for e in grid:
        adv = pgd_l2(model, x, y, e, steps=10, sigma=0.1, samples=2, seed=3)
        ref.append(predict_many(ref_smooth, adv, 200, 0.001, 64))
    ref = np.array(ref).T
    np.testing.assert_array_equal(preds, ref)
    not_wrong = (ref == y.numpy()[:, None]) | (ref == ABSTAIN)
    np.testing.assert_array_equal(curve, attacked_accuracy_curve(not_wrong))
