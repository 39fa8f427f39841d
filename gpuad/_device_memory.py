"""Device memory: the ``GPUAD_GPU_MEMORY_LIMIT`` syntax, and out-of-memory errors.

``parse_memory_limit`` reads the limit a backend puts on its memory pool
(``gpuad.backends.cupy`` applies it).  ``out_of_memory`` turns a backend's
allocation failure, raised inside a transform, into a :class:`OutOfMemoryError`
that says what the tape holds and how to hold less.

# NOTE [one wrap]: an out-of-memory error is re-raised by the innermost
# transform entry point it crosses (forward or backward of ``vjp``, ``grad``,
# ``jvp``, ...).  Enclosing transforms see a :class:`OutOfMemoryError` and let
# it pass unchanged, so ``grad(grad(f))`` reports once.  The wrapper type
# subclasses both :class:`OutOfMemoryError` and the backend's own exception
# type, so ``except cupy.cuda.memory.OutOfMemoryError`` and ``except
# MemoryError`` still catch it; the original is its ``__cause__``.  The
# entry points raise it without binding it to a local (``raise
# out_of_memory(...) from exc``): a frame of its own traceback holding it
# would be a reference cycle, keeping the tape alive until the next collection.

# NOTE [oom costs nothing until it happens]: the transforms only add a
# ``try``/``except MemoryError`` around the traced call and the backward
# pass; nothing runs per op.  The tape is measured after the fact, by a scan
# of the live tape nodes (``gc.get_objects``), which costs time only when
# memory has already run out.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "MEMORY_LIMIT_ENV", "MemoryLimit", "OutOfMemoryError", "format_bytes", "needs_explaining",
    "out_of_memory", "parse_memory_limit", "tape_census",
]

#: Environment variable read by the CuPy backend for its memory-pool limit.
MEMORY_LIMIT_ENV = "GPUAD_GPU_MEMORY_LIMIT"

# ------------------------------------------------------------------ the limit

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"([0-9]+)(?:\.([0-9]+))?[ \t]*([A-Za-z%]*)")
_EXPECTED = ("expected a byte count (8589934592), a size with a unit (8GiB, 512MB, 1.5GB; units B, KB, MB, "
             "GB, TB, KiB, MiB, GiB, TiB, any case) or a percentage of the device's memory (50%)")


class MemoryLimit(NamedTuple):
    """A parsed limit: exactly one of ``size`` (bytes) and ``fraction`` (0 < f <= 1) is set."""

    size: int | None
    fraction: float | None
    text: str


def parse_memory_limit(text, name=MEMORY_LIMIT_ENV):
    """Parse a memory limit: bytes, a size with a unit, or a percentage.

    Parameters
    ----------
    text : str or None
        ``"8589934592"`` (bytes: an integer), ``"8GiB"``, ``"512MB"``,
        ``"1.5GB"`` (decimal units KB = 1000 B ..., binary units KiB = 1024 B
        ...; any case, optional space before the unit; the byte count is
        rounded down), or ``"50%"`` (a fraction of the device's memory,
        more than 0 and at most 100).  ``None`` or blank means no limit.
    name : str
        The variable the text came from, for error messages.

    Returns
    -------
    MemoryLimit or None

    Raises
    ------
    ValueError
        For anything else, naming ``name`` and the text: ``"8G"`` (ambiguous
        unit), ``"0.5"`` (a bare number is a byte count; write ``"50%"``),
        ``"0"``, ``"-1GB"``, ``"150%"``.
    """
    if text is None or not text.strip():
        return None
    s = text.strip()
    m = _SIZE.fullmatch(s)

    def bad(why=""):
        return ValueError(f"{name}={text!r} is not a memory limit: {why}{_EXPECTED}; "
                          "leave it unset or empty for no limit")

    if m is None:
        raise bad()
    whole, frac, unit = m.group(1), m.group(2) or "", m.group(3).lower()
    # Exact integer arithmetic: value = digits / 10**len(frac) (no float rounding).
    digits, scale = int(whole + frac), 10 ** len(frac)
    if unit == "%":
        if digits == 0 or digits > 100 * scale:
            raise bad("a percentage must be more than 0% and at most 100%; ")
        return MemoryLimit(None, digits / (100 * scale), s)
    if unit == "":
        if frac:
            raise bad("a number without a unit is a byte count and must be an integer (write 50% for half "
                      "the device's memory); ")
        mult = 1
    elif unit in _UNITS:
        mult = _UNITS[unit]
    else:
        raise bad(f"unknown unit {m.group(3)!r}; ")
    size = digits * mult // scale
    if size <= 0:
        raise bad("the limit must be at least 1 byte; ")
    return MemoryLimit(size, None, s)


def format_bytes(n):
    """``"1,234,567 bytes (1.18 MiB)"``."""
    n = int(n)
    for unit, k in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << k:
            return f"{n:,} bytes ({n / 2.0 ** k:.2f} {unit})"
    return f"{n:,} bytes"


# ------------------------------------------------------------------ out of memory


class OutOfMemoryError(MemoryError):
    """A backend ran out of device memory inside a gpuad transform.

    Raised instances also subclass the backend's own exception type (e.g.
    ``cupy.cuda.memory.OutOfMemoryError``) and chain it as ``__cause__``
    (NOTE [one wrap]).

    Attributes
    ----------
    original : BaseException
        The backend's exception.
    transform : str
        The transform whose forward or backward pass raised (``"grad"``, ...).
    phase : {"forward", "backward"}
    tape_bytes, tape_nodes : int
        Bytes held by the live reverse-tape nodes (residuals and checkpoint
        snapshots) when memory ran out, and how many nodes hold them.
    pool : dict
        The backend's ``memory_stats()`` at that moment (CuPy:
        ``pool_used_bytes``, ``pool_total_bytes``, ``pool_limit_bytes`` when a
        limit is set, ``device_free_bytes``, ``device_total_bytes``).
    """

    def __init__(self, message, original=None, transform="", phase="", tape_bytes=0, tape_nodes=0, pool=None):
        MemoryError.__init__(self, message)  # not the backend's __init__: its signature differs
        self.original = original
        self.transform = transform
        self.phase = phase
        self.tape_bytes = tape_bytes
        self.tape_nodes = tape_nodes
        self.pool = {} if pool is None else dict(pool)

    def __reduce__(self):
        # The wrapper type is made at run time: pickle rebuilds it from the original.
        state = {k: v for k, v in self.__dict__.items() if k != "original"}
        return _rebuild, (self.original, self.args[0] if self.args else ""), state


_wrapper_types: dict = {}


def _wrapper_type(cls):
    """The subclass of :class:`OutOfMemoryError` and ``cls``, made once per ``cls``."""
    if issubclass(cls, OutOfMemoryError):
        return cls
    t = _wrapper_types.get(cls)
    if t is None:
        t = type("OutOfMemoryError", (OutOfMemoryError, cls), {
            "__module__": "gpuad",
            "__doc__": f"gpuad's OutOfMemoryError for {cls.__module__}.{cls.__qualname__}.",
        })
        _wrapper_types[cls] = t
    return t


def _rebuild(original, message):
    err = _wrapper_type(type(original))(message, original)
    err.__cause__ = original
    return err


def _claiming_backend(exc):
    """The backend module whose ``is_out_of_memory(exc)`` says yes, or ``None``."""
    from ._backend import BACKENDS, backend_module

    for name in BACKENDS:
        try:
            mod = backend_module(name)
        except ImportError:  # pragma: no cover - backends ship with gpuad
            continue
        pred = getattr(mod, "is_out_of_memory", None)
        if pred is not None and pred(exc):
            return mod
    return None


def tape_census():
    """``(bytes, nodes)`` held by the live reverse tapes of this process.

    Counts, once per memory block (NOTE [buffers counted once] in
    ``gpuad.memory``), the residuals of every live tape node that still
    holds them, plus the checkpoint snapshots that an accountant holds (the
    ``checkpoint_sequential`` sweeps).  Walks every object the garbage
    collector tracks: for error paths only (NOTE [oom costs nothing until it
    happens]).
    """
    import gc

    from ._reverse import Node
    from .memory import Accountant, nbytes_of, residual_arrays

    blocks, nodes, accountants = {}, 0, []
    for obj in gc.get_objects():
        t = type(obj)
        if t is Node:
            if obj.prim is None or obj.args is None:
                continue
            nodes += 1
            blocks.update(_blocks_of(obj, residual_arrays, nbytes_of))
        elif isinstance(obj, Accountant):
            accountants.append(obj)
    for acc in accountants:
        for keys in list(acc._holds.values()):
            for key in keys:
                entry = acc._blocks.get(key)
                if entry is not None:
                    blocks[key] = entry[0]
    return sum(blocks.values()), nodes


def _blocks_of(node, residual_arrays, nbytes_of):
    """``{block key: nbytes}`` of a node's residuals; ``{}`` if they cannot be read."""
    try:
        return {key: nb for key, nb, _ in map(nbytes_of, residual_arrays(node))}
    except Exception:  # noqa: BLE001 - a census must not fail the error it explains
        return {}


def _pool_line(mod, stats):
    names = (("pool_used_bytes", "used"), ("pool_total_bytes", "total"), ("pool_limit_bytes", "limit"))
    parts = [f"{label} {format_bytes(stats[k])}" for k, label in names if k in stats]
    if "pool_total_bytes" in stats and "pool_limit_bytes" not in stats:
        parts.append(f"no limit (set {MEMORY_LIMIT_ENV})")
    if "device_free_bytes" in stats and "device_total_bytes" in stats:
        parts.append(f"device {format_bytes(stats['device_free_bytes'])} free of "
                     f"{format_bytes(stats['device_total_bytes'])}")
    backend = getattr(mod, "NAME", "backend")
    return f"{backend} memory pool: " + ("; ".join(parts) if parts else "no statistics")


def needs_explaining(exc):
    """Whether ``exc`` is a backend's out-of-memory error not yet explained (NOTE [one wrap])."""
    return not isinstance(exc, OutOfMemoryError) and _claiming_backend(exc) is not None


def out_of_memory(exc, transform, phase):
    """The :class:`OutOfMemoryError` to raise ``from exc`` (see :func:`needs_explaining`).

    Parameters
    ----------
    exc : MemoryError
        An error for which :func:`needs_explaining` is true.
    transform : str
        ``"grad"``, ``"vjp"``, ``"jvp"``, ...
    phase : {"forward", "backward"}

    Notes
    -----
    Raise the result directly (``raise out_of_memory(...) from exc``): bound
    to a local of a frame in its own traceback it would make a reference
    cycle, and the tape it reports on would live until the next garbage
    collection.
    """
    mod = _claiming_backend(exc)
    try:
        tape_bytes, tape_nodes = tape_census()
    except Exception:  # noqa: BLE001 - report what we can
        tape_bytes = tape_nodes = -1
    try:
        pool = dict(mod.memory_stats())
    except Exception:  # noqa: BLE001
        pool = {}
    cls = type(exc)
    tape = ("unknown (the census failed)" if tape_bytes < 0 else
            f"{format_bytes(tape_bytes)} of residuals and checkpoint snapshots, in {tape_nodes} live tape node(s)")
    message = (
        f"{exc}\n"
        f"gpuad: {cls.__module__}.{cls.__qualname__} in the {phase} pass of {transform}.\n"
        f"  tape: {tape}\n"
        f"  {_pool_line(mod, pool)}\n"
        "  To need less memory, recompute instead of storing: wrap blocks of the model in "
        "gpuad.checkpoint(f), or run a chain of layers with gpuad.checkpoint_sequential(fns, x, "
        "budget_bytes=...); or use a smaller batch."
    )
    err = _wrapper_type(cls)(message, exc, transform, phase, tape_bytes, tape_nodes, pool)
    # Keep the backend's own attributes (CuPy: _size, _total, _limit) readable.
    for k, v in getattr(exc, "__dict__", {}).items():
        err.__dict__.setdefault(k, v)
    return err
