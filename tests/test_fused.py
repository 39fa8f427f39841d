"""Fused primitives: the one-dispatch implementation equals the composite.

NOTE [fused primitives]: a fused primitive runs ``impl`` on plain arrays and
its ``composite`` (gpuad ops) under transforms; the two must agree, on every
backend, bit for bit.
"""

import inspect

import numpy as np
import pytest

import gpuad
from gpuad.testing import check_grads

import gpuad.nn  # noqa: E402,F401  (registers the nn primitives)
import gpuad.optim  # noqa: E402,F401  (registers adam_update)

FUSED = sorted(n for n, p in gpuad.PRIMITIVES.items() if p.composite is not None)
#: Static keyword parameters of fused primitives that take some.
PARAMS = {
    "nn_log_softmax_grad": {"axis": (1,)},
    "adam_update": {"b1": 0.9, "b2": 0.99, "eps": 1e-8, "l2": 0.01, "weight_decay": 0.02},
}


def _arity(prim):
    return sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in inspect.signature(prim.composite).parameters.values())


def test_there_are_fused_primitives():
    assert {"tanh_grad", "sin_grad", "cos_grad", "log_grad"} <= set(FUSED)


@pytest.mark.parametrize("name", FUSED)
def test_impl_equals_composite(backend, name):
    prim = gpuad.PRIMITIVES[name]
    rng = np.random.default_rng(0)
    args = [backend.asarray(rng.uniform(0.2, 0.9, size=(3, 4))) for _ in range(_arity(prim))]
    kw = PARAMS.get(name, {})
    fused = prim(*args, **kw)  # plain arrays: the fused impl
    composite = prim.composite(*args, **kw)
    fl, cl = gpuad.tree_leaves(fused), gpuad.tree_leaves(composite)  # adam_update returns three
    assert len(fl) == len(cl)
    for a, b in zip(fl, cl):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


@pytest.mark.parametrize("name", FUSED)
def test_fused_primitive_differentiates_through_its_composite(backend, name):
    prim = gpuad.PRIMITIVES[name]
    args = [backend.asarray([[0.3, 0.45, 0.7]]) for _ in range(_arity(prim))]
    kw = PARAMS.get(name, {})
    check_grads(lambda *a: prim(*a, **kw), tuple(args), order=2)
