"""CuPy backend: NVIDIA GPUs.

Detection never raises: CuPy may be missing, installed without a driver
(``getDeviceCount`` raises ``CUDARuntimeError``), or unable to compile a
kernel (missing NVRTC, unsupported architecture).  ``probe`` tries all three
and says which failed.  CuPy is imported only when probed or used.
"""

from __future__ import annotations

NAME = "cupy"
_probe_result = None


def version():
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return None
    try:
        import cupy
    except Exception:  # broken install
        return None
    return cupy.__version__


def probe():
    """``(usable, reason)``; cached after the first call, never raises."""
    global _probe_result
    if _probe_result is None:
        _probe_result = _probe()
    return _probe_result


def _probe():
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return False, "cupy is not installed (pip install 'gpuad[cuda12]' or 'gpuad[cuda13]')"
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - any import failure means unusable
        return False, f"cupy failed to import: {type(e).__name__}: {e}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver
        return False, f"no CUDA device: {type(e).__name__}: {e}"
    if n < 1:
        return False, "no CUDA device: getDeviceCount() returned 0"
    try:
        x = cupy.arange(8, dtype=cupy.float32)
        y = cupy.ElementwiseKernel("float32 x", "float32 y", "y = x * 2.0f", "gpuad_smoke")(x)
        ok = bool((y[3] == 6.0).get())
    except Exception as e:  # NVRTC missing, unsupported arch, ...
        return False, f"CUDA smoke launch failed: {type(e).__name__}: {e}"
    if not ok:
        return False, "CUDA smoke launch gave a wrong result"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    if isinstance(name, bytes):
        name = name.decode()
    return True, f"CuPy {cupy.__version__}, {n} CUDA device(s), device 0: {name}"


def namespace():
    ok, reason = probe()
    if not ok:
        raise RuntimeError(f"the cupy backend is not usable: {reason}")
    import array_api_compat.cupy as xp

    return xp


def owns(ns):
    return ns.__name__ == "array_api_compat.cupy"


def devices():
    ok, _ = probe()
    if not ok:
        return []
    import cupy

    out = []
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        p = cupy.cuda.runtime.getDeviceProperties(i)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        out.append(f"cuda:{i} {name} ({p['totalGlobalMem'] / 2**30:.1f} GiB)")
    return out


def memory_stats():
    ok, _ = probe()
    if not ok:
        return {}
    import cupy

    pool = cupy.get_default_memory_pool()
    return {"pool_used_bytes": pool.used_bytes(), "pool_total_bytes": pool.total_bytes()}


def register_overrides(ns):
    import cupy
    import cupyx

    from gpuad._registry import override

    def index_add(xp, base, values, *, key):
        out = cupy.array(base, copy=True)
        cupyx.scatter_add(out, key, values)
        return out

    override("index_add", ns, index_add)
