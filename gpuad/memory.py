"""Exact accounting of the bytes the reverse tape holds.

An :class:`Accountant` watches the tape through the engine's tape observer
(``gpuad._reverse.set_tape_observer``) and counts, at every moment, the bytes
of the residuals kept by live nodes -- the arguments and outputs their rules
declared they need (NOTE [what a node keeps] in ``gpuad._registry``) -- plus
the checkpoint snapshots that ``gpuad.checkpointing`` holds.

Usage::

    with gpuad.memory.track() as rep:
        g = gpuad.grad(f)(x)
    print(rep)            # peak bytes of the block, of its forward and backward

# NOTE [buffers counted once]: bytes are counted per memory block, not per
# array.  The backend's ``buffer_of(x)`` resolves a view to the block it
# aliases, so ``y``, ``y[:5]`` and ``y[5:]`` kept by three nodes count
# ``y.nbytes`` once.  A block is counted while at least one live node (or
# snapshot) holds an array in it.

# NOTE [when bytes stop counting]: a node stops counting when the backward
# pass frees it (``grad``; observer hook ``freed``), when the node itself is
# garbage collected (a ``vjp`` tape, pulled back or not, or the tape of
# ``jacrev``/``hessian``, which keep their nodes for every row: a weak
# reference to the node drops it), or when every block it held has been
# collected (a weak reference to the block owner drops the block).

# NOTE [phases]: a *forward* phase starts with the first node saved while no
# node is live; the *backward* phase starts with the first node freed, and
# ends when no node is live any more.  The report gives the peak of the last
# forward and of the last backward.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field

from ._core import full_unbox
from ._device_memory import OutOfMemoryError, parse_memory_limit
from ._registry import Spec
from ._reverse import get_tape_observer, set_tape_observer
from ._tree import tree_flatten

__all__ = [
    "Accountant", "MemoryReport", "track", "enable", "disable", "current", "live_bytes",
    "report", "residual_arrays", "nbytes_of", "OutOfMemoryError", "parse_memory_limit",
]


@dataclass
class MemoryReport:
    """Peak and live tape bytes of a tracked block (plain data, printable).

    Attributes
    ----------
    live_bytes : int
        Bytes held by live nodes and snapshots when the block ended.
    peak_bytes : int
        Largest number of bytes held at any moment of the block.
    forward_peak_bytes, backward_peak_bytes : int
        Peak of the last forward and of the last backward (NOTE [phases]).
    snapshot_peak_bytes : int
        Peak of the bytes held as checkpoint snapshots (segment inputs and
        values kept by a policy).  These are part of ``peak_bytes``.
    nodes_saved, nodes_freed : int
        Tape nodes recorded and freed during the block.
    pool : dict
        Memory-pool statistics of the backends seen (CuPy:
        ``pool_used_bytes``, ``pool_total_bytes``, ``pool_limit_bytes`` when
        ``GPUAD_GPU_MEMORY_LIMIT`` is set, ...); empty on NumPy.
    """

    live_bytes: int = 0
    peak_bytes: int = 0
    forward_peak_bytes: int = 0
    backward_peak_bytes: int = 0
    snapshot_peak_bytes: int = 0
    nodes_saved: int = 0
    nodes_freed: int = 0
    pool: dict = field(default_factory=dict)

    def __str__(self):
        mib = 2.0 ** 20
        parts = [
            f"peak {self.peak_bytes / mib:.3f} MiB (forward {self.forward_peak_bytes / mib:.3f}, "
            f"backward {self.backward_peak_bytes / mib:.3f}, snapshots {self.snapshot_peak_bytes / mib:.3f})",
            f"live {self.live_bytes / mib:.3f} MiB",
            f"nodes {self.nodes_saved} saved / {self.nodes_freed} freed",
        ]
        if self.pool:
            parts.append(", ".join(f"{k} {v / mib:.1f} MiB" for k, v in sorted(self.pool.items())))
        return "tape memory: " + "; ".join(parts)


_buffer_fns: dict = {}


def _backend_for(x):
    """The ``gpuad.backends`` module owning array ``x`` (cached per type)."""
    t = type(x)
    mod = _buffer_fns.get(t)
    if mod is None:
        from ._backend import BACKENDS, backend_module, namespace_of

        ns = namespace_of((x,), "gpuad.memory")
        for name in BACKENDS:
            m = backend_module(name)
            if m.owns(ns):
                mod = m
                break
        else:  # pragma: no cover - every namespace has a backend
            raise TypeError(f"gpuad.memory: no backend owns arrays of type {t.__name__}")
        _buffer_fns[t] = mod
    return mod


def nbytes_of(x):
    """``(key, nbytes, owner)`` of the buffer holding array ``x`` (tracers are unboxed)."""
    x = full_unbox(x)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"nbytes_of: x must be an array, got {type(x).__name__}")
    return _backend_for(x).buffer_of(x)


def _arrays_in(value, out):
    if value is None or isinstance(value, Spec):
        return
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        out.append(value)
        return
    if isinstance(value, (tuple, list, dict)):
        for leaf in tree_flatten(value)[0]:
            if leaf is not None and not isinstance(leaf, Spec) and hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
                out.append(leaf)


def residual_arrays(node):
    """The arrays a tape node keeps for its backward rule.

    Kept arguments (entries of ``node.args`` that are not :class:`Spec`) and
    the kept output(s) ``node.ans``; for user-defined primitives (custom
    rules, checkpoints) whatever arrays their residuals contain, or what
    their ``residual_arrays(node)`` method returns.
    """
    prim = node.prim
    if prim is None or node.args is None:
        return []
    custom = prim.custom
    if custom is not None and hasattr(custom, "residual_arrays"):
        return list(custom.residual_arrays(node))
    out = []
    for a in node.args:
        _arrays_in(a, out)
    _arrays_in(node.ans, out)
    return out


class Accountant:
    """Tape observer that counts residual and snapshot bytes.

    Chains to the observer that was installed before it (``prev``), so
    several accountants (nested :func:`track` blocks) and other observers
    can watch the same tape.
    """

    def __init__(self, prev=None):
        self.prev = prev
        self._blocks = {}   # key -> [nbytes, holders, weakref or None, snapshot holders]
        self._nodes = {}    # id(node) -> (seq, keys, weakref to the node)
        self._me = weakref.ref(self)
        self._holds = {}    # token -> keys (snapshots)
        self._backends = set()
        self.live = 0
        self.snapshot_live = 0
        self.peak = 0
        self.snapshot_peak = 0
        self.nodes_saved = 0
        self.nodes_freed = 0
        self.phase = "idle"
        self._fwd_peak = self._bwd_peak = 0
        self.last_forward_peak = self.last_backward_peak = 0

    # --- blocks ---------------------------------------------------------------
    def _acquire(self, x, snapshot=False):
        x = full_unbox(x)
        mod = _backend_for(x)
        key, nbytes, owner = mod.buffer_of(x)
        self._backends.add(mod)
        entry = self._blocks.get(key)
        if entry is None:
            try:
                ref = weakref.ref(owner, self._make_release(key))
            except TypeError:  # owner cannot be weakly referenced: rely on freed()
                ref = None
            entry = self._blocks[key] = [nbytes, 0, ref, 0]
            self.live += nbytes
        entry[1] += 1
        if snapshot:
            if entry[3] == 0:
                self.snapshot_live += nbytes
            entry[3] += 1
        return key

    def _release(self, key, snapshot=False):
        entry = self._blocks.get(key)
        if entry is None:
            return  # the block was already collected
        entry[1] -= 1
        if snapshot:
            entry[3] -= 1
            if entry[3] == 0:
                self.snapshot_live -= entry[0]
        if entry[1] <= 0:
            del self._blocks[key]
            self.live -= entry[0]

    def _make_release(self, key):
        me = weakref.ref(self)

        def gone(_ref):
            acc = me()
            if acc is None:
                return
            entry = acc._blocks.get(key)
            if entry is not None and entry[2] is _ref:
                del acc._blocks[key]
                acc.live -= entry[0]
                if entry[3] > 0:
                    acc.snapshot_live -= entry[0]

        return gone

    def _bump(self):
        if self.live > self.peak:
            self.peak = self.live
        if self.snapshot_live > self.snapshot_peak:
            self.snapshot_peak = self.snapshot_live
        if self.phase == "backward":
            if self.live > self._bwd_peak:
                self._bwd_peak = self.live
        elif self.live > self._fwd_peak:
            self._fwd_peak = self.live

    # --- observer hooks -------------------------------------------------------
    def saved(self, node):
        if self.prev is not None:
            self.prev.saved(node)
        self.nodes_saved += 1
        if self.phase == "idle":
            self.phase = "forward"
            self._fwd_peak = self.live
        snapshot = getattr(node.prim.custom, "is_checkpoint", False) if node.prim is not None else False
        keys = [self._acquire(a, snapshot) for a in residual_arrays(node)]
        # (a dead node's record is dropped by ``gone`` before its id can be reused)
        key, seq, me = id(node), node.seq, self._me

        def gone(_ref):
            acc = me()
            if acc is not None:
                rec = acc._nodes.get(key)
                if rec is not None and rec[0] == seq:
                    acc._drop(key)

        self._nodes[key] = (seq, [(k, snapshot) for k in keys], weakref.ref(node, gone))
        self._bump()

    def freed(self, node):
        if self.prev is not None:
            self.prev.freed(node)
        self._drop(id(node))

    def _drop(self, key):
        """A node's bytes stop counting: freed by backward, or collected (NOTE [when bytes stop counting])."""
        if self.phase != "backward":
            self.last_forward_peak = max(self._fwd_peak, self.live)
            self.phase = "backward"
            self._bwd_peak = self.live
        rec = self._nodes.pop(key, None)
        if rec is None:  # saved before this accountant was installed, or already dropped
            return
        self.nodes_freed += 1
        for k, snap in rec[1]:
            self._release(k, snap)
        if not self._nodes and not self._holds:
            self.last_backward_peak = self._bwd_peak
            self.phase = "idle"

    # --- snapshots (gpuad.checkpointing) --------------------------------------
    def hold(self, token, arrays):
        """Count ``arrays`` as snapshot bytes until :meth:`release` of ``token``."""
        if isinstance(self.prev, Accountant):
            self.prev.hold(token, arrays)
        if self.phase == "idle":
            self.phase = "forward"
            self._fwd_peak = self.live
        self._holds[token] = [self._acquire(a, True) for a in arrays]
        self._bump()

    def release(self, token):
        if isinstance(self.prev, Accountant):
            self.prev.release(token)
        for k in self._holds.pop(token, ()):
            self._release(k, True)
        if self.phase == "backward" and not self._nodes and not self._holds:
            self.last_backward_peak = self._bwd_peak
            self.phase = "idle"

    def reset_peak(self):
        """Start a new peak measurement from the current live bytes."""
        self.peak = self.live
        self.snapshot_peak = self.snapshot_live

    # --- reporting ------------------------------------------------------------
    def report(self):
        fwd = self._fwd_peak if self.phase == "forward" else self.last_forward_peak
        bwd = self._bwd_peak if self.phase == "backward" else self.last_backward_peak
        pool = {}
        for mod in self._backends:
            pool.update(mod.memory_stats())
        return MemoryReport(
            live_bytes=self.live, peak_bytes=self.peak, forward_peak_bytes=fwd, backward_peak_bytes=bwd,
            snapshot_peak_bytes=self.snapshot_peak, nodes_saved=self.nodes_saved,
            nodes_freed=self.nodes_freed, pool=pool,
        )


def current():
    """The innermost installed :class:`Accountant`, or ``None``."""
    obs = get_tape_observer()
    while obs is not None and not isinstance(obs, Accountant):
        obs = getattr(obs, "prev", None)
    return obs


@contextlib.contextmanager
def track():
    """Measure the tape bytes of a block.

    Yields a :class:`MemoryReport` that is filled in when the block ends.

    Examples
    --------
    >>> with gpuad.memory.track() as rep:
    ...     gpuad.grad(lambda x: xp.sum(xp.exp(x)))(x)   # exp keeps its output
    >>> rep.peak_bytes == x.nbytes
    True
    """
    acc = Accountant(get_tape_observer())
    set_tape_observer(acc)
    rep = MemoryReport()
    try:
        yield rep
    finally:
        _unlink(acc)
        final = acc.report()
        for name in final.__dataclass_fields__:
            setattr(rep, name, getattr(final, name))


_global = None


def enable():
    """Install a process-wide accountant (idempotent); returns it."""
    global _global
    if _global is None:
        _global = Accountant(get_tape_observer())
        set_tape_observer(_global)
    return _global


def disable():
    """Remove the accountant installed by :func:`enable`."""
    global _global
    if _global is not None:
        _unlink(_global)
        _global = None


def _unlink(acc):
    """Take ``acc`` out of the observer chain, wherever it sits in it.

    # NOTE [observer chain]: accountants form a chain through ``prev``
    # (``track`` blocks and the global one of ``enable`` nest in any order);
    # ending one removes exactly that one, so ``disable()`` inside a
    # ``track`` block or a ``track`` block around ``enable()`` leaves the
    # others installed.
    """
    obs = get_tape_observer()
    if obs is acc:
        set_tape_observer(acc.prev)
        return
    while obs is not None:
        nxt = getattr(obs, "prev", None)
        if nxt is acc:
            obs.prev = acc.prev
            return
        obs = nxt


def live_bytes():
    """Bytes the tape holds now, as counted by the innermost accountant (0 if none)."""
    acc = current()
    return 0 if acc is None else acc.live


def report():
    """:class:`MemoryReport` of the innermost accountant (empty if none is installed)."""
    acc = current()
    return MemoryReport() if acc is None else acc.report()
