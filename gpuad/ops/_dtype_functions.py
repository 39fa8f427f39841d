"""The standard's data-type functions, for dtypes and arrays of any backend.

They accept tracers (read through to their values) and dtypes from any
library; with no array to decide, the default backend answers.
"""

from __future__ import annotations

from .._backend import default_namespace, namespace_of
from .._core import full_unbox
from .._dtypes import dtype_in, dtype_name

__all__ = ["isdtype", "result_type", "can_cast", "finfo", "iinfo"]

_KINDS = {
    "bool": {"bool"},
    "signed integer": {"int8", "int16", "int32", "int64"},
    "unsigned integer": {"uint8", "uint16", "uint32", "uint64"},
    "real floating": {"float16", "float32", "float64"},
    "complex floating": {"complex64", "complex128"},
}
_KINDS["integral"] = _KINDS["signed integer"] | _KINDS["unsigned integer"]
_KINDS["numeric"] = _KINDS["integral"] | _KINDS["real floating"] | _KINDS["complex floating"]


def isdtype(dtype, kind):
    """Whether ``dtype`` is of ``kind`` (a kind name, a dtype, or a tuple of those)."""
    if isinstance(kind, tuple):
        return any(isdtype(dtype, k) for k in kind)
    name = dtype_name(dtype)
    if isinstance(kind, str):
        try:
            return name in _KINDS[kind]
        except KeyError:
            raise ValueError(f"isdtype: unknown kind {kind!r}; expected one of {sorted(_KINDS)}") from None
    return name == dtype_name(kind)


def _is_array(a):
    # NumPy dtypes have a shape too, and NumPy scalar types have both as descriptors.
    return not isinstance(a, type) and hasattr(a, "shape") and hasattr(a, "device")


def _split(args):
    """The namespace to ask, and the arguments with foreign dtypes translated."""
    args = [full_unbox(a) for a in args]
    arrays = [a for a in args if _is_array(a)]
    xp = namespace_of(arrays, "result_type") if arrays else default_namespace()
    return xp, [a if _is_array(a) or isinstance(a, (bool, int, float, complex)) else dtype_in(xp, a)
                for a in args]


def result_type(*arrays_and_dtypes):
    """The dtype that type promotion gives for these arrays, dtypes and scalars."""
    xp, args = _split(arrays_and_dtypes)
    return xp.result_type(*args)


def can_cast(from_, to, /):
    xp, (f, t) = _split((from_, to))
    return xp.can_cast(f, t)


def finfo(type, /):
    xp, (t,) = _split((type,))
    return xp.finfo(t)


def iinfo(type, /):
    xp, (t,) = _split((type,))
    return xp.iinfo(t)
