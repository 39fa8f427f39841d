"""Reductions and scans: derivatives to second order in both modes, closed-form
oracles (products with zeros, variance, ties of max/min, softmax), numerical
stability of logsumexp, and errors naming the op.

Fixed inputs run on every backend; hypothesis runs the checker on the CPU
backends with shapes that include size-0 and size-1 dimensions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import xp
from gpuad.testing import check_grads
from strategies import random_array, seeds, shapes

#: Registered primitives whose gradients this module checks with check_grads
#: to order 2 in both modes.
COVERS = {"sum", "prod", "var", "max", "min", "cumulative_sum", "cumulative_prod", "logsumexp"}

HYP = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
HYP_HEAVY = settings(HYP, max_examples=10)


def _np(backend, x):
    return backend.to_numpy(x)


def _others(x):
    """d prod(x) / dx_i = prod_{j != i} x_j, computed without division."""
    x = np.asarray(x, dtype=float).ravel()
    return np.array([np.prod(np.delete(x, i)) for i in range(x.size)])


@st.composite
def axes_for(draw, ndim, allow_none=True):
    """``None``, an int or a tuple of distinct axes (negative ones included)."""
    kind = draw(st.sampled_from(["none", "int", "tuple"] if allow_none else ["int", "tuple"]))
    if ndim == 0 or kind == "none":
        return None if allow_none or ndim == 0 else 0
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    picked = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in picked)


def _with_zeros(backend, shape, seed, p=0.3):
    """Uniform values in [-1.5, 1.5) with about a fraction ``p`` of exact zeros."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, size=shape)
    return backend.asarray(np.where(rng.uniform(size=shape) < p, 0.0, x))


def _reduced_size(shape, axis):
    if axis is None:
        axis = tuple(range(len(shape)))
    if isinstance(axis, int):
        axis = (axis,)
    return math.prod(shape[a] for a in axis)


# --- sum, mean ------------------------------------------------------------------
def test_sum_mean_grads(backend):
    x = backend.asarray([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    check_grads(lambda x: xp.sum(x, axis=1), (x,))
    check_grads(lambda x: xp.sum(x * x, axis=(0, 1), keepdims=True), (x,))
    check_grads(lambda x: xp.mean(x, axis=0), (x,))
    g = gpuad.grad(lambda x: xp.mean(x))(x)
    np.testing.assert_allclose(_np(backend, g), np.full((2, 3), 1 / 6))


# --- prod -------------------------------------------------------------------------
@pytest.mark.parametrize("vals", [
    [1.5, -2.0, 3.0, 0.5],   # no zero
    [2.0, 0.0, 3.0, 4.0],    # exactly one zero
    [0.0, 0.0, 3.0, 4.0],    # two zeros
    [0.0, 0.0, 0.0, 0.0],    # all zeros
])
def test_prod_grad_closed_form_with_zeros(backend, vals):
    x = backend.asarray(vals)
    g = gpuad.grad(lambda x: xp.prod(x))(x)
    np.testing.assert_allclose(_np(backend, g), _others(vals), atol=1e-12)
    check_grads(lambda x: xp.prod(x), (x,))


def test_prod_hessian_with_one_zero(backend):
    vals = [2.0, 0.0, 3.0, -1.5]
    x = backend.asarray(vals)
    h = _np(backend, gpuad.hessian(lambda x: xp.prod(x))(x))
    want = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            if i != j:
                want[i, j] = np.prod([v for k, v in enumerate(vals) if k not in (i, j)])
    np.testing.assert_allclose(h, want, atol=1e-12)


def test_prod_axes_keepdims(backend):
    x = backend.asarray([[2.0, 0.0, 3.0], [1.0, 0.0, 0.0], [1.5, -2.0, 0.5]])
    for axis, keepdims in [(None, False), (0, False), (1, True), ((0, 1), True), (-1, False), ((), False)]:
        check_grads(lambda x: xp.prod(x, axis=axis, keepdims=keepdims), (x,))
    g = gpuad.grad(lambda x: xp.sum(xp.prod(x, axis=1)))(x)
    want = np.stack([_others(r) for r in _np(backend, x)])
    np.testing.assert_allclose(_np(backend, g), want, atol=1e-12)


def test_prod_of_empty_is_one(backend):
    x = backend.asarray(np.zeros((0, 3)))
    y = xp.prod(x, axis=0)
    np.testing.assert_allclose(_np(backend, y), np.ones(3))
    g = gpuad.grad(lambda x: xp.sum(xp.prod(x, axis=0)))(x)
    assert g.shape == (0, 3)


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_prod_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(axes_for(len(shape)))
    keepdims = data.draw(st.booleans())
    x = _with_zeros(cpu_backend, shape, seed)
    check_grads(lambda x: xp.prod(x, axis=axis, keepdims=keepdims), (x,))


# --- var, std ---------------------------------------------------------------------
@pytest.mark.parametrize("correction", [0, 1])
def test_var_closed_form(backend, correction):
    vals = np.array([[1.0, -2.0, 0.5, 4.0], [3.0, 0.25, -1.0, 2.0]])
    x = backend.asarray(vals)
    g = gpuad.grad(lambda x: xp.sum(xp.var(x, axis=1, correction=correction)))(x)
    want = 2 * (vals - vals.mean(axis=1, keepdims=True)) / (4 - correction)
    np.testing.assert_allclose(_np(backend, g), want, atol=1e-12)
    np.testing.assert_allclose(_np(backend, xp.var(x, axis=1, correction=correction)),
                               vals.var(axis=1, ddof=correction))
    check_grads(lambda x: xp.var(x, axis=1, correction=correction), (x,))
    check_grads(lambda x: xp.var(x, correction=correction, keepdims=True), (x,))
    check_grads(lambda x: xp.std(x, axis=0, correction=correction), (x,))


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_var_std_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(axes_for(len(shape)))
    correction = data.draw(st.sampled_from([0, 1]))
    keepdims = data.draw(st.booleans())
    assume(_reduced_size(shape, axis) > correction + 1)  # std is not differentiable at 0
    x = random_array(cpu_backend, shape, seed)
    check_grads(lambda x: xp.var(x, axis=axis, correction=correction, keepdims=keepdims), (x,))
    check_grads(lambda x: xp.std(x, axis=axis, correction=correction, keepdims=keepdims), (x,), order=1)


# --- max, min ---------------------------------------------------------------------
def test_max_min_split_ties_equally(backend):
    x = backend.asarray([1.0, 3.0, 3.0])
    np.testing.assert_allclose(_np(backend, gpuad.grad(lambda x: xp.max(x))(x)), [0.0, 0.5, 0.5])
    y = backend.asarray([2.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(_np(backend, gpuad.grad(lambda x: xp.min(x))(y)), [0.0, 1 / 3, 1 / 3, 1 / 3])
    # forward mode agrees: the tangent is the mean of the tied tangents
    _, t = gpuad.jvp(lambda x: xp.max(x), (x,), (backend.asarray([5.0, 1.0, 2.0]),))
    np.testing.assert_allclose(_np(backend, t), 1.5)
    z = backend.asarray([[4.0, 4.0], [1.0, 2.0]])
    g = gpuad.grad(lambda x: xp.sum(xp.max(x, axis=1)))(z)
    np.testing.assert_allclose(_np(backend, g), [[0.5, 0.5], [0.0, 1.0]])


def test_max_min_grads(backend):
    x = backend.asarray([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    for f in (xp.max, xp.min):
        check_grads(lambda x: f(x), (x,))
        check_grads(lambda x: f(x, axis=0), (x,))
        check_grads(lambda x: f(x * x, axis=1, keepdims=True), (x,))


def test_max_of_empty_axis_raises(backend):
    x = backend.asarray(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="max: .*zero-size"):
        xp.max(x, axis=1)
    with pytest.raises(IndexError, match="min: axis 2"):
        xp.min(x, axis=2)
    assert xp.max(x, axis=0).shape == (0,)


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_max_min_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(axes_for(len(shape)))
    keepdims = data.draw(st.booleans())
    assume(_reduced_size(shape, axis) > 0)
    # distinct values spaced well apart: finite differences never cross a tie
    n = math.prod(shape)
    vals = np.random.default_rng(seed).permutation(n).reshape(shape) * 0.1
    x = cpu_backend.asarray(vals)
    f = data.draw(st.sampled_from([xp.max, xp.min]))
    check_grads(lambda x: f(x, axis=axis, keepdims=keepdims), (x,))


# --- cumulative_sum, cumulative_prod -------------------------------------------------
def test_cumulative_sum(backend):
    vals = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    x = backend.asarray(vals)
    np.testing.assert_allclose(_np(backend, xp.cumulative_sum(x, axis=1)), np.cumsum(vals, axis=1))
    y = xp.cumulative_sum(x, axis=0, include_initial=True)
    np.testing.assert_allclose(_np(backend, y), np.concatenate([np.zeros((1, 3)), np.cumsum(vals, 0)]))
    w = np.array([1.0, 2.0, 3.0])
    g = gpuad.grad(lambda x: xp.sum(xp.cumulative_sum(x) * backend.asarray(w)))(backend.asarray([1.0, 1, 1]))
    np.testing.assert_allclose(_np(backend, g), [6.0, 5.0, 3.0])  # reverse cumulative sum of w
    check_grads(lambda x: xp.cumulative_sum(x, axis=1), (x,))
    check_grads(lambda x: xp.cumulative_sum(x * x, axis=-2, include_initial=True), (x,))


@pytest.mark.parametrize("vals", [[1.5, -2.0, 3.0, 0.5], [2.0, 0.0, 3.0, 4.0], [0.0, 2.0, 0.0, 4.0, 0.5]])
def test_cumulative_prod_with_zeros(backend, vals):
    x = backend.asarray(vals)
    np.testing.assert_allclose(_np(backend, xp.cumulative_prod(x)), np.cumprod(vals))
    # d sum(cumprod(x)) / dx_i = sum_{k >= i} prod_{j <= k, j != i} x_j
    v = np.asarray(vals)
    want = [sum(np.prod(np.delete(v[: k + 1], i)) for k in range(i, v.size)) for i in range(v.size)]
    g = gpuad.grad(lambda x: xp.sum(xp.cumulative_prod(x)))(x)
    np.testing.assert_allclose(_np(backend, g), want, atol=1e-12)
    check_grads(lambda x: xp.cumulative_prod(x), (x,))
    check_grads(lambda x: xp.cumulative_prod(x, include_initial=True), (x,))


def test_cumulative_prod_2d(backend):
    x = backend.asarray([[2.0, 0.0, 3.0, 1.0], [1.0, 0.5, 0.0, 0.0], [1.5, -2.0, 0.5, 1.2]])
    check_grads(lambda x: xp.cumulative_prod(x, axis=1), (x,))
    check_grads(lambda x: xp.cumulative_prod(x, axis=0, include_initial=True), (x,))


def test_scan_errors(backend):
    x = backend.asarray(np.ones((2, 3)))
    with pytest.raises(ValueError, match="cumulative_sum: axis must be given"):
        xp.cumulative_sum(x)
    with pytest.raises(IndexError, match="cumulative_prod: axis 3"):
        xp.cumulative_prod(x, axis=3)


@HYP_HEAVY
@given(shape=shapes(min_dims=1, max_dims=3, max_side=5), data=st.data(), seed=seeds)
def test_scans_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    include_initial = data.draw(st.booleans())
    x = _with_zeros(cpu_backend, shape, seed)
    check_grads(lambda x: xp.cumulative_sum(x, axis=axis, include_initial=include_initial), (x,))
    check_grads(lambda x: xp.cumulative_prod(x, axis=axis, include_initial=include_initial), (x,))


# --- logsumexp ------------------------------------------------------------------------
def test_logsumexp_is_stable(backend):
    vals = np.array([[1000.0, -1000.0, 999.0], [-1000.0, -1001.0, -1000.5]])
    x = backend.asarray(vals)
    out = _np(backend, xp.logsumexp(x, axis=1))
    m = vals.max(axis=1)
    want = m + np.log(np.exp(vals - m[:, None]).sum(axis=1))
    np.testing.assert_allclose(out, want)
    assert np.all(np.isfinite(out))
    g = _np(backend, gpuad.grad(lambda x: xp.sum(xp.logsumexp(x, axis=1)))(x))
    e = np.exp(vals - want[:, None])
    np.testing.assert_allclose(g, e, atol=1e-12)  # softmax
    check_grads(lambda x: xp.logsumexp(x, axis=1), (x,))
    check_grads(lambda x: xp.logsumexp(x, keepdims=True), (x,))


def test_logsumexp_edge_cases(backend):
    x = backend.asarray(np.zeros((2, 0)))
    np.testing.assert_array_equal(_np(backend, xp.logsumexp(x, axis=1)), [-np.inf, -np.inf])
    y = backend.asarray([[-np.inf, -np.inf], [0.0, -np.inf]])
    np.testing.assert_allclose(_np(backend, xp.logsumexp(y, axis=1)), [-np.inf, 0.0])


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_logsumexp_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(axes_for(len(shape)))
    keepdims = data.draw(st.booleans())
    scale = data.draw(st.sampled_from([1.0, 300.0]))
    assume(_reduced_size(shape, axis) > 0)  # the empty logsumexp is -inf: no finite differences
    x = random_array(cpu_backend, shape, seed, low=-scale, high=scale)
    check_grads(lambda x: xp.logsumexp(x, axis=axis, keepdims=keepdims), (x,))


@HYP
@given(shape=shapes(max_dims=3), data=st.data(), seed=seeds)
def test_sum_hypothesis(cpu_backend, shape, data, seed):
    axis = data.draw(axes_for(len(shape)))
    keepdims = data.draw(st.booleans())
    x = random_array(cpu_backend, shape, seed)
    check_grads(lambda x: xp.sum(x, axis=axis, keepdims=keepdims), (x,))


def test_axis_errors_name_the_op(backend):
    x = backend.asarray(np.ones((2, 3)))
    for f, name in [(xp.prod, "prod"), (xp.var, "var"), (xp.logsumexp, "logsumexp"), (xp.max, "max")]:
        with pytest.raises(IndexError, match=f"{name}: axis 5 is out of range"):
            f(x, axis=5)
