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


def register_overrides(ns):
    """No overrides: the generic implementations run."""
