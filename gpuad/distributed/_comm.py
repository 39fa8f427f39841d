"""The communicator interface, its bucketed collectives, and the collective watchdog.

Subclasses implement three hooks on lists of flat buckets: ``_sum_(group,
bufs)``, ``_bcast_(group, bufs, root)`` and ``_barrier_()``; everything else
(pytrees, buckets, averaging, the cross-rank structure check of NOTE [check
words], timeouts) is here.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import threading
import time

from .._dtypes import dtype_name, is_floating
from .._core import Tracer
from .._tree import tree_flatten, tree_map, tree_unflatten
from ._buckets import BucketPlan, device_key, leaf_spec
from ._check import leaf_paths
from ._compiled import compile_tree

__all__ = ["Communicator", "SingleProcessCommunicator", "DistributedError", "CollectiveTimeout",
           "DEFAULT_BUCKET_MB", "default_timeout"]

#: Default bucket size in megabytes (10**6 bytes), as PyTorch DDP.
DEFAULT_BUCKET_MB = 25.0
#: Default limit in seconds on one collective (``GPUAD_DIST_TIMEOUT`` overrides; 0 disables).
DEFAULT_TIMEOUT = 600.0
#: Plans kept per communicator (all are dropped when one more is needed).
MAX_PLANS = 256


class DistributedError(RuntimeError):
    """A distributed run cannot go on (mismatched trees across ranks, unusable MPI, ...)."""


class CollectiveTimeout(DistributedError):
    """A collective did not complete within the communicator's timeout."""


def default_timeout():
    """``GPUAD_DIST_TIMEOUT`` in seconds (0 or less: no limit), else 600."""
    raw = os.environ.get("GPUAD_DIST_TIMEOUT")
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT
    try:
        t = float(raw)
    except ValueError:
        raise ValueError(f"GPUAD_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return t if t > 0 else None


class _Watchdog:
    """A daemon thread that calls ``on_expiry(what, timeout)`` when a collective overruns.

    ``arm(what)`` before a blocking collective and ``disarm()`` after it cost
    two attribute stores (``what`` is a string, or ``(op, plan, bucket
    indices)`` that is put into words only on expiry); the thread wakes a few
    times per timeout to look.
    The blocking MPI calls release the GIL, so it runs while they wait.
    """

    def __init__(self, timeout, on_expiry):
        self.timeout = timeout
        self.on_expiry = on_expiry
        self.what = None
        self.deadline = None
        self._thread = None

    def arm(self, what):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpuad-dist-watchdog", daemon=True)
            self._thread.start()
        self.what = what
        self.deadline = time.monotonic() + self.timeout

    def disarm(self):
        self.deadline = None

    def _run(self):
        poll = min(1.0, max(0.05, self.timeout / 20))
        while True:
            time.sleep(poll)
            d = self.deadline
            if d is not None and time.monotonic() > d and self.deadline is d:
                self.on_expiry(self.what, self.timeout)
                return


class Communicator:
    """A group of ``size`` processes that average, broadcast and synchronise pytrees.

    Parameters
    ----------
    rank, size : int
        This process's index and the number of processes.
    local_rank : int
        Index among the processes on this machine (selects the GPU).
    bucket_mb : float
        Largest flat bucket, in megabytes (10**6 bytes); default 25.
    timeout : float or None
        Seconds one collective may block before the job is aborted with a
        message naming the collective; ``None`` means no limit.  Default:
        ``GPUAD_DIST_TIMEOUT`` or 600.

    Notes
    -----
    Every rank must call the same collectives in the same order on trees of
    the same structure, dict keys, shapes and dtypes.  Every collective
    checks this across ranks with a few check words carried in its first
    bucket (NOTE [check words]): no collective of its own, and the same
    transport calls on every rank whether or not its plan was cached; a
    mismatch raises :class:`DistributedError` on at least one rank (both,
    with two), whose abort ends the job.  Leaves are packed by dtype into
    flat buckets and each bucket is one collective call, reduced in place.
    The plan (and, for a structure seen twice, compiled flatten/rebuild
    functions) is cached per structure, shapes, dtypes and devices.  Results
    are fresh array objects; leaves that lie in
    one bucket are views of it, and a kept bucket is only refilled once no
    result (nor any view of one) refers to it any more, so results never
    change after they are returned (see :mod:`gpuad.distributed._buckets`).
    With ``size == 1`` every collective returns its input unchanged.
    """

    #: Short name of the transport: ``"none"``, ``"mpi"``, ``"nccl"``, ``"local"``.
    backend = "none"
    #: NOTE [when check words are read]: reading a collective's check words
    #: back waits for its first bucket.  MPI collectives block anyway, so
    #: they are read on every call; a transport whose collectives are
    #: asynchronous (NCCL) reads them on a plan's first use only, so that a
    #: training step never waits for the device.  ``GPUAD_DIST_CHECK=every``
    #: (or ``first``) overrides.  With ``first``, a rank whose new tree meets
    #: another rank's already checked plan still fails (it reads its words);
    #: the other rank then stops at its next collective through the watchdog
    #: or the launcher.
    check_every_call = True

    def __init__(self, rank=0, size=1, *, local_rank=0, bucket_mb=None, timeout="default"):
        if not 0 <= rank < size:
            raise ValueError(f"rank must be in [0, {size}), got {rank}")
        self.rank = int(rank)
        self.size = int(size)
        self.local_rank = int(local_rank)
        mb = DEFAULT_BUCKET_MB if bucket_mb is None else bucket_mb
        if isinstance(mb, bool) or not isinstance(mb, numbers.Real) or not (mb > 0 and math.isfinite(mb)):
            raise ValueError(f"bucket_mb must be a positive finite number of megabytes, got {bucket_mb!r}")
        self.bucket_bytes = max(1, int(mb * 1e6))
        self.timeout = default_timeout() if timeout == "default" else (timeout if timeout and timeout > 0 else None)
        self._plans = {}  # leaf key -> BucketPlan
        self._fast = {}   # cheap key of the tree -> [_Entry], see _prepare
        self._fast_entries = 0
        self._watchdog = None
        self._check_each = check_mode(self.check_every_call)
        #: Number of bucket collectives issued so far (for tests and benchmarks).
        self.collective_calls = 0

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"

    # --- the public collectives ------------------------------------------------------
    def allreduce_mean(self, tree, *, weight=None):
        """The mean over ranks of each leaf: ``sum_r weight_r * x_r / size``.

        Parameters
        ----------
        tree : pytree of floating arrays
            Same structure, shapes and dtypes on every rank; ``None`` and
            size-0 leaves are allowed.
        weight : float, optional
            This rank's weight (default 1).  For a mean over unequal shards,
            pass ``n_local * size / n_total``: the result is then the mean
            over all examples.  Scaling is fused into packing.

        Returns
        -------
        pytree of the same structure
        """
        w = 1.0 if weight is None else _weight(weight)
        if self.size == 1:
            _check_floating(tree_flatten(tree)[0])
            return tree if w == 1.0 else tree_map(lambda x: x * w, tree)
        return self._reduce("allreduce_mean", tree, w / self.size, floating=True)

    def allreduce_sum(self, tree):
        """The sum over ranks of each leaf (any numeric dtype; see :meth:`allreduce_mean`)."""
        if self.size == 1:
            return tree
        return self._reduce("allreduce_sum", tree, 1)

    def broadcast(self, tree, root=0):
        """Rank ``root``'s values of every leaf, on every rank.

        The other ranks pass a tree of the same structure, shapes and dtypes
        (e.g. their own freshly initialised parameters); their values are
        ignored.  ``root`` gets its own tree back.
        """
        if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < self.size:
            raise ValueError(f"broadcast: root must be in [0, {self.size}), got {root}")
        if self.size == 1:
            return tree
        leaves, plan, build, _ = self._prepare("broadcast", tree)
        if plan.refuse_bcast is not None:
            raise TypeError(f"broadcast: {plan.refuse_bcast}")
        if self.rank == root:
            bufs = plan.pack(leaves)
        else:
            bufs = plan.buffers()
            plan.check.clear(bufs[0])  # only the root's words may pass the check
        first = True
        for g, idx in plan.calls:
            part = [bufs[b] for b in idx]
            with self._guard("broadcast", plan, idx):
                part = self._bcast_(plan.groups[g], part, root)
                if first and self.rank != root:
                    self._verify("broadcast", plan, part[0], root)
            first = False
            for b, buf in zip(idx, part):
                bufs[b] = buf
        if self.rank == root:
            return tree
        return build(plan.unpack(bufs, leaves))

    def barrier(self):
        """Block until every rank has called ``barrier``."""
        if self.size == 1:
            return
        with self._guard("barrier", None, ()):
            self._barrier_()

    def rank_key(self, key):
        """A :mod:`gpuad.random` key of this rank's own (``fold_in(key, rank)``), e.g. for dropout.

        Initialisation and shuffling use the shared key, so every rank draws
        the same parameters and the same global permutation.
        """
        from .. import random

        return random.fold_in(key, self.rank)

    def abort(self, code=1):
        """End every process of the job (best effort); never returns."""
        sys.stderr.flush()
        os._exit(code)

    def shard(self, n):
        """``(start, stop)`` of this rank's contiguous share of ``n`` items (sizes differ by at most 1)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"shard: n must be a non-negative int (the number of items), got {n!r}")
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    # --- machinery ---------------------------------------------------------------------
    def _prepare(self, op, tree):
        """``(leaves, plan, build, entry)`` for ``tree``; ``build(leaves)`` makes a tree of its structure.

        A structure seen before (same containers, dict keys, leaf types,
        shapes and dtypes) is matched by its compiled ``extract`` (see
        :mod:`._compiled`), which replaces both flattening and the plan
        lookup; ``entry`` is then that :class:`_Entry`, else None.  Entries
        exist only for plans in ``self._plans`` (both are dropped together),
        so a call makes a new plan exactly when it would without them.
        Whether it does never changes the collectives a call makes (NOTE
        [check words]).
        """
        t = type(tree)
        entries = self._fast.get((t, len(tree)) if t is list or t is tuple or t is dict else t)
        if entries:
            for e in entries:
                try:
                    leaves = e.extract(tree)
                except Exception:  # noqa: BLE001 - e.g. a missing dict key: not this structure
                    leaves = None
                if leaves is not None:
                    return leaves, e.plan, e.build, e
        leaves, td = tree_flatten(tree)
        plan, key, made = self._plan_for(op, leaves, td)
        if key is not None and not made and not any(isinstance(x, Tracer) for x in leaves):
            self._remember(tree, td, leaves, plan)  # the second call with this structure: compile it
        return leaves, plan, (lambda out: tree_unflatten(td, out)), None

    def _remember(self, tree, td, leaves, plan):
        compiled = compile_tree(td, leaves, plan.sources)
        if compiled is None:
            return
        if self._fast_entries >= MAX_PLANS:
            self._fast.clear()
            self._fast_entries = 0
        t = type(tree)
        entries = self._fast.setdefault((t, len(tree)) if t is list or t is tuple or t is dict else t, [])
        if len(entries) >= 8:
            entries.pop(0)
            self._fast_entries -= 1
        entries.append(_Entry(plan, *compiled))
        self._fast_entries += 1

    def _plan(self, op, leaves, td=None):
        """The :class:`BucketPlan` of ``leaves`` in structure ``td`` (default: a list of them)."""
        return self._plan_for(op, leaves, tree_flatten(list(leaves))[1] if td is None else td)[0]

    def _plan_for(self, op, leaves, td):
        # The plan depends on the structure (its hash is in the check words) and the leaves.
        try:  # cheap key: the structure, and type, shape, dtype and device of each leaf
            key = (td, tuple((type(x), x.shape, dtype_name(x.dtype), device_key(x)) for x in leaves))
            plan = self._plans.get(key)
        except (AttributeError, TypeError):  # not arrays, or unhashable: leaf_spec says which
            key, plan = None, None
        if plan is not None:
            return plan, key, False
        specs = tuple(leaf_spec(x, f"{op}: leaf {i}") for i, x in enumerate(leaves))
        plan = BucketPlan(specs, self.bucket_bytes, size=self.size, treedef=td, home=self._check_home_)
        plan.refuse_sum = self._refusal(plan, td, "sum")
        plan.refuse_bcast = self._refusal(plan, td, "broadcast")
        if key is not None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
                self._fast.clear()  # compiled entries only ever refer to plans in self._plans
                self._fast_entries = 0
            self._plans[key] = plan
        return plan, key, True

    def _refusal(self, plan, td, kind):
        """Why this transport cannot ``kind`` (``"sum"``, ``"broadcast"``) the plan's leaves, or None."""
        bad = self._unsupported_.get(kind, ())
        for i, (shape, dt, _) in enumerate(plan.specs):
            if dt in bad and math.prod(shape) > 0:
                path = leaf_paths(td)[i] if td is not None else f"leaf {i}"
                verb = "sum" if kind == "sum" else "broadcast"
                fix = ("cast it to an integer dtype first, e.g. x.astype('int32')" if dt == "bool"
                       else "cast it to a supported dtype first, e.g. x.astype('int32')")
                return (f"leaf {path} has dtype {dt}, which {type(self).__name__} cannot {verb} "
                        f"(unsupported: {', '.join(sorted(bad))}); {fix}")
        return None

    def _verify(self, op, plan, buf, root=None):
        """NOTE [check words]: raise unless bucket 0 (``buf``) came back with the words it should have."""
        if not self._check_each and getattr(plan, "verified", False):  # NOTE [when check words are read]
            return
        chk = plan.check
        if chk.read(buf) != (chk.summed if root is None else chk.sent):
            raise DistributedError(chk.message(op, self.rank, buf, root))
        plan.verified = True

    def _reduce(self, op, tree, scale, floating=False):
        leaves, plan, build, entry = self._prepare(op, tree)
        if floating and not plan.floating:
            _check_floating(leaves)
        if plan.refuse_sum is not None:
            raise TypeError(f"{op}: {plan.refuse_sum}")
        # NOTE [kept-bucket fast path]: a compiled structure on NumPy whose kept buckets are free is
        # packed into them, its result tree (new views of them) made, and the buckets summed in place
        # by the transport, with no bucket lists, buffer checks or context managers in between: at
        # 1 MB those cost as much as the copy does.  The general path below does the same work,
        # check words included (the transport's _sum_kept_ verifies them after bucket 0).
        if entry is not None and entry.rebuild is not None and self._sum_kept_ is not None:
            pool = plan.pack_kept(leaves, scale, plain=True)
            if pool is not None:
                out = entry.rebuild(pool.views, leaves)
                self._sum_kept_(op, plan, pool.bufs)
                return out
        bufs = plan.pack(leaves, scale, plain=entry is not None)  # scaled while packed: no pass of its own
        first = True
        for g, idx in plan.calls:
            part = [bufs[b] for b in idx]
            with self._guard(op, plan, idx):
                part = self._sum_(plan.groups[g], part)
                if first:  # NOTE [check words]: before any other bucket is exchanged
                    self._verify(op, plan, part[0])
            first = False
            for b, buf in zip(idx, part):
                bufs[b] = buf
        return build(plan.unpack(bufs, leaves))

    def _guard(self, op, plan, idx):
        return _Guard(self, op, plan, idx)

    def _arm(self, op, plan, idx):
        """Count the bucket calls ``idx`` and start the watchdog's clock; returns the watchdog or None.

        The caller calls ``disarm()`` on it when the collective returns or raises.
        """
        self.collective_calls += len(idx)
        if self.timeout is None:
            return None
        wd = self._watchdog
        if wd is None:
            wd = self._watchdog = _Watchdog(self.timeout, self._expired)
        wd.arm(op if plan is None else (op, plan, idx))
        return wd

    def _expired(self, what, timeout):
        """Called by the watchdog thread: say what hung, then abort the job."""
        if isinstance(what, tuple):  # (op, plan, bucket indices): formatted only now
            op, plan, idx = what
            what = f"{op} of {', '.join(plan.describe(b) for b in idx)}"
        sys.stderr.write(
            f"gpuad.distributed: rank {self.rank} of {self.size} ({self.backend}): {what} did not complete "
            f"within {timeout:g} s; another rank has probably crashed, stopped, or is waiting in a different "
            f"collective. Aborting the job (the limit is init(timeout=...) or GPUAD_DIST_TIMEOUT).\n")
        self.abort(124)

    # --- hooks -------------------------------------------------------------------------
    #: ``_sum_kept_(op, plan, bufs)``, where the transport can: sum ``bufs`` (one of the plan's kept
    #: sets of NumPy buckets, which it allocated itself) in place, arming the watchdog with
    #: :meth:`_arm`, and calling ``self._verify(op, plan, bufs[0])`` right after bucket 0 is summed.
    #: None: no fast path.
    _sum_kept_ = None
    #: Dtype names the transport cannot sum or broadcast (refused with a TypeError naming the leaf).
    _unsupported_ = {"sum": frozenset({"bool"}), "broadcast": frozenset()}
    #: Exceptions of the transport that a collective turns into a :class:`DistributedError` naming it.
    _transport_errors_ = ()

    def _sum_(self, group, bufs):
        """Sum each flat buffer over ranks, in place where possible; return the buffers."""
        raise NotImplementedError

    def _bcast_(self, group, bufs, root):
        raise NotImplementedError

    def _barrier_(self):
        raise NotImplementedError

    def _check_home_(self):
        """``(namespace, device)`` of the check-word bucket of a tree without arrays (NumPy, CPU)."""
        from .._backend import backend_module

        return backend_module("numpy").namespace(), "cpu"

    def _failed(self, op, plan, idx, exc):
        """The :class:`DistributedError` for transport error ``exc`` in a collective on buckets ``idx``."""
        what = op if plan is None else f"{op} of {', '.join(plan.describe(b) for b in idx)}"
        first = (str(exc).strip().splitlines() or [""])[0].split(", error stack")[0][:300]  # MPICH's: its cause
        return DistributedError(
            f"rank {self.rank} of {self.size} ({self.backend}): {what} failed in the transport "
            f"({type(exc).__name__}: {first}); the ranks probably passed pytrees of different sizes or dtypes, "
            "or called different collectives")


def _weight(weight):
    """``allreduce_mean``'s ``weight`` as a float: finite and >= 0 (0 for a rank with an empty shard)."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise TypeError(f"allreduce_mean: weight must be a number, got {type(weight).__name__}: "
                        f"{weight!r:.60}") from None
    if not (w >= 0.0 and math.isfinite(w)):
        raise ValueError(f"allreduce_mean: weight must be a finite number >= 0 (n_local * size / n_total), "
                         f"got {weight!r}")
    return w


def check_mode(default):
    """Whether every collective reads its check words: ``GPUAD_DIST_CHECK`` (every|first) or ``default``."""
    raw = os.environ.get("GPUAD_DIST_CHECK", "").strip().lower()
    if not raw:
        return default
    if raw not in ("every", "first"):
        raise ValueError(f"GPUAD_DIST_CHECK must be 'every' or 'first', got {raw!r}")
    return raw == "every"


def _check_floating(leaves):
    for i, x in enumerate(leaves):
        dt = getattr(x, "dtype", None)
        if dt is None or not is_floating(dt):
            raise TypeError(f"allreduce_mean: leaf {i} has dtype {getattr(x, 'dtype', type(x).__name__)}; "
                            "a mean needs floating leaves (use allreduce_sum for integers)")


class _Entry:
    """A compiled structure: its plan and the functions of :func:`._compiled.compile_tree`."""

    __slots__ = ("plan", "extract", "build", "rebuild")

    def __init__(self, plan, extract, build, rebuild):
        self.plan, self.extract, self.build, self.rebuild = plan, extract, build, rebuild


class _Guard:
    """Arms the watchdog around one collective and counts the bucket calls."""

    __slots__ = ("comm", "op", "plan", "idx", "wd")

    def __init__(self, comm, op, plan, idx):
        self.comm, self.op, self.plan, self.idx = comm, op, plan, idx

    def __enter__(self):
        self.wd = self.comm._arm(self.op, self.plan, self.idx)

    def __exit__(self, etype, exc, tb):
        if self.wd is not None:
            self.wd.disarm()
        errors = self.comm._transport_errors_
        if errors and isinstance(exc, errors):
            raise self.comm._failed(self.op, self.plan, self.idx, exc) from exc
        return False


class SingleProcessCommunicator(Communicator):
    """One process: every collective returns its input; the same script runs anywhere."""

    backend = "none"

    def __init__(self, *, bucket_mb=None):
        super().__init__(0, 1, bucket_mb=bucket_mb, timeout=None)
