r"""The Lipschitz view of Gaussian smoothing (Salman et al., 2019, Appendix A), and exact smoothed
scores of planar classifiers to check it (chapter 1).

Lipschitz certificate. Let every class score s_c : R^d -> R be L-Lipschitz in l2, let A be the
top class at x and B the runner-up, with s_A(x) - s_B(x) > 0. For ||delta|| < r and any c != A,

    s_A(x + delta) - s_c(x + delta) >= s_A(x) - s_c(x) - 2 L ||delta|| >= s_A(x) - s_B(x) - 2 L ||delta||,

because each score moves by at most L ||delta||. So the argmax stays A on the open ball of radius
r = (s_A(x) - s_B(x)) / (2 L) (:func:`lipschitz_radius`).

Gaussian smoothing. For a base classifier f and p_c(x) = P(f(x + sigma Z) = c), Z ~ N(0, I):

* Lemma 2 of Salman et al.: x -> Phi^{-1}(p_c(x)) is (1/sigma)-Lipschitz, for every f. Along a
  unit direction u, d/dt p_c(x + t u) = E[1{f(x + sigma Z) = c} (u.Z)] / sigma; among all
  [0, 1]-valued functions with mean p the half-space {u.Z >= -Phi^{-1}(p)} maximises
  E[h(Z) (u.Z)] (Neyman-Pearson), with value phi(Phi^{-1}(p)). So |d/dt p_c| <= phi(Phi^{-1}(p_c)) / sigma,
  and by the chain rule |d/dt Phi^{-1}(p_c)| <= 1/sigma; for a half-space f the map is exactly
  linear with slope 1/sigma along the normal. The certificate with s_c = Phi^{-1}(p_c) and
  L = 1/sigma is Cohen et al.'s radius sigma/2 (Phi^{-1}(p_A) - Phi^{-1}(p_B)) (:func:`cohen_radius`).
* Lemma 1 of Salman et al.: p_c itself is sqrt(2/pi)/sigma-Lipschitz
  (:data:`RAW_SCORE_CONSTANT`); the certificate then gives sigma sqrt(pi/2) (p_A - p_B) / 2
  (:func:`raw_score_radius`). For [0, 1]-valued scores the smallest constant is
  1/(sigma sqrt(2 pi)) (:data:`SHARP_RAW_SCORE_CONSTANT`, the same bound with the sup of
  phi(Phi^{-1}(p)) over p, attained by a half-space at its boundary); both raw radii are at most
  Cohen's, since (Phi^{-1})'(p) = 1 / phi(Phi^{-1}(p)) >= sqrt(2 pi) for every p.

Exact smoothed scores in the plane (:func:`smoothed_scores_2d`), to check Lemma 2 on classifiers
that are not half-planes. For a planar classifier whose regions are bounded by circles and straight
pieces (segments, rays, lines), Green's theorem turns each p_c(x) into an integral over the
boundaries, closed form on straight pieces (Owen's T function) and a closed form plus a smooth
remainder on circular arcs; the results agree with closed forms (half-planes, quadrants, disks),
SciPy's bivariate normal CDF (wedges) and Monte Carlo (tests/test_lipschitz.py).
:func:`random_lines` and :func:`probit_secants` measure the slopes of Phi^{-1}(p_c) along lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import owens_t
from scipy.stats import norm

from . import _checks

__all__ = [
    "RAW_SCORE_CONSTANT",
    "SHARP_RAW_SCORE_CONSTANT",
    "lipschitz_radius",
    "cohen_radius",
    "raw_score_radius",
    "Circle",
    "Segment",
    "Ray",
    "Line",
    "corners",
    "smoothed_scores_2d",
    "probit_scores",
    "random_lines",
    "secant_slopes",
    "ProbitSecants",
    "probit_secants",
]

RAW_SCORE_CONSTANT = math.sqrt(2.0 / math.pi)
"""sigma times the Lipschitz constant of p_c = smoothing of a [0, 1]-valued f (Salman et al., Lemma 1)."""

SHARP_RAW_SCORE_CONSTANT = 1.0 / math.sqrt(2.0 * math.pi)
"""sigma times the smallest such constant: sup_p phi(Phi^{-1}(p)) = phi(0), half of Lemma 1's."""


# ---------------------------------------------------------------- radii


def lipschitz_radius(gap: ArrayLike, lipschitz: float) -> NDArray[np.float64] | float:
    """(s_A - s_B) / (2 L): the argmax of L-Lipschitz scores is constant on the open ball of this
    radius around x, where ``gap`` = s_A(x) - s_B(x) > 0; 0 where the gap is not positive."""
    lip = _checks.positive(lipschitz, "lipschitz")
    g = np.asarray(gap, dtype=float)
    if np.any(np.isnan(g)):
        raise ValueError("gap contains NaN")
    out = np.where(g > 0, g / (2.0 * lip), 0.0)
    return float(out) if out.ndim == 0 else out


def cohen_radius(p_a: ArrayLike, p_b: ArrayLike, sigma: float) -> NDArray[np.float64] | float:
    """sigma/2 (Phi^{-1}(p_A) - Phi^{-1}(p_B)): the certificate for the (1/sigma)-Lipschitz scores
    Phi^{-1}(p_c) (Cohen et al., Theorem 1); 0 where p_A <= p_B. With p_B = 1 - p_A it is
    sigma Phi^{-1}(p_A)."""
    pa = _checks.probability_array(p_a)
    pb = _checks.probability_array(p_b)
    s = _checks.positive(sigma, "sigma")
    with np.errstate(invalid="ignore"):  # inf - inf where p_A = 1 and p_B = 0 is inf, not nan
        gap = np.where(pb == 0.0, np.inf, norm.ppf(pa) - norm.ppf(pb))
        gap = np.where(pa == 1.0, np.inf, gap)
    out = np.where(pa > pb, 0.5 * s * gap, 0.0)
    return float(out) if out.ndim == 0 else out


def raw_score_radius(
    p_a: ArrayLike, p_b: ArrayLike, sigma: float, constant: float = RAW_SCORE_CONSTANT
) -> NDArray[np.float64] | float:
    """(p_A - p_B) / (2 L) with L = constant / sigma: the certificate for the raw scores p_c.
    The default is Lemma 1's constant sqrt(2/pi), giving sigma sqrt(pi/2) (p_A - p_B) / 2;
    :data:`SHARP_RAW_SCORE_CONSTANT` gives twice that. 0 where p_A <= p_B."""
    pa = _checks.probability_array(p_a)
    pb = _checks.probability_array(p_b)
    s = _checks.positive(sigma, "sigma")
    c = _checks.positive(constant, "constant")
    out = np.where(pa > pb, (pa - pb) * s / (2.0 * c), 0.0)
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------- exact smoothed scores in the plane


def _point(p, name: str) -> tuple[float, float]:
    a = np.asarray(p, dtype=float)
    if a.shape != (2,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite point of the plane; got {p!r}")
    return float(a[0]), float(a[1])


@dataclass(frozen=True)
class Circle:
    """The circle of ``radius`` around ``center``, run counter-clockwise (parameter: the angle psi)."""

    center: tuple[float, float]
    radius: float

    def __post_init__(self):
        object.__setattr__(self, "center", _point(self.center, "center"))
        object.__setattr__(self, "radius", _checks.positive(self.radius, "radius"))

    def at(self, psi):
        return self.center[0] + self.radius * np.cos(psi), self.center[1] + self.radius * np.sin(psi)

    def left_normal(self, psi):  # the inside of the circle
        return -np.cos(psi), -np.sin(psi)


@dataclass(frozen=True)
class _Linear:
    """The points start + s u, s in [lo, hi] (unit u; lo may be -inf, hi inf): arc length s."""

    start: tuple[float, float]
    u: tuple[float, float]
    lo: float
    hi: float

    def at(self, s):
        return self.start[0] + s * self.u[0], self.start[1] + s * self.u[1]

    def left_normal(self, s):
        return -self.u[1], self.u[0]


def Segment(a, b) -> _Linear:
    """The segment from ``a`` to ``b``."""
    a, b = _point(a, "a"), _point(b, "b")
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length == 0:
        raise ValueError("a segment needs two different end points")
    return _Linear(a, ((b[0] - a[0]) / length, (b[1] - a[1]) / length), 0.0, length)


def Ray(start, angle: float) -> _Linear:
    """The half-line from ``start`` in the direction (cos angle, sin angle)."""
    t = _checks.real(angle, "angle")
    return _Linear(_point(start, "start"), (math.cos(t), math.sin(t)), 0.0, math.inf)


def Line(point, angle: float) -> _Linear:
    """The line through ``point`` with direction (cos angle, sin angle)."""
    t = _checks.real(angle, "angle")
    return _Linear(_point(point, "point"), (math.cos(t), math.sin(t)), -math.inf, math.inf)


Boundary = Circle | _Linear


def _cross(a0, a1, b0, b1):
    return a0 * b1 - a1 * b0


def _meet(a: Boundary, b: Boundary) -> list[tuple[float, float]]:
    """The common points of two pieces, as (parameter on a, parameter on b)."""
    if isinstance(a, Circle) and isinstance(b, Circle):
        (x0, y0), (x1, y1) = a.center, b.center
        d = math.hypot(x1 - x0, y1 - y0)
        if d == 0 or d > a.radius + b.radius or d < abs(a.radius - b.radius):
            return []
        m = (a.radius**2 - b.radius**2 + d * d) / (2 * d)
        h = math.sqrt(max(a.radius**2 - m * m, 0.0))
        ex, ey = (x1 - x0) / d, (y1 - y0) / d
        pts = [(x0 + m * ex - h * ey, y0 + m * ey + h * ex), (x0 + m * ex + h * ey, y0 + m * ey - h * ex)]
        return [
            (math.atan2(py - y0, px - x0) % (2 * math.pi), math.atan2(py - y1, px - x1) % (2 * math.pi))
            for px, py in pts
        ]
    if isinstance(a, Circle):
        return [(pb, pa) for pa, pb in _meet(b, a)]
    if isinstance(b, Circle):  # |start + s u - c|^2 = r^2
        wx, wy = a.start[0] - b.center[0], a.start[1] - b.center[1]
        half_b = a.u[0] * wx + a.u[1] * wy
        disc = half_b**2 - (wx * wx + wy * wy - b.radius**2)
        if disc < 0:
            return []
        out = []
        for s in (-half_b - math.sqrt(disc), -half_b + math.sqrt(disc)):
            if a.lo <= s <= a.hi:
                px, py = a.at(s)
                out.append((s, math.atan2(py - b.center[1], px - b.center[0]) % (2 * math.pi)))
        return out
    den = _cross(*a.u, *b.u)
    if den == 0:  # parallel (overlapping collinear pieces are not supported)
        return []
    wx, wy = b.start[0] - a.start[0], b.start[1] - a.start[1]
    s, t = _cross(wx, wy, *b.u) / den, _cross(wx, wy, *a.u) / den
    return [(s, t)] if a.lo <= s <= a.hi and b.lo <= t <= b.hi else []


def corners(boundaries: Sequence[Boundary]) -> NDArray[np.float64]:
    """The points where two boundary pieces meet and the end points of the straight pieces: the
    places where the class on either side of the boundary may change. Shape (n, 2)."""
    pts = []
    for i, a in enumerate(boundaries):
        if isinstance(a, _Linear):
            pts += [a.at(s) for s in (a.lo, a.hi) if np.isfinite(s)]
        for b in boundaries[i + 1 :]:
            pts += [a.at(pa) for pa, _ in _meet(a, b)]
    return np.array(pts, dtype=float).reshape(-1, 2)


def _sub_pieces(boundaries, labels, num_classes):
    """Split every piece at its corners (circles also into arcs of at most pi) and attach to each
    sub-piece its jump J_c = 1{class c on its left} - 1{class c on its right}, read off the
    classifier just beside the sub-piece's midpoint. Sub-pieces with no jump are dropped."""
    cuts: list[list[float]] = [[] for _ in boundaries]
    for i, a in enumerate(boundaries):
        for j in range(i + 1, len(boundaries)):
            for pa, pb in _meet(a, boundaries[j]):
                cuts[i].append(pa)
                cuts[j].append(pb)
    pieces, mids, normals = [], [], []
    for b, cut in zip(boundaries, cuts):
        if isinstance(b, Circle):
            c = sorted(set(cut)) or [0.0]
            ends = [*c, c[0] + 2 * math.pi]
            params = []
            for lo, hi in zip(ends[:-1], ends[1:]):
                n = max(1, math.ceil((hi - lo) / math.pi - 1e-12))
                params += [(lo + (hi - lo) * k / n, lo + (hi - lo) * (k + 1) / n) for k in range(n)]
        else:
            c = sorted({b.lo, b.hi, *[s for s in cut if b.lo < s < b.hi]})
            params = list(zip(c[:-1], c[1:]))
        for lo, hi in params:
            if hi <= lo:
                continue
            mid = (
                (lo + hi) / 2
                if np.isfinite(lo) and np.isfinite(hi)
                else (hi - 1.0 if np.isfinite(hi) else lo + 1.0 if np.isfinite(lo) else 0.0)
            )
            pieces.append((b, lo, hi))
            mids.append(b.at(mid))
            normals.append(b.left_normal(mid))
    mids_a, normals_a = np.array(mids, dtype=float), np.array(normals, dtype=float)
    eps = 1e-7 * np.maximum(1.0, np.abs(mids_a).max(axis=1, keepdims=True))
    sides = np.asarray(labels(np.concatenate([mids_a + eps * normals_a, mids_a - eps * normals_a])))
    left, right = sides[: len(mids)], sides[len(mids) :]
    classes = np.arange(num_classes)
    jumps = (left[:, None] == classes).astype(float) - (right[:, None] == classes)
    keep = np.any(jumps != 0, axis=1)
    return [p for p, k in zip(pieces, keep) if k], jumps[keep]


def _straight_integral(x, piece: _Linear, lo: float, hi: float, sigma: float):
    """int exp(-|y - x|^2 / (2 sigma^2)) d theta_x(y) over the straight piece from s = lo to hi, for
    every row x: sign(n x u) 2 pi (T(|d|/sigma, b) - T(|d|/sigma, a)) with Owen's T, |d| the
    distance from x to the line, a and b the ends' arc lengths from the foot of x over |d|."""
    wx, wy = x[:, 0] - piece.start[0], x[:, 1] - piece.start[1]
    foot = wx * piece.u[0] + wy * piece.u[1]
    cross = _cross(
        piece.start[0] + foot * piece.u[0] - x[:, 0], piece.start[1] + foot * piece.u[1] - x[:, 1], *piece.u
    )
    dist = np.abs(cross)
    safe = np.where(dist > 0, dist, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        a, b = (lo - foot) / safe, (hi - foot) / safe
    val = 2 * math.pi * (owens_t(dist / sigma, b) - owens_t(dist / sigma, a))
    return np.where(dist > 0, np.sign(cross) * val, 0.0)


_GRADING = np.concatenate([[0.0], 4.0 ** np.arange(7), -(4.0 ** np.arange(7))])
_GAUSS_SCALES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, -0.5, -1.0, -2.0, -4.0, -8.0])


def _arc_integral(x, circle: Circle, lo: float, hi: float, sigma: float, order: int):
    """The same integral over the arc psi in [lo, hi] (hi - lo <= pi) of ``circle``, for every row x.

    With D = |x - c|, alpha = psi - angle(x - c) and rho^2 = |y - x|^2 = (r - D)^2 + 4 r D sin^2(alpha/2):
    d theta / d alpha = (1 + K) / 2 with K = (r^2 - D^2) / rho^2 (a Poisson kernel), whose integral is
    F(alpha) = 2 atan2(q sin(alpha/2), cos(alpha/2)), q = (r + D) / (r - D). Writing
    exp(-rho^2 / 2 sigma^2) = E0 g(alpha), E0 = exp(-(r - D)^2 / 2 sigma^2), the integral is
    E0 [(alpha + F) / 2] + E0 int (g - 1) (1 + K) / 2 d alpha; the last integrand vanishes where K
    peaks (alpha = 0, width |r - D| / sqrt(r D)) and is integrated by Gauss-Legendre on intervals
    graded geometrically around its peak and scaled to the width sigma / sqrt(r D) of g.
    """
    r = circle.radius
    dx, dy = x[:, 0] - circle.center[0], x[:, 1] - circle.center[1]
    dist = np.hypot(dx, dy)
    dist = np.where(dist == r, r * (1 + 1e-15), dist)  # a point on the circle: its outside limit
    a0 = np.mod(lo - np.arctan2(dy, dx) + math.pi, 2 * math.pi) - math.pi  # in [-pi, pi)
    a1 = a0 + (hi - lo)  # < 2 pi
    q = (r + dist) / (r - dist)
    e0 = np.exp(-((r - dist) ** 2) / (2 * sigma**2))

    def prim(al):
        return (al + 2 * np.arctan2(q * np.sin(al / 2), np.cos(al / 2))) / 2

    main = e0 * (prim(a1) - prim(a0))
    rd = r * dist
    width = np.abs(r - dist) / np.sqrt(np.maximum(rd, 1e-300))
    gauss = sigma / np.sqrt(np.maximum(rd, 1e-300))
    breaks = np.concatenate([width[:, None] * _GRADING, gauss[:, None] * _GAUSS_SCALES], axis=1)
    breaks = np.concatenate([breaks, breaks + 2 * math.pi], axis=1)
    breaks = np.sort(
        np.clip(np.concatenate([a0[:, None], breaks, a1[:, None]], axis=1), a0[:, None], a1[:, None]), axis=1
    )
    s, w = np.polynomial.legendre.leggauss(order)
    left, span = breaks[:, :-1, None], np.diff(breaks, axis=1)[:, :, None]
    al = left + span * (s + 1) / 2
    sin2 = np.sin(al / 2) ** 2
    rd3 = rd[:, None, None]
    rho2 = (r - dist[:, None, None]) ** 2 + 4 * rd3 * sin2
    kern = (r * r - dist[:, None, None] ** 2) / rho2
    f = np.expm1(-2 * rd3 * sin2 / sigma**2) * (1 + kern) / 2
    rest = (f * (span / 2) * w).sum(axis=(1, 2))
    return main + e0 * rest


def smoothed_scores_2d(
    points: ArrayLike,
    labels: Callable[[NDArray[np.float64]], ArrayLike],
    boundaries: Sequence[Boundary],
    num_classes: int,
    sigma: float,
    order: int = 12,
    chunk: int = 256,
) -> NDArray[np.float64]:
    r"""p_c(x) = P(f(x + sigma Z) = c), Z ~ N(0, I_2), for every point x (rows of ``points``, (P, 2))
    and class c of a planar classifier f whose regions are bounded by the given pieces. Returns
    (P, num_classes).

    Method (a boundary integral). Around x the radius of sigma Z has survival function
    E(t) = exp(-t^2 / (2 sigma^2)) and its angle is uniform and independent, so by Green's theorem
    the mass of a region A whose boundary is run with A on the left is

        P(x + sigma Z in A) = 1{x in A} - (1 / 2 pi) oint_{dA} E(|y - x|) d theta_x(y),

    theta_x(y) the angle of y - x (check: a disk around x gives 1 - E(r)). Summed over the pieces
    of the boundaries with the jumps J_c of :func:`_sub_pieces`, this gives every p_c at once. On a
    straight piece the integral is closed form (Owen's T function, ``scipy.special.owens_t``);
    on a circular arc its singular part is closed form and the smooth remainder is integrated
    with ``order`` Gauss-Legendre nodes per interval (see :func:`_arc_integral`). The result is
    accurate to about 1e-13 for regions bounded by straight pieces, and comparing two orders
    measures the error on arcs.

    ``labels`` maps an (N, 2) float64 array to the N classes of f (integers in [0, num_classes));
    ``boundaries`` (:class:`Circle`, :func:`Segment`, :func:`Ray`, :func:`Line`) must contain
    every curve across which f changes; parts across which it does not change are allowed.
    Overlapping collinear pieces are not. ``chunk`` points are integrated at a time.
    """
    x = _checks.finite_matrix(points, "points")
    if x.shape[1] != 2:
        raise ValueError(f"points must have shape (P, 2); got {x.shape}")
    k = _checks.num_classes(num_classes)
    s = _checks.positive(sigma, "sigma")
    order = _checks.count(order, "order")
    chunk = _checks.count(chunk, "chunk")
    if not boundaries or not all(isinstance(b, Circle | _Linear) for b in boundaries):
        raise ValueError("boundaries must be a non-empty list of Circle, Segment, Ray or Line")

    def classes(pts):
        lab = np.asarray(labels(pts))
        if lab.shape != (len(pts),) or np.any((lab < 0) | (lab >= k)):
            raise ValueError(f"labels must return one class in [0, {k}) per point")
        return lab

    pieces, jumps = _sub_pieces(list(boundaries), classes, k)
    out = np.empty((len(x), k))
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk]
        integrals = np.zeros((len(xb), len(pieces)))
        for i, (b, lo, hi) in enumerate(pieces):
            integrals[:, i] = (
                _arc_integral(xb, b, lo, hi, s, order)
                if isinstance(b, Circle)
                else _straight_integral(xb, b, lo, hi, s)
            )
        own = (classes(xb)[:, None] == np.arange(k)).astype(float)
        out[start : start + len(xb)] = own - integrals @ jumps / (2 * math.pi)
    return np.clip(out, 0.0, 1.0)


def probit_scores(p: ArrayLike) -> NDArray[np.float64]:
    """Phi^{-1}(p_c) for every column c of the score matrix ``p`` (rows sum to 1). Where
    p_c > 1/2, it is computed as -Phi^{-1}(sum of the other columns), so that a score within
    1e-30 of 1 keeps its finite probit."""
    pa = np.asarray(p, dtype=float)
    if pa.ndim < 1 or np.any(np.isnan(pa)) or np.any((pa < 0) | (pa > 1)):
        raise ValueError("p must be an array of probabilities with the classes on the last axis")
    others = np.stack([np.delete(pa, c, axis=-1).sum(axis=-1) for c in range(pa.shape[-1])], axis=-1)
    return np.where(pa > 0.5, norm.isf(others), norm.ppf(pa))


# ---------------------------------------------------------------- checking a Lipschitz constant


def random_lines(
    num_lines: int,
    num_points: int,
    half_width: float,
    seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``num_lines`` random chords of the square [-half_width, half_width]^2, each through a
    uniform point of the square in a uniform direction, sampled at ``num_points`` equally spaced
    points from one side of the square to the other. Returns (points of shape (L, N, 2), the
    spacing of each chord, shape (L,))."""
    num_lines = _checks.count(num_lines, "num_lines")
    num_points = _checks.count(num_points, "num_points")
    if num_points < 2:
        raise ValueError("num_points must be at least 2")
    hw = _checks.positive(half_width, "half_width")
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-hw, hw, size=(num_lines, 2))
    angle = rng.uniform(0, np.pi, size=num_lines)
    u = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    with np.errstate(divide="ignore"):  # u_i = 0: that coordinate never leaves the square
        ends = np.stack([(-hw - centre) / u, (hw - centre) / u], axis=-1)  # (L, 2 coords, 2 ends)
    t_lo = np.nanmax(np.min(ends, axis=-1), axis=1)
    t_hi = np.nanmin(np.max(ends, axis=-1), axis=1)
    t = t_lo[:, None] + (t_hi - t_lo)[:, None] * np.linspace(0.0, 1.0, num_points)
    return centre[:, None, :] + t[..., None] * u[:, None, :], (t_hi - t_lo) / (num_points - 1)


@dataclass(frozen=True)
class ProbitSecants:
    """Secant slopes of Phi^{-1}(p_c) along lines (see :func:`probit_secants`); arrays of shape
    (lines, points - 1, classes)."""

    slopes: NDArray[np.float64]  # |Delta Phi^{-1}(p_c)| / step, from the reference scores
    tolerance: NDArray[np.float64]  # numerical error of each slope (an estimate, see below)
    checked: NDArray[np.bool_]  # both ends have min(p_c, 1 - p_c) >= floor

    def excess(self) -> float:
        """max over checked secants of slope - tolerance: at most 1/sigma if Lemma 2 holds."""
        return float(np.max((self.slopes - self.tolerance)[self.checked], initial=-np.inf))


def probit_secants(
    p: ArrayLike, p_ref: ArrayLike, step: ArrayLike, floor: float = 1e-9, rounding: float = 1e-15
) -> ProbitSecants:
    """Secant slopes of z_c = Phi^{-1}(p_c) between consecutive points of lines, with their error.

    ``p`` and ``p_ref``: scores (lines, points, classes) at points ``step`` apart along each line
    (a number, or one per line),
    computed twice (e.g. by :func:`smoothed_scores_2d` at two orders; ``p_ref`` the more accurate).
    The error of z at a point is estimated as |z - z_ref| + rounding / phi(z_ref): the difference
    of the two computations plus an absolute error ``rounding`` in the tail probability
    min(p, 1 - p), carried through dz = dp / phi(z). A slope's tolerance is the sum of its two
    ends' errors over ``step``. Only secants whose ends both have min(p, 1 - p) >= ``floor`` are
    ``checked``: below it the tail probability has too few correct digits for a slope.
    """
    pa, pr = np.asarray(p, dtype=float), np.asarray(p_ref, dtype=float)
    if pa.shape != pr.shape or pa.ndim != 3:
        raise ValueError("p and p_ref must have the same shape (lines, points, classes)")
    h = _per_line(step, 3)
    z, z_ref = probit_scores(pa), probit_scores(pr)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(z - z_ref) + rounding / norm.pdf(z_ref)
        slopes = secant_slopes(z_ref, step)
    ok = np.minimum(pr, 1.0 - pr) >= floor
    checked = ok[:, 1:] & ok[:, :-1]
    tol = (err[:, 1:] + err[:, :-1]) / h
    return ProbitSecants(np.where(checked, slopes, np.nan), np.where(checked, tol, np.nan), checked)


def _per_line(step: ArrayLike, ndim: int) -> NDArray[np.float64]:
    """A positive spacing, or one per line (shape (L,)), shaped to divide a (L, N - 1, ...) array."""
    h = np.asarray(step, dtype=float)
    if h.ndim > 1 or not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise ValueError("step must be a positive number or one positive number per line")
    return h.reshape(-1, *([1] * (ndim - 1))) if h.ndim == 1 else h


def secant_slopes(values: ArrayLike, step: ArrayLike) -> NDArray[np.float64]:
    """|v_{i+1} - v_i| / step between consecutive points of each line: ``values`` has shape
    (lines, points, ...), the points of a line ``step`` apart (a number, or one per line). If v is
    L-Lipschitz every secant slope is at most L: no discretisation error, the bound holds for the
    secants themselves."""
    v = np.asarray(values, dtype=float)
    if v.ndim < 2:
        raise ValueError("values must have shape (lines, points, ...)")
    return np.abs(np.diff(v, axis=1)) / _per_line(step, v.ndim)
