"""Shape manipulation primitives.  All are linear, so their VJPs keep nothing.

# NOTE [views]: reshape, permute_dims, expand_dims, squeeze and broadcast_to
# return whatever the backend returns (a view on NumPy and CuPy); their rules
# are themselves views of the cotangent, so backward allocates nothing for them.
"""

from __future__ import annotations

import operator

from .._args import int_or_none
from .._core import full_unbox
from .._registry import deflinear, defnondiff, defop

__all__ = [
    "reshape", "broadcast_to", "permute_dims", "matrix_transpose", "expand_dims", "squeeze",
    "normalize_axis", "normalize_axes", "concat", "stack",
    "flip", "roll", "tile", "repeat", "moveaxis", "broadcast_arrays", "broadcast_shapes", "unstack",
    "diff", "full_as",
]


def normalize_axis(axis, ndim, opname="op"):
    """A non-negative axis; ``IndexError`` naming the op if out of range, ``TypeError`` if not an int."""
    try:
        if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
            raise IndexError(f"{opname}: axis {axis} is out of range for an array of {ndim} dimensions")
        out = axis % ndim if ndim else 0
    except TypeError:  # a string, None, ...
        out = None
    if type(out) is not int:
        try:  # NumPy integers are axes; floats and the rest are not
            out = operator.index(out)
        except TypeError:
            raise TypeError(f"{opname}: axis must be an int, got {type(axis).__name__} {axis!r}") from None
    return out


def normalize_axes(axis, ndim, opname="op"):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    try:
        out = tuple(sorted(normalize_axis(a, ndim, opname) for a in axis))
    except TypeError:
        if hasattr(axis, "__iter__"):
            raise
        out = (normalize_axis(axis, ndim, opname),)  # a NumPy integer; anything else raises, naming the op
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
    try:
        shape = tuple(shape)
    except TypeError:
        shape = _not_a_shape(shape, "reshape")
    if -1 in shape:
        if shape.count(-1) > 1:
            raise ValueError(f"reshape: only one dimension can be -1, got shape {shape} for an array of shape "
                             f"{tuple(x.shape)}")
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


def _not_a_shape(shape, opname):
    """``shape`` could not be made a tuple: an int stands for ``(shape,)``, anything else is an error."""
    try:
        return (operator.index(shape),)
    except TypeError:
        raise TypeError(f"{opname}: shape must be a tuple of ints, got {type(shape).__name__} {shape!r}") from None


def broadcast_to(x, /, shape):
    try:
        shape = tuple(shape)
    except TypeError:
        shape = _not_a_shape(shape, "broadcast_to")
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
    if len(set(axes)) != len(axes):
        raise ValueError(f"expand_dims: repeated axis in {axis} (x has shape {tuple(x.shape)})")
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
    key = (slice(None),) * axis + (slice(start, start + arrays[i].shape[axis]), Ellipsis)
    from ._indexing import getitem

    return getitem(g, key)


concat_p = deflinear("concat", lambda xp, *arrays, axis: xp.concat(arrays, axis=axis), vjp_variadic=_concat_vjp)


def concat(arrays, /, *, axis=0):
    """Join arrays along an existing axis (``axis=None`` flattens them first)."""
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("concat: needs at least one array")
    try:
        if axis is None:
            arrays = tuple(reshape(a, (-1,)) for a in arrays)
            axis = 0
        nd = arrays[0].ndim
        axis = normalize_axis(axis, nd, "concat")
        if nd == 0:
            raise ValueError(f"concat: zero-dimensional arrays cannot be concatenated (shapes "
                             f"{', '.join(str(tuple(a.shape)) for a in arrays)}); use stack")
        for k, a in enumerate(arrays):
            if a.ndim != nd or any(s != t for j, (s, t) in enumerate(zip(a.shape, arrays[0].shape)) if j != axis):
                raise ValueError(
                    f"concat: array {k} has shape {tuple(a.shape)}, which does not match array 0's shape "
                    f"{tuple(arrays[0].shape)} outside axis {axis}"
                )
    except AttributeError:
        _check_arrays(arrays, "concat")
        raise
    return concat_p(*arrays, axis=axis)


def _check_arrays(arrays, opname):
    """``TypeError`` naming the op unless every entry of ``arrays`` is an array."""
    for k, a in enumerate(arrays):
        if not hasattr(a, "shape"):
            raise TypeError(f"{opname}: array {k} is a {type(a).__name__}, not an array: {a!r}")


def stack(arrays, /, *, axis=0):
    """Join same-shaped arrays along a new axis."""
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("stack: needs at least one array")
    try:
        shape = tuple(arrays[0].shape)
        for k, a in enumerate(arrays):
            if tuple(a.shape) != shape:
                raise ValueError(f"stack: array {k} has shape {tuple(a.shape)}, array 0 has {shape}")
    except AttributeError:
        _check_arrays(arrays, "stack")
        raise
    axis = normalize_axis(axis, len(shape) + 1, "stack")
    return concat_p(*(expand_dims(a, axis) for a in arrays), axis=axis)


# --- helpers shared by the rules of other modules ---------------------------
full_as = defnondiff(
    "full_as",
    lambda xp, ref, *, shape, value: xp.full(tuple(shape), value, dtype=ref.dtype, device=ref.device),
    doc="A plain array of ``shape`` filled with ``value``, with ``ref``'s namespace, dtype and device.")


def _slice_along(x, axis, start, stop):
    """``x[..., start:stop, ...]`` with the slice on ``axis``."""
    from ._indexing import getitem

    return getitem(x, (slice(None),) * axis + (slice(start, stop), Ellipsis))


# --- flip, roll -------------------------------------------------------------
flip_p = deflinear(
    "flip", lambda xp, x, *, axis: xp.flip(x, axis=axis),
    vjp=(lambda g, ans, x, *, axis: flip_p(g, axis=axis),))


def flip(x, /, *, axis=None):
    """Reverse the order of elements along ``axis`` (all axes by default).

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None

    Returns
    -------
    array, shape ``S``
    """
    axes = normalize_axes(axis, x.ndim, "flip")
    if not axes or all(x.shape[a] <= 1 for a in axes):
        return x
    return flip_p(x, axis=axes)


def _roll_impl(xp, x, *, shift, axis):
    return xp.roll(x, shift, axis=axis)


def _neg_shift(shift):
    return -shift if isinstance(shift, int) else tuple(-s for s in shift)


roll_p = deflinear(
    "roll", _roll_impl,
    vjp=(lambda g, ans, x, *, shift, axis: roll_p(g, shift=_neg_shift(shift), axis=axis),))


def roll(x, /, shift, *, axis=None):
    """Shift elements cyclically along ``axis`` (of the flattened array when ``None``).

    Parameters
    ----------
    x : array, shape ``S``
    shift : int or tuple of int
        One shift per axis in ``axis`` (an int applies to all of them).
    axis : int, tuple of int or None

    Returns
    -------
    array, shape ``S``
    """
    if axis is None:
        one = int_or_none(shift)
        if one is None:
            raise ValueError(f"roll: shift must be an int when axis is None, got {shift!r}")
        return roll_p(x, shift=one, axis=None)
    axes = (axis,) if int_or_none(axis) is not None else tuple(axis)
    axes = tuple(normalize_axis(a, x.ndim, "roll") for a in axes)
    try:  # operator.index: a float shift is refused, not truncated; a NumPy integer is an int
        one = int_or_none(shift)
        shift = (one,) * len(axes) if one is not None else tuple(operator.index(s) for s in shift)
    except TypeError:
        raise TypeError(f"roll: shift must be an int or a tuple of ints, got {shift!r}") from None
    if len(shift) != len(axes):
        raise ValueError(f"roll: {len(shift)} shifts given for {len(axes)} axes {axes}")
    return roll_p(x, shift=shift, axis=axes)


# --- tile, repeat -------------------------------------------------------------
def tile(x, repetitions, /):
    """Repeat the whole of ``x`` ``repetitions[i]`` times along axis ``i``.

    Parameters
    ----------
    x : array, shape ``S``
    repetitions : tuple of int
        If longer than ``S``, ``x`` gains leading axes of size 1; if shorter,
        it is padded with leading ones.

    Returns
    -------
    array, shape ``(r0 * s0, r1 * s1, ...)``
    """
    try:  # operator.index: a float repetition is refused, not truncated; a NumPy integer is an int
        one = int_or_none(repetitions)
        reps = (one,) if one is not None else tuple(operator.index(r) for r in repetitions)
    except TypeError:
        raise TypeError(f"tile: repetitions must be a tuple of ints, got {repetitions!r}") from None
    if any(r < 0 for r in reps):
        raise ValueError(f"tile: repetitions must be non-negative, got {reps}")
    nd = max(x.ndim, len(reps))
    shape = (1,) * (nd - x.ndim) + tuple(x.shape)
    reps = (1,) * (nd - len(reps)) + reps
    inter = []
    wide = []
    for r, s in zip(reps, shape):
        inter += [1, s]
        wide += [r, s]
    y = broadcast_to(reshape(x, tuple(inter)), tuple(wide))
    return reshape(y, tuple(r * s for r, s in zip(reps, shape)))


_repeat_index = defnondiff(
    "repeat_index",
    lambda xp, repeats, *, n: xp.repeat(xp.arange(n, dtype=repeats.dtype, device=repeats.device), repeats),
    doc="The source position of each output element of ``repeat`` with array ``repeats``.")


def repeat(x, repeats, /, *, axis=None):
    """Repeat each element of ``x`` along ``axis`` (of the flattened array when ``None``).

    Parameters
    ----------
    x : array
    repeats : int or 1-D integer array
        Number of repetitions of each element: one per element along
        ``axis``, or a single one for all.
    axis : int or None

    Returns
    -------
    array
        ``x``'s shape with ``axis`` of size ``sum(repeats)`` (or ``n * repeats``).
    """
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    axis = normalize_axis(axis, x.ndim, "repeat")
    n = x.shape[axis]
    if isinstance(repeats, int):
        if repeats < 0:
            raise ValueError(f"repeat: repeats must be non-negative, got {repeats}")
        shape = tuple(x.shape)
        y = expand_dims(x, axis + 1)
        y = broadcast_to(y, shape[: axis + 1] + (repeats,) + shape[axis + 1:])
        return reshape(y, shape[:axis] + (n * repeats,) + shape[axis + 1:])
    repeats = full_unbox(repeats)
    if not hasattr(repeats, "ndim"):
        raise TypeError(f"repeat: repeats must be an int or an integer array, got {type(repeats).__name__} "
                        f"{repeats!r}")
    if repeats.ndim > 1 or (repeats.ndim == 1 and repeats.shape[0] not in (1, n)):
        raise ValueError(
            f"repeat: repeats of shape {tuple(repeats.shape)} does not match axis {axis} of size {n} "
            f"of x with shape {tuple(x.shape)}"
        )
    from ._indexing import take

    return take(x, _repeat_index(repeats, n=n), axis=axis)


# --- moveaxis, broadcast_arrays, unstack --------------------------------------
def moveaxis(x, source, destination, /):
    """Move axes ``source`` of ``x`` to positions ``destination``, keeping the others' order.

    Parameters
    ----------
    x : array
    source, destination : int or tuple of int, of equal length

    Returns
    -------
    array, ``x``'s shape permuted
    """
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise ValueError(f"moveaxis: source {src} and destination {dst} differ in length")
    src = tuple(normalize_axis(a, x.ndim, "moveaxis") for a in src)
    dst = tuple(normalize_axis(a, x.ndim, "moveaxis") for a in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError(f"moveaxis: repeated axis in source {source} or destination {destination}")
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return permute_dims(x, tuple(order))


def broadcast_shapes(*shapes):
    """The shape that ``shapes`` broadcast to; ``ValueError`` naming them otherwise."""
    nd = 0
    for s in shapes:
        nd = max(nd, len(s))
    out = [1] * nd
    for s in shapes:
        for i, d in enumerate(s):
            j = nd - len(s) + i
            if out[j] == 1:
                out[j] = d
            elif d != 1 and d != out[j]:
                raise ValueError(f"broadcast_shapes: shapes {', '.join(str(tuple(t)) for t in shapes)} "
                                 "do not broadcast together")
    return tuple(out)


def broadcast_arrays(*arrays):
    """Broadcast arrays against each other.

    Returns
    -------
    list of arrays, all of the common broadcast shape
    """
    try:
        shape = broadcast_shapes(*(tuple(a.shape) for a in arrays))
    except ValueError as e:
        raise ValueError("broadcast_arrays: " + str(e).split(": ", 1)[1]) from None
    return [broadcast_to(a, shape) for a in arrays]


unstack_p = defop(
    "unstack", lambda xp, x, *, axis: tuple(xp.unstack(x, axis=axis)),
    vjp=(lambda g, ans, x, *, axis: stack(list(g), axis=axis),),
    jvp=(lambda t, ans, x, *, axis: unstack_p(t, axis=axis),),
    keep_args=(), keep_ans=False, multiple_results=True)


def unstack(x, /, *, axis=0):
    """Split ``x`` along ``axis`` into a tuple of arrays.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)
    axis : int

    Returns
    -------
    tuple of ``S[axis]`` arrays, each of shape ``S`` without ``axis``
    """
    if x.ndim == 0:
        raise ValueError("unstack: x must have at least one dimension, got a 0-d array")
    axis = normalize_axis(axis, x.ndim, "unstack")
    if x.shape[axis] == 0:
        return ()
    return unstack_p(x, axis=axis)


# --- diff ---------------------------------------------------------------------
def diff(x, /, *, axis=-1, n=1, prepend=None, append=None):
    """``n``-th forward difference along ``axis``.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)
    axis : int
    n : int
        Number of times to difference (``n >= 0``).
    prepend, append : array, optional
        Joined to ``x`` along ``axis`` before differencing (same shape
        outside ``axis``).

    Returns
    -------
    array, shape ``S`` with ``axis`` shortened by ``n`` (after joining),
    never below 0.
    """
    if x.ndim == 0:
        raise ValueError("diff: x must have at least one dimension, got a 0-d array")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"diff: n must be a non-negative int, got {n!r}")
    axis = normalize_axis(axis, x.ndim, "diff")
    parts = [a for a in (prepend, x, append) if a is not None]
    if len(parts) > 1:
        x = concat(parts, axis=axis)
    from ._elementwise import subtract

    for _ in range(n):
        m = x.shape[axis]
        if m == 0:
            break
        x = subtract(_slice_along(x, axis, 1, m), _slice_along(x, axis, 0, m - 1))
    return x
