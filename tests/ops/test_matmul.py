"""matmul: 1-D promotion, batching and broadcasting, to second order in both modes."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import xp
from gpuad.testing import check_grads
from strategies import random_array, seeds

COVERS = {"matmul"}

CASES = [
    ((3,), (3,)),          # inner product
    ((2, 3), (3,)),        # matrix @ vector
    ((3,), (3, 4)),        # vector @ matrix
    ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)),   # batch @ matrix
    ((2, 1, 2, 3), (4, 3, 2)),  # broadcast batch dims
    ((4, 2, 3), (3,)),
    ((3,), (2, 3, 4)),
]


@pytest.mark.parametrize("sa,sb", CASES)
def test_matmul_check_grads(backend, sa, sb):
    a = random_array(backend, sa, 1)
    b = random_array(backend, sb, 2)
    check_grads(xp.matmul, (a, b), order=2)


def test_matmul_closed_form(backend):
    a = np.array([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]])
    b = np.array([[2.0, -1.0], [0.5, 1.0], [1.0, 1.0]])
    ga, gb = gpuad.grad(lambda a, b: xp.sum(a @ b), argnums=(0, 1))(backend.asarray(a), backend.asarray(b))
    np.testing.assert_allclose(backend.to_numpy(ga), np.ones((2, 2)) @ b.T)
    np.testing.assert_allclose(backend.to_numpy(gb), a.T @ np.ones((2, 2)))


def test_matmul_float32(backend):
    a = random_array(backend, (3, 4), 3, dtype="float32")
    b = random_array(backend, (4, 2), 4, dtype="float32")
    check_grads(xp.matmul, (a, b), order=2)


@st.composite
def matmul_shapes(draw):
    m, k, n = (draw(st.integers(0, 3)) for _ in range(3))
    batch = tuple(draw(st.lists(st.integers(0, 2), max_size=2)))
    bb = tuple(1 if draw(st.booleans()) else s for s in batch)
    sa = batch + (m, k) if draw(st.booleans()) else (k,)
    sb = bb + (k, n) if draw(st.booleans()) else (k,)
    return sa, sb


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_hypothesis(cpu_backend, shapes, seed):
    sa, sb = shapes
    a = random_array(cpu_backend, sa, seed)
    b = random_array(cpu_backend, sb, seed + 1)
    check_grads(xp.matmul, (a, b), order=2)


@pytest.mark.parametrize("sa,sb", [((2, 0, 0), (0, 3)), ((0, 2, 3), (3, 4)), ((2, 3, 0), (0, 4)), ((4, 2, 3), (3, 5))])
def test_stacked_times_matrix_uses_flattened_rows(backend, sa, sb):
    # NOTE [stacked @ matrix]: same values and gradients as the batched product
    a = random_array(backend, sa, 5)
    b = random_array(backend, sb, 6)
    out = xp.matmul(a, b)
    np.testing.assert_allclose(backend.to_numpy(out), backend.to_numpy(a) @ backend.to_numpy(b), rtol=1e-12)
    check_grads(xp.matmul, (a, b), order=2)
