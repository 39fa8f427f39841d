"""MPI through mpi4py: NumPy arrays anywhere, CuPy arrays with a CUDA-aware MPI.

Buckets go through mpi4py's buffer-protocol collectives (``Allreduce`` with
``MPI.IN_PLACE``, ``Bcast``): no pickling of array data.  CuPy buckets are
passed as device buffers (``__cuda_array_interface__``) after the backend's
``comm_buffer`` has synchronised the stream; they never visit the host.  A
backend without ``comm_buffer`` (array-api-strict, a CPU test library) is
staged through NumPy with its ``to_numpy``/``from_numpy``.
"""

from __future__ import annotations

import os
import sys
import threading

from ._comm import Communicator, DistributedError

__all__ = ["MPICommunicator", "import_mpi", "cuda_aware"]


def import_mpi():
    """``mpi4py.MPI``, or :class:`gpuad.data.MissingDependency` naming the extra."""
    from ..data import require

    return require("mpi4py.MPI", extra="distributed", package="mpi4py")


def cuda_aware(MPI):
    """Whether this MPI library can take CUDA device buffers: True, False or None (unknown).

    ``GPUAD_MPI_CUDA_AWARE=1`` or ``0`` decides; otherwise the library is
    asked through ``MPIX_Query_cuda_support`` (MPICH >= 4, Open MPI).
    """
    env = os.environ.get("GPUAD_MPI_CUDA_AWARE", "").strip()
    if env:
        return env not in ("0", "false", "no")
    try:
        import ctypes

        fn = ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support
        fn.restype = ctypes.c_int
        return bool(fn())
    except (OSError, AttributeError):
        return None


class MPICommunicator(Communicator):
    """A :class:`Communicator` over an mpi4py communicator (default ``COMM_WORLD``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
    bucket_mb, timeout
        See :class:`Communicator`.  When a collective overruns ``timeout``,
        a watchdog thread prints which one and calls ``MPI_Abort``.
    abort_on_error : bool
        With more than one process, an uncaught exception on any rank prints
        its traceback and calls ``MPI_Abort``, so the other ranks stop at
        once instead of waiting in their next collective (default True).
    """

    backend = "mpi"

    def __init__(self, comm=None, *, bucket_mb=None, timeout="default", abort_on_error=True):
        MPI = import_mpi()
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        node = self._comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            local_rank = node.Get_rank()
        finally:
            node.Free()
        super().__init__(self._comm.Get_rank(), self._comm.Get_size(), local_rank=local_rank,
                         bucket_mb=bucket_mb, timeout=timeout)
        self._cuda_checked = False
        self._in_place, self._sum = MPI.IN_PLACE, MPI.SUM
        self._transport_errors_ = (MPI.Exception,)  # e.g. "Message truncated": buckets of different sizes
        if abort_on_error and self.size > 1:
            self._install_excepthook()

    @property
    def mpi_comm(self):
        """The underlying ``mpi4py.MPI.Comm``."""
        return self._comm

    def _install_excepthook(self):
        previous = sys.excepthook

        def hook(etype, value, tb):
            previous(etype, value, tb)
            sys.stderr.write(f"gpuad.distributed: rank {self.rank} of {self.size}: uncaught {etype.__name__}; "
                             "calling MPI_Abort so that the other ranks stop instead of waiting\n")
            self.abort(1)

        sys.excepthook = hook

    def abort(self, code=1):
        sys.stderr.flush()
        # MPI_Abort ends the whole job through the launcher; should it not
        # return promptly, the process ends anyway.
        threading.Timer(10.0, os._exit, (code,)).start()
        try:
            self._comm.Abort(code)
        finally:
            os._exit(code)

    # --- buffers -----------------------------------------------------------------------
    def _buffer(self, mod, x):
        fn = getattr(mod, "comm_buffer", None)
        if fn is None:
            return None
        if mod.NAME == "cupy" and not self._cuda_checked:
            aware = cuda_aware(self._MPI)
            if not aware:
                why = "is not CUDA-aware" if aware is False else "could not be asked whether it is CUDA-aware"
                raise DistributedError(
                    f"MPICommunicator: this MPI library {why}, and gpuad never stages GPU buffers through "
                    "the host: use NCCL (GPUAD_DISTRIBUTED=nccl, see the README, 'Data-parallel training'), "
                    "or a CUDA-aware MPI build (set GPUAD_MPI_CUDA_AWARE=1 if it is one)")
            self._cuda_checked = True
        return fn(x)

    def _sum_(self, group, bufs):
        MPI, mod = self._MPI, group[3]
        out = []
        for b in bufs:
            buf = self._buffer(mod, b)
            if buf is None:  # host staging for CPU-only libraries without a buffer hook
                host = mod.to_numpy(b).copy()
                self._comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
                out.append(mod.from_numpy(host, group[1]))
            else:
                self._comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                out.append(b)
        return out

    def _sum_kept_(self, op, plan, bufs):
        # The kept buckets are NumPy arrays the plan allocated (C-contiguous, writeable): what
        # ``comm_buffer`` checks per call on the general path holds by construction.
        wd = self._arm(op, plan, plan.all_buckets)
        allreduce, in_place, add = self._comm.Allreduce, self._in_place, self._sum
        try:
            allreduce(in_place, bufs[0], op=add)
            self._verify(op, plan, bufs[0])  # NOTE [check words]: before the other buckets
            for k in range(1, len(bufs)):
                allreduce(in_place, bufs[k], op=add)
        except self._MPI.Exception as e:
            raise self._failed(op, plan, plan.all_buckets, e) from e
        finally:
            if wd is not None:
                wd.disarm()

    def _bcast_(self, group, bufs, root):
        mod = group[3]
        out = []
        for b in bufs:
            buf = self._buffer(mod, b)
            if buf is None:
                host = mod.to_numpy(b).copy()
                self._comm.Bcast(host, root=root)
                out.append(mod.from_numpy(host, group[1]))
            else:
                self._comm.Bcast(buf, root=root)
                out.append(b)
        return out

    def _barrier_(self):
        self._comm.Barrier()
