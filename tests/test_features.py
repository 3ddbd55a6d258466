from __future__ import annotations

import numpy as np
import pytest

from lib.features import flatten_images, pca_features


def test_pca_whitened_and_label_free(rng):
    x = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    ftr, fte = pca_features(x, x[:7], 4)
    np.testing.assert_allclose(ftr.T @ ftr / 300, np.eye(4), atol=1e-10)  # whitened, uncorrelated
    np.testing.assert_allclose(fte, ftr[:7])
    # the projection spans the top-4 eigenvectors of the covariance
    cov = np.cov(x.T, bias=True)
    w, v = np.linalg.eigh(cov)
    top = v[:, -4:]
    proj = (x - x.mean(0)) @ top
    resid = ftr - proj @ np.linalg.lstsq(proj, ftr, rcond=None)[0]
    assert np.abs(resid).max() < 1e-8


def test_flatten_and_bad_input():
    imgs = np.full((2, 3, 3), 255, dtype=np.uint8)
    assert flatten_images(imgs).shape == (2, 9) and flatten_images(imgs).max() == 1.0
    with pytest.raises(ValueError, match="k"):
        pca_features(np.zeros((5, 3)), np.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="dimensions"):
        pca_features(np.ones((5, 3)), np.zeros((2, 2)), 2)


def test_significant_components_counts_directions_with_real_variance(rng):
    from lib.features import significant_components

    base = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 8))  # rank 3
    assert significant_components(base) == 3
    noisy = base + 1e-9 * rng.normal(size=base.shape)  # rank 8 numerically, 3 significantly
    assert significant_components(noisy) == 3
    assert significant_components(noisy, rtol=1e-12) == 8
    with pytest.raises(ValueError, match="rtol"):
        significant_components(base, rtol=0.0)


def test_pca_by_the_scatter_matrix_matches_the_svd():
    """The top directions from the d x d scatter matrix equal the SVD's up to sign, and the
    whitened features agree (to sign) with those of a direct SVD."""
    from lib.features import _top_directions

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 40)) @ rng.normal(size=(40, 40)) * rng.uniform(0.1, 3, size=40)
    xc = x - x.mean(axis=0)
    comps, s = _top_directions(xc, 12)
    _, s_ref, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(s, s_ref[:12], rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(comps * vt[:12].T, axis=0)), 1.0, atol=1e-9)
    F, Ft = pca_features(x, x[:50], 12)
    ref = xc @ (vt[:12].T / (s_ref[:12] / np.sqrt(len(x))))
    np.testing.assert_allclose(np.abs(F), np.abs(ref), rtol=1e-7, atol=1e-7)
    assert np.allclose(np.abs(Ft), np.abs(ref[:50]), rtol=1e-7, atol=1e-7)
