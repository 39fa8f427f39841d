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

import math as _math

from .. import ops as _ops
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

for _name in _STANDARD_NAMES:
    if hasattr(_ops, _name):
        globals()[_name] = getattr(_ops, _name)

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
