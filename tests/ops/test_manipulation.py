"""Shape manipulation: values against NumPy, derivatives to second order in
both modes, errors naming the op.

Fixed inputs run on every backend; hypothesis runs the checker on the CPU
backends with shapes that include size-0 and size-1 dimensions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import xp
from gpuad.testing import check_grads
from strategies import broadcast_shapes, random_array, seeds, shapes

#: Registered primitives whose gradients this module checks with check_grads
#: to order 2 in both modes.
COVERS = {"flip", "roll", "tril", "triu", "unstack", "reshape", "broadcast_to", "permute_dims", "concat"}

HYP = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
HYP_HEAVY = settings(HYP, max_examples=10)

X23 = [[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]]


def _np(backend, x):
    return backend.to_numpy(x)


def _same(backend, got, want):
    got = _np(backend, got)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want)


# --- existing primitives: reshape, broadcast_to, permute_dims, concat --------------
def test_basic_shape_ops_grads(backend):
    x = backend.asarray(X23)
    y = backend.asarray([[0.5], [-1.5]])
    check_grads(lambda x: xp.reshape(x, (3, 2)), (x,))
    check_grads(lambda x: xp.broadcast_to(x, (4, 2, 3)), (x,))
    check_grads(lambda x: xp.permute_dims(x, (1, 0)), (x,))
    check_grads(lambda x: xp.matrix_transpose(x), (x,))
    check_grads(lambda x: xp.expand_dims(xp.squeeze(xp.expand_dims(x, axis=0), axis=0), axis=2), (x,))
    check_grads(lambda x, y: xp.concat([x, y, x], axis=1), (x, y))
    check_grads(lambda x, y: xp.concat([x, y], axis=None), (x, y))
    check_grads(lambda x: xp.stack([x, x * x], axis=1), (x,))


# --- flip, roll ------------------------------------------------------------------------
def test_flip_roll_values_and_grads(backend):
    vals = np.array(X23)
    x = backend.asarray(vals)
    _same(backend, xp.flip(x), np.flip(vals))
    _same(backend, xp.flip(x, axis=1), np.flip(vals, axis=1))
    _same(backend, xp.roll(x, 1), np.roll(vals, 1))
    _same(backend, xp.roll(x, (1, -2), axis=(0, 1)), np.roll(vals, (1, -2), axis=(0, 1)))
    _same(backend, xp.roll(x, 4, axis=-1), np.roll(vals, 4, axis=-1))
    check_grads(lambda x: xp.flip(x, axis=(0, 1)), (x,))
    check_grads(lambda x: xp.flip(x, axis=-1), (x,))
    check_grads(lambda x: xp.roll(x, 2), (x,))
    check_grads(lambda x: xp.roll(x, (1, -2), axis=(0, 1)), (x,))
    # the gradient of a weighted roll is the weights rolled back
    w = np.arange(6.0).reshape(2, 3)
    g = gpuad.grad(lambda x: xp.sum(xp.roll(x, 1, axis=1) * backend.asarray(w)))(x)
    _same(backend, g, np.roll(w, -1, axis=1))


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_flip_roll_hypothesis(cpu_backend, shape, data, seed):
    nd = len(shape)
    x = random_array(cpu_backend, shape, seed)
    axes = tuple(data.draw(st.lists(st.integers(0, nd - 1), unique=True, max_size=nd))) if nd else ()
    check_grads(lambda x: xp.flip(x, axis=axes if axes else None), (x,))
    shift = data.draw(st.integers(-4, 4))
    if nd and data.draw(st.booleans()):
        axis = data.draw(st.integers(-nd, nd - 1))
        check_grads(lambda x: xp.roll(x, shift, axis=axis), (x,))
    else:
        check_grads(lambda x: xp.roll(x, shift), (x,))


# --- tile, repeat -----------------------------------------------------------------------
def test_tile_repeat_values_and_grads(backend):
    vals = np.array(X23)
    x = backend.asarray(vals)
    for reps in [(2, 1), (2,), (2, 1, 3), (0, 2)]:
        _same(backend, xp.tile(x, reps), np.tile(vals, reps))
    _same(backend, xp.repeat(x, 2, axis=1), np.repeat(vals, 2, axis=1))
    _same(backend, xp.repeat(x, 3), np.repeat(vals, 3))
    r = backend.asarray([1, 0, 3], dtype="int64")
    _same(backend, xp.repeat(x, r, axis=1), np.repeat(vals, [1, 0, 3], axis=1))
    check_grads(lambda x: xp.tile(x, (2, 1, 3)), (x,))
    check_grads(lambda x: xp.repeat(x, 2, axis=0), (x,))
    check_grads(lambda x: xp.repeat(x, r, axis=1), (x,))
    check_grads(lambda x: xp.repeat(x, 2), (x,))
    # each element's gradient counts its copies
    g = gpuad.grad(lambda x: xp.sum(xp.repeat(x, r, axis=1)))(x)
    _same(backend, g, np.array([[1.0, 0.0, 3.0]] * 2))
    g = gpuad.grad(lambda x: xp.sum(xp.tile(x, (3, 2))))(x)
    _same(backend, g, np.full((2, 3), 6.0))


def test_repeat_errors(backend):
    x = backend.asarray(X23)
    with pytest.raises(ValueError, match="repeat: repeats of shape"):
        xp.repeat(x, backend.asarray([1, 2], dtype="int64"), axis=1)
    with pytest.raises(IndexError, match="repeat: axis 2"):
        xp.repeat(x, 2, axis=2)
    with pytest.raises(ValueError, match="tile: repetitions must be non-negative"):
        xp.tile(x, (-1,))


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_tile_repeat_hypothesis(cpu_backend, shape, data, seed):
    x = random_array(cpu_backend, shape, seed)
    reps = tuple(data.draw(st.lists(st.integers(0, 3), max_size=4)))
    check_grads(lambda x: xp.tile(x, reps), (x,))
    if shape:
        axis = data.draw(st.integers(-len(shape), len(shape) - 1))
        n = shape[axis]
        if data.draw(st.booleans()):
            r = data.draw(st.integers(0, 3))
        else:
            r = cpu_backend.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype="int64")
        check_grads(lambda x: xp.repeat(x, r, axis=axis), (x,))


# --- moveaxis, broadcast_arrays, unstack ------------------------------------------------
def test_moveaxis_broadcast_arrays_unstack(backend):
    vals = np.arange(24.0).reshape(2, 3, 4) / 10
    x = backend.asarray(vals)
    _same(backend, xp.moveaxis(x, 0, -1), np.moveaxis(vals, 0, -1))
    _same(backend, xp.moveaxis(x, (0, 1), (2, 0)), np.moveaxis(vals, (0, 1), (2, 0)))
    check_grads(lambda x: xp.moveaxis(x, (0, 1), (2, 0)), (x,))
    a = backend.asarray([[1.0], [2.0]])
    b = backend.asarray([0.5, -1.0, 2.0])
    out = xp.broadcast_arrays(a, b)
    assert [o.shape for o in out] == [(2, 3), (2, 3)]
    check_grads(lambda a, b: tuple(xp.broadcast_arrays(a, b)), (a, b))
    parts = xp.unstack(x, axis=1)
    assert len(parts) == 3
    for i, p in enumerate(parts):
        _same(backend, p, vals[:, i])
    check_grads(lambda x: xp.unstack(x, axis=1), (x,))
    check_grads(lambda x: xp.unstack(x, axis=-1)[2], (x,))  # unused outputs get zero cotangents
    g = gpuad.grad(lambda x: xp.sum(xp.unstack(x)[1] * 2.0))(x)
    want = np.zeros_like(vals)
    want[1] = 2.0
    _same(backend, g, want)


def test_moveaxis_broadcast_errors(backend):
    x = backend.asarray(X23)
    with pytest.raises(ValueError, match="moveaxis: source"):
        xp.moveaxis(x, (0, 1), 0)
    with pytest.raises(IndexError, match="moveaxis: axis 3"):
        xp.moveaxis(x, 3, 0)
    with pytest.raises(ValueError, match=r"broadcast_arrays: shapes \(2, 3\), \(4,\)"):
        xp.broadcast_arrays(x, backend.asarray([1.0, 2, 3, 4]))
    with pytest.raises(ValueError, match="unstack: x must have at least one dimension"):
        xp.unstack(backend.asarray(1.0))


@HYP
@given(shapes_=broadcast_shapes(n=2), seed=seeds)
def test_broadcast_arrays_hypothesis(cpu_backend, shapes_, seed):
    a = random_array(cpu_backend, shapes_[0], seed)
    b = random_array(cpu_backend, shapes_[1], seed + 1)
    check_grads(lambda a, b: tuple(xp.broadcast_arrays(a, b)), (a, b))


@HYP
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data(), seed=seeds)
def test_unstack_moveaxis_hypothesis(cpu_backend, shape, data, seed):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    x = random_array(cpu_backend, shape, seed)
    if shape[axis]:
        check_grads(lambda x: xp.unstack(x, axis=axis), (x,))
    else:
        assert xp.unstack(x, axis=axis) == ()
    dst = data.draw(st.integers(-nd, nd - 1))
    check_grads(lambda x: xp.moveaxis(x, axis, dst), (x,))


# --- tril, triu --------------------------------------------------------------------------
def test_tril_triu(backend):
    vals = np.arange(1.0, 13.0).reshape(3, 4) / 5
    x = backend.asarray(vals)
    for k in (-1, 0, 2):
        _same(backend, xp.tril(x, k=k), np.tril(vals, k))
        _same(backend, xp.triu(x, k=k), np.triu(vals, k))
        check_grads(lambda x: xp.tril(x, k=k), (x,))
        check_grads(lambda x: xp.triu(x, k=k), (x,))
    g = gpuad.grad(lambda x: xp.sum(xp.tril(x)))(x)
    _same(backend, g, np.tril(np.ones((3, 4))))
    with pytest.raises(ValueError, match="tril: x must have at least 2 dimensions"):
        xp.tril(backend.asarray([1.0, 2.0]))


@HYP
@given(shape=shapes(min_dims=2, max_dims=3), k=st.integers(-3, 3), seed=seeds)
def test_tril_triu_hypothesis(cpu_backend, shape, k, seed):
    x = random_array(cpu_backend, shape, seed)
    check_grads(lambda x: xp.tril(x, k=k), (x,))
    check_grads(lambda x: xp.triu(x, k=k), (x,))


# --- diff -----------------------------------------------------------------------------------
def test_diff(backend):
    vals = np.array([[1.0, 4.0, 2.0, 8.0], [0.5, -1.0, 3.0, 3.5]])
    x = backend.asarray(vals)
    for n, axis in [(1, -1), (2, 1), (1, 0), (0, 1), (5, 1)]:
        _same(backend, xp.diff(x, n=n, axis=axis), np.diff(vals, n=n, axis=axis))
        check_grads(lambda x: xp.diff(x, n=n, axis=axis), (x,))
    p = backend.asarray([[0.0], [1.0]])
    _same(backend, xp.diff(x, prepend=p, append=p), np.diff(vals, prepend=[[0.0], [1.0]], append=[[0.0], [1.0]]))
    check_grads(lambda x, p: xp.diff(x, prepend=p), (x, p))
    with pytest.raises(ValueError, match="diff: n must be a non-negative int"):
        xp.diff(x, n=-1)


@HYP
@given(shape=shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=seeds)
def test_diff_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = data.draw(st.integers(0, 3))
    x = random_array(cpu_backend, shape, seed)
    check_grads(lambda x: xp.diff(x, n=n, axis=axis), (x,))


def test_axis_errors_name_the_op(backend):
    x = backend.asarray(X23)
    with pytest.raises(IndexError, match="flip: axis 2 is out of range"):
        xp.flip(x, axis=2)
    with pytest.raises(IndexError, match="roll: axis -3 is out of range"):
        xp.roll(x, 1, axis=-3)
    with pytest.raises(ValueError, match="roll: 2 shifts given for 1 axes"):
        xp.roll(x, (1, 2), axis=0)
    with pytest.raises(IndexError, match="diff: axis 2"):
        xp.diff(x, axis=2)
    with pytest.raises(IndexError, match="unstack: axis 2"):
        xp.unstack(x, axis=2)


# --- full / full_like with an array fill value (NOTE [traced fill]) ------------------------
def test_full_and_full_like_differentiate_a_traced_fill_value(backend):
    x = backend.asarray([0.3, -1.2, 2.0])
    b = backend.asarray(0.7)
    # was: a silent zero (the fill value was unboxed)
    _same(backend, gpuad.grad(lambda b: xp.sum(xp.full_like(x, b) * x))(b), 1.1)
    _same(backend, gpuad.grad(lambda b: xp.sum(xp.full((3,), b) * x))(b), 1.1)
    _, t = gpuad.jvp(lambda b: xp.full((2, 3), b), (b,), (backend.asarray(1.0),))
    _same(backend, t, np.ones((2, 3)))
    check_grads(lambda b: xp.full((2, 3), xp.sin(b)), (b,))
    check_grads(lambda b, x: xp.full_like(x, b * b) * x, (b, x))
    # full_like keeps x's dtype; an integer output carries no derivative
    x32 = backend.asarray([1.0, 2.0], dtype="float32")
    g = gpuad.grad(lambda b: xp.sum(xp.astype(xp.full_like(x32, b) * x32, b.dtype)))(b)
    assert g.dtype == b.dtype
    _same(backend, g, 3.0)
    g = gpuad.grad(lambda b: xp.sum(xp.astype(xp.full(3, b, dtype=backend.xp.int64), b.dtype)))(b)
    _same(backend, g, 0.0)


def test_full_with_a_plain_array_fill_value(backend):
    b = backend.asarray(0.5)
    z = xp.full((2,), b)
    assert type(z) is type(b) and z.device == b.device  # built on the fill value's backend and device
    z[0] = 1.5  # a fresh, writable array
    _same(backend, z, [1.5, 0.5])
    _same(backend, xp.full_like(backend.asarray([1.0, 2.0, 3.0]), b), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"full: fill_value of shape \(2,\) does not broadcast to shape \(3,\)"):
        xp.full((3,), backend.asarray([1.0, 2.0]))


def test_full_like_refuses_a_fill_value_on_another_device():
    import array_api_strict as s

    with pytest.raises(ValueError, match=r"full_like: fill_value is an array on device .*CPU_DEVICE.*, but the "
                                         r"output is on device .*device1"):
        xp.full_like(s.ones(2, device=s.Device("device1")), s.asarray(1.0))
