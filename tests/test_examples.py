"""The worked examples of automatic differentiation, with their closed forms."""

import math

import pytest

import gpuad
from gpuad import xp


def close(a, b, tol=1e-12):
    return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))


def test_example1_gaussian_bump_forward_two_sweeps_reverse_one(backend):
    # f(x) = x1 * exp(-(x1^2 + x2^2)/2) at (2, 1/2)
    def f(x):
        return x[0] * xp.exp(-0.5 * (x[0] ** 2 + x[1] ** 2))

    x = backend.asarray([2.0, 0.5])
    e = math.exp(-0.5 * (4 + 0.25))
    expected = [(1 - 4) * e, -2 * 0.5 * e]  # (1 - x1^2) e, -x1 x2 e
    fwd = [gpuad.jvp(f, (x,), (backend.asarray(u),))[1] for u in ([1.0, 0.0], [0.0, 1.0])]
    rev = gpuad.grad(f)(x)
    for k in range(2):
        assert close(fwd[k], expected[k])
        assert close(rev[k], expected[k])


def test_example2_sin_cos_squared(backend):
    def f(x1, x2, x3):
        return xp.sin(xp.cos(x1 + x2)) ** 2 + x3

    a, b, c = (backend.asarray(v) for v in (0.3, -1.1, 2.0))
    g = gpuad.grad(f, argnums=(0, 1, 2))(a, b, c)
    u = math.cos(0.3 - 1.1)
    d12 = 2 * math.sin(u) * math.cos(u) * -math.sin(0.3 - 1.1)
    assert close(g[0], d12) and close(g[1], d12) and close(g[2], 1.0)


def test_example3_squared_product_plus_sin(backend):
    def loss(x, y):
        return (x * y + xp.sin(x)) ** 2

    gx, gy = gpuad.grad(loss, argnums=(0, 1))(backend.asarray(1.0), backend.asarray(2.0))
    s = 2 + math.sin(1.0)
    assert close(gx, 4 * s + 2 * s * math.cos(1.0))
    assert close(gy, 2 * s)


def test_example4_jvp_of_vector_function(backend):
    def f(x1, x2):
        return xp.stack([x1 * x2 + xp.sin(x1), xp.exp(x2) + x1 ** 2])

    _, t = gpuad.jvp(f, (backend.asarray(1.0), backend.asarray(0.0)), (backend.asarray(2.0), backend.asarray(-1.0)))
    assert close(t[0], -1 + 2 * math.cos(1.0))
    assert close(t[1], 3.0)


def test_example5_simple_derivatives(backend):
    assert close(gpuad.grad(lambda x: xp.exp(x) * xp.sin(x))(backend.asarray(0.0)), 1.0)
    assert close(gpuad.grad(lambda x: x ** 2 + 3 * x + 1)(backend.asarray(2.0)), 7.0)


def test_example6_three_partials(backend):
    def loss(x, y, z):
        return (x * y + z) * xp.sin(y)

    x, y, z = 0.7, -1.3, 2.2
    g = gpuad.grad(loss, argnums=(0, 1, 2))(*(backend.asarray(v) for v in (x, y, z)))
    assert close(g[0], y * math.sin(y))
    assert close(g[1], (x * y + z) * math.cos(y) + x * math.sin(y))
    assert close(g[2], math.sin(y))


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_example7_two_paths_accumulate(backend, mode):
    # x feeds two paths: f = x*sin(x) + exp(x)  =>  f' = sin x + x cos x + exp x
    def f(x):
        a = x * xp.sin(x)
        b = xp.exp(x)
        return a + b

    x0 = 0.4
    if mode == "rev":
        d = gpuad.grad(f)(backend.asarray(x0))
    else:
        d = gpuad.jvp(f, (backend.asarray(x0),), (backend.asarray(1.0),))[1]
    assert close(d, math.sin(x0) + x0 * math.cos(x0) + math.exp(x0))
