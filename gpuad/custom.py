"""User-defined derivative rules: ``custom_vjp`` and ``custom_jvp``.

A decorated function becomes a primitive of its own (not added to the
registry table).  Its rules are ordinary Python functions written with gpuad
ops, so they compose with every transform:

* a ``custom_vjp`` function also works under ``jvp`` and ``hessian``: its
  forward derivative is obtained by transposing the (linear) backward rule,
  ``J t = vjp(ct -> bwd(res, ct))(t)``.  JAX cannot do this;
* a ``custom_jvp`` function also works under ``grad``: its VJP is the
  transpose of its (linear-in-tangents) JVP rule.

# NOTE [custom rules are linear]: the transposition trick needs ``bwd`` to be
# linear in its cotangent and the JVP rule linear in its tangents, which any
# correct rule is.  Both must be written with gpuad ops (not raw NumPy).
"""

from __future__ import annotations

import functools

from . import ops
from ._core import bind, full_unbox
from ._dtypes import is_floating
from ._forward import JVPTracer, fit
from ._registry import Primitive, Spec
from ._reverse import Node, VJPTracer, recorded
from ._tree import tree_flatten, tree_unflatten

__all__ = ["custom_vjp", "custom_jvp"]


class _Call:
    """Per-call static data: the input structure, the output structure once
    known, and keyword arguments passed through unchanged (checkpointing)."""

    __slots__ = ("in_td", "out_td", "kwargs")

    def __init__(self, in_td, kwargs=None):
        self.in_td = in_td
        self.out_td = None
        self.kwargs = {} if kwargs is None else kwargs

    def __repr__(self):
        return f"_Call({self.in_td!r} -> {self.out_td!r})"


def _flat_out(call, out, who):
    leaves, td = tree_flatten(out)
    if call.out_td is None:
        call.out_td = td
    elif call.out_td != td:
        raise ValueError(f"{who}: output structure {td!r} differs from the function's {call.out_td!r}")
    return tuple(leaves)


def _zeros_for(x):
    return ops.zeros_like(full_unbox(x))


def _check_leaf(c, like, name, what, of):
    """A user rule's cotangent or tangent ``c`` must be an array shaped like ``like`` (floating if it is)."""
    if not hasattr(c, "shape") or not hasattr(c, "dtype"):
        raise TypeError(f"{name}: {what} is a {type(c).__name__}, not an array; {of} has shape "
                        f"{tuple(like.shape)} and dtype {like.dtype}")
    if tuple(c.shape) != tuple(like.shape) or (is_floating(like.dtype) and not is_floating(c.dtype)):
        raise ValueError(f"{name}: {what} has shape {tuple(c.shape)} and dtype {c.dtype}, but {of} has shape "
                         f"{tuple(like.shape)} and dtype {like.dtype}")


class _CustomBase:
    """Shared machinery: the primitive, calling it, and evaluating the plain function."""

    def __init__(self, fun, kind):
        if not callable(fun):
            raise TypeError(f"{kind}: decorates a function, got {type(fun).__name__} {fun!r}")
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.prim = Primitive(f"{kind}({getattr(fun, '__name__', 'f')})", self._impl, multiple_results=True)
        self.prim.custom = self

    def _impl(self, xp, *leaves, call):
        return _flat_out(call, self.fun(*tree_unflatten(call.in_td, leaves)), self.prim.name)

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError(f"{self.prim.name}: keyword arguments are not supported (got {', '.join(kwargs)}); "
                            "pass every argument positionally")
        self._check_defined()
        leaves, in_td = tree_flatten(args)
        call = _Call(in_td)
        outs = bind(self.prim, tuple(leaves), {"call": call})
        return tree_unflatten(call.out_td, outs)


class custom_vjp(_CustomBase):
    """Decorator: give a function a hand-written reverse-mode rule.

    Examples
    --------
    >>> @custom_vjp
    ... def clip_gradient(x):
    ...     return x
    >>> def fwd(x):
    ...     return x, None           # (output, residuals)
    >>> def bwd(res, g):
    ...     return (xp.clip(g, -1.0, 1.0),)   # one cotangent per positional argument
    >>> clip_gradient.defvjp(fwd, bwd)

    ``fwd(*args) -> (out, residuals)``; ``bwd(residuals, g) -> tuple`` with one
    cotangent (a pytree like the argument, or ``None`` for zero) per argument.
    """

    def __init__(self, fun):
        super().__init__(fun, "custom_vjp")
        self.fwd = None
        self.bwd = None
        self._out_tds = {}  # NOTE [fwd structure]

    def _impl(self, xp, *leaves, call):
        outs = super()._impl(xp, *leaves, call=call)
        if call.in_td not in self._out_tds:
            self._remember(call.in_td, call.out_td)
        return outs

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd
        return self

    def _check_defined(self):
        if self.fwd is None:
            raise TypeError(f"{self.prim.name}: call .defvjp(fwd, bwd) before using the function")

    def _run_fwd(self, primals, call):
        args = tree_unflatten(call.in_td, primals)
        res_out = self.fwd(*args)
        if not (isinstance(res_out, tuple) and len(res_out) == 2):
            raise TypeError(f"{self.prim.name}: fwd must return a pair (output, residuals)")
        out, res = res_out
        leaves, td = tree_flatten(out)
        want = self._plain_out_td(call.in_td, primals)
        if td != want:
            raise ValueError(
                f"{self.prim.name}: fwd's output (the first entry of its pair) has structure {td!r}, but the "
                f"function {getattr(self.fun, '__name__', self.fun)!r} returns {want!r}; fwd must return "
                "(output, residuals) with the output exactly as the function returns it")
        if call.out_td is None:
            call.out_td = td
        return tuple(leaves), res

    def _plain_out_td(self, in_td, primals):
        """The output structure of the plain function for inputs of structure ``in_td``.

        # NOTE [fwd structure]: under reverse mode the plain function never
        # runs (``fwd`` replaces it), so its output structure is learned once
        # per input structure, from one plain run (or any earlier call), and
        # remembered; fwd's must match it.
        """
        td = self._out_tds.get(in_td)
        if td is None:
            out = self.fun(*tree_unflatten(in_td, [full_unbox(p) for p in primals]))
            td = self._remember(in_td, tree_flatten(out)[1])
        return td

    def _remember(self, in_td, td):
        if len(self._out_tds) >= 64:  # bounded: structures rarely vary, but never grow without end
            self._out_tds.clear()
        self._out_tds[in_td] = td
        return td

    def _run_bwd(self, res, g_leaves, call, specs):
        cts = self.bwd(res, tree_unflatten(call.out_td, list(g_leaves)))
        if not isinstance(cts, (tuple, list)):
            raise TypeError(f"{self.prim.name}: bwd must return a tuple with one entry per positional argument")
        n_args = len(call.in_td.children)
        if len(cts) != n_args:
            raise ValueError(f"{self.prim.name}: bwd returned {len(cts)} cotangents for {n_args} arguments")
        flat = []
        for ct, sub in zip(cts, call.in_td.children):
            if ct is None:
                flat.extend([None] * sub.num_leaves)
            else:
                leaves, td = tree_flatten(ct)
                if td != sub:
                    raise ValueError(
                        f"{self.prim.name}: bwd cotangent structure {td!r} does not match the argument's {sub!r}")
                flat.extend(leaves)
        if specs is not None:
            for j, (c, spec) in enumerate(zip(flat, specs)):
                if c is not None and hasattr(spec, "shape"):
                    _check_leaf(c, spec, self.prim.name, f"bwd's cotangent for input leaf {j}", "that input")
        return flat

    # --- engine hooks -------------------------------------------------------
    def process_vjp(self, trace, prim, primals, parents, params):
        call = params["call"]
        outs, res = self._run_fwd(primals, call)
        specs = tuple(Spec(p) if hasattr(p, "shape") else p for p in primals)
        node = recorded(Node(prim, parents, specs, res, params, tuple(Spec(o) for o in outs)))
        return tuple(VJPTracer(trace, o, node, i) for i, o in enumerate(outs))

    def backward(self, node, g):
        return self._run_bwd(node.ans, g, node.params["call"], node.args)

    def process_jvp(self, trace, prim, primals, tangents, params):
        from .transforms import vjp

        call = params["call"]
        outs, res = self._run_fwd(primals, call)
        live = [i for i, t in enumerate(tangents) if t is not None]

        def backward_rule(*cts):
            flat = self._run_bwd(res, cts, call, primals)
            return [flat[i] if flat[i] is not None else _zeros_for(primals[i]) for i in live]

        # The backward rule is linear in the cotangent, so its VJP is the JVP.
        # NOTE [non-floating outputs]: only floating outputs carry a
        # cotangent (and get a tangent); bwd sees zeros of the output's dtype
        # for the others, as it does in reverse mode (a symbolic zero there is
        # materialised the same way), and they leave as plain arrays.
        diff = [k for k, o in enumerate(outs) if is_floating(o.dtype)]
        if not diff:
            return tuple(outs)
        fixed = [_zeros_for(o) for o in outs]

        def on_floating(*cts):
            full = list(fixed)
            for k, c in zip(diff, cts):
                full[k] = c
            return backward_rule(*full)

        _, transpose = vjp(on_floating, *[fixed[k] for k in diff])
        touts = transpose([tangents[i] for i in live])
        result = list(outs)
        for k, t in zip(diff, touts):
            result[k] = JVPTracer(trace, outs[k], t)
        return tuple(result)


class custom_jvp(_CustomBase):
    """Decorator: give a function a hand-written forward-mode rule.

    ``rule(primals, tangents) -> (out, tangent_out)`` where ``primals`` and
    ``tangents`` are tuples like the positional arguments.  Reverse mode
    transposes the rule, so ``grad`` works too.

    Examples
    --------
    >>> @custom_jvp
    ... def log1pexp(x):
    ...     return xp.log1p(xp.exp(x))
    >>> @log1pexp.defjvp
    ... def _(primals, tangents):
    ...     (x,), (t,) = primals, tangents
    ...     return log1pexp(x), t * gpuad.nn.sigmoid(x)
    """

    def __init__(self, fun):
        super().__init__(fun, "custom_jvp")
        self.rule = None

    def defjvp(self, rule):
        self.rule = rule
        return rule

    def _check_defined(self):
        if self.rule is None:
            raise TypeError(f"{self.prim.name}: call .defjvp(rule) before using the function")

    def _run_rule(self, primals, tangents, call):
        p = tree_unflatten(call.in_td, primals)
        t = tree_unflatten(call.in_td, tangents)
        res = self.rule(tuple(p), tuple(t))
        if not (isinstance(res, tuple) and len(res) == 2):
            raise TypeError(f"{self.prim.name}: the JVP rule must return a pair (output, tangent_output)")
        out, tout = res
        outs = _flat_out(call, out, self.prim.name)
        tl, ttd = tree_flatten(tout)
        if ttd != call.out_td:
            raise ValueError(f"{self.prim.name}: tangent output structure {ttd!r} does not match {call.out_td!r}")
        for j, (t, o) in enumerate(zip(tl, outs)):
            _check_leaf(t, o, self.prim.name, f"the JVP rule's tangent output {j}", "the output")
        return outs, tuple(fit(t, o, self.prim.name) if t.dtype != o.dtype else t for t, o in zip(tl, outs))

    # --- engine hooks -------------------------------------------------------
    def process_jvp(self, trace, prim, primals, tangents, params):
        call = params["call"]
        ts = [t if t is not None else _zeros_for(p) for p, t in zip(primals, tangents)]
        outs, touts = self._run_rule(primals, ts, call)
        return tuple(JVPTracer(trace, o, t) for o, t in zip(outs, touts))

    def process_vjp(self, trace, prim, primals, parents, params):
        outs = bind(prim, primals, params)
        node = recorded(Node(prim, parents, tuple(primals), None, params, tuple(Spec(o) for o in outs)))
        return tuple(VJPTracer(trace, o, node, i) for i, o in enumerate(outs))

    def backward(self, node, g):
        from .transforms import vjp

        primals = node.args
        call = node.params["call"]
        live = [i for i, p in enumerate(node.parents) if p is not None]

        def tangent_map(*ts):
            full = [_zeros_for(p) if hasattr(p, "shape") else p for p in primals]
            for i, t in zip(live, ts):
                full[i] = t
            return list(self._run_rule(primals, full, call)[1])

        _, transpose = vjp(tangent_map, *[_zeros_for(primals[i]) for i in live])
        cts = transpose(list(g))
        out = [None] * len(primals)
        for i, c in zip(live, cts):
            out[i] = c
        return out
