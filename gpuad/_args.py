"""Small argument conversions shared by the public API's checks."""

from __future__ import annotations

import math
import numbers
import operator

__all__ = ["int_or_none", "short_repr", "finite_real", "int_at_least"]


def int_or_none(v):
    """``v`` as a Python ``int`` when it is a Python or NumPy integer (not a ``bool``), else ``None``.

    Floats give ``None`` rather than being truncated, so a caller can refuse
    ``2.5`` by name; NumPy integers (``np.int64(3)``, a 0-d integer array) are
    accepted wherever a Python ``int`` is.
    """
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


def short_repr(v, limit=60):
    """``repr(v)``, cut to ``limit`` characters (ending in ``...``) for error messages."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def finite_real(v, fname, name, *, lo=None, lo_open=False, hi=None, hi_open=False):
    """``v`` as a finite Python ``float`` within the given bounds.

    Parameters
    ----------
    v : object
        A Python or NumPy real number (or a 0-d array holding one); ``bool``
        is refused.
    fname, name : str
        The function and the argument, for the message.
    lo, hi : float, optional
        Bounds; ``lo_open`` / ``hi_open`` exclude them.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Naming ``fname``, ``name``, the allowed interval and ``v``.
    """
    ok = not isinstance(v, bool) and (isinstance(v, numbers.Real) or getattr(v, "ndim", None) == 0)
    if ok:
        try:
            v = float(v)
        except (TypeError, ValueError):
            ok = False
    ok = ok and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        where = ""
        if lo is not None or hi is not None:
            where = " in " + ("(" if lo_open else "[") + (f"{lo:g}" if lo is not None else "-inf") + ", " + \
                (f"{hi:g}" if hi is not None else "inf") + (")" if hi_open or hi is None else "]")
        raise ValueError(f"{fname}: {name} must be a finite number{where}, got {short_repr(v)}")
    return v


def int_at_least(v, fname, name, minimum):
    """``v`` as a Python ``int`` >= ``minimum`` (see :func:`int_or_none`), else a ``ValueError`` naming it."""
    n = int_or_none(v)
    if n is None or n < minimum:
        raise ValueError(f"{fname}: {name} must be an int >= {minimum}, got {short_repr(v)}")
    return n
