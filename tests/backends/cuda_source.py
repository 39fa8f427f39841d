"""CUDA translation units for the kernels of ``gpuad.backends.cupy_kernels``, and compilers.

:func:`translation_unit` writes what ``cupy.ElementwiseKernel`` would generate
for a kernel (CuPy's ``_get_elementwise_kernel_code``): ``typedef``s of the
type placeholders, the preamble, an ``extern "C" __global__`` function whose
loop binds each array input as ``const T &x = _raw_x[i];`` and each output as
``T &out = _raw_out[i];`` before the operation, with host scalars passed by
value.  CuPy indexes ``CArray``s through a ``CIndexer``; here plain pointers
stand in, which changes nothing the operation can see.  Every kernel instance
sits in its own namespace, so one unit holds them all (one compiler run per
dtype).  ``host=True`` gives the same code as plain C++ functions, so that
the operations can also be *run* on the CPU (see ``test_cuda_kernels.py``).

Compilers, in order: ``nvcc`` on PATH, else NVRTC through ctypes (from the
``nvidia-cuda-nvrtc-cu12`` wheel or a CUDA toolkit); :func:`find_compiler`
says which, or why neither.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import shutil
import subprocess
import tempfile

C_TYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
           "bool": "bool", "uint8": "unsigned char"}
NVCC_ARCH = os.environ.get("GPUAD_NVCC_ARCH", "sm_80")


def parse_params(spec):
    """``"T g, raw T x"`` -> ``[(raw, type, name), ...]`` as CuPy reads it."""
    out = []
    for p in spec.split(","):
        words = p.split()
        *mods, t, name = words
        if any(m != "raw" for m in mods):
            raise ValueError(f"unknown keyword in parameter {p!r}")
        out.append(("raw" in mods, t, name))
    return out


def placeholders(kernel):
    """The one-letter type placeholders of ``kernel``, ``T`` first."""
    ts = {t for _, t, _ in parse_params(kernel.in_params) + parse_params(kernel.out_params) if len(t) == 1}
    return sorted(ts, key=lambda t: (t != "T", t))


def instances(kernel, t_ctype):
    """Every ``{placeholder: ctype}`` to check with ``T = t_ctype`` (others: float and double)."""
    others = [p for p in placeholders(kernel) if p != "T"]
    for combo in itertools.product(("float", "double"), repeat=len(others)):
        yield {"T": t_ctype, **dict(zip(others, combo))}


def instance_name(kernel, types):
    return kernel.name + "__" + "_".join(f"{k}{v}" for k, v in sorted(types.items()))


def kernel_source(kernel, types, host=False):
    """One kernel instance: namespace, typedefs, preamble, function."""
    name = instance_name(kernel, types)
    params, binds = [], []
    ins = [(p, True) for p in parse_params(kernel.in_params)]
    outs = [(p, False) for p in parse_params(kernel.out_params)]
    for (raw, t, pname), is_in in ins + outs:
        ctype = t if len(t) == 1 else C_TYPES[t]
        const = "const " if is_in else ""
        if is_in and pname in kernel.scalars:
            params.append(f"{ctype} {pname}")
        elif raw:
            params.append(f"{const}{ctype} *{pname}")
        else:
            params.append(f"{const}{ctype} *_raw_{pname}")
            binds.append(f"    {const}{ctype} &{pname} = _raw_{pname}[i];")
    params.append("long long _n")
    typedefs = "\n".join(f"typedef {c} {p};" for p, c in sorted(types.items()))
    if host:
        head = f'extern "C" void {name}({", ".join(params)}) {{\n  for (long long i = 0; i < _n; ++i) {{'
    else:
        head = (f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
                "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < _n;\n"
                "       i += (long long)blockDim.x * gridDim.x) {")
    body = "\n".join(binds) + "\n    " + kernel.operation.replace("\n", "\n    ")
    return (f"namespace ns_{name} {{\n{typedefs}\n{kernel.preamble}\n{head}\n{body}\n  }}\n}}\n"
            f"}}  // namespace ns_{name}\n")


_HOST_PRELUDE = """\
#include <cmath>
#define __device__
#define __forceinline__ inline
using namespace std;
"""


def translation_unit(kernels, t_ctype, host=False):
    """All instances of ``kernels`` with ``T = t_ctype`` in one CUDA (or host C++) unit."""
    parts = [_HOST_PRELUDE] if host else []
    for k in kernels:
        for types in instances(k, t_ctype):
            parts.append(kernel_source(k, types, host=host))
    return "\n".join(parts)


# --- compilers -----------------------------------------------------------------------
def _nvrtc_candidates():
    pats = []
    try:
        import nvidia.cuda_nvrtc  # the nvidia-cuda-nvrtc-cu12 wheel

        for d in nvidia.cuda_nvrtc.__path__:
            pats.append(os.path.join(d, "lib", "libnvrtc.so*"))
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            pats.append(os.path.join(home, "lib64", "libnvrtc.so*"))
    return [f for p in pats for f in sorted(glob.glob(p)) if "alt" not in os.path.basename(f)]


def find_compilers():
    """Every compiler found: ``[("nvcc", path)?, ("nvrtc", libpath)?]``, nvcc first."""
    found = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        found.append(("nvcc", nvcc))
    for lib in _nvrtc_candidates():
        try:
            ctypes.CDLL(lib)
        except OSError:
            continue
        found.append(("nvrtc", lib))
        break
    return found


def find_compiler():
    """``("nvcc", path)``, else ``("nvrtc", libpath)``, else ``(None, reason)``."""
    found = find_compilers()
    if found:
        return found[0]
    return None, ("neither nvcc on PATH nor an NVRTC library (pip install nvidia-cuda-nvrtc-cu12, "
                  "or a CUDA toolkit under CUDA_HOME) was found")


def nvcc_version(nvcc="nvcc"):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def nvcc_flags():
    return ["--ptx", f"-arch={NVCC_ARCH}", "-std=c++17", "--Werror", "all-warnings"]


def nvrtc_options():
    return [f"--gpu-architecture={NVCC_ARCH.replace('sm_', 'compute_')}", "-std=c++17"]


def compile_cuda(source, compiler=None):
    """Compile ``source`` to PTX; return ``(ok, ptx_or_log)``.

    ``compiler`` is what :func:`find_compiler` returns (found when omitted).
    """
    kind, where = compiler or find_compiler()
    if kind == "nvcc":
        with tempfile.TemporaryDirectory() as d:
            src, ptx = os.path.join(d, "kernels.cu"), os.path.join(d, "kernels.ptx")
            with open(src, "w") as f:
                f.write(source)
            r = subprocess.run([where, *nvcc_flags(), src, "-o", ptx], capture_output=True, text=True,
                               timeout=120, check=False)
            if r.returncode != 0:
                return False, r.stdout + r.stderr
            with open(ptx) as f:
                return True, f.read()
    if kind == "nvrtc":
        return _nvrtc_compile(where, source)
    raise RuntimeError(where)


def _nvrtc_compile(lib, source):
    nvrtc = ctypes.CDLL(lib)
    prog = ctypes.c_void_p()
    err = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernels.cu", 0, None, None)
    if err:
        return False, f"nvrtcCreateProgram failed ({err})"
    opts = [o.encode() for o in nvrtc_options()]
    try:
        res = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(prog, log)
        if res:
            return False, log.value.decode(errors="replace")
        nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(prog, ptx)
        return True, ptx.value.decode(errors="replace")
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))


def ptx_entries(ptx):
    """``{entry name: its PTX text}``."""
    out = {}
    for chunk in ptx.split(".entry ")[1:]:
        name = chunk.split("(", 1)[0].strip()
        out[name] = chunk
    return out
