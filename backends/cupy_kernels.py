"""Fused CUDA kernels for gpuad's hot rules, as plain data.

Each :class:`Kernel` names the gpuad primitive it replaces on CuPy arrays and
holds what ``cupy.ElementwiseKernel`` needs: parameter lists in CuPy syntax,
the CUDA C++ operation, an optional preamble and a kernel name.
``gpuad.backends.cupy.register_overrides`` builds the kernels lazily from this
table and installs them with ``gpuad._registry.override`` for every primitive
that exists (NOTE [fused primitives]); the rules are untouched.  This module
does not import CuPy, so the compile check (``tests/backends/
test_cuda_kernels.py``) and the agreement tests read it on any machine.

# NOTE [kernel conventions]: ``T`` is the floating dtype of the array inputs
# (float32 or float64; anything else runs the generic implementation).  Every
# literal is written ``T(...)`` so that float32 kernels never compute in
# double (the compile check fails a float32 kernel whose PTX has f64
# instructions).  Parameters listed in ``scalars`` are host numbers passed by
# value, converted to ``T`` by the backend; all others are arrays, broadcast
# by CuPy.  Each kernel must compute what the primitive's generic ``impl``
# computes, up to rounding (CUDA may contract ``a * b + c`` into an FMA, and
# its ``exp``/``tanh`` differ from NumPy's in the last bits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__all__ = ["KERNELS", "Kernel", "by_primitive"]


class Kernel(NamedTuple):
    """One CUDA elementwise kernel that overrides one gpuad primitive.

    Attributes
    ----------
    primitive : str
        The ``gpuad.PRIMITIVES`` name it overrides.
    in_params : str
        Input parameters in ``cupy.ElementwiseKernel`` syntax, e.g.
        ``"T g, T ans"``.
    out_params : str
        Output parameters, e.g. ``"T out"``.
    operation : str
        CUDA C++ statements run once per element.
    name : str
        Kernel name (a C identifier).
    preamble : str
        Device code placed before the kernel (helper functions).
    scalars : tuple of str
        Input parameters passed as host scalars (by value), not arrays.
    pack : callable or None
        ``pack(xp, *args, **params) -> tuple`` maps the primitive's arguments
        to the kernel's inputs, in ``in_params`` order; ``None`` passes the
        positional arguments as they are.  It may call ``xp`` (e.g. a
        reduction the kernel reads pre-reduced).
    declared_in : str
        The gpuad module that declares the primitive.  ``gpuad.nn`` and
        ``gpuad.optim`` are imported lazily, so the backend imports it before
        looking the primitive up.
    """

    primitive: str
    in_params: str
    out_params: str
    operation: str
    name: str
    preamble: str = ""
    scalars: tuple = ()
    pack: Callable | None = None
    declared_in: str = "gpuad.ops"


def _grad(primitive, v, expr, preamble="", declared_in="gpuad.ops"):
    """A kernel ``out = <expr>`` for a unary gradient ``primitive(g, v)``."""
    return Kernel(primitive, f"T g, T {v}", "T out", f"out = {expr};",
                  f"gpuad_{primitive}", preamble, declared_in=declared_in)


# Numerically stable logistic sigmoid, the same branches as gpuad.nn.sigmoid:
# exp(-|x|) is in (0, 1], so nothing overflows.
SIGMOID_PREAMBLE = """\
template <typename U>
__device__ __forceinline__ U gpuad_sigmoid(U x) {
  U e = exp(-fabs(x));
  U d = U(1) + e;
  return x >= U(0) ? U(1) / d : e / d;
}
"""

# --- the fused primitives of gpuad.ops (defunary(..., fused=...)) --------------
_UNARY = (
    _grad("tanh_grad", "ans", "g * (T(1) - ans * ans)"),
    _grad("sin_grad", "x", "g * cos(x)"),
    _grad("cos_grad", "x", "g * -sin(x)"),
    _grad("tan_grad", "ans", "g * (ans * ans + T(1))"),
    _grad("log_grad", "x", "g * (T(1) / x)"),
    _grad("log1p_grad", "x", "g * (T(1) / (x + T(1)))"),
    _grad("expm1_grad", "ans", "g * (ans + T(1))"),
    _grad("sqrt_grad", "ans", "g * (T(0.5) / ans)"),
    _grad("square_grad", "x", "g * (T(2) * x)"),
    _grad("reciprocal_grad", "ans", "g * -(ans * ans)"),
)

# --- gpuad.nn activations ------------------------------------------------------
# relu: g * (ans > 0) as the generic rule computes it (ans > 0 exactly where
# x > 0), so an inf/NaN cotangent at an inactive unit gives NaN there too
# (inf * 0), as it must for loss scaling to see an fp16 overflow; the select
# saves the multiply at active units only.
_NN = "gpuad.nn"
_RELU = _grad("nn_relu_grad", "ans", "ans > T(0) ? g : g * T(0)", declared_in=_NN)
_SIGMOID = _grad("nn_sigmoid_grad", "ans", "g * (ans * (T(1) - ans))", declared_in=_NN)
_SOFTPLUS = _grad("nn_softplus_grad", "x", "g * gpuad_sigmoid(x)", SIGMOID_PREAMBLE, _NN)
# silu(x) = x s(x);  silu'(x) = s (1 + x (1 - s)).
_SILU = Kernel(
    "nn_silu_grad", "T g, T x", "T out",
    "T s = gpuad_sigmoid(x);\n"
    "out = g * (s * (T(1) + x * (T(1) - s)));",
    "gpuad_nn_silu_grad", SIGMOID_PREAMBLE, declared_in=_NN)
# gelu, tanh form: 0.5 x (1 + tanh(u)), u = c (xc + a xc^3), xc = clip(x, -10, 10)
# as in gpuad.nn.gelu (|xc| = 10 already saturates tanh: 1 - t^2 == 0 there).
# d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a xc^2).
_GELU = Kernel(
    "nn_gelu_tanh_grad", "T g, T x", "T out",
    "T xc = fmin(fmax(x, T(-10)), T(10));\n"
    "T t = tanh(T(0.7978845608028654) * (xc + T(0.044715) * (xc * (xc * xc))));\n"
    "T du = T(0.7978845608028654) * (T(1) + T(0.134145) * (xc * xc));\n"
    "out = g * (T(0.5) * (T(1) + t) + (T(0.5) * x) * ((T(1) - t * t) * du));",
    "gpuad_nn_gelu_tanh_grad", declared_in=_NN)


def _pack_log_softmax(xp, g, ans, *, axis):
    # The one reduction runs first (CuPy's sum); the kernel broadcasts it.
    return g, ans, xp.sum(g, axis=axis, keepdims=True)


# log_softmax VJP: g - exp(ans) * sum(g, axis), exp(ans) being softmax(x).
_LOG_SOFTMAX = Kernel(
    "nn_log_softmax_grad", "T g, T ans, T gsum", "T out", "out = g - exp(ans) * gsum;",
    "gpuad_nn_log_softmax_grad", pack=_pack_log_softmax, declared_in=_NN)


# --- optimiser ---------------------------------------------------------------------
def _pack_adam(xp, p, g, m, v, lr, c1, c2, *, b1, b2, eps, l2, weight_decay):
    # 1 - b1 is formed in double here, then rounded to T once, as NumPy does
    # with ``(1.0 - b1) * g``; rounding b1 first would differ in the last bit.
    return (p, g, m, v, lr, c1, c2, b1, 1.0 - b1, b2, 1.0 - b2, eps, l2, weight_decay)


# Adam / AdamW step for one parameter, as gpuad.optim computes it.  lr, c1 =
# 1 - b1^t, c2 = 1 - b2^t are 0-d device arrays of any float dtype S (they
# never leave the GPU); l2 is the coupled L2 penalty (Adam's weight_decay),
# wd the decoupled decay (AdamW's).  New arrays come out; the inputs are kept.
_ADAM = Kernel(
    "adam_update",
    "T p, T g, T m, T v, S lr, S c1, S c2, "
    "T b1, T omb1, T b2, T omb2, T eps, T l2, T wd",
    "T p_out, T m_out, T v_out",
    "T gg = g;\n"
    "if (l2 != T(0)) gg = gg + l2 * p;\n"
    "T mn = b1 * m + omb1 * gg;\n"
    "T vn = b2 * v + omb2 * (gg * gg);\n"
    "T upd = (mn / T(c1)) / (sqrt(vn / T(c2)) + eps);\n"
    "if (wd != T(0)) upd = upd + wd * p;\n"
    "p_out = p - T(lr) * upd;\n"
    "m_out = mn;\n"
    "v_out = vn;",
    "gpuad_adam_update",
    scalars=("b1", "omb1", "b2", "omb2", "eps", "l2", "wd"),
    pack=_pack_adam, declared_in="gpuad.optim")

#: Every kernel gpuad ships, in a fixed order.
KERNELS: tuple = _UNARY + (_RELU, _SIGMOID, _SOFTPLUS, _SILU, _GELU, _LOG_SOFTMAX, _ADAM)


def by_primitive():
    """The kernels keyed by the primitive they override.

    Returns
    -------
    dict
        ``primitive name -> Kernel``.
    """
    return {k.primitive: k for k in KERNELS}
