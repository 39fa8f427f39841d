"""Numerically stable nonlinearities for neural networks.

Every function here is differentiable to any order by every gpuad transform,
works on any backend (it only calls gpuad ops; the primitives registered here
touch the array namespace only in their implementations), and is written so
that large inputs neither overflow nor lose precision:

==================  =====================================================
``relu``            primitive ``nn_relu``; derivative exactly 0 at 0
``sigmoid``         primitive ``nn_sigmoid``; ``exp(-|x|)`` only, so no
                    overflow; derivative ``s (1 - s)`` from the output
``softplus``        primitive ``nn_softplus``;
                    ``log1p(exp(-|x|)) + max(x, 0)``
``silu``            primitive ``nn_silu``, ``x * sigmoid(x)``
``gelu``            tanh approximation (default): primitive
                    ``nn_gelu_tanh``; exact form through the primitive
                    ``nn_ndtr`` (the standard normal CDF)
``tanh``            re-export of :func:`gpuad.ops.tanh`
``softmax``         primitive ``nn_softmax``; max-shifted
``log_softmax``     primitive ``nn_log_softmax``; max-shifted
``logsumexp``       :func:`gpuad.ops.logsumexp` when present, else a
                    max-shifted composite
==================  =====================================================

# NOTE [relu at 0]: relu has derivative 0 at x == 0 (the convention of JAX,
# PyTorch and AD tutorials), not the 1/2 that ``maximum(x, 0)`` would give
# under NOTE [subgradients].  That is why relu is its own primitive.

# NOTE [softmax memory]: ``softmax`` and ``log_softmax`` are primitives whose
# rules read only the output (``keep_ans``), so the reverse tape keeps one
# array per call, not the shifted input, its exponential and the sum.

# NOTE [gelu and silu memory]: ``silu`` and the tanh form of ``gelu`` are
# primitives that keep only their input ``x`` (the composites kept 2 and 9
# arrays per call).  Their rules call one gradient primitive, ``nn_silu_grad``
# / ``nn_gelu_tanh_grad`` ``(g, x) -> g * f'(x)``, which recomputes the
# nonlinearity from ``x`` in one pass on CuPy (a fused kernel) and with few
# in-place temporaries elsewhere.  That primitive has rules of its own (in
# ``g``: itself; in ``x``: ``g * f''(x)`` in gpuad ops), so grad-of-grad and
# Hessians keep ``g`` and ``x`` per call, not the composite's temporaries.
"""

from __future__ import annotations

import math

from .. import ops
from .._registry import deffused, defop, defunary
from ..ops import tanh
from ._softmax import _logsumexp_fallback, log_softmax, logsumexp, softmax  # noqa: F401 - re-exported

__all__ = [
    "relu", "sigmoid", "softplus", "silu", "gelu", "tanh", "softmax", "log_softmax", "logsumexp",
    "ndtr",
]


# --- relu -----------------------------------------------------------------------
def _relu_impl(xp, x):
    # maximum propagates NaN.  (NumPy's where with an unpredictable mask is
    # ~20x slower than maximum or a multiply by the mask: see bench/RESULTS.md.)
    return xp.maximum(x, xp.zeros_like(x))


# ans > 0 exactly where x > 0, so the tape keeps only the output.
_relu_grad_p = deffused(
    "nn_relu_grad", lambda xp, g, ans: g * xp.astype(ans > 0, g.dtype),
    lambda g, ans: ops.multiply(g, ops.astype(ops.greater(ans, 0), g.dtype)),
    doc="g where the relu output is positive, else 0 (fused: one kernel on CuPy).")


def _relu_rule(g, ans, x):
    return _relu_grad_p(g, ans)


_relu_p = defop("nn_relu", _relu_impl, vjp=(_relu_rule,), jvp=(_relu_rule,), keep_args=(), keep_ans=True)


def relu(x, /):
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : array, shape ``S`` (floating)

    Returns
    -------
    array, shape ``S``
        ``x`` where ``x > 0``, else 0; NaN propagates.

    Notes
    -----
    The derivative is 1 for ``x > 0`` and exactly 0 for ``x <= 0``, including
    ``x == 0`` (see NOTE [relu at 0]).  The second derivative is 0.
    """
    return _relu_p(x)


# --- sigmoid --------------------------------------------------------------------
def _sigmoid_impl(xp, x):
    # exp(-|x|) is in (0, 1]: it cannot overflow, and it underflows to 0 silently.
    # sigmoid = n / (1 + e), the numerator n being 1 for x >= 0 and e below:
    # max(e, x >= 0) is exactly that (and keeps NaN), ~3x faster on NumPy than
    # where(x >= 0, 1 / d, e / d), with the same correctly rounded quotients.
    # (Fresh temporaries are updated in place: on NumPy each new large array
    # costs page faults, and fewer of them halve the time of a silu step.)
    e = xp.abs(x)
    e *= -1.0
    e = xp.exp(e)
    n = xp.maximum(e, xp.astype(x >= 0, e.dtype))
    e += 1.0
    n /= e
    return n


_sigmoid_p = defunary(
    "nn_sigmoid", _sigmoid_impl, lambda ans, x: ops.multiply(ans, 1.0 - ans), uses="ans",
    fused=lambda xp, g, ans: g * (ans * (1.0 - ans)),
    doc="Logistic sigmoid; derivative s * (1 - s) from the output.")


def sigmoid(x, /):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, without overflow for any ``x``.

    Parameters
    ----------
    x : array, shape ``S`` (floating)

    Returns
    -------
    array, shape ``S``, values in ``[0, 1]``
        ``sigmoid(-1000) == 0`` and ``sigmoid(1000) == 1`` exactly, with no
        overflow warnings; for negative ``x`` the result keeps full relative
        precision (``exp(x) / (1 + exp(x))``).

    Notes
    -----
    The derivative ``s * (1 - s)`` is computed from the output ``s``, so the
    reverse tape keeps only the output.
    """
    return _sigmoid_p(x)


# --- softplus -------------------------------------------------------------------
def _softplus_impl(xp, x):
    return xp.log1p(xp.exp(-xp.abs(x))) + xp.where(x > 0, x, xp.zeros_like(x))


_softplus_p = defunary("nn_softplus", _softplus_impl, lambda ans, x: sigmoid(x), uses="x",
                       fused=lambda xp, g, x: g * _sigmoid_impl(xp, x),
                       doc="softplus(x) = log(1 + exp(x)); derivative sigmoid(x).")


def softplus(x, /):
    """``log(1 + exp(x))``, computed as ``log1p(exp(-|x|)) + max(x, 0)``.

    Parameters
    ----------
    x : array, shape ``S`` (floating)

    Returns
    -------
    array, shape ``S``, values ``>= 0``
        ``softplus(1000) == 1000`` exactly; ``softplus(-1000) == 0`` (the
        true value, ``exp(-1000)``, underflows); for moderately negative
        ``x`` the result is ``exp(x)`` to full relative precision.

    Notes
    -----
    The derivative is ``sigmoid(x)``.
    """
    return _softplus_p(x)


# --- silu -----------------------------------------------------------------------
def _silu_impl(xp, x):
    s = _sigmoid_impl(xp, x)
    s *= x
    return s


def _times(w, g):
    """``w * g`` for a fresh temporary ``w``: in place when that is the same array."""
    if getattr(g, "shape", None) == w.shape and g.dtype == w.dtype:
        w *= g
        return w
    return w * g


def _silu_grad_impl(xp, g, x):
    # g * s (1 + x (1 - s)), s = sigmoid(x): the sigmoid's temporaries plus one.
    # |x (1 - s)| <= |x| and it is multiplied by s last, so nothing overflows.
    s = _sigmoid_impl(xp, x)
    w = 1.0 - s
    w *= x
    w += 1.0
    w *= s
    return _times(w, g)


def _silu_d2(x):
    # silu'' = s (1 - s) (2 + x (1 - 2 s)), in gpuad ops (differentiable again).
    s = sigmoid(x)
    ds = ops.multiply(s, ops.subtract(1.0, s))
    return ops.multiply(ds, ops.add(2.0, ops.multiply(x, ops.subtract(1.0, ops.multiply(2.0, s)))))


_silu_grad_p = defop(
    "nn_silu_grad", _silu_grad_impl,
    vjp=(lambda ct, ans, g, x: _silu_grad_p(ct, x),
         lambda ct, ans, g, x: ops.multiply(ct, ops.multiply(g, _silu_d2(x)))),
    jvp=(lambda t, ans, g, x: _silu_grad_p(t, x),
         lambda t, ans, g, x: ops.multiply(t, ops.multiply(g, _silu_d2(x)))),
    keep_args=(0, 1), keep_ans=False,
    doc="g * silu'(x) = g * s (1 + x (1 - s)), s = sigmoid(x) (one kernel on CuPy).")


def _silu_rule(g, ans, x):
    return _silu_grad_p(g, x)


_silu_p = defop("nn_silu", _silu_impl, vjp=(_silu_rule,), jvp=(_silu_rule,), keep_args=(0,), keep_ans=False,
                doc="x * sigmoid(x); the tape keeps x only (NOTE [gelu and silu memory]).")


def silu(x, /):
    """Sigmoid-weighted linear unit (swish), ``x * sigmoid(x)``.

    Parameters
    ----------
    x : array, shape ``S`` (floating)

    Returns
    -------
    array, shape ``S``
        Stable for all ``x`` since :func:`sigmoid` is.

    Notes
    -----
    The derivative is ``s (1 + x (1 - s))`` with ``s = sigmoid(x)``,
    recomputed from ``x`` by the primitive ``nn_silu_grad``: the reverse tape
    keeps only ``x`` (NOTE [gelu and silu memory]).
    """
    return _silu_p(x)


# --- gelu -----------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_GELU_CUBIC = 0.044715
# u = sqrt(2/pi) (x + 0.044715 x^3) = x (_GELU_C + _GELU_CA x^2)
_GELU_C = _SQRT_2_OVER_PI
_GELU_CA = _SQRT_2_OVER_PI * _GELU_CUBIC
# Beyond |x| = 10 the tanh argument exceeds 40 and tanh is exactly +-1 in
# float64, so clipping x inside the cubic changes nothing but keeps x**3 from
# overflowing for huge |x|.
_GELU_CLIP = 10.0
# erfc: series below the split, continued fraction above (see _erfc_nonneg).
_ERF_SPLIT = 1.25
_ERF_SERIES_TERMS = 40
_ERF_CF_TERMS = 150
_ERF_CAP = 40.0


def _erfc_nonneg(xp, z):
    """``erfc(z)`` for ``z >= 0`` to about float64 precision.

    ``z < 1.25``: ``1 - erf(z)`` with the series without cancellation
    ``erf(z) = 2/sqrt(pi) exp(-z^2) sum_n (2 z^2)^n z / (1 3 5 ... (2n+1))``
    (Abramowitz and Stegun 7.1.6; all terms positive).  ``z >= 1.25``: the
    continued fraction ``erfc(z) = exp(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z
    + (3/2)/(z + ...))))`` (A&S 7.1.14), evaluated backwards from a fixed
    depth, which keeps full relative precision in the tail.  Measured against
    ``math.erfc``: relative error below 2e-14 on ``[0, 5]``, absolute below
    1e-15 everywhere.
    """
    small = z < _ERF_SPLIT
    zs = xp.where(small, z, xp.zeros_like(z))
    term = zs
    total = zs
    for n in range(1, _ERF_SERIES_TERMS):
        term = term * (2.0 * zs * zs) / (2 * n + 1)
        total = total + term
    erf_small = (2.0 / math.sqrt(math.pi)) * xp.exp(-zs * zs) * total
    # erfc(z) underflows to 0 beyond z = 27; capping z keeps z * z finite.
    zl = xp.where(small, xp.full_like(z, _ERF_SPLIT), xp.minimum(z, xp.full_like(z, _ERF_CAP)))
    frac = zl
    for k in range(_ERF_CF_TERMS, 0, -1):
        frac = zl + (k / 2.0) / frac
    erfc_large = xp.exp(-zl * zl) / (math.sqrt(math.pi) * frac)
    return xp.where(small, 1.0 - erf_small, erfc_large)


def _ndtr_impl(xp, x):
    z = xp.abs(x) * _INV_SQRT_2
    half_tail = 0.5 * _erfc_nonneg(xp, z)  # P(N > |x|)
    return xp.where(x < 0, half_tail, 1.0 - half_tail)


def _normal_pdf(ans, x):
    # exp(-x^2/2) / sqrt(2 pi); it is exactly 0 in float64 beyond |x| = 39, and
    # clipping there keeps x^2 from overflowing for huge |x|.
    xc = ops.clip(x, min=-_PDF_CLIP, max=_PDF_CLIP)
    return ops.multiply(_INV_SQRT_2PI, ops.exp(ops.multiply(-0.5, ops.square(xc))))


_PDF_CLIP = 40.0
_ndtr_p = defunary("nn_ndtr", _ndtr_impl, _normal_pdf, uses="x",
                   doc="Standard normal CDF; derivative exp(-x^2/2)/sqrt(2 pi).")


def ndtr(x, /):
    """Standard normal cumulative distribution function ``Phi(x)``.

    Parameters
    ----------
    x : array, shape ``S`` (floating)

    Returns
    -------
    array, shape ``S``, values in ``[0, 1]``
        Absolute error below 1e-15; relative error below 1e-13 for
        ``x > -20``, and the lower tail does not flush to 0 early
        (``ndtr(-30)`` is about ``4.9e-198``).

    Notes
    -----
    The array API has no ``erf``; this uses a series for ``|x| < 1.25 sqrt(2)``
    and a continued fraction beyond (see ``_erfc_nonneg``), about 200
    elementwise operations per call.  The derivative is
    the normal density ``exp(-x^2/2) / sqrt(2 pi)``.
    """
    return _ndtr_p(x)


def _gelu_tanh_inner(xp, x):
    """``(t, b)``: ``t = tanh(u)``, ``u = xc b``, ``b = c + c a xc^2``, ``xc`` = x clipped to +-10.

    Two fresh temporaries besides ``t``, updated in place (NOTE [gelu and silu
    memory]): ``u`` overwrites the clipped copy of ``x``.
    """
    u = xp.clip(x, min=-_GELU_CLIP, max=_GELU_CLIP)
    b = u * u
    b *= _GELU_CA
    b += _GELU_C
    u *= b
    return xp.tanh(u), b


def _gelu_tanh_impl(xp, x):
    # 0.5 x (1 + t): 0.5 (1 + t) is exact, so this rounds as (0.5 x) (1 + t) does.
    t, _ = _gelu_tanh_inner(xp, x)
    t += 1.0
    t *= 0.5
    t *= x
    return t


def _gelu_tanh_grad_impl(xp, g, x):
    # gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) u',  u' = c (1 + 3 a xc^2) = 3 b - 2 c
    # (clip's derivative is 0 only where 1 - t^2 == 0 already: |x| >= 10
    # saturates tanh).  1 - t^2 is formed as (1 - t)(1 + t), exact near
    # t = +-1, and multiplies x last, so huge |x| gives 0, not inf * 0.
    # Four fresh arrays in all (three live at a time), 16 passes.
    t, du = _gelu_tanh_inner(xp, x)
    du *= 3.0
    du -= 2.0 * _GELU_C
    w = 1.0 - t
    t += 1.0
    w *= t
    w *= du
    w *= x
    w += t
    w *= 0.5
    return _times(w, g)


def _gelu_tanh_d2(x):
    # gelu'' = (1 - t^2) u' + 0.5 x (1 - t^2) (u'' - 2 t u'^2),  u'' = 6 c a xc,
    # in gpuad ops (differentiable again); (1 - t^2) multiplies before x does.
    xc = ops.clip(x, min=-_GELU_CLIP, max=_GELU_CLIP)
    s = ops.square(xc)
    t = tanh(ops.multiply(xc, ops.add(_GELU_C, ops.multiply(_GELU_CA, s))))
    du = ops.add(_GELU_C, ops.multiply(3.0 * _GELU_CA, s))
    d2u = ops.multiply(6.0 * _GELU_CA, xc)
    sech2 = ops.multiply(ops.subtract(1.0, t), ops.add(1.0, t))
    curv = ops.multiply(sech2, ops.subtract(d2u, ops.multiply(ops.multiply(2.0, t), ops.square(du))))
    return ops.add(ops.multiply(sech2, du), ops.multiply(ops.multiply(0.5, x), curv))


_gelu_tanh_grad_p = defop(
    "nn_gelu_tanh_grad", _gelu_tanh_grad_impl,
    vjp=(lambda ct, ans, g, x: _gelu_tanh_grad_p(ct, x),
         lambda ct, ans, g, x: ops.multiply(ct, ops.multiply(g, _gelu_tanh_d2(x)))),
    jvp=(lambda t, ans, g, x: _gelu_tanh_grad_p(t, x),
         lambda t, ans, g, x: ops.multiply(t, ops.multiply(g, _gelu_tanh_d2(x)))),
    keep_args=(0, 1), keep_ans=False,
    doc="g * gelu'(x) for the tanh form of gelu, recomputed from x (one kernel on CuPy).")


def _gelu_tanh_rule(g, ans, x):
    return _gelu_tanh_grad_p(g, x)


_gelu_tanh_p = defop(
    "nn_gelu_tanh", _gelu_tanh_impl, vjp=(_gelu_tanh_rule,), jvp=(_gelu_tanh_rule,),
    keep_args=(0,), keep_ans=False,
    doc="0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); the tape keeps x only.")


def gelu(x, /, approximate=True):
    """Gaussian error linear unit, ``x * Phi(x)``.

    Parameters
    ----------
    x : array, shape ``S`` (floating)
    approximate : bool, default True
        ``True``: the tanh approximation of Hendrycks and Gimpel,
        ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (the default, as
        in JAX; the array API has no ``erf``).  ``False``: the exact
        ``x * Phi(x)``, with the normal CDF :func:`ndtr` computed to float64
        precision by series and continued fraction.

    Returns
    -------
    array, shape ``S``
        Stable for all ``x``: no overflow for huge ``|x|``.

    Notes
    -----
    The tanh form clips ``x`` to ``[-10, 10]`` inside the cubic (``tanh`` is
    already exactly +-1 there).  It is the primitive ``nn_gelu_tanh``: the
    reverse tape keeps only ``x`` and the derivative is recomputed from it
    (NOTE [gelu and silu memory]).
    """
    if not approximate:
        return ops.multiply(x, ndtr(x))
    return _gelu_tanh_p(x)
