"""Checkpointing: trade recomputation for tape memory.

``checkpoint(f)`` makes ``f`` one primitive whose tape node keeps only its
inputs; its internals are recomputed, under a fresh tape, when the backward
pass reaches it.  ``checkpoint_sequential`` runs a chain of steps under a
schedule (``gpuad._schedules``): store everything, ``k`` uniform segments,
or binomial checkpointing ("revolve") with a given number of snapshots.

# NOTE [checkpoint is a primitive]: like ``custom_vjp`` functions, a
# checkpointed function is its own primitive with engine hooks
# (``process_vjp``, ``backward``, ``process_jvp``).  In reverse mode its
# forward is the *same primitive bound one level down*, so every enclosing
# reverse trace (``grad(grad(...))``) checkpoints it too; forward mode keeps
# nothing and simply runs ``f`` on its tracers.  Differentiable values must
# be arguments: a closure over a value being differentiated is an error
# (the segment could not recompute it).

# NOTE [replay and state]: recomputation sees exactly what the first run
# saw.  Explicit random keys passed as arguments replay by construction (the
# node keeps them).  Other impure reads (a global counter, a host RNG) go
# through :func:`replayed`, which logs their value during the first run and
# returns the logged value during recomputation.  State updates (a running
# mean, a callback) go through :func:`on_forward_only`, or consult
# :func:`is_recomputing`, so they happen once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

from ._core import Trace, Tracer, bind, full_unbox, new_trace
from .custom import _Call
from .custom import _flat_out as _flat_tree
from ._forward import JVPTracer
from ._registry import Primitive, Spec
from ._reverse import Node, VJPTrace, VJPTracer, backward, recorded
from ._tree import tree_flatten, tree_unflatten

__all__ = [
    "checkpoint", "checkpoint_sequential", "plan_checkpoints", "is_recomputing", "replayed",
    "on_forward_only", "save_only", "ScheduleReport", "last_report",
]

# ---------------------------------------------------------------- replay frames


class _Frame:
    """A log of replayed values: recorded by a first run, consumed by a recomputation."""

    __slots__ = ("values", "cursor", "replay")

    def __init__(self, values=None, replay=False):
        self.values = [] if values is None else list(values)
        self.cursor = 0
        self.replay = replay


_frames = contextvars.ContextVar("gpuad_checkpoint_frames", default=())

# NOTE [uncounted ops]: a policy's saved outputs are matched to the ops of the
# recomputation by their position in the segment.  Ops run inside
# ``on_forward_only`` or inside the first call of ``replayed`` do not run
# again when the segment is recomputed, so they take no position; each saved
# output also carries its op's name, and a recomputation that reaches a
# different op at that position raises instead of substituting a wrong value.
_uncounted = contextvars.ContextVar("gpuad_checkpoint_uncounted", default=False)


def _call_uncounted(fn, args, kwargs):
    token = _uncounted.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _uncounted.reset(token)


@contextlib.contextmanager
def _pushed(frame):
    token = _frames.set(_frames.get() + (frame,))
    try:
        yield frame
    finally:
        _frames.reset(token)


def is_recomputing():
    """True while a checkpointed segment is being recomputed for its backward pass."""
    return any(f.replay for f in _frames.get())


def replayed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the first run; its logged value when recomputing.

    Use for impure reads inside checkpointed code (a counter, a host random
    generator) so that recomputation sees identical values.  Outside any
    checkpoint it simply calls ``fn``.  The logged values are part of the
    segment's snapshot.
    """
    if not callable(fn):
        raise TypeError(f"replayed: fn must be callable, got {type(fn).__name__}: {fn!r:.60}")
    frames = _frames.get()
    src = None
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].replay:
            src = i
            break
    if src is None:
        value = _call_uncounted(fn, args, kwargs)
        record = frames
    else:
        f = frames[src]
        if f.cursor >= len(f.values):
            raise RuntimeError(
                "replayed: the recomputation asked for more values than the first run produced; "
                "a checkpointed segment must take the same path when it is recomputed"
            )
        value = f.values[f.cursor]
        f.cursor += 1
        record = frames[src + 1:]
    for f in record:
        if not f.replay:
            f.values.append(value)
    return value


def on_forward_only(fn, *args, **kwargs):
    """Call ``fn`` unless a segment is being recomputed (state is updated once).

    Returns ``fn``'s result, or ``None`` during recomputation.
    """
    if not callable(fn):
        raise TypeError(f"on_forward_only: fn must be callable, got {type(fn).__name__}: {fn!r:.60}")
    if is_recomputing():
        return None
    return _call_uncounted(fn, args, kwargs)


# ---------------------------------------------------------------- policies


def save_only(*names):
    """A policy keeping the outputs of the named primitives, e.g. ``save_only("matmul")``."""
    import difflib

    from ._registry import PRIMITIVES

    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"save_only: primitive names must be strings, got {type(n).__name__}: {n!r}")
        if n not in PRIMITIVES:
            close = difflib.get_close_matches(n, PRIMITIVES, n=3)
            raise ValueError(f"save_only: no primitive is named {n!r}"
                             + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
    names = frozenset(names)

    def policy(prim, args):
        return prim.name in names

    policy.__name__ = f"save_only{tuple(sorted(names))}"
    return policy


class _Boxed(Tracer):
    __slots__ = ()

    def __init__(self, trace, primal):
        self._trace = trace
        self._primal = primal


class _SaveTrace(Trace):
    """Passes every primitive down, keeping the outputs the policy chooses (plain arrays)."""

    __slots__ = ("policy", "saved", "n")

    def __init__(self, policy):
        super().__init__()
        self.policy, self.saved, self.n = policy, [], 0

    def process(self, prim, args, params):
        inner = [a._primal if isinstance(a, _Boxed) and a._trace is self else a for a in args]
        out = bind(prim, inner, params)
        if not _uncounted.get():  # NOTE [uncounted ops]
            if prim.custom is None and self.policy(prim, inner):
                plain = tuple(full_unbox(o) for o in out) if prim.multiple_results else full_unbox(out)
                self.saved.append((self.n, prim.name, plain))
            self.n += 1
        if prim.multiple_results:
            return tuple(_Boxed(self, o) for o in out)
        return _Boxed(self, out)


class _ReplayTrace(_SaveTrace):
    """Recomputes a segment, substituting the saved outputs for the chosen primitives."""

    __slots__ = ()

    def __init__(self, saved):
        Trace.__init__(self)
        self.policy, self.saved, self.n = None, list(saved), 0

    def process(self, prim, args, params):
        inner = [a._primal if isinstance(a, _Boxed) and a._trace is self else a for a in args]
        if not _uncounted.get():  # NOTE [uncounted ops]
            if self.saved and self.saved[0][0] == self.n:
                _, name, value = self.saved.pop(0)
                if name != prim.name:
                    raise RuntimeError(
                        f"checkpoint: recomputing the segment reached {prim.name!r} where the first run "
                        f"saved the output of {name!r} (op {self.n}); a checkpointed segment must run the "
                        "same ops when it is recomputed (route state updates through on_forward_only and "
                        "impure reads through replayed)")
                prim = _stand_in(prim, value)
            self.n += 1
        out = bind(prim, inner, params)
        if prim.multiple_results:
            return tuple(_Boxed(self, o) for o in out)
        return _Boxed(self, out)


def _stand_in(prim, value):
    """``prim`` with its rules, whose implementation returns the saved ``value``."""
    return Primitive(prim.name, lambda xp, *a, **k: value, vjps=prim.vjps, jvps=prim.jvps,
                     jvp_joint=prim.jvp_joint, keep_args=prim.keep_args, keep_ans=prim.keep_ans,
                     multiple_results=prim.multiple_results, vjp_variadic=prim.vjp_variadic)


def _run_boxed(trace_cls_arg, fun, leaves):
    trace = trace_cls_arg
    with new_trace(trace):
        boxed = [_Boxed(trace, x) if hasattr(x, "shape") else x for x in leaves]
        outs = fun(boxed)
    return [o._primal if isinstance(o, _Boxed) and o._trace is trace else o for o in outs]


# ---------------------------------------------------------------- recompute helper


def _vjp_free(fun, xs, cts):
    """Cotangents of ``xs`` for ``fun(*xs) -> list`` pulled back from ``cts``.

    Records ``fun`` on a fresh tape and frees it while pulling back
    (``None`` is a zero cotangent).
    """
    trace = VJPTrace()
    with new_trace(trace):
        boxed = [trace.new_input(x) for x in xs]
        outs = fun(*boxed)
    roots = [((o._node, o._index), c) for o, c in zip(outs, cts)
             if c is not None and isinstance(o, VJPTracer) and o._trace is trace]
    grads = backward(roots, free=True) if roots else {}
    return [grads.get(b._node) for b in boxed]


def _leaked(outs, trace, who, hint="e.g. checkpoint(lambda x, w: ...)(x, w)"):
    for o in outs:
        if isinstance(o, Tracer) and (trace is None or o._trace.level >= trace.level):
            kind = {"JVPTrace": "jvp", "VJPTrace": "grad/vjp"}.get(type(o._trace).__name__, "gpuad")
            raise ValueError(
                f"{who}: the function reads a value that is being differentiated from its closure "
                f"(a tracer of an enclosing {kind} transform), which the segment could not recompute. "
                f"Pass every differentiable value as an argument, {hint}"
            )


def _flat_out(call, out, who):
    """``custom._flat_out`` (one output structure per call), plus: arrays only."""
    leaves = _flat_tree(call, out, who)
    for o in leaves:
        if not hasattr(o, "shape"):
            raise TypeError(f"{who}: the function must return arrays, got {type(o).__name__}")
    return leaves


# ---------------------------------------------------------------- checkpoint


class _Checkpoint:
    """The primitive made by :func:`checkpoint` (see NOTE [checkpoint is a primitive]).

    Its tape node keeps the segment's inputs (``node.args``) and, as
    ``node.ans``, the pair ``(saved, log)``: the policy's saved outputs
    ``[(op index, op name, plain array)]`` and the values logged by :func:`replayed`.
    """

    is_checkpoint = True

    def __init__(self, fun, policy):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.policy = policy
        self.prim = Primitive(f"checkpoint({getattr(fun, '__name__', 'f')})", self._impl, multiple_results=True)
        self.prim.custom = self

    def _call_fun(self, leaves, call):
        return _flat_out(call, self.fun(*tree_unflatten(call.in_td, list(leaves)), **call.kwargs), self.prim.name)

    def _impl(self, xp, *leaves, call):
        outs = self._call_fun(leaves, call)
        if any(isinstance(o, Tracer) for o in outs):
            _leaked(outs, None, self.prim.name)
        return outs

    def __call__(self, *args, **kwargs):
        leaves, in_td = tree_flatten(args)
        call = _Call(in_td, kwargs)
        outs = bind(self.prim, tuple(leaves), {"call": call})
        return tree_unflatten(call.out_td, list(outs))

    def residual_arrays(self, node):
        arrays = [a for a in node.args if hasattr(a, "shape") and not isinstance(a, Spec)]
        saved, log = node.ans if node.ans is not None else ((), ())
        for _, _, v in saved:
            arrays.extend(v if isinstance(v, tuple) else (v,))
        arrays.extend(leaf for leaf in tree_flatten(list(log))[0] if hasattr(leaf, "shape"))
        return arrays

    # --- engine hooks -------------------------------------------------------
    def process_vjp(self, trace, prim, primals, parents, params):
        call = params["call"]
        with _pushed(_Frame()) as frame:
            if self.policy is None:
                outs = bind(prim, primals, params)
                saved = ()
            else:
                save = _SaveTrace(self.policy)
                outs = _run_boxed(save, lambda b: self._call_fun(b, call), primals)
                saved = tuple(save.saved)
        _leaked(outs, trace, prim.name)
        node = recorded(Node(prim, parents, tuple(primals), (saved, tuple(frame.values)), params,
                             tuple(Spec(o) for o in outs)))
        return tuple(VJPTracer(trace, o, node, i) for i, o in enumerate(outs))

    def backward(self, node, g):
        saved, log = node.ans
        primals = node.args
        call = node.params["call"]
        live = [i for i, p in enumerate(node.parents) if p is not None]

        def recompute(*xs):
            full = list(primals)
            for i, x in zip(live, xs):
                full[i] = x
            with _pushed(_Frame(log, replay=True)):
                if saved:
                    return _run_boxed(_ReplayTrace(saved), lambda b: self._call_fun(b, call), full)
                return self._call_fun(full, call)

        cts = _vjp_free(recompute, [primals[i] for i in live], list(g))
        out = [None] * len(primals)
        for i, c in zip(live, cts):
            out[i] = c
        return out

    def process_jvp(self, trace, prim, primals, tangents, params):
        boxed = [p if t is None else JVPTracer(trace, p, t) for p, t in zip(primals, tangents)]
        return self._call_fun(boxed, params["call"])


def checkpoint(f=None, *, policy=None):
    """Make ``f`` a checkpointed segment: its tape keeps only its inputs.

    Parameters
    ----------
    f : callable
        ``f(*args, **kwargs)``; positional arguments are pytrees of arrays,
        keyword arguments are static.  Every value to differentiate must be
        a positional argument (not read from a closure).
    policy : callable, optional
        ``policy(prim, args) -> bool``: keep the output of this primitive
        application instead of recomputing it (e.g. ``save_only("matmul")``).

    Returns
    -------
    callable
        Same signature and results as ``f``.  In reverse mode its node keeps
        the inputs, the policy's chosen outputs and the :func:`replayed`
        values; the rest of ``f`` runs again when backward reaches it.
        Gradients equal ``f``'s.  Usable as ``@checkpoint`` or
        ``@checkpoint(policy=...)``.
    """
    if f is None:
        return lambda fun: checkpoint(fun, policy=policy)
    if not callable(f):
        raise TypeError(f"checkpoint: f must be callable, got {type(f).__name__}")
    if policy is not None and not callable(policy):
        raise TypeError(f"checkpoint: policy must be callable (prim, args) -> bool, got {type(policy).__name__}")
    return _Checkpoint(f, policy)


_SEQUENTIAL_NAMES = ("ScheduleReport", "checkpoint_sequential", "last_report", "plan_checkpoints")


def __getattr__(name):
    # The chain executor lives in gpuad._sequential, which imports this module.
    if name in _SEQUENTIAL_NAMES:
        from . import _sequential

        return getattr(_sequential, name)
    raise AttributeError(f"module 'gpuad.checkpointing' has no attribute {name!r}")
