"""Matrix multiplication (with the standard's 1-D promotion rules)."""

from __future__ import annotations

from .._registry import defop
from ._manipulation import expand_dims, matrix_transpose, reshape, squeeze

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
    if b.ndim == 2 and a.ndim > 2:
        # NOTE [stacked @ matrix]: a weight shared by every row of a stack gets
        # one GEMM over the flattened rows, not a (B, k, n) stack summed after.
        rows = _rows(a.shape)
        return matmul(matrix_transpose(reshape(a, (rows, a.shape[-1]))), reshape(g, (rows, g.shape[-1])))
    g2, a2, b2 = _promote(g, a, b)
    db = matmul(matrix_transpose(a2), g2)
    return squeeze(db, -1) if b.ndim == 1 else db


def _rows(shape):
    n = 1
    for s in shape[:-1]:
        n *= s
    return n


def _matmul_impl(xp, a, b):
    if a.ndim > 2 and b.ndim == 2:
        # One GEMM over the flattened rows (NOTE [stacked @ matrix]).
        out = xp.matmul(xp.reshape(a, (_rows(a.shape), a.shape[-1])), b)
        return xp.reshape(out, tuple(a.shape[:-1]) + (b.shape[-1],))
    return xp.matmul(a, b)


matmul = defop(
    "matmul", _matmul_impl,
    vjp=(_vjp_a, _vjp_b),
    jvp=(lambda t, ans, a, b: matmul(t, b), lambda t, ans, a, b: matmul(a, t)),
    keep_args=(0, 1), keep_ans=False)
