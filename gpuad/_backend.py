"""Which array library runs an op, and which one is the default.

Ops dispatch on the namespace of their array inputs.  Only when an op has no
array inputs at all (``xp.zeros(3)``) does the *default* backend decide.  The
default comes from ``gpuad.set_backend(...)`` or the ``GPUAD_BACKEND``
environment variable (``auto``, ``numpy``, ``cupy``, ``array_api_strict``);
``auto`` picks CuPy when a CUDA device is usable and NumPy otherwise.

The core never imports numpy or cupy by name: everything library-specific is
in ``gpuad.backends.<name>``, imported lazily.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

__all__ = [
    "BACKENDS",
    "BackendChoice",
    "set_backend",
    "get_backend",
    "default_namespace",
    "namespace_of",
    "backend_module",
]

#: Backend names accepted by ``set_backend`` and ``GPUAD_BACKEND``.
BACKENDS = ("numpy", "cupy", "array_api_strict")



@dataclass
class BackendChoice:
    """The outcome of choosing the default backend.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"`` or ``"array_api_strict"``.
    requested : str
        What was asked for (``"auto"`` or a backend name).
    reason : str
        Why this backend was chosen, including why others were passed over.
    fallbacks : dict
        Backend name -> reason it was not usable (only those tried).
    """

    name: str
    requested: str
    reason: str
    fallbacks: dict = field(default_factory=dict)

    @property
    def namespace(self):
        return backend_module(self.name).namespace()


_choice: BackendChoice | None = None


def backend_module(name):
    """Import and return ``gpuad.backends.<name>``; ``ValueError`` if unknown."""
    if name not in BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}: expected one of 'auto', " + ", ".join(repr(b) for b in BACKENDS)
        )
    return importlib.import_module(f"gpuad.backends.{name}")


def _choose(requested):
    requested = (requested or "auto").strip().lower().replace("-", "_")
    if requested == "auto":
        cupy_ok, cupy_reason = backend_module("cupy").probe()
        if cupy_ok:
            return BackendChoice("cupy", "auto", f"auto: {cupy_reason}")
        return BackendChoice(
            "numpy", "auto", f"auto: CuPy not usable ({cupy_reason}); using NumPy", {"cupy": cupy_reason}
        )
    mod = backend_module(requested)
    ok, reason = mod.probe()
    if not ok:
        raise RuntimeError(f"backend {requested!r} was requested but is not usable: {reason}")
    return BackendChoice(requested, requested, f"requested explicitly: {reason}")


def set_backend(name="auto"):
    """Choose the default backend for ops without array inputs.

    Parameters
    ----------
    name : {"auto", "numpy", "cupy", "array_api_strict"}

    Returns
    -------
    BackendChoice

    Raises
    ------
    ValueError
        For an unknown name.
    RuntimeError
        When the backend asked for explicitly is not usable (e.g. ``"cupy"``
        without a CUDA device); the message says why.
    """
    global _choice
    _choice = _choose(name)
    return _choice


def get_backend():
    """The current :class:`BackendChoice`, made from ``GPUAD_BACKEND`` on first use."""
    global _choice
    if _choice is None:
        _choice = _choose(os.environ.get("GPUAD_BACKEND", "auto"))
    return _choice


def default_namespace():
    """The array namespace of the default backend."""
    return get_backend().namespace


# NOTE [namespace cache]: array types map to namespaces once, through
# array-api-compat, which only looks at modules already imported.  The first
# time a namespace is seen its backend module may register overrides.
_SKIP = object()
_ns_by_type: dict = {int: _SKIP, float: _SKIP, bool: _SKIP, complex: _SKIP, type(None): _SKIP}
#: Namespaces whose arrays all live on one device (their backend says SINGLE_DEVICE).
_single_device: set = set()
#: Namespaces whose array values the host reads without a device synchronisation (HOST_VALUES).
_host_values: set = set()


def _lookup_namespace(t, x):
    import array_api_compat

    ns = array_api_compat.array_namespace(x)
    _attach_backend(ns)
    _ns_by_type[t] = ns
    return ns


_attached: set = set()


def _attach_backend(ns):
    """Let the backend that owns ``ns`` register its kernel overrides, once."""
    if id(ns) in _attached:
        return
    _attached.add(id(ns))
    for b in BACKENDS:
        try:
            mod = backend_module(b)
        except ImportError:  # pragma: no cover - backends ship with gpuad
            continue
        if mod.owns(ns):
            if getattr(mod, "SINGLE_DEVICE", False):
                _single_device.add(ns)
            if getattr(mod, "HOST_VALUES", False):
                _host_values.add(ns)
            mod.register_overrides(ns)
            return


def single_device(ns):
    """Whether every array of namespace ``ns`` lives on one device (its backend says ``SINGLE_DEVICE``).

    Only namespaces already seen by :func:`namespace_of` are known; others answer False.
    """
    return ns in _single_device


def host_readable(x):
    """Whether reading ``x``'s values (a ``min``, a comparison) costs no device synchronisation.

    True for arrays of a backend that declares ``HOST_VALUES`` (NumPy);
    False for GPU arrays, for array-api-strict (whose ``device1`` stands in
    for a GPU) and for anything that is not an array.  Checks of values that
    only the host can make (an index in range) run where this is True.
    """
    t = type(x)
    ns = _ns_by_type.get(t)
    if ns is None:
        try:
            ns = _lookup_namespace(t, x)
        except TypeError:
            return False
    return ns is not _SKIP and ns in _host_values


def _describe(x):
    dev = getattr(x, "device", "?")
    return f"{type(x).__module__}.{type(x).__name__}{tuple(getattr(x, 'shape', ()))} on {dev}"


def namespace_of(args, opname):
    """The single array namespace shared by the arrays in ``args``.

    Python scalars and ``None`` are ignored.  With no arrays at all, the
    default backend's namespace is returned.

    Raises
    ------
    TypeError
        If arrays from two libraries are mixed (both are named).
    ValueError
        If arrays on two devices are mixed (both devices are named).
    """
    # NOTE [dispatch fast path]: one dict lookup per argument: scalar types
    # and NoneType map to _SKIP; array types to their namespace.  Devices are
    # compared only when a second array appears and its namespace has more
    # than one device.
    ns = None
    first = None
    for a in args:
        n = _ns_by_type.get(type(a))
        if n is _SKIP:
            continue
        if n is None:
            t = type(a)
            try:
                n = _lookup_namespace(t, a)
            except TypeError:
                raise TypeError(f"{opname}: unsupported argument of type {t.__module__}.{t.__name__}") from None
        if ns is None:
            ns, first = n, a
        elif n is not ns:
            raise TypeError(
                f"{opname}: cannot mix arrays from two array libraries: {_describe(first)} "
                f"({ns.__name__}) and {_describe(a)} ({n.__name__})"
            )
        elif ns not in _single_device and a.device != first.device:
            raise ValueError(
                f"{opname}: cannot mix arrays on two devices: {_describe(first)} and {_describe(a)}"
            )
    if ns is None:
        return default_namespace()
    return ns
