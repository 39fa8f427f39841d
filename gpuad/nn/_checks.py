"""Argument checks shared by :mod:`gpuad.nn.functional` and :mod:`gpuad.nn.layers`.

Each raises a ``ValueError``/``TypeError`` whose message names the function,
the argument and the shapes or values involved.  They look at shapes, dtypes
and Python numbers only, except :func:`_need_ids_in_range`, which reads
integer ids where that costs no device synchronisation.
"""

from __future__ import annotations

import math
import numbers

from .._args import int_or_none
from .._backend import host_readable
from .._core import full_unbox
from .._dtypes import dtype_name, is_integral


def _pair(v, name, fname):
    """``v`` (an int or a pair of ints; NumPy integers count) as a pair of Python ints."""
    n = int_or_none(v)
    if n is not None:
        return (n, n)
    try:
        a, b = v
        pair = (int_or_none(a), int_or_none(b))
        if None not in pair:
            return pair
    except (TypeError, ValueError):
        pass
    raise TypeError(f"{fname}: {name} must be an int or a pair of ints, got {v!r}")


def _window_args(kernel_size, stride, padding, fname, *, pool=False):
    """``(kh, kw), (sh, sw), (ph, pw)`` of a convolution or pooling window, checked.

    ``kernel_size`` and ``stride`` must be >= 1 and ``padding`` >= 0 on each
    axis.  For pooling (``pool=True``) a ``None`` stride is the kernel size,
    and ``padding`` must be at most half the kernel on each axis (PyTorch's
    rule): a window lying wholly in the padding would pool no input at all
    (``-inf`` for max pooling).
    """
    k = _pair(kernel_size, "kernel_size", fname)
    s = k if pool and stride is None else _pair(stride, "stride", fname)
    p = _pair(padding, "padding", fname)
    if min(k) < 1:
        raise ValueError(f"{fname}: kernel_size must be >= 1 on each axis, got {kernel_size!r}")
    if min(s) < 1:
        raise ValueError(f"{fname}: stride must be >= 1 on each axis, got {stride!r}")
    if min(p) < 0:
        raise ValueError(f"{fname}: padding must be >= 0 on each axis, got {padding!r}")
    if pool and (p[0] > k[0] // 2 or p[1] > k[1] // 2):
        raise ValueError(f"{fname}: padding {padding!r} is more than half of kernel_size {kernel_size!r} "
                         f"(at most {k[0] // 2} x {k[1] // 2}): windows entirely in the padding would pool no input")
    return k, s, p


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
