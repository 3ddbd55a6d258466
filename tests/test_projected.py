"""The fast CERTIFY path for projected base classifiers: same law as the direct path.

A projected network with a linear vote in disguise (relu(a) - relu(-a) = a) has p_A in closed
form; the direct path (noise in input space), the projected path (noise in k dimensions) and a
shared noise bank must all match it within Clopper-Pearson slack. For a generic projected
network the projected and direct counts must agree (two-sample test), and each noisy copy must
give the same scores on both paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta, chi2_contingency, norm

from lib.gaussian import ABSTAIN, Smooth
from lib.projected import ProjectedMLP, pca_basis, train_projected

D, K = 20, 5


def _basis(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((200, D)) * rng.random(D) * 3
    return pca_basis(images, K)


def _linear_in_disguise(w, c, seed=0):
    """ProjectedMLP whose class-1 score is w . Q(x - m) + c and class-0 score is 0."""
    mean, basis = _basis(seed)
    model = ProjectedMLP(mean, basis, hidden=2, num_classes=2)
    with torch.no_grad():
        wt = torch.tensor(w, dtype=torch.float32)
        model.first.weight.copy_(torch.stack([wt, -wt]))
        model.first.bias.copy_(torch.tensor([c, -c], dtype=torch.float32))
        model.out.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
        model.out.bias.zero_()
    return model


def _two_sided_cp(k, n, level):
    lo = beta.ppf(level / 2, k, n - k + 1) if k > 0 else 0.0
    hi = beta.ppf(1 - level / 2, k + 1, n - k) if k < n else 1.0
    return lo, hi


def test_pca_basis_is_orthonormal_and_the_model_checks_it():
    mean, basis = _basis()
    np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(K), atol=1e-5)
    with pytest.raises(ValueError, match="orthonormal"):
        ProjectedMLP(mean, 2 * basis, hidden=4)
    with pytest.raises(ValueError, match="k must be at most"):
        pca_basis(np.zeros((3, D)), 4)


def test_each_noisy_copy_scores_the_same_on_both_paths():
    """f(x + eps) = W2 relu(a0(x) + V Q eps) + b2, copy by copy."""
    torch.manual_seed(0)
    mean, basis = _basis()
    model = ProjectedMLP(mean, basis, hidden=16, num_classes=3)
    x = torch.rand(D)
    eps = torch.randn(50, D) * 0.7
    direct = model(x + eps)
    fast = model.scores_from_pre_activation(
        model.pre_activation(x) + (eps @ basis.T) @ model.noise_matrix().T
    )
    torch.testing.assert_close(direct, fast, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", ["direct", "projected", "bank"])
def test_counts_match_the_closed_form_on_every_path(path):
    w, c, sigma, n = [0.6, -0.3, 0.2, 0.5, 0.1], 0.15, 0.8, 40000
    model = _linear_in_disguise(w, c)
    x = torch.rand(D)
    smooth = Smooth(model, num_classes=2, sigma=sigma, seed=3, use_projection=path != "direct")
    assert smooth.projected == (path != "direct")
    margin = float(torch.tensor(w) @ model.project(x.unsqueeze(0))[0]) + c
    p1 = norm.cdf(margin / (sigma * np.linalg.norm(w)))
    bank = smooth.noise_bank(n) if path == "bank" else None
    counts = smooth.sample_counts(x, n, 4096, bank=bank)
    lo, hi = _two_sided_cp(int(counts[1]), n, 1e-6)
    assert lo <= p1 <= hi, (counts, p1)


def test_projected_and_direct_counts_agree_for_a_nonlinear_network():
    torch.manual_seed(1)
    mean, basis = _basis(1)
    model = ProjectedMLP(mean, basis, hidden=32, num_classes=4)
    x = torch.rand(D) * 2
    n = 30000
    fast = Smooth(model, 4, sigma=0.5, seed=0).sample_counts(x, n, 5000)
    direct = Smooth(model, 4, sigma=0.5, seed=1, use_projection=False).sample_counts(x, n, 5000)
    table = np.array([fast, direct])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] > 1:
        assert chi2_contingency(table).pvalue > 1e-6, table


def test_certify_with_shared_banks_keeps_the_guarantee():
    """Each trial draws new banks: the answer for one x is wrong (class or radius beyond the
    true sigma Phi^-1(p_A)) at rate <= alpha."""
    w, c, sigma, alpha = [0.6, -0.3, 0.2, 0.5, 0.1], 0.05, 0.5, 0.1
    model = _linear_in_disguise(w, c)
    x = torch.rand(D)
    margin = float(torch.tensor(w) @ model.project(x.unsqueeze(0))[0]) + c
    p_a = norm.cdf(abs(margin) / (sigma * np.linalg.norm(w)))
    true_class, true_radius = int(margin > 0), sigma * norm.ppf(p_a)
    smooth = Smooth(model, 2, sigma=sigma, seed=5)
    trials, wrong = 400, 0
    for _ in range(trials):
        banks = (smooth.noise_bank(20), smooth.noise_bank(200))
        cls, radius = smooth.certify(x, 20, 200, alpha, 200, banks=banks)
        wrong += cls != ABSTAIN and (cls != true_class or radius > true_radius)
    assert wrong <= alpha * trials + 3 * np.sqrt(alpha * (1 - alpha) * trials)


def test_certify_many_shares_noise_and_matches_single_calls():
    model = _linear_in_disguise([0.6, -0.3, 0.2, 0.5, 0.1], 0.4)
    xs = torch.rand(4, D)
    smooth = Smooth(model, 2, sigma=0.3, seed=7)
    classes, radii = smooth.certify_many(xs, 50, 2000, 0.001, 500, progress=False)
    again = Smooth(model, 2, sigma=0.3, seed=7)
    banks = (again.noise_bank(50), again.noise_bank(2000))
    for i in range(4):
        assert (classes[i], radii[i]) == again.certify(xs[i], 50, 2000, 0.001, 500, banks=banks)


def test_bank_of_the_wrong_size_or_smooth_is_rejected():
    model = _linear_in_disguise([1, 0, 0, 0, 0], 0.0)
    smooth = Smooth(model, 2, sigma=0.3)
    with pytest.raises(ValueError, match="bank must hold"):
        smooth.sample_counts(torch.rand(D), 10, 5, bank=smooth.noise_bank(11))
    other = Smooth(model, 2, sigma=0.4)
    with pytest.raises(ValueError, match="bank must hold"):
        smooth.sample_counts(torch.rand(D), 10, 5, bank=other.noise_bank(10))
    direct = Smooth(model, 2, sigma=0.3, use_projection=False)
    with pytest.raises(ValueError, match="input_shape"):
        direct.noise_bank(10)


def test_training_is_seeded_and_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, D)) * np.r_[5.0, np.ones(D - 1)]).astype(
        np.float32
    )  # class in a top direction
    y = (x[:, 0] > 0).astype(np.int64)
    mean, basis = pca_basis(x, K)
    a = train_projected(
        x, y, 0.1, mean, basis, hidden=16, num_classes=2, epochs=20, batch_size=64, progress=False
    )
    b = train_projected(
        x, y, 0.1, mean, basis, hidden=16, num_classes=2, epochs=20, batch_size=64, progress=False
    )
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    with torch.no_grad():
        acc = (a(torch.as_tensor(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.8
    with pytest.raises(ValueError, match="sigma"):
        train_projected(x, y, -1.0, mean, basis)


def test_certify_many_shares_noise_for_a_classifier_that_is_not_projected():
    """The input-space bank path: same answers as single calls over the same banks."""
    model = _linear_in_disguise([0.6, -0.3, 0.2, 0.5, 0.1], 0.4)
    xs = torch.rand(3, D)
    smooth = Smooth(model, 2, sigma=0.3, seed=2, use_projection=False)
    classes, radii = smooth.certify_many(xs, 50, 1000, 0.001, 250, progress=False)
    again = Smooth(model, 2, sigma=0.3, seed=2, use_projection=False)
    banks = (again.noise_bank(50, (D,)), again.noise_bank(1000, (D,)))
    for i in range(3):
        assert (classes[i], radii[i]) == again.certify(xs[i], 50, 1000, 0.001, 250, banks=banks)


def test_trained_projected_caches_under_the_chapter_key(tmp_path, monkeypatch):
    """The first call trains and caches, the second loads the same weights; the file name is the
    one the chapter's own key (cache_key over data, hyper-parameters and lib/training.py) gives."""
    from lib.projected import pca_basis, trained_projected
    from lib.training import cache_key

    monkeypatch.setenv("RS_BOOK_DATA", str(tmp_path))
    g = np.random.default_rng(0)
    x = g.random((64, 784)).astype(np.float32)
    y = g.integers(0, 10, 64)
    mean, basis = pca_basis(x, 4)
    first, cached1, _ = trained_projected(x, y, 0.5, mean, basis, 8, epochs=1, seed=0, consistency=1.0)
    second, cached2, _ = trained_projected(x, y, 0.5, mean, basis, 8, epochs=1, seed=0, consistency=1.0)
    assert not cached1 and cached2
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    key = cache_key(
        x, y, sigma=0.5, epochs=1, seed=0, k=4, hidden=8, consistency=1.0, copies=2, model="ProjectedMLP"
    )
    assert (tmp_path / "models" / f"mnist-projected-0.5-{key[:20]}.pt").exists()
