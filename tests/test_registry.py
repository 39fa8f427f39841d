"""The op registry: declarations, shorthands, what nodes keep, backend overrides."""

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad._registry import PRIMITIVES, Spec, defop, defunary, override
from gpuad._reverse import VJPTracer
from gpuad.testing import check_grads


def _node_of(f, x):
    """The tape node that records ``f(x)`` (vjp keeps the tape)."""
    kept = {}

    def g(x):
        kept["y"] = f(x)
        return kept["y"]

    gpuad.vjp(g, x)
    assert isinstance(kept["y"], VJPTracer)
    return kept["y"]._node


def test_nodes_keep_only_declared_residuals():
    x = np.array([0.5, 1.0])
    exp_node = _node_of(xp.exp, x)  # VJP reads the output only
    assert isinstance(exp_node.args[0], Spec) and exp_node.ans is not None
    sin_node = _node_of(xp.sin, x)  # reads the input only
    assert not isinstance(sin_node.args[0], Spec) and sin_node.ans is None
    reshape_node = _node_of(lambda x: xp.reshape(x, (2, 1)), x)  # linear: keeps nothing
    assert isinstance(reshape_node.args[0], Spec) and reshape_node.ans is None
    assert reshape_node.args[0].shape == (2,)


def test_every_primitive_declares_rules_for_float_args():
    for name, prim in PRIMITIVES.items():
        if prim.nondiff or prim.composite is not None:
            continue
        assert prim.vjps or prim.vjp_variadic, f"{name} has no VJP rules"
        assert prim.jvps is not None or prim.jvp_joint is not None, f"{name} has no JVP rule"


def test_defunary_shorthand_and_second_order(backend):
    name = "test_only_cube"
    prim = PRIMITIVES.get(name) or defunary(name, lambda xp_, x: x * x * x, lambda ans, x: 3.0 * xp.square(x))
    try:
        x = backend.asarray([0.5, -1.5])
        check_grads(prim, (x,), order=2)
        d2 = gpuad.grad(gpuad.grad(lambda x: prim(x)))(backend.asarray(2.0))
        assert float(d2) == 12.0
    finally:
        PRIMITIVES.pop(name, None)


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        defop("exp", lambda xp_, x: x)


def test_backend_override_changes_impl_not_rules():
    import array_api_compat.numpy as npx

    name = "test_only_double"
    prim = PRIMITIVES.get(name) or defop(
        name, lambda xp_, x: x * 2.0, vjp=(lambda g, ans, x: g * 2.0,), jvp=(lambda t, ans, x: t * 2.0,),
        keep_args=(), keep_ans=False)
    calls = []

    def fused(xp_, x):
        calls.append(1)
        return npx.multiply(x, 2.0)

    try:
        override(name, npx, fused)
        x = np.array([1.0, 3.0])
        np.testing.assert_array_equal(prim(x), [2.0, 6.0])
        g = gpuad.grad(lambda x: xp.sum(prim(x)))(x)
        np.testing.assert_array_equal(g, [2.0, 2.0])
        assert len(calls) == 2
        import array_api_strict

        prim(array_api_strict.asarray([1.0]))  # other namespaces keep the generic impl
        assert len(calls) == 2
    finally:
        PRIMITIVES.pop(name, None)
    with pytest.raises(KeyError, match="no primitive named"):
        override("no_such_op", npx, fused)


def test_numpy_overrides_index_add_and_matches_generic():
    import array_api_compat.numpy as npx
    import array_api_strict

    prim = PRIMITIVES["index_add"]
    assert npx in prim.impls  # registered by gpuad.backends.numpy
    idx = np.array([0, 2, 0, 0])
    base = np.zeros(4)
    vals = np.array([1.0, 2.0, 3.0, 4.0])
    fast = prim(base, vals, key=(idx,))
    generic = prim(array_api_strict.asarray(base), array_api_strict.asarray(vals), key=(array_api_strict.asarray(idx),))
    np.testing.assert_array_equal(fast, [8.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(np.asarray(generic), fast)
