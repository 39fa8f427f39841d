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
from heapq import heappop, heappush, heapreplace

from . import ops
from ._backend import namespace_of
from ._core import Trace, Tracer, bind
from ._dtypes import dtype_name
from ._registry import EXPLAINED, Spec, _ns_memo, dispatch_namespace, explain_failure

__all__ = ["VJPTrace", "VJPTracer", "Node", "backward", "set_tape_observer", "get_tape_observer"]

_seq = itertools.count()

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
        Per positional argument, the edge it came from (NOTE [edges]), or
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
    """A value recorded on a reverse tape: ``_primal`` plus where it came from.

    # NOTE [edges]: an edge names one output of a node: the node itself for
    # its output 0 (the only one, for most nodes), ``(node, index)`` for a
    # later output.  A tracer keeps its edge ready for the ``parents`` of the
    # nodes that consume it, so recording an op allocates no pair per input.
    """

    __slots__ = ("_node", "_edge")

    def __init__(self, trace, primal, node, index):
        self._trace = trace
        self._primal = primal
        self._node = node
        self._edge = node if index == 0 else (node, index)

    @property
    def _index(self):
        """Which output of ``_node`` this is."""
        return 0 if self._edge is self._node else self._edge[1]


class VJPTrace(Trace):
    """Reverse-mode trace: records nodes while the user function runs."""

    __slots__ = ()

    def new_input(self, x):
        return VJPTracer(self, x, Node(None, (), (), None, None), 0)

    def process(self, prim, args, params):
        # NOTE [arity fast paths]: one and two arguments -- nearly every op --
        # take the steps of the general loop below, unrolled: no lists, and
        # plain calls (NOTE [star calls] in _registry).
        n = len(args)
        if n == 1 and prim.custom is None:
            p = args[0]
            if type(p) is VJPTracer and p._trace is self:
                parents = (p._edge,)
                p = p._primal
            else:
                parents = (None,)
            primals = (p,)
            kept = primals if prim.keep_prefix or not hasattr(p, "shape") else (Spec(p),)
            if isinstance(p, Tracer):  # a lower level's tracer: that level runs the op
                ans = bind(prim, primals, params)
            else:  # prim.impl(primals, params), inlined: this is the hottest line of the tape
                xp = _ns_memo.get(type(p)) or dispatch_namespace(primals, prim.name)  # NOTE [dispatch memo]
                impl = prim.impls.get(xp, prim.impl_default)
                try:  # NOTE [explained failures] in _registry
                    ans = impl(xp, p, **params) if params else impl(xp, p)
                except EXPLAINED as e:
                    explain_failure(prim, primals, params, e)
                    raise
        elif n == 2 and prim.custom is None:
            p, q = args
            if type(p) is VJPTracer and p._trace is self:
                e = p._edge
                p = p._primal
            else:
                e = None
            if type(q) is VJPTracer and q._trace is self:
                parents = (e, q._edge)
                q = q._primal
            else:
                parents = (e, None)
            primals = (p, q)
            if prim.keep_prefix >= 2:
                kept = primals
            else:  # _kept(primals, prim.keep_args), unrolled
                keep = prim.keep_args
                kept = (p if 0 in keep or not hasattr(p, "shape") else Spec(p),
                        q if 1 in keep or not hasattr(q, "shape") else Spec(q))
            if isinstance(p, Tracer) or isinstance(q, Tracer):
                ans = bind(prim, primals, params)
            else:
                xp = _ns_memo.get((type(p), type(q))) or dispatch_namespace(primals, prim.name)
                impl = prim.impls.get(xp, prim.impl_default)
                try:
                    ans = impl(xp, p, q, **params) if params else impl(xp, p, q)
                except EXPLAINED as e:
                    explain_failure(prim, primals, params, e)
                    raise
        else:
            parents = []
            primals = []
            nested = False  # does any primal carry a lower-level tracer?
            for a in args:
                if type(a) is VJPTracer and a._trace is self:
                    parents.append(a._edge)
                    a = a._primal
                else:
                    parents.append(None)
                primals.append(a)
                if isinstance(a, Tracer):
                    nested = True
            parents = tuple(parents)
            primals = tuple(primals)
            if prim.custom is not None:
                return prim.custom.process_vjp(self, prim, primals, parents, params)
            kept = primals if n <= prim.keep_prefix else _kept(primals, prim.keep_args)
            if nested:
                ans = bind(prim, primals, params)
            else:
                xp = namespace_of(primals, prim.name)
                try:
                    ans = prim.impls.get(xp, prim.impl_default)(xp, *primals, **params)
                except EXPLAINED as e:
                    explain_failure(prim, primals, params, e)
                    raise
        if prim.multiple_results:
            node = Node(prim, parents, kept, ans if prim.keep_ans else None, params,
                        tuple(Spec(a) for a in ans))
            if _observer is not None:
                _observer.saved(node)
            return tuple(VJPTracer(self, a, node, i) for i, a in enumerate(ans))
        return _record(self, prim, parents, kept, ans, params)


_new = object.__new__
_NO_PARAMS: dict = {}  # the ``params`` of every node recorded without any (never mutated)


def _record(trace, prim, parents, kept, ans, params):
    """``VJPTracer(trace, ans, Node(prim, parents, kept, ans?, params), 0)``, and tell the observer.

    # NOTE [record fast path]: the two constructors, unrolled.  Calling a class
    # with a Python ``__init__`` goes through ``type.__call__`` and a second
    # interpreter frame: ``Node(...)`` plus ``VJPTracer(...)`` cost about a
    # third more than this whole function.  It builds the same single-output
    # node and tracer (tests/test_reverse_engine.py checks every slot); keep it
    # in step with ``Node.__init__`` and ``VJPTracer.__init__``.
    """
    node = _new(Node)
    node.prim = prim
    node.parents = parents
    node.args = kept
    node.ans = ans if prim.keep_ans else None
    node.params = params or _NO_PARAMS  # one shared dict: fewer objects for the collector to track
    node.out_specs = None
    node.nout = 1
    node.seq = next(_seq)
    if _observer is not None:
        _observer.saved(node)
    out = _new(VJPTracer)
    out._trace = trace
    out._primal = ans
    out._node = node
    out._edge = node
    return out


def _kept(primals, keep):
    """What a node keeps of ``primals``: the arguments in ``keep``, a :class:`Spec` of each other array."""
    kept = list(primals)
    for i, p in enumerate(primals):
        if i not in keep and hasattr(p, "shape"):
            kept[i] = Spec(p)
    return tuple(kept)


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
        ct = cast_tangent(ct, spec.dtype)
    return ct


def cast_tangent(t, dtype):
    """``t`` cast to ``dtype``; a complex ``t`` going to a real dtype keeps its real part.

    # NOTE [complex to real]: a real value used in complex arithmetic gets a
    # complex cotangent (or tangent); its real part is the derivative (JAX's
    # convention).  ``real`` takes it explicitly: the standard forbids
    # ``astype`` from complex to real (array-api-strict raises, NumPy warns).
    """
    if dtype_name(t.dtype).startswith("complex") and not dtype_name(dtype).startswith("complex"):
        t = ops.real(t)
        if t.dtype == dtype:
            return t
    return ops.astype(t, dtype)


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

    # NOTE [newest first]: a node is always newer (higher ``seq``) than its
    # inputs, so visiting nodes in decreasing ``seq`` runs each one after every
    # consumer has contributed to it.  The nodes still to visit sit in a heap
    # keyed by ``-seq``, except that one of them may wait in ``newest`` instead
    # (a chain then never touches the heap); the next node is the newer of
    # ``newest`` and the heap's top.  A node enters when a consumer first
    # reaches it, with a cotangent or with a symbolic zero (``None``, from a
    # rule that returned ``None``).  A zero node runs no rule but still passes
    # the zero on, so every node reachable from the roots is visited -- and,
    # with ``free``, released -- exactly once, and no separate graph walk is
    # needed.
    #
    # NOTE [pending cotangents]: ``pending`` maps each node in the heap to its
    # cotangent so far: ``None`` (zero), the array itself for a single-output
    # node, or a list with one entry per output.  It is local to this call, so
    # passes may nest or run concurrently over one graph (``vjp_fn`` can be
    # called again, from any thread).
    """
    pending = {}
    owned = {}  # NOTE [in-place accumulation]
    heap = []
    for (node, idx), ct in roots:
        if node not in pending:
            pending[node] = None
            heappush(heap, (-node.seq, node))
        _accumulate(pending, owned, node, idx, ct)
    leaves = {}
    newest = None
    while True:
        if newest is None:
            if not heap:
                break
            node = heappop(heap)[1]
        elif heap and -heap[0][0] > newest.seq:
            node = heapreplace(heap, (-newest.seq, newest))[1]
        else:
            node = newest
        newest = None
        g = pending.pop(node)
        if g is None:  # symbolic zero: nothing flows through this node
            _pass_zero(node, pending, heap)
            if free:
                _release(node)
            continue
        prim = node.prim
        if node.nout == 1:
            if owned:  # handed to the rules now: no longer ours to overwrite
                owned.pop(id(g), None)
            if prim is None:
                leaves[node] = g
                continue
            if prim.multiple_results:
                g = (g,)
        else:
            if owned:
                for c in g:
                    owned.pop(id(c), None)
            g = tuple(c if c is not None else _zeros(s) for c, s in zip(g, node.out_specs))
        args = node.args
        if prim.custom is not None:
            contributions = prim.custom.backward(node, g)
        else:
            contributions = None
            vjps = prim.vjps
            ans = node.ans
            params = node.params
        n = len(args)
        i = -1
        for parent in node.parents:
            i += 1
            if parent is None:
                continue
            if contributions is not None:
                ct = contributions[i]
            else:
                try:
                    rule = vjps[i]
                except IndexError:
                    rule = None
                if rule is None:
                    rule = prim.vjp_rule(i)  # variadic, or raises naming op and argument
                if params:
                    ct = rule(g, ans, *args, **params)
                elif n == 1:  # NOTE [star calls] in _registry
                    ct = rule(g, ans, args[0])
                elif n == 2:
                    ct = rule(g, ans, args[0], args[1])
                else:
                    ct = rule(g, ans, *args)
            if ct is not None:
                a = args[i]  # (equal dtypes are usually one object: ``is not`` is the quick test)
                if ct.shape != a.shape or ct.dtype is not a.dtype:
                    ct = unbroadcast(ct, _arg_spec(node, i), prim.name, i)
            if type(parent) is tuple:  # NOTE [edges]
                pnode, idx = parent
            else:
                pnode, idx = parent, 0
            if pnode not in pending:
                if newest is None:
                    newest = pnode
                elif pnode.seq > newest.seq:
                    heappush(heap, (-newest.seq, newest))
                    newest = pnode
                else:
                    heappush(heap, (-pnode.seq, pnode))
                if ct is None or pnode.nout == 1:
                    pending[pnode] = ct
                    continue
                pending[pnode] = None
            if ct is not None:
                _accumulate(pending, owned, pnode, idx, ct)
        if free:  # _release(node), inlined
            if _observer is not None:
                _observer.freed(node)
            node.args = node.ans = None
            node.parents = ()
            args = ans = None  # no local may keep a released residual alive
    return leaves


def _pass_zero(node, pending, heap):
    """Put ``node``'s inputs not yet reached in the heap, with a zero cotangent."""
    for pnode in node.parents:
        if type(pnode) is tuple:  # NOTE [edges]
            pnode = pnode[0]
        if pnode is not None and pnode not in pending:
            pending[pnode] = None
            heappush(heap, (-pnode.seq, pnode))


def _release(node):
    """Drop a consumed node's residuals (``backward(free=True)``)."""
    if _observer is not None:
        _observer.freed(node)
    node.args = None
    node.ans = None
    node.parents = ()


def _accumulate(pending, owned, node, idx, ct):
    """Add cotangent ``ct`` into output ``idx`` of ``node``'s pending entry (which exists).

    # NOTE [in-place accumulation]: the first contribution is stored as is (it
    # may be a user's array, a rule's view, or shared with another entry).
    # The first sum allocates a fresh buffer that only this entry can see; it
    # is recorded in ``owned`` (id -> array, which also pins the id) and later
    # contributions are added into it in place.  Ownership ends when the entry
    # is handed to the node's rules.  Traced cotangents (higher order) are
    # always summed functionally.
    """
    prev = pending[node]
    if node.nout == 1:
        pending[node] = ct if prev is None else _sum(owned, prev, ct)
        return
    if prev is None:
        prev = pending[node] = [None] * node.nout
    old = prev[idx]
    prev[idx] = ct if old is None else _sum(owned, old, ct)


def _sum(owned, prev, ct):
    """``prev + ct``, in place when ``prev`` is a buffer the engine owns."""
    if owned.get(id(prev)) is prev and not isinstance(ct, Tracer):
        prev += ct
        return prev  # (a 0-d NumPy scalar is immutable: += rebinds it)
    total = ops.add(prev, ct)
    if not isinstance(total, Tracer):
        owned[id(total)] = total
    return total


def _zeros(spec):
    return ops.zeros(spec.shape, dtype=spec.dtype, device=spec.device)
