"""Profiling pass and state hashes for ``checkpoint_sequential``.

:func:`profile_chain` runs every step of a chain once, each on a tape of its
own that is dropped at once, and measures the :class:`StepCost` the
schedules plan with: each state's bytes, what each step's tape keeps of its
input, of its output and besides, and the time of each step.  At most one
step's tape is alive at a time.

# NOTE [profile replay]: the profiling pass is the first run of every step:
# values read through ``gpuad.checkpointing.replayed`` are logged there and
# replayed by the schedule that follows, and ``on_forward_only`` updates
# happen there only.  The logs belong to the call; cached profiles carry
# none.

:func:`state_hash` fingerprints a state on its device (``debug=True``):
a plain and a position-weighted sum per array, compared bitwise.
"""

from __future__ import annotations

import time
import weakref

from . import _schedules as S
from ._core import full_unbox, new_trace
from ._dtypes import is_floating
from ._reverse import VJPTrace, VJPTracer, get_tape_observer, set_tape_observer

__all__ = ["profile_chain", "state_hash", "hashes_equal", "cached_profile", "remember_profile"]


def _blocks(values):
    """``{block key: nbytes}`` of the arrays in ``values`` (a block counts once)."""
    from .memory import nbytes_of

    out = {}
    for v in values:
        if hasattr(v, "shape"):
            key, nb, _ = nbytes_of(v)
            out[key] = nb
    return out


def within(blocks, of):
    """Whether every block of ``blocks`` is one of ``of`` (``{key: nbytes}`` maps; NOTE [aliased states])."""
    return bool(blocks) and blocks.keys() <= of.keys()


def profile_chain(run_step, p_slices, x_leaves, leaves, live, frames):
    """Measure a chain's :class:`StepCost` (NOTE [profile replay]).

    Parameters
    ----------
    run_step : callable
        ``run_step(k, state_leaves, param_leaves) -> state_leaves``.
    p_slices : list of (int, int)
        Per step, its parameters' slice of ``leaves``.
    x_leaves, leaves : list
        The input state's leaves; every leaf (input, then parameters).
    live : list of bool
        Per leaf of ``leaves``: is it differentiated?
    frames : callable
        ``frames(k)`` -> the context manager logging step ``k``'s replayed values.

    Returns
    -------
    StepCost
    """
    from .memory import Accountant

    leaves = [full_unbox(v) for v in leaves]
    l = len(p_slices)
    cost = S.StepCost([0] * (l + 1), [0] * l, [0] * l, [0] * l, [0.0] * l, same_block=[False] * (l + 1))
    cost.base_bytes = sum(_blocks(leaves).values())
    state = [full_unbox(v) for v in x_leaves]
    cost.state_bytes[0] = sum(_blocks(state).values())
    prev = get_tape_observer()
    try:
        for k in range(l):
            a, b = p_slices[k]
            acct = Accountant()
            set_tape_observer(acct)
            held = leaves[a:b] + (state if k == 0 else [])
            acct.hold(("base",), [v for v in held if hasattr(v, "shape")])
            live0 = acct.live
            ins = _blocks(state)
            before = {key: acct._blocks[key][1] if key in acct._blocks else 0 for key in ins}
            trace = VJPTrace()
            t0 = time.perf_counter()
            with new_trace(trace), frames(k):
                st = [trace.new_input(v) if _floating(v) else v for v in state]
                pb = [trace.new_input(v) if (live[a + m] and _floating(v)) else v
                      for m, v in enumerate(leaves[a:b])]
                out = run_step(k, st, pb)
            cost.seconds[k] = time.perf_counter() - t0
            outs = [o._primal if isinstance(o, VJPTracer) and o._trace is trace else o for o in out]
            kin = new = 0
            for key, nb in ins.items():
                e = acct._blocks.get(key)
                if e is not None and e[1] > before[key]:
                    kin += nb
                    if before[key] == 0:
                        new += nb
            cost.input_kept[k] = kin
            cost.output_kept[k] = sum(nb for key, nb in _blocks(outs).items() if key in acct._blocks)
            cost.tape_bytes[k] = acct.live - live0 - new
            out_blocks = _blocks(outs)
            cost.state_bytes[k + 1] = sum(out_blocks.values())
            cost.same_block[k + 1] = within(out_blocks, ins)
            del trace, st, pb, out
            state = outs
    finally:
        set_tape_observer(prev)
    return cost


def _floating(v):
    return hasattr(v, "dtype") and hasattr(v, "shape") and is_floating(v.dtype)


# ---------------------------------------------------------------- profile cache
#
# ``checkpoint_sequential`` is usually called once per training step with the
# same step functions and shapes; the profile (and the plans made from it)
# are reused.  Keys hold weak references to the functions so that the cache
# never keeps a model alive.

_CACHE = []
_CACHE_SIZE = 8


def _signature(fns, leaves):
    shapes = tuple((tuple(v.shape), str(v.dtype)) if hasattr(v, "shape") else type(v).__name__ for v in leaves)
    return tuple(id(f) for f in fns), shapes


def cached_profile(fns, leaves):
    """A profile measured earlier for the same step functions and leaf shapes, or ``None``."""
    sig = _signature(fns, leaves)
    for refs, key, cost in _CACHE:
        if key == sig and all(r() is f for r, f in zip(refs, fns)):
            return cost
    return None


def remember_profile(fns, leaves, cost):
    """Cache ``cost`` for :func:`cached_profile` (a few entries, most recent first)."""
    try:
        refs = [weakref.ref(f) for f in fns]
    except TypeError:   # a step that cannot be weakly referenced: do not cache
        return
    _CACHE.insert(0, (refs, _signature(fns, leaves), cost))
    del _CACHE[_CACHE_SIZE:]


# ---------------------------------------------------------------- state hashes


def state_hash(values):
    """Device-side fingerprints of the arrays in ``values`` (debug mode).

    Per array, ``[sum(x), sum(x * w)]`` with weights ``w_i = 1 + (i mod
    1021) / 1021`` computed in the array's namespace on its device; equal
    arrays give bitwise-equal fingerprints, since the same reductions run on
    the same data.
    """
    from ._backend import namespace_of

    out = []
    for v in values:
        if not hasattr(v, "shape"):
            out.append(v)
            continue
        x = full_unbox(v)
        ns = namespace_of((x,), "checkpoint_sequential(debug=True)")
        flat = ns.reshape(x, (-1,))
        if not is_floating(flat.dtype):
            flat = ns.astype(flat, ns.float64 if hasattr(ns, "float64") else ns.float32)
        n = flat.shape[0]
        i = ns.arange(n, dtype=flat.dtype, device=flat.device)
        w = 1.0 + ns.remainder(i, 1021.0) / 1021.0
        out.append(ns.stack([ns.sum(flat), ns.sum(flat * w)]))
    return out


def hashes_equal(a, b):
    """Bitwise comparison of two :func:`state_hash` results (NaN equals NaN)."""
    from ._backend import namespace_of

    if len(a) != len(b):
        return False
    for u, v in zip(a, b):
        if not hasattr(u, "shape"):
            if u != v:
                return False
            continue
        ns = namespace_of((u,), "checkpoint_sequential(debug=True)")
        same = (u == v) | (ns.isnan(u) & ns.isnan(v))
        if not bool(ns.all(same)):   # the one host read: a boolean
            return False
    return True
