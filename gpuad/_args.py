"""Small argument conversions shared by the public API's checks."""

from __future__ import annotations

import operator

__all__ = ["int_or_none", "short_repr"]


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
