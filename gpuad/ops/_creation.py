"""Array creation.  No derivatives flow through these: outputs are plain arrays,
except ``full``/``full_like`` with a traced ``fill_value`` (NOTE [traced fill]).

Functions with an array argument (``zeros_like``) create on that array's
backend and device; the others use ``device`` if it names a backend's device,
else the default backend.
"""

from __future__ import annotations

from .._args import short_repr
from .._backend import default_namespace, namespace_of
from .._core import Tracer, full_unbox
from .._dtypes import dtype_in, dtype_name
from .._registry import EXPLAINED, reraise_as

__all__ = [
    "zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like",
    "arange", "linspace", "eye", "asarray", "meshgrid", "from_dlpack", "namespace_for_device",
]


def namespace_for_device(device):
    """The namespace that owns ``device`` (the default backend's for ``None``)."""
    if device is None:
        return default_namespace()
    mod = type(device).__module__ or ""
    if mod.startswith("array_api_strict"):
        from .._backend import backend_module

        return backend_module("array_api_strict").namespace()
    if mod.startswith("cupy"):
        from .._backend import backend_module

        return backend_module("cupy").namespace()
    if isinstance(device, str) and device == "cpu":
        # NumPy's device (``np.zeros(1).device``): NumPy, whatever the default
        # backend is (e.g. adam.init of NumPy parameters on a CUDA machine).
        from .._backend import backend_module

        return backend_module("numpy").namespace()
    return default_namespace()


class _Described(str):
    """An argument already described in words (its ``repr`` is itself)."""

    def __repr__(self):
        return str(self)


def _failed(name, exc, **args):
    """Re-raise the backend's error ``exc`` naming the creation function and its arguments."""
    desc = ", ".join(f"{k}={v!r}" for k, v in args.items() if v is not None or k in ("shape",))
    reraise_as(exc, f"{name}: {exc} ({desc})")


def _short(obj):
    return _Described(short_repr(obj))


def _kw(xp, dtype, device):
    kw = {}
    if dtype is not None:
        kw["dtype"] = dtype_in(xp, dtype)
    if device is not None:
        kw["device"] = device
    return kw


def zeros(shape, *, dtype=None, device=None):
    xp = namespace_for_device(device)
    try:
        return xp.zeros(shape, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("zeros", e, shape=shape, dtype=dtype, device=device)


def ones(shape, *, dtype=None, device=None):
    xp = namespace_for_device(device)
    try:
        return xp.ones(shape, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("ones", e, shape=shape, dtype=dtype, device=device)


def empty(shape, *, dtype=None, device=None):
    xp = namespace_for_device(device)
    try:
        return xp.empty(shape, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("empty", e, shape=shape, dtype=dtype, device=device)


def _is_array(v):
    return isinstance(v, Tracer) or (hasattr(v, "shape") and hasattr(v, "__array_namespace__"))


def _fill_from_array(name, shape, fill_value, dtype, device):
    """``full``/``full_like`` with an array ``fill_value``: built on its backend, differentiable in it.

    # NOTE [traced fill]: the value is cast to the output dtype (a floating
    # cast carries the derivative, any other is a constant) and broadcast to
    # ``shape``, so ``full((n,), b)`` has derivative ``ones`` in ``b``, as
    # ``b * ones(n)`` does.  The result lives on ``fill_value``'s backend and
    # device; a plain result is a fresh, writable copy.
    """
    from ._elementwise import astype
    from ._manipulation import broadcast_to

    raw = full_unbox(fill_value)
    if device is not None and device != raw.device:
        raise ValueError(f"{name}: fill_value is an array on device {raw.device!r}, but the output is on device "
                         f"{device!r}; move fill_value there first")
    if dtype is not None and dtype_name(dtype) != dtype_name(fill_value.dtype):
        fill_value = astype(fill_value, dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    try:
        out = broadcast_to(fill_value, shape)
    except ValueError:
        raise ValueError(f"{name}: fill_value of shape {tuple(fill_value.shape)} does not broadcast to shape "
                         f"{shape}") from None
    if not isinstance(out, Tracer):
        out = asarray(out, copy=True)
    return out


def full(shape, fill_value, *, dtype=None, device=None):
    """An array of ``shape`` filled with ``fill_value``.

    Parameters
    ----------
    shape : int or tuple of int
    fill_value : Python scalar or 0-d array
        An array (a traced 0-d array inside a transform, say) is
        differentiated through and decides the backend and device: see
        NOTE [traced fill].  A Python scalar gives the standard's ``full``.
    dtype : dtype, optional
        Default: ``fill_value``'s dtype for an array, else the standard's rule.
    device : device, optional

    Returns
    -------
    array of shape ``shape``
    """
    if _is_array(fill_value):
        return _fill_from_array("full", shape, fill_value, dtype, device)
    xp = namespace_for_device(device)
    try:
        return xp.full(shape, fill_value, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("full", e, shape=shape, fill_value=fill_value, dtype=dtype, device=device)


def _like(name, x, dtype, device, *extra):
    x = full_unbox(x)
    xp = namespace_of((x,), name)
    try:
        return getattr(xp, name)(x, *extra, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        fill = {"fill_value": extra[0]} if extra else {}
        _failed(name, e, x=_Described(f"<array of shape {tuple(x.shape)} and dtype {x.dtype}>"), **fill, dtype=dtype,
                device=device)


def zeros_like(x, /, *, dtype=None, device=None):
    return _like("zeros_like", x, dtype, device)


def ones_like(x, /, *, dtype=None, device=None):
    return _like("ones_like", x, dtype, device)


def empty_like(x, /, *, dtype=None, device=None):
    return _like("empty_like", x, dtype, device)


def full_like(x, /, fill_value, *, dtype=None, device=None):
    """An array shaped like ``x`` filled with ``fill_value``.

    Parameters
    ----------
    x : array
        Gives the shape, and the dtype unless ``dtype`` is given.
    fill_value : Python scalar or 0-d array
        An array is differentiated through (NOTE [traced fill]); it must be
        on the output's device (``x``'s unless ``device`` is given).
    dtype : dtype, optional
    device : device, optional

    Returns
    -------
    array with ``x``'s shape
    """
    if _is_array(fill_value):
        return _fill_from_array("full_like", tuple(x.shape), fill_value, x.dtype if dtype is None else dtype,
                                x.device if device is None else device)
    return _like("full_like", x, dtype, device, fill_value)


def arange(start, /, stop=None, step=1, *, dtype=None, device=None):
    xp = namespace_for_device(device)
    try:
        return xp.arange(start, stop, step, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("arange", e, start=start, stop=stop, step=step, dtype=dtype, device=device)


def linspace(start, stop, /, num, *, dtype=None, device=None, endpoint=True):
    xp = namespace_for_device(device)
    try:
        return xp.linspace(start, stop, num, endpoint=endpoint, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("linspace", e, start=start, stop=stop, num=num, dtype=dtype, device=device)


def eye(n_rows, n_cols=None, /, *, k=0, dtype=None, device=None):
    xp = namespace_for_device(device)
    try:
        return xp.eye(n_rows, n_cols, k=k, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("eye", e, n_rows=n_rows, n_cols=n_cols, k=k, dtype=dtype, device=device)


def asarray(obj, /, *, dtype=None, device=None, copy=None):
    """Like the standard's ``asarray``; a traced value is returned as is (or cast)."""
    from .._core import Tracer

    if isinstance(obj, Tracer):
        if dtype is not None:
            from ._elementwise import astype

            return astype(obj, dtype)
        return obj
    if hasattr(obj, "__array_namespace__") and device is None:
        xp = namespace_of((obj,), "asarray")
    else:
        xp = namespace_for_device(device)
    try:
        return xp.asarray(obj, copy=copy, **_kw(xp, dtype, device))
    except EXPLAINED as e:
        _failed("asarray", e, obj=_short(obj), dtype=dtype, device=device)


def meshgrid(*arrays, indexing="xy"):
    from ._manipulation import broadcast_to, reshape

    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    for k, a in enumerate(arrays):
        if getattr(a, "ndim", None) != 1:
            raise ValueError(f"meshgrid: array {k} must be 1-D, got "
                             f"{'shape ' + str(tuple(a.shape)) if hasattr(a, 'shape') else type(a).__name__}")
    n = len(arrays)
    shapes = [a.shape[0] for a in arrays]
    if indexing == "xy" and n >= 2:
        shapes[0], shapes[1] = shapes[1], shapes[0]
    out = []
    for i, a in enumerate(arrays):
        j = i
        if indexing == "xy" and n >= 2 and i < 2:
            j = 1 - i
        shape = [1] * n
        shape[j] = a.shape[0]
        out.append(broadcast_to(reshape(a, tuple(shape)), tuple(shapes)))
    return out


def from_dlpack(x, /, *, device=None, copy=None):
    return default_namespace().from_dlpack(x)
