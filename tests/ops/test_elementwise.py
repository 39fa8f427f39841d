"""Elementwise primitives: derivatives to second order in both modes, closed
forms, subgradient conventions, non-differentiable ops, Python scalars and
dtype casts.

Every differentiable elementwise primitive goes through ``check_grads`` to
order 2 in forward and reverse mode on every backend with fixed inputs inside
its domain, and through hypothesis on the CPU backends with broadcasting shape
pairs (size-0 and size-1 dimensions included).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import ops
from gpuad._core import is_tracer
from gpuad.testing import check_grads
from strategies import broadcast_shapes, random_array, seeds, shapes

#: Registered primitives whose gradients this module checks with check_grads
#: to order 2 in both modes.
COVERS = {
    "add", "subtract", "multiply", "divide", "negative", "positive", "pow", "exp", "expm1",
    "log", "log1p", "log2", "log10", "sqrt", "square", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "abs", "reciprocal", "hypot",
    "atan2", "logaddexp", "maximum", "minimum", "where", "copysign", "remainder", "astype",
    "conj", "real", "imag",
}

HYP = settings(max_examples=8, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture])

BOTH = ("fwd", "rev")

# --- tables -------------------------------------------------------------------
# name -> (function, (low, high), away_from, closed-form derivative in NumPy)
UNARY = {
    "negative": (ops.negative, (-2, 2), None, lambda x: -np.ones_like(x)),
    "positive": (ops.positive, (-2, 2), None, lambda x: np.ones_like(x)),
    "exp": (ops.exp, (-2, 2), None, np.exp),
    "expm1": (ops.expm1, (-2, 2), None, np.exp),
    "log": (ops.log, (0.2, 3), None, lambda x: 1 / x),
    "log1p": (ops.log1p, (-0.8, 3), None, lambda x: 1 / (1 + x)),
    "log2": (ops.log2, (0.2, 3), None, lambda x: 1 / (x * math.log(2))),
    "log10": (ops.log10, (0.2, 3), None, lambda x: 1 / (x * math.log(10))),
    "sqrt": (ops.sqrt, (0.2, 3), None, lambda x: 0.5 / np.sqrt(x)),
    "square": (ops.square, (-2, 2), None, lambda x: 2 * x),
    "sin": (ops.sin, (-3, 3), None, np.cos),
    "cos": (ops.cos, (-3, 3), None, lambda x: -np.sin(x)),
    "tan": (ops.tan, (-1.2, 1.2), None, lambda x: 1 / np.cos(x) ** 2),
    "asin": (ops.asin, (-0.9, 0.9), None, lambda x: 1 / np.sqrt(1 - x * x)),
    "acos": (ops.acos, (-0.9, 0.9), None, lambda x: -1 / np.sqrt(1 - x * x)),
    "atan": (ops.atan, (-3, 3), None, lambda x: 1 / (1 + x * x)),
    "sinh": (ops.sinh, (-2, 2), None, np.cosh),
    "cosh": (ops.cosh, (-2, 2), None, np.sinh),
    "tanh": (ops.tanh, (-2, 2), None, lambda x: 1 - np.tanh(x) ** 2),
    "asinh": (ops.asinh, (-3, 3), None, lambda x: 1 / np.sqrt(x * x + 1)),
    "acosh": (ops.acosh, (1.2, 3), None, lambda x: 1 / np.sqrt(x * x - 1)),
    "atanh": (ops.atanh, (-0.9, 0.9), None, lambda x: 1 / (1 - x * x)),
    "abs": (ops.abs, (-2, 2), [0.0], np.sign),
    "reciprocal": (ops.reciprocal, (-2, 2), [0.0], lambda x: -1 / (x * x)),
    "conj": (ops.conj, (-2, 2), None, lambda x: np.ones_like(x)),
    "real": (ops.real, (-2, 2), None, lambda x: np.ones_like(x)),
}

# name -> (function, (range of x, away_from x), (range of y, away_from y))
BINARY = {
    "add": (ops.add, ((-2, 2), None), ((-2, 2), None)),
    "subtract": (ops.subtract, ((-2, 2), None), ((-2, 2), None)),
    "multiply": (ops.multiply, ((-2, 2), None), ((-2, 2), None)),
    "divide": (ops.divide, ((-2, 2), None), ((-2, 2), [0.0])),
    "pow": (ops.pow, ((0.5, 2), None), ((-2, 2), None)),
    "hypot": (ops.hypot, ((-2, 2), [0.0]), ((-2, 2), None)),
    "atan2": (ops.atan2, ((-2, 2), [0.0]), ((-2, 2), [0.0])),
    "logaddexp": (ops.logaddexp, ((-3, 3), None), ((-3, 3), None)),
    # y stays in [-0.05, 0.05] and x at least 0.2 from 0: no ties, both winners occur.
    "maximum": (ops.maximum, ((-2, 2), [0.0]), ((-0.05, 0.05), None)),
    "minimum": (ops.minimum, ((-2, 2), [0.0]), ((-0.05, 0.05), None)),
    "copysign": (ops.copysign, ((-2, 2), [0.0]), ((-2, 2), [0.0])),
    # |x| < 1.4 <= |y|: x / y in (-1, 1), kinks only at x == 0.
    "remainder": (ops.remainder, ((-1.4, 1.4), [0.0]), ((1.5, 2.5), None)),
}

_FIXED_X = [[0.31, -0.72, 1.13], [-1.41, 0.57, 1.79]]
_FIXED_Y = [0.83, -1.27, 0.46]


def _fixed(backend, values, low, high, away, dtype="float64"):
    """``values`` (in [-2, 2]) mapped affinely into [low, high), kept off ``away``."""
    a = (np.asarray(values) + 2.0) / 4.0 * (high - low) + low
    if away is not None:
        for p in away:
            close = np.abs(a - p) < 0.2
            a = np.where(close, p + np.where(a >= p, 0.3, -0.3), a)
    return backend.asarray(a, dtype=dtype)


# --- check_grads on every backend with fixed inputs ----------------------------


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_check_grads(backend, name):
    f, (lo, hi), away, _ = UNARY[name]
    x = _fixed(backend, _FIXED_X, lo, hi, away)
    check_grads(f, (x,), order=2, modes=BOTH)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_check_grads(backend, name):
    f, ((xl, xh), xa), ((yl, yh), ya) = BINARY[name]
    x = _fixed(backend, _FIXED_X, xl, xh, xa)
    y = _fixed(backend, _FIXED_Y, yl, yh, ya)
    if name == "remainder":
        y = y * backend.asarray([1.0, -1.0, 1.0])  # negative divisors too
    check_grads(f, (x, y), order=2, modes=BOTH)
    if name in ("add", "multiply", "logaddexp", "hypot"):
        check_grads(f, (y, x), order=2, modes=BOTH)  # the broadcast argument first


def test_remainder_negative_divisor_nonzero_quotient(backend):
    # floor(x / y) != 0 so the y-derivative -floor(x / y) is exercised.
    x = backend.asarray([2.3, -1.7, 5.1])
    y = backend.asarray([1.1, 0.7, -2.2])
    check_grads(ops.remainder, (x, y), order=2, modes=BOTH)


def test_where_check_grads(backend):
    c = backend.asarray([[True, False, True], [False, False, True]], dtype="bool")
    x = backend.asarray(_FIXED_X)
    y = backend.asarray(_FIXED_Y)
    check_grads(lambda x, y: ops.where(c, x, y), (x, y), order=2, modes=BOTH)
    check_grads(lambda x: ops.where(c, ops.sin(x), 0.5), (x,), order=2, modes=BOTH)
    check_grads(lambda y: ops.where(c, -1.5, ops.exp(y)), (y,), order=2, modes=BOTH)


# A float64 -> float32 -> float64 round trip rounds to float32 precision (~6e-8), so the
# finite differences use a wider step and float32-sized tolerances.
_ROUND_TRIP = dict(eps=1e-3, atol=1e-3, rtol=1e-3)


def test_astype_check_grads(backend):
    x = backend.asarray(_FIXED_X)
    # check_grads takes finite differences with every input cast to float64, so the
    # output dtype must follow the input's: cast down, compute, cast back.
    check_grads(lambda x: ops.astype(ops.sin(ops.astype(x, "float32")), x.dtype), (x,),
                order=2, modes=BOTH, **_ROUND_TRIP)
    x32 = backend.asarray(_FIXED_X, dtype="float32")
    check_grads(lambda x: ops.square(ops.astype(x, "float64")), (x32,), order=2, modes=BOTH)


def test_clip_check_grads(backend):
    x = backend.asarray([[-1.6, -0.3, 0.2], [0.7, 1.4, -0.9]])
    check_grads(lambda x: ops.clip(x, min=-1.0, max=1.0), (x,), order=2, modes=BOTH)
    lo = backend.asarray([-0.5, -0.5, -0.5])
    hi = backend.asarray([0.5, 1.5, 0.95])
    check_grads(lambda x, lo, hi: ops.clip(x, min=lo, max=hi), (x, lo, hi), order=2, modes=BOTH)


@pytest.mark.parametrize("name", ["exp", "tanh", "sqrt", "log1p", "atan"])
def test_unary_float32(backend, name):
    f, (lo, hi), away, _ = UNARY[name]
    x = _fixed(backend, _FIXED_X, lo, hi, away, dtype="float32")
    check_grads(f, (x,), order=2, modes=BOTH)


@pytest.mark.parametrize("name", ["multiply", "divide", "hypot"])
def test_binary_float32(backend, name):
    f, ((xl, xh), xa), ((yl, yh), ya) = BINARY[name]
    x = _fixed(backend, _FIXED_X, xl, xh, xa, dtype="float32")
    y = _fixed(backend, _FIXED_Y, yl, yh, ya, dtype="float32")
    check_grads(f, (x, y), order=2, modes=BOTH)


def test_mixed_precision_binary(backend):
    # float32 * float64 promotes; each gradient keeps its input's dtype.
    x32 = backend.asarray([0.5, -1.25], dtype="float32")
    y64 = backend.asarray([1.5, 0.75])
    gx, gy = gpuad.grad(lambda x, y: ops.sum(ops.multiply(x, y)), argnums=(0, 1))(x32, y64)
    assert gx.dtype == x32.dtype and gy.dtype == y64.dtype
    np.testing.assert_allclose(backend.to_numpy(gx), [1.5, 0.75])
    np.testing.assert_allclose(backend.to_numpy(gy), [0.5, -1.25])


# --- hypothesis: broadcasting shapes with size-0 and size-1 dims ---------------


@pytest.mark.parametrize("name", sorted(UNARY))
@HYP
@given(shape=shapes(), seed=seeds)
def test_unary_hypothesis(cpu_backend, name, shape, seed):
    f, (lo, hi), away, _ = UNARY[name]
    x = random_array(cpu_backend, shape, seed, lo, hi, away_from=away)
    check_grads(f, (x,), order=2, modes=BOTH)


@pytest.mark.parametrize("name", sorted(BINARY))
@HYP
@given(shp=broadcast_shapes(n=2), seed=seeds, flip=st.booleans())
def test_binary_hypothesis(cpu_backend, name, shp, seed, flip):
    f, ((xl, xh), xa), ((yl, yh), ya) = BINARY[name]
    x = random_array(cpu_backend, shp[0], seed, xl, xh, away_from=xa)
    y = random_array(cpu_backend, shp[1], seed + 1, yl, yh, away_from=ya)
    if flip and name == "remainder":
        y = -y  # negative divisors
    check_grads(f, (x, y), order=2, modes=BOTH)


@HYP
@given(shp=broadcast_shapes(n=3), seed=seeds)
def test_where_hypothesis(cpu_backend, shp, seed):
    rng = np.random.default_rng(seed)
    c = cpu_backend.asarray(rng.uniform(size=shp[0]) < 0.5, dtype="bool")
    x = random_array(cpu_backend, shp[1], seed + 1)
    y = random_array(cpu_backend, shp[2], seed + 2)
    check_grads(lambda x, y: ops.where(c, x, y), (x, y), order=2, modes=BOTH)


@HYP
@given(shp=broadcast_shapes(n=3), seed=seeds)
def test_clip_hypothesis(cpu_backend, shp, seed):
    x = random_array(cpu_backend, shp[0], seed, -2, 2, away_from=[-1.0, 1.0])
    lo = random_array(cpu_backend, shp[1], seed + 1, -1.05, -0.95)
    hi = random_array(cpu_backend, shp[2], seed + 2, 0.95, 1.05)
    # x stays >= 0.1 from -1 and 1, the bounds within 0.05 of them: no ties.
    check_grads(lambda x, lo, hi: ops.clip(x, min=lo, max=hi), (x, lo, hi), order=2, modes=BOTH)


@HYP
@given(shape=shapes(), seed=seeds)
def test_astype_hypothesis(cpu_backend, shape, seed):
    x = random_array(cpu_backend, shape, seed)
    check_grads(lambda x: ops.astype(ops.astype(x, "float32"), "float64") * x, (x,), order=2, modes=BOTH,
                **_ROUND_TRIP)


# --- closed-form first derivatives ----------------------------------------------


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_closed_form(backend, name):
    f, (lo, hi), away, deriv = UNARY[name]
    x = _fixed(backend, _FIXED_X, lo, hi, away)
    xn = backend.to_numpy(x)
    expected = deriv(xn)
    g = gpuad.grad(lambda x: ops.sum(f(x)))(x)
    np.testing.assert_allclose(backend.to_numpy(g), expected, rtol=1e-12, atol=1e-14)
    _, t = gpuad.jvp(f, (x,), (ops.ones_like(x),))
    np.testing.assert_allclose(backend.to_numpy(t), expected, rtol=1e-12, atol=1e-14)


_BINARY_ORACLES = {
    "multiply": lambda x, y: (y, x),
    "divide": lambda x, y: (1 / y, -x / y ** 2),
    "pow": lambda x, y: (y * x ** (y - 1), x ** y * np.log(x)),
    "hypot": lambda x, y: (x / np.hypot(x, y), y / np.hypot(x, y)),
    "atan2": lambda y, x: (x / (x * x + y * y), -y / (x * x + y * y)),
    "logaddexp": lambda x, y: (np.exp(x) / (np.exp(x) + np.exp(y)), np.exp(y) / (np.exp(x) + np.exp(y))),
    "copysign": lambda x, y: (np.sign(x) * np.sign(y), np.zeros_like(x * y)),
    "remainder": lambda x, y: (np.ones_like(x * y), -np.floor(x / y)),
}


@pytest.mark.parametrize("name", sorted(_BINARY_ORACLES))
def test_binary_closed_form(backend, name):
    f, ((xl, xh), xa), ((yl, yh), ya) = BINARY[name]
    x = _fixed(backend, [0.31, -0.72, 1.13], xl, xh, xa)
    y = _fixed(backend, _FIXED_Y, yl, yh, ya)
    gx, gy = gpuad.grad(lambda x, y: ops.sum(f(x, y)), argnums=(0, 1))(x, y)
    ex, ey = _BINARY_ORACLES[name](backend.to_numpy(x), backend.to_numpy(y))
    np.testing.assert_allclose(backend.to_numpy(gx), ex, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(gy), ey, rtol=1e-12, atol=1e-14)


def test_second_derivative_closed_form(backend):
    # d2/dx2 sqrt(x) = -1/4 x^(-3/2); d2/dx2 atan(x) = -2x / (1 + x^2)^2
    x = backend.asarray([0.5, 1.0, 2.5])
    xn = backend.to_numpy(x)
    g2 = gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(ops.sqrt(x)))(x)))(x)
    np.testing.assert_allclose(backend.to_numpy(g2), -0.25 * xn ** -1.5, rtol=1e-12)
    g2 = gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(ops.atan(x)))(x)))(x)
    np.testing.assert_allclose(backend.to_numpy(g2), -2 * xn / (1 + xn * xn) ** 2, rtol=1e-12)


# --- subgradient conventions (NOTE [subgradients]) -------------------------------


def test_abs_derivative_at_zero(backend):
    x = backend.asarray([0.0, -0.0, 1.5, -2.0])
    g = gpuad.grad(lambda x: ops.sum(ops.abs(x)))(x)
    assert backend.to_numpy(g).tolist() == [0.0, 0.0, 1.0, -1.0]
    _, t = gpuad.jvp(ops.abs, (x,), (ops.ones_like(x),))
    assert backend.to_numpy(t).tolist() == [0.0, 0.0, 1.0, -1.0]


# --- complex values (NOTE [complex abs]; JAX's convention) ----------------------------
# check_grads differentiates real inputs, so each complex op is checked on
# z = a + i b, with the real and imaginary parts of its result as outputs: every
# rule of the op and the engine's complex-to-real casts (NOTE [complex to real])
# are exercised, to order 2 in both modes.
_COMPLEX = {
    "abs": ops.abs,
    "imag": ops.imag,
    "real": ops.real,
    "conj": ops.conj,
    "abs_squared": lambda z: ops.abs(z) ** 2,
    "imag_of_square": lambda z: ops.imag(z * z),
}

_ZA = [[0.31, -0.72, 1.13], [-1.41, 0.57, 0.9]]
_ZB = [[0.45, 1.2, -0.66], [0.2, -0.83, 0.0]]  # the last z is real and positive


def _parts(w):
    return (ops.real(w), ops.imag(w)) if str(w.dtype).rsplit(".", 1)[-1].startswith("complex") else w


@pytest.mark.parametrize("name", sorted(_COMPLEX))
def test_complex_check_grads(backend, name):
    f = _COMPLEX[name]
    a, b = backend.asarray(_ZA), backend.asarray(_ZB)
    check_grads(lambda a, b: _parts(f(a + b * 1j)), (a, b), order=2, modes=BOTH)


def test_complex_abs_derivatives(backend):
    zn = np.asarray([0.3 + 0.4j, -1.0 + 0.2j, 0.0 + 0.0j, -2.0 + 0.0j])
    tn = np.asarray([0.5 - 1.0j, 2.0 + 1.0j, 1.0 + 1.0j, 0.5 + 3.0j])
    z, t = backend.asarray(zn, dtype="complex128"), backend.asarray(tn, dtype="complex128")
    r = np.abs(zn)
    unit = np.where(r == 0, 0.0, np.conj(zn) / np.where(r == 0, 1.0, r))  # 0 at z == 0
    y, dy = gpuad.jvp(ops.abs, (z,), (t,))
    assert "float64" in str(dy.dtype)
    np.testing.assert_allclose(backend.to_numpy(dy), np.real(unit * tn), rtol=1e-12, atol=1e-15)
    # reverse mode: the cotangent pairs with tangents as Re(ct * t) (JAX's convention)
    g = gpuad.grad(lambda z: ops.sum(ops.abs(z) ** 2))(z)
    np.testing.assert_allclose(backend.to_numpy(g), 2 * np.conj(zn), rtol=1e-12, atol=1e-15)
    g = gpuad.grad(lambda z: ops.sum(ops.abs(z)))(z)
    np.testing.assert_allclose(backend.to_numpy(g), unit, rtol=1e-12, atol=1e-15)
    # |i a| = |a|: its derivative in the real a is sign(a), as for real abs
    a = backend.asarray([0.3, -1.2, 2.0])
    _, da = gpuad.jvp(lambda a: ops.abs(a * 1j), (a,), (ops.ones_like(a),))
    np.testing.assert_allclose(backend.to_numpy(da), [1.0, -1.0, 1.0], rtol=1e-12)
    g = gpuad.grad(lambda a: ops.sum(ops.abs(a * 1j)))(a)
    np.testing.assert_allclose(backend.to_numpy(g), [1.0, -1.0, 1.0], rtol=1e-12)


def test_complex_sign_is_differentiable(backend):
    # NOTE [complex sign]: x / |x|, 0 at 0; a real sign keeps its zero derivative.
    c = backend.asarray(np.asarray([1 + 2j, 3 - 1j, 0.5j]), dtype="complex128")

    def f(a, b):
        s = ops.sign(a + 1j * b) * c
        return ops.real(s) + 2.0 * ops.imag(s)

    a, b = backend.asarray(np.asarray([0.3, -1.0, 0.0])), backend.asarray(np.asarray([0.4, 2.0, 1.5]))
    check_grads(f, (a, b), order=2, modes=("fwd", "rev"))
    z, t = np.asarray([0.3 + 0.4j]), np.asarray([0.5 - 1j])
    _, dz = gpuad.jvp(ops.sign, (backend.asarray(z, dtype=None),), (backend.asarray(t, dtype=None),))
    want = (t - z * np.real(np.conj(z) * t) / abs(z) ** 2) / abs(z)   # d(z/|z|) along t
    np.testing.assert_allclose(backend.to_numpy(dz), want, rtol=1e-12)
    zero = gpuad.jvp(ops.sign, (backend.asarray(np.asarray([0j]), dtype=None),),
                     (backend.asarray(np.asarray([1 + 1j]), dtype=None),))[1]
    assert backend.to_numpy(zero)[0] == 0
    x = backend.asarray(np.asarray([1.0, -2.0, 0.0]))
    np.testing.assert_array_equal(backend.to_numpy(gpuad.grad(lambda x: ops.sum(ops.sign(x) * x))(x)), [1, -1, 0])


def test_imag_derivatives(backend):
    an = np.asarray([0.3, -1.2, 2.0])
    a = backend.asarray(an)
    g = gpuad.grad(lambda a: ops.sum(ops.imag(ops.exp(a * 1j))))(a)  # d sin(a)
    np.testing.assert_allclose(backend.to_numpy(g), np.cos(an), rtol=1e-12)
    _, t = gpuad.jvp(lambda a: ops.imag(1 / (a + 1j)), (a,), (ops.ones_like(a),))  # imag = -1 / (a^2 + 1)
    np.testing.assert_allclose(backend.to_numpy(t), 2 * an / (an * an + 1) ** 2, rtol=1e-12)
    g = gpuad.grad(lambda a: ops.sum(ops.imag(1 / (a + 1j))))(a)
    np.testing.assert_allclose(backend.to_numpy(g), 2 * an / (an * an + 1) ** 2, rtol=1e-12)
    # Im(z^2) = 2xy: d/dx - i d/dy = 2y - 2ix = -2i z
    zn = np.asarray([0.3 + 0.4j, -1.0 + 0.2j])
    g = gpuad.grad(lambda z: ops.sum(ops.imag(z * z)))(backend.asarray(zn, dtype="complex128"))
    np.testing.assert_allclose(backend.to_numpy(g), -2j * zn, rtol=1e-12)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_max_min_ties_split_equally(backend, op):
    f = getattr(ops, op)
    x = backend.asarray([1.0, -2.0, 0.0])
    y = backend.asarray([1.0, -2.0, 0.0])
    gx, gy = gpuad.grad(lambda x, y: ops.sum(f(x, y)), argnums=(0, 1))(x, y)
    assert backend.to_numpy(gx).tolist() == [0.5, 0.5, 0.5]
    assert backend.to_numpy(gy).tolist() == [0.5, 0.5, 0.5]
    one, zero = ops.ones_like(x), ops.zeros_like(x)
    _, tx = gpuad.jvp(f, (x, y), (one, zero))
    _, ty = gpuad.jvp(f, (x, y), (zero, one))
    assert backend.to_numpy(tx).tolist() == [0.5, 0.5, 0.5]
    assert backend.to_numpy(ty).tolist() == [0.5, 0.5, 0.5]
    # Off ties the winner takes all.
    y2 = backend.asarray([0.0, -1.0, 3.0])
    gx, gy = gpuad.grad(lambda x, y: ops.sum(f(x, y)), argnums=(0, 1))(x, y2)
    wx = [1.0, 0.0, 0.0] if op == "maximum" else [0.0, 1.0, 1.0]
    assert backend.to_numpy(gx).tolist() == wx
    assert backend.to_numpy(gy).tolist() == [1.0 - w for w in wx]


def test_max_tie_with_python_scalar(backend):
    x = backend.asarray([0.0, 1.0, -1.0])
    g = gpuad.grad(lambda x: ops.sum(ops.maximum(x, 0.0)))(x)
    assert backend.to_numpy(g).tolist() == [0.5, 1.0, 0.0]


def test_clip_gradient_inside_outside_and_at_bounds(backend):
    x = backend.asarray([-3.0, -1.0, -0.5, 0.0, 0.7, 1.0, 4.0])
    f = lambda x: ops.sum(ops.clip(x, min=-1.0, max=1.0))  # noqa: E731
    g = gpuad.grad(f)(x)
    assert backend.to_numpy(g).tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    _, t = gpuad.jvp(lambda x: ops.clip(x, min=-1.0, max=1.0), (x,), (ops.ones_like(x),))
    assert backend.to_numpy(t).tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    # Only one bound.
    g = gpuad.grad(lambda x: ops.sum(ops.clip(x, min=0.5)))(x)
    assert backend.to_numpy(g).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    g = gpuad.grad(lambda x: ops.sum(ops.clip(x, max=0.5)))(x)
    assert backend.to_numpy(g).tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_clip_gradient_to_array_bounds(backend):
    x = backend.asarray([-3.0, 0.2, 4.0])
    lo = backend.asarray([-1.0, -1.0, -1.0])
    hi = backend.asarray([1.0, 1.0, 1.0])
    gx, glo, ghi = gpuad.grad(lambda x, lo, hi: ops.sum(ops.clip(x, min=lo, max=hi)), argnums=(0, 1, 2))(x, lo, hi)
    assert backend.to_numpy(gx).tolist() == [0.0, 1.0, 0.0]
    assert backend.to_numpy(glo).tolist() == [1.0, 0.0, 0.0]
    assert backend.to_numpy(ghi).tolist() == [0.0, 0.0, 1.0]


# --- non-differentiable functions -------------------------------------------------

_NONDIFF_UNARY = ["floor", "ceil", "round", "trunc", "sign"]


@pytest.mark.parametrize("name", _NONDIFF_UNARY)
def test_nondiff_product_rule(backend, name):
    f = getattr(ops, name)
    x = backend.asarray([0.3, -1.7, 2.6, -0.4])
    g = gpuad.grad(lambda x: ops.sum(ops.multiply(x, f(x))))(x)
    np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(f(x)))
    _, t = gpuad.jvp(lambda x: ops.multiply(x, f(x)), (x,), (ops.ones_like(x),))
    np.testing.assert_array_equal(backend.to_numpy(t), backend.to_numpy(f(x)))


def test_grad_through_only_nondiff_is_zero(backend):
    x = backend.asarray([0.3, -1.7, 2.6])
    g = gpuad.grad(lambda x: ops.sum(ops.floor(x)))(x)
    assert backend.to_numpy(g).tolist() == [0.0, 0.0, 0.0]
    assert g.dtype == x.dtype


@pytest.mark.parametrize("name", _NONDIFF_UNARY + ["isfinite", "isnan", "isinf", "signbit"])
def test_nondiff_returns_plain_arrays_under_transforms(backend, name):
    f = getattr(ops, name)
    x = backend.asarray([0.3, -1.7, 2.6])
    seen = []

    def h(x):
        r = f(x)
        seen.append((is_tracer(r), type(r)))
        return ops.sum(ops.multiply(x, x))

    gpuad.grad(h)(x)
    gpuad.jvp(h, (x,), (ops.ones_like(x),))
    gpuad.grad(lambda x: ops.sum(gpuad.grad(h)(x)))(x)
    assert seen and all(not tr and typ is type(x) for tr, typ in seen)


@pytest.mark.parametrize("name", ["equal", "not_equal", "less", "less_equal", "greater", "greater_equal"])
def test_comparisons_are_plain_and_gate_gradients(backend, name):
    f = getattr(ops, name)
    x = backend.asarray([0.3, -1.7, 2.6])
    y = backend.asarray([0.3, 1.0, 1.0])
    seen = []

    def h(x, y):
        c = f(x, y)
        seen.append(is_tracer(c))
        return ops.sum(ops.where(c, ops.square(x), y))

    gx, gy = gpuad.grad(h, argnums=(0, 1))(x, y)
    cn = backend.to_numpy(f(x, y))
    xn = backend.to_numpy(x)
    np.testing.assert_array_equal(backend.to_numpy(gx), np.where(cn, 2 * xn, 0.0))
    np.testing.assert_array_equal(backend.to_numpy(gy), np.where(cn, 0.0, 1.0))
    assert seen and not any(seen)


def test_tracer_operator_comparisons_are_plain(backend):
    x = backend.asarray([0.3, -1.7, 2.6])
    seen = []

    def h(x):
        for c in (x > 0, x < 0.5, x >= 0.3, x <= 0.0, x == 0.3, x != 0.3):
            seen.append(is_tracer(c))
        return ops.sum(x)

    gpuad.grad(h)(x)
    assert seen and not any(seen)


def test_floor_divide_is_nondifferentiable(backend):
    x = backend.asarray([2.5, -1.5])
    y = backend.asarray([1.0, 0.7])
    gx, gy = gpuad.grad(lambda x, y: ops.sum(ops.multiply(x, ops.floor_divide(x, y))), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(backend.to_numpy(gx), backend.to_numpy(ops.floor_divide(x, y)))
    assert backend.to_numpy(gy).tolist() == [0.0, 0.0]


# --- Python scalars with tracer operators -------------------------------------------

_SCALAR_CASES = {
    "2*x": (lambda x: 2.0 * x, lambda x: 2.0 * np.ones_like(x)),
    "x*2": (lambda x: x * 2, lambda x: 2.0 * np.ones_like(x)),
    "x**3": (lambda x: x ** 3, lambda x: 3 * x ** 2),
    "x**0": (lambda x: x ** 0, lambda x: np.zeros_like(x)),
    "x**0.5": (lambda x: x ** 0.5, lambda x: 0.5 / np.sqrt(x)),
    "2**x": (lambda x: 2.0 ** x, lambda x: 2.0 ** x * math.log(2.0)),
    "1/x": (lambda x: 1 / x, lambda x: -1 / x ** 2),
    "x/4": (lambda x: x / 4, lambda x: 0.25 * np.ones_like(x)),
    "3-x": (lambda x: 3 - x, lambda x: -np.ones_like(x)),
    "x-3": (lambda x: x - 3.0, lambda x: np.ones_like(x)),
    "1+x": (lambda x: 1 + x, lambda x: np.ones_like(x)),
    "-x": (lambda x: -x, lambda x: -np.ones_like(x)),
    "+x": (lambda x: +x, lambda x: np.ones_like(x)),
    "abs(x)": (lambda x: abs(x), np.sign),
    "x%2": (lambda x: x % 2.0, lambda x: np.ones_like(x)),
    "5%x": (lambda x: 5.0 % x, lambda x: -np.floor(5.0 / x)),
}


@pytest.mark.parametrize("case", sorted(_SCALAR_CASES))
def test_python_scalar_operators(backend, case):
    f, deriv = _SCALAR_CASES[case]
    x = backend.asarray([0.7, 1.3, 2.2])
    g = gpuad.grad(lambda x: ops.sum(f(x)))(x)
    np.testing.assert_allclose(backend.to_numpy(g), deriv(backend.to_numpy(x)), rtol=1e-12, atol=1e-14)
    assert g.dtype == x.dtype
    check_grads(f, (x,), order=2, modes=BOTH)


def test_python_scalar_operators_preserve_float32(backend):
    x = backend.asarray([0.7, 1.3], dtype="float32")
    g = gpuad.grad(lambda x: ops.sum(2.0 * x + x ** 2 + 1 / x - 3))(x)
    assert g.dtype == x.dtype
    xn = backend.to_numpy(x).astype(np.float64)
    np.testing.assert_allclose(backend.to_numpy(g), 2 + 2 * xn - 1 / xn ** 2, rtol=1e-6)


# --- astype gradients dtypes --------------------------------------------------------


@pytest.mark.parametrize("src,dst", [("float64", "float32"), ("float32", "float64"), ("float32", "float32")])
def test_astype_gradient_dtype(backend, src, dst):
    x = backend.asarray([0.5, -1.5, 2.0], dtype=src)
    g = gpuad.grad(lambda x: ops.sum(ops.square(ops.astype(x, dst))))(x)
    assert g.dtype == x.dtype
    np.testing.assert_allclose(backend.to_numpy(g).astype(np.float64), [1.0, -3.0, 4.0], rtol=1e-6)
    _, t = gpuad.jvp(lambda x: ops.astype(x, dst), (x,), (ops.ones_like(x),))
    assert t.dtype == ops.astype(x, dst).dtype


def test_astype_to_integer_is_nondifferentiable(backend):
    x = backend.asarray([0.5, -1.5, 2.7])
    seen = []

    def h(x):
        i = ops.astype(x, "int64")
        seen.append(is_tracer(i))
        return ops.sum(ops.multiply(x, ops.astype(i, "float64")))

    g = gpuad.grad(h)(x)
    assert backend.to_numpy(g).tolist() == [0.0, -1.0, 2.0]
    assert seen and not any(seen)
