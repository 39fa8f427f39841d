"""An in-process communicator: ``size`` threads play the ranks.

For tests and for debugging data-parallel code without MPI or GPUs: the
bucketing, averaging and structure checks are the real ones; only the
transport is a shared list and a :class:`threading.Barrier`.  Where a real
transport would fail on buffers of different sizes (a truncated message) or
mix bytes of different dtypes, the local group compares every rank's buffers
and raises :class:`DistributedError` on all of them, naming each rank's.
"""

from __future__ import annotations

import threading

from ._comm import CollectiveTimeout, Communicator, DistributedError

__all__ = ["LocalCommunicator", "local_group", "run_local"]


class _Group:
    def __init__(self, size, timeout):
        self.size = size
        self.timeout = timeout
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size

    def exchange(self, rank, value, what):
        """Every rank's ``value``, in rank order."""
        self.slots[rank] = value
        self._wait(rank, what)
        values = list(self.slots)
        self._wait(rank, what)
        return values

    def _wait(self, rank, what):
        try:
            self.barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            raise CollectiveTimeout(
                f"gpuad.distributed (local group): rank {rank} of {self.size}: {what} did not complete "
                f"within {self.timeout:g} s or another rank failed") from None


class LocalCommunicator(Communicator):
    """One rank of an in-process group made by :func:`local_group`.

    ``calls`` records each bucket collective as ``(op, dtype name, elements)``.
    """

    backend = "local"

    def __init__(self, group, rank, *, bucket_mb=None):
        super().__init__(rank, group.size, local_rank=rank, bucket_mb=bucket_mb, timeout=None)
        self._group = group
        self.calls = []

    def _sum_(self, group, bufs):
        dt = group[2]
        self.calls.extend(("sum", dt, int(b.shape[0])) for b in bufs)
        every = self._group.exchange(self.rank, bufs, "allreduce")
        self._same_buffers(every, "allreduce")
        out = []
        for i in range(len(bufs)):
            acc = every[0][i]
            for r in range(1, self.size):
                acc = acc + every[r][i]
            out.append(acc)
        return out

    def _bcast_(self, group, bufs, root):
        ns, dt = group[0], group[2]
        self.calls.extend(("bcast", dt, int(b.shape[0])) for b in bufs)
        every = self._group.exchange(self.rank, bufs, "broadcast")
        self._same_buffers(every, "broadcast")
        return bufs if self.rank == root else [ns.asarray(b, copy=True) for b in every[root]]

    def _barrier_(self):
        self._group.exchange(self.rank, None, "barrier")

    def _same_buffers(self, every, what):
        """Raise, on every rank alike, unless all ranks passed buffers of the same sizes and dtypes."""
        def shape(bufs):
            return [(int(b.shape[0]), str(b.dtype)) for b in bufs]

        mine = shape(every[0])
        if any(shape(b) != mine for b in every[1:]):
            each = "; ".join(f"rank {r}: " + ", ".join(f"{n:,} {dt}" for n, dt in shape(b))
                             for r, b in enumerate(every))
            raise DistributedError(f"gpuad.distributed (local group): rank {self.rank} of {self.size}: {what} "
                                   f"of buffers that differ across ranks ({each}): the ranks passed pytrees of "
                                   "different structure, shapes or dtypes")

    def abort(self, code=1):
        self._group.barrier.abort()
        raise CollectiveTimeout(f"rank {self.rank}: aborted (code {code})")


def local_group(size, *, bucket_mb=None, timeout=60.0):
    """``size`` :class:`LocalCommunicator` objects that form one group (use one per thread)."""
    if size < 1:
        raise ValueError(f"local_group: size must be positive, got {size}")
    group = _Group(size, timeout)
    return [LocalCommunicator(group, r, bucket_mb=bucket_mb) for r in range(size)]


def run_local(size, fn, *, bucket_mb=None, timeout=60.0):
    """Run ``fn(comm)`` on ``size`` threads, one per rank; returns the results in rank order.

    The first exception of any rank breaks the group (the others fail at
    their next collective instead of waiting) and is re-raised here.
    """
    if not callable(fn):
        raise TypeError(f"run_local: fn must be callable (called as fn(comm) on each rank), got {type(fn).__name__}")
    comms = local_group(size, bucket_mb=bucket_mb, timeout=timeout)
    results = [None] * size
    errors = [None] * size

    def main(r):
        try:
            results[r] = fn(comms[r])
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors[r] = e
            comms[r]._group.barrier.abort()

    threads = [threading.Thread(target=main, args=(r,), name=f"gpuad-local-rank-{r}") for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if e is not None and not isinstance(e, CollectiveTimeout)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results
