"""CuPy backend: NVIDIA GPUs.

Detection never raises: CuPy may be missing, installed without a driver
(``getDeviceCount`` raises ``CUDARuntimeError``), or unable to compile a
kernel (missing NVRTC, unsupported architecture).  ``probe`` tries all three
and says which failed.  CuPy is imported only when probed or used.
"""

from __future__ import annotations

NAME = "cupy"
_INSTALL_HINT = "pip install 'gpuad[cuda12]' or 'gpuad[cuda13]'"

#: Cached ``(usable, reason)`` of the first :func:`probe`; tests reset it to None.
_probe_result = None


def _one_line(e, limit=300):
    """``"Type: message"`` on one line (NVRTC and driver errors span several)."""
    msg = " ".join(str(e).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _installed():
    """Whether a ``cupy`` module can be found, without importing it."""
    import importlib.util
    import sys

    if "cupy" in sys.modules:
        return sys.modules["cupy"] is not None
    try:
        return importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):
        return False


def _import():
    """``(cupy_module, None)`` or ``(None, reason)``; never raises."""
    if not _installed():
        return None, f"cupy is not installed ({_INSTALL_HINT})"
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - any import failure means unusable
        return None, f"cupy failed to import: {_one_line(e)}"
    return cupy, None


def _distribution_version():
    """Version of an installed CuPy wheel, from its metadata (no import)."""
    from importlib import metadata

    for dist in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - broken metadata
            continue
    return None, None


def version():
    """CuPy's version, ``None`` when it is not installed or does not import."""
    cupy, _ = _import()
    if cupy is None:
        return None
    return str(getattr(cupy, "__version__", "unknown"))


def probe():
    """``(usable, reason)``; cached after the first call, never raises."""
    global _probe_result
    if _probe_result is None:
        try:
            _probe_result = _probe()
        except Exception as e:  # noqa: BLE001 - belt and braces: probe never raises
            _probe_result = (False, f"CuPy probe failed: {_one_line(e)}")
    return _probe_result


def _device_name(cupy, i):
    name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _probe():
    cupy, why = _import()
    if cupy is None:
        return False, why
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError without a driver / device
        return False, f"no usable CUDA device: getDeviceCount() failed: {_one_line(e)}"
    if n < 1:
        return False, "no usable CUDA device: getDeviceCount() returned 0"
    try:
        x = cupy.arange(8, dtype=cupy.float32)
        y = cupy.ElementwiseKernel("float32 x", "float32 y", "y = x * 2.0f", "gpuad_smoke")(x)
        ok = bool((y[3] == 6.0).get())
    except Exception as e:  # noqa: BLE001 - NVRTC missing, unsupported arch, ...
        return False, f"CUDA smoke launch failed on device 0: {_one_line(e)}"
    if not ok:
        return False, "CUDA smoke launch on device 0 gave a wrong result"
    try:
        name = _device_name(cupy, 0)
    except Exception:  # noqa: BLE001 - the name is cosmetic
        name = "unknown"
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
    """``["cuda:0 NAME (X GiB)", ...]``; empty when CuPy is not usable."""
    ok, _ = probe()
    if not ok:
        return []
    import cupy

    out = []
    try:
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            p = cupy.cuda.runtime.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
            out.append(f"cuda:{i} {name} ({p['totalGlobalMem'] / 2**30:.1f} GiB)")
    except Exception as e:  # noqa: BLE001 - report rather than fail `gpuad info`
        out.append(f"(device query failed: {_one_line(e)})")
    return out


def memory_stats():
    """CuPy memory-pool usage of the current device; empty when not usable."""
    ok, _ = probe()
    if not ok:
        return {}
    import cupy

    pool = cupy.get_default_memory_pool()
    stats = {"pool_used_bytes": int(pool.used_bytes()), "pool_total_bytes": int(pool.total_bytes())}
    try:
        free, total = cupy.cuda.runtime.memGetInfo()
        stats.update(device_free_bytes=int(free), device_total_bytes=int(total))
    except Exception:  # noqa: BLE001 - optional
        pass
    return stats


def register_overrides(ns):
    import cupy
    import cupyx

    from gpuad._registry import override

    def index_add(xp, base, values, *, key):
        # scatter_add accumulates repeated indices, which plain setitem would not.
        out = cupy.array(base, copy=True)
        cupyx.scatter_add(out, key, values)
        return out

    override("index_add", ns, index_add)
