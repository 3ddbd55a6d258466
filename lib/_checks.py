"""Argument checks shared by the certificates.

A certificate computed from a bad argument is worse than no certificate, so every public
function validates its inputs here and raises a ``ValueError`` that names the argument.

Probabilities may arrive with more precision than float64 (``np.longdouble``, ``Fraction``,
``Decimal``, mpmath's ``mpf``). Rounding such a p to the nearest float64 can round
1 - 1e-19 up to 1, i.e. turn a finite certificate into an unbounded one; so
:func:`probability_array` rounds toward 0 and :func:`probability_tail` returns an upper bound
on 1 - p, both computed exactly from the value that was passed.
"""

from __future__ import annotations

import operator
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike, NDArray

_WIDE_FLOAT = np.dtype(np.longdouble).itemsize > 8 and np.finfo(np.longdouble).eps < np.finfo(np.float64).eps


def real(x, name: str) -> float:
    """``x`` as a Python float, with a ``ValueError`` naming the argument for None, strings,
    complex numbers and arrays (instead of a ``TypeError`` or a silently dropped imaginary part)."""
    if isinstance(x, (complex, np.complexfloating)) or np.ndim(x) != 0 or isinstance(x, (str, bytes)):
        raise ValueError(f"{name} must be a real number; got {x!r}")
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{name} must be a real number; got {x!r}") from e


def _exact(x, name: str) -> Fraction:
    """The exact rational value of a finite real scalar of any precision."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (bool, np.bool_)):
        return Fraction(int(x))
    if isinstance(x, (complex, np.complexfloating)):
        raise ValueError(f"{name} must be real; got {x!r}")
    try:
        if hasattr(x, "as_integer_ratio"):  # int, float, numpy floats of any width, Decimal
            return Fraction(*x.as_integer_ratio())
        if hasattr(x, "man_exp"):  # mpmath.mpf: man * 2**exp, exactly
            man, exp = x.man_exp
            return Fraction(int(man)) * Fraction(2) ** int(exp)
        if isinstance(x, (int, np.integer)):
            return Fraction(int(x))
    except (TypeError, ValueError, OverflowError) as e:  # nan / inf have no ratio
        raise ValueError(f"{name} must be finite; got {x!r}") from e
    raise ValueError(f"{name} must be a real number; got {x!r} of type {type(x).__name__}")


def _round_down(fr: Fraction) -> float:
    """The largest float64 <= fr."""
    f = float(fr)  # correctly rounded to nearest
    return float(np.nextafter(f, -np.inf)) if Fraction(f) > fr else f


def _round_up(fr: Fraction) -> float:
    """The smallest float64 >= fr."""
    f = float(fr)
    return float(np.nextafter(f, np.inf)) if Fraction(f) < fr else f


def _wide_or_exact(p: ArrayLike, name: str):
    """Classify ``p``: ('f64', float64 array), ('wide', longdouble array) or ('exact', object
    array of Fractions). Rejects complex, non-numeric, NaN/inf and values outside [0, 1]."""
    arr = np.asarray(p)
    bad = ValueError(f"{name} must lie in [0, 1]; got values outside it (or NaN/inf)")
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must be real; got complex values")
    if arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and arr.dtype.itemsize <= 8):
        out = arr.astype(np.float64)
        if not np.all(np.isfinite(out)) or np.any((out < 0.0) | (out > 1.0)):
            raise bad
        return "f64", out
    if arr.dtype.kind == "f":  # longdouble
        if not np.all(np.isfinite(arr)) or np.any((arr < 0) | (arr > 1)):
            raise bad
        return ("wide", arr) if _WIDE_FLOAT else ("f64", arr.astype(np.float64))
    if arr.dtype.kind != "O":
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    fr = np.empty(arr.shape, dtype=object)
    for idx, x in np.ndenumerate(arr):
        v = _exact(x, name)
        if not (0 <= v <= 1):
            raise bad
        fr[idx] = v
    return "exact", fr


def probability_array(p: ArrayLike, name: str = "p", *, up: bool = False) -> NDArray[np.float64]:
    """``p`` as a float64 array with every entry in [0, 1] (NaN rejected), rounded toward 0
    (toward 1 with ``up=True``).

    float64 (and narrower) input is returned unchanged; wider input (``np.longdouble``,
    ``Fraction``, ``Decimal``, ``mpmath.mpf``) is rounded down, never up to 1.
    """
    kind, arr = _wide_or_exact(p, name)
    if kind == "f64":
        return arr
    if kind == "wide":
        out = arr.astype(np.float64)
        if up:
            return np.where(out < arr, np.nextafter(out, np.inf), out)
        return np.where(out > arr, np.nextafter(out, -np.inf), out)
    if not arr.size:
        return np.zeros(arr.shape)
    return np.vectorize(_round_up if up else _round_down, otypes=[np.float64])(arr)


def probability_tail(p: ArrayLike, name: str = "p") -> NDArray[np.float64]:
    """A float64 upper bound on 1 - p, computed from ``p`` at its own precision.

    For float64 p >= 1/2 it is 1 - p exactly (Sterbenz); for wider types the difference is
    formed exactly (in ``np.longdouble``, exact for p >= 1/2, or in rationals) and rounded up.
    Below p = 1/2 the tail exceeds 1/2 and certifies nothing, so its rounding is immaterial.
    """
    kind, arr = _wide_or_exact(p, name)
    if kind == "f64":
        return 1.0 - arr
    if kind == "wide":
        tail = np.longdouble(1) - arr
        out = tail.astype(np.float64)
        return np.where(out < tail, np.nextafter(out, np.inf), out)
    if not arr.size:
        return np.zeros(arr.shape)
    return np.vectorize(lambda v: _round_up(1 - v), otypes=[np.float64])(arr)


def num_classes(k: int, name: str = "num_classes") -> int:
    """An integer number of classes K >= 2."""
    return count(k, name, minimum=2)


def flip_probability(q: float, k: int, name: str = "q") -> float:
    """Label-flip probability q in the open interval (0, (K-1)/K).

    At q = (K-1)/K the noisy label is uniform whatever the clean label is, so nothing can be
    certified; q = 0 is no smoothing at all (infinite divergence).
    """
    qf = real(q, name)
    upper = (k - 1) / k
    if not np.isfinite(qf) or not (0.0 < qf < upper):
        raise ValueError(f"{name} must lie in (0, {upper:g}) for {k} classes; got {q!r}")
    return qf


def level(alpha: float, name: str = "alpha") -> float:
    """A failure probability alpha in (0, 1)."""
    a = real(alpha, name)
    if not np.isfinite(a) or not (0.0 < a < 1.0):
        raise ValueError(f"{name} must lie in (0, 1); got {alpha!r}")
    return a


def positive(x: float, name: str) -> float:
    """A finite, strictly positive float."""
    v = real(x, name)
    if not np.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0; got {x!r}")
    return v


def count(n: int, name: str, minimum: int = 1) -> int:
    """An integer count >= ``minimum``, returned as a Python int.

    Whole-number floats (``1000.0``) are accepted and converted; callers must use the returned
    int (torch and ``range`` reject floats). Fractions, booleans, NaN, None and strings are
    rejected with a ``ValueError`` naming the argument.
    """
    err = ValueError(f"{name} must be an integer >= {minimum}; got {n!r}")
    if isinstance(n, (bool, np.bool_, str, bytes)) or np.ndim(n) != 0:
        raise err
    try:
        v = operator.index(n)  # int, numpy integers
    except TypeError:
        try:
            f = real(n, name)
        except ValueError:
            raise err from None
        if not (np.isfinite(f) and f.is_integer()):
            raise err from None
        v = int(f)
        try:
            if v != n:  # a conversion that rounded (e.g. a huge Decimal)
                raise err
        except TypeError:
            raise err from None
    if v < minimum:
        raise err
    return int(v)


def flag(b, name: str) -> bool:
    """A boolean switch: ``True``/``False`` (or numpy's bool); strings and numbers are rejected,
    since ``bool("no")`` is True."""
    if not isinstance(b, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {b!r}")
    return bool(b)


def finite_matrix(x: ArrayLike, name: str, ndim: int = 2) -> NDArray[np.float64]:
    """A float64 array with ``ndim`` dimensions and only finite real entries."""
    raw = np.asarray(x)
    if raw.dtype.kind == "c":
        raise ValueError(f"{name} must be real; got complex values")
    if raw.dtype.kind not in "biuf":
        try:
            arr = raw.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must hold real numbers; got dtype {raw.dtype}") from e
    else:
        arr = raw.astype(np.float64, copy=False)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def labels(y: ArrayLike, n: int, k: int, name: str = "y") -> NDArray[np.int64]:
    """Integer labels in {0, ..., K-1}, one per training point."""
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the training features; got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if np.any((out < 0) | (out >= k)):
        raise ValueError(f"{name} must hold labels in {{0, ..., {k - 1}}}")
    return out
