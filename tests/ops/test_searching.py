"""Searching, sorting, sets and truth tests: values against NumPy, plain
(untraced) outputs inside transforms, and ``sort``'s gradient in the values.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import xp
from gpuad._core import is_tracer
from gpuad.testing import check_grads
from strategies import seeds, shapes

#: Registered primitives whose gradients this module checks with check_grads
#: to order 2 in both modes (sort of a traced array is take_along_axis).
COVERS = {"take_along_axis"}

HYP = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALS = np.array([[3.0, 1.0, 2.0, 1.0], [0.5, 4.0, 4.0, -1.0]])


def _np(backend, x):
    return backend.to_numpy(x)


def _same(backend, got, want):
    got = _np(backend, got)
    assert got.shape == np.shape(want)
    np.testing.assert_array_equal(got, want)


def test_argmax_argmin(backend):
    x = backend.asarray(VALS)
    _same(backend, xp.argmax(x), np.argmax(VALS))
    _same(backend, xp.argmax(x, axis=1), np.argmax(VALS, axis=1))  # first of the tied maxima
    _same(backend, xp.argmin(x, axis=0, keepdims=True), np.argmin(VALS, axis=0, keepdims=True))
    with pytest.raises(ValueError, match="argmax: cannot search a zero-size axis 1"):
        xp.argmax(backend.asarray(np.zeros((2, 0))), axis=1)
    with pytest.raises(IndexError, match="argmin: axis 2"):
        xp.argmin(x, axis=2)


def test_nondiff_outputs_are_plain_inside_transforms(backend):
    x = backend.asarray(VALS)
    seen = {}

    def f(x):
        i = xp.argmax(x, axis=1)
        seen["argmax"] = i
        seen["argsort"] = xp.argsort(x, axis=1)
        seen["any"] = xp.any(x > 3.5)
        seen["count"] = xp.count_nonzero(x > 1.0, axis=0)
        seen["unique"] = xp.unique_values(x)
        return xp.sum(xp.take_along_axis(x, xp.reshape(i, (2, 1)), axis=1))

    g = gpuad.grad(f)(x)
    assert not any(is_tracer(v) for v in seen.values())
    want = np.zeros_like(VALS)
    want[0, 0] = want[1, 1] = 1.0
    _same(backend, g, want)


def test_sort_argsort(backend):
    x = backend.asarray(VALS)
    _same(backend, xp.sort(x), np.sort(VALS, axis=-1))
    _same(backend, xp.sort(x, axis=0, descending=True), -np.sort(-VALS, axis=0))
    _same(backend, xp.argsort(x, axis=1), np.argsort(VALS, axis=1, kind="stable"))
    _same(backend, xp.argsort(x, axis=1, descending=True), np.array([[0, 2, 1, 3], [1, 2, 0, 3]]))
    with pytest.raises(ValueError, match="sort: x must have at least one dimension"):
        xp.sort(backend.asarray(1.0))


def test_sort_gradient_follows_the_values(backend):
    vals = np.array([[0.3, -1.2, 2.5, 0.9], [1.1, 0.2, -0.4, 3.0]])
    x = backend.asarray(vals)
    check_grads(lambda x: xp.sort(x, axis=1), (x,))
    check_grads(lambda x: xp.sort(x, axis=0, descending=True), (x,))
    w = np.array([1.0, 2.0, 3.0, 4.0])
    g = gpuad.grad(lambda x: xp.sum(xp.sort(x) * backend.asarray(w)))(x)
    ranks = np.argsort(np.argsort(vals, axis=1), axis=1)
    _same(backend, g, w[ranks])
    # forward mode agrees with the primal sort
    y, t = gpuad.jvp(lambda x: xp.sort(x), (x,), (x,))
    _same(backend, y, np.sort(vals))
    _same(backend, t, np.sort(vals))


def test_nonzero_count_nonzero(backend):
    v = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    x = backend.asarray(v)
    nz = xp.nonzero(x)
    assert len(nz) == 2
    for got, want in zip(nz, np.nonzero(v)):
        _same(backend, got, want)
    _same(backend, xp.count_nonzero(x), 3)
    _same(backend, xp.count_nonzero(x, axis=1, keepdims=True), [[1], [2]])
    _same(backend, xp.count_nonzero(x, axis=(0, 1)), 3)
    with pytest.raises(ValueError, match="nonzero: x must have at least one dimension"):
        xp.nonzero(backend.asarray(1.0))


def test_searchsorted(backend):
    a = backend.asarray([1.0, 2.0, 2.0, 5.0])
    v = backend.asarray([[0.0, 2.0], [6.0, 2.5]])
    _same(backend, xp.searchsorted(a, v), np.searchsorted([1, 2, 2, 5], [[0, 2], [6, 2.5]]))
    _same(backend, xp.searchsorted(a, v, side="right"), np.searchsorted([1, 2, 2, 5], [[0, 2], [6, 2.5]], "right"))
    b = backend.asarray([5.0, 1.0, 2.0])
    s = backend.asarray([1, 2, 0], dtype="int64")
    _same(backend, xp.searchsorted(b, backend.asarray([1.5, 9.0]), sorter=s), [1, 3])
    with pytest.raises(ValueError, match="searchsorted: side must be"):
        xp.searchsorted(a, v, side="middle")
    with pytest.raises(ValueError, match="searchsorted: x1 must be 1-D"):
        xp.searchsorted(backend.asarray(VALS), v)


def test_unique(backend):
    v = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 3.0])
    x = backend.asarray(v)
    _same(backend, xp.unique_values(x), [1.0, 2.0, 3.0])
    vals, counts = xp.unique_counts(x)
    _same(backend, vals, [1.0, 2.0, 3.0])
    _same(backend, counts, [2, 1, 3])
    vals, inv = xp.unique_inverse(x)
    _same(backend, xp.take(vals, xp.reshape(inv, (-1,))), v)
    res = xp.unique_all(x)
    _same(backend, res.values, [1.0, 2.0, 3.0])
    _same(backend, res.counts, [2, 1, 3])
    _same(backend, xp.take(x, res.indices), [1.0, 2.0, 3.0])


def test_all_any(backend):
    x = backend.asarray([[1.0, 0.0], [2.0, 3.0]])
    _same(backend, xp.all(x), False)
    _same(backend, xp.any(x), True)
    _same(backend, xp.all(x, axis=1), [False, True])
    _same(backend, xp.any(x == 0.0, axis=0, keepdims=True), [[False, True]])
    with pytest.raises(IndexError, match="all: axis 2"):
        xp.all(x, axis=2)


@HYP
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data(), seed=seeds)
def test_sort_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    descending = data.draw(st.booleans())
    n = int(np.prod(shape))
    vals = np.random.default_rng(seed).permutation(n).reshape(shape) * 0.1  # no ties
    x = cpu_backend.asarray(vals)
    check_grads(lambda x: xp.sort(x, axis=axis, descending=descending), (x,))
    want = np.flip(np.sort(vals, axis=axis), axis=axis) if descending else np.sort(vals, axis=axis)
    np.testing.assert_array_equal(cpu_backend.to_numpy(xp.sort(x, axis=axis, descending=descending)), want)
