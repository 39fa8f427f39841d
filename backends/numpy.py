"""NumPy backend: the CPU default."""

from __future__ import annotations

NAME = "numpy"
#: Every NumPy array is on the CPU: gpuad skips device comparisons between them.
SINGLE_DEVICE = True


def version():
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def probe():
    """``(True, reason)`` when NumPy imports; never raises."""
    v = version()
    if v is None:
        return False, "numpy is not installed"
    return True, f"NumPy {v} on the CPU"


def namespace():
    import array_api_compat.numpy as xp

    return xp


def owns(ns):
    return ns.__name__ == "array_api_compat.numpy"


def devices():
    return ["cpu"]


def memory_stats():
    """NumPy has no pool; host memory is not tracked here."""
    return {}


def register_overrides(ns):
    import numpy

    from gpuad._registry import override

    def index_add(xp, base, values, *, key):
        # np.add.at accumulates repeated indices, which plain setitem would not.
        out = numpy.array(base, copy=True)
        numpy.add.at(out, key, values)
        return out

    override("index_add", ns, index_add)
