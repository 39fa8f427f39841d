"""Reductions and scans.  Their cotangents are broadcast back over the reduced axes.

# NOTE [products with zeros]: the derivative of a product with respect to one
# factor is the product of the *other* factors.  Dividing the product by the
# factor fails when it is zero, so ``prod`` multiplies exclusive prefix and
# suffix products instead, and ``cumulative_prod``'s rules are first-order
# linear recurrences solved by a log-depth scan of multiplies and adds
# (:func:`linear_recurrence`).  Both are made of differentiable ops only, so
# they stay exact to every order, zeros included.

# NOTE [ties]: ``max`` and ``min`` split the gradient equally among all
# elements equal to the result, as ``maximum``/``minimum`` do for two
# arguments (NOTE [subgradients] in ``_elementwise``): max of [1, 3, 3] has
# gradient [0, 0.5, 0.5].
"""

from __future__ import annotations

import math

from .._dtypes import dtype_name, is_floating
from .._registry import deflinear, defop
from ._elementwise import (
    add, astype, equal, exp, isnan, logical_and, logical_or, multiply, subtract,
)
from ._manipulation import (
    _slice_along, broadcast_to, concat, flip, full_as, normalize_axes, normalize_axis,
    permute_dims, reshape,
)

__all__ = [
    "sum", "mean", "keepdims_shape", "expand_reduced", "_reductions_size",
    "prod", "var", "std", "max", "min", "cumulative_sum", "cumulative_prod", "logsumexp",
    "linear_recurrence",
]

_builtin_max = max


def keepdims_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def expand_reduced(g, x_shape, axes, keepdims):
    """Broadcast a reduction's cotangent ``g`` back to ``x_shape``."""
    if not keepdims:
        g = reshape(g, keepdims_shape(x_shape, axes))
    return broadcast_to(g, tuple(x_shape))


def _keep(a, x_shape, axes, keepdims):
    """A reduction's output ``a`` reshaped to keep the reduced axes (size 1)."""
    return a if keepdims else reshape(a, keepdims_shape(x_shape, axes))


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _cast(x, dtype, name):
    # Compared by name: dtypes of two libraries must not be compared (array-api-strict warns).
    if dtype is None or dtype_name(dtype) == dtype_name(x.dtype):
        return x
    return astype(x, dtype)


# --- sum, mean ----------------------------------------------------------------
sum_p = deflinear(
    "sum", lambda xp, x, *, axis, keepdims: xp.sum(x, axis=axis, keepdims=keepdims),
    vjp=(lambda g, ans, x, *, axis, keepdims: expand_reduced(g, x.shape, axis, keepdims),))


def sum(x, /, *, axis=None, dtype=None, keepdims=False):
    """Sum over ``axis`` (all axes by default).

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None
    dtype : dtype, optional
        Cast ``x`` to this dtype first.
    keepdims : bool

    Returns
    -------
    array, ``S`` without the reduced axes (kept with size 1 if ``keepdims``)
    """
    axes = normalize_axes(axis, x.ndim, "sum")
    return sum_p(_cast(x, dtype, "sum"), axis=axes, keepdims=keepdims)


def mean(x, /, *, axis=None, keepdims=False):
    """Arithmetic mean over ``axis``; the mean of an empty axis is nan.

    Shapes as for :func:`sum`.
    """
    axes = normalize_axes(axis, x.ndim, "mean")
    n = _count(x.shape, axes)
    s = sum_p(x, axis=axes, keepdims=keepdims)
    return s / n if n else s * float("nan")


def _reductions_size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# --- scans --------------------------------------------------------------------
def _shift(x, axis, d, fill, reverse=False):
    """``x`` moved ``d`` places along ``axis`` (towards the end, or the start if
    ``reverse``), the vacated places holding ``fill``."""
    n = x.shape[axis]
    d = _builtin_max(0, n if d > n else d)
    if d == 0:
        return x
    pad = full_as(x, shape=tuple(x.shape[:axis]) + (d,) + tuple(x.shape[axis + 1:]), value=fill)
    if reverse:
        return concat([_slice_along(x, axis, d, n), pad], axis=axis)
    return concat([pad, _slice_along(x, axis, 0, n - d)], axis=axis)


def linear_recurrence(a, b, axis, reverse=False):
    """Solve ``h[k] = a[k] * h[k-1] + b[k]`` (``h[-1] = 0``) along ``axis``.

    With ``reverse``, ``h[k] = a[k] * h[k+1] + b[k]`` from the end.  A
    log-depth (Hillis-Steele) scan of multiplies and adds: differentiable to
    every order, no division (NOTE [products with zeros]).

    Parameters
    ----------
    a, b : arrays of the same shape ``S``
    axis : int, non-negative

    Returns
    -------
    array, shape ``S``
    """
    n = b.shape[axis]
    d = 1
    while d < n:
        b = add(b, multiply(a, _shift(b, axis, d, 0.0, reverse)))
        if 2 * d < n:
            a = multiply(a, _shift(a, axis, d, 1.0, reverse))
        d *= 2
    return b


def _cumsum_impl(xp, x, *, axis):
    return xp.cumulative_sum(x, axis=axis)


def _reverse_cumsum(g, axis):
    return flip(cumsum_p(flip(g, axis=axis), axis=axis), axis=axis)


cumsum_p = deflinear(
    "cumulative_sum", _cumsum_impl,
    vjp=(lambda g, ans, x, *, axis: _reverse_cumsum(g, axis),))


def _cumprod_vjp(g, ans, x, *, axis):
    # dx[i] = E[i] * S[i]: E the exclusive product before i, S[i] = g[i] + x[i+1] S[i+1].
    excl = _shift(ans, axis, 1, 1.0)
    s = linear_recurrence(_shift(x, axis, 1, 0.0, reverse=True), g, axis, reverse=True)
    return multiply(excl, s)


def _cumprod_jvp(t, ans, x, *, axis):
    # dy[k] = x[k] dy[k-1] + t[k] E[k].
    excl = _shift(ans, axis, 1, 1.0)
    return linear_recurrence(x, multiply(t, excl), axis)


cumprod_p = defop(
    "cumulative_prod", lambda xp, x, *, axis: xp.cumulative_prod(x, axis=axis),
    vjp=(_cumprod_vjp,), jvp=(_cumprod_jvp,), keep_args=(0,), keep_ans=True)


def _scan_args(x, axis, dtype, name):
    if x.ndim == 0:
        raise ValueError(f"{name}: x must have at least one dimension, got a 0-d array")
    if axis is None:
        if x.ndim > 1:
            raise ValueError(f"{name}: axis must be given for an array of shape {tuple(x.shape)} (more than 1-D)")
        axis = 0
    return _cast(x, dtype, name), normalize_axis(axis, x.ndim, name)


def _with_initial(y, axis, value):
    pad = full_as(y, shape=tuple(y.shape[:axis]) + (1,) + tuple(y.shape[axis + 1:]), value=value)
    return concat([pad, y], axis=axis)


def cumulative_sum(x, /, *, axis=None, dtype=None, include_initial=False):
    """Cumulative sum along ``axis``.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)
    axis : int, optional when ``x`` is 1-D
    dtype : dtype, optional
    include_initial : bool
        Prepend the empty sum (0).

    Returns
    -------
    array, shape ``S`` (``S[axis] + 1`` along ``axis`` if ``include_initial``)
    """
    x, axis = _scan_args(x, axis, dtype, "cumulative_sum")
    y = cumsum_p(x, axis=axis) if x.shape[axis] else x
    return _with_initial(y, axis, 0) if include_initial else y


def cumulative_prod(x, /, *, axis=None, dtype=None, include_initial=False):
    """Cumulative product along ``axis``; exact gradients where ``x`` has zeros.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)
    axis : int, optional when ``x`` is 1-D
    dtype : dtype, optional
    include_initial : bool
        Prepend the empty product (1).

    Returns
    -------
    array, shape ``S`` (``S[axis] + 1`` along ``axis`` if ``include_initial``)
    """
    x, axis = _scan_args(x, axis, dtype, "cumulative_prod")
    y = cumprod_p(x, axis=axis) if x.shape[axis] else x
    return _with_initial(y, axis, 1) if include_initial else y


# --- prod ---------------------------------------------------------------------
def _others_product(x, axes):
    """For each element, the product of the other elements of its reduced group."""
    shape = tuple(x.shape)
    rest = tuple(i for i in range(len(shape)) if i not in axes)
    perm = rest + tuple(axes)
    xt = permute_dims(x, perm)
    lead = tuple(shape[i] for i in rest)
    n = _count(shape, axes)
    flat = reshape(xt, lead + (n,))
    ax = len(lead)
    left = _shift(cumprod_p(flat, axis=ax), ax, 1, 1.0)
    right = flip(_shift(cumprod_p(flip(flat, axis=ax), axis=ax), ax, 1, 1.0), axis=ax)
    others = reshape(multiply(left, right), tuple(shape[i] for i in perm))
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return permute_dims(others, tuple(inv))


prod_p = defop(
    "prod", lambda xp, x, *, axis, keepdims: xp.prod(x, axis=axis, keepdims=keepdims),
    vjp=(lambda g, ans, x, *, axis, keepdims:
         multiply(expand_reduced(g, x.shape, axis, keepdims), _others_product(x, axis)),),
    jvp=(lambda t, ans, x, *, axis, keepdims:
         sum_p(multiply(t, _others_product(x, axis)), axis=axis, keepdims=keepdims),),
    keep_args=(0,), keep_ans=False)


def prod(x, /, *, axis=None, dtype=None, keepdims=False):
    """Product over ``axis`` (all axes by default); gradients exact with zeros.

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None
    dtype : dtype, optional
    keepdims : bool

    Returns
    -------
    array, ``S`` without the reduced axes (kept with size 1 if ``keepdims``).
    The product of an empty set is 1.
    """
    axes = normalize_axes(axis, x.ndim, "prod")
    return prod_p(_cast(x, dtype, "prod"), axis=axes, keepdims=keepdims)


# --- var, std -----------------------------------------------------------------
def _var_factor(x_shape, axes, correction):
    dof = _count(x_shape, axes) - correction
    return 2.0 / dof if dof > 0 else float("nan")


def _centered(x, axes):
    return subtract(x, mean(x, axis=axes, keepdims=True))


var_p = defop(
    "var", lambda xp, x, *, axis, correction, keepdims:
        xp.var(x, axis=axis, correction=correction, keepdims=keepdims),
    vjp=(lambda g, ans, x, *, axis, correction, keepdims: multiply(
        multiply(expand_reduced(g, x.shape, axis, keepdims), _centered(x, axis)),
        _var_factor(x.shape, axis, correction)),),
    jvp=(lambda t, ans, x, *, axis, correction, keepdims: multiply(
        sum_p(multiply(t, _centered(x, axis)), axis=axis, keepdims=keepdims),
        _var_factor(x.shape, axis, correction)),),
    keep_args=(0,), keep_ans=False)


def var(x, /, *, axis=None, correction=0.0, keepdims=False):
    """Variance over ``axis``: ``sum((x - mean)**2) / (N - correction)``.

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None
    correction : float
        Degrees of freedom subtracted from ``N`` (1 for the unbiased estimate).
    keepdims : bool

    Returns
    -------
    array, ``S`` without the reduced axes.  ``N - correction <= 0`` gives nan
    or inf (and a nan gradient).
    """
    axes = normalize_axes(axis, x.ndim, "var")
    return var_p(x, axis=axes, correction=correction, keepdims=keepdims)


def std(x, /, *, axis=None, correction=0.0, keepdims=False):
    """Standard deviation, ``sqrt(var(x, ...))``; see :func:`var` for the shapes.

    The gradient is infinite where the standard deviation is 0.
    """
    from ._elementwise import sqrt

    return sqrt(var(x, axis=axis, correction=correction, keepdims=keepdims))


# --- max, min -----------------------------------------------------------------
def _tie_share(x, ans, axes, keepdims):
    """Where ``x`` equals its reduction: 1 / (number of ties); else 0 (NOTE [ties])."""
    a = _keep(ans, x.shape, axes, keepdims)
    # nan results: the nan elements are the "ties" (keeps the count >= 1, no 0 / 0).
    hit = astype(logical_or(equal(x, a), logical_and(isnan(x), isnan(a))), x.dtype)  # plain array
    from ._elementwise import divide

    return divide(hit, sum_p(hit, axis=axes, keepdims=True))


def _extremum(name, fn_name):
    def impl(xp, x, *, axis, keepdims):
        return getattr(xp, fn_name)(x, axis=axis, keepdims=keepdims)

    return defop(
        name, impl,
        vjp=(lambda g, ans, x, *, axis, keepdims:
             multiply(expand_reduced(g, x.shape, axis, keepdims), _tie_share(x, ans, axis, keepdims)),),
        jvp=(lambda t, ans, x, *, axis, keepdims:
             sum_p(multiply(t, _tie_share(x, ans, axis, keepdims)), axis=axis, keepdims=keepdims),),
        keep_args=(0,), keep_ans=True)


max_p = _extremum("max", "max")
min_p = _extremum("min", "min")


def _extremum_call(prim, name, x, axis, keepdims):
    axes = normalize_axes(axis, x.ndim, name)
    if _count(x.shape, axes) == 0:
        raise ValueError(f"{name}: cannot reduce over zero-size axes {axes} of an array of shape "
                         f"{tuple(x.shape)} (no identity)")
    return prim(x, axis=axes, keepdims=keepdims)


def max(x, /, *, axis=None, keepdims=False):
    """Maximum over ``axis``; ties share the gradient equally (NOTE [ties]).

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None
    keepdims : bool

    Returns
    -------
    array, ``S`` without the reduced axes.  Reducing a zero-size axis is a
    ``ValueError``.
    """
    return _extremum_call(max_p, "max", x, axis, keepdims)


def min(x, /, *, axis=None, keepdims=False):
    """Minimum over ``axis``; ties share the gradient equally.  Shapes as :func:`max`."""
    return _extremum_call(min_p, "min", x, axis, keepdims)


# --- logsumexp ------------------------------------------------------------------
def _logsumexp_impl(xp, x, *, axis, keepdims):
    out_shape = tuple(1 if i in axis else s for i, s in enumerate(x.shape)) if keepdims else \
        tuple(s for i, s in enumerate(x.shape) if i not in axis)
    if any(x.shape[a] == 0 for a in axis):
        return xp.full(out_shape, -math.inf, dtype=x.dtype, device=x.device)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    s = xp.sum(xp.exp(x - m), axis=axis, keepdims=True)
    zero = s == 0  # only when every element is -inf: log would warn
    out = xp.where(zero, xp.full_like(s, -math.inf), xp.log(xp.where(zero, xp.ones_like(s), s))) + m
    return xp.reshape(out, out_shape)


def _softmax(x, ans, axes, keepdims):
    return exp(subtract(x, _keep(ans, x.shape, axes, keepdims)))


logsumexp_p = defop(
    "logsumexp", _logsumexp_impl,
    vjp=(lambda g, ans, x, *, axis, keepdims:
         multiply(expand_reduced(g, x.shape, axis, keepdims), _softmax(x, ans, axis, keepdims)),),
    jvp=(lambda t, ans, x, *, axis, keepdims:
         sum_p(multiply(t, _softmax(x, ans, axis, keepdims)), axis=axis, keepdims=keepdims),),
    keep_args=(0,), keep_ans=True)


def logsumexp(x, /, *, axis=None, keepdims=False):
    """``log(sum(exp(x)))`` over ``axis``, computed without overflow.

    Parameters
    ----------
    x : array, shape ``S`` (floating)
    axis : int, tuple of int or None
    keepdims : bool

    Returns
    -------
    array, ``S`` without the reduced axes; ``-inf`` over empty axes.  The
    gradient is ``softmax(x)`` over the reduced axes.
    """
    axes = normalize_axes(axis, x.ndim, "logsumexp")
    if not is_floating(x.dtype):
        raise TypeError(f"logsumexp: x must have a floating dtype, got {x.dtype}")
    return logsumexp_p(x, axis=axes, keepdims=keepdims)
