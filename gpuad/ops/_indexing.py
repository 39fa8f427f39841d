"""Indexing: ``x[key]``, and its transposes ``index_add`` and ``index_set``.

``key`` is a static parameter: ints, slices, ``None``, ``Ellipsis``, integer
arrays and boolean masks (plain arrays; traced ones are stripped, since an
index carries no derivative).

# NOTE [scatter]: the transpose of a gather must *accumulate* repeated indices.
# The generic ``index_add`` does so with only array-API calls: it indexes an
# ``arange`` of linear positions with the same key, then sums the values into
# place through a one-hot matrix product.  NumPy and CuPy override it with
# ``np.add.at`` / ``cupyx.scatter_add`` (see ``gpuad.backends``).
"""

from __future__ import annotations

from .._core import Tracer, full_unbox
from .._registry import deflinear
from ._creation import zeros

__all__ = ["getitem", "index_add", "index_set", "normalize_key", "key_has_arrays"]


def normalize_key(key):
    """A tuple key with traced arrays stripped to plain arrays."""
    if not isinstance(key, tuple):
        key = (key,)
    return tuple(full_unbox(k) if isinstance(k, Tracer) else k for k in key)


def key_has_arrays(key):
    return any(hasattr(k, "shape") for k in key)


def _zeros_for(spec):
    return zeros(spec.shape, dtype=spec.dtype, device=spec.device)


getitem_p = deflinear(
    "getitem", lambda xp, x, *, key: x[key],
    vjp=(lambda g, ans, x, *, key: index_add(_zeros_for(x), g, key=key),))


def getitem(x, key):
    """``x[key]``, differentiable with respect to ``x``."""
    key = normalize_key(key)
    return getitem_p(x, key=key)


def _index_add_impl(xp, base, values, *, key):
    out = xp.asarray(base, copy=True)
    if not any(hasattr(k, "shape") and not _is_bool(xp, k) for k in key):
        # Slices, ints and masks never repeat an element: plain setitem is exact.
        out[key] = out[key] + values
        return out
    n = 1
    for s in base.shape:
        n *= s
    positions = xp.reshape(xp.arange(n, device=base.device), base.shape)[key]
    picked = xp.reshape(positions, (-1,))
    vals = xp.reshape(xp.broadcast_to(xp.asarray(values, dtype=base.dtype, device=base.device),
                                      positions.shape), (1, -1))
    onehot = xp.astype(picked[:, None] == xp.arange(n, device=base.device)[None, :], base.dtype)
    return out + xp.reshape(vals @ onehot, base.shape)


def _is_bool(xp, k):
    return xp.isdtype(k.dtype, "bool")


index_add = deflinear(
    "index_add", _index_add_impl,
    vjp=(lambda g, ans, base, values, *, key: g,
         lambda g, ans, base, values, *, key: getitem_p(g, key=key)),
    doc="``base`` with ``values`` added at ``key``, repeated indices accumulating.")


def _index_set_impl(xp, base, values, *, key):
    out = xp.asarray(base, copy=True)
    out[key] = values
    return out


index_set = deflinear(
    "index_set", _index_set_impl,
    vjp=(lambda g, ans, base, values, *, key: index_set(g, 0.0, key=key),
         lambda g, ans, base, values, *, key: getitem_p(g, key=key)),
    doc="A copy of ``base`` with ``values`` written at ``key`` (functional ``__setitem__``).")
