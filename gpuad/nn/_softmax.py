"""Softmax, log-softmax and logsumexp: max-shifted, so large inputs neither overflow nor lose precision.

Re-exported by :mod:`gpuad.nn.activations` and :mod:`gpuad.nn` (NOTE
[softmax memory] there: the two primitives' rules read only the output).
"""

from __future__ import annotations

import math

from .. import ops
from .._registry import deffused, defop

__all__ = ["softmax", "log_softmax", "logsumexp"]


# --- softmax and log_softmax -------------------------------------------------------
def _shifted(xp, x, axis):
    """``x - max(x)`` over ``axis``; the shift is 0 where the max is not finite."""
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    return x - m


def _softmax_impl(xp, x, *, axis):
    if any(x.shape[a] == 0 for a in axis):
        return xp.zeros_like(x)
    e = xp.exp(_shifted(xp, x, axis))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _softmax_rule(g, ans, x, *, axis):
    # J g = s * (g - <s, g>) along axis: symmetric, so VJP and JVP agree.
    dot = ops.sum(ops.multiply(g, ans), axis=axis, keepdims=True)
    return ops.multiply(ans, ops.subtract(g, dot))


_softmax_p = defop("nn_softmax", _softmax_impl, vjp=(_softmax_rule,), jvp=(_softmax_rule,),
                   keep_args=(), keep_ans=True)


def _log_softmax_impl(xp, x, *, axis):
    if any(x.shape[a] == 0 for a in axis):
        return xp.zeros_like(x)
    z = _shifted(xp, x, axis)
    # The max entry contributes exp(0) = 1, so the sum is >= 1: log is safe.
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


_log_softmax_grad_p = deffused(
    "nn_log_softmax_grad",
    lambda xp, g, ans, *, axis: g - xp.exp(ans) * xp.sum(g, axis=axis, keepdims=True),
    lambda g, ans, *, axis: ops.subtract(g, ops.multiply(ops.exp(ans), ops.sum(g, axis=axis, keepdims=True))),
    doc="VJP of log_softmax, g - softmax * sum(g), from the output.")

_log_softmax_p = defop(
    "nn_log_softmax", _log_softmax_impl,
    vjp=(lambda g, ans, x, *, axis: _log_softmax_grad_p(g, ans, axis=axis),),
    jvp=(lambda t, ans, x, *, axis:
         ops.subtract(t, ops.sum(ops.multiply(ops.exp(ans), t), axis=axis, keepdims=True)),),
    keep_args=(), keep_ans=True)


def _axes(x, axis, name):
    if axis is None:
        return tuple(range(x.ndim))
    return ops.normalize_axes(axis, x.ndim, name)


def softmax(x, /, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the max for stability.

    Parameters
    ----------
    x : array, shape ``S`` (floating)
    axis : int, tuple of int or None, default -1
        Axes normalised over (``None``: all).

    Returns
    -------
    array, shape ``S``
        Non-negative; sums to 1 along ``axis``.  Finite for any finite input,
        e.g. ``softmax([1000, 0, -1000]) == [1, 0, 0]``.

    Notes
    -----
    VJP: ``s * (g - sum(g * s, axis))``; only the output is kept on the tape
    (NOTE [softmax memory]).
    """
    return _softmax_p(x, axis=_axes(x, axis, "softmax"))


def log_softmax(x, /, axis=-1):
    """``x - logsumexp(x)`` along ``axis``, shifted by the max for stability.

    Parameters
    ----------
    x : array, shape ``S`` (floating)
    axis : int, tuple of int or None, default -1

    Returns
    -------
    array, shape ``S``
        ``<= 0``; exact where :func:`softmax` underflows, e.g.
        ``log_softmax([1000, 0, -1000]) == [0, -1000, -2000]``.

    Notes
    -----
    VJP: ``g - softmax(x) * sum(g, axis)``, with ``softmax(x) = exp(ans)``;
    only the output is kept on the tape.
    """
    return _log_softmax_p(x, axis=_axes(x, axis, "log_softmax"))


# --- logsumexp ---------------------------------------------------------------------
def _logsumexp_fallback(x, /, *, axis=None, keepdims=False):
    """Max-shifted composite ``logsumexp`` (used when gpuad.ops lacks one).

    The shift is a constant to every transform (``stop_gradient``): the value
    of ``log(sum(exp(x - m))) + m`` does not depend on ``m``.
    """
    from ..transforms import stop_gradient

    axes = _axes(x, axis, "logsumexp")
    if any(x.shape[a] == 0 for a in axes):
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keepdims else \
            tuple(s for i, s in enumerate(x.shape) if i not in axes)
        return ops.full(shape, -math.inf, dtype=x.dtype, device=x.device)
    m = stop_gradient(ops.max(x, axis=axes, keepdims=True))
    m = ops.where(ops.isfinite(m), m, ops.zeros_like(m))
    s = ops.sum(ops.exp(ops.subtract(x, m)), axis=axes, keepdims=True)
    zero = ops.equal(s, 0.0)  # every element -inf: log would warn
    out = ops.add(ops.where(zero, -math.inf, ops.log(ops.where(zero, 1.0, s))), m)
    if not keepdims:
        out = ops.reshape(out, tuple(s for i, s in enumerate(x.shape) if i not in axes))
    return out


def logsumexp(x, /, *, axis=None, keepdims=False):
    """``log(sum(exp(x)))`` over ``axis`` without overflow.

    Parameters
    ----------
    x : array, shape ``S`` (floating)
    axis : int, tuple of int or None, default None (all axes)
    keepdims : bool, default False

    Returns
    -------
    array, ``S`` without the reduced axes (kept with size 1 if ``keepdims``)
        ``logsumexp([1000, 1000]) == 1000 + log 2``.  The gradient is
        ``softmax(x)`` over the reduced axes.

    Notes
    -----
    Uses :func:`gpuad.ops.logsumexp` (a primitive) when available, else a
    max-shifted composite.
    """
    impl = getattr(ops, "logsumexp", None)
    if impl is None:
        return _logsumexp_fallback(x, axis=axis, keepdims=keepdims)
    return impl(x, axis=axis, keepdims=keepdims)
