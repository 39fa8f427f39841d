"""array-api-strict backend: the test stand-in for a strict, device-aware library.

Its ``Device("device1")`` plays the part of a GPU in the test-suite: arrays
there refuse conversion to NumPy and refuse mixing with other devices.
"""

from __future__ import annotations

NAME = "array_api_strict"


def version():
    try:
        import array_api_strict
    except ImportError:
        return None
    return getattr(array_api_strict, "__version__", "unknown")


def probe():
    v = version()
    if v is None:
        return False, "array_api_strict is not installed (pip install 'gpuad[test]')"
    return True, f"array-api-strict {v}"


def namespace():
    import array_api_strict

    return array_api_strict


def owns(ns):
    return ns.__name__ == "array_api_strict"


def devices():
    import array_api_strict

    out = []
    for d in array_api_strict.__array_namespace_info__().devices():
        name = getattr(d, "_device", None)  # Device('device1') -> "device1"
        out.append(name if isinstance(name, str) else str(d))
    return out


def memory_stats():
    return {}


def buffer_of(x):
    """``(key, nbytes, owner)`` of the memory block array ``x`` lives in.

    array-api-strict wraps a NumPy array (private ``_array``); when present,
    views are followed through its ``.base`` as for NumPy.  Otherwise the
    array counts alone: ``size * itemsize`` keyed by ``id(x)``.
    """
    inner = getattr(x, "_array", None)
    if inner is not None and hasattr(inner, "nbytes"):
        owner = inner
        while getattr(owner, "base", None) is not None and hasattr(owner.base, "nbytes"):
            owner = owner.base
        return id(owner), int(owner.nbytes), owner
    n = 1
    for d in x.shape:
        n *= int(d)
    digits = "".join(c for c in str(x.dtype).rsplit(".", 1)[-1] if c.isdigit())
    itemsize = int(digits) // 8 if digits else 1  # bool: one byte
    return id(x), n * itemsize, x


_BINARY = (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
    "__floordiv__", "__rfloordiv__", "__pow__", "__rpow__", "__mod__", "__rmod__", "__matmul__",
    "__rmatmul__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__eq__", "__ne__",
    "__lt__", "__le__", "__gt__", "__ge__",
)


def register_overrides(ns):
    """No kernel overrides: the generic implementations run.

    # NOTE [strict defers to tracers]: NumPy and CuPy arrays return
    # NotImplemented from ``plain + tracer`` (tracers set ``__array_ufunc__ =
    # None``), so Python falls back to the tracer's reflected operator.
    # array-api-strict raises TypeError instead.  Its binary operators are
    # wrapped here to defer to gpuad tracers the same way, so that code such as
    # ``W @ x`` with a constant ``W`` behaves alike on every backend.
    """
    from gpuad._core import Tracer

    Array = type(ns.asarray(0.0))
    if getattr(Array, "_gpuad_defers", False):
        return

    def deferring(orig):
        def method(self, other, *args):
            if isinstance(other, Tracer):
                return NotImplemented
            return orig(self, other, *args)

        method.__name__ = orig.__name__
        method.__doc__ = orig.__doc__
        return method

    for name in _BINARY:
        orig = getattr(Array, name, None)
        if orig is not None:
            setattr(Array, name, deferring(orig))
    Array._gpuad_defers = True


# --- host transfer (gpuad.serialization) ---------------------------------------
def to_numpy(x):
    """A NumPy copy of ``x``: arrays off the CPU device are moved there first."""
    import array_api_strict
    import numpy

    cpu = array_api_strict.Device("CPU_DEVICE")
    if x.device != cpu:
        x = x.to_device(cpu)
    return numpy.asarray(x)


def from_numpy(a, device=None):
    """``a`` (a NumPy array) as an array-api-strict array on ``device``."""
    import array_api_strict

    kw = {"device": device} if device is not None else {}
    return array_api_strict.asarray(a, **kw)
