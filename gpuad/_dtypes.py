"""Dtype names and kinds, independent of which library a dtype comes from."""

from __future__ import annotations

__all__ = ["dtype_name", "is_floating", "is_integral", "dtype_in"]

_FLOATING = {"float16", "float32", "float64", "complex64", "complex128", "bfloat16"}
_INTEGRAL = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_name_cache: dict = {}


def dtype_name(dtype):
    """``"float32"`` for any library's float32 dtype object (or a string)."""
    # Keyed by identity: dtypes of different libraries must not be compared
    # with each other (array-api-strict warns), and dtype objects are long-lived.
    hit = _name_cache.get(id(dtype))
    if hit is not None and hit[0] is dtype:
        return hit[1]
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, type):  # NumPy scalar types such as numpy.float32
        name = dtype.__name__.rstrip("_")
    else:
        name = getattr(dtype, "name", None)
        if not isinstance(name, str):
            name = str(dtype).rsplit(".", 1)[-1]
    _name_cache[id(dtype)] = (dtype, name)
    return name


def is_floating(dtype):
    """True for real or complex floating dtypes: the ones that carry derivatives."""
    return dtype_name(dtype) in _FLOATING


def is_integral(dtype):
    return dtype_name(dtype) in _INTEGRAL


def dtype_in(xp, dtype):
    """The dtype object of namespace ``xp`` with the same name as ``dtype``."""
    if dtype is None:
        return None
    name = dtype_name(dtype)
    try:
        return getattr(xp, name)
    except AttributeError:
        raise TypeError(f"dtype {dtype!r} has no equivalent in {xp.__name__}") from None
