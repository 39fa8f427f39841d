"""What each CUDA kernel of ``gpuad.backends.cupy_kernels`` must compute.

One :class:`Case` per kernel (two for Adam: coupled and decoupled decay; two
for log-softmax: one axis and two).  A case draws inputs, states the math as
a pure-NumPy reference (``ref``, written here independently of gpuad and of
the CUDA snippet), and computes the same quantity through gpuad's current
rules (``via_rules``: ``gpuad.vjp`` of the forward function, or an optimiser
step), which works whether or not the kernel's fused primitive exists yet.

Used by ``test_cuda_kernels.py`` (the CUDA snippet, compiled for the host,
against ``ref``) and ``test_kernel_agreement.py`` (``ref`` against gpuad's
generic implementations, and on a GPU the CuPy kernels against both).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

import gpuad
from gpuad import nn, ops, optim


class Case(NamedTuple):
    """Inputs, NumPy reference and gpuad-rules path of one kernel.

    Attributes
    ----------
    id : str
    primitive : str
        The primitive (and kernel) it describes.
    sample : callable
        ``sample(rng, dtype) -> (args, params, x)``: the primitive's
        positional arguments (NumPy arrays of ``dtype``, 0-d float32 arrays
        for Adam's ``lr, c1, c2``), its keyword params, and the forward input
        ``x`` the rules path differentiates at (``None`` for Adam).
    ref : callable
        ``ref(*args, **params)``: the result(s) in NumPy.
    via_rules : callable
        ``via_rules(asarray, args, params, x)``: the same through gpuad's
        transforms; ``asarray`` turns a NumPy array into a backend array.
    nonfinite : bool
        The inputs hold inf or NaN on purpose: NumPy's "invalid value"
        warnings (errors under pytest.ini) are expected and silenced.
    """

    id: str
    primitive: str
    sample: Callable
    ref: Callable
    via_rules: Callable
    nonfinite: bool = False

    def errstate(self):
        """``numpy.errstate`` silencing invalid-value warnings for a ``nonfinite`` case, else a no-op."""
        return np.errstate(invalid="ignore") if self.nonfinite else contextlib.nullcontext()


def _vjp(f, asarray, x, g):
    (ct,) = gpuad.vjp(f, asarray(x))[1](asarray(g))
    return ct


def _unary(name, f_np, f_gpuad, deriv, uses, lo, hi):
    """A case for ``<name>_grad(g, v)``: ``g * f'(x)`` with ``v`` = ``x`` or ``f(x)``."""

    def sample(rng, dtype):
        x = rng.uniform(lo, hi, size=(5, 7)).astype(dtype)
        g = rng.normal(size=(5, 7)).astype(dtype)
        return (g, f_np(x) if uses == "ans" else x), {}, x

    return Case(name + "_grad", name + "_grad", sample, lambda g, v: g * deriv(v),
                lambda asarray, args, params, x: _vjp(f_gpuad, asarray, x, args[0]))


def _np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # a different formula from the kernel's on purpose


_C = math.sqrt(2.0 / math.pi)


def _np_gelu_grad(x):
    xc = np.clip(x, -10.0, 10.0)
    t = np.tanh(_C * (xc + 0.044715 * xc**3))
    dt = (1.0 - t * t) * _C * (1.0 + 3 * 0.044715 * xc**2) * (np.abs(x) < 10.0)
    return 0.5 * (1.0 + t) + 0.5 * x * dt


def _with_x(name, deriv, f_gpuad, lo=-6.0, hi=6.0, ans=None):
    def sample(rng, dtype):
        x = rng.uniform(lo, hi, size=(5, 7))
        x[0, :3] = (0.0, lo, hi)
        x = x.astype(dtype)
        g = rng.normal(size=(5, 7)).astype(dtype)
        return (g, x if ans is None else ans(x)), {}, x

    return Case(name, name, sample, lambda g, v: g * deriv(v),
                lambda asarray, args, params, x: _vjp(f_gpuad, asarray, x, args[0]))


def _relu_nonfinite_case():
    """relu's gradient with inf and NaN cotangents at active, inactive and zero units.

    The generic rule is ``g * (ans > 0)``: an inf or NaN cotangent at an
    inactive unit gives NaN (inf * 0), which is what loss scaling needs to
    see an fp16 overflow; the kernel must not turn it into 0.
    """

    def sample(rng, dtype):
        x = rng.uniform(-3.0, 3.0, size=(4, 6))
        x[:, :3] = (-1.5, 0.0, 2.0)  # inactive, zero, active in each row
        x = x.astype(dtype)
        g = rng.normal(size=(4, 6))
        g[0, :3] = g[1, :3] = np.inf
        g[2, :3] = -np.inf
        g[3, :3] = np.nan
        g = g.astype(dtype)
        return (g, np.maximum(x, 0)), {}, x

    def ref(g, ans):
        with np.errstate(invalid="ignore"):
            return g * (ans > 0).astype(ans.dtype)

    def via_rules(asarray, args, params, x):
        with np.errstate(invalid="ignore"):
            return _vjp(nn.relu, asarray, x, args[0])

    return Case("nn_relu_grad[nonfinite g]", "nn_relu_grad", sample, ref, via_rules, nonfinite=True)


def _log_softmax_case(axis):
    def sample(rng, dtype):
        x = rng.normal(scale=3.0, size=(4, 6)).astype(dtype)
        m = np.max(x, axis=axis, keepdims=True)
        ans = x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
        return (rng.normal(size=(4, 6)).astype(dtype), ans.astype(dtype)), {"axis": axis}, x

    def ref(g, ans, *, axis):
        return g - np.exp(ans) * np.sum(g, axis=axis, keepdims=True)

    def via_rules(asarray, args, params, x):
        return _vjp(lambda x: nn.log_softmax(x, axis=axis), asarray, x, args[0])

    return Case(f"nn_log_softmax_grad[axis={axis}]", "nn_log_softmax_grad", sample, ref, via_rules)


def _adam_case(decoupled):
    hyper = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
    lr, t, wd = 1e-2, 3, 0.1

    def sample(rng, dtype):
        p, g, m = (rng.normal(size=(6, 5)).astype(dtype) for _ in range(3))
        v = rng.uniform(0.0, 2.0, size=(6, 5)).astype(dtype)
        # As gpuad.optim computes them: in the parameters' dtype (float64 for float64 parameters,
        # else float32: NOTE [optimizer arithmetic dtype]), bias corrections 1 - b^t = -expm1(t log b).
        ct = np.float64 if np.dtype(dtype) == np.float64 else np.float32
        c1, c2 = (-np.expm1(ct(t) * ct(math.log(hyper[b]))) for b in ("b1", "b2"))
        scalars = tuple(np.asarray(s, dtype=ct) for s in (lr, c1, c2))
        params = dict(hyper, l2=0.0 if decoupled else wd, weight_decay=wd if decoupled else 0.0)
        return (p, g, m, v) + scalars, params, None

    def ref(p, g, m, v, lr, c1, c2, *, b1, b2, eps, l2, weight_decay):
        g = g + l2 * p
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        upd = m / np.float64(c1) / (np.sqrt(v / np.float64(c2)) + eps) + weight_decay * p
        return p - np.float64(lr) * upd, m, v

    def via_rules(asarray, args, params, x):
        p, g, m, v = (asarray(a) for a in args[:4])
        make = optim.adamw if decoupled else optim.adam
        opt = make(lr, weight_decay=wd, **hyper)
        state = {"step": ops.full_like(opt.init([p])["step"], t - 1), "m": [m], "v": [v]}
        new_p, new_state = opt.step([p], [g], state)
        return new_p[0], new_state["m"][0], new_state["v"][0]

    return Case("adam_update[adamw]" if decoupled else "adam_update[adam]", "adam_update",
                sample, ref, via_rules)


def _stable_sigmoid(x):
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


CASES = (
    _unary("tanh", np.tanh, ops.tanh, lambda a: 1.0 - a * a, "ans", -3.0, 3.0),
    _unary("sin", np.sin, ops.sin, np.cos, "x", -4.0, 4.0),
    _unary("cos", np.cos, ops.cos, lambda x: -np.sin(x), "x", -4.0, 4.0),
    _unary("tan", np.tan, ops.tan, lambda a: 1.0 + a * a, "ans", -1.3, 1.3),
    _unary("log", np.log, ops.log, lambda x: 1.0 / x, "x", 0.05, 5.0),
    _unary("log1p", np.log1p, ops.log1p, lambda x: 1.0 / (1.0 + x), "x", -0.9, 5.0),
    _unary("expm1", np.expm1, ops.expm1, lambda a: a + 1.0, "ans", -3.0, 3.0),
    _unary("sqrt", np.sqrt, ops.sqrt, lambda a: 0.5 / a, "ans", 0.05, 5.0),
    _unary("square", np.square, ops.square, lambda x: 2.0 * x, "x", -3.0, 3.0),
    _unary("reciprocal", np.reciprocal, ops.reciprocal, lambda a: -a * a, "ans", 0.2, 3.0),
    _with_x("nn_relu_grad", lambda a: (a > 0).astype(a.dtype), nn.relu, ans=lambda x: np.maximum(x, 0)),
    _relu_nonfinite_case(),
    _with_x("nn_sigmoid_grad", lambda s: s * (1.0 - s), nn.sigmoid, -30.0, 30.0, ans=_stable_sigmoid),
    _with_x("nn_softplus_grad", _np_sigmoid, nn.softplus, -30.0, 30.0),
    _with_x("nn_silu_grad", lambda x: _np_sigmoid(x) * (1.0 + x * (1.0 - _np_sigmoid(x))), nn.silu, -30.0, 30.0),
    _with_x("nn_gelu_tanh_grad", _np_gelu_grad, nn.gelu, -12.0, 12.0),
    _log_softmax_case((1,)),
    _log_softmax_case((0, 1)),
    _adam_case(False),
    _adam_case(True),
)


def tolerance(dtype):
    """``(rtol, atol)`` for comparing two evaluations of one formula in ``dtype``."""
    return (2e-5, 5e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-14)


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)
