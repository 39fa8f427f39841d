"""Bad input to the array ops and the transforms: a clear error naming the op, the argument and
the shapes/dtypes/devices -- never a bare backend message, an internal AttributeError, or a
silently wrong answer.  (tests/test_errors.py has the older cases.)"""

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad.testing import check_grads

# --- errors raised inside a backend are explained by the engine ------------------------------


def test_matmul_shape_mismatch_names_op_and_both_shapes(backend):
    a = backend.asarray(np.ones((2, 3)))
    b = backend.asarray(np.ones((4, 5)))
    msg = r"^matmul: .*argument 0: .*shape \(2, 3\) and dtype .*float64.*argument 1: .*shape \(4, 5\)"
    with pytest.raises(ValueError, match=msg):
        xp.matmul(a, b)
    with pytest.raises(ValueError, match=msg):  # recorded on the tape: the same message
        gpuad.grad(lambda a: xp.sum(a @ b))(a)
    with pytest.raises(ValueError, match=msg):  # forward mode
        gpuad.jvp(lambda a: a @ b, (a,), (a,))
    with pytest.raises(ValueError, match=r"^matmul: .*shape \(2, 2, 3\).*shape \(4, 5\)"):
        xp.matmul(backend.asarray(np.ones((2, 2, 3))), b)  # the stacked @ matrix path


def test_broadcast_mismatch_names_op_and_shapes(backend):
    a = backend.asarray(np.ones((2, 3)))
    b = backend.asarray(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"^add: .*argument 0: .*shape \(2, 3\).*argument 1: .*shape \(4, 5\)"):
        gpuad.grad(lambda a: xp.sum(a + b))(a)
    with pytest.raises(ValueError, match=r"^broadcast_to: .*shape \(2, 3\).*shape=\(4, 3\)"):
        xp.broadcast_to(a, (4, 3))


def test_reshape_errors(backend):
    a = backend.asarray(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^reshape: .*size 6.*argument 0: .*shape \(2, 3\).*shape=\(4,\)"):
        gpuad.grad(lambda a: xp.sum(xp.reshape(a, (4,))))(a)
    with pytest.raises(ValueError, match=r"reshape: only one dimension can be -1, got shape \(-1, -1\) .*\(2, 3\)"):
        xp.reshape(a, (-1, -1))  # was: NumPy's 'cannot reshape ... into shape (6,6)'
    with pytest.raises(TypeError, match="reshape: shape must be a tuple of ints, got NoneType"):
        xp.reshape(a, None)
    with pytest.raises(TypeError, match="broadcast_to: shape must be a tuple of ints, got float"):
        xp.broadcast_to(a, 3.0)


def test_indexing_errors_name_op_shape_and_key(backend):
    x = backend.asarray([0.0, 1.0, 2.0])
    with pytest.raises(IndexError, match=r"^getitem: .*shape \(3,\).*key=\(0, 0\)"):
        gpuad.grad(lambda x: x[0, 0])(x)

    def write(x, k, v):
        x = x * 1.0
        x[k] = v
        return xp.sum(x)

    with pytest.raises(ValueError, match=r"^index_set: .*argument 0: .*shape \(3,\).*argument 1: .*shape \(2,\)"):
        gpuad.grad(lambda x: write(x, slice(0, 1), backend.asarray([1.0, 2.0])))(x)


def test_out_of_bounds_index_names_op_and_shape():
    x = np.asarray([0.0, 1.0, 2.0])
    with pytest.raises(IndexError, match=r"^getitem: index 5 .*shape \(3,\).*key=\(5,\)"):
        gpuad.grad(lambda x: x[5])(x)
    with pytest.raises(IndexError, match=r"^take: .*shape \(3,\).*indices=<array of shape \(1,\)"):
        gpuad.grad(lambda x: xp.sum(xp.take(x, np.asarray([7]))))(x)


def test_non_array_argument_to_an_op_is_a_type_error():
    a = np.ones((2, 3))
    # was: AttributeError "'NoneType' object has no attribute 'ndim'" from gpuad's matmul
    with pytest.raises(TypeError, match=r"^matmul: .*argument 0: NoneType None; argument 1: .*shape \(2, 3\)"):
        xp.matmul(None, a)
    with pytest.raises(TypeError, match=r"^sin: .*argument 0: NoneType None"):
        xp.sin(None)


def test_backend_exception_type_is_kept(backend):
    import numpy.linalg

    with pytest.raises(numpy.linalg.LinAlgError, match=r"^linalg_inv: Singular matrix .*shape \(2, 2\)"):
        xp.linalg.inv(backend.asarray(np.zeros((2, 2))))


def test_gpuad_errors_are_not_reexplained():
    with pytest.raises(TypeError, match=r"^add: cannot mix arrays from two array libraries"):
        import array_api_strict

        xp.add(np.ones(2), array_api_strict.ones(2))


# --- wrappers: axes, shapes and integer parameters ------------------------------------------


def test_axis_of_the_wrong_type(backend):
    a = backend.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match="sum: axis must be None, an int or a tuple of ints|sum: axis must be an int"):
        xp.sum(a, axis=1.0)  # was: "'float' object is not iterable"
    with pytest.raises(TypeError, match="mean: axis must be an int, got str 'x'"):
        xp.mean(a, axis=("x",))
    with pytest.raises(TypeError, match="flip: axis must be an int, got float 0.0"):
        xp.flip(a, axis=(0.0,))
    # NumPy integers are still axes
    assert tuple(xp.sum(a, axis=np.int64(1)).shape) == (2,)
    assert tuple(xp.sum(a, axis=(np.int64(0),)).shape) == (3,)


def test_expand_dims_repeated_axis(backend):
    a = backend.asarray(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expand_dims: repeated axis in \(0, 0\) \(x has shape \(2, 3\)\)"):
        xp.expand_dims(a, axis=(0, 0))  # was: a silent (1, 1, 2, 3)


def test_concat_and_stack_entries_must_be_arrays(backend):
    a = backend.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"concat: array 1 is a list, not an array"):
        xp.concat([a, [[1.0, 2.0, 3.0]]])
    with pytest.raises(TypeError, match=r"stack: array 0 is a float, not an array"):
        xp.stack([1.0, a])
    with pytest.raises(ValueError, match=r"concat: zero-dimensional arrays cannot be concatenated \(shapes \(\), \(\)"):
        xp.concat([backend.asarray(1.0), backend.asarray(2.0)])


def test_float_parameters_are_refused_not_truncated(backend):
    v = backend.asarray([0.0, 1.0, 2.0])
    m = backend.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"tile: repetitions must be a tuple of ints, got \(2.5,\)"):
        xp.tile(v, (2.5,))  # was: silently tiled twice
    with pytest.raises(TypeError, match=r"roll: shift must be an int or a tuple of ints, got \(1.5,\)"):
        xp.roll(v, (1.5,), axis=0)  # was: silently shifted by 1
    with pytest.raises(TypeError, match="tril: k must be an int, got float 0.5"):
        xp.tril(m, k=0.5)
    with pytest.raises(TypeError, match="diagonal: offset must be an int, got float 0.5"):
        xp.linalg.diagonal(m, offset=0.5)
    with pytest.raises(TypeError, match="repeat: repeats must be an int or an integer array, got float 2.5"):
        xp.repeat(v, 2.5)
    assert tuple(xp.tril(m, k=np.int64(1)).shape) == (2, 3)


def test_meshgrid_checks_its_inputs(backend):
    v = backend.asarray([0.0, 1.0])
    with pytest.raises(ValueError, match=r"meshgrid: array 1 must be 1-D, got shape \(2, 3\)"):
        xp.meshgrid(v, backend.asarray(np.ones((2, 3))))
    with pytest.raises(ValueError, match="meshgrid: indexing must be 'xy' or 'ij', got 'yx'"):
        xp.meshgrid(v, v, indexing="yx")  # was: silently 'ij'


def test_creation_errors_name_the_function_and_arguments():
    with pytest.raises(ValueError, match=r"^zeros: .*negative.*\(shape=\(-1, 2\)"):
        xp.zeros((-1, 2))
    with pytest.raises(ValueError, match=r"^eye: .*n_rows=-1"):
        xp.eye(-1)
    with pytest.raises(ZeroDivisionError, match=r"^arange: .*step=0"):
        xp.arange(0, 10, 0)
    with pytest.raises(ValueError, match=r"^full_like: .*x=<array of shape \(3,\) and dtype float64>, fill_value='a'"):
        xp.full_like(np.zeros(3), "a")


def test_where_needs_a_boolean_condition():
    # The standard requires a bool condition; NumPy read a float one for its truth
    # value, silently (and gpuad followed it, with a zero derivative for the condition).
    x = np.asarray([0.0, 1.0, 2.0])
    msg = r"^where: argument condition must have a boolean dtype, got dtype float64 \(shape \(3,\)\)"
    with pytest.raises(TypeError, match=msg):
        xp.where(x, x, 0.0)
    with pytest.raises(TypeError, match=msg):
        gpuad.grad(lambda x: xp.sum(xp.where(x, x * x, 0.0)))(x)
    with pytest.raises(TypeError, match=msg):
        gpuad.jvp(lambda x: xp.where(x, x * x, 0.0), (x,), (np.ones(3),))
    with pytest.raises(TypeError, match=r"^where: argument condition must have a boolean dtype, got dtype int64"):
        xp.where(np.asarray([1, 0]), 1.0, np.zeros(2))
    with pytest.raises(TypeError, match=r"^where: argument condition must be a boolean array, got int 1"):
        xp.where(1, x, 0.0)
    # a comparison is the way to write it, and differentiates as before
    np.testing.assert_allclose(gpuad.grad(lambda x: xp.sum(xp.where(x != 0, x * x, 0.0)))(x), [0.0, 2.0, 4.0])
    np.testing.assert_allclose(xp.where(True, x, 0.0), x)


# --- transforms -------------------------------------------------------------------------------


@pytest.mark.parametrize("argnums", [(0, 0), (1, -1)])
def test_repeated_argnums_are_refused(argnums):
    v = np.asarray([1.0, 2.0])
    # was: a silent zero gradient for the first copy
    with pytest.raises(ValueError, match=r"grad: argnums .* names the same argument twice"):
        gpuad.grad(lambda x, y: xp.sum(x * y), argnums=argnums)(v, v)
    with pytest.raises(ValueError, match=r"jacrev: argnums .* names the same argument twice"):
        gpuad.jacrev(lambda x, y: x * y, argnums=argnums)(v, v)
    with pytest.raises(ValueError, match=r"jacfwd: argnums .* names the same argument twice"):
        gpuad.jacfwd(lambda x, y: x * y, argnums=argnums)(v, v)


@pytest.mark.parametrize("argnums", [0.0, None, "0", True, (0, 1.0)])
def test_argnums_of_the_wrong_type(argnums):
    v = np.asarray([1.0, 2.0])
    # True was silently argument 1 (e.g. grad(f, True) meant as has_aux)
    with pytest.raises(TypeError, match=r"grad: argnums must be an int or a tuple of ints, got "):
        gpuad.grad(lambda x, y: xp.sum(x * y), argnums=argnums)(v, v)


def test_grad_of_a_complex_output_is_refused():
    # was: a ComplexWarning and the real part's gradient
    with pytest.raises(TypeError, match="grad: the function returned dtype complex128; grad needs a real output"):
        gpuad.grad(lambda x: xp.sum(x) * (1 + 1j))(np.asarray([1.0, 2.0]))


def test_jvp_tangent_on_another_library_or_device():
    import array_api_strict as aas

    x = aas.asarray([1.0, 2.0], dtype=aas.float64)
    t1 = aas.asarray([1.0, 1.0], dtype=aas.float64, device=aas.Device("device1"))
    # was: accepted, the tangent computed on another device than the primal
    with pytest.raises(ValueError, match=r"jvp: tangent 0 does not match its primal: cannot mix arrays on two devices"
                                         r".*device1.*CPU_DEVICE"):
        gpuad.jvp(lambda x: x * 2.0, (x,), (t1,))
    with pytest.raises(TypeError, match=r"jvp: tangent 0 does not match its primal: .*two array libraries.*numpy"):
        gpuad.jvp(lambda x: x * 2.0, (x,), (np.ones(2),))
    with pytest.raises(ValueError, match=r"jvp: tangent 0 does not match its primal: .*device1"):
        gpuad.hvp(lambda x: xp.sum(x ** 3), (x,), (t1,))


def test_vjp_cotangent_errors():
    import array_api_strict as aas

    _, f_vjp = gpuad.vjp(lambda x: xp.sum(x * 2.0), np.asarray([1.0, 2.0]))
    # was: AttributeError "'float' object has no attribute 'shape'"
    with pytest.raises(TypeError, match=r"vjp_fn: cotangent 0 is a float, not an array; the output has shape \(\)"):
        f_vjp(1.0)
    x = aas.asarray([1.0, 2.0], dtype=aas.float64)
    _, f_vjp = gpuad.vjp(lambda x: x * 2.0, x)
    with pytest.raises(ValueError, match=r"vjp_fn: cotangent 0 does not match the output: .*two devices.*device1"):
        f_vjp(aas.asarray([1.0, 1.0], dtype=aas.float64, device=aas.Device("device1")))


def test_hvp_needs_tuples():
    v = np.asarray([1.0, 2.0, 3.0])
    # was: f called with three scalars
    with pytest.raises(TypeError, match=r"hvp: primals and tangents must be tuples .*got ndarray and ndarray"):
        gpuad.hvp(lambda x: xp.sum(x * x), v, v)


def test_check_grads_argument_errors():
    v = np.asarray([0.1, 0.2])
    f = lambda x: x * x  # noqa: E731
    with pytest.raises(TypeError, match=r"check_grads: args must be a tuple .*got ndarray"):
        check_grads(f, v)
    for order in (0, -1, 1.5):  # order 0 used to check first order anyway; 1.5 recursed to 0.5
        with pytest.raises(ValueError, match=rf"check_grads: order must be a positive int, got {order}"):
            check_grads(f, (v,), order=order)
    with pytest.raises(ValueError, match="check_grads: eps must be positive, got 0.0"):
        check_grads(f, (v,), eps=0.0)  # was: silently the default step
    with pytest.raises(ValueError, match="check_grads: modes is empty"):
        check_grads(f, (v,), modes=())  # was: a check that checked nothing
    with pytest.raises(ValueError, match="check_grads: f returned None, which has no arrays to check"):
        check_grads(lambda x: None, (v,))
    check_grads(f, (v,), modes="fwd")  # one mode as a string (was: "unknown mode 'f'")


# --- custom rules -------------------------------------------------------------------------------


def _doubler(bwd):
    @gpuad.custom_vjp
    def f(x):
        return x * 2.0

    f.defvjp(lambda x: (x * 2.0, None), bwd)
    return f


@pytest.mark.parametrize("bwd, shape", [
    (lambda res, g: (g[:2],), r"\(2,\)"),
    (lambda res, g: (xp.ones((2, 3)),), r"\(2, 3\)"),  # was: silently summed to (3,)
    (lambda res, g: (xp.ones((1,)),), r"\(1,\)"),
])
def test_custom_vjp_cotangent_shape_is_checked(bwd, shape):
    f = _doubler(bwd)
    x = np.asarray([1.0, 2.0, 3.0])
    msg = (rf"custom_vjp\(f\): bwd's cotangent for input leaf 0 has shape {shape} and dtype float64, "
           r"but that input has shape \(3,\) and dtype float64")
    with pytest.raises(ValueError, match=msg):
        gpuad.grad(lambda x: xp.sum(f(x)))(x)
    with pytest.raises(ValueError, match=msg):  # forward mode transposes bwd
        gpuad.jvp(f, (x,), (x,))


def test_custom_vjp_cotangent_type_and_dtype_are_checked():
    x = np.asarray([1.0, 2.0, 3.0])
    f = _doubler(lambda res, g: (1.0,))
    with pytest.raises(TypeError, match=r"custom_vjp\(f\): bwd's cotangent for input leaf 0 is a float, not an array"):
        gpuad.grad(lambda x: xp.sum(f(x)))(x)  # was: AttributeError from the engine
    f = _doubler(lambda res, g: (np.ones(3, dtype=np.int64),))
    with pytest.raises(ValueError, match=r"custom_vjp\(f\): .*dtype int64, but that input has .*dtype float64"):
        gpuad.grad(lambda x: xp.sum(f(x)))(x)  # was: silently cast


def test_custom_jvp_tangent_is_checked():
    @gpuad.custom_jvp
    def k(x):
        return xp.sin(x)

    x = np.asarray([0.1, 0.2, 0.3])
    k.defjvp(lambda p, t: (xp.sin(p[0]), t[0][:2]))
    msg = r"custom_jvp\(k\): the JVP rule's tangent output 0 has shape \(2,\) .*the output has shape \(3,\)"
    with pytest.raises(ValueError, match=msg):
        gpuad.jvp(k, (x,), (x,))  # was: a (2,) tangent for a (3,) output
    with pytest.raises(ValueError, match=msg):
        gpuad.grad(lambda x: xp.sum(k(x)))(x)
    k.defjvp(lambda p, t: (xp.sin(p[0]), 1.0))
    with pytest.raises(TypeError, match=r"custom_jvp\(k\): the JVP rule's tangent output 0 is a float, not an array"):
        gpuad.jvp(k, (x,), (x,))
    k.defjvp(lambda p, t: (xp.sin(p[0]), xp.astype(t[0] * xp.cos(p[0]), "float32")))
    _, t = gpuad.jvp(k, (x,), (x,))  # another floating dtype is cast, like a primitive's
    assert t.dtype == np.float64


def test_custom_decorator_misuse():
    with pytest.raises(TypeError, match="custom_vjp: decorates a function, got int 3"):
        gpuad.custom_vjp(3)
    f = _doubler(lambda res, g: (g * 2.0,))
    with pytest.raises(TypeError, match=r"custom_vjp\(f\): keyword arguments are not supported \(got x\)"):
        f(x=np.ones(2))


def test_a_non_differentiable_variant_is_reported_under_the_op_called():
    with pytest.raises(TypeError, match=r"^astype: dtype 'float7' has no equivalent"):
        gpuad.xp.astype(np.ones(3), "float7")


@pytest.mark.parametrize("call,match", [
    (lambda: xp.sum([1.0, 2.0]), r"^sum: argument 0 must be an array, got list \[1\.0, 2\.0\]; convert it with "
                                 r"xp\.asarray"),
    (lambda: xp.reshape((1, 2), (2,)), r"^reshape: argument 0 must be an array, got tuple"),
    (lambda: xp.mean(None), r"^mean: argument 0 must be an array, got NoneType"),
    (lambda: xp.tensordot(np.ones(2), [1.0, 2.0], axes=1), r"^tensordot: argument 1 must be an array, got list"),
    (lambda: xp.linalg.vecdot(np.ones(2), [1.0, 2.0]), r"^vecdot: argument 1 must be an array, got list"),
    (lambda: xp.expand_dims([1.0], axis=0), r"^expand_dims: argument 0 must be an array, got list"),
])
def test_a_non_array_argument_names_the_function(call, match):
    # NOTE [non-array arguments] in gpuad/xp/__init__.py
    with pytest.raises(TypeError, match=match):
        call()


def test_the_wrapped_functions_are_gpuad_xp_s_own_everywhere():
    assert xp.tensordot is xp.linalg.tensordot and xp.vecdot is xp.linalg.vecdot
    assert xp.sum.__doc__ == gpuad.ops.sum.__doc__ and xp.sum.__name__ == "sum"
    assert float(xp.sum(np.ones(3))) == 3.0
