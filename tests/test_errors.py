"""Bad input gets a clear error naming the op, the argument and the shapes/dtypes/devices."""

import numpy as np
import pytest

import gpuad
from gpuad import xp


def test_grad_of_non_scalar_names_the_shape(backend):
    with pytest.raises(TypeError, match=r"scalar.*shape \(2, 3\)"):
        gpuad.grad(lambda x: x * 2.0)(backend.asarray(np.ones((2, 3))))


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_grad_wrt_integer_or_bool_input(backend, dtype):
    x = backend.asarray([1, 0], dtype=dtype)
    with pytest.raises(TypeError, match=rf"grad: input 0 has dtype .*{dtype}.* only floating-point"):
        gpuad.grad(lambda x: xp.sum(xp.astype(x, backend.xp.float64)))(x)
    # ...but an integer argument outside argnums is fine
    g = gpuad.grad(lambda w, i: xp.sum(w * xp.astype(i, backend.xp.float64)))(backend.asarray([1.0, 1.0]), x)
    np.testing.assert_array_equal(backend.to_numpy(g), np.asarray([1, 0], dtype=float))


def test_jvp_tangent_mismatches(backend):
    x = backend.asarray([1.0, 2.0])
    f = lambda x: x * 2.0  # noqa: E731
    with pytest.raises(ValueError, match="structure"):
        gpuad.jvp(f, (x,), ((x, x),))
    with pytest.raises(ValueError, match=r"tangent 0 has shape \(3,\).*primal has shape \(2,\)"):
        gpuad.jvp(f, (x,), (backend.asarray([1.0, 2.0, 3.0]),))
    with pytest.raises(ValueError, match="tangent 0 has .*float32"):
        gpuad.jvp(f, (x,), (backend.asarray([1.0, 2.0], dtype="float32"),))
    with pytest.raises(TypeError, match="tuples"):
        gpuad.jvp(f, x, x)


def test_vjp_cotangent_mismatch(backend):
    out, vjp_fn = gpuad.vjp(lambda x: x * 2.0, backend.asarray([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"cotangent 0 has shape \(1,\)"):
        vjp_fn(backend.asarray([1.0]))
    with pytest.raises(ValueError, match="structure"):
        vjp_fn((out, out))


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'.*'numpy'.*'cupy'.*'array_api_strict'"):
        gpuad.set_backend("tensorflow")


def test_mixing_libraries_names_both():
    import array_api_strict

    a = np.ones(2)
    b = array_api_strict.ones(2)
    msg = r"multiply: cannot mix arrays from two array libraries.*numpy.*array_api_strict"
    with pytest.raises(TypeError, match=msg):
        xp.multiply(a, b)
    with pytest.raises(TypeError, match="two array libraries"):
        gpuad.grad(lambda a: xp.sum(xp.multiply(a, b)))(a)


def test_leaked_tracer_is_refused(backend):
    leaked = []

    def f(x):
        leaked.append(x)
        return xp.sum(x)

    gpuad.grad(f)(backend.asarray([1.0]))
    with pytest.raises(RuntimeError, match="leaked tracer"):
        xp.sin(leaked[0])


def test_argnums_and_aux_errors(backend):
    x = backend.asarray(1.0)
    with pytest.raises(ValueError, match="argnums 3 is out of range for 1"):
        gpuad.grad(lambda x: x, argnums=3)(x)
    with pytest.raises(TypeError, match="pair"):
        gpuad.grad(lambda x: x, has_aux=True)(x)


def test_non_array_output(backend):
    with pytest.raises(TypeError, match="scalar"):
        gpuad.grad(lambda x: 3.0)(backend.asarray(1.0))


def test_axis_out_of_range_names_the_op(backend):
    with pytest.raises(IndexError, match=r"sum: axis 2 is out of range for an array of 2 dimensions"):
        xp.sum(backend.asarray(np.ones((2, 2))), axis=2)
