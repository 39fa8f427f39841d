"""Searching, sorting, sets and truth tests: outputs carry no derivative.

Every op here is declared with ``defnondiff``: tracers are stripped from the
arguments and the result is a plain array (or a tuple of them), so they can be
used freely inside traced code.  The one exception is :func:`sort` of a traced
array, which is differentiable in the values: it gathers ``x`` with
``take_along_axis`` at the (stable) ``argsort`` positions.
"""

from __future__ import annotations

from .._core import Tracer
from .._registry import defnondiff
from ._indexing import take_along_axis
from ._manipulation import normalize_axes, normalize_axis

__all__ = [
    "argmax", "argmin", "argsort", "sort", "nonzero", "count_nonzero", "searchsorted",
    "unique_values", "unique_counts", "unique_inverse", "unique_all", "all", "any",
]


def _opt_axis(axis, ndim, name):
    return None if axis is None else normalize_axis(axis, ndim, name)


def _tuple_axes(axis, ndim, name):
    return None if axis is None else normalize_axes(axis, ndim, name)


_argmax = defnondiff("argmax", lambda xp, x, *, axis, keepdims: xp.argmax(x, axis=axis, keepdims=keepdims))
_argmin = defnondiff("argmin", lambda xp, x, *, axis, keepdims: xp.argmin(x, axis=axis, keepdims=keepdims))


def _check_nonempty(x, axis, name):
    n = x.shape[axis] if axis is not None else (0 if 0 in tuple(x.shape) else 1)
    if n == 0:
        raise ValueError(f"{name}: cannot search a zero-size {'axis ' + str(axis) if axis is not None else 'array'} "
                         f"of an array of shape {tuple(x.shape)}")


def argmax(x, /, *, axis=None, keepdims=False):
    """Index of the first maximum along ``axis`` (of the flattened ``x`` if ``None``).

    Parameters
    ----------
    x : array, shape ``S``
    axis : int or None
    keepdims : bool

    Returns
    -------
    integer array, ``S`` without ``axis`` (a 0-d array for ``axis=None``)
    """
    axis = _opt_axis(axis, x.ndim, "argmax")
    _check_nonempty(x, axis, "argmax")
    return _argmax(x, axis=axis, keepdims=keepdims)


def argmin(x, /, *, axis=None, keepdims=False):
    """Index of the first minimum along ``axis``; shapes as :func:`argmax`."""
    axis = _opt_axis(axis, x.ndim, "argmin")
    _check_nonempty(x, axis, "argmin")
    return _argmin(x, axis=axis, keepdims=keepdims)


_argsort = defnondiff(
    "argsort", lambda xp, x, *, axis, descending, stable:
        xp.argsort(x, axis=axis, descending=descending, stable=stable))
_sort = defnondiff(
    "sort", lambda xp, x, *, axis, descending, stable: xp.sort(x, axis=axis, descending=descending, stable=stable))


def _sort_axis(x, axis, name):
    if x.ndim == 0:
        raise ValueError(f"{name}: x must have at least one dimension, got a 0-d array")
    return normalize_axis(axis, x.ndim, name)


def argsort(x, /, *, axis=-1, descending=False, stable=True):
    """Indices that sort ``x`` along ``axis``.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)
    axis : int
    descending : bool
    stable : bool
        Keep the order of equal elements.

    Returns
    -------
    integer array, shape ``S``
    """
    axis = _sort_axis(x, axis, "argsort")
    return _argsort(x, axis=axis, descending=descending, stable=stable)


def sort(x, /, *, axis=-1, descending=False, stable=True):
    """``x`` sorted along ``axis``; differentiable in the values of a traced ``x``.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)
    axis : int
    descending : bool
    stable : bool

    Returns
    -------
    array, shape ``S``.  The gradient of each output element goes to the
    input element it came from (ties resolved by the stable order).
    """
    axis = _sort_axis(x, axis, "sort")
    if isinstance(x, Tracer):
        idx = _argsort(x, axis=axis, descending=descending, stable=True)
        return take_along_axis(x, idx, axis=axis)
    return _sort(x, axis=axis, descending=descending, stable=stable)


_nonzero = defnondiff("nonzero", lambda xp, x: tuple(xp.nonzero(x)))


def nonzero(x, /):
    """Indices of the non-zero elements of ``x``.

    Parameters
    ----------
    x : array, shape ``S`` (at least 1-D)

    Returns
    -------
    tuple of ``len(S)`` 1-D integer arrays of equal length
    """
    if x.ndim == 0:
        raise ValueError("nonzero: x must have at least one dimension, got a 0-d array")
    return _nonzero(x)


_count_nonzero = defnondiff(
    "count_nonzero", lambda xp, x, *, axis, keepdims: xp.count_nonzero(x, axis=axis, keepdims=keepdims))


def count_nonzero(x, /, *, axis=None, keepdims=False):
    """Number of non-zero elements over ``axis``.

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None
    keepdims : bool

    Returns
    -------
    integer array, ``S`` without the reduced axes
    """
    return _count_nonzero(x, axis=_tuple_axes(axis, x.ndim, "count_nonzero"), keepdims=keepdims)


_searchsorted = defnondiff(
    "searchsorted", lambda xp, x1, x2, *, side, sorter: xp.searchsorted(x1, x2, side=side, sorter=sorter))


def searchsorted(x1, x2, /, *, side="left", sorter=None):
    """Insertion points of ``x2`` into the sorted 1-D ``x1``.

    Parameters
    ----------
    x1 : array, shape ``(M,)``
        Sorted ascending (unless ``sorter`` sorts it).
    x2 : array, any shape
    side : {"left", "right"}
    sorter : integer array, shape ``(M,)``, optional

    Returns
    -------
    integer array, shape of ``x2``
    """
    if x1.ndim != 1:
        raise ValueError(f"searchsorted: x1 must be 1-D, got shape {tuple(x1.shape)}")
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    from .._core import full_unbox

    sorter = None if sorter is None else full_unbox(sorter)
    return _searchsorted(x1, x2, side=side, sorter=sorter)


_unique_values = defnondiff("unique_values", lambda xp, x: xp.unique_values(x))
_unique_counts = defnondiff("unique_counts", lambda xp, x: xp.unique_counts(x))
_unique_inverse = defnondiff("unique_inverse", lambda xp, x: xp.unique_inverse(x))
_unique_all = defnondiff("unique_all", lambda xp, x: xp.unique_all(x))


def unique_values(x, /):
    """Distinct elements of ``x``.

    Parameters
    ----------
    x : array, any shape (flattened)

    Returns
    -------
    1-D array of the ``K`` distinct values
    """
    return _unique_values(x)


def unique_counts(x, /):
    """Distinct elements of ``x`` and how often each occurs.

    Returns
    -------
    namedtuple ``(values, counts)`` of two 1-D arrays of length ``K``
    """
    return _unique_counts(x)


def unique_inverse(x, /):
    """Distinct elements of ``x`` and, per element of ``x``, the index of its value.

    Returns
    -------
    namedtuple ``(values, inverse_indices)``: shapes ``(K,)`` and ``x``'s shape
    (``values[inverse_indices]`` rebuilds ``x``)
    """
    return _unique_inverse(x)


def unique_all(x, /):
    """Distinct elements of ``x`` with first indices, inverse indices and counts.

    Returns
    -------
    namedtuple ``(values, indices, inverse_indices, counts)``: shapes ``(K,)``,
    ``(K,)``, ``x``'s shape and ``(K,)``
    """
    return _unique_all(x)


_all = defnondiff("all", lambda xp, x, *, axis, keepdims: xp.all(x, axis=axis, keepdims=keepdims))
_any = defnondiff("any", lambda xp, x, *, axis, keepdims: xp.any(x, axis=axis, keepdims=keepdims))


def all(x, /, *, axis=None, keepdims=False):
    """Whether all elements over ``axis`` are true (non-zero).

    Parameters
    ----------
    x : array, shape ``S``
    axis : int, tuple of int or None
    keepdims : bool

    Returns
    -------
    boolean array, ``S`` without the reduced axes
    """
    return _all(x, axis=_tuple_axes(axis, x.ndim, "all"), keepdims=keepdims)


def any(x, /, *, axis=None, keepdims=False):
    """Whether any element over ``axis`` is true (non-zero); shapes as :func:`all`."""
    return _any(x, axis=_tuple_axes(axis, x.ndim, "any"), keepdims=keepdims)
