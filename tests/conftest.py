"""Shared fixtures: the same tests run on every backend.

``backend`` parametrises over NumPy, array-api-strict on its default device,
array-api-strict on ``Device("device1")`` (the stand-in for a GPU: arrays
there refuse conversion to NumPy and mixing with other devices) and CuPy when
a CUDA device is usable.  Use ``backend.asarray(...)`` to make inputs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# Keep hypothesis quick and deterministic in CI.
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=15, deadline=None)
settings.load_profile(os.environ.get("GPUAD_HYPOTHESIS_PROFILE", "ci"))


class Backend:
    """A backend under test: its name, namespace and the device to create arrays on."""

    def __init__(self, name, xp, device=None):
        self.name = name
        self.xp = xp
        self.device = device

    def asarray(self, obj, dtype="float64"):
        """An array of this backend from nested lists / NumPy data (dtype None keeps it)."""
        arr = np.asarray(obj)
        if dtype is not None:
            arr = arr.astype(dtype)
        kw = {"device": self.device} if self.device is not None else {}
        return self.xp.asarray(arr, **kw)

    def to_numpy(self, x):
        """Host copy for assertions (device1 arrays are moved to the CPU device first)."""
        if self.name == "array_api_strict_device1":
            x = x.to_device(self.xp.Device("CPU_DEVICE"))
        if self.name == "cupy":
            return x.get()
        return np.asarray(x)

    def __repr__(self):
        return self.name


def _backends():
    out = [pytest.param("numpy", id="numpy"), pytest.param("array_api_strict", id="strict"),
           pytest.param("array_api_strict_device1", id="strict-device1")]
    from gpuad.backends import cupy as cupy_backend

    ok, reason = cupy_backend.probe()
    out.append(pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu] + ([] if ok else [
        pytest.mark.skip(reason=f"CuPy backend not usable: {reason}")])))
    return out


def make_backend(name):
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Backend(name, xp)
    if name == "array_api_strict":
        import array_api_strict as xp

        return Backend(name, xp)
    if name == "array_api_strict_device1":
        import array_api_strict as xp

        return Backend(name, xp, xp.Device("device1"))
    if name == "cupy":
        import array_api_compat.cupy as xp

        return Backend(name, xp)
    raise ValueError(name)


@pytest.fixture(params=_backends())
def backend(request):
    return make_backend(request.param)


@pytest.fixture(params=[pytest.param("numpy", id="numpy"), pytest.param("array_api_strict", id="strict")])
def cpu_backend(request):
    """NumPy and array-api-strict only: for the hypothesis-driven checker runs."""
    return make_backend(request.param)
