"""Reverse mode: the tape and the backward pass.

A :class:`VJPTrace` records one :class:`Node` per primitive applied to its
tracers.  :func:`backward` walks the nodes in reverse creation order,
iteratively (no recursion, so 100,000-op chains are fine).

# NOTE [engine duties]: the backward pass, not the rules, does the work every
# op shares: it un-broadcasts each cotangent to its argument's shape and
# dtype, accumulates fan-out contributions, skips nodes whose cotangent is a
# symbolic zero (``None``), and -- when ``free`` is set, as in ``grad`` -- drops
# each node's residuals as soon as its rules have consumed them.
"""

from __future__ import annotations

import itertools
from operator import attrgetter

from . import ops
from ._backend import namespace_of
from ._core import Trace, Tracer, bind
from ._registry import Spec

__all__ = ["VJPTrace", "VJPTracer", "Node", "backward", "set_tape_observer", "get_tape_observer"]

_seq = itertools.count()
_seq_of = attrgetter("seq")

# NOTE [tape observer]: memory accounting (gpuad.memory) and checkpointing
# watch the tape through one optional observer with two methods:
# ``saved(node)`` after a node is recorded, and ``freed(node)`` just before a
# consumed node drops its residuals.  With no observer (the default) the hot
# path pays one global read per node.
_observer = None


def set_tape_observer(observer):
    """Install ``observer`` (or ``None``); returns the previous one."""
    global _observer
    prev, _observer = _observer, observer
    return prev


def get_tape_observer():
    return _observer


def recorded(node):
    """Tell the observer about a node made outside ``VJPTrace.process`` (custom rules)."""
    if _observer is not None:
        _observer.saved(node)
    return node


class Node:
    """One recorded primitive application.

    Attributes
    ----------
    prim : Primitive or None
        ``None`` for a leaf (an input being differentiated).
    parents : tuple
        Per positional argument, the ``(node, output_index)`` it came from, or
        ``None`` if the argument is a constant at this level.
    args : tuple
        Per argument: the value if the rule keeps it, else its :class:`Spec`
        (for scalars and ``None``, the value itself).
    ans : array, tuple or None
        The output, if the rule keeps it.
    params : dict
        Static parameters.
    out_specs : tuple of Spec or None
        Shape/dtype of each output of a multiple-result primitive (for
        materialising zero cotangents); ``None`` for single-output nodes.
    nout : int
        Number of outputs.
    seq : int
        Creation order; backward visits nodes in decreasing ``seq``.
    """

    __slots__ = ("prim", "parents", "args", "ans", "params", "out_specs", "nout", "seq", "__weakref__")

    def __init__(self, prim, parents, args, ans, params, out_specs=None):
        self.prim = prim
        self.parents = parents
        self.args = args
        self.ans = ans
        self.params = params
        self.out_specs = out_specs
        self.nout = 1 if out_specs is None else len(out_specs)
        self.seq = next(_seq)


class VJPTracer(Tracer):
    """A value recorded on a reverse tape: ``_primal`` plus where it came from."""

    __slots__ = ("_node", "_index")

    def __init__(self, trace, primal, node, index):
        self._trace = trace
        self._primal = primal
        self._node = node
        self._index = index


class VJPTrace(Trace):
    """Reverse-mode trace: records nodes while the user function runs."""

    __slots__ = ()

    def new_input(self, x):
        return VJPTracer(self, x, Node(None, (), (), None, None), 0)

    def process(self, prim, args, params):
        keep = prim.keep_args
        if len(args) == 1:  # NOTE [unary fast path]: the same steps as below, unrolled
            p = args[0]
            if type(p) is VJPTracer and p._trace is self:
                parents = ((p._node, p._index),)
                p = p._primal
            else:
                parents = (None,)
            primals = (p,)
            kept = primals if keep or not hasattr(p, "shape") else (Spec(p),)
            nested = isinstance(p, Tracer)
        else:
            primals = []
            parents = []
            kept = []
            nested = False  # does any primal carry a lower-level tracer?
            i = 0
            for a in args:
                if type(a) is VJPTracer and a._trace is self:
                    p = a._primal
                    parents.append((a._node, a._index))
                else:
                    p = a
                    parents.append(None)
                primals.append(p)
                if i in keep or not hasattr(p, "shape"):
                    kept.append(p)
                else:
                    kept.append(Spec(p))
                if isinstance(p, Tracer):
                    nested = True
                i += 1
            parents = tuple(parents)
            kept = tuple(kept)
        if prim.custom is not None:
            return prim.custom.process_vjp(self, prim, primals, parents, params)
        if nested:
            ans = bind(prim, primals, params)
        else:  # prim.impl(primals, params), inlined: this is the hottest line of the tape
            xp = namespace_of(primals, prim.name)
            ans = prim.impls.get(xp, prim.impl_default)(xp, *primals, **params)
        if prim.multiple_results:
            node = Node(prim, parents, kept, ans if prim.keep_ans else None, params,
                        tuple(Spec(a) for a in ans))
            if _observer is not None:
                _observer.saved(node)
            return tuple(VJPTracer(self, a, node, i) for i, a in enumerate(ans))
        node = Node(prim, parents, kept, ans if prim.keep_ans else None, params)
        if _observer is not None:
            _observer.saved(node)
        return VJPTracer(self, ans, node, 0)


def unbroadcast(ct, spec, prim_name, argnum):
    """Sum ``ct`` down to ``spec.shape`` and cast it to ``spec.dtype``."""
    shape = spec.shape
    cshape = ct.shape
    if cshape != shape and tuple(cshape) != shape:
        cshape = tuple(cshape)
        lead = len(cshape) - len(shape)
        if lead < 0:
            raise ValueError(
                f"{prim_name}: VJP rule for argument {argnum} returned shape {cshape}, "
                f"which does not broadcast to the argument's shape {shape}"
            )
        axes = tuple(range(lead)) + tuple(
            lead + i for i, (s, c) in enumerate(zip(shape, cshape[lead:])) if s == 1 and c != 1
        )
        if axes:
            ct = ops.sum(ct, axis=axes)
        if tuple(ct.shape) != shape:
            ct = ops.reshape(ct, shape)
    if ct.dtype != spec.dtype:
        ct = ops.astype(ct, spec.dtype)
    return ct


def _arg_spec(node, i):
    a = node.args[i]
    return a if isinstance(a, Spec) else Spec(a)


def backward(roots, free):
    """Propagate cotangents from ``roots`` back to every node reachable from them.

    Parameters
    ----------
    roots : list of ((Node, int), array)
        Output references and their cotangents.
    free : bool
        Drop each node's residuals once consumed (the graph cannot be reused).

    Returns
    -------
    dict
        Leaf ``Node`` -> accumulated cotangent (absent means zero).
    """
    pending = {}
    owned = {}  # NOTE [in-place accumulation]
    for (node, idx), ct in roots:
        _accumulate(pending, owned, node, idx, ct)
    # Iterative topological order: every node reachable from the roots,
    # visited newest first (a node is always newer than its inputs).
    seen = set()  # nodes hash by identity
    order = []
    stack = [node for (node, _), _ in roots]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        order.append(node)
        for p in node.parents:
            if p is not None and p[0] not in seen:
                stack.append(p[0])
    order.sort(key=_seq_of, reverse=True)  # C key: no Python call per node

    leaves = {}
    for node in order:
        cts = pending.pop(node, None)
        if cts is None:  # symbolic zero: nothing flows through this node
            if free:
                _release(node)
            continue
        if owned:
            for c in cts:  # handed to the rules now: no longer ours to overwrite
                owned.pop(id(c), None)
        prim = node.prim
        if prim is None:
            leaves[node] = cts[0]
            continue
        if prim.multiple_results:
            g = tuple(c if c is not None else _zeros(s) for c, s in zip(cts, node.out_specs))
        else:
            g = cts[0]
        args = node.args
        if prim.custom is not None:
            contributions = prim.custom.backward(node, g)
        else:
            contributions = None
            vjps = prim.vjps
            ans = node.ans
            params = node.params
        i = -1
        for parent in node.parents:
            i += 1
            if parent is None:
                continue
            if contributions is not None:
                ct = contributions[i]
            else:
                rule = vjps[i] if i < len(vjps) else None
                if rule is None:
                    rule = prim.vjp_rule(i)  # variadic, or raises naming op and argument
                ct = rule(g, ans, *args, **params) if params else rule(g, ans, *args)
            if ct is None:
                continue
            a = args[i]
            if ct.shape != a.shape or ct.dtype != a.dtype:
                ct = unbroadcast(ct, _arg_spec(node, i), prim.name, i)
            pnode = parent[0]
            slot = pending.get(pnode)
            if slot is None and pnode.nout == 1:
                pending[pnode] = [ct]
            else:
                _accumulate(pending, owned, pnode, parent[1], ct)
        if free:
            _release(node)
            args = ans = None  # no local may keep a released residual alive
    return leaves


def _release(node):
    """Drop a consumed node's residuals (``backward(free=True)``)."""
    if _observer is not None:
        _observer.freed(node)
    node.args = None
    node.ans = None
    node.parents = ()


def _accumulate(pending, owned, node, idx, ct):
    """Add cotangent ``ct`` into output ``idx`` of ``node``'s pending slot.

    # NOTE [in-place accumulation]: the first contribution is stored as is (it
    # may be a user's array, a rule's view, or shared with another slot).  The
    # first sum allocates a fresh buffer that only this slot can see; it is
    # recorded in ``owned`` (id -> array, which also pins the id) and later
    # contributions are added into it in place.  Ownership ends when the slot
    # is handed to the node's rules.  Traced cotangents (higher order) are
    # always summed functionally.
    """
    slot = pending.get(node)
    if slot is None:
        slot = pending[node] = [None] * node.nout
    prev = slot[idx]
    if prev is None:
        slot[idx] = ct
    elif owned.get(id(prev)) is prev and not isinstance(ct, Tracer):
        prev += ct
        slot[idx] = prev  # (a 0-d NumPy scalar is immutable: += rebinds it)
    else:
        total = ops.add(prev, ct)
        slot[idx] = total
        if not isinstance(total, Tracer):
            owned[id(total)] = total


def _zeros(spec):
    return ops.zeros(spec.shape, dtype=spec.dtype, device=spec.device)
