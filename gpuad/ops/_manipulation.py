"""Shape manipulation primitives.  All are linear, so their VJPs keep nothing.

# NOTE [views]: reshape, permute_dims, expand_dims, squeeze and broadcast_to
# return whatever the backend returns (a view on NumPy and CuPy); their rules
# are themselves views of the cotangent, so backward allocates nothing for them.
"""

from __future__ import annotations

from .._registry import deflinear

__all__ = [
    "reshape", "broadcast_to", "permute_dims", "matrix_transpose", "expand_dims", "squeeze",
    "normalize_axis", "normalize_axes", "concat", "stack",
]


def normalize_axis(axis, ndim, opname="op"):
    """A non-negative axis; ``IndexError`` naming the op if out of range."""
    if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        raise IndexError(f"{opname}: axis {axis} is out of range for an array of {ndim} dimensions")
    return axis % ndim if ndim else 0


def normalize_axes(axis, ndim, opname="op"):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = tuple(sorted(normalize_axis(a, ndim, opname) for a in axis))
    if len(set(out)) != len(out):
        raise ValueError(f"{opname}: repeated axis in {axis}")
    return out


def _reshape_impl(xp, x, *, shape):
    return xp.reshape(x, shape)


reshape_p = deflinear("reshape", _reshape_impl, vjp=(lambda g, ans, x, *, shape: reshape(g, x.shape),))


def reshape(x, /, shape, *, copy=None):
    """Reshape ``x`` to ``shape`` (one ``-1`` allowed)."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        size = 1
        for s in x.shape:
            size *= s
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape array of shape {tuple(x.shape)} into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if shape == tuple(x.shape):
        return x
    return reshape_p(x, shape=shape)


broadcast_p = deflinear(
    "broadcast_to", lambda xp, x, *, shape: xp.broadcast_to(x, shape),
    vjp=(lambda g, ans, x, *, shape: g,))  # the engine sums g back to x's shape


def broadcast_to(x, /, shape):
    shape = tuple(shape)
    if shape == tuple(x.shape):
        return x
    return broadcast_p(x, shape=shape)


def _inverse_perm(axes):
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return tuple(inv)


permute_p = deflinear(
    "permute_dims", lambda xp, x, *, axes: xp.permute_dims(x, axes),
    vjp=(lambda g, ans, x, *, axes: permute_dims(g, _inverse_perm(axes)),))


def permute_dims(x, /, axes):
    axes = tuple(normalize_axis(a, x.ndim, "permute_dims") for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute_dims: axes {axes} are not a permutation of {x.ndim} dimensions")
    if axes == tuple(range(x.ndim)):
        return x
    return permute_p(x, axes=axes)


def matrix_transpose(x, /):
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose: needs at least 2 dimensions, got shape {tuple(x.shape)}")
    axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return permute_p(x, axes=axes)


def expand_dims(x, /, axis=0):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    nd = x.ndim + len(axes)
    axes = sorted(normalize_axis(a, nd, "expand_dims") for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def squeeze(x, /, axis=None):
    if axis is None:
        axes = tuple(i for i, s in enumerate(x.shape) if s == 1)
    else:
        axes = normalize_axes(axis, x.ndim, "squeeze")
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {tuple(x.shape)} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def _concat_vjp(i, g, ans, *arrays, axis):
    start = 0
    for a in arrays[:i]:
        start += a.shape[axis]
    key = (slice(None),) * axis + (slice(start, start + arrays[i].shape[axis]),)
    from ._indexing import getitem

    return getitem(g, key)


concat_p = deflinear("concat", lambda xp, *arrays, axis: xp.concat(arrays, axis=axis), vjp_variadic=_concat_vjp)


def concat(arrays, /, *, axis=0):
    """Join arrays along an existing axis (``axis=None`` flattens them first)."""
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("concat: needs at least one array")
    if axis is None:
        arrays = tuple(reshape(a, (-1,)) for a in arrays)
        axis = 0
    nd = arrays[0].ndim
    axis = normalize_axis(axis, nd, "concat")
    for k, a in enumerate(arrays):
        if a.ndim != nd or any(s != t for j, (s, t) in enumerate(zip(a.shape, arrays[0].shape)) if j != axis):
            raise ValueError(
                f"concat: array {k} has shape {tuple(a.shape)}, which does not match array 0's shape "
                f"{tuple(arrays[0].shape)} outside axis {axis}"
            )
    return concat_p(*arrays, axis=axis)


def stack(arrays, /, *, axis=0):
    """Join same-shaped arrays along a new axis."""
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("stack: needs at least one array")
    shape = tuple(arrays[0].shape)
    for k, a in enumerate(arrays):
        if tuple(a.shape) != shape:
            raise ValueError(f"stack: array {k} has shape {tuple(a.shape)}, array 0 has {shape}")
    axis = normalize_axis(axis, len(shape) + 1, "stack")
    return concat_p(*(expand_dims(a, axis) for a in arrays), axis=axis)
