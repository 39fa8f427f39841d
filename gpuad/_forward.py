"""Forward mode: tracers that carry a tangent beside their primal.

# NOTE [symbolic zeros]: a tangent of ``None`` is an exact zero.  Rules are
# not called for zero tangents, and an op whose inputs all have zero tangents
# returns its plain primal output, so constants never grow a tangent.
"""

from __future__ import annotations

from . import ops
from ._core import Trace, Tracer, bind

__all__ = ["JVPTrace", "JVPTracer"]


class JVPTracer(Tracer):
    """``_primal`` with its ``_tangent`` (same shape and dtype)."""

    __slots__ = ("_tangent",)

    def __init__(self, trace, primal, tangent):
        self._trace = trace
        self._primal = primal
        self._tangent = tangent


class JVPTrace(Trace):
    """Forward-mode trace: pushes tangents through each primitive as it runs."""

    __slots__ = ()

    def process(self, prim, args, params):
        primals = []
        tangents = []
        nested = False  # does any primal carry a lower-level tracer?
        for a in args:
            if type(a) is JVPTracer and a._trace is self:
                p = a._primal
                tangents.append(a._tangent)
            else:
                p = a
                tangents.append(None)
            primals.append(p)
            if isinstance(p, Tracer):
                nested = True
        if prim.custom is not None:
            return prim.custom.process_jvp(self, prim, primals, tangents, params)
        ans = bind(prim, primals, params) if nested else prim.impl(primals, params)
        if prim.jvp_joint is not None:
            tout = prim.jvp_joint(tuple(tangents), ans, *primals, **params)
        else:
            tout = None
            jvps = prim.jvps
            n = len(primals)
            for i, t in enumerate(tangents):
                if t is None:
                    continue
                try:
                    rule = jvps[i]
                except (IndexError, TypeError):
                    rule = None
                if rule is None:
                    rule = prim.jvp_rule(i)  # raises, naming the op and the argument
                if params:
                    c = rule(t, ans, *primals, **params)
                elif n == 1:  # NOTE [star calls] in _registry
                    c = rule(t, ans, primals[0])
                elif n == 2:
                    c = rule(t, ans, primals[0], primals[1])
                else:
                    c = rule(t, ans, *primals)
                if c is not None:
                    tout = c if tout is None else _add(tout, c)
        if prim.multiple_results:
            tout = tuple(None if t is None else fit(t, a, prim.name) for t, a in zip(tout, ans))
            return tuple(a if t is None else JVPTracer(self, a, t) for a, t in zip(ans, tout))
        if tout is None:
            return ans
        if tout.shape != ans.shape or tout.dtype is not ans.dtype:
            tout = fit(tout, ans, prim.name)
        return JVPTracer(self, ans, tout)


def _add(a, b):
    return ops.add(a, b)


def fit(t, ans, name):
    """Broadcast a tangent contribution to the output's shape and dtype."""
    if t.shape != ans.shape and tuple(t.shape) != tuple(ans.shape):
        try:
            t = ops.broadcast_to(t, tuple(ans.shape))
        except Exception:
            raise ValueError(
                f"{name}: JVP rule returned shape {tuple(t.shape)}, which does not broadcast to the "
                f"output shape {tuple(ans.shape)}"
            ) from None
    if t.dtype != ans.dtype:
        from ._reverse import cast_tangent

        t = cast_tangent(t, ans.dtype)  # NOTE [complex to real]
    return t
