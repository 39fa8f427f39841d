"""Matrix multiplication (with the standard's 1-D promotion rules)."""

from __future__ import annotations

from .._registry import defop
from ._manipulation import expand_dims, matrix_transpose, squeeze

__all__ = ["matmul"]


def _promote(g, a, b):
    """View g, a, b as stacks of matrices (undoing 1-D promotion).

    ``b``'s axis goes back first: when both are 1-D, ``g`` is 0-d.
    """
    if b.ndim == 1:
        g = expand_dims(g, -1)
        b = expand_dims(b, -1)
    if a.ndim == 1:
        g = expand_dims(g, -2)
        a = expand_dims(a, 0)
    return g, a, b


def _vjp_a(g, ans, a, b):
    g2, a2, b2 = _promote(g, a, b)
    da = matmul(g2, matrix_transpose(b2))
    return squeeze(da, -2) if a.ndim == 1 else da


def _vjp_b(g, ans, a, b):
    g2, a2, b2 = _promote(g, a, b)
    db = matmul(matrix_transpose(a2), g2)
    return squeeze(db, -1) if b.ndim == 1 else db


matmul = defop(
    "matmul", lambda xp, a, b: xp.matmul(a, b),
    vjp=(_vjp_a, _vjp_b),
    jvp=(lambda t, ans, a, b: matmul(t, b), lambda t, ans, a, b: matmul(a, t)),
    keep_args=(0, 1), keep_ans=False)
