"""Triangles of matrices: ``tril`` and ``triu``, linear, so their VJPs keep nothing."""

from __future__ import annotations

from .._args import int_or_none
from .._registry import deflinear

__all__ = ["tril", "triu"]


# --- tril, triu ---------------------------------------------------------------
tril_p = deflinear("tril", lambda xp, x, *, k: xp.tril(x, k=k), vjp=(lambda g, ans, x, *, k: tril_p(g, k=k),))
triu_p = deflinear("triu", lambda xp, x, *, k: xp.triu(x, k=k), vjp=(lambda g, ans, x, *, k: triu_p(g, k=k),))


def _offset(k, name, arg):
    """``k`` as an int (Python or NumPy integer): a float (or a bool) is refused, not truncated."""
    n = int_or_none(k)
    if n is None:
        raise TypeError(f"{name}: {arg} must be an int, got {type(k).__name__} {k!r}")
    return n


def _tri_check(x, name):
    if x.ndim < 2:
        raise ValueError(f"{name}: x must have at least 2 dimensions, got shape {tuple(x.shape)}")


def tril(x, /, *, k=0):
    """Lower triangle of the last two axes of ``x`` (elements above diagonal ``k`` zeroed).

    Parameters
    ----------
    x : array, shape ``(..., M, N)``
    k : int
        Diagonal offset (positive: above the main diagonal).

    Returns
    -------
    array, shape ``(..., M, N)``
    """
    _tri_check(x, "tril")
    return tril_p(x, k=_offset(k, "tril", "k"))


def triu(x, /, *, k=0):
    """Upper triangle of the last two axes of ``x`` (elements below diagonal ``k`` zeroed).

    Parameters
    ----------
    x : array, shape ``(..., M, N)``
    k : int

    Returns
    -------
    array, shape ``(..., M, N)``
    """
    _tri_check(x, "triu")
    return triu_p(x, k=_offset(k, "triu", "k"))
