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
``version() -> str | None``

This package is installed as ``gpuad.backends`` (see ``pyproject.toml``).
Only modules in here name numpy or cupy.
"""
