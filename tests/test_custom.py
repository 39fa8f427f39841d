"""User rules: custom_vjp works under jvp and hessian; custom_jvp works under grad."""

import math

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad.testing import check_grads


def make_scaled_sin():
    """f(x, p) = p["a"] * sin(x) with a hand-written VJP (pytree argument)."""

    @gpuad.custom_vjp
    def f(x, p):
        return p["a"] * xp.sin(x)

    def fwd(x, p):
        return f(x, p), (x, p["a"])

    def bwd(res, g):
        x, a = res
        return g * a * xp.cos(x), {"a": xp.sum(g * xp.sin(x))}

    f.defvjp(fwd, bwd)
    return f


def test_custom_vjp_under_every_transform(backend):
    f = make_scaled_sin()
    x = backend.asarray([0.3, 1.1])
    p = {"a": backend.asarray(2.0)}
    xn = np.array([0.3, 1.1])
    g = gpuad.grad(lambda x: xp.sum(f(x, p)))(x)
    np.testing.assert_allclose(backend.to_numpy(g), 2 * np.cos(xn), rtol=1e-14)
    _, t = gpuad.jvp(lambda x: f(x, p), (x,), (backend.asarray([1.0, -1.0]),))
    np.testing.assert_allclose(backend.to_numpy(t), 2 * np.cos(xn) * [1, -1], rtol=1e-14)
    h = gpuad.hessian(lambda x: xp.sum(f(x, p)))(x)
    np.testing.assert_allclose(backend.to_numpy(h), np.diag(-2 * np.sin(xn)), rtol=1e-14, atol=1e-15)
    check_grads(f, (x, p), order=2)


def test_custom_vjp_rule_is_actually_used(backend):
    @gpuad.custom_vjp
    def clip_gradient(x):
        return x

    clip_gradient.defvjp(lambda x: (x, None), lambda res, g: (xp.clip(g, -1.0, 1.0),))
    g = gpuad.grad(lambda x: xp.sum(5.0 * clip_gradient(x)))(backend.asarray([1.0, 2.0]))
    np.testing.assert_array_equal(backend.to_numpy(g), [1.0, 1.0])
    # forward mode transposes the same rule: tangent 0.5 -> 5 * clip-linearised... the
    # backward rule is linear only where |g| <= 1, so use a small tangent
    _, t = gpuad.jvp(clip_gradient, (backend.asarray([1.0]),), (backend.asarray([0.5]),))
    assert float(t[0]) == 0.5


def test_custom_jvp_under_grad_and_hessian(backend):
    @gpuad.custom_jvp
    def log1pexp(x):
        return xp.log1p(xp.exp(x))

    @log1pexp.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        return log1pexp(x), t * (1.0 / (1.0 + xp.exp(-x)))

    x = backend.asarray([-2.0, 0.0, 3.0])
    xn = np.array([-2.0, 0.0, 3.0])
    sig = 1 / (1 + np.exp(-xn))
    np.testing.assert_allclose(backend.to_numpy(gpuad.grad(lambda x: xp.sum(log1pexp(x)))(x)), sig, rtol=1e-14)
    h = gpuad.hessian(lambda x: xp.sum(log1pexp(x)))(x)
    np.testing.assert_allclose(backend.to_numpy(h), np.diag(sig * (1 - sig)), rtol=1e-12, atol=1e-15)
    check_grads(log1pexp, (x,), order=2)


def test_custom_jvp_rule_is_actually_used(backend):
    @gpuad.custom_jvp
    def f(x):
        return xp.sin(x)

    f.defjvp(lambda p, t: (f(p[0]), 3.0 * t[0]))  # deliberately not cos: proves the rule is used
    assert float(gpuad.grad(f)(backend.asarray(0.7))) == 3.0
    assert float(gpuad.jvp(f, (backend.asarray(0.7),), (backend.asarray(1.0),))[1]) == 3.0


def test_custom_errors(backend):
    @gpuad.custom_vjp
    def f(x):
        return x * 2.0

    with pytest.raises(TypeError, match="defvjp"):
        f(backend.asarray(1.0))
    f.defvjp(lambda x: (f(x), None), lambda res, g: (g, g))
    with pytest.raises(ValueError, match="2 cotangents for 1 arguments"):
        gpuad.grad(f)(backend.asarray(1.0))


def test_plain_call_needs_no_transform(backend):
    f = make_scaled_sin()
    out = f(backend.asarray([0.5]), {"a": backend.asarray(2.0)})
    assert abs(float(out[0]) - 2 * math.sin(0.5)) < 1e-15


def _with_integer_output():
    """h(a) = (2 a, int64 signs of a): an integer output beside a floating one."""

    @gpuad.custom_vjp
    def h(a):
        return a * 2.0, xp.astype(a > 0, xp.int64)

    h.defvjp(lambda a: (h(a), a), lambda res, ct: (ct[0] * 2.0 * res,))  # a deliberately odd rule: 2 a g
    return h


def test_custom_vjp_with_an_integer_output_under_forward_mode(backend):
    # NOTE [non-floating outputs]; was: "vjp: input 1 has dtype int64 ... leave it out of argnums"
    h = _with_integer_output()
    x = backend.asarray([0.3, -1.2, 2.0])
    xn = np.array([0.3, -1.2, 2.0])
    (y, k), (ty, tk) = gpuad.jvp(h, (x,), (backend.asarray([1.0, 1.0, 1.0]),))
    np.testing.assert_allclose(backend.to_numpy(ty), 2 * xn, rtol=1e-14)  # the rule's, transposed
    assert backend.to_numpy(k).tolist() == [1, 0, 1] and backend.to_numpy(tk).tolist() == [0, 0, 0]
    np.testing.assert_allclose(backend.to_numpy(gpuad.jacfwd(lambda a: h(a)[0])(x)), np.diag(2 * xn), rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(gpuad.jacrev(lambda a: h(a)[0])(x)), np.diag(2 * xn), rtol=1e-14)
    hess = gpuad.hessian(lambda a: xp.sum(h(a)[0] * xp.astype(h(a)[1], a.dtype)))(x)
    np.testing.assert_allclose(backend.to_numpy(hess), np.diag([2.0, 0.0, 2.0]), rtol=1e-14)


def test_custom_vjp_fwd_output_structure_must_match_the_function(backend):
    # NOTE [fwd structure]; was: grad of xp.sum(k(a)) failed later with "sum: argument 0 must be an array, got tuple"
    calls = []

    @gpuad.custom_vjp
    def k(a):
        calls.append(1)
        return a

    k.defvjp(lambda a: ((a,), None), lambda res, g: (g[0],))
    x = backend.asarray([0.3, -1.2])
    msg = r"custom_vjp\(k\): fwd's output .* has structure \(\*,\), but the function 'k' returns \*"
    with pytest.raises(ValueError, match=msg):
        gpuad.grad(lambda a: xp.sum(k(a)))(x)
    with pytest.raises(ValueError, match=msg):
        gpuad.jvp(k, (x,), (x,))
    assert len(calls) == 1  # the plain function ran once, to learn its structure

    @gpuad.custom_vjp
    def ok(a):
        calls.append(2)
        return {"y": a * 2.0}

    ok.defvjp(lambda a: ({"y": a * 2.0}, None), lambda res, g: (g["y"] * 2.0,))
    for _ in range(3):
        np.testing.assert_allclose(backend.to_numpy(gpuad.grad(lambda a: xp.sum(ok(a)["y"]))(x)), [2.0, 2.0])
    assert calls.count(2) == 1  # remembered per input structure
