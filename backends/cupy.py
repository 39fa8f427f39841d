"""CuPy backend: NVIDIA GPUs.

Detection never raises: CuPy may be missing, installed without a driver
(``getDeviceCount`` raises ``CUDARuntimeError``), or unable to compile a
kernel (missing NVRTC, unsupported architecture).  ``probe`` tries all three
and says which failed.  CuPy is imported only when probed or used.

# NOTE [pool limit]: ``GPUAD_GPU_MEMORY_LIMIT`` (syntax:
# ``gpuad._device_memory.parse_memory_limit``) caps CuPy's default memory
# pool.  CuPy's limit is per device, so it is applied to the current device
# when the backend is first used (``namespace``, ``register_overrides`` when
# CuPy arrays first reach gpuad, ``memory_stats``), and again to the device
# :func:`use_device` selects.  A value that does not parse raises
# ``ValueError`` at that point, naming the variable and the value, and again
# at every later ``namespace``/``memory_stats`` call (it is never marked
# applied).
"""

from __future__ import annotations

from .cupy_env import LOCAL_RANK_VARS, cuda_major, install_extra, local_device, nccl_install_hint  # noqa: F401

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
    """``(distribution, version)`` of an installed CuPy wheel, from its metadata (no import)."""
    from importlib import metadata

    for dist in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - broken metadata
            continue
    return None, None


def nccl_available():
    """``(available, reason)``: whether CuPy can load NCCL (cupyx.distributed needs it); never raises."""
    ok, why = probe()
    if not ok:
        return False, why
    try:
        import warnings

        with warnings.catch_warnings():  # CuPy warns when the library cannot be loaded
            warnings.simplefilter("ignore")
            from cupy.cuda import nccl
        if not getattr(nccl, "available", False):
            return False, f"CuPy cannot load the NCCL library ({nccl_install_hint()})"
    except Exception as e:  # noqa: BLE001 - any failure means unusable
        return False, f"cupy.cuda.nccl failed to import: {_one_line(e)}"
    return True, "NCCL available"


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


def _current_device(cupy):
    try:
        return int(cupy.cuda.runtime.getDevice())  # asking makes no context
    except Exception:  # noqa: BLE001 - cosmetic: the index in the probe's reason
        return 0


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
    # NOTE [probe device]: under a launcher (LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID,
    # ...) the smoke kernel runs on the device this process will use, local rank modulo the device
    # count, which stays current: no rank of a multi-GPU job opens a CUDA context on device 0 before
    # gpuad.distributed.init selects its own GPU (the same one).  Elsewhere: the current device.
    dev = local_device(n)
    try:
        if dev is not None:
            cupy.cuda.Device(dev).use()
        else:
            dev = _current_device(cupy)
        x = cupy.arange(8, dtype=cupy.float32)
        y = cupy.ElementwiseKernel("float32 x", "float32 y", "y = x * 2.0f", "gpuad_smoke")(x)
        ok = bool((y[3] == 6.0).get())
    except Exception as e:  # noqa: BLE001 - NVRTC missing, unsupported arch, ...
        return False, f"CUDA smoke launch failed on device {dev if dev is not None else 0}: {_one_line(e)}"
    if not ok:
        return False, f"CUDA smoke launch on device {dev} gave a wrong result"
    try:
        name = _device_name(cupy, dev)
    except Exception:  # noqa: BLE001 - the name is cosmetic
        name = "unknown"
    return True, f"CuPy {cupy.__version__}, {n} CUDA device(s), device {dev}: {name}"


#: Whether the pool limit was applied (NOTE [pool limit]); tests reset it to False.
_limit_applied = False


def apply_memory_limit(environ=None):
    """Apply ``GPUAD_GPU_MEMORY_LIMIT`` to CuPy's default pool on the current device.

    Parameters
    ----------
    environ : mapping, optional
        Where to read the variable (default ``os.environ``).

    Returns
    -------
    MemoryLimit or None
        The limit applied; ``None`` when the variable is unset or empty
        (the pool is left as it is).

    Raises
    ------
    ValueError
        When the value is not a memory limit (the message names both).
    """
    global _limit_applied
    import os

    from gpuad._device_memory import MEMORY_LIMIT_ENV, parse_memory_limit

    env = os.environ if environ is None else environ
    limit = parse_memory_limit(env.get(MEMORY_LIMIT_ENV))
    if limit is not None:
        import cupy

        pool = cupy.get_default_memory_pool()
        if limit.size is not None:
            pool.set_limit(size=limit.size)
        else:
            pool.set_limit(fraction=limit.fraction)
    _limit_applied = True
    return limit


def is_out_of_memory(exc):
    """Whether ``exc`` is CuPy's ``OutOfMemoryError``; never imports CuPy.

    An exception cannot come from CuPy unless CuPy is already in ``sys.modules``.
    """
    import sys

    cupy = sys.modules.get("cupy")
    if cupy is None:
        return False
    cls = getattr(getattr(getattr(cupy, "cuda", None), "memory", None), "OutOfMemoryError", None)
    return isinstance(cls, type) and isinstance(exc, cls)


def namespace():
    ok, reason = probe()
    if not ok:
        raise RuntimeError(f"the cupy backend is not usable: {reason}")
    if not _limit_applied:
        apply_memory_limit()
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
    """CuPy memory-pool usage of the current device; empty when not usable.

    ``pool_used_bytes``, ``pool_total_bytes``, ``pool_limit_bytes`` (only
    when a limit is set, NOTE [pool limit]), ``device_free_bytes`` and
    ``device_total_bytes``.
    """
    ok, _ = probe()
    if not ok:
        return {}
    import cupy

    if not _limit_applied:
        apply_memory_limit()
    pool = cupy.get_default_memory_pool()
    stats = {"pool_used_bytes": int(pool.used_bytes()), "pool_total_bytes": int(pool.total_bytes())}
    limit = int(pool.get_limit())
    if limit > 0:  # 0: no limit
        stats["pool_limit_bytes"] = limit
    try:
        free, total = cupy.cuda.runtime.memGetInfo()
        stats.update(device_free_bytes=int(free), device_total_bytes=int(total))
    except Exception:  # noqa: BLE001 - optional
        pass
    return stats


def buffer_of(x):
    """``(key, nbytes, owner)`` of the device allocation array ``x`` lives in.

    Views are followed through ``.base`` to the owning ``cupy.ndarray``;
    see ``gpuad.backends.numpy.buffer_of``.
    """
    owner = x
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    return id(owner), int(owner.nbytes), owner


def register_overrides(ns):
    """Install CuPy's kernels for ``ns`` (``array_api_compat.cupy``).

    ``index_add`` uses ``cupyx.scatter_add``; every kernel of
    :mod:`gpuad.backends.cupy_kernels` whose primitive exists in
    ``gpuad.PRIMITIVES`` replaces that primitive's implementation (kernels
    for primitives not declared yet are skipped).  The ``ElementwiseKernel``
    objects are built on first use and cached; CuPy compiles one binary per
    dtype combination and caches that too.
    """
    import importlib

    import cupy
    import cupyx

    from gpuad._registry import PRIMITIVES, override

    from . import cupy_kernels

    def index_add(xp, base, values, *, key):
        # scatter_add accumulates repeated indices, which plain setitem would not.
        out = cupy.array(base, copy=True)
        cupyx.scatter_add(out, key, values)
        return out

    override("index_add", ns, index_add)
    for k in cupy_kernels.KERNELS:
        try:  # gpuad.nn and gpuad.optim are lazily imported: declare their primitives now
            importlib.import_module(k.declared_in)
        except ImportError:
            continue
        prim = PRIMITIVES.get(k.primitive)
        if prim is not None:
            override(k.primitive, ns, _kernel_impl(k, prim.impl_default))
    if not _limit_applied:  # last: a bad value raises here, and the kernels are in place anyway
        apply_memory_limit()


#: Kernel name -> built ``cupy.ElementwiseKernel`` (see :func:`_elementwise`).
_built = {}
_FLOAT_DTYPES = ("float32", "float64")


def _elementwise(k):
    """The ``cupy.ElementwiseKernel`` of kernel ``k``, built once."""
    kern = _built.get(k.name)
    if kern is None:
        import cupy

        kern = cupy.ElementwiseKernel(k.in_params, k.out_params, k.operation, k.name,
                                      preamble=k.preamble)
        _built[k.name] = kern
    return kern


def _placeholders(in_params):
    """``{placeholder: positions}`` of the type placeholders in ``in_params``.

    As in CuPy's parser, a one-letter type is a placeholder and a longer one a
    dtype name: ``"T g, raw T x, float32 s"`` gives ``{"T": [0, 1]}``.
    """
    groups = {}
    for i, p in enumerate(in_params.split(",")):
        t = p.split()[-2]
        if len(t) == 1:
            groups.setdefault(t, []).append(i)
    return groups


def _kernel_impl(k, generic):
    """``impl(xp, *args, **params)`` running kernel ``k``; ``generic`` where it cannot.

    Each type placeholder (``T``, Adam's ``S``) takes the dtype of its CuPy
    array arguments, which must agree and be float32 or float64.  Python and
    NumPy scalars for a placeholder parameter (the ``k.scalars``, or a scalar
    given where an array is usual) become NumPy scalars of that dtype and are
    passed by value; arrays are broadcast by CuPy.  Nothing is copied to or
    from the host.  Any other case (another dtype, a dtype mix, a placeholder
    with no CuPy array) runs ``generic``, the primitive's default
    implementation, so the override never changes what is computable.
    """
    import numpy

    groups = tuple(_placeholders(k.in_params).values())

    def impl(xp, *args, **params):
        import cupy

        kargs = list(k.pack(xp, *args, **params) if k.pack is not None else args)
        for pos in groups:
            dtype = None
            for i in pos:
                a = kargs[i]
                if isinstance(a, cupy.ndarray):
                    if dtype is None:
                        dtype = a.dtype
                    elif a.dtype != dtype:
                        return generic(xp, *args, **params)
                elif isinstance(a, bool) or not isinstance(a, (int, float, numpy.integer, numpy.floating)):
                    return generic(xp, *args, **params)
            if dtype is None or dtype.name not in _FLOAT_DTYPES:
                return generic(xp, *args, **params)
            for i in pos:
                if not isinstance(kargs[i], cupy.ndarray):
                    kargs[i] = dtype.type(kargs[i])
        return _elementwise(k)(*kargs)

    impl.__name__ = f"{k.name}_impl"
    impl.__doc__ = f"CUDA kernel {k.name} for primitive {k.primitive!r} (else the generic impl)."
    return impl


# --- host transfer (gpuad.serialization) ---------------------------------------
def to_numpy(x):
    """A NumPy copy of the CuPy array ``x`` (``x.get()``)."""
    return x.get()


def from_numpy(a, device=None):
    """``a`` (a NumPy array) copied to the GPU (``device``: a ``cupy.cuda.Device``)."""
    import cupy

    if device is None:
        return cupy.asarray(a)
    with device:
        return cupy.asarray(a)


# --- collectives (gpuad.distributed) -------------------------------------------
def device_count():
    """Number of CUDA devices CuPy sees (0 when CuPy is not usable)."""
    ok, _ = probe()
    if not ok:
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def device_key(device):
    """A hashable stand-in for a CuPy device in cache keys: ``("cuda", id)``.

    ``cupy.cuda.Device`` is not hashable in CuPy 14 (``hash`` raises
    ``TypeError``), so gpuad.distributed's plan cache keys leaves by this.
    """
    return ("cuda", int(device.id))


def use_device(index):
    """Make CUDA device ``index`` current for this process (one GPU per rank).

    The pool limit is applied to that device (NOTE [pool limit]).
    """
    import cupy

    cupy.cuda.Device(int(index)).use()
    apply_memory_limit()


def comm_buffer(x):
    """``x`` ready for a CUDA-aware MPI call, which reads ``__cuda_array_interface__``.

    MPI knows nothing of CUDA streams: the current stream is synchronised
    first so the kernels that filled ``x`` have finished.  The data stays on
    the device; nothing is copied to the host.
    """
    import cupy

    if not (isinstance(x, cupy.ndarray) and x.flags.c_contiguous):
        raise ValueError("comm_buffer: expected a C-contiguous CuPy array")
    cupy.cuda.get_current_stream().synchronize()
    return x


def scale_into(buf, start, src, scale):
    """``buf[start:start + n] = src * scale`` in one kernel, on the device."""
    import cupy

    dst = buf[start:start + src.shape[0]]
    if scale == 1:
        cupy.copyto(dst, src)
    else:
        cupy.multiply(src, scale, out=dst)
