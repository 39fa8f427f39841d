"""The CUDA kernels, gpuad's generic implementations and the math agree.

``kernel_cases.py`` states each kernel's function as a NumPy reference.  Here:

* on every backend, the reference equals what gpuad computes through its
  rules (``gpuad.vjp`` of the activation, an optimiser step), and, where the
  kernel's fused primitive exists, its one-dispatch ``impl`` and its
  ``composite``.  On NumPy and array-api-strict those are the generic
  implementations; on CuPy the fused primitives dispatch to the kernels;
* ``test_cuda_kernels.py`` runs the CUDA snippets themselves (on the CPU)
  against the same references;
* with a GPU (``@pytest.mark.gpu``), every CuPy kernel runs against the
  reference and the generic path;
* without one, a fake ``cupy`` checks what ``register_overrides`` installs and
  how the kernel wrappers pass scalars and dtypes.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest
from gpuad.backends import cupy as cupy_backend
from gpuad.backends.cupy_kernels import KERNELS, by_primitive
from kernel_cases import CASES, as_tuple, tolerance

import gpuad
from gpuad import _backend

IDS = [c.id for c in CASES]


def _close(got, want, dtype, what):
    rtol, atol = tolerance(dtype)
    for g, w in zip(as_tuple(got), as_tuple(want), strict=True):
        np.testing.assert_allclose(np.asarray(g, dtype="float64"), np.asarray(w, dtype=dtype).astype("float64"),
                                   rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_equals_gpuad_rules(backend, case, dtype):
    args, params, x = case.sample(np.random.default_rng(2), dtype)
    got = case.via_rules(lambda a: backend.asarray(a, dtype=None), args, params, x)
    _close(tuple(backend.to_numpy(r) for r in as_tuple(got)), case.ref(*args, **params), dtype, case.id)


def test_every_kernel_binds_a_declared_primitive():
    # No kernel waits for its primitive: each one replaces a registered implementation.
    for k in KERNELS:
        importlib.import_module(k.declared_in)
        assert k.primitive in gpuad.PRIMITIVES, f"kernel {k.name}: no primitive {k.primitive!r}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_equals_fused_impl_and_composite(cpu_backend, case):
    # The primitive's one-dispatch impl, and its composite where it has one
    # (gradient primitives with rules of their own, such as nn_gelu_tanh_grad,
    # have none).
    prim = gpuad.PRIMITIVES[case.primitive]
    args, params, _ = case.sample(np.random.default_rng(3), "float64")
    bargs = [cpu_backend.asarray(a, dtype=None) for a in args]
    want = case.ref(*args, **params)
    with case.errstate():
        outs = [("impl", prim(*bargs, **params))]
        if prim.composite is not None:
            outs.append(("composite", prim.composite(*bargs, **params)))
    for what, out in outs:
        _close(tuple(cpu_backend.to_numpy(r) for r in as_tuple(out)), want, "float64", f"{case.id} {what}")


# --- on a GPU ---------------------------------------------------------------------------
_usable, _why = cupy_backend.probe()


@pytest.mark.gpu
@pytest.mark.skipif(not _usable, reason=f"CuPy backend not usable: {_why}")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cupy_kernel_matches_reference_and_generic_path(case, dtype):
    import array_api_compat.cupy as cxp
    import cupy

    k = by_primitive()[case.primitive]

    def generic(*a, **p):
        raise AssertionError(f"{k.name} fell back to the generic implementation")

    args, params, x = case.sample(np.random.default_rng(4), dtype)
    dargs = [cupy.asarray(a) for a in args]
    got = cupy_backend._kernel_impl(k, generic)(cxp, *dargs, **params)
    got = tuple(r.get() for r in as_tuple(got))
    assert all(r.dtype == np.dtype(dtype) for r in got)
    _close(got, case.ref(*args, **params), dtype, f"{case.id} kernel vs reference")
    generic_path = case.via_rules(cupy.asarray, args, params, x)
    _close(got, tuple(r.get() for r in as_tuple(generic_path)), dtype, f"{case.id} kernel vs gpuad rules")
    prim = gpuad.PRIMITIVES.get(case.primitive)
    if prim is not None:  # registered: the primitive itself dispatches to the kernel
        _backend._attach_backend(cxp)  # registers the overrides (once)
        assert prim.impls[cxp].__name__ == f"{k.name}_impl"
        _close(tuple(r.get() for r in as_tuple(prim(*dargs, **params))), got, dtype, f"{case.id} dispatch")


# --- without a GPU: a fake cupy -------------------------------------------------------------
class _FakeArray:
    def __init__(self, dtype, shape=(3,)):
        self.dtype = np.dtype(dtype)
        self.shape = shape


def _fake_cupy(monkeypatch):
    built = []

    class ElementwiseKernel:
        def __init__(self, in_params, out_params, operation, name, preamble=""):
            self.name = name
            self.calls = []
            built.append(self)

        def __call__(self, *args):
            self.calls.append(args)
            return ("kernel", self.name)

    cupy = types.ModuleType("cupy")
    cupy.ndarray = _FakeArray
    cupy.ElementwiseKernel = ElementwiseKernel
    cupy.sum = lambda a, axis=None, keepdims=False: _FakeArray(a.dtype, (1,))
    cupyx = types.ModuleType("cupyx")
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setattr(cupy_backend, "_built", {})
    return cupy, built


def test_register_overrides_installs_a_kernel_for_every_existing_primitive(monkeypatch):
    _fake_cupy(monkeypatch)
    ns = types.ModuleType("fake_cupy_namespace")
    try:
        cupy_backend.register_overrides(ns)
        assert ns in gpuad.PRIMITIVES["index_add"].impls
        for k in KERNELS:
            prim = gpuad.PRIMITIVES.get(k.primitive)
            if prim is None:  # not declared yet: skipped, no error
                continue
            assert prim.impls[ns].__name__ == f"{k.name}_impl"
            assert prim.impl_default is not prim.impls[ns]
    finally:
        for prim in gpuad.PRIMITIVES.values():
            prim.impls.pop(ns, None)


def test_kernel_wrapper_passes_scalars_as_T_and_falls_back_otherwise(monkeypatch):
    cupy, built = _fake_cupy(monkeypatch)
    fallbacks = []

    def generic(xp, *a, **p):
        fallbacks.append(a)
        return "generic"

    tanh = cupy_backend._kernel_impl(by_primitive()["tanh_grad"], generic)
    g32, a32 = _FakeArray("float32"), _FakeArray("float32")
    assert tanh(cupy, g32, a32) == ("kernel", "gpuad_tanh_grad")
    assert tanh(cupy, 2.0, a32) == ("kernel", "gpuad_tanh_grad")  # Python scalar -> float32 scalar
    scalar = built[0].calls[-1][0]
    assert type(scalar) is np.float32 and scalar == 2.0
    assert len(built) == 1  # the ElementwiseKernel is built once and cached
    for bad in [(g32, _FakeArray("float64")), (_FakeArray("float16"), _FakeArray("float16")),
                (_FakeArray("int32"), _FakeArray("int32")), (2.0, 3.0), (True, a32)]:
        assert tanh(cupy, *bad) == "generic"
    assert len(fallbacks) == 5

    adam = cupy_backend._kernel_impl(by_primitive()["adam_update"], generic)
    p = [_FakeArray("float64") for _ in range(4)]
    lr = [_FakeArray("float32", ()) for _ in range(3)]
    hyper = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "l2": 0.0, "weight_decay": 0.01}
    assert adam(cupy, *p, *lr, **hyper) == ("kernel", "gpuad_adam_update")
    kargs = built[-1].calls[-1]
    assert kargs[:7] == (*p, *lr)  # S (lr, c1, c2) keeps float32 while T is float64
    assert [type(s) for s in kargs[7:]] == [np.float64] * 7
    assert kargs[8] == np.float64(1.0 - 0.9)  # 1 - b1 formed in double, rounded once
    assert adam(cupy, *p, lr[0], _FakeArray("float64", ()), lr[2], **hyper) == "generic"  # S mixed

    for name in ("nn_silu_grad", "nn_gelu_tanh_grad"):  # (g, x) passed as they are
        kern = cupy_backend._kernel_impl(by_primitive()[name], generic)
        assert kern(cupy, g32, a32) == ("kernel", f"gpuad_{name}")
        assert built[-1].calls[-1] == (g32, a32)

    lsm = cupy_backend._kernel_impl(by_primitive()["nn_log_softmax_grad"], generic)
    assert lsm(cupy, g32, a32, axis=(0,)) == ("kernel", "gpuad_nn_log_softmax_grad")
    assert len(built[-1].calls[-1]) == 3  # g, ans and the pre-reduced sum
