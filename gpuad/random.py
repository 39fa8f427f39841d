"""Explicit, splittable random keys: the same key gives the same numbers everywhere.

A *key* is a ``uint32`` array of shape ``(2,)`` on some backend and device.
Every function here takes a key and returns arrays of the key's backend, on
the key's device, computed there with array-API integer operations only (no
host round trip, no backend RNG).  The bits come from the counter-based
Threefry-2x32 generator with 20 rounds (Salmon et al., "Parallel random
numbers: as easy as 1, 2, 3", SC 2011; the generator JAX uses), so NumPy,
CuPy and array-api-strict produce bit-identical integers and uniforms for
the same key.

Keys are never consumed implicitly: to draw twice, :func:`split` first::

    from gpuad import random

    key = random.key(0)                       # default backend
    k_init, k_data = random.split(key)
    w = random.normal(k_init, (3, 4))

# NOTE [counter domains]: every output word is ``threefry(key, (tag, i))``.
# The tag keeps the streams apart: 0 for the bits of samples, 1 for
# :func:`split`, 2 for :func:`fold_in`.  So a key's samples never coincide
# with its children's keys.

# NOTE [portable floats]: uniforms are made from the top 24 (float32) or 53
# (float64) bits, converted exactly to floating point, then scaled by a
# power of two: identical on every backend.  ``normal`` applies ``log``,
# ``sqrt``, ``cos`` and ``sin`` (Box-Muller), which libraries may round
# differently in the last place; NumPy and array-api-strict agree exactly.
"""

from __future__ import annotations

import math
import numbers
import operator

from ._args import int_or_none
from ._backend import default_namespace, namespace_of
from ._dtypes import dtype_in, dtype_name

__all__ = [
    "key", "split", "fold_in", "bits", "uniform", "normal", "bernoulli", "randint", "permutation",
    "truncated_normal", "is_key",
]

_MASK32 = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_TAG_BITS, _TAG_SPLIT, _TAG_FOLD = 0, 1, 2


# --- the generator ---------------------------------------------------------------
def _rotl(xp, x, r):
    return xp.bitwise_or(xp.bitwise_left_shift(x, r), xp.bitwise_right_shift(x, 32 - r))


def threefry2x32(xp, k0, k1, x0, x1):
    """Threefry-2x32-20 of counters ``(x0, x1)`` under key ``(k0, k1)``.

    Parameters
    ----------
    xp : array namespace
    k0, k1 : uint32 arrays, shape ``(1,)``
    x0, x1 : uint32 arrays, shape ``(n,)``

    Returns
    -------
    (uint32 array, uint32 array), each of shape ``(n,)``
        Matches the Random123 known-answer tests (see ``tests/test_random.py``).
    """
    ks = (k0, k1, xp.bitwise_xor(xp.bitwise_xor(k0, k1), _PARITY))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = xp.bitwise_xor(_rotl(xp, x1, r), x0)
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + (i + 1)
    return x0, x1


# --- keys --------------------------------------------------------------------------
def is_key(k):
    """Whether ``k`` looks like a key: an unsigned 32-bit array of shape ``(2,)``.

    Parameters
    ----------
    k : object
        Anything; only its ``shape`` and ``dtype`` are read (no host transfer).

    Returns
    -------
    bool
        ``True`` for a ``uint32`` array of shape ``(2,)`` (what :func:`key`,
        :func:`split` and :func:`fold_in` return), of any backend and device.
    """
    return (hasattr(k, "shape") and tuple(k.shape) == (2,) and hasattr(k, "dtype")
            and dtype_name(k.dtype) == "uint32")


def _check_key(k, fname):
    if not is_key(k):
        what = f"shape {tuple(k.shape)} and dtype {k.dtype}" if hasattr(k, "shape") else type(k).__name__
        raise TypeError(f"random.{fname}: key must be a uint32 array of shape (2,) made by random.key "
                        f"or random.split, got {what}")
    from ._core import Tracer, full_unbox

    if isinstance(k, Tracer):
        k = full_unbox(k)
    return namespace_of((k,), f"random.{fname}"), k


def key(seed, *, like=None, device=None):
    """A new key from an integer seed.

    Parameters
    ----------
    seed : int
        Any Python int; it is reduced modulo ``2**64`` (high word, low word).
    like : array, optional
        Create the key on this array's backend and device.
    device : device, optional
        Create the key on this device (of the default backend unless the
        device belongs to another backend, e.g. an array-api-strict
        ``Device``).  Ignored when ``like`` is given.

    Returns
    -------
    uint32 array, shape ``(2,)``
    """
    given, seed = seed, int_or_none(seed)
    if seed is None:
        raise TypeError(f"random.key: seed must be an int, got {type(given).__name__}: {given!r}")
    seed %= 1 << 64
    if like is not None:
        from ._core import full_unbox

        like = full_unbox(like)
        xp = namespace_of((like,), "random.key")
        device = like.device
    else:
        from .ops import namespace_for_device

        xp = namespace_for_device(device) if device is not None else default_namespace()
    kw = {"device": device} if device is not None else {}
    return xp.asarray([seed >> 32, seed & _MASK32], dtype=xp.uint32, **kw)


def _counters(xp, k, tag, n):
    """``threefry(k, (tag, 0..n-1))`` as two uint32 arrays of shape ``(n,)``."""
    c = xp.arange(n, dtype=xp.uint32, device=k.device)
    return threefry2x32(xp, k[0:1], k[1:2], xp.full_like(c, tag), c)


def split(key, num=2):
    """``num`` new, independent keys derived from ``key``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    num : int, default 2

    Returns
    -------
    tuple of ``num`` uint32 arrays, each of shape ``(2,)``
        Unpack them: ``k1, k2 = split(key)``.  ``key`` itself should not be
        used again.
    """
    xp, k = _check_key(key, "split")
    given, num = num, int_or_none(num)
    if num is None or num < 1:
        raise ValueError(f"random.split: num must be a positive int, got {given!r}")
    y0, y1 = _counters(xp, k, _TAG_SPLIT, num)
    keys = xp.stack([y0, y1], axis=1)
    return tuple(keys[i, :] for i in range(num))


def fold_in(key, data):
    """A new key that mixes the integer ``data`` into ``key``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    data : int
        E.g. a step or layer number; reduced modulo ``2**32``.

    Returns
    -------
    uint32 array, shape ``(2,)``
    """
    xp, k = _check_key(key, "fold_in")
    given, data = data, int_or_none(data)
    if data is None:
        raise TypeError(f"random.fold_in: data must be an int, got {type(given).__name__}")
    c = xp.asarray([data & _MASK32], dtype=xp.uint32, device=k.device)
    y0, y1 = threefry2x32(xp, k[0:1], k[1:2], xp.full_like(c, _TAG_FOLD), c)
    return xp.concat([y0, y1])


# --- samples -------------------------------------------------------------------------
def _int(v, fname, name):
    """``v`` as an int (Python or NumPy integer), else a ``TypeError`` naming it; never truncates a float."""
    n = int_or_none(v)
    if n is None:
        raise TypeError(f"random.{fname}: {name} must be an int, got {type(v).__name__}: {v!r}")
    return n


def _finite(fname, **values):
    """Python or NumPy real scalars must be finite (arrays are left to broadcasting)."""
    for name, v in values.items():
        if isinstance(v, numbers.Real) and not math.isfinite(v):
            raise ValueError(f"random.{fname}: {name} must be finite, got {v!r}")


def _shape(shape, fname):
    if isinstance(shape, int):
        shape = (shape,)
    try:
        if any(isinstance(s, bool) for s in shape):
            raise TypeError
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"random.{fname}: shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"random.{fname}: shape {shape} has a negative dimension")
    return shape


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _bits(xp, k, n):
    """``n`` uint32 words, shape ``(n,)``."""
    if n == 0:
        return xp.zeros((0,), dtype=xp.uint32, device=k.device)
    m = (n + 1) // 2
    y0, y1 = _counters(xp, k, _TAG_BITS, m)
    return xp.concat([y0, y1])[:n]


def bits(key, shape=()):
    """Uniformly distributed ``uint32`` words.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    shape : tuple of int

    Returns
    -------
    uint32 array, shape ``shape``, on the key's device
    """
    xp, k = _check_key(key, "bits")
    shape = _shape(shape, "bits")
    return xp.reshape(_bits(xp, k, _size(shape)), shape)


def _float_dtype(xp, dtype, fname):
    name = dtype_name(dtype) if dtype is not None else "float32"
    if name not in ("float16", "float32", "float64"):
        raise TypeError(f"random.{fname}: dtype must be a real floating dtype, got {dtype!r}")
    return name, dtype_in(xp, name)


def _unit(xp, k, n, name):
    """``n`` floats in ``[0, 1)`` of dtype ``name`` (NOTE [portable floats])."""
    if name == "float64":
        w = _bits(xp, k, 2 * n)
        hi = xp.astype(xp.bitwise_right_shift(w[:n], 5), xp.float64)   # 27 bits
        lo = xp.astype(xp.bitwise_right_shift(w[n:], 6), xp.float64)   # 26 bits
        return (hi * 67108864.0 + lo) * (2.0 ** -53)
    u = xp.astype(xp.bitwise_right_shift(_bits(xp, k, n), 8), xp.float32) * (2.0 ** -24)
    if name == "float16":  # round down so that no value becomes 1.0
        u16 = xp.astype(u, xp.float16)
        return xp.where(u16 >= 1.0, xp.asarray(0.99951171875, dtype=xp.float16, device=k.device), u16)
    return u


def uniform(key, shape=(), dtype="float32", minval=0.0, maxval=1.0):
    """Uniform floats in ``[minval, maxval)``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    shape : tuple of int
    dtype : {"float32", "float64", "float16"} or a dtype object
    minval, maxval : float

    Returns
    -------
    array, shape ``shape``, dtype ``dtype``, on the key's device
        Bit-identical across backends (NOTE [portable floats]).
    """
    xp, k = _check_key(key, "uniform")
    shape = _shape(shape, "uniform")
    name, dt = _float_dtype(xp, dtype, "uniform")
    _finite("uniform", minval=minval, maxval=maxval)
    if isinstance(minval, numbers.Real) and isinstance(maxval, numbers.Real) and not minval < maxval:
        raise ValueError(f"random.uniform: need minval < maxval, got [{minval!r}, {maxval!r})")
    u = _unit(xp, k, _size(shape), name)
    if minval != 0.0 or maxval != 1.0:
        u = u * (maxval - minval) + minval
    return xp.reshape(xp.astype(u, dt), shape)


def normal(key, shape=(), dtype="float32", mean=0.0, stddev=1.0):
    """Normally distributed floats (Box-Muller transform).

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    shape : tuple of int
    dtype : {"float32", "float64", "float16"} or a dtype object
    mean, stddev : float

    Returns
    -------
    array, shape ``shape``, dtype ``dtype``, on the key's device
    """
    xp, k = _check_key(key, "normal")
    shape = _shape(shape, "normal")
    name, dt = _float_dtype(xp, dtype, "normal")
    _finite("normal", mean=mean, stddev=stddev)
    if isinstance(stddev, numbers.Real) and stddev < 0:
        raise ValueError(f"random.normal: stddev must be >= 0, got {stddev!r}")
    n = _size(shape)
    work = "float64" if name == "float64" else "float32"
    m = (n + 1) // 2
    u = _unit(xp, k, 2 * m, work)
    r = xp.sqrt(-2.0 * xp.log(1.0 - u[:m]))  # 1 - u is in (0, 1]
    theta = (2.0 * math.pi) * u[m:]
    z = xp.concat([r * xp.cos(theta), r * xp.sin(theta)])[:n]
    if mean != 0.0 or stddev != 1.0:
        z = z * stddev + mean
    return xp.reshape(xp.astype(z, dt), shape)


def truncated_normal(key, shape=(), dtype="float32", lower=-2.0, upper=2.0):
    """Standard normal samples truncated to ``[lower, upper]`` (inverse-CDF free).

    Draws are resampled by rejection: each element takes the first of 8
    candidate normals inside the bounds (for the default ``[-2, 2]`` all 8
    miss with probability 3e-11); an element whose 8 candidates all miss is
    clipped.

    Parameters
    ----------
    key : key, shape ``(2,)``
    shape : tuple of int, default ``()``
    dtype : {"float32", "float64", "float16"} or a dtype object, default "float32"
    lower, upper : float
        Finite bounds, ``lower < upper`` (default ``[-2, 2]``).

    Returns
    -------
    array, shape ``shape``, dtype ``dtype``, on the key's device
        Values in ``[lower, upper]``.
    """
    xp, k = _check_key(key, "truncated_normal")
    shape = _shape(shape, "truncated_normal")
    _finite("truncated_normal", lower=lower, upper=upper)
    if isinstance(lower, numbers.Real) and isinstance(upper, numbers.Real) and not lower < upper:
        raise ValueError(f"random.truncated_normal: need lower < upper, got [{lower!r}, {upper!r}]")
    tries = 8
    z = normal(k, (tries,) + shape, dtype=dtype)
    out = xp.clip(z[tries - 1, ...], lower, upper)
    for i in range(tries - 2, -1, -1):
        ok = xp.logical_and(z[i, ...] >= lower, z[i, ...] <= upper)
        out = xp.where(ok, z[i, ...], out)
    return out


def bernoulli(key, p=0.5, shape=()):
    """Booleans that are ``True`` with probability ``p``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    p : float
        Probability of ``True``, in ``[0, 1]``.
    shape : tuple of int

    Returns
    -------
    bool array, shape ``shape``
    """
    xp, k = _check_key(key, "bernoulli")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"random.bernoulli: p must be in [0, 1], got {p!r}")
    shape = _shape(shape, "bernoulli")
    # Compare 32-bit words with an integer threshold: exact and portable.
    threshold = min(int(float(p) * 2.0 ** 32), 1 << 32)
    w = _bits(xp, k, _size(shape))
    if threshold >= 1 << 32:
        out = xp.ones(w.shape, dtype=xp.bool, device=k.device)
    else:
        out = w < threshold
    return xp.reshape(out, shape)


def randint(key, shape, minval, maxval, dtype="int64"):
    """Uniform integers in ``[minval, maxval)``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    shape : tuple of int
    minval, maxval : int
        ``0 < maxval - minval <= 2**32``.
    dtype : {"int32", "int64", ...}

    Returns
    -------
    integer array, shape ``shape``

    Notes
    -----
    Multiply-shift reduction of a 32-bit word, ``(w * span) >> 32``: the
    bias is below ``span / 2**32`` per value.
    """
    xp, k = _check_key(key, "randint")
    shape = _shape(shape, "randint")
    minval, maxval = _int(minval, "randint", "minval"), _int(maxval, "randint", "maxval")
    span = maxval - minval
    if not 0 < span <= 1 << 32:
        raise ValueError(f"random.randint: need 0 < maxval - minval <= 2**32, got [{minval}, {maxval})")
    w = xp.astype(_bits(xp, k, _size(shape)), xp.uint64)
    v = xp.bitwise_right_shift(w * span, 32) if span < 1 << 32 else w
    out = xp.astype(v, dtype_in(xp, dtype))
    if minval != 0:
        out = out + int(minval)
    return xp.reshape(out, shape)


def permutation(key, x):
    """A random permutation of ``range(x)``, or of an array's first axis.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    x : int or array of shape ``(n, ...)``

    Returns
    -------
    int64 array of shape ``(x,)`` when ``x`` is an int; else ``x`` with its
    first axis shuffled (``take(x, perm, axis=0)``).

    Notes
    -----
    Sorts 64-bit random words with a stable sort, so ties (probability about
    ``n**2 / 2**65``) resolve identically on every backend.
    """
    xp, k = _check_key(key, "permutation")
    if getattr(x, "ndim", 0) >= 1:
        n = x.shape[0]
    else:
        try:
            if isinstance(x, bool):
                raise TypeError
            n = x = operator.index(x)
        except TypeError:
            what = f"shape {tuple(x.shape)}" if hasattr(x, "shape") else f"{type(x).__name__}: {x!r}"
            raise TypeError(f"random.permutation: x must be an int or an array with at least one axis, "
                            f"got {what}") from None
    if n < 0:
        raise ValueError(f"random.permutation: n must be >= 0, got {n}")
    w = xp.astype(_bits(xp, k, 2 * n), xp.uint64)
    words = xp.bitwise_or(xp.bitwise_left_shift(w[:n], 32), w[n:])
    perm = xp.astype(xp.argsort(words, stable=True), xp.int64)
    if isinstance(x, int):
        return perm
    from . import ops

    return ops.take(x, perm, axis=0)
