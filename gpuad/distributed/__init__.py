"""Data-parallel training across processes and machines: MPI (mpi4py) and NCCL (cupyx).

A *communicator* has ``rank``, ``size``, ``allreduce_mean(tree)``,
``allreduce_sum(tree)``, ``broadcast(tree, root=0)`` and ``barrier()``.
:func:`init` picks one from the environment, so the same script runs under
``mpiexec``, under an NCCL launch, or alone::

    from gpuad import distributed

    comm = distributed.init()                  # MPI, NCCL or a single process
    params = comm.broadcast(params)            # rank 0's initialisation everywhere
    lo, hi = comm.shard(batch_size)            # this rank's part of each batch
    loss, grads = gpuad.value_and_grad(loss_fn)(params, x[lo:hi], y[lo:hi])
    grads = comm.allreduce_mean(grads)         # a few flat buckets, one call each

Gradients are packed by dtype into flat buckets (25 MB by default; a bucket
boundary may split a parameter), each reduced by one collective, in place.
The bucket plan is made once per structure, shapes and dtypes; a structure
seen again is flattened and rebuilt by functions compiled for it, and NumPy
buckets are kept and reused while no result refers to them.  Every collective
checks that the ranks passed the same kind of tree with a few check words in
its first bucket (NOTE [check words] in ``_check.py``): a mismatch is a
:class:`DistributedError`, never a hang or silently mixed leaves.  On the GPU
the buckets stay on the device (NCCL, or a CUDA-aware MPI).

Importing this module imports neither mpi4py nor CuPy; the communicators
import them when they are made.
"""

from __future__ import annotations

import math
import os

from ._buckets import BucketPlan
from ._comm import (
    DEFAULT_BUCKET_MB, CollectiveTimeout, Communicator, DistributedError, SingleProcessCommunicator,
    default_timeout,
)
from ._local import LocalCommunicator, local_group, run_local
from ._mpi import MPICommunicator
from ._nccl import NCCLCommunicator

__all__ = [
    "init", "current", "detect", "Launch", "check_available", "Communicator", "SingleProcessCommunicator",
    "MPICommunicator", "NCCLCommunicator", "LocalCommunicator", "local_group", "run_local", "BucketPlan",
    "DistributedError", "CollectiveTimeout", "DEFAULT_BUCKET_MB", "default_timeout",
]

#: Environment variables that launchers set, in the order they are read.
MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PALS_SIZE")
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "PALS_RANKID")
MPI_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                       "PALS_LOCAL_RANKID")
#: ``GPUAD_DISTRIBUTED`` values: how :func:`init` is told explicitly.
KINDS = ("auto", "mpi", "nccl", "none")


class Launch:
    """What the environment says about this process's place in a job.

    Attributes
    ----------
    kind : {"mpi", "nccl", "none"}
    rank, size, local_rank : int or None
        From the launcher's variables (MPI reads them itself, so they may be None).
    host, port : str or None
        NCCL's rendezvous store.
    reason : str
        Which variables decided, for the log.
    """

    def __init__(self, kind, reason, rank=None, size=None, local_rank=None, host=None, port=None):
        self.kind, self.reason = kind, reason
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.host, self.port = host, port

    def __repr__(self):
        return f"Launch({self.kind!r}, rank={self.rank}, size={self.size}, reason={self.reason!r})"


def _first(env, names):
    for n in names:
        v = env.get(n)
        if v is not None and v.strip():
            return n, v.strip()
    return None, None


def _int(env, names, what):
    name, v = _first(env, names)
    if name is None:
        return None, None
    try:
        return name, int(v)
    except ValueError:
        raise DistributedError(f"{name}={v!r}: {what} must be an integer") from None


def detect(backend=None, environ=None):
    """Decide which communicator :func:`init` makes, from ``backend`` and the environment.

    Parameters
    ----------
    backend : {"auto", "mpi", "nccl", "none"}, optional
        Default: ``GPUAD_DISTRIBUTED`` or ``"auto"``.
    environ : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    Launch

    Notes
    -----
    ``auto`` chooses, in order: NCCL when torchrun-style variables describe
    more than one process (``WORLD_SIZE`` > 1 and ``RANK``); MPI under an MPI
    launcher (``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``, ``PMIX_RANK``,
    ``MPI_LOCALRANKID``, ...); else a single process.  ``nccl`` under
    ``mpiexec`` takes the rank and size from the MPI launcher's variables.
    """
    env = os.environ if environ is None else environ
    kind = (backend or env.get("GPUAD_DISTRIBUTED") or "auto").strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown distributed backend {kind!r}: expected one of {', '.join(KINDS)} "
                         "(from GPUAD_DISTRIBUTED or init(backend=...))")
    src = "requested" if kind != "auto" else "auto"
    nccl_size = _int(env, ("WORLD_SIZE",), "WORLD_SIZE")
    nccl_rank = _int(env, ("RANK",), "RANK")
    mpi_size = _int(env, MPI_SIZE_VARS, "the MPI world size")
    mpi_rank = _int(env, MPI_RANK_VARS, "the MPI rank")
    under_mpi = (mpi_size[1] or 0) > 1 or mpi_rank[0] is not None or _first(env, ("MPI_LOCALRANKID",))[0]
    if kind == "auto":
        if (nccl_size[1] or 0) > 1 and nccl_rank[0] is not None:
            kind = "nccl"
        elif under_mpi:
            kind = "mpi"
        else:
            return Launch("none", "auto: no MPI or NCCL launcher variables; one process", 0, 1, 0)
    if kind == "none":
        return Launch("none", "requested: one process", 0, 1, 0)
    if kind == "mpi":
        why = f"{mpi_size[0] or mpi_rank[0] or 'MPI_LOCALRANKID'} is set" if under_mpi else "no launcher variables"
        return Launch("mpi", f"{src}: MPI ({why})", mpi_rank[1], mpi_size[1],
                      _int(env, MPI_LOCAL_RANK_VARS, "the local rank")[1])
    # nccl: rank and size from torchrun-style variables, else from the MPI launcher
    if nccl_size[0] is not None and nccl_rank[0] is not None:
        rank, size, local = nccl_rank[1], nccl_size[1], _int(env, ("LOCAL_RANK",), "LOCAL_RANK")[1]
        why = "RANK and WORLD_SIZE are set"
    elif mpi_size[0] is not None and mpi_rank[0] is not None:
        rank, size = mpi_rank[1], mpi_size[1]
        local = _int(env, MPI_LOCAL_RANK_VARS, "the local rank")[1]
        why = f"rank and size from {mpi_rank[0]} and {mpi_size[0]}"
    else:
        raise DistributedError("NCCL was requested but neither RANK and WORLD_SIZE nor an MPI launcher's "
                               "variables say this process's rank and the number of processes")
    host = _first(env, ("CUPYX_DISTRIBUTED_HOST", "MASTER_ADDR"))[1]
    port = _first(env, ("CUPYX_DISTRIBUTED_PORT", "MASTER_PORT"))[1]
    return Launch("nccl", f"{src}: NCCL ({why})", rank, size, local, host, port)


def check_available(backend=None, environ=None):
    """Raise :class:`gpuad.data.MissingDependency` when the detected transport's package is absent.

    For NCCL the hint names the extra of the installed CuPy wheel's CUDA
    major (``cupy-cuda13x``: ``gpuad[cuda13]``), or both extras when no
    CuPy wheel is installed.
    """
    from .._backend import backend_module
    from ..data import MissingDependency, require

    launch = detect(backend, environ)
    if launch.kind == "mpi":
        require("mpi4py", extra="distributed")
    elif launch.kind == "nccl":
        extra = backend_module("cupy").install_extra()
        if extra is not None:
            require("cupyx.distributed", extra=extra[0], package=extra[1])
        else:
            try:
                require("cupyx.distributed", extra="cuda12", package="cupy")
            except MissingDependency:
                raise MissingDependency(
                    "the optional dependency 'cupy' is not installed; install it with: pip install "
                    "'gpuad[cuda12]' (CUDA 12) or 'gpuad[cuda13]' (CUDA 13), as the driver supports") from None
    return launch


_current = None


def init(backend=None, *, bucket_mb=None, timeout="default", environ=None):
    """Make the communicator this environment calls for, and remember it as :func:`current`.

    Parameters
    ----------
    backend : {"auto", "mpi", "nccl", "none"}, optional
        Default: ``GPUAD_DISTRIBUTED`` or ``"auto"`` (see :func:`detect`).
    bucket_mb : float, optional
        Gradient bucket size in megabytes (default 25; ``GPUAD_BUCKET_MB``).
    timeout : float or None, optional
        Seconds a collective may block before the job is aborted with a
        message (default ``GPUAD_DIST_TIMEOUT`` or 600; None: no limit).
    environ : mapping, optional

    Returns
    -------
    Communicator
        On the CuPy backend each process first makes GPU ``local_rank`` its
        current device (MPI and NCCL alike).  Calling ``init`` again returns
        the communicator already made.
    """
    global _current
    if _current is not None:
        return _current
    env = os.environ if environ is None else environ
    if bucket_mb is None and env.get("GPUAD_BUCKET_MB"):
        try:
            bucket_mb = float(env["GPUAD_BUCKET_MB"])
        except ValueError:
            raise ValueError(f"GPUAD_BUCKET_MB={env['GPUAD_BUCKET_MB']!r}: the bucket size must be a number of "
                             "megabytes") from None
        if not (bucket_mb > 0 and math.isfinite(bucket_mb)):
            raise ValueError(f"GPUAD_BUCKET_MB={env['GPUAD_BUCKET_MB']!r}: the bucket size must be a positive "
                             "finite number of megabytes")
    launch = detect(backend, env)
    if launch.kind == "none":
        comm = SingleProcessCommunicator(bucket_mb=bucket_mb)
    elif launch.kind == "mpi":
        comm = MPICommunicator(bucket_mb=bucket_mb, timeout=timeout)
        _use_gpu(comm.local_rank)
    else:
        from .._backend import get_backend

        if get_backend().name != "cupy":
            raise DistributedError(f"NCCL needs the cupy backend, but the default backend is "
                                   f"{get_backend().name!r} (GPUAD_BACKEND=cupy, or use MPI)")
        comm = NCCLCommunicator(launch.rank, launch.size, local_rank=launch.local_rank, host=launch.host,
                                port=launch.port, bucket_mb=bucket_mb, timeout=timeout)
    comm.launch = launch
    _current = comm
    return comm


def _use_gpu(local_rank):
    """One GPU per process: device ``local_rank`` (modulo the count) when the backend is CuPy."""
    from .._backend import backend_module, get_backend

    if get_backend().name == "cupy":
        mod = backend_module("cupy")
        mod.use_device(local_rank % max(1, mod.device_count()))


def current():
    """The communicator :func:`init` made, or a single-process one before that."""
    return _current if _current is not None else SingleProcessCommunicator()
