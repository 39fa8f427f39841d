"""gpuad.nn.activations: derivatives to second order, numerical stability, conventions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import gpuad
from gpuad import nn, ops
from gpuad.testing import check_grads
from strategies import random_array, seeds, shapes

#: Primitives registered by gpuad.nn; each is checked below with check_grads
#: to order 2 in both modes.
COVERS = {"nn_relu", "nn_sigmoid", "nn_softplus", "nn_ndtr", "nn_softmax", "nn_log_softmax",
          "nn_silu", "nn_silu_grad", "nn_gelu_tanh", "nn_gelu_tanh_grad"}

BOTH = ("fwd", "rev")
HYP = settings(max_examples=8, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture])

X = [[0.31, -0.72, 1.13, -2.4], [-1.41, 0.57, 1.79, 3.2]]


def _np(backend, x):
    return backend.to_numpy(x)


def test_covers_are_registered():
    assert COVERS <= set(gpuad.PRIMITIVES)
    # Fused gradient primitives have no rules of their own (tests/test_fused.py).
    assert {n for n, p in gpuad.PRIMITIVES.items() if n.startswith("nn_") and p.composite is None} <= COVERS


# --- check_grads --------------------------------------------------------------

ELEMENTWISE = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),
    "ndtr": nn.ndtr,
    "tanh": nn.tanh,
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_check_grads(backend, name):
    x = backend.asarray(X)  # no zeros: relu's kink is avoided
    check_grads(ELEMENTWISE[name], (x,), order=2, modes=BOTH)


#: The gradient primitives of silu and gelu (tanh form), ``(g, x) -> g * f'(x)``,
#: have rules of their own (NOTE [gelu and silu memory]).
GRAD_PRIMITIVES = ("nn_silu_grad", "nn_gelu_tanh_grad")


@pytest.mark.parametrize("name", GRAD_PRIMITIVES)
def test_gradient_primitive_check_grads(backend, name):
    prim = gpuad.PRIMITIVES[name]
    x = backend.asarray(X)
    g = backend.asarray([[0.5, -1.0, 2.0, 0.25], [1.0, 1.5, -3.0, 0.5]])
    check_grads(prim, (g, x), order=2, modes=BOTH)


def test_gelu_check_grads_across_range(backend):
    # Both tails (tanh saturating), the clip at |x| = 10 and beyond.
    x = backend.asarray([-12.0, -9.0, -5.5, -3.0, -0.4, 0.7, 2.9, 6.0, 11.0])
    g = backend.asarray([0.3, -1.2, 0.8, 1.1, -0.6, 0.9, -1.4, 2.0, 0.5])
    check_grads(nn.gelu, (x,), order=2, modes=BOTH)
    check_grads(gpuad.PRIMITIVES["nn_gelu_tanh_grad"], (g, x), order=2, modes=BOTH)


@pytest.mark.parametrize("name", ["ndtr", "gelu_exact"])
def test_exact_gelu_check_grads_across_branches(backend, name):
    # Both sides of the series / continued-fraction split (|x| = 1.25 sqrt(2)) and the tails.
    x = backend.asarray([-6.0, -3.1, -1.7, -1.0, 0.2, 1.6, 1.8, 2.5, 7.0])
    check_grads(ELEMENTWISE[name], (x,), order=2, modes=BOTH)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, None, (0, 1)])
def test_softmax_check_grads(backend, fn, axis):
    x = backend.asarray(X)
    check_grads(lambda x: getattr(nn, fn)(x, axis=axis), (x,), order=2, modes=BOTH)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), (0, True), ((0, 1), True)])
def test_logsumexp_check_grads(backend, axis, keepdims):
    x = backend.asarray(X)
    check_grads(lambda x: nn.logsumexp(x, axis=axis, keepdims=keepdims), (x,), order=2, modes=BOTH)
    check_grads(lambda x: nn.activations._logsumexp_fallback(x, axis=axis, keepdims=keepdims), (x,),
                order=2, modes=BOTH)


def test_float32_check_grads(backend):
    x = backend.asarray(X, dtype="float32")
    for f in (nn.sigmoid, nn.softplus, nn.gelu, nn.silu, lambda x: nn.softmax(x), lambda x: nn.log_softmax(x)):
        check_grads(f, (x,), order=2, modes=BOTH)
        assert f(x).dtype == x.dtype


@pytest.mark.parametrize("name", ["relu", "sigmoid", "softplus", "silu", "gelu", "softmax", "log_softmax"])
@HYP
@given(shape=shapes(min_dims=1), seed=seeds)
def test_hypothesis_shapes(cpu_backend, name, shape, seed):
    x = random_array(cpu_backend, shape, seed, -4, 4, away_from=[0.0])
    check_grads(getattr(nn, name), (x,), order=2, modes=BOTH)
    assert tuple(getattr(nn, name)(x).shape) == tuple(shape)


# --- values and stability --------------------------------------------------------


def test_softmax_extremes_finite(backend):
    x = backend.asarray([1000.0, 0.0, -1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = _np(backend, nn.softmax(x))
        ls = _np(backend, nn.log_softmax(x))
        lse = float(_np(backend, nn.logsumexp(x)))
        lsef = float(_np(backend, nn.activations._logsumexp_fallback(x)))
        g = _np(backend, gpuad.grad(lambda x: ops.sum(ops.multiply(nn.log_softmax(x), x)))(x))
    assert s.tolist() == [1.0, 0.0, 0.0]
    assert ls.tolist() == [0.0, -1000.0, -2000.0]
    assert lse == 1000.0 and lsef == 1000.0
    assert np.all(np.isfinite(g))
    y = backend.asarray([1000.0, 1000.0])
    assert float(_np(backend, nn.logsumexp(y))) == pytest.approx(1000.0 + math.log(2.0), rel=1e-15)
    assert _np(backend, nn.softmax(y)).tolist() == [0.5, 0.5]


def test_softplus_sigmoid_extremes(backend):
    x = backend.asarray([-1000.0, -40.0, 0.0, 40.0, 1000.0, -1e300, 1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp = _np(backend, nn.softplus(x))
        sg = _np(backend, nn.sigmoid(x))
        gsp = _np(backend, gpuad.grad(lambda x: ops.sum(nn.softplus(x)))(x))
        gsg = _np(backend, gpuad.grad(lambda x: ops.sum(nn.sigmoid(x)))(x))
        gsilu = _np(backend, gpuad.grad(lambda x: ops.sum(nn.silu(x)))(x))
        ggelu = _np(backend, gpuad.grad(lambda x: ops.sum(nn.gelu(x)))(x))
        ggelu_exact = _np(backend, gpuad.grad(lambda x: ops.sum(nn.gelu(x, approximate=False)))(x))
        h = _np(backend, gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(nn.softplus(x)))(x)))(x))
    assert sp[4] == 1000.0 and sp[0] == 0.0 and sp[6] == 1e300 and sp[5] == 0.0
    assert sp[1] == pytest.approx(math.exp(-40.0), rel=1e-15)
    assert sp[2] == pytest.approx(math.log(2.0), rel=1e-15)
    assert sg[0] == 0.0 and sg[4] == 1.0 and sg[2] == 0.5
    assert sg[1] == pytest.approx(math.exp(-40.0), rel=1e-15)  # full relative precision for x < 0
    np.testing.assert_array_equal(gsp, sg)
    for g in (gsp, gsg, gsilu, ggelu, ggelu_exact, h):
        assert np.all(np.isfinite(g))
    assert gsp[0] == 0.0 and gsp[4] == 1.0


def test_sigmoid_values_and_derivative(backend):
    xn = np.linspace(-30, 30, 41)
    x = backend.asarray(xn)
    np.testing.assert_allclose(_np(backend, nn.sigmoid(x)), 1 / (1 + np.exp(-xn)), rtol=1e-14)
    s = 1 / (1 + np.exp(-xn))
    g = gpuad.grad(lambda x: ops.sum(nn.sigmoid(x)))(x)
    np.testing.assert_allclose(_np(backend, g), s * (1 - s), rtol=1e-12, atol=1e-300)


def test_softplus_values(backend):
    xn = np.linspace(-30, 30, 41)
    np.testing.assert_allclose(_np(backend, nn.softplus(backend.asarray(xn))), np.logaddexp(0.0, xn), rtol=1e-14)


def test_relu_derivative_at_zero(backend):
    x = backend.asarray([-1.0, -0.0, 0.0, 1e-300, 2.0])
    assert _np(backend, nn.relu(x)).tolist() == [0.0, 0.0, 0.0, 1e-300, 2.0]
    g = gpuad.grad(lambda x: ops.sum(nn.relu(x)))(x)
    assert _np(backend, g).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    _, t = gpuad.jvp(nn.relu, (x,), (ops.ones_like(x),))
    assert _np(backend, t).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    h = gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(nn.relu(x)))(x)))(x)
    assert _np(backend, h).tolist() == [0.0] * 5
    assert math.isnan(float(_np(backend, nn.relu(backend.asarray([math.nan])))[0]))


def test_softmax_sums_to_one_and_matches_log(backend):
    rng = np.random.default_rng(0)
    xn = rng.normal(size=(3, 5)) * 4
    x = backend.asarray(xn)
    for axis in (-1, 0):
        s = _np(backend, nn.softmax(x, axis=axis))
        np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-14)
        e = np.exp(xn - xn.max(axis=axis, keepdims=True))
        np.testing.assert_allclose(s, e / e.sum(axis=axis, keepdims=True), rtol=1e-13)
        np.testing.assert_allclose(_np(backend, nn.log_softmax(x, axis=axis)), np.log(s), rtol=1e-13, atol=1e-14)
    s = _np(backend, nn.softmax(x, axis=None))
    assert s.sum() == pytest.approx(1.0, rel=1e-14)
    lse = _np(backend, nn.logsumexp(x, axis=1))
    np.testing.assert_allclose(lse, np.log(np.exp(xn).sum(axis=1)), rtol=1e-14)
    np.testing.assert_allclose(_np(backend, nn.activations._logsumexp_fallback(x, axis=1)), lse, rtol=1e-15)
    assert tuple(nn.logsumexp(x, axis=1, keepdims=True).shape) == (3, 1)
    assert tuple(nn.activations._logsumexp_fallback(x, axis=1, keepdims=True).shape) == (3, 1)


def test_log_softmax_vjp_formula(backend):
    x = backend.asarray(X)
    g = backend.asarray([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, -3.0, 0.5]])
    _, f_vjp = gpuad.vjp(nn.log_softmax, x)
    (ct,) = f_vjp(g)
    s = _np(backend, nn.softmax(x))
    gn = _np(backend, g)
    np.testing.assert_allclose(_np(backend, ct), gn - s * gn.sum(axis=-1, keepdims=True), rtol=1e-13, atol=1e-15)
    _, f_vjp = gpuad.vjp(nn.softmax, x)
    (ct,) = f_vjp(g)
    np.testing.assert_allclose(_np(backend, ct), s * (gn - (gn * s).sum(axis=-1, keepdims=True)),
                               rtol=1e-13, atol=1e-15)


def test_logsumexp_gradient_is_softmax(backend):
    x = backend.asarray(X)
    for lse in (nn.logsumexp, nn.activations._logsumexp_fallback):
        g = gpuad.grad(lambda x: ops.sum(lse(x, axis=1)))(x)
        np.testing.assert_allclose(_np(backend, g), _np(backend, nn.softmax(x, axis=1)), rtol=1e-14)


def test_logsumexp_edge_cases(backend):
    x = backend.asarray([[-math.inf, -math.inf], [0.0, -math.inf]])
    for lse in (nn.logsumexp, nn.activations._logsumexp_fallback):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = _np(backend, lse(x, axis=1))
        assert r.tolist() == [-math.inf, 0.0]
        empty = backend.asarray(np.zeros((2, 0)))
        assert _np(backend, lse(empty, axis=1)).tolist() == [-math.inf, -math.inf]


def test_softmax_with_masked_entries(backend):
    x = backend.asarray([[0.0, -math.inf, 1.0], [2.0, 2.0, -math.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = _np(backend, nn.softmax(x))
        ls = _np(backend, nn.log_softmax(x))
        g = _np(backend, gpuad.grad(lambda x: ops.sum(ops.multiply(nn.softmax(x), nn.softmax(x))))(x))
    e = math.exp(1.0)
    np.testing.assert_allclose(s, [[1 / (1 + e), 0.0, e / (1 + e)], [0.5, 0.5, 0.0]], rtol=1e-15)
    assert ls[0, 1] == -math.inf and ls[1, 0] == pytest.approx(-math.log(2.0), rel=1e-15)
    assert np.all(np.isfinite(g))


def test_empty_axis(backend):
    x = backend.asarray(np.zeros((3, 0)))
    assert tuple(nn.softmax(x).shape) == (3, 0)
    assert tuple(nn.log_softmax(x).shape) == (3, 0)
    g = gpuad.grad(lambda x: ops.sum(nn.softmax(x)))(x)
    assert tuple(g.shape) == (3, 0)


def test_gelu_values(backend):
    xn = np.linspace(-8, 8, 33)
    x = backend.asarray(xn)
    approx = 0.5 * xn * (1 + np.tanh(math.sqrt(2 / math.pi) * (xn + 0.044715 * xn ** 3)))
    np.testing.assert_allclose(_np(backend, nn.gelu(x)), approx, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(_np(backend, nn.gelu(x, approximate=True)), approx, rtol=1e-14, atol=1e-300)
    exact = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in xn])
    np.testing.assert_allclose(_np(backend, nn.gelu(x, approximate=False)), exact, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(_np(backend, nn.gelu(x, approximate=False)), approx, atol=1e-3)
    # Huge inputs: no overflow in the cubic.
    big = backend.asarray([-1e200, 1e200])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _np(backend, nn.gelu(big)).tolist() == [0.0, 1e200]
        assert _np(backend, nn.gelu(big, approximate=False)).tolist() == [0.0, 1e200]


def test_ndtr_accuracy():
    import array_api_compat.numpy as xp

    xn = np.concatenate([np.linspace(-20, 9, 5801), [-1.25 * math.sqrt(2), 1.25 * math.sqrt(2)]])
    ours = np.asarray(nn.ndtr(xp.asarray(xn)))
    ref = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in xn])
    assert np.max(np.abs(ours - ref)) < 1e-15
    assert np.max(np.abs(ours - ref) / ref) < 1e-13
    x = xp.asarray(xn[::50])
    g = np.asarray(gpuad.grad(lambda x: ops.sum(nn.ndtr(x)))(x))
    np.testing.assert_allclose(g, np.exp(-0.5 * xn[::50] ** 2) / math.sqrt(2 * math.pi), rtol=1e-14, atol=1e-300)


def test_silu_values(backend):
    xn = np.linspace(-20, 20, 21)
    np.testing.assert_allclose(_np(backend, nn.silu(backend.asarray(xn))), xn / (1 + np.exp(-xn)), rtol=1e-14)


def test_tanh_is_reexport():
    assert nn.tanh is ops.tanh


# --- silu and gelu (tanh form): fused primitives -----------------------------------
_C = math.sqrt(2 / math.pi)
_A = 0.044715


def _silu_derivs(x):
    """Closed forms of silu', silu'' (NumPy, float64)."""
    s = 1 / (1 + np.exp(-x))
    return s * (1 + x * (1 - s)), s * (1 - s) * (2 + x * (1 - 2 * s))


def _gelu_derivs(x):
    """Closed forms of gelu', gelu'' for the tanh form (|x| < 10)."""
    u = _C * (x + _A * x ** 3)
    du, d2u = _C * (1 + 3 * _A * x ** 2), 6 * _C * _A * x
    t = np.tanh(u)
    sech2 = 1 - t * t
    d1 = 0.5 * (1 + t) + 0.5 * x * sech2 * du
    d2 = sech2 * du + 0.5 * x * sech2 * (d2u - 2 * t * du * du)
    return d1, d2


@pytest.mark.parametrize("grad_name,f,derivs", [("nn_silu_grad", nn.silu, _silu_derivs),
                                                 ("nn_gelu_tanh_grad", nn.gelu, _gelu_derivs)], ids=["silu", "gelu"])
def test_fused_silu_gelu_match_closed_forms(backend, grad_name, f, derivs):
    xn = np.linspace(-7.5, 7.5, 61)
    gn = np.cos(3 * xn) + 0.5
    x, g = backend.asarray(xn), backend.asarray(gn)
    d1, d2 = derivs(xn)
    grad_p = gpuad.PRIMITIVES[grad_name]
    np.testing.assert_allclose(_np(backend, grad_p(g, x)), gn * d1, rtol=1e-12, atol=1e-15)  # the fused impl
    (ct,) = gpuad.vjp(f, x)[1](g)
    np.testing.assert_allclose(_np(backend, ct), gn * d1, rtol=1e-12, atol=1e-15)
    _, t = gpuad.jvp(f, (x,), (g,))
    np.testing.assert_allclose(_np(backend, t), gn * d1, rtol=1e-12, atol=1e-15)
    d2_rev = gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(f(x)))(x)))(x)
    np.testing.assert_allclose(_np(backend, d2_rev), d2, rtol=1e-11, atol=1e-14)
    _, d2_fwd = gpuad.jvp(gpuad.grad(lambda x: ops.sum(f(x))), (x,), (ops.ones_like(x),))  # forward-over-reverse
    np.testing.assert_allclose(_np(backend, d2_fwd), d2, rtol=1e-11, atol=1e-14)


def test_gelu_fused_equals_composite_values(backend):
    # The primitive computes what the former composite did, clip included.
    xn = np.concatenate([np.linspace(-12, 12, 97), [-1e200, 1e200]])
    x = backend.asarray(xn)
    xc = np.clip(xn, -10.0, 10.0)
    want = (0.5 * xn) * (1 + np.tanh(_C * (xc + _A * (xc * xc ** 2))))
    np.testing.assert_allclose(_np(backend, nn.gelu(x)), want, rtol=1e-13, atol=1e-300)
    assert _np(backend, nn.gelu(x)).dtype == np.float64
    x32 = backend.asarray(xn[:-2], dtype="float32")
    np.testing.assert_allclose(_np(backend, nn.gelu(x32)), want[:-2], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("f", [nn.silu, nn.gelu], ids=["silu", "gelu"])
def test_silu_gelu_derivatives_at_extremes(backend, f):
    x = backend.asarray([-1.7e308, -1e300, -40.0, 0.0, 40.0, 1e300, 1.7e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d1 = _np(backend, gpuad.grad(lambda x: ops.sum(f(x)))(x))
        d2 = _np(backend, gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(f(x)))(x)))(x))
    # Saturated: silu' and gelu' are 0 on the left and 1 on the right, without inf * 0.
    np.testing.assert_allclose(d1, [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(d2, [0.0, 0.0, 0.0, d2[3], 0.0, 0.0, 0.0], atol=1e-15)
    assert d2[3] > 0


@pytest.mark.parametrize("f", [nn.silu, nn.gelu], ids=["silu", "gelu"])
def test_silu_gelu_tape_keeps_only_the_input(backend, f):
    from gpuad.memory import track

    x = backend.asarray(np.linspace(-3.0, 3.0, 10))  # float64: 80 bytes
    with track() as rep:
        gpuad.grad(lambda x: ops.sum(f(x)))(x)
    assert rep.peak_bytes == 80  # x only (the composites kept 2 and 9 arrays)
    assert rep.nodes_saved == 2  # the activation and the sum
    assert rep.live_bytes == 0
    # Reverse-over-reverse: the gradient primitive keeps g and x, no temporaries.
    with track() as rep2:
        gpuad.grad(lambda x: ops.sum(gpuad.grad(lambda x: ops.sum(f(x)))(x)))(x)
    assert rep2.peak_bytes <= 2 * 80
