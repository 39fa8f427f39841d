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
from .._dtypes import is_integral
from .._registry import deflinear, defnondiff
from ._creation import zeros
from ._elementwise import where

__all__ = ["getitem", "index_add", "index_set", "normalize_key", "key_has_arrays", "take", "take_along_axis"]


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


def _setitem_form(xp, base, key, values):
    """``(key, values)`` usable by ``__setitem__``: the standard allows no ``None`` there.

    Without integer arrays, dropping ``None`` entries removes exactly those
    size-1 axes from the indexed shape, in order, so reshaping ``values``
    to the shape indexed without them writes the same elements.
    """
    if not any(k is None for k in key):
        return key, values
    full_shape = base[key].shape
    key = tuple(k for k in key if k is not None)
    values = xp.reshape(xp.broadcast_to(xp.asarray(values, dtype=base.dtype, device=base.device), full_shape),
                        base[key].shape)
    return key, values


def _index_add_impl(xp, base, values, *, key):
    out = xp.asarray(base, copy=True)
    if not key_has_arrays(key):
        # Slices and ints never repeat an element: plain setitem is exact.
        # (Masks take the path below too: array-api-strict cannot setitem
        # with a mask off its CPU device.)
        key, values = _setitem_form(xp, base, key, values)
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
    if (len(key) == 1 and hasattr(key[0], "shape") and _is_bool(xp, key[0])
            and tuple(key[0].shape) == tuple(base.shape) and getattr(values, "ndim", 0) == 0):
        return xp.where(key[0], xp.asarray(values, dtype=base.dtype, device=base.device), base)
    out = xp.asarray(base, copy=True)
    if not key_has_arrays(key):
        key, values = _setitem_form(xp, base, key, values)
    elif len(key) == 1:  # a lone mask or index array goes in bare: array-api-strict's tuple-key
        key = key[0]     # setitem converts an array inside a tuple through NumPy (host, CPU device)
    out[key] = values
    return out


def _has_int_arrays(key):
    """Does ``key`` hold an integer index array (the only kind that can repeat a position)?"""
    return any(hasattr(k, "shape") and not _is_bool_dtype(k.dtype) for k in key)


def _stored_mask_impl(xp, like, *, key):
    """Which positions of ``like[key]``'s shape were actually stored by ``like[key] = v``.

    Writes position ids ``0 .. m-1`` (laid out in the indexed shape) with the
    same key and the backend's own setitem, reads them back with the key,
    and compares: a position whose id was overwritten by a later duplicate
    reads back another id.
    """
    slots = xp.full(like.shape, -1, dtype=xp.int64, device=like.device)
    shape = slots[key].shape
    m = 1
    for s in shape:
        m *= s
    ids = xp.reshape(xp.arange(m, dtype=xp.int64, device=like.device), shape)
    slots[key] = ids
    return slots[key] == ids


_stored_mask = defnondiff(
    "index_set_stored", _stored_mask_impl,
    doc="Mask of the positions of ``x[key]`` that ``x[key] = v`` stores (NOTE [duplicate writes]).")


def _index_set_vjp_values(g, ans, base, values, *, key):
    # NOTE [duplicate writes]: with repeated integer indices, ``base[key] = v``
    # stores one of the values written to a position (NumPy: the last) and
    # drops the others, so only the stored value positions get a cotangent.
    # The mask is computed with the backend's own setitem, so it agrees with
    # the forward wherever the backend's choice is deterministic (NumPy: the
    # last write; CuPy does not specify which write wins).  Slices and masks
    # cannot repeat a position and skip this.
    ct = getitem_p(g, key=key)
    if _has_int_arrays(key):
        ct = where(_stored_mask(g, key=key), ct, 0.0)
    return ct


index_set = deflinear(
    "index_set", _index_set_impl,
    vjp=(lambda g, ans, base, values, *, key: index_set(g, 0.0, key=key), _index_set_vjp_values),
    doc="A copy of ``base`` with ``values`` written at ``key`` (functional ``__setitem__``).")


# --- take, take_along_axis -----------------------------------------------------
# NOTE [gather keys]: array-api-strict only allows integer-array indexing when
# every index is an integer (array); so the transposes of take and
# take_along_axis scatter with a key made only of integer arrays: an arange
# per untouched axis, shaped to broadcast against the (wrapped) indices.


def _index_grid_impl(xp, indices, *, shape, axis, along):
    n = shape[axis]
    idx = xp.where(indices < 0, indices + n, indices)
    if along:  # take_along_axis: indices has x's rank
        nd = len(shape)
        key = []
        for j, s in enumerate(shape):
            if j == axis:
                key.append(idx)
            else:
                key.append(xp.reshape(xp.arange(s, dtype=idx.dtype, device=idx.device),
                                      (1,) * j + (s,) + (1,) * (nd - j - 1)))
        return tuple(key)
    k = idx.ndim
    nd = len(shape) - 1 + k
    key = []
    for j, s in enumerate(shape):
        if j == axis:
            key.append(xp.reshape(idx, (1,) * axis + tuple(idx.shape) + (1,) * (len(shape) - axis - 1)))
            continue
        pos = j if j < axis else j - 1 + k
        key.append(xp.reshape(xp.arange(s, dtype=idx.dtype, device=idx.device),
                              (1,) * pos + (s,) + (1,) * (nd - pos - 1)))
    return tuple(key)


_index_grid = defnondiff("index_grid", _index_grid_impl,
                         doc="An all-integer-array key equivalent to take / take_along_axis (NOTE [gather keys]).")


def _scatter_back(g, x, indices, axis, along):
    key = _index_grid(indices, shape=tuple(x.shape), axis=axis, along=along)
    return index_add(_zeros_for(x), g, key=key)


take_p = deflinear(
    "take", lambda xp, x, *, indices, axis: xp.take(x, indices, axis=axis),
    vjp=(lambda g, ans, x, *, indices, axis: _scatter_back(g, x, indices, axis, False),))

take_along_axis_p = deflinear(
    "take_along_axis", lambda xp, x, *, indices, axis: xp.take_along_axis(x, indices, axis=axis),
    vjp=(lambda g, ans, x, *, indices, axis: _scatter_back(g, x, indices, axis, True),))


def _check_indices(indices, opname):
    indices = full_unbox(indices)
    if not hasattr(indices, "dtype") or not is_integral(indices.dtype) or _is_bool_dtype(indices.dtype):
        raise TypeError(f"{opname}: indices must be an integer array, got {indices!r}")
    return indices


def _is_bool_dtype(dtype):
    from .._dtypes import dtype_name

    return dtype_name(dtype) == "bool"


def take(x, indices, /, *, axis=None):
    """Elements of ``x`` at integer ``indices`` along ``axis``.

    Parameters
    ----------
    x : array, shape ``S``
    indices : integer array, shape ``I`` (1-D in the standard)
        Negative indices count from the end.  Repeated indices are allowed;
        their gradients accumulate.
    axis : int or None
        ``None`` takes from the flattened ``x``.

    Returns
    -------
    array, shape ``S[:axis] + I + S[axis+1:]``
    """
    from ._manipulation import normalize_axis, reshape

    indices = _check_indices(indices, "take")
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    if x.ndim == 0:
        raise ValueError("take: x must have at least one dimension, got a 0-d array")
    axis = normalize_axis(axis, x.ndim, "take")
    return take_p(x, indices=indices, axis=axis)


def take_along_axis(x, indices, /, *, axis=-1):
    """Elements of ``x`` at ``indices`` matched position by position along ``axis``.

    Parameters
    ----------
    x : array, shape ``S``
    indices : integer array with ``x``'s rank, broadcast-compatible with ``S``
        outside ``axis``
    axis : int

    Returns
    -------
    array, shape ``broadcast(S, indices.shape)`` with ``indices.shape[axis]`` on ``axis``
    """
    from ._manipulation import broadcast_shapes, normalize_axis

    indices = _check_indices(indices, "take_along_axis")
    if x.ndim == 0 or indices.ndim != x.ndim:
        raise ValueError(
            f"take_along_axis: x (shape {tuple(x.shape)}) and indices (shape {tuple(indices.shape)}) "
            "must have the same number of dimensions, at least one"
        )
    axis = normalize_axis(axis, x.ndim, "take_along_axis")
    xs = tuple(s for j, s in enumerate(x.shape) if j != axis)
    js = tuple(s for j, s in enumerate(indices.shape) if j != axis)
    try:
        broadcast_shapes(xs, js)
    except ValueError:
        raise ValueError(
            f"take_along_axis: x (shape {tuple(x.shape)}) and indices (shape {tuple(indices.shape)}) "
            f"do not broadcast outside axis {axis}"
        ) from None
    return take_along_axis_p(x, indices=indices, axis=axis)
