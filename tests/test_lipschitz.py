"""The Lipschitz view of Gaussian smoothing (lib.lipschitz), checked against independent computations:
closed forms for half-planes, quadrants and disks, SciPy's bivariate normal CDF for wedges, Monte
Carlo for non-convex regions, and the bound 1/sigma of Lemma 2 along random lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal, ncx2, norm

from lib import lipschitz
from lib.gaussian import gaussian_radius

SIGMA = 0.35
CENTER, RADIUS = np.array([0.6, 0.2]), 0.9
APEX, ANGLES = np.array([-1.0, -0.8]), (0.35, 0.55)


def toy_labels(y: np.ndarray) -> np.ndarray:
    """A disk (class 1), a thin wedge outside it (class 2), the rest (class 0), in numpy."""
    disk = np.hypot(y[:, 0] - CENTER[0], y[:, 1] - CENTER[1]) < RADIUS
    angle = np.arctan2(y[:, 1] - APEX[1], y[:, 0] - APEX[0])
    wedge = (angle > ANGLES[0]) & (angle < ANGLES[1]) & ~disk
    return np.where(disk, 1, np.where(wedge, 2, 0))


TOY_BOUNDARIES = [
    lipschitz.Circle(CENTER, RADIUS),
    lipschitz.Ray(APEX, ANGLES[0]),
    lipschitz.Ray(APEX, ANGLES[1]),
]


def monte_carlo(labels, x, num_classes, n=400_000, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for xi in x:
        lab = labels(xi + SIGMA * rng.standard_normal((n, 2)))
        out.append(np.bincount(lab, minlength=num_classes) / n)
    return np.array(out)


# ---------------------------------------------------------------- radii


def test_lipschitz_certificate_holds_for_random_linear_scores(rng):
    """Scores s_c(x) = w_c . x + b_c are L-Lipschitz with L = max ||w_c||; inside the radius
    (s_A - s_B) / 2L the argmax never changes, and just outside it can."""
    for _ in range(50):
        w, b = rng.normal(size=(4, 3)), rng.normal(size=4)
        x = rng.normal(size=3)
        s = w @ x + b
        top, runner = np.argsort(s)[::-1][:2]
        lip = np.linalg.norm(w, axis=1).max()
        r = lipschitz.lipschitz_radius(s[top] - s[runner], lip)
        assert r == pytest.approx((s[top] - s[runner]) / (2 * lip))
        d = rng.normal(size=(2000, 3))
        d *= (r * rng.uniform(0, 1, size=(2000, 1)) ** (1 / 3)) / np.linalg.norm(d, axis=1, keepdims=True)
        assert np.all(np.argmax((x + d) @ w.T + b, axis=1) == top)
    assert lipschitz.lipschitz_radius(-1.0, 2.0) == 0.0
    with pytest.raises(ValueError):
        lipschitz.lipschitz_radius(1.0, 0.0)


def test_lipschitz_certificate_is_tight_for_two_opposite_scores():
    """s_A = -s_B = u . x: both move by L ||delta|| in opposite directions, the gap closes at 2L."""
    u = np.array([0.6, 0.8])
    x = np.array([1.0, 0.5])
    gap = 2 * (u @ x)
    r = lipschitz.lipschitz_radius(gap, 1.0)
    assert (u @ (x - r * u)) == pytest.approx(0.0, abs=1e-12)


def test_cohen_radius_is_the_certificate_of_probit_scores():
    p = np.linspace(0.501, 0.9999, 300)
    # binary: p_B = 1 - p_A gives CERTIFY's sigma Phi^{-1}(p_A)
    np.testing.assert_allclose(lipschitz.cohen_radius(p, 1 - p, 0.7), gaussian_radius(p, 0.7), rtol=1e-12)
    # it is the Lipschitz certificate of z_c = Phi^{-1}(p_c) with L = 1/sigma
    pb = 0.3 * (1 - p)
    gap = norm.ppf(p) - norm.ppf(pb)
    np.testing.assert_allclose(
        lipschitz.cohen_radius(p, pb, 0.7), lipschitz.lipschitz_radius(gap, 1 / 0.7), rtol=1e-12
    )
    assert lipschitz.cohen_radius(0.4, 0.5, 1.0) == 0.0
    assert lipschitz.cohen_radius(0.6, 0.0, 1.0) == math.inf
    assert lipschitz.cohen_radius(1.0, 0.0, 1.0) == math.inf


def test_raw_score_radius_is_below_cohen_and_matches_it_to_first_order():
    p = np.linspace(0.5 + 1e-6, 1 - 1e-9, 2000)
    cohen = lipschitz.cohen_radius(p, 1 - p, 1.0)
    lemma1 = lipschitz.raw_score_radius(p, 1 - p, 1.0)
    sharp = lipschitz.raw_score_radius(p, 1 - p, 1.0, constant=lipschitz.SHARP_RAW_SCORE_CONSTANT)
    np.testing.assert_allclose(lemma1, math.sqrt(math.pi / 2) * (2 * p - 1) / 2, rtol=1e-12)
    np.testing.assert_allclose(sharp, 2 * lemma1, rtol=1e-12)
    assert np.all(lemma1 < sharp) and np.all(sharp <= cohen * (1 + 1e-9))
    # near p = 1/2 Phi^{-1}(p) ~ sqrt(2 pi)(p - 1/2): ratios 2 (Lemma 1) and 1 (sharp constant)
    assert cohen[0] / lemma1[0] == pytest.approx(2.0, rel=1e-5)
    assert cohen[0] / sharp[0] == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------- exact smoothed scores


def test_half_plane_closed_form_and_slope_one_over_sigma(rng):
    """f = 1{n . y > c}: p_1(x) = Phi((n . x - c) / sigma), so Phi^{-1}(p_1) is linear with slope
    1/sigma along n (Lemma 2 with equality) and |n . v| / sigma along a unit v."""
    angle = 0.7
    n = np.array([math.cos(angle), math.sin(angle)])
    c = 0.3
    boundary = [lipschitz.Line(c * n, angle + math.pi / 2)]

    def labels(y):
        return (y @ n > c).astype(int)

    x = rng.uniform(-2, 2, size=(500, 2))
    p = lipschitz.smoothed_scores_2d(x, labels, boundary, 2, SIGMA)
    np.testing.assert_allclose(p[:, 1], norm.cdf((x @ n - c) / SIGMA), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-14)
    t = np.linspace(-1.5, 1.5, 201)
    for v, slope in [(n, 1 / SIGMA), (np.array([1.0, 0.0]), abs(n[0]) / SIGMA)]:
        line = (0.1 + t[:, None] * v)[None]
        p_line = lipschitz.smoothed_scores_2d(line[0], labels, boundary, 2, SIGMA)[None]
        sec = lipschitz.probit_secants(p_line, p_line, t[1] - t[0])
        assert sec.checked.all()
        np.testing.assert_allclose(sec.slopes, slope, rtol=1e-9)


def test_quadrant_is_a_product_of_normal_cdfs(rng):
    corner = (0.2, -0.1)
    boundary = [lipschitz.Ray(corner, 0.0), lipschitz.Ray(corner, math.pi / 2)]

    def labels(y):
        return ((y[:, 0] > corner[0]) & (y[:, 1] > corner[1])).astype(int)

    x = rng.uniform(-2, 2, size=(400, 2))
    p = lipschitz.smoothed_scores_2d(x, labels, boundary, 2, SIGMA)
    exact = norm.cdf((x[:, 0] - corner[0]) / SIGMA) * norm.cdf((x[:, 1] - corner[1]) / SIGMA)
    np.testing.assert_allclose(p[:, 1], exact, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("lo, hi", [(0.35, 0.55), (-0.4, 1.3), (0.5, 3.0)])
def test_wedge_matches_the_bivariate_normal_cdf(rng, lo, hi):
    """The wedge {angle(y - a) in (lo, hi)} (opening below pi) is {n1 . (y - a) > 0, n2 . (y - a) > 0}
    with inward normals n1, n2: a bivariate normal orthant probability."""
    boundary = [lipschitz.Ray(APEX, lo), lipschitz.Ray(APEX, hi)]

    def labels(y):
        ang = np.mod(np.arctan2(y[:, 1] - APEX[1], y[:, 0] - APEX[0]) - lo, 2 * math.pi)
        return (ang < hi - lo).astype(int)

    n1 = np.array([-math.sin(lo), math.cos(lo)])
    n2 = np.array([math.sin(hi), -math.cos(hi)])
    x = rng.uniform(-2.5, 2.5, size=(60, 2))
    p = lipschitz.smoothed_scores_2d(x, labels, boundary, 2, SIGMA)
    # P(n1 . (x - a + sigma Z) > 0, n2 . (...) > 0) = P(U1 < n1 . (x - a) / sigma, U2 < ...), U = -N Z
    cov = np.array([[1.0, n1 @ n2], [n1 @ n2, 1.0]])
    bounds = np.stack([(x - APEX) @ n1, (x - APEX) @ n2], axis=1) / SIGMA
    exact = multivariate_normal(mean=[0, 0], cov=cov).cdf(bounds)
    np.testing.assert_allclose(p[:, 1], exact, atol=1e-7)


def test_disk_matches_the_noncentral_chi_square_even_next_to_the_circle(rng):
    boundary = [lipschitz.Circle(CENTER, RADIUS)]

    def labels(y):
        return (np.hypot(y[:, 0] - CENTER[0], y[:, 1] - CENTER[1]) < RADIUS).astype(int)

    near = [
        CENTER + (RADIUS + e) * np.array([math.cos(a), math.sin(a)])
        for e in (-0.3, -1e-3, -1e-9, 1e-9, 1e-3, 0.3)
        for a in (0.1, 2.0, 4.0)
    ]
    x = np.concatenate([rng.uniform(-2.5, 2.5, size=(300, 2)), near, [CENTER]])
    p = lipschitz.smoothed_scores_2d(x, labels, boundary, 2, SIGMA)
    nc = ((x - CENTER) ** 2).sum(axis=1) / SIGMA**2
    inside = ncx2.cdf(RADIUS**2 / SIGMA**2, 2, nc)
    outside = ncx2.sf(RADIUS**2 / SIGMA**2, 2, nc)
    np.testing.assert_allclose(p[:, 1], inside, atol=1e-13)
    np.testing.assert_allclose(p[:, 0], outside, atol=1e-13)
    assert p[-1, 1] == pytest.approx(1 - math.exp(-(RADIUS**2) / (2 * SIGMA**2)), abs=1e-14)


def test_toy_and_a_nonconvex_polygon_match_monte_carlo(rng):
    """Regions that no closed form covers: the disk-and-wedge toy (3 classes) and an L-shaped
    polygon, against 400 000 Gaussian draws per point (within 5 standard errors)."""
    x = rng.uniform(-1.5, 1.5, size=(8, 2))
    p = lipschitz.smoothed_scores_2d(x, toy_labels, TOY_BOUNDARIES, 3, SIGMA)
    mc = monte_carlo(toy_labels, x, 3)
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / 400_000)
    assert np.all(np.abs(p - mc) < 5 * se + 1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)

    corners = [(-0.5, -0.5), (0.7, -0.5), (0.7, 0.0), (0.0, 0.0), (0.0, 0.6), (-0.5, 0.6)]
    edges = [lipschitz.Segment(corners[i], corners[(i + 1) % 6]) for i in range(6)]

    def in_l(y):
        box = (y[:, 0] > -0.5) & (y[:, 0] < 0.7) & (y[:, 1] > -0.5) & (y[:, 1] < 0.6)
        notch = (y[:, 0] > 0.0) & (y[:, 1] > 0.0)
        return (box & ~notch).astype(int)

    p = lipschitz.smoothed_scores_2d(x, in_l, edges, 2, SIGMA)
    mc = monte_carlo(in_l, x, 2, seed=1)
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / 400_000)
    assert np.all(np.abs(p - mc) < 5 * se + 1e-6)


def test_corners_of_the_toy():
    pts = lipschitz.corners(TOY_BOUNDARIES)
    on_circle = np.isclose(np.hypot(*(pts - CENTER).T), RADIUS)
    assert on_circle.sum() == 4  # each wedge edge crosses the circle twice
    assert np.all(np.isclose(pts[~on_circle], APEX).all(axis=1))


def test_bad_arguments_are_refused():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError):
        lipschitz.smoothed_scores_2d(np.zeros((3, 3)), toy_labels, TOY_BOUNDARIES, 3, SIGMA)
    with pytest.raises(ValueError):
        lipschitz.smoothed_scores_2d(x, lambda y: np.full(len(y), 3), TOY_BOUNDARIES, 3, SIGMA)
    with pytest.raises(ValueError):
        lipschitz.smoothed_scores_2d(x, toy_labels, [], 3, SIGMA)
    with pytest.raises(ValueError):
        lipschitz.Segment((0, 0), (0, 0))


# ---------------------------------------------------------------- Lemma 2 along random lines


def test_probit_scores_are_one_over_sigma_lipschitz_and_raw_scores_sharp_constant():
    """Lemma 2 on the toy: no checked secant of Phi^{-1}(p_c) is steeper than 1/sigma beyond its
    error, while some come close (the check can fail); the raw scores p_c stay below the sharp
    constant 1/(sigma sqrt(2 pi)), half of Lemma 1's sqrt(2/pi)/sigma."""
    lines, step = lipschitz.random_lines(6, 200, 2.5, seed=3)
    flat = lines.reshape(-1, 2)
    p, p_ref = (
        lipschitz.smoothed_scores_2d(flat, toy_labels, TOY_BOUNDARIES, 3, SIGMA, order=o).reshape(6, 200, 3)
        for o in (8, 16)
    )
    sec = lipschitz.probit_secants(p, p_ref, step)
    assert sec.checked.mean() > 0.5
    assert np.nanmax(sec.tolerance) * SIGMA < 1e-3
    assert sec.excess() <= 1 / SIGMA
    assert np.nanmax(sec.slopes) * SIGMA > 0.9
    raw = lipschitz.secant_slopes(p_ref, step) * SIGMA
    assert raw.max() <= lipschitz.SHARP_RAW_SCORE_CONSTANT + 1e-9
    # a claim of a smaller constant than 1/sigma would fail on the same data
    assert np.nanmax(sec.slopes - sec.tolerance) > 0.95 / SIGMA


def test_probit_secants_flags_extreme_scores_and_needs_matching_shapes():
    p = np.array([[[1e-12, 1 - 1e-12], [0.3, 0.7], [0.4, 0.6]]])
    sec = lipschitz.probit_secants(p, p, 0.1)
    assert sec.checked.tolist() == [[[False, False], [True, True]]]
    with pytest.raises(ValueError):
        lipschitz.probit_secants(p, p[:, :2], 0.1)


def test_random_lines_are_evenly_spaced_chords_of_the_square():
    lines, steps = lipschitz.random_lines(50, 40, 2.0, seed=1)
    assert lines.shape == (50, 40, 2) and steps.shape == (50,)
    gaps = np.linalg.norm(np.diff(lines, axis=1), axis=2)
    np.testing.assert_allclose(gaps, np.broadcast_to(steps[:, None], gaps.shape))
    assert np.all(np.abs(lines) <= 2.0 + 1e-12)
    # both ends lie on the boundary of the square
    assert np.allclose(np.abs(lines[:, [0, -1]]).max(axis=2), 2.0)
    # secant slopes use each line's own spacing
    v = np.arange(40.0)[None, :] * steps[:, None]
    np.testing.assert_allclose(lipschitz.secant_slopes(v, steps), 1.0)
    with pytest.raises(ValueError):
        lipschitz.secant_slopes(v, -steps)
