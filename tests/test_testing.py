"""check_grads itself: it catches wrong rules and says where."""

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad._registry import PRIMITIVES, defop
from gpuad.testing import GradientCheckError, check_grads, default_tolerance


def _temp_prim(name, vjp, jvp, keep_args=(0,)):
    PRIMITIVES.pop(name, None)
    return defop(name, lambda xp_, x: xp_.sin(x), vjp=(vjp,), jvp=(jvp,), keep_args=keep_args, keep_ans=False)


@pytest.fixture
def x(backend):
    return backend.asarray([0.3, -0.8, 1.2])


def test_wrong_vjp_is_caught_in_reverse_mode_only(x):
    p = _temp_prim("test_only_bad_vjp", lambda g, ans, x: g * 2.0, lambda t, ans, x: t * xp.cos(x))
    try:
        check_grads(p, (x,), order=1, modes=("fwd",))  # forward rule is right
        with pytest.raises(GradientCheckError, match=r"reverse mode .* order 1 .* argument 0") as e:
            check_grads(p, (x,), order=1, modes=("rev",))
        assert "FD" in str(e.value) and "difference" in str(e.value)
    finally:
        PRIMITIVES.pop("test_only_bad_vjp")


def test_wrong_jvp_is_caught_in_forward_mode(x):
    p = _temp_prim("test_only_bad_jvp", lambda g, ans, x: g * xp.cos(x), lambda t, ans, x: t * xp.cos(x) * 1.01)
    try:
        check_grads(p, (x,), order=1, modes=("rev",))
        msg = r"forward mode .* order 1 .* argument 0: output 0: max \|JVP - FD\|"
        with pytest.raises(GradientCheckError, match=msg):
            check_grads(p, (x,), order=1, modes=("fwd",))
    finally:
        PRIMITIVES.pop("test_only_bad_jvp")


def test_non_differentiable_rule_is_caught_at_second_order(x):
    # First derivatives are right, but the rule hides its dependence on x from
    # higher orders: only the order-2 check can see that.
    def rule(g, ans, x):
        return g * xp.cos(gpuad.stop_gradient(x))

    p = _temp_prim("test_only_flat_rule", rule, lambda t, ans, x: t * xp.cos(gpuad.stop_gradient(x)))
    try:
        check_grads(p, (x,), order=1)
        with pytest.raises(GradientCheckError, match="order 2"):
            check_grads(p, (x,), order=2)
    finally:
        PRIMITIVES.pop("test_only_flat_rule")


def test_names_the_argument(backend):
    a = backend.asarray([0.5, 0.7])
    b = backend.asarray([1.5, -0.2])
    bad = gpuad.custom_vjp(lambda a, b: a * b)
    bad.defvjp(lambda a, b: (a * b, (a, b)), lambda r, g: (g * r[1], g * r[0] * 3.0))
    with pytest.raises(GradientCheckError, match="argument 1"):
        check_grads(bad, (a, b), order=1, modes=("rev",))


def test_dtype_aware_tolerances(backend):
    assert default_tolerance([backend.asarray(0.0).dtype]) == (1e-6, 1e-6)
    assert default_tolerance([backend.asarray(0.0).dtype, backend.asarray(0.0, dtype="float32").dtype])[0] > 1e-4
    x32 = backend.asarray([0.3, -0.8, 1.2], dtype="float32")
    check_grads(lambda x: xp.tanh(x) * xp.exp(x), (x32,), order=2)


def test_integer_arguments_are_held_fixed(backend):
    x = backend.asarray([0.3, 0.4])
    k = backend.asarray([2, 3], dtype="int64")
    check_grads(lambda x, k: x ** 2 * xp.astype(k, x.dtype), (x, k), order=2)
    with pytest.raises(ValueError, match="no floating-point array"):
        check_grads(lambda k: k, (k,))


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown mode 'sideways'"):
        check_grads(xp.sin, (np.ones(2),), modes=("sideways",))


@pytest.mark.parametrize("kw", [{"atol": -1}, {"atol": -1e-9}, {"rtol": -0.5}, {"rtol": float("nan")},
                                {"atol": float("inf")}, {"atol": "1e-6"}, {"rtol": True}])
def test_bad_tolerances_are_refused_by_name(kw):
    # was: accepted (a negative atol fails every check with a misleading report; NaN passes everything)
    (name, value), = kw.items()
    with pytest.raises(ValueError, match=rf"check_grads: {name} must be a finite number >= 0 .*got {value!r}"):
        check_grads(xp.sin, (np.ones(2),), **kw)
    check_grads(xp.sin, (np.ones(2),), atol=0.0 if name == "atol" else None, rtol=1e-6)


def test_f_must_be_callable():
    with pytest.raises(TypeError, match="check_grads: f must be a callable, got int 3"):
        check_grads(3, (np.ones(2),))
