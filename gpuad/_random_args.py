"""Scalar arguments of ``gpuad.random``: checked on the host, by name (NOTE [scalar parameters]).

Also the host-side float arithmetic that keeps a drawn value inside its
interval in the output dtype (``struct`` round trips, next representable
values).
"""

from __future__ import annotations

import math
import numbers
import operator
import struct

from ._args import int_or_none
from ._dtypes import dtype_name


def _int(v, fname, name):
    """``v`` as an int (Python or NumPy integer), else a ``TypeError`` naming it; never truncates a float."""
    n = int_or_none(v)
    if n is None:
        raise TypeError(f"random.{fname}: {name} must be an int, got {type(v).__name__}: {v!r}")
    return n


def _real(v, fname, name):
    """``v`` as a Python float: a Python or NumPy real scalar (NOTE [scalar parameters])."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        try:
            return float(v)
        except OverflowError:  # an int beyond float64: refused as non-finite or out of range later
            return math.inf if v > 0 else -math.inf
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        raise TypeError(f"random.{fname}: {name} must be a Python or NumPy real scalar, got an array of shape "
                        f"{tuple(v.shape)} and dtype {dtype_name(v.dtype)}; array parameters are not supported "
                        "(checking them would read them back to the host): draw with scalars and transform the "
                        "result on the device instead")
    raise TypeError(f"random.{fname}: {name} must be a real number, got {type(v).__name__}: {v!r}")


def _finite(fname, **values):
    """The (Python float) values must be finite."""
    for name, v in values.items():
        if not math.isfinite(v):
            raise ValueError(f"random.{fname}: {name} must be finite, got {v!r}")


#: struct formats of the floating dtypes: (value, same-size unsigned integer).
_FLOAT_FORMATS = {"float16": ("e", "H"), "float32": ("f", "I"), "float64": ("d", "Q")}


def _round_to(x, name):
    """The Python float ``x`` rounded to the nearest ``name`` value (``+-inf`` beyond its range)."""
    if name == "float64" or not math.isfinite(x):
        return x
    fmt = _FLOAT_FORMATS[name][0]
    try:
        return struct.unpack(fmt, struct.pack(fmt, x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _step(x, name, up):
    """The next ``name`` value after the ``name`` value ``x``, upwards or downwards."""
    if name == "float64":
        return math.nextafter(x, math.inf if up else -math.inf)
    fmt, ifmt = _FLOAT_FORMATS[name]
    if x == 0.0:
        tiny = struct.unpack(fmt, struct.pack(ifmt, 1))[0]  # the smallest subnormal
        return tiny if up else -tiny
    bits = struct.unpack(ifmt, struct.pack(fmt, x))[0]
    bits += 1 if (x > 0) == up else -1
    return struct.unpack(fmt, struct.pack(ifmt, bits))[0]


def _ceil_in(x, name):
    """The smallest ``name`` value ``>= x``."""
    r = _round_to(x, name)
    return _step(r, name, up=True) if r < x else r


def _floor_in(x, name, strict=False):
    """The largest ``name`` value ``<= x`` (``< x`` when ``strict``)."""
    r = _round_to(x, name)
    return _step(r, name, up=False) if (r >= x if strict else r > x) else r


def _shape(shape, fname):
    if isinstance(shape, int):
        shape = (shape,)
    try:
        if any(isinstance(s, bool) for s in shape):
            raise TypeError
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"random.{fname}: shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"random.{fname}: shape {shape} has a negative dimension")
    return shape


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


_INT_RANGES = {f"{u}int{b}": ((0, (1 << b) - 1) if u else (-(1 << (b - 1)), (1 << (b - 1)) - 1))
               for u in ("", "u") for b in (8, 16, 32, 64)}


def _int_bound(v, fname, name):
    """An integer bound: a Python or NumPy integer scalar, never an array (NOTE [scalar parameters])."""
    if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, numbers.Integral):
        raise TypeError(f"random.{fname}: {name} must be a Python or NumPy integer scalar, got an array of shape "
                        f"{tuple(v.shape)} and dtype {dtype_name(v.dtype)}; array parameters are not supported "
                        "(checking them would read them back to the host)")
    return _int(v, fname, name)
