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
# power of two: identical on every backend.  ``uniform`` with other bounds
# scales in float32 (float64 for float64), rounds to the output dtype and
# clamps into the dtype values of ``[minval, maxval)``.  ``normal`` applies
# ``log``, ``sqrt``, ``cos`` and ``sin`` (Box-Muller), which libraries may
# round differently in the last place; NumPy and array-api-strict agree
# exactly.  ``truncated_normal`` uses only ``+ - * /``, ``sqrt`` and
# comparisons on the device (its ``log`` is written with those, see
# :func:`_log64`), all correctly rounded under IEEE 754, so it is
# bit-identical on every backend too.

# NOTE [scalar parameters]: ``minval``/``maxval``, ``mean``/``stddev``,
# ``lower``/``upper`` and ``p`` must be Python or NumPy scalars.  Arrays are
# refused: checking them (``minval < maxval``, ``0 <= p <= 1``) would read
# them back to the host.  Draw with scalars and transform the result on the
# device instead, e.g. ``lo + (hi - lo) * uniform(key, shape)``.
"""

from __future__ import annotations

import math
import operator

from ._args import int_or_none
from ._random_args import (  # noqa: F401  (scalar checks and dtype-exact bounds)
    _FLOAT_FORMATS, _INT_RANGES, _ceil_in, _finite, _floor_in, _int, _int_bound, _real, _round_to, _shape, _size,
    _step,
)
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
        Finite Python or NumPy scalars (not arrays, NOTE [scalar
        parameters]), ``minval < maxval``; some value of ``dtype`` must lie
        in ``[minval, maxval)`` and ``maxval - minval`` must not overflow
        the working precision (float32, or float64 for float64).

    Returns
    -------
    array, shape ``shape``, dtype ``dtype``, on the key's device
        Bit-identical across backends (NOTE [portable floats]).  Every value
        ``v`` satisfies ``minval <= v < maxval`` exactly: the scaled draw is
        rounded to ``dtype`` and clamped between the smallest ``dtype``
        value ``>= minval`` and the largest one ``< maxval``.

    Raises
    ------
    TypeError
        For an array or non-real ``minval``/``maxval``, or a non-floating
        ``dtype``.
    ValueError
        For non-finite bounds, ``minval >= maxval``, bounds outside the
        range of ``dtype``, an interval holding no ``dtype`` value, or a
        width ``maxval - minval`` that overflows.
    """
    xp, k = _check_key(key, "uniform")
    shape = _shape(shape, "uniform")
    name, dt = _float_dtype(xp, dtype, "uniform")
    minval, maxval = _real(minval, "uniform", "minval"), _real(maxval, "uniform", "maxval")
    _finite("uniform", minval=minval, maxval=maxval)
    if not minval < maxval:
        raise ValueError(f"random.uniform: need minval < maxval, got [{minval!r}, {maxval!r})")
    n = _size(shape)
    if minval == 0.0 and maxval == 1.0:  # already in [0, 1) in every dtype (see _unit)
        return xp.reshape(xp.astype(_unit(xp, k, n, name), dt), shape)
    biggest = _floor_in(math.inf, name, strict=True)
    if not -biggest <= minval < maxval <= biggest:
        raise ValueError(f"random.uniform: [minval, maxval) = [{minval!r}, {maxval!r}) is outside the range of "
                         f"{name} (largest finite value {biggest!r})")
    lo, hi = _ceil_in(minval, name), _floor_in(maxval, name, strict=True)
    if lo > hi:
        raise ValueError(f"random.uniform: no {name} value lies in [minval, maxval) = [{minval!r}, {maxval!r}); "
                         "widen the interval or use a wider dtype")
    work = "float64" if name == "float64" else "float32"
    span = maxval - minval
    if not math.isfinite(_round_to(span, work)):
        raise ValueError(f"random.uniform: maxval - minval = {maxval!r} - {minval!r} overflows {work}, in which "
                         f"{name} draws are computed; narrow the interval"
                         + ("" if name == "float64" else " or use dtype float64"))
    u = _unit(xp, k, n, work) * span + minval
    return xp.reshape(xp.clip(xp.astype(u, dt), lo, hi), shape)


def normal(key, shape=(), dtype="float32", mean=0.0, stddev=1.0):
    """Normally distributed floats (Box-Muller transform).

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    shape : tuple of int
    dtype : {"float32", "float64", "float16"} or a dtype object
    mean, stddev : float
        Finite Python or NumPy scalars (not arrays, NOTE [scalar
        parameters]), ``stddev >= 0``.

    Returns
    -------
    array, shape ``shape``, dtype ``dtype``, on the key's device
    """
    xp, k = _check_key(key, "normal")
    shape = _shape(shape, "normal")
    name, dt = _float_dtype(xp, dtype, "normal")
    mean, stddev = _real(mean, "normal", "mean"), _real(stddev, "normal", "stddev")
    _finite("normal", mean=mean, stddev=stddev)
    if stddev < 0:
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


from ._normal_cdf import _TAIL_LIMIT, _log64, _ndtr, _ndtri  # noqa: E402,F401  (AS 241, fdlibm log)


def _open_unit64(xp, k, n):
    """``n`` float64 values ``(j + 1/2) / 2**52`` with ``j`` uniform on ``[0, 2**52)``: in ``(0, 1)``."""
    w = _bits(xp, k, 2 * n)
    hi = xp.astype(xp.bitwise_right_shift(w[:n], 6), xp.float64)   # 26 bits
    lo = xp.astype(xp.bitwise_right_shift(w[n:], 6), xp.float64)   # 26 bits
    return (hi * 67108864.0 + lo + 0.5) * (2.0 ** -52)


def truncated_normal(key, shape=(), dtype="float32", lower=-2.0, upper=2.0):
    """Standard normal samples truncated to ``[lower, upper]``, by inverse-CDF sampling.

    Each sample is ``Phi^-1(u)`` with ``u`` uniform on ``(Phi(lower),
    Phi(upper))``: exact in distribution, for any interval, with one draw per
    sample.  ``Phi`` at the two bounds is computed on the host
    (``math.erfc``); ``Phi^-1`` on the device in float64 (Wichura's AS 241,
    relative accuracy about 1e-16) with ``+ - * /``, ``sqrt`` and
    comparisons only, so the numbers are bit-identical on every backend.  An
    interval with ``lower >= 0`` is sampled as the mirror image of
    ``[-upper, -lower]``, so that tails far from 0 keep full precision
    (``Phi`` near 1 would cancel).

    Parameters
    ----------
    key : key, shape ``(2,)``
    shape : tuple of int, default ``()``
    dtype : {"float32", "float64", "float16"} or a dtype object, default "float32"
    lower, upper : float
        Python or NumPy scalars (not arrays, NOTE [scalar parameters]),
        ``lower < upper``; either may be infinite (``-inf, inf`` gives the
        standard normal).  The interval must reach into ``[-35, 35]``
        (beyond, its probability underflows float64) and hold a value of
        ``dtype``.

    Returns
    -------
    array, shape ``shape``, dtype ``dtype``, on the key's device
        Values ``v`` with ``lower <= v <= upper`` exactly: the float64
        samples are rounded to ``dtype`` and clamped between the smallest
        ``dtype`` value ``>= lower`` and the largest ``<= upper``.

    Raises
    ------
    TypeError
        For array or non-real bounds, or a non-floating ``dtype``.
    ValueError
        For NaN bounds, ``lower >= upper``, an interval beyond ``+-35``, or
        one holding no ``dtype`` value.
    """
    xp, k = _check_key(key, "truncated_normal")
    shape = _shape(shape, "truncated_normal")
    name, dt = _float_dtype(xp, dtype, "truncated_normal")
    lower, upper = _real(lower, "truncated_normal", "lower"), _real(upper, "truncated_normal", "upper")
    if math.isnan(lower) or math.isnan(upper) or not lower < upper:
        raise ValueError(f"random.truncated_normal: need lower < upper, got [{lower!r}, {upper!r}]")
    if lower > _TAIL_LIMIT or upper < -_TAIL_LIMIT:
        raise ValueError(f"random.truncated_normal: [lower, upper] = [{lower!r}, {upper!r}] lies entirely beyond "
                         f"+-{_TAIL_LIMIT:g} standard deviations, where its probability underflows float64; "
                         "shift the interval towards 0")
    lo, hi = _ceil_in(lower, name), _floor_in(upper, name)
    if lo > hi:
        raise ValueError(f"random.truncated_normal: no {name} value lies in [lower, upper] = "
                         f"[{lower!r}, {upper!r}]; widen the interval or use a wider dtype")
    flip = lower >= 0.0  # sample -x on [-upper, -lower]: the lower tail, where Phi is accurate
    a, b = (-upper, -lower) if flip else (lower, upper)
    pa, pb = _ndtr(a), _ndtr(b)
    u = _open_unit64(xp, k, _size(shape)) * (pb - pa) + pa
    x = _ndtri(xp, u)
    if flip:
        x = -x
    x = xp.clip(xp.astype(x, dt), lo, hi)
    return xp.reshape(x, shape)


def bernoulli(key, p=0.5, shape=()):
    """Booleans that are ``True`` with probability ``p``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    p : float
        Probability of ``True``, in ``[0, 1]``: a Python or NumPy scalar
        (not an array, NOTE [scalar parameters]).
    shape : tuple of int

    Returns
    -------
    bool array, shape ``shape``
    """
    xp, k = _check_key(key, "bernoulli")
    p = _real(p, "bernoulli", "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random.bernoulli: p must be in [0, 1], got {p!r}")
    shape = _shape(shape, "bernoulli")
    # Compare 32-bit words with an integer threshold: exact and portable.
    threshold = min(int(p * 2.0 ** 32), 1 << 32)
    w = _bits(xp, k, _size(shape))
    if threshold >= 1 << 32:
        out = xp.ones(w.shape, dtype=xp.bool, device=k.device)
    else:
        out = w < threshold
    return xp.reshape(out, shape)


#: The integer dtypes randint produces, with their smallest and largest values.
def randint(key, shape, minval, maxval, dtype="int64"):
    """Uniform integers in ``[minval, maxval)``.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    shape : tuple of int
    minval, maxval : int
        Python or NumPy integer scalars (not arrays), ``0 < maxval - minval
        <= 2**32``; ``minval`` and ``maxval - 1`` must be values of ``dtype``.
    dtype : {"int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"} or a dtype object

    Returns
    -------
    integer array, shape ``shape``, dtype ``dtype``

    Raises
    ------
    TypeError
        For non-integer bounds (or arrays), or a ``dtype`` that is not an
        integer dtype (floating dtypes and ``bool`` included).
    ValueError
        For an empty or too wide interval, or one that does not fit ``dtype``.

    Notes
    -----
    Multiply-shift reduction of a 32-bit word, ``(w * span) >> 32``: the
    bias is below ``span / 2**32`` per value.  The offset ``minval`` is added
    in int64 (uint64 for unsigned dtypes), so nothing wraps around.
    """
    xp, k = _check_key(key, "randint")
    shape = _shape(shape, "randint")
    minval, maxval = _int_bound(minval, "randint", "minval"), _int_bound(maxval, "randint", "maxval")
    name = dtype_name(dtype) if dtype is not None else "int64"
    if name not in _INT_RANGES:
        raise TypeError(f"random.randint: dtype must be an integer dtype ({', '.join(_INT_RANGES)}), "
                        f"got {dtype!r}")
    span = maxval - minval
    if not 0 < span <= 1 << 32:
        raise ValueError(f"random.randint: need 0 < maxval - minval <= 2**32, got [{minval}, {maxval})")
    dmin, dmax = _INT_RANGES[name]
    if minval < dmin or maxval - 1 > dmax:
        raise ValueError(f"random.randint: [minval, maxval) = [{minval}, {maxval}) does not fit dtype {name}, "
                         f"whose values are {dmin} to {dmax} (maxval is exclusive)")
    w = xp.astype(_bits(xp, k, _size(shape)), xp.uint64)
    v = xp.bitwise_right_shift(w * span, 32) if span < 1 << 32 else w
    out = xp.astype(v, xp.uint64 if name.startswith("u") else xp.int64)  # v < 2**32: exact
    if minval != 0:
        out = out + minval  # in [minval, maxval): within the dtype, so no wrap-around here or below
    return xp.reshape(xp.astype(out, dtype_in(xp, name)), shape)


def permutation(key, x):
    """A random permutation of ``range(x)``, or of an array's first axis.

    Parameters
    ----------
    key : uint32 array, shape ``(2,)``
    x : int or array of shape ``(n, ...)``
        An array must be of the key's library and on its device.

    Returns
    -------
    int64 array of shape ``(x,)`` when ``x`` is an int; else ``x`` with its
    first axis shuffled (``take(x, perm, axis=0)``).

    Raises
    ------
    TypeError
        For an ``x`` that is neither an int nor an array with an axis, or an
        array of another library than the key's.
    ValueError
        For a negative ``n``, or an array on another device than the key.

    Notes
    -----
    Sorts 64-bit random words with a stable sort, so ties (probability about
    ``n**2 / 2**65``) resolve identically on every backend.
    """
    xp, k = _check_key(key, "permutation")
    if getattr(x, "ndim", 0) >= 1:
        from ._core import full_unbox

        xa = full_unbox(x)
        xns = namespace_of((xa,), "random.permutation")
        if xns is not xp:
            raise TypeError(f"random.permutation: x (shape {tuple(xa.shape)}) is an array of {xns.__name__} but "
                            f"the key is an array of {xp.__name__}; make the key on x's backend and device, "
                            "e.g. random.key(seed, like=x)")
        if xa.device != k.device:
            raise ValueError(f"random.permutation: the key is on device {k.device} but x (shape "
                             f"{tuple(xa.shape)}) is on device {xa.device}; make the key on x's device, e.g. "
                             "random.key(seed, like=x)")
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
