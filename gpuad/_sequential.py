"""``checkpoint_sequential``: a chain of steps run under a checkpoint schedule.

The whole chain is one primitive (NOTE [checkpoint is a primitive] in
``gpuad.checkpointing``).  Its forward executes the schedule's forward sweep
(``gpuad._schedules``) and its backward the rest, recording each step on a
tape of its own.

# NOTE [bitwise equal schedules]: every strategy gives first-order
# gradients bitwise identical to each other and to the plain loop, because
# each step is recorded with its own input leaves (state and parameters): a
# step's cotangents are summed inside that step only, in the engine's order,
# whichever segment it is recorded in, and the state's cotangent crosses a
# step boundary unchanged; a value used by several steps is summed in the
# plain run's order (NOTE [tied parameters]).  Advanced and recorded runs
# apply the same implementations to the same inputs.  Not bitwise, but equal
# to rounding (a reassociated sum): a value used several times inside one
# step *and* by other steps, one also used outside the chain, and second
# order (``grad(grad(...))``), where the outer tape sees the recomputation.
"""

from __future__ import annotations

import threading

from . import _profile
from . import _schedules as S
from ._plan import STRATEGIES, ScheduleReport, plan_checkpoints  # noqa: F401  (re-exported)
from ._core import Tracer, bind, new_trace
from ._dtypes import is_floating
from ._forward import JVPTracer
from ._registry import Primitive, Spec
from ._reverse import Node, VJPTrace, VJPTracer, backward, recorded
from ._tree import tree_flatten, tree_unflatten
from .checkpointing import _Frame, _leaked, _pushed

__all__ = ["checkpoint_sequential", "plan_checkpoints", "ScheduleReport", "last_report"]

_last = None


def last_report():
    """The :class:`ScheduleReport` of the most recent ``checkpoint_sequential`` call."""
    return _last


# ---------------------------------------------------------------- the primitive


class _Chain:
    """Static data of one call: the steps, leaf layout and the report."""

    __slots__ = ("fns", "has_params", "x_td", "n_x", "p_tds", "p_slices", "out_td", "report", "state_tds",
                 "logs", "debug")

    def __repr__(self):
        return f"_Chain({len(self.fns)} steps)"


def _step(chain, k, state_leaves, p_leaves):
    x = tree_unflatten(chain.state_tds[k], list(state_leaves))
    fn = chain.fns[k]
    try:
        if chain.has_params[k]:
            y = fn(tree_unflatten(chain.p_tds[k], list(p_leaves)), x)
        else:
            y = fn(x)
    except Exception as e:
        if hasattr(e, "add_note"):  # Python 3.11+: the traceback says which step failed
            e.add_note(f"(in checkpoint_sequential, step {k}: {getattr(fn, '__name__', type(fn).__name__)})")
        raise
    leaves, td = tree_flatten(y)
    for leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise TypeError(f"checkpoint_sequential: step {k} returned a state with a {type(leaf).__name__} "
                            f"leaf ({leaf!r:.40}); states are pytrees of arrays")
    if len(chain.state_tds) == k + 1:
        chain.state_tds.append(td)
    elif chain.state_tds[k + 1] != td:
        raise ValueError(f"checkpoint_sequential: step {k} returned structure {td!r}, "
                         f"earlier {chain.state_tds[k + 1]!r}")
    return leaves


def _params(chain, leaves, k):
    a, b = chain.p_slices[k]
    return leaves[a:b]


def _plain_chain(chain, leaves):
    state = list(leaves[:chain.n_x])
    for k in range(len(chain.fns)):
        state = _step(chain, k, state, _params(chain, leaves, k))
    return state


class _Sequential:
    """Engine hooks of the chain primitive; the node keeps inputs, params and ``_Run``."""

    is_checkpoint = True

    def __init__(self):
        self.prim = Primitive("checkpoint_sequential", self._impl, multiple_results=True)
        self.prim.custom = self

    def _impl(self, xp, *leaves, chain):
        outs = tuple(_plain_chain(chain, leaves))
        if any(isinstance(o, Tracer) for o in outs):  # a step read a traced value from its closure
            _leaked(outs, None, "checkpoint_sequential", _CLOSURE_HINT)
        return outs

    def residual_arrays(self, node):
        arrays = [a for a in node.args if hasattr(a, "shape") and not isinstance(a, Spec)]
        run = node.ans
        if run is not None:
            for st in run.snaps.values():
                arrays.extend(a for a in st if hasattr(a, "shape"))
        return arrays

    def process_vjp(self, trace, prim, primals, parents, params):
        chain = params["chain"]
        run = _Run(chain, list(primals), [p is not None for p in parents])
        outs = run.forward()
        _leaked(outs, trace, "checkpoint_sequential", _CLOSURE_HINT)
        node = recorded(Node(prim, parents, tuple(primals), run, params, tuple(Spec(o) for o in outs)))
        return tuple(VJPTracer(trace, o, node, i) for i, o in enumerate(outs))

    def backward(self, node, g):
        # NOTE [one run per pullback]: the forward's ``_Run`` serves the first
        # pullback; a later one (``vjp_fn`` called again, ``jacrev``'s rows,
        # passes from other threads) reruns the schedule's forward sweep from
        # the node's inputs on a fresh ``_Run`` -- recomputation, with the same
        # replayed randomness -- since a run's snapshots and tapes are consumed.
        run = node.ans
        if not run.claim():
            run = _Run(run.chain, list(node.args), run.live)
            run.claim()
            run.forward()
        return _merge_tied(node.parents, run.backward(list(g)))

    def process_jvp(self, trace, prim, primals, tangents, params):
        boxed = [p if t is None else JVPTracer(trace, p, t) for p, t in zip(primals, tangents)]
        return tuple(_plain_chain(params["chain"], boxed))


def _merge_tied(parents, cts):
    """Sum the cotangents of inputs that are one value (tied parameters) as the plain run would.

    # NOTE [tied parameters]: a value given to several steps (the same
    # weights in every step of an RNN-like chain, or ``x`` also a step's
    # parameter) is one leaf per use here.  The plain run accumulates its
    # uses newest first: ``((g_l + g_l-1) + ...) + g_1``; so are these,
    # later steps (higher leaf indices) first, into the first use's slot,
    # which makes a chain whose steps use a tied value once each bitwise
    # equal to the plain loop.
    """
    uses = {}
    for i, p in enumerate(parents):
        if p is not None and cts[i] is not None:
            uses.setdefault(p if type(p) is tuple else (p, 0), []).append(i)
    for idx in uses.values():
        if len(idx) > 1:
            total = cts[idx[-1]]
            for i in reversed(idx[:-1]):
                total = total + cts[i]
            for i in idx:
                cts[i] = None
            cts[idx[0]] = total
    return cts


_SEQ = _Sequential()
_CLOSURE_HINT = "e.g. a step (lambda w, h: ..., w) with w as its params"


def _float_leaf(v):
    return hasattr(v, "dtype") and hasattr(v, "shape") and is_floating(v.dtype)


class _Run:
    """Executes one schedule; lives in the chain's tape node between forward and backward."""

    def __init__(self, chain, leaves, live):
        from . import memory

        self.chain = chain
        self.leaves = leaves
        self.live = live
        self.l = len(chain.fns)
        self.rep = chain.report
        self.snaps = {}
        self.tapes = []
        self.pos = 0
        self.state = list(leaves[:chain.n_x])
        self.advances = 0
        self.acct = memory.Accountant()
        self.pc = 0
        self.param_cts = [None] * len(leaves)
        self.measure = self.rep.profile is None
        self.debug = chain.debug
        self.hashes = {}
        self._claimed = threading.Lock()
        if self.measure:
            self.cost = S.StepCost([0] * (self.l + 1), [0] * self.l, [0] * self.l, [0] * self.l,
                                   same_block=[False] * (self.l + 1))

    def claim(self):
        """Take this run for one backward sweep; false if another sweep took it."""
        return self._claimed.acquire(blocking=False)

    # --- accounting -------------------------------------------------------------
    def _install(self):
        from ._reverse import get_tape_observer, set_tape_observer

        self.acct.prev = get_tape_observer()
        set_tape_observer(self.acct)

    def _uninstall(self):
        from ._reverse import set_tape_observer

        set_tape_observer(self.acct.prev)

    # --- actions ----------------------------------------------------------------
    def _exec(self, act):
        kind = act[0]
        if kind == "advance":
            i, j = act[1], act[2]
            assert self.pos == i, (act, self.pos)
            st = self.state
            for k in range(i, j):
                prev = st
                with _pushed(self._frame(k)):
                    st = _step(self.chain, k, st, _params(self.chain, self.leaves, k))
                if self.debug:
                    self._check(k + 1, st)
                if self.measure:
                    self._measure_state(k + 1, st)
                    self.cost.same_block[k + 1] = _profile.within(_profile._blocks(st), _profile._blocks(prev))
            self.state, self.pos = st, j
            self.advances += j - i
        elif kind == "snapshot":
            self.snaps[act[1]] = self.state
            if act[1] != 0:
                self.acct.hold(("snap", act[1]), [a for a in self.state if hasattr(a, "shape")])
            self._measure_state(act[1], self.state)
        elif kind == "restore":
            self.state, self.pos = self.snaps[act[1]], act[1]
        elif kind == "drop":
            del self.snaps[act[1]]
            self.acct.release(("snap", act[1]))
        elif kind == "tape":
            self._tape(act[1], act[2])
        elif kind == "reverse":
            self._reverse(act[1], act[2])

    def _check(self, i, st):
        """debug=True: a recomputed ``x_i`` must hash like its first computation."""
        from ._profile import hashes_equal, state_hash

        h = state_hash(st)
        first = self.hashes.setdefault(i, h)
        if first is not h and not hashes_equal(first, h):
            raise RuntimeError(f"checkpoint_sequential(debug=True): recomputing step {i - 1} gave a state x_{i} "
                               "that differs from its first computation (a step that is not deterministic, "
                               "or randomness not routed through gpuad.checkpointing.replayed)")

    def _frame(self, k):
        logs = self.logs
        if k in logs:
            return _Frame(logs[k].values, replay=True)
        f = logs[k] = _Frame()
        return f

    def _measure_state(self, i, st):
        if self.measure:
            self.cost.state_bytes[i] = sum(self.acct_bytes(a) for a in st if hasattr(a, "shape"))

    @staticmethod
    def acct_bytes(a):
        from .memory import nbytes_of

        return nbytes_of(a)[1]

    def _tape(self, i, j):
        assert self.pos == i, (i, self.pos)
        trace = VJPTrace()
        chain = self.chain
        # NOTE [segment keeps leaf nodes only]: a recorded segment remembers the
        # leaf *nodes* of its input state and of each step's parameters, never
        # the tracers: a tracer holds its primal, and keeping the boundary
        # states x_i+1 .. x_j-1 alive would hold bytes the plain run frees
        # (and ``gpuad.memory`` would not see them).
        st = [trace.new_input(v) if _float_leaf(v) else v for v in self.state]
        st_nodes = [v._node if isinstance(v, VJPTracer) else None for v in st]
        p_nodes = []
        with new_trace(trace):
            for k in range(i, j):
                a, b = chain.p_slices[k]
                pb = [trace.new_input(v) if (self.live[a + m] and _float_leaf(v)) else v
                      for m, v in enumerate(self.leaves[a:b])]
                p_nodes.append([v._node if isinstance(v, VJPTracer) else None for v in pb])
                before = self._census(st) if self.measure else None
                with _pushed(self._frame(k)):
                    st = _step(chain, k, st, pb)
                pb = None
                if self.measure:
                    self._measure_step(k, before, st)
                if self.debug:
                    self._check(k + 1, st)
        out = [o._primal if isinstance(o, VJPTracer) and o._trace is trace else o for o in st]
        refs = [(o._node, o._index) if isinstance(o, VJPTracer) and o._trace is trace else None for o in st]
        self.tapes.append((i, j, st_nodes, p_nodes, refs))
        self.state, self.pos = out, j
        if self.measure and j == self.l:
            self._measure_state(j, out)

    def _census(self, vals):
        """``(live bytes, {block key: (holders, nbytes)})`` of the given values' blocks."""
        from .memory import nbytes_of

        blocks = self.acct._blocks
        out = {}
        for v in vals:
            if hasattr(v, "shape"):
                key, nb, _ = nbytes_of(v)
                e = blocks.get(key)
                out[key] = (e[1] if e is not None else 0, nb)
        return self.acct.live, out

    def _measure_step(self, k, before, outs):
        live0, census = before
        blocks = self.acct._blocks
        kin = new = 0
        for key, (holders, nb) in census.items():
            e = blocks.get(key)
            if e is not None and e[1] > holders:  # this step's tape keeps its input
                kin += nb
                if holders == 0:
                    new += nb
        out_blocks = self._census(outs)[1]
        cost = self.cost
        cost.same_block[k + 1] = _profile.within(out_blocks, census)
        kout = 0 if cost.same_block[k + 1] else sum(nb for key, (h, nb) in out_blocks.items() if h > 0)
        cost.state_bytes[k + 1] = sum(nb for _, nb in out_blocks.values())
        cost.input_kept[k] = kin
        cost.output_kept[k] = kout
        cost.tape_bytes[k] = self.acct.live - live0 - new

    def _reverse(self, i, j):
        ti, tj, st_nodes, p_nodes, refs = self.tapes.pop()
        assert (ti, tj) == (i, j) and self.ct_pos == j, ((i, j), (ti, tj), self.ct_pos)
        roots = [(r, c) for r, c in zip(refs, self.ct) if r is not None and c is not None]
        grads = backward(roots, free=True) if roots else {}
        for k, nodes in zip(range(i, j), p_nodes):
            a, _ = self.chain.p_slices[k]
            for m, node in enumerate(nodes):
                if node is not None:
                    self.param_cts[a + m] = grads.get(node)
        self.ct = [None if node is None else grads.get(node) for node in st_nodes]
        self.ct_pos = i

    # --- the two sweeps -----------------------------------------------------------
    def forward(self):
        acts = self.rep.actions
        self.logs = self.chain.logs
        self._install()
        try:
            base = [a for a in self.leaves if hasattr(a, "shape")]
            self.acct.hold(("base",), base)
            if self.measure:
                self.cost.base_bytes = self.acct.live
            while self.pc < len(acts) and acts[self.pc][0] != "reverse":
                self._exec(acts[self.pc])
                self.pc += 1
        finally:
            self._uninstall()
        assert self.pos == self.l
        return self.state

    def backward(self, g):
        global _last
        acts = self.rep.actions
        self.ct, self.ct_pos = g, self.l
        self._install()
        try:
            while self.pc < len(acts):
                self._exec(acts[self.pc])
                self.pc += 1
            self.acct.release(("base",))
        finally:
            self._uninstall()
        rep = self.rep
        rep.actual_advances = self.advances
        rep.actual_peak_bytes = self.acct.peak
        if self.measure:
            rep.profile = self.cost
            rep.predicted_peak_bytes = S.simulate(acts, self.cost)
            rep.step_working_bytes = max(b + t for b, t in zip(self.cost.state_bytes, self.cost.tape_bytes))
        if self.debug:
            _verify(rep)
        n_x = self.chain.n_x
        out = [c if self.live[m] else None for m, c in enumerate(self.ct)] + self.param_cts[n_x:]
        self.snaps.clear()
        return [c if self.live[m] else None for m, c in enumerate(out)]


def _profile_of(chain, leaves):
    """The chain's cost model: cached, or measured by a profiling pass (NOTE [profile replay])."""
    fns = chain.fns
    cost = _profile.cached_profile(fns, leaves)
    if cost is not None:
        return cost

    def run_step(k, st, pb):
        return _step(chain, k, st, pb)

    def frames(k):
        f = chain.logs[k] = _Frame()
        return _pushed(f)

    cost = _profile.profile_chain(run_step, chain.p_slices, leaves[:chain.n_x], leaves,
                                  [True] * len(leaves), frames)
    _profile.remember_profile(fns, leaves, cost)
    return cost


def _verify(rep):
    """debug=True: the run must match its plan (NOTE [block model] in ``gpuad._schedules``)."""
    problems = []
    if rep.actual_advances != rep.predicted_advances:
        problems.append(f"advances: predicted {rep.predicted_advances}, ran {rep.actual_advances}")
    pred, act = rep.predicted_peak_bytes, rep.actual_peak_bytes
    if abs(act - pred) > 0.05 * pred:
        problems.append(f"peak bytes: predicted {pred}, measured {act} (more than 5% apart)")
    if rep.budget_bytes is not None and act > rep.budget_bytes + (rep.step_working_bytes or 0):
        problems.append(f"peak bytes: measured {act} exceed budget_bytes={rep.budget_bytes} "
                        f"plus one step's working set ({rep.step_working_bytes})")
    if problems:
        raise RuntimeError(f"checkpoint_sequential(debug=True), strategy {rep.strategy!r}: the run does not "
                           "match its plan: " + "; ".join(problems))


def checkpoint_sequential(fns, x, *, strategy="auto", segments=None, snapshots=None, budget_bytes=None,
                          profile=None, debug=False):
    """Run the chain ``fns`` on ``x`` under a checkpoint schedule.

    Parameters
    ----------
    fns : sequence
        ``l`` steps.  Each is ``f(x) -> x'`` or a pair ``(f, params)`` with
        ``f(params, x) -> x'``; ``params`` (a pytree of arrays) is
        differentiated like ``x``.  States are pytrees of arrays; a step's
        differentiable values must come from ``x`` or its ``params``.
    x : pytree of arrays
        The input state ``x_0``.
    strategy : {"auto", "none", "uniform", "revolve", "bisection", "optimal"}
        "none" keeps every step's tape; "uniform" keeps ``segments`` segment
        inputs (default ``round(sqrt(l))``) and re-records one segment at a
        time; "revolve" is binomial checkpointing with ``snapshots`` kept
        states including ``x`` (default ``ceil(log2 l)``), with the minimal
        number of advances; "bisection" halves recursively (for
        comparison); "optimal" spends the least time advancing within
        ``budget_bytes`` (``gpuad._optimal``).  "auto" (the default) is
        "none" when no budget is given or everything fits it, else
        "optimal".
    segments, snapshots : int, optional
    budget_bytes : int, optional
        Bound on the peak bytes counted by ``gpuad.memory`` (input,
        parameters, snapshots and tapes).  Needed by "optimal", used by
        "auto", refused by the other strategies; a budget no schedule meets
        raises a ``ValueError`` giving the smallest feasible one.
    profile : StepCost, optional
        A cost model (``report.profile`` of an earlier run).  Without it,
        "optimal" and "auto" with a budget first run a profiling pass
        (``gpuad._profile``; cached per step functions and shapes), and the
        other strategies measure it during the run.
    debug : bool
        Check the run against the plan: advances exactly, peak bytes within
        5% of the prediction and within the budget plus one step's working
        set, and every recomputed state bitwise equal (by an on-device hash)
        to its first computation.  Any mismatch raises ``RuntimeError``.

    Returns
    -------
    pytree
        ``x_l``, differentiable (its :class:`ScheduleReport`, completed by
        the backward pass, is :func:`last_report`); first-order gradients are
        bitwise equal across strategies and to the plain loop (NOTE [bitwise
        equal schedules] says when they are only equal to rounding).  The tape node keeps
        ``x``, the parameters and the snapshots (recorded as checkpoint
        snapshot bytes in ``gpuad.memory``).
    """
    global _last
    try:
        fns = list(fns)
    except TypeError:
        raise TypeError(f"checkpoint_sequential: fns must be a sequence of steps, got {type(fns).__name__}") from None
    if not fns:
        raise ValueError("checkpoint_sequential: fns is empty; give at least one step")
    chain = _Chain()
    chain.fns, chain.has_params, chain.p_tds, chain.p_slices = [], [], [], []
    x_leaves, chain.x_td = tree_flatten(x)
    chain.n_x = len(x_leaves)
    chain.state_tds = [chain.x_td]
    leaves = list(x_leaves)
    for k, f in enumerate(fns):
        if isinstance(f, tuple) and len(f) == 2 and callable(f[0]):
            f, p = f
            pl, ptd = tree_flatten(p)
            chain.has_params.append(True)
        elif callable(f):
            pl, ptd = [], None
            chain.has_params.append(False)
        else:
            raise TypeError(f"checkpoint_sequential: step {k} must be a callable or a pair (f, params), "
                            f"got {type(f).__name__}")
        chain.fns.append(f)
        chain.p_tds.append(ptd)
        chain.p_slices.append((len(leaves), len(leaves) + len(pl)))
        leaves.extend(pl)
    if not isinstance(debug, bool):
        raise TypeError(f"checkpoint_sequential: debug must be True or False, got {type(debug).__name__}: {debug!r}")
    chain.logs, chain.debug = {}, debug
    if profile is None and budget_bytes is not None and strategy in ("optimal", "auto"):
        profile = _profile_of(chain, leaves)
    rep = plan_checkpoints(len(fns), strategy=strategy, segments=segments, snapshots=snapshots,
                           budget_bytes=budget_bytes, profile=profile)
    rep.debug = chain.debug
    chain.report = rep
    _last = rep
    outs = bind(_SEQ.prim, tuple(leaves), {"chain": chain})
    return tree_unflatten(chain.state_tds[-1], list(outs))

