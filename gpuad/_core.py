"""Tracing: trace levels, tracers, and ``bind``.

This module knows nothing about derivatives.  A *trace* is one active
transform (a ``jvp`` or a ``vjp``); a *tracer* is a value boxed by a trace.
``bind(prim, args, params)`` finds the innermost trace among the arguments and
lets it process the primitive; with no tracers it runs the implementation.

# NOTE [trace levels]: traces nest.  Each new trace gets a level one above the
# traces active when it was made; the active traces live in a ContextVar, so
# threads and asyncio tasks each see their own.  Only the highest-level
# tracers among an op's arguments are unboxed by that level; tracers of lower
# levels are constants to it and are handled when the unboxed values are bound
# again one level down.  This is what makes grad(grad(f)), jvp(grad(f)) and
# jacfwd(jacrev(f)) work without perturbation confusion.
"""

from __future__ import annotations

import contextvars
import itertools

__all__ = ["Trace", "Tracer", "bind", "full_unbox", "new_trace", "is_tracer"]

_active = contextvars.ContextVar("gpuad_active_traces", default=())
_trace_ids = itertools.count()


class Trace:
    """One active transform.  Subclasses implement ``process``."""

    __slots__ = ("level", "alive", "id")

    def __init__(self):
        active = _active.get()
        self.level = (active[-1].level + 1) if active else 1
        self.alive = True
        self.id = next(_trace_ids)

    def process(self, prim, args, params):  # pragma: no cover - abstract
        raise NotImplementedError


class new_trace:
    """Context manager that makes ``trace`` active while the user function runs."""

    __slots__ = ("trace", "_token")

    def __init__(self, trace):
        self.trace = trace

    def __enter__(self):
        self._token = _active.set(_active.get() + (self.trace,))
        return self.trace

    def __exit__(self, *exc):
        _active.reset(self._token)
        self.trace.alive = False
        return False


class Tracer:
    """Base class of boxed values.  ``_primal`` is the value one level down.

    The array-object protocol (operators, ``shape``, indexing, ...) is added
    in ``gpuad._array``.
    """

    __slots__ = ("_trace", "_primal")


def is_tracer(x):
    return isinstance(x, Tracer)


def full_unbox(x):
    """Strip every level of boxing and return the plain backend array."""
    while isinstance(x, Tracer):
        x = x._primal
    return x


def bind(prim, args, params):
    """Apply primitive ``prim`` to positional ``args`` with static ``params``."""
    top = None
    level = 0
    for a in args:
        if isinstance(a, Tracer):
            t = a._trace
            if t.level > level:
                top, level = t, t.level
            elif t.level == level and t is not top:
                _confused(prim, top, t)
    if top is None:
        return prim.impl(args, params)
    if prim.composite is not None:  # NOTE [fused primitives] in _registry
        return prim.composite(*args, **params)
    if not top.alive:
        raise RuntimeError(
            f"{prim.name}: a traced value escaped the transform that made it (a leaked tracer "
            f"of level {top.level}); return values from the function instead of storing them"
        )
    return top.process(prim, args, params)


def _confused(prim, a, b):
    raise RuntimeError(
        f"{prim.name}: values from two different transforms at the same level {a.level} were "
        "mixed; a traced value probably leaked out of the transform that made it"
    )
