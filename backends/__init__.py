"""Array-library backends for gpuad, one module per library.

Each module provides:

``probe() -> (bool, str)``
    Whether the library is usable here, and why (or why not).  Never raises.
``namespace()``
    Its array-API namespace (through array-api-compat where needed).
``owns(ns) -> bool``
    Whether a namespace module belongs to this backend.
``register_overrides(ns)``
    Registers backend-specific kernels for primitives (rules stay untouched).
``devices() -> list[str]`` and ``memory_stats() -> dict``
    Device and memory information for ``gpuad info`` and ``gpuad.memory``.
``buffer_of(x) -> (key, nbytes, owner)``
    The memory block an array lives in (views resolve to their base), so
    that ``gpuad.memory`` counts an aliased buffer once.
``to_numpy(x)`` and ``from_numpy(a, device=None)``
    Host copies for saving and loading (``gpuad.serialization``); the NumPy
    backend also reads and writes ``.npz`` files (``save_npz``/``load_npz``).
``version() -> str | None``

Optional, for ``gpuad.distributed``: ``comm_buffer(x)`` (a flat bucket as
the buffer an MPI call takes: NumPy through the buffer protocol, CuPy through
``__cuda_array_interface__`` after a stream sync), ``scale_into(buf, start,
src, scale)`` (packing fused with scaling), ``REUSABLE_BUCKETS`` (views keep
their base referenced, so buckets may be reused), ``device_key(device)`` (a
hashable stand-in for an unhashable device in cache keys), and for CuPy
``device_count()``/``use_device(i)`` (one GPU per process).  A backend
without ``comm_buffer`` is staged through NumPy by the MPI communicator.

This package is installed as ``gpuad.backends`` (see ``pyproject.toml``).
Only modules in here name numpy or cupy.
"""
