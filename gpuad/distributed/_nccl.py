"""NCCL through ``cupyx.distributed``: one NVIDIA GPU per process.

The store that exchanges NCCL's unique id runs on rank 0 at
``host:port`` (``CUPYX_DISTRIBUTED_HOST``/``_PORT`` or ``MASTER_ADDR``/
``MASTER_PORT``).  Reductions and broadcasts are enqueued on the current
CUDA stream with the buckets in place.  The few check words of NOTE [check
words] are read back after the first bucket of a plan's first collective
only (NOTE [when check words are read]): later collectives never make the
host wait for the device.

cupyx's NCCL backend has no bool, int16 or uint16: sums of those are refused
(a ``TypeError`` naming the leaf), broadcasts move their bytes as uint8.
"""

from __future__ import annotations

import os

from ._comm import Communicator, DistributedError

__all__ = ["NCCLCommunicator"]


class NCCLCommunicator(Communicator):
    """A :class:`Communicator` over NCCL (``cupyx.distributed.init_process_group``).

    Parameters
    ----------
    rank, size : int
        This process's rank and the number of processes (one GPU each).
    local_rank : int, optional
        GPU to use on this machine (default ``rank`` modulo the device count).
    host, port : optional
        Address of the rendezvous store on rank 0 (cupyx's defaults when None).
    bucket_mb, timeout
        See :class:`Communicator`.  NCCL calls are asynchronous: the watchdog
        covers ``barrier`` and the read of a plan's check words on its first
        collective (``GPUAD_DIST_CHECK=every``: on every collective).
    nccl : object, optional
        An already made ``cupyx.distributed`` backend (``all_reduce(in, out,
        op)``, ``broadcast(x, root)``, ``barrier()``); tests pass a fake.
    """

    backend = "nccl"
    check_every_call = False  # NOTE [when check words are read]
    #: Not in cupyx's NCCL dtype table (``cupyx.distributed._nccl_comm._nccl_dtypes``).
    _unsupported_ = {"sum": frozenset({"bool", "int16", "uint16", "bfloat16"}), "broadcast": frozenset()}
    _as_bytes = frozenset({"bool", "int16", "uint16", "bfloat16"})

    def __init__(self, rank, size, *, local_rank=None, host=None, port=None, bucket_mb=None,
                 timeout="default", nccl=None):
        if nccl is None:
            from .._backend import backend_module

            cupy_backend = backend_module("cupy")
            ok, why = cupy_backend.probe()
            if not ok:
                raise DistributedError(f"NCCLCommunicator needs a usable CuPy: {why}")
            if local_rank is None:
                local_rank = rank % max(1, cupy_backend.device_count())
            cupy_backend.use_device(local_rank)
            try:
                import cupyx.distributed as cxd
            except ImportError as e:
                raise DistributedError(f"NCCLCommunicator: cupyx.distributed is not available: {e}") from None
            try:
                nccl = cxd.init_process_group(size, rank, host=host, port=None if port is None else int(port))
            except RuntimeError as e:
                if "NCCL is not available" not in str(e):
                    raise
                raise DistributedError(
                    f"NCCLCommunicator: CuPy cannot load the NCCL library ({e}); CuPy's wheels do not bundle "
                    f"it: {cupy_backend.nccl_install_hint()}") from None
        super().__init__(rank, size, local_rank=rank if local_rank is None else local_rank,
                         bucket_mb=bucket_mb, timeout=timeout)
        self._nccl = nccl

    def _sum_(self, group, bufs):
        for b in bufs:
            self._nccl.all_reduce(b, b, "sum")
        return bufs

    def _bcast_(self, group, bufs, root):
        as_bytes = group[2] in self._as_bytes
        for b in bufs:
            self._nccl.broadcast(b.view("uint8") if as_bytes else b, root)
        return bufs

    def _check_home_(self):
        from .._backend import backend_module

        return backend_module("cupy").namespace(), None  # the current device

    def _barrier_(self):
        self._nccl.barrier()

    def abort(self, code=1):
        stop = getattr(getattr(self._nccl, "_comm", None), "abort", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        os._exit(code)
