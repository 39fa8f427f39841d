"""What the installation and the launcher say about CuPy, without importing it.

Helpers of :mod:`gpuad.backends.cupy` (which re-exports them): the CUDA
major of the installed CuPy wheel and the install hints that follow from it
(``gpuad[cuda13]``, ``nvidia-nccl-cu13``), and the device a process of a
distributed job will use (NOTE [probe device]).
"""

from __future__ import annotations

__all__ = ["cuda_major", "install_extra", "nccl_install_hint", "LOCAL_RANK_VARS", "local_device"]


def _distribution():
    """The installed CuPy distribution's name (``cupy-cuda13x``), or None; no import."""
    from importlib import metadata

    for dist in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - broken metadata
            continue
    return None


def cuda_major():
    """The CUDA major version of the installed CuPy wheel (``cupy-cuda13x``: 13), or None.

    Read from the package metadata, without importing CuPy; None when CuPy
    is not installed or was built from source (package ``cupy``).
    """
    import re

    m = re.fullmatch(r"cupy-cuda(\d+)x", _distribution() or "")
    return int(m.group(1)) if m else None


def install_extra():
    """``(extra, package)``: gpuad's extra for the installed CuPy wheel's CUDA major, or None when unknown."""
    major = cuda_major()
    return (f"cuda{major}", f"cupy-cuda{major}x") if major in (12, 13) else None


def nccl_install_hint():
    """How to install the NCCL library CuPy loads (the wheel ``nvidia-nccl-cuXX`` of CuPy's CUDA major)."""
    major = cuda_major()
    if major is None:
        return "pip install nvidia-nccl-cu12 (CUDA 12) or nvidia-nccl-cu13 (CUDA 13), matching your CuPy"
    return f"pip install nvidia-nccl-cu{major}"


#: Variables launchers set to a process's index on its machine, in the order they are read
#: (torchrun, Open MPI, MPICH/Hydra, MVAPICH, PMI, PALS, Slurm).
LOCAL_RANK_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                   "PMI_LOCAL_RANK", "PALS_LOCAL_RANKID", "SLURM_LOCALID")


def local_device(n, environ=None):
    """The device a distributed process will use, from its launcher's local rank.

    Parameters
    ----------
    n : int
        Number of devices.
    environ : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    int or None
        The first of :data:`LOCAL_RANK_VARS` that is set, modulo ``n``;
        None outside a launcher (or for a value that is not an integer).

    Notes
    -----
    The probe runs its smoke kernel there (NOTE [probe device] in
    ``backends/cupy.py``).
    """
    import os

    env = os.environ if environ is None else environ
    for name in LOCAL_RANK_VARS:
        v = (env.get(name) or "").strip()
        if v:
            try:
                return int(v) % max(1, n)
            except ValueError:
                return None
    return None
