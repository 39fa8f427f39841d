"""Compile check of every CUDA kernel gpuad ships, without a GPU.

For float and double, all kernels of ``gpuad.backends.cupy_kernels`` go into
one CUDA translation unit shaped like CuPy's generated code
(``cuda_source.translation_unit``), compiled to PTX by ``nvcc`` (NVRTC when
there is no nvcc; skipped with the reason when neither exists).  A syntax or
type error fails.  The checker is checked too: broken kernels must fail.

The same operations are then compiled as host C++ (g++) and *run* on the CPU
against the NumPy references of ``kernel_cases.py``, so the CUDA snippets are
shown to compute the right function, not only to compile.  The float32 host
build uses ``-Wdouble-promotion -Werror``: a float kernel must not compute in
double through a stray ``0.5`` literal.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cuda_source import (
    compile_cuda,
    find_compiler,
    find_compilers,
    instance_name,
    instances,
    nvcc_flags,
    nvcc_version,
    nvrtc_options,
    parse_params,
    ptx_entries,
    translation_unit,
)
from gpuad.backends.cupy_kernels import KERNELS, Kernel, by_primitive
from kernel_cases import CASES, as_tuple, tolerance

import gpuad

DTYPES = {"float": "float32", "double": "float64"}
COMPILER = find_compiler()
#: nvcc and NVRTC both run when both are here; at least the first found runs.
COMPILERS = find_compilers() or [COMPILER]
if COMPILER[0] is None and os.environ.get("GPUAD_REQUIRE_CUDA_COMPILER") == "1":
    # ci/cpu.sh's compile-check step: a missing compiler must fail, not skip.
    raise RuntimeError(f"GPUAD_REQUIRE_CUDA_COMPILER=1 but {COMPILER[1]}")
needs_compiler = pytest.mark.skipif(COMPILER[0] is None, reason=f"no CUDA compiler: {COMPILER[1]}")
GXX = shutil.which("g++") or shutil.which("c++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no host C++ compiler (g++) to run the kernels on the CPU")


# --- the kernel table -----------------------------------------------------------------
def test_every_fused_primitive_has_a_kernel():
    fused = {n for n, p in gpuad.PRIMITIVES.items() if p.composite is not None}
    assert fused <= set(by_primitive()), sorted(fused - set(by_primitive()))


def test_kernel_table_is_well_formed():
    assert len({k.name for k in KERNELS}) == len(KERNELS)
    assert len(by_primitive()) == len(KERNELS)
    for k in KERNELS:
        assert re.fullmatch(r"[A-Za-z_]\w*", k.name), k.name
        ins = [n for _, _, n in parse_params(k.in_params)]
        outs = [n for _, _, n in parse_params(k.out_params)]
        assert len(set(ins + outs)) == len(ins + outs), k.name
        assert set(k.scalars) <= set(ins), k.name
        assert all(t == "T" for _, t, _ in parse_params(k.out_params)), k.name
        if k.pack is not None:  # pack takes xp, then the primitive's arguments
            assert next(iter(inspect.signature(k.pack).parameters)) == "xp"


def test_kernel_table_imports_without_cupy():
    code = "import sys, gpuad.backends.cupy_kernels; assert 'cupy' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_every_kernel_has_a_reference_case():
    assert {c.primitive for c in CASES} == set(by_primitive())


# --- compile check -------------------------------------------------------------------------
@needs_compiler
@pytest.mark.parametrize("compiler", COMPILERS, ids=[c[0] or "none" for c in COMPILERS])
@pytest.mark.parametrize("ctype", sorted(DTYPES))
def test_kernels_compile(ctype, compiler):
    ok, out = compile_cuda(translation_unit(KERNELS, ctype), compiler)
    assert ok, f"{compiler[0]} failed on the {ctype} kernels:\n{out}"
    entries = ptx_entries(out)
    for k in KERNELS:
        for types in instances(k, ctype):
            assert instance_name(k, types) in entries


_BROKEN = [
    ("syntax", "out = g * ;"),
    ("undeclared identifier", "out = g * nope;"),
    ("type", "out = g.real;"),
    ("assigns to an input (CuPy inputs are const)", "g = ans; out = g;"),
]


@needs_compiler
@pytest.mark.parametrize("compiler", COMPILERS, ids=[c[0] or "none" for c in COMPILERS])
@pytest.mark.parametrize("what, op", _BROKEN, ids=[b[0] for b in _BROKEN])
def test_checker_rejects_a_broken_kernel(what, op, compiler):
    good = Kernel("none", "T g, T ans", "T out", "out = g * ans;", "gpuad_ok")
    broken = good._replace(operation=op, name="gpuad_broken")
    assert compile_cuda(translation_unit([good], "float"), compiler)[0]
    ok, log = compile_cuda(translation_unit([good, broken], "float"), compiler)
    assert not ok, f"a kernel with a {what} error compiled"
    assert "gpuad_broken" in log or "error" in log.lower()


@needs_compiler
def test_compiler_report():
    """Not a check: records which compilers and flags ran (``pytest -rP``)."""
    for kind, where in COMPILERS:
        if kind == "nvcc":
            print(f"compiler: nvcc ({where}) {nvcc_version(where)}", nvcc_flags())
        else:
            print(f"compiler: nvrtc ({where})", nvrtc_options())


# --- the operations, run on the CPU ------------------------------------------------------
@pytest.fixture(scope="module")
def host_libs(tmp_path_factory):
    """``{ctype: ctypes.CDLL}`` of the kernels built as host C++."""
    if GXX is None:
        pytest.skip("no host C++ compiler")
    d = tmp_path_factory.mktemp("host_kernels")
    libs = {}
    for ctype in DTYPES:
        libs[ctype] = _build_host(d, ctype, KERNELS)
    return libs


def _build_host(d, ctype, kernels):
    src, so = os.path.join(d, f"k_{ctype}.cpp"), os.path.join(d, f"k_{ctype}.so")
    with open(src, "w") as f:
        f.write(translation_unit(kernels, ctype, host=True))
    flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Werror"]
    if ctype == "float":
        flags += ["-Wdouble-promotion", "-Wfloat-conversion"]
    r = subprocess.run([GXX, *flags, src, "-o", so], capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        raise AssertionError(f"host build of the {ctype} kernels failed:\n{r.stderr}")
    return ctypes.CDLL(so)


_C_SCALAR = {"float32": ctypes.c_float, "float64": ctypes.c_double}
_CTYPE_OF = {"float32": "float", "float64": "double"}


def run_on_host(lib, k, args, params):
    """Run kernel ``k`` (host build) on NumPy inputs, as CuPy would on the device."""
    kin = list(k.pack(np, *args, **params) if k.pack is not None else args)
    ins = parse_params(k.in_params)
    dtype = next(np.asarray(a).dtype for (_, t, _), a in zip(ins, kin) if t == "T" and hasattr(a, "shape"))
    types = {"T": _CTYPE_OF[dtype.name]}
    for (_, t, _), a in zip(ins, kin):
        if t != "T" and hasattr(a, "dtype"):
            types[t] = _CTYPE_OF[a.dtype.name]
    arrays = [i for i, (_, _, n) in enumerate(ins) if n not in k.scalars]
    shape = np.broadcast_shapes(*(np.shape(kin[i]) for i in arrays))
    cargs, keep = [], []
    for i, (_, t, n) in enumerate(ins):
        dt = np.dtype({"float": "float32", "double": "float64"}[types[t]])
        if n in k.scalars:
            cargs.append(_C_SCALAR[dt.name](dt.type(kin[i])))
        else:
            a = np.ascontiguousarray(np.broadcast_to(np.asarray(kin[i], dtype=dt), shape))
            keep.append(a)
            cargs.append(a.ctypes.data_as(ctypes.c_void_p))
    outs = [np.empty(shape, dtype) for _ in parse_params(k.out_params)]
    cargs += [o.ctypes.data_as(ctypes.c_void_p) for o in outs] + [ctypes.c_longlong(int(np.prod(shape)))]
    getattr(lib, instance_name(k, types))(*cargs)
    return tuple(outs)


@needs_gxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_operation_computes_the_reference(host_libs, case, dtype):
    k = by_primitive()[case.primitive]
    args, params, _ = case.sample(np.random.default_rng(1), dtype)
    got = run_on_host(host_libs[_CTYPE_OF[dtype]], k, args, params)
    want = as_tuple(case.ref(*args, **params))
    rtol, atol = tolerance(dtype)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, w.astype(dtype), rtol=rtol, atol=atol, err_msg=case.id)


@needs_gxx
def test_host_float_build_rejects_double_arithmetic(tmp_path):
    k = Kernel("none", "T g, T x", "T out", "out = g * (0.5 * x);", "gpuad_promotes")
    with pytest.raises(AssertionError, match="double"):
        _build_host(str(tmp_path), "float", [k])
    _build_host(str(tmp_path), "double", [k])  # fine in double
