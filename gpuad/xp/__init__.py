"""``gpuad.xp``: the Python array API over traced and plain arrays.

``from gpuad import xp`` and write array-API code; it is differentiable by
every gpuad transform.  Tracers return this module from
``__array_namespace__``, so generic code that calls
``array_api_compat.array_namespace(x)`` on a traced value lands here too.
Called on plain arrays, the functions return plain arrays of the inputs'
own library.

Dtype attributes (``xp.float32`` ...) are those of the default backend; any
library's dtype is accepted wherever a dtype is taken.
"""

from __future__ import annotations

import functools as _functools
import math as _math

from .. import ops as _ops
from .._args import short_repr as _short_repr
from .._ops_names import STANDARD_NAMES as _STANDARD_NAMES

__array_api_version__ = "2024.12"

e = _math.e
pi = _math.pi
inf = float("inf")
nan = float("nan")
newaxis = None

_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "complex64", "complex128",
)

# NOTE [non-array arguments]: the functions below take arrays and use their
# attributes (``x.ndim``, ``x.shape``) before any primitive runs, so a list or
# a Python scalar passed by mistake (``xp.sum([1, 2])``, fine in NumPy) would
# fail with "'list' object has no attribute 'ndim'", naming no function.  Here,
# and only here (rules call gpuad.ops directly), they are wrapped so that such
# an AttributeError becomes a TypeError that names the function, the argument
# and what to do.  Primitives need no wrapper: they check their arguments.
_ARRAY_ARGS = {
    "all": 1, "any": 1, "argmax": 1, "argmin": 1, "argsort": 1, "astype": 1, "broadcast_to": 1, "clip": 1,
    "count_nonzero": 1, "cumulative_prod": 1, "cumulative_sum": 1, "diff": 1, "expand_dims": 1, "flip": 1,
    "logsumexp": 1, "matrix_transpose": 1, "max": 1, "mean": 1, "min": 1, "moveaxis": 1, "nonzero": 1,
    "permute_dims": 1, "prod": 1, "repeat": 1, "reshape": 1, "roll": 1, "searchsorted": 2, "sort": 1,
    "squeeze": 1, "std": 1, "sum": 1, "take": 2, "take_along_axis": 2, "tensordot": 2, "tile": 1, "tril": 1,
    "triu": 1, "unique_all": 1, "unique_counts": 1, "unique_inverse": 1, "unique_values": 1, "unstack": 1,
    "var": 1, "vecdot": 2, "empty_like": 1, "full_like": 1, "ones_like": 1, "zeros_like": 1,
}


def _non_array_error(name, args, n, exc):
    for i, a in enumerate(args[:n]):
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"{name}: argument {i} must be an array, got {type(a).__name__} "
                            f"{_short_repr(a)}; convert it with xp.asarray(...) first") from exc


def _explaining(fn, name, n):
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AttributeError as e:  # NOTE [non-array arguments]
            _non_array_error(name, args, n, e)
            raise

    _functools.update_wrapper(call, fn)
    return call


for _name in _STANDARD_NAMES:
    if hasattr(_ops, _name):
        _f = getattr(_ops, _name)
        globals()[_name] = _explaining(_f, _name, _ARRAY_ARGS[_name]) if _name in _ARRAY_ARGS else _f

from . import linalg  # noqa: E402,F401


def __getattr__(name):
    if name in _DTYPES:
        from .._backend import default_namespace

        return getattr(default_namespace(), name)
    if name == "__array_namespace_info__":
        from .._backend import default_namespace

        return getattr(default_namespace(), name)
    raise AttributeError(f"gpuad.xp has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_DTYPES))
