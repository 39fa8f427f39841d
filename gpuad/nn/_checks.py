"""Argument checks shared by :mod:`gpuad.nn.functional` and :mod:`gpuad.nn.layers`.

Each raises a ``ValueError``/``TypeError`` whose message names the function,
the argument and the shapes or values involved.  They look at shapes, dtypes
and Python numbers only, except :func:`_need_ids_in_range`, which reads
integer ids where that costs no device synchronisation.
"""

from __future__ import annotations

import math
import numbers

from .._backend import host_readable
from .._core import full_unbox
from .._dtypes import dtype_name, is_integral


def _pair(v, name, fname):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        a, b = v
        if all(isinstance(t, int) and not isinstance(t, bool) for t in (a, b)):
            return (a, b)
    except (TypeError, ValueError):
        pass
    raise TypeError(f"{fname}: {name} must be an int or a pair of ints, got {v!r}")


def _shape_of(x):
    return tuple(x.shape) if hasattr(x, "shape") else type(x).__name__


def _need_shape(a, shape, fname, what, why=""):
    """``a`` (when given) must have exactly ``shape``."""
    if a is not None and (not hasattr(a, "shape") or tuple(a.shape) != shape):
        raise ValueError(f"{fname}: {what} must have shape {shape}{why}, got {_shape_of(a)}")


def _broadcast_shape(a, b):
    """The broadcast of two shapes, or None where they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        m = a[-i] if i <= len(a) else 1
        n = b[-i] if i <= len(b) else 1
        if m != n and m != 1 and n != 1:
            return None
        out.append(n if m == 1 else m)
    return tuple(reversed(out))


def _need_broadcast_to(a, shape, fname, what, target="x"):
    """``a`` (when given) must broadcast to ``shape`` without growing it."""
    if a is None or not hasattr(a, "shape"):
        return
    if _broadcast_shape(tuple(a.shape), shape) != shape:
        raise ValueError(f"{fname}: {what} of shape {tuple(a.shape)} does not broadcast to {target} of shape {shape}")


def _need_eps(eps, fname):
    """A Python or NumPy real ``eps`` must be finite and >= 0 (an array is left to broadcasting)."""
    if isinstance(eps, numbers.Real) and not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"{fname}: eps must be a finite number >= 0, got {eps!r}")


def _need_ids_in_range(ids, n, fname, what, bound):
    """Integer ``ids`` within ``[0, n)``.

    The values are checked where the host reads them without a device
    synchronisation (NumPy: two reductions, no transfer; see
    :func:`gpuad._backend.host_readable`).  On a GPU the check would need a
    synchronisation per call, so device arrays are not checked there.
    """
    raw = full_unbox(ids)
    dt = getattr(raw, "dtype", None)
    if dt is None or not is_integral(dt) or dtype_name(dt) == "bool":
        raise TypeError(f"{fname}: {what} must be an integer array, got "
                        f"{'dtype ' + str(dt) if dt is not None else type(ids).__name__}")
    if raw.size and host_readable(raw):
        lo, hi = raw.min(), raw.max()
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fname}: {what} must be in [0, {n}) ({bound}), got {int(bad)} "
                             f"({what} of shape {tuple(raw.shape)})")


def _need_ndim(x, nd, fname, what="x", layout=""):
    if getattr(x, "ndim", None) != nd:
        raise ValueError(f"{fname}: {what} must be {nd}-D{layout}, got shape {_shape_of(x)}")


# --- linear -------------------------------------------------------------------------
