"""Indexing: ``getitem``, its transposes ``index_add``/``index_set``, and
``take``/``take_along_axis``.  Gradients of gathers accumulate repeated
indices; derivatives to second order in both modes.

Fixed inputs run on every backend; hypothesis runs the checker on the CPU
backends with shapes that include size-0 and size-1 dimensions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import ops, xp
from gpuad.testing import check_grads
from strategies import random_array, seeds, shapes

#: Registered primitives whose gradients this module checks with check_grads
#: to order 2 in both modes.
COVERS = {"take", "take_along_axis", "getitem", "index_add", "index_set"}

HYP = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

X34 = np.arange(12.0).reshape(3, 4) / 5 - 1


def _np(backend, x):
    return backend.to_numpy(x)


def _same(backend, got, want):
    got = _np(backend, got)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want)


def _idx(backend, vals):
    return backend.asarray(vals, dtype="int64")


# --- getitem, index_add, index_set -------------------------------------------------
def test_getitem_grads(backend):
    x = backend.asarray(X34)
    check_grads(lambda x: x[1:, ::2], (x,))
    check_grads(lambda x: x[-1, ...], (x,))
    check_grads(lambda x: x[None, ..., 1], (x,))
    i = _idx(backend, [0, 2, 2])
    j = _idx(backend, [1, 1, 3])
    check_grads(lambda x: x[i, j], (x,))
    g = gpuad.grad(lambda x: xp.sum(x[i, j]))(x)
    want = np.zeros((3, 4))
    np.add.at(want, ([0, 2, 2], [1, 1, 3]), 1.0)
    _same(backend, g, want)


def test_index_add_and_set_grads(backend):
    base = backend.asarray([1.0, -2.0, 0.5, 3.0])
    vals = backend.asarray([0.25, -1.0, 2.0])
    key = (_idx(backend, [0, 2, 0]),)
    out = ops.index_add(base, vals, key=key)
    _same(backend, out, [1.0 + 0.25 + 2.0, -2.0, -0.5, 3.0])  # repeated index 0 accumulates
    check_grads(lambda b, v: ops.index_add(b, v * v, key=key), (base, vals))
    skey = (slice(1, 3),)
    two = backend.asarray([5.0, 6.0])
    _same(backend, ops.index_set(base, two, key=skey), [1.0, 5.0, 6.0, 3.0])
    check_grads(lambda b, v: ops.index_set(b * b, v, key=skey), (base, two))
    # the overwritten elements get no gradient
    g = gpuad.grad(lambda b: xp.sum(ops.index_set(b, two, key=skey)))(base)
    _same(backend, g, [1.0, 0.0, 0.0, 1.0])


def _numpy_only(backend):
    if backend.name != "numpy":
        # array-api-strict has no integer-array __setitem__; on CuPy which of
        # several writes to one element is stored is not specified.
        pytest.skip("integer-array setitem with repeated indices: NumPy semantics (the last write is stored)")


def test_index_set_repeated_indices_credit_the_stored_value_only(backend):
    # NOTE [duplicate writes]: b[[0, 0]] = v stores v[1]; v[0] is overwritten and gets no cotangent.
    _numpy_only(backend)
    x = backend.asarray([0.3, -1.2, 2.0])

    def f(a):
        b = a * 1.0
        b[_idx(backend, [0, 0])] = backend.asarray([1.0, 2.0]) * a[2]
        return b

    _same(backend, f(x), [4.0, -1.2, 2.0])
    want = np.array([[0.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    _same(backend, gpuad.jacrev(f)(x), want)
    _same(backend, gpuad.jacfwd(f)(x), want)
    check_grads(f, (x,))

    # b[idx] += v with a repeated index: b[0] = b[0] + v[2] (the last write)
    def g(a):
        b = a * 1.0
        b[_idx(backend, [0, 1, 0])] += a * backend.asarray([1.0, 2.0, 3.0])
        return b

    _same(backend, g(x), [0.3 + 6.0, -1.2 - 2.4, 2.0])
    want = np.array([[1.0, 0.0, 3.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    _same(backend, gpuad.jacrev(g)(x), want)
    _same(backend, gpuad.jacfwd(g)(x), want)
    check_grads(g, (x,))


def test_index_set_repeated_indices_broadcast_values(backend):
    _numpy_only(backend)
    base = backend.asarray([1.0, -2.0, 0.5, 3.0])
    w = backend.asarray([1.0, 2.0, 3.0, 4.0])
    key = (_idx(backend, [0, 2, 0]),)
    # a scalar written three times (twice to the same element) is stored twice: at 0 and at 2
    s = backend.asarray(1.5)
    g = gpuad.grad(lambda s: xp.sum(ops.index_set(base, s, key=key) * w))(s)
    _same(backend, g, 1.0 + 3.0)
    check_grads(lambda b, s: ops.index_set(b * b, s * s, key=key), (base, s))
    vals = backend.asarray([0.25, -1.0, 2.0])
    gv = gpuad.grad(lambda v: xp.sum(ops.index_set(base, v, key=key) * w))(vals)
    _same(backend, gv, [0.0, 3.0, 1.0])
    check_grads(lambda b, v: ops.index_set(b, v * v, key=key), (base, vals))
    # rows of a matrix: an int array with a slice, and a row of values broadcast down
    m = backend.asarray(X34)
    k2 = (_idx(backend, [1, 1, 0]), slice(None))
    row = backend.asarray([1.0, 2.0, 3.0, 4.0])
    _same(backend, gpuad.grad(lambda r: xp.sum(ops.index_set(m, r, key=k2)))(row), [2.0, 2.0, 2.0, 2.0])
    full = backend.asarray(np.arange(12.0).reshape(3, 4))
    _same(backend, gpuad.grad(lambda v: xp.sum(ops.index_set(m, v, key=k2)))(full),
          [[0.0] * 4, [1.0] * 4, [1.0] * 4])
    check_grads(lambda b, v: ops.index_set(b, v, key=k2), (m, full))


def test_index_set_masks_and_slices_have_no_duplicates(backend):
    base = backend.asarray(X34)
    mask = backend.asarray(X34 > 0.0, dtype="bool")
    s = backend.asarray(1.5)
    _same(backend, ops.index_set(base, s, key=(mask,)), np.where(X34 > 0.0, 1.5, X34))
    check_grads(lambda b, s: ops.index_set(b, s * s, key=(mask,)), (base, s))
    _same(backend, gpuad.grad(lambda s: xp.sum(ops.index_set(base, s, key=(mask,))))(s), float(np.sum(X34 > 0.0)))
    row = backend.asarray([1.0, 2.0, 3.0, 4.0])
    check_grads(lambda b, r: ops.index_set(b, r, key=(slice(0, 2), slice(None))), (base, row))
    _same(backend, gpuad.grad(lambda r: xp.sum(ops.index_set(base, r, key=(slice(0, 2), slice(None)))))(row), [2.0] * 4)


# --- take --------------------------------------------------------------------------------
def test_take_values_and_grads(backend):
    x = backend.asarray(X34)
    i = _idx(backend, [0, 3, 3, -1, 1])
    _same(backend, xp.take(x, i, axis=1), np.take(X34, [0, 3, 3, -1, 1], axis=1))
    i0 = _idx(backend, [2, 2, 0])
    _same(backend, xp.take(x, i0, axis=0), np.take(X34, [2, 2, 0], axis=0))
    _same(backend, xp.take(x, i0), np.take(X34, [2, 2, 0]))  # axis=None flattens
    check_grads(lambda x: xp.take(x, i, axis=1), (x,))
    check_grads(lambda x: xp.take(x, i0, axis=0), (x,))
    check_grads(lambda x: xp.take(x, i0), (x,))
    # repeated indices accumulate: 3 appears twice and -1 is 3 again
    g = gpuad.grad(lambda x: xp.sum(xp.take(x, i, axis=1)))(x)
    _same(backend, g, np.array([[1.0, 1.0, 0.0, 3.0]] * 3))
    w = backend.asarray([1.0, 10.0, 100.0])
    g = gpuad.grad(lambda x: xp.sum(xp.take(x, i0, axis=0)[:, 0] * w))(x)
    want = np.zeros((3, 4))
    want[2, 0] = 11.0
    want[0, 0] = 100.0
    _same(backend, g, want)


def test_take_errors(backend):
    x = backend.asarray(X34)
    with pytest.raises(TypeError, match="take: indices must be an integer array"):
        xp.take(x, backend.asarray([0.0, 1.0]), axis=0)
    with pytest.raises(IndexError, match="take: axis 2 is out of range"):
        xp.take(x, _idx(backend, [0]), axis=2)


@HYP
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data(), seed=seeds)
def test_take_hypothesis(cpu_backend, shape, data, seed):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    n = shape[axis]
    k = data.draw(st.integers(0, 5))
    idx = data.draw(st.lists(st.integers(-n, n - 1), min_size=k, max_size=k)) if n else []
    x = random_array(cpu_backend, shape, seed)
    i = _idx(cpu_backend, np.asarray(idx, dtype=np.int64))
    check_grads(lambda x: xp.take(x, i, axis=axis), (x,))
    want = np.zeros(shape)
    pos = [slice(None)] * nd
    for j in idx:
        pos[axis] = j
        want[tuple(pos)] += 1.0
    g = gpuad.grad(lambda x: xp.sum(xp.take(x, i, axis=axis)))(x)
    np.testing.assert_allclose(np.asarray(cpu_backend.to_numpy(g)), want)


# --- take_along_axis ---------------------------------------------------------------------
def test_take_along_axis_values_and_grads(backend):
    x = backend.asarray(X34)
    ivals = np.array([[0, 0], [3, 1], [-1, 2]])
    i = _idx(backend, ivals)
    _same(backend, xp.take_along_axis(x, i, axis=1), np.take_along_axis(X34, ivals % 4, axis=1))
    check_grads(lambda x: xp.take_along_axis(x, i, axis=1), (x,))
    g = gpuad.grad(lambda x: xp.sum(xp.take_along_axis(x, i, axis=1)))(x)
    want = np.zeros((3, 4))
    want[0, 0] = 2.0
    want[1, 3] = want[1, 1] = want[2, 3] = want[2, 2] = 1.0
    _same(backend, g, want)
    # indices broadcast against x outside the axis
    j = _idx(backend, [[2, 2, 1, 0]])
    _same(backend, xp.take_along_axis(x, j, axis=0), np.take_along_axis(X34, np.array([[2, 2, 1, 0]]), axis=0))
    check_grads(lambda x: xp.take_along_axis(x, j, axis=0), (x,))
    col = backend.asarray([[1.0], [2.0], [3.0]])
    k = _idx(backend, [[0, 0, 0]])
    check_grads(lambda c: xp.take_along_axis(c, k, axis=1), (col,))
    g = gpuad.grad(lambda c: xp.sum(xp.take_along_axis(c, k, axis=1)))(col)
    _same(backend, g, [[3.0], [3.0], [3.0]])


def test_take_along_axis_errors(backend):
    x = backend.asarray(X34)
    with pytest.raises(ValueError, match="take_along_axis: x .* same number of dimensions"):
        xp.take_along_axis(x, _idx(backend, [0, 1]), axis=1)
    with pytest.raises(ValueError, match="take_along_axis: .* do not broadcast outside axis 1"):
        xp.take_along_axis(x, _idx(backend, [[0], [1]]), axis=1)


@HYP
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data(), seed=seeds)
def test_take_along_axis_hypothesis(cpu_backend, shape, data, seed):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    n = shape[axis]
    ishape = [1 if data.draw(st.booleans()) else s for s in shape]  # broadcast some dims
    ishape[axis] = data.draw(st.integers(0, 4)) if n else 0
    rng = np.random.default_rng(seed)
    idx = rng.integers(-n, n, size=ishape) if n else np.zeros(ishape, dtype=np.int64)
    x = random_array(cpu_backend, shape, seed)
    i = _idx(cpu_backend, idx)
    check_grads(lambda x: xp.take_along_axis(x, i, axis=axis), (x,))
