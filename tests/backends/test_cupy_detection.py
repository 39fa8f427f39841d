"""CuPy detection without a GPU: fake ``cupy`` modules for each way it can fail.

The real-hardware path is covered by the ``gpu``-marked tests on a CUDA
runner; here ``sys.modules["cupy"]`` is replaced (through ``monkeypatch``) by
modules that fail the way a real install does on a machine without a driver,
without a device, or without a working compiler.
"""

from __future__ import annotations

import sys
import types

import pytest

import gpuad
from gpuad import _backend
from gpuad.backends import cupy as cupy_backend


class CUDARuntimeError(RuntimeError):
    """Stand-in for ``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""


class CompileException(Exception):
    """Stand-in for ``cupy.cuda.compiler.CompileException`` (multi-line message)."""


class _FakeDeviceArray:
    def __init__(self, v):
        self.v = v

    def __getitem__(self, i):
        return _FakeDeviceArray(self.v[i])

    def __eq__(self, other):
        return _FakeDeviceArray(self.v == other)

    def get(self):
        return self.v


def make_fake_cupy(device_count=1, count_error=None, smoke_error=None, smoke_result=6.0):
    """A module that looks enough like cupy for ``backends/cupy.py``'s probe."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "99.0.0-fake"
    cupy.float32 = "float32"
    calls = {"getDeviceCount": 0}

    def getDeviceCount():
        calls["getDeviceCount"] += 1
        if count_error is not None:
            raise count_error
        return device_count

    def getDeviceProperties(i):
        return {"name": b"Fake GPU", "totalGlobalMem": 16 * 2**30}

    def memGetInfo():
        return 8 * 2**30, 16 * 2**30

    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=getDeviceCount, getDeviceProperties=getDeviceProperties, memGetInfo=memGetInfo,
            getDevice=lambda: calls["device"],
        )
    )
    cupy.arange = lambda n, dtype=None: list(range(n))

    def ElementwiseKernel(in_params, out_params, body, name):
        def launch(x):
            calls["launched_on"].append(calls["device"])  # a launch opens a context on the current device
            if smoke_error is not None:
                raise smoke_error
            return _FakeDeviceArray([smoke_result if i == 3 else 2.0 * i for i in range(len(x))])

        return launch

    cupy.ElementwiseKernel = ElementwiseKernel

    class _Pool:
        """CuPy's pool API: the limit is in bytes, 0 meaning none; a fraction is of 16 GiB."""

        def __init__(self):
            self.limit, self.set_calls = 0, []

        def used_bytes(self):
            return 0

        def total_bytes(self):
            return 0

        def get_limit(self):
            return self.limit

        def set_limit(self, size=None, fraction=None):
            self.set_calls.append((calls["device"], size, fraction))
            self.limit = size if size is not None else int(fraction * 16 * 2**30)

    pool = _Pool()
    calls["device"] = 0
    calls["launched_on"], calls["used"] = [], []

    class Device:
        def __init__(self, i):
            self.i = i

        def use(self):
            calls["used"].append(self.i)
            calls["device"] = self.i

    cupy.cuda.Device = Device
    cupy.get_default_memory_pool = lambda: pool
    cupy._calls = calls
    return cupy


#: What launchers set to a process's index on its machine (torchrun, Open MPI, MPICH, MVAPICH, PMI, PALS, Slurm).
LAUNCHER_LOCAL_RANK_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                            "PMI_LOCAL_RANK", "PALS_LOCAL_RANKID", "SLURM_LOCALID")


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Forget the cached probe and backend choice; both are restored afterwards."""
    monkeypatch.setattr(cupy_backend, "_probe_result", None)
    monkeypatch.setattr(cupy_backend, "_limit_applied", False)
    monkeypatch.setattr(_backend, "_choice", None)
    monkeypatch.delenv("GPUAD_BACKEND", raising=False)
    monkeypatch.delenv("GPUAD_GPU_MEMORY_LIMIT", raising=False)
    for name in LAUNCHER_LOCAL_RANK_VARS:  # as a process outside any launcher
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def fake_cupy(monkeypatch):
    """``fake_cupy(**kw)`` installs ``make_fake_cupy(**kw)`` as ``sys.modules["cupy"]``."""

    def install(**kw):
        mod = make_fake_cupy(**kw)
        monkeypatch.setitem(sys.modules, "cupy", mod)
        return mod

    return install


NO_DRIVER = CUDARuntimeError(
    "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
NO_DEVICE = CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
NVRTC = CompileException("nvrtc: error: invalid value for --gpu-architecture (-arch)\n\n1 error detected")


def test_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    ok, reason = cupy_backend.probe()
    assert not ok
    assert "not installed" in reason and "gpuad[cuda12]" in reason
    assert cupy_backend.version() is None
    assert cupy_backend.devices() == []
    assert cupy_backend.memory_stats() == {}


def test_import_fails(monkeypatch, tmp_path):
    # A cupy that is installed but cannot load its CUDA libraries.
    pkg = tmp_path / "cupy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "raise ImportError('libcudart.so.12: cannot open shared object file: No such file or directory')\n"
    )
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    ok, reason = cupy_backend.probe()
    assert not ok
    assert "failed to import" in reason and "libcudart.so.12" in reason
    assert cupy_backend.version() is None


def test_module_without_spec(monkeypatch):
    # importlib.util.find_spec raises ValueError for a sys.modules entry without __spec__.
    fake = make_fake_cupy(count_error=NO_DRIVER)
    assert fake.__spec__ is None
    monkeypatch.setitem(sys.modules, "cupy", fake)
    ok, reason = cupy_backend.probe()
    assert not ok and "getDeviceCount" in reason


@pytest.mark.parametrize(
    "err,expect",
    [(NO_DRIVER, "cudaErrorInsufficientDriver"), (NO_DEVICE, "cudaErrorNoDevice")],
    ids=["no-driver", "no-device"],
)
def test_device_count_raises(fake_cupy, err, expect):
    fake = fake_cupy(count_error=err)
    ok, reason = cupy_backend.probe()
    assert ok is False
    assert "no usable CUDA device" in reason
    assert "CUDARuntimeError" in reason and expect in reason
    # cached: the driver is not asked again
    assert cupy_backend.probe() == (ok, reason)
    assert fake._calls["getDeviceCount"] == 1
    assert cupy_backend.devices() == []
    assert cupy_backend.memory_stats() == {}
    with pytest.raises(RuntimeError, match="not usable"):
        cupy_backend.namespace()


def test_zero_devices(fake_cupy):
    fake_cupy(device_count=0)
    ok, reason = cupy_backend.probe()
    assert not ok and "returned 0" in reason


def test_smoke_launch_raises(fake_cupy):
    fake_cupy(smoke_error=NVRTC)
    ok, reason = cupy_backend.probe()
    assert not ok
    assert "smoke launch failed" in reason and "CompileException" in reason and "gpu-architecture" in reason
    assert "\n" not in reason  # one line, for `gpuad info` and error messages


def test_smoke_launch_wrong_result(fake_cupy):
    fake_cupy(smoke_result=0.0)
    ok, reason = cupy_backend.probe()
    assert not ok and "wrong result" in reason


def test_working_fake_is_usable(fake_cupy):
    fake_cupy(device_count=2)
    ok, reason = cupy_backend.probe()
    assert ok, reason
    assert "2 CUDA device(s)" in reason and "Fake GPU" in reason
    assert cupy_backend.version() == "99.0.0-fake"
    assert cupy_backend.devices() == ["cuda:0 Fake GPU (16.0 GiB)", "cuda:1 Fake GPU (16.0 GiB)"]
    stats = cupy_backend.memory_stats()
    assert stats["device_total_bytes"] == 16 * 2**30


@pytest.mark.parametrize("var, value, device", [
    ("LOCAL_RANK", "1", 1),                       # torchrun
    ("OMPI_COMM_WORLD_LOCAL_RANK", "2", 2),       # Open MPI
    ("MPI_LOCALRANKID", "5", 1),                  # MPICH's Hydra; 5 modulo 4 devices
])
def test_probe_runs_on_the_local_rank_device_not_device_0(fake_cupy, monkeypatch, var, value, device):
    # NOTE [probe device]: under a launcher, every rank would otherwise open a context on GPU 0 first
    fake = fake_cupy(device_count=4)
    monkeypatch.setenv(var, value)
    ok, reason = cupy_backend.probe()
    assert ok, reason
    assert fake._calls["used"] == [device] and fake._calls["launched_on"] == [device]
    assert f"device {device}: Fake GPU" in reason
    assert cupy_backend.device_count() == 4 and fake._calls["used"] == [device]  # probed once


def test_probe_without_a_launcher_uses_the_current_device(fake_cupy):
    fake = fake_cupy(device_count=2)
    ok, reason = cupy_backend.probe()
    assert ok and fake._calls["used"] == [] and fake._calls["launched_on"] == [0]
    assert "device 0: Fake GPU" in reason


def test_device_key_of_an_unhashable_device():
    class Device:  # as cupy.cuda.Device in CuPy 14: __eq__ but no __hash__
        def __init__(self, i):
            self.id = i

        def __eq__(self, other):
            return isinstance(other, Device) and other.id == self.id

    with pytest.raises(TypeError):
        hash(Device(1))
    assert cupy_backend.device_key(Device(1)) == ("cuda", 1)
    assert hash(cupy_backend.device_key(Device(1))) == hash(cupy_backend.device_key(Device(1)))


def test_install_hints_follow_the_installed_wheel(monkeypatch):
    from gpuad.backends import cupy_env

    for dist, extra, nccl in [("cupy-cuda13x", ("cuda13", "cupy-cuda13x"), "pip install nvidia-nccl-cu13"),
                              ("cupy-cuda12x", ("cuda12", "cupy-cuda12x"), "pip install nvidia-nccl-cu12"),
                              (None, None, "nvidia-nccl-cu12 (CUDA 12) or nvidia-nccl-cu13 (CUDA 13)")]:
        monkeypatch.setattr(cupy_env, "_distribution", lambda d=dist: d)
        assert cupy_backend.install_extra() == extra
        assert nccl in cupy_backend.nccl_install_hint()


@pytest.mark.parametrize("available", [True, False])
def test_nccl_available(fake_cupy, monkeypatch, available):
    # CuPy's wheels do not bundle NCCL; cupy.cuda.nccl.available says whether it loaded
    fake = fake_cupy()
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.available = available
    fake.cuda.nccl = nccl
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake.cuda)
    ok, why = cupy_backend.nccl_available()
    assert ok is available
    assert available or "nvidia-nccl-cu" in why


def test_probe_never_raises(fake_cupy):
    fake = fake_cupy()
    del fake.cuda  # something unforeseen: an AttributeError deep inside
    ok, reason = cupy_backend.probe()
    assert not ok and reason


@pytest.mark.parametrize("err", [NO_DRIVER, NVRTC], ids=["no-driver", "smoke"])
def test_auto_falls_back_to_numpy(fake_cupy, monkeypatch, err):
    if err is NVRTC:
        fake_cupy(smoke_error=err)
    else:
        fake_cupy(count_error=err)
    monkeypatch.setenv("GPUAD_BACKEND", "auto")
    choice = gpuad.get_backend()
    _, reason = cupy_backend.probe()
    assert choice.name == "numpy"
    assert choice.requested == "auto"
    assert choice.fallbacks == {"cupy": reason}
    assert reason in choice.reason and "NumPy" in choice.reason


@pytest.mark.parametrize("err", [NO_DRIVER, NVRTC], ids=["no-driver", "smoke"])
def test_explicit_cupy_raises_with_reason(fake_cupy, err):
    if err is NVRTC:
        fake_cupy(smoke_error=err)
    else:
        fake_cupy(count_error=err)
    with pytest.raises(RuntimeError) as info:
        gpuad.set_backend("cupy")
    _, reason = cupy_backend.probe()
    assert "'cupy'" in str(info.value) and reason in str(info.value)


def test_env_cupy_raises_with_reason(fake_cupy, monkeypatch):
    fake_cupy(count_error=NO_DRIVER)
    monkeypatch.setenv("GPUAD_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match="cudaErrorInsufficientDriver"):
        gpuad.get_backend()


def test_cli_info_with_broken_cupy(fake_cupy, monkeypatch, capsys):
    from gpuad.cli import main

    fake_cupy(count_error=NO_DRIVER)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backend: numpy" in out and "cudaErrorInsufficientDriver" in out
    assert "cupy: 99.0.0-fake" in out

    monkeypatch.setattr(_backend, "_choice", None)
    assert main(["info", "--backend", "cupy"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert err.startswith("gpuad: error:") and "cudaErrorInsufficientDriver" in err
    assert len(err.splitlines()) == 1


# -- GPUAD_GPU_MEMORY_LIMIT (NOTE [pool limit]) -----------------------------------


@pytest.mark.parametrize("value,limit", [("8GiB", 8 * 2**30), ("512MB", 512 * 10**6), ("25%", 4 * 2**30)])
def test_pool_limit_from_env(fake_cupy, monkeypatch, value, limit):
    fake = fake_cupy()
    monkeypatch.setenv("GPUAD_GPU_MEMORY_LIMIT", value)
    assert cupy_backend.memory_stats()["pool_limit_bytes"] == limit
    cupy_backend.memory_stats()
    pool = fake.get_default_memory_pool()
    assert pool.set_calls == [(0, limit, None) if "%" not in value else (0, None, 0.25)]  # applied once


def test_no_limit_leaves_pool_alone(fake_cupy):
    fake = fake_cupy()
    stats = cupy_backend.memory_stats()
    assert "pool_limit_bytes" not in stats and stats["pool_used_bytes"] == 0
    assert fake.get_default_memory_pool().set_calls == []


def test_pool_limit_garbage_is_an_error(fake_cupy, monkeypatch):
    fake_cupy()
    monkeypatch.setenv("GPUAD_GPU_MEMORY_LIMIT", "8 gigs")
    for call in (cupy_backend.namespace, cupy_backend.memory_stats):
        with pytest.raises(ValueError, match=r"GPUAD_GPU_MEMORY_LIMIT='8 gigs' is not a memory limit"):
            call()


def test_use_device_applies_limit_to_that_device(fake_cupy, monkeypatch):
    fake = fake_cupy(device_count=2)
    monkeypatch.setenv("GPUAD_GPU_MEMORY_LIMIT", "1GiB")
    cupy_backend.use_device(1)
    assert fake.get_default_memory_pool().set_calls == [(1, 2**30, None)]


def test_cli_info_shows_pool_limit(fake_cupy, monkeypatch, capsys):
    from gpuad.cli import main

    fake_cupy()
    monkeypatch.setenv("GPUAD_GPU_MEMORY_LIMIT", "8GiB")
    assert main(["info", "--backend", "cupy"]) == 0
    out = capsys.readouterr().out
    assert "pool_limit_bytes=8589934592" in out and "GPUAD_GPU_MEMORY_LIMIT=8GiB" in out

    monkeypatch.setattr(cupy_backend, "_limit_applied", False)
    monkeypatch.setenv("GPUAD_GPU_MEMORY_LIMIT", "lots")
    assert main(["info", "--backend", "cupy"]) == 0
    out = capsys.readouterr().out
    assert "memory: error=ValueError: GPUAD_GPU_MEMORY_LIMIT='lots' is not a memory limit" in out


# -- out of memory ----------------------------------------------------------------


def test_is_out_of_memory_never_imports_cupy(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    assert cupy_backend.is_out_of_memory(MemoryError("x")) is False
    assert "cupy" not in sys.modules


def test_is_out_of_memory_recognises_cupys_class(fake_cupy):
    class OutOfMemoryError(MemoryError):
        def __init__(self, size, total, limit=0):
            super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")

    fake = fake_cupy()
    assert cupy_backend.is_out_of_memory(OutOfMemoryError(1024, 0)) is False  # no cupy.cuda.memory
    fake.cuda.memory = types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError)
    assert cupy_backend.is_out_of_memory(OutOfMemoryError(1024, 0)) is True
    assert cupy_backend.is_out_of_memory(MemoryError("host")) is False
    assert cupy_backend.is_out_of_memory(ValueError("x")) is False
