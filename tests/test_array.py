"""Tracers implement the array object of the standard."""

import array_api_compat
import numpy as np
import pytest

import gpuad
from gpuad import xp


def test_namespace_and_attributes(backend):
    seen = {}

    def f(x):
        seen["ns"] = array_api_compat.array_namespace(x)
        seen["attrs"] = (x.shape, x.ndim, x.size, x.T.shape, x.mT.shape, x.dtype == backend.asarray(0.0).dtype)
        assert x.device == backend.asarray(0.0).device
        return xp.sum(x)

    gpuad.grad(f)(backend.asarray(np.ones((2, 3))))
    assert seen["ns"] is gpuad.xp
    assert seen["attrs"] == ((2, 3), 2, 6, (3, 2), (3, 2), True)


def test_generic_array_api_code_becomes_differentiable(backend):
    def softmax_cross(x):  # third-party style: asks the namespace of its input
        ns = array_api_compat.array_namespace(x)
        z = x - ns.max(x)
        return ns.log(ns.sum(ns.exp(z))) - z[0]

    x = backend.asarray([1.0, 2.0, 3.0])
    g = backend.to_numpy(gpuad.grad(softmax_cross)(x))
    p = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(g, p - np.array([1.0, 0.0, 0.0]), rtol=1e-12)


def test_operators_and_python_scalars(backend):
    def f(x):
        return xp.sum(2.0 * x + x * 3 - 1.0 / x + x ** 2 + 2.0 ** x - (4.0 - x) + (-x) + (+x) + abs(x) + x / 2)

    x = backend.asarray([0.5, 1.5])
    g = backend.to_numpy(gpuad.grad(f)(x))
    xn = np.array([0.5, 1.5])
    np.testing.assert_allclose(g, 2 + 3 + 1 / xn ** 2 + 2 * xn + np.log(2) * 2 ** xn + 1 - 1 + 1 + 1 + 0.5, rtol=1e-12)


def test_comparisons_are_plain_arrays_and_control_flow(backend):
    def f(x):
        mask = x > 0.0
        assert not isinstance(mask, gpuad._core.Tracer)
        n = int(xp.sum(xp.astype(mask, backend.xp.int64)))
        return xp.sum(xp.where(mask, x, 0.0)) * n

    g = gpuad.grad(f)(backend.asarray([-1.0, 2.0, 3.0]))
    np.testing.assert_allclose(backend.to_numpy(g), [0.0, 2.0, 2.0])


def test_getitem_basic_integer_array_and_mask(backend):
    x = backend.asarray(np.arange(12.0).reshape(3, 4))
    rows = backend.asarray([0, 2, 0], dtype="int64")
    cols = backend.asarray([1, 1, 1], dtype="int64")
    mask = x > 5.0
    assert mask.dtype == backend.xp.bool

    g1 = gpuad.grad(lambda x: xp.sum(x[1:, ::2] * 2.0))(x)
    exp1 = np.zeros((3, 4))
    exp1[1:, ::2] = 2.0
    np.testing.assert_array_equal(backend.to_numpy(g1), exp1)

    g2 = gpuad.grad(lambda x: xp.sum(x[rows, cols] ** 2))(x)
    exp2 = np.zeros((3, 4))
    xn = np.arange(12.0).reshape(3, 4)
    exp2[0, 1] = 2 * 2 * xn[0, 1]  # (0, 1) picked twice: gradients accumulate
    exp2[2, 1] = 2 * xn[2, 1]
    np.testing.assert_array_equal(backend.to_numpy(g2), exp2)

    g3 = gpuad.grad(lambda x: xp.sum(x[mask]))(x)
    np.testing.assert_array_equal(backend.to_numpy(g3), (xn > 5.0).astype(float))

    g4 = gpuad.grad(lambda x: x[1, 2] * x[0, 0])(x)
    exp4 = np.zeros((3, 4))
    exp4[1, 2], exp4[0, 0] = xn[0, 0], xn[1, 2]
    np.testing.assert_array_equal(backend.to_numpy(g4), exp4)


def test_setitem_is_functional_and_differentiable(backend):
    def f(x, v):
        y = x * 1.0
        saved = y
        y[1] = v * 3.0
        y[0:1] = y[0:1] * y[2:3]
        return xp.sum(y * y), saved

    x = backend.asarray([1.0, 2.0, 4.0])
    v = backend.asarray(5.0)
    (val, saved), (gx, gv) = gpuad.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, v)
    # y = [x0*x2, 3v, x2]; sum y^2 = x0^2 x2^2 + 9 v^2 + x2^2
    assert float(val) == 16 + 225 + 16
    np.testing.assert_allclose(backend.to_numpy(gx), [2 * 1 * 16, 0.0, 2 * 1 * 4 + 2 * 4], rtol=1e-14)
    assert float(gv) == 18 * 5
    _, t = gpuad.jvp(lambda x, v: f(x, v)[0], (x, v), (backend.asarray([0.0, 0.0, 0.0]), backend.asarray(1.0)))
    assert float(t) == 90.0


def test_numpy_conversion_refused(backend):
    def f(x):
        np.asarray(x)
        return xp.sum(x)

    with pytest.raises(TypeError, match="cannot be converted to a NumPy array"):
        gpuad.grad(f)(backend.asarray([1.0]))
    with pytest.raises(TypeError):
        gpuad.grad(lambda x: np.sum(np.exp(x)))(backend.asarray([1.0]))


def test_float_bool_int_read_values(backend):
    vals = {}

    def f(x):
        vals["f"], vals["b"], vals["i"] = float(x[0]), bool(x[0] > 1.0), int(x[1])
        return xp.sum(x)

    gpuad.grad(f)(backend.asarray([1.5, 3.0]))
    assert vals == {"f": 1.5, "b": True, "i": 3}


def test_storing_a_traced_value_into_a_plain_array_is_refused():
    # NOTE [no silent stores]: NumPy's element store calls __float__, which would drop the derivative.
    import array

    def into_numpy(a):
        z = np.zeros(3)
        z[0] = a[1]
        return xp.sum(z * a)

    def into_stdlib(a):
        z = array.array("d", [0.0])
        z[0] = a[1]
        return xp.sum(a)

    a = np.array([0.3, -1.2, 2.0])
    with pytest.raises(ValueError) as info:
        gpuad.grad(into_numpy)(a)
    assert "would drop its derivative" in str(info.value.__cause__)
    with pytest.raises(TypeError, match=r"stored into an element of a plain array through float\(\)"):
        gpuad.jvp(into_stdlib, (a,), (a,))

    def on_purpose(a):
        z = np.zeros(3)
        z[0] = gpuad.stop_gradient(a[1])       # explicit: no derivative through z
        z[1] = int(xp.argmax(a))                # an integer value carries none anyway
        return xp.sum(z * a) + float(a[2])      # float() for a value stays allowed

    np.testing.assert_array_equal(gpuad.grad(on_purpose)(a), [-1.2, 2.0, 0.0])


    def as_the_message_says(a):  # a traced array takes the write, with its derivative
        y = a * 0.0
        y[0] = a[1] * 2.0
        return xp.sum(y ** 2)

    np.testing.assert_array_equal(gpuad.grad(as_the_message_says)(a), [0.0, 8 * a[1], 0.0])


def test_iteration_and_len(backend):
    def f(x):
        assert len(x) == 3
        return sum(r * r for r in x)

    g = gpuad.grad(f)(backend.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(backend.to_numpy(g), [2.0, 4.0, 6.0])


def test_plain_array_on_the_left_defers_to_the_tracer(backend):
    # NumPy/CuPy defer via __array_ufunc__ = None; array-api-strict is adapted
    # by its backend module (NOTE [strict defers to tracers]).
    W = backend.asarray([[1.0, 2.0], [3.0, 4.0]])
    b = backend.asarray([0.5, -0.5])

    def f(x):
        y = W @ x + b
        return xp.sum(b * y - xp.where(b < y, 0.0 * y, b))

    g = gpuad.grad(f)(backend.asarray([1.0, 1.0]))
    np.testing.assert_allclose(backend.to_numpy(g), np.array([[1.0, 2.0], [3.0, 4.0]]).T @ [0.5, -0.5])


def test_dtype_functions_follow_the_arrays_backend(backend):
    seen = {}

    def f(x):
        seen["float"] = xp.isdtype(x.dtype, "real floating") and not xp.isdtype(x.dtype, "integral")
        seen["rt"] = xp.result_type(x, 1.0) == x.dtype
        seen["eps"] = float(xp.finfo(x.dtype).eps)
        seen["cast"] = xp.can_cast(x.dtype, backend.xp.float64)
        return xp.sum(x)

    gpuad.grad(f)(backend.asarray([1.0], dtype="float32"))
    assert seen == {"float": True, "rt": True, "eps": float(np.finfo(np.float32).eps), "cast": True}
    assert xp.isdtype(backend.xp.int8, ("bool", "signed integer"))
    assert xp.iinfo(backend.xp.int16).max == 32767
    with pytest.raises(ValueError, match="unknown kind"):
        xp.isdtype(backend.xp.int8, "whole number")


def test_namespace_exports_the_standard():
    from gpuad._ops_names import STANDARD_NAMES

    missing = [n for n in STANDARD_NAMES if not hasattr(gpuad.xp, n)]
    assert not missing
    assert gpuad.xp.__array_api_version__ == "2024.12"
    for n in ("float32", "int64", "bool", "e", "pi", "inf", "nan", "newaxis", "linalg"):
        assert hasattr(gpuad.xp, n)
    for n in ("inv", "solve", "det", "slogdet", "cholesky", "eigh", "svd", "qr", "vector_norm",
              "matrix_norm", "outer", "trace", "diagonal", "cross", "matrix_power", "svdvals", "eigvalsh",
              "tensordot", "vecdot", "matmul", "matrix_transpose", "pinv", "matrix_rank"):
        assert hasattr(gpuad.xp.linalg, n), n
