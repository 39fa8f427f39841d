"""Reductions.  Their cotangents are broadcast back over the reduced axes."""

from __future__ import annotations

from .._registry import deflinear
from ._manipulation import broadcast_to, normalize_axes, reshape

__all__ = ["sum", "mean", "keepdims_shape", "expand_reduced", "_reductions_size"]


def keepdims_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def expand_reduced(g, x_shape, axes, keepdims):
    """Broadcast a reduction's cotangent ``g`` back to ``x_shape``."""
    if not keepdims:
        g = reshape(g, keepdims_shape(x_shape, axes))
    return broadcast_to(g, tuple(x_shape))


sum_p = deflinear(
    "sum", lambda xp, x, *, axis, keepdims: xp.sum(x, axis=axis, keepdims=keepdims),
    vjp=(lambda g, ans, x, *, axis, keepdims: expand_reduced(g, x.shape, axis, keepdims),))


def sum(x, /, *, axis=None, dtype=None, keepdims=False):
    """Sum over ``axis`` (all axes by default)."""
    axes = normalize_axes(axis, x.ndim, "sum")
    if dtype is not None and dtype != x.dtype:
        from ._elementwise import astype

        x = astype(x, dtype)
    return sum_p(x, axis=axes, keepdims=keepdims)


def mean(x, /, *, axis=None, keepdims=False):
    """Arithmetic mean over ``axis``; the mean of an empty axis is nan."""
    axes = normalize_axes(axis, x.ndim, "mean")
    n = 1
    for a in axes:
        n *= x.shape[a]
    s = sum_p(x, axis=axes, keepdims=keepdims)
    return s / n if n else s * float("nan")


def _reductions_size(shape):
    n = 1
    for s in shape:
        n *= s
    return n
