"""Parameter initialisers: ``init(key, shape, dtype) -> array`` on the key's device.

Every initialiser takes a :mod:`gpuad.random` key, a shape and a dtype, and
returns an array of the key's backend on the key's device.  The variance
scaling ones need the fan-in and fan-out of a weight; they read them from
``shape`` through ``in_axis`` and ``out_axis`` (the rest of the axes are the
receptive field), as in JAX:

====================  ==========================  =========================
layer                 weight shape                axes
====================  ==========================  =========================
:class:`Linear`       ``(in, out)``               ``in_axis=-2, out_axis=-1``
:class:`Conv2d`       ``(out, in, kh, kw)``       ``in_axis=1, out_axis=0``
====================  ==========================  =========================
"""

from __future__ import annotations

import math

from .. import random

__all__ = [
    "zeros", "ones", "constant", "normal", "uniform", "glorot_uniform", "glorot_normal",
    "xavier_uniform", "xavier_normal", "he_normal", "he_uniform", "kaiming_normal", "kaiming_uniform",
    "lecun_normal", "fans",
]


def _xp(key, fname):
    from .._backend import namespace_of

    if not random.is_key(key):
        raise TypeError(f"{fname}: key must be a gpuad.random key (uint32, shape (2,)), got {key!r}")
    return namespace_of((key,), fname)


def _dtype(xp, dtype):
    from .._dtypes import dtype_in

    return dtype_in(xp, dtype if dtype is not None else "float32")


def fans(shape, in_axis=-2, out_axis=-1):
    """``(fan_in, fan_out)`` of a weight of shape ``shape``.

    Parameters
    ----------
    shape : tuple of int, at least 2-D
    in_axis, out_axis : int
        The input- and output-feature axes; every other axis is part of the
        receptive field and multiplies both fans.

    Returns
    -------
    (int, int)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fans: a weight needs at least 2 dimensions to have fans, got shape {shape}")
    nd = len(shape)
    i, o = in_axis % nd, out_axis % nd
    receptive = 1
    for j, s in enumerate(shape):
        if j not in (i, o):
            receptive *= s
    return shape[i] * receptive, shape[o] * receptive


def zeros(key, shape, dtype="float32"):
    """All zeros.

    Parameters
    ----------
    key : random key, shape ``(2,)`` (only its backend and device are used)
    shape : tuple of int
    dtype : str or dtype

    Returns
    -------
    array, shape ``shape``
    """
    xp = _xp(key, "initializers.zeros")
    return xp.zeros(tuple(shape), dtype=_dtype(xp, dtype), device=key.device)


def ones(key, shape, dtype="float32"):
    """All ones.

    Parameters
    ----------
    key : random key, shape ``(2,)`` (only its backend and device are used)
    shape : tuple of int
    dtype : str or dtype

    Returns
    -------
    array, shape ``shape``, on the key's device
    """
    xp = _xp(key, "initializers.ones")
    return xp.ones(tuple(shape), dtype=_dtype(xp, dtype), device=key.device)


def constant(value):
    """An initialiser that fills with ``value``: ``constant(0.1)(key, shape, dtype)``.

    Parameters
    ----------
    value : float or int
        The fill value (converted to the requested dtype).

    Returns
    -------
    callable
        ``init(key, shape, dtype="float32") -> array`` of shape ``shape``
        filled with ``value``, on the key's device (``key``: a random key of
        shape ``(2,)``, of which only the backend and device are used).
    """

    def init(key, shape, dtype="float32"):
        xp = _xp(key, "initializers.constant")
        return xp.full(tuple(shape), value, dtype=_dtype(xp, dtype), device=key.device)

    return init


def normal(key, shape, dtype="float32", stddev=1e-2):
    """Normal with mean 0 and standard deviation ``stddev``.

    Parameters
    ----------
    key : random key, shape ``(2,)``
    shape : tuple of int
    dtype : str or dtype
    stddev : float, >= 0

    Returns
    -------
    array, shape ``shape``, on the key's device
    """
    return random.normal(key, shape, dtype=dtype, stddev=stddev)


def uniform(key, shape, dtype="float32", scale=1e-2):
    """Uniform on ``[-scale, scale)``.

    Parameters
    ----------
    key : random key, shape ``(2,)``
    shape : tuple of int
    dtype : str or dtype
    scale : float, > 0

    Returns
    -------
    array, shape ``shape``, on the key's device
    """
    return random.uniform(key, shape, dtype=dtype, minval=-scale, maxval=scale)


def glorot_uniform(key, shape, dtype="float32", in_axis=-2, out_axis=-1, gain=1.0):
    """Glorot/Xavier uniform: ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    key : random key
    shape : tuple of int, at least 2-D
    dtype : str or dtype
    in_axis, out_axis : int
        See :func:`fans`.
    gain : float

    Returns
    -------
    array, shape ``shape``
    """
    fi, fo = fans(shape, in_axis, out_axis)
    a = gain * math.sqrt(6.0 / (fi + fo))
    return random.uniform(key, shape, dtype=dtype, minval=-a, maxval=a)


def glorot_normal(key, shape, dtype="float32", in_axis=-2, out_axis=-1, gain=1.0):
    """Glorot/Xavier normal: ``N(0, gain^2 * 2 / (fan_in + fan_out))``.

    Parameters
    ----------
    key : random key, shape ``(2,)``
    shape : tuple of int, at least 2-D
    dtype : str or dtype
    in_axis, out_axis : int
        See :func:`fans`.
    gain : float

    Returns
    -------
    array, shape ``shape``, on the key's device
    """
    fi, fo = fans(shape, in_axis, out_axis)
    return random.normal(key, shape, dtype=dtype, stddev=gain * math.sqrt(2.0 / (fi + fo)))


def he_normal(key, shape, dtype="float32", in_axis=-2, out_axis=-1):
    """He/Kaiming normal for ReLU layers: ``N(0, 2 / fan_in)``.

    Parameters
    ----------
    key : random key
    shape : tuple of int, at least 2-D
    dtype : str or dtype
    in_axis, out_axis : int
        See :func:`fans`.

    Returns
    -------
    array, shape ``shape``
    """
    fi, _ = fans(shape, in_axis, out_axis)
    return random.normal(key, shape, dtype=dtype, stddev=math.sqrt(2.0 / fi))


def he_uniform(key, shape, dtype="float32", in_axis=-2, out_axis=-1):
    """He/Kaiming uniform for ReLU layers: ``U(-a, a)`` with ``a = sqrt(6 / fan_in)``.

    Parameters
    ----------
    key : random key, shape ``(2,)``
    shape : tuple of int, at least 2-D
    dtype : str or dtype
    in_axis, out_axis : int
        See :func:`fans`.

    Returns
    -------
    array, shape ``shape``, on the key's device
    """
    fi, _ = fans(shape, in_axis, out_axis)
    a = math.sqrt(6.0 / fi)
    return random.uniform(key, shape, dtype=dtype, minval=-a, maxval=a)


def lecun_normal(key, shape, dtype="float32", in_axis=-2, out_axis=-1):
    """LeCun normal (for SELU and tanh layers): ``N(0, 1 / fan_in)``.

    Parameters
    ----------
    key : random key, shape ``(2,)``
    shape : tuple of int, at least 2-D
    dtype : str or dtype
    in_axis, out_axis : int
        See :func:`fans`.

    Returns
    -------
    array, shape ``shape``, on the key's device
    """
    fi, _ = fans(shape, in_axis, out_axis)
    return random.normal(key, shape, dtype=dtype, stddev=math.sqrt(1.0 / fi))


xavier_uniform = glorot_uniform
xavier_normal = glorot_normal
kaiming_normal = he_normal
kaiming_uniform = he_uniform
