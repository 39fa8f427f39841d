"""The communicator interface, its bucketed collectives, and the collective watchdog.

Subclasses implement three hooks on lists of flat buckets: ``_sum_(group,
bufs)``, ``_bcast_(group, bufs, root)`` and ``_barrier_()``; everything else
(pytrees, buckets, averaging, timeouts) is here.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from .._dtypes import dtype_name, is_floating
from .._tree import tree_flatten, tree_map, tree_unflatten
from ._buckets import BucketPlan, leaf_spec

__all__ = ["Communicator", "SingleProcessCommunicator", "DistributedError", "CollectiveTimeout",
           "DEFAULT_BUCKET_MB", "default_timeout"]

#: Default bucket size in megabytes (10**6 bytes), as PyTorch DDP.
DEFAULT_BUCKET_MB = 25.0
#: Default limit in seconds on one collective (``GPUAD_DIST_TIMEOUT`` overrides; 0 disables).
DEFAULT_TIMEOUT = 600.0


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
    two attribute stores; the thread wakes a few times per timeout to look.
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
    the same structure, shapes and dtypes (checked on the first call with each
    new structure).  Leaves are packed by dtype into flat buckets and each
    bucket is one collective call.  Results are fresh arrays; leaves that lie
    in one bucket are views of it.  With ``size == 1`` every collective
    returns its input unchanged.
    """

    #: Short name of the transport: ``"none"``, ``"mpi"``, ``"nccl"``, ``"local"``.
    backend = "none"

    def __init__(self, rank=0, size=1, *, local_rank=0, bucket_mb=None, timeout="default"):
        if not 0 <= rank < size:
            raise ValueError(f"rank must be in [0, {size}), got {rank}")
        self.rank = int(rank)
        self.size = int(size)
        self.local_rank = int(local_rank)
        mb = DEFAULT_BUCKET_MB if bucket_mb is None else float(bucket_mb)
        if not mb > 0:
            raise ValueError(f"bucket_mb must be positive, got {bucket_mb!r}")
        self.bucket_bytes = max(1, int(mb * 1e6))
        self.timeout = default_timeout() if timeout == "default" else (timeout if timeout and timeout > 0 else None)
        self._plans = {}
        self._watchdog = None
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
        leaves, td = tree_flatten(tree)
        w = 1.0 if weight is None else float(weight)
        if self.size == 1:
            _check_floating(leaves)
            return tree if w == 1.0 else tree_map(lambda x: x * w, tree)
        return self._reduce("allreduce_mean", leaves, td, w / self.size, floating=True)

    def allreduce_sum(self, tree):
        """The sum over ranks of each leaf (any numeric dtype; see :meth:`allreduce_mean`)."""
        if self.size == 1:
            return tree
        leaves, td = tree_flatten(tree)
        return self._reduce("allreduce_sum", leaves, td, 1)

    def broadcast(self, tree, root=0):
        """Rank ``root``'s values of every leaf, on every rank.

        The other ranks pass a tree of the same structure, shapes and dtypes
        (e.g. their own freshly initialised parameters); their values are
        ignored.  ``root`` gets its own tree back.
        """
        if not 0 <= root < self.size:
            raise ValueError(f"broadcast: root must be in [0, {self.size}), got {root}")
        if self.size == 1:
            return tree
        leaves, td = tree_flatten(tree)
        plan = self._plan("broadcast", leaves, td)
        bufs = plan.pack(leaves) if self.rank == root else plan.buffers()
        for g, idx in self._by_group(plan):
            part = [bufs[b] for b in idx]
            with self._guard("broadcast", plan, idx):
                part = self._bcast_(plan.groups[g], part, root)
            for b, buf in zip(idx, part):
                bufs[b] = buf
        if self.rank == root:
            return tree
        return tree_unflatten(td, plan.unpack(bufs, leaves))

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
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    # --- machinery ---------------------------------------------------------------------
    def _plan(self, op, leaves, td):
        # The plan depends on the leaves only (the tree structure is rebuilt from ``td``).
        try:  # cheap key: type, shape, dtype and device of each leaf
            key = tuple((type(x), x.shape, dtype_name(x.dtype), x.device) for x in leaves)
            plan = self._plans.get(key)
        except (AttributeError, TypeError):  # not arrays, or unhashable: leaf_spec says which
            key, plan = None, None
        if plan is None:
            specs = tuple(leaf_spec(x, f"{op}: leaf {i}") for i, x in enumerate(leaves))
            plan = BucketPlan(specs, self.bucket_bytes)
            self._check_same(op, plan)
            if key is not None:
                if len(self._plans) > 256:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    def _check_same(self, op, plan):
        """Fail clearly when ranks plan different trees (else a collective would hang or mix data)."""
        with self._guard(f"{op} (structure check)", None, ()):
            sigs = self._allgather_ints_(plan.signature)
        if sigs is not None and len(set(sigs)) > 1:
            raise DistributedError(
                f"{op}: the ranks passed pytrees of different structure, shapes or dtypes "
                f"(signatures by rank: {list(sigs)}); every rank must pass the same kind of tree")

    @staticmethod
    def _by_group(plan):
        groups = {}
        for b, (g, _, _) in enumerate(plan.buckets):
            groups.setdefault(g, []).append(b)
        return groups.items()

    def _reduce(self, op, leaves, td, scale, floating=False):
        plan = self._plan(op, leaves, td)
        if floating and not plan.floating:
            _check_floating(leaves)
        bufs = plan.pack(leaves, scale)
        for g, idx in self._by_group(plan):
            part = [bufs[b] for b in idx]
            with self._guard(op, plan, idx):
                part = self._sum_(plan.groups[g], part)
            for b, buf in zip(idx, part):
                bufs[b] = buf
        return tree_unflatten(td, plan.unpack(bufs, leaves))

    def _guard(self, op, plan, idx):
        return _Guard(self, op, plan, idx)

    def _expired(self, what, timeout):
        """Called by the watchdog thread: say what hung, then abort the job."""
        sys.stderr.write(
            f"gpuad.distributed: rank {self.rank} of {self.size} ({self.backend}): {what} did not complete "
            f"within {timeout:g} s; another rank has probably crashed, stopped, or is waiting in a different "
            f"collective. Aborting the job (the limit is init(timeout=...) or GPUAD_DIST_TIMEOUT).\n")
        self.abort(124)

    # --- hooks -------------------------------------------------------------------------
    def _sum_(self, group, bufs):
        """Sum each flat buffer over ranks, in place where possible; return the buffers."""
        raise NotImplementedError

    def _bcast_(self, group, bufs, root):
        raise NotImplementedError

    def _barrier_(self):
        raise NotImplementedError

    def _allgather_ints_(self, value):
        """Every rank's ``value`` (an int), or ``None`` where the transport cannot tell."""
        return None


def _check_floating(leaves):
    for i, x in enumerate(leaves):
        dt = getattr(x, "dtype", None)
        if dt is None or not is_floating(dt):
            raise TypeError(f"allreduce_mean: leaf {i} has dtype {getattr(x, 'dtype', type(x).__name__)}; "
                            "a mean needs floating leaves (use allreduce_sum for integers)")


class _Guard:
    """Arms the watchdog around one collective and counts the bucket calls."""

    __slots__ = ("comm", "op", "plan", "idx")

    def __init__(self, comm, op, plan, idx):
        self.comm, self.op, self.plan, self.idx = comm, op, plan, idx

    def __enter__(self):
        c = self.comm
        c.collective_calls += len(self.idx)
        if c.timeout is not None:
            if c._watchdog is None:
                c._watchdog = _Watchdog(c.timeout, c._expired)
            what = self.op
            if self.plan is not None:
                what = f"{self.op} of {', '.join(self.plan.describe(b) for b in self.idx)}"
            c._watchdog.arm(what)

    def __exit__(self, *exc):
        if self.comm._watchdog is not None:
            self.comm._watchdog.disarm()
        return False


class SingleProcessCommunicator(Communicator):
    """One process: every collective returns its input; the same script runs anywhere."""

    backend = "none"

    def __init__(self, *, bucket_mb=None):
        super().__init__(0, 1, bucket_mb=bucket_mb, timeout=None)
