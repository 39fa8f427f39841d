"""Choosing the default backend, and dispatch on the inputs' library and device."""

from __future__ import annotations

import numpy as np
import pytest

import gpuad
from gpuad import _backend, xp
from gpuad.backends import cupy as cupy_backend


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    """Each test starts with no backend chosen; the previous choice is restored afterwards."""
    monkeypatch.setattr(_backend, "_choice", None)
    monkeypatch.delenv("GPUAD_BACKEND", raising=False)
    yield


def _strict():
    import array_api_strict

    return array_api_strict


def test_env_numpy(monkeypatch):
    monkeypatch.setenv("GPUAD_BACKEND", "numpy")
    choice = gpuad.get_backend()
    assert choice.name == "numpy"
    assert choice.requested == "numpy"
    assert "requested explicitly" in choice.reason
    assert isinstance(xp.zeros(3), np.ndarray)


def test_env_array_api_strict(monkeypatch):
    monkeypatch.setenv("GPUAD_BACKEND", "array_api_strict")
    choice = gpuad.get_backend()
    assert choice.name == "array_api_strict"
    z = xp.zeros(3)
    assert type(z).__module__.startswith("array_api_strict")
    assert z.shape == (3,)


@pytest.mark.parametrize("spelling", ["Array-API-Strict", " array_api_strict "])
def test_env_name_is_normalised(monkeypatch, spelling):
    monkeypatch.setenv("GPUAD_BACKEND", spelling)
    assert gpuad.get_backend().name == "array_api_strict"


def test_env_auto(monkeypatch):
    monkeypatch.setenv("GPUAD_BACKEND", "auto")
    choice = gpuad.get_backend()
    assert choice.requested == "auto"
    assert choice.reason.startswith("auto:")
    ok, why = cupy_backend.probe()
    if ok:
        assert choice.name == "cupy"
    else:
        assert choice.name == "numpy"
        assert choice.fallbacks == {"cupy": why}
        assert why in choice.reason


def test_unset_env_means_auto():
    assert gpuad.get_backend().requested == "auto"


def test_env_unknown_names_valid_options(monkeypatch):
    monkeypatch.setenv("GPUAD_BACKEND", "tensorflow")
    with pytest.raises(ValueError) as info:
        gpuad.get_backend()
    msg = str(info.value)
    assert "tensorflow" in msg
    for name in ("auto", "numpy", "cupy", "array_api_strict"):
        assert repr(name) in msg


def test_set_backend_unknown():
    with pytest.raises(ValueError, match="expected one of"):
        gpuad.set_backend("torch")


def test_set_backend_overrides_env(monkeypatch):
    monkeypatch.setenv("GPUAD_BACKEND", "numpy")
    choice = gpuad.set_backend("array_api_strict")
    assert choice is gpuad.get_backend()
    assert choice.name == "array_api_strict"
    assert type(xp.ones((2, 2))).__module__.startswith("array_api_strict")
    gpuad.set_backend("numpy")
    assert isinstance(xp.ones((2, 2)), np.ndarray)


def test_backend_choice_namespace():
    assert gpuad.set_backend("numpy").namespace.__name__ == "array_api_compat.numpy"
    assert gpuad.set_backend("array_api_strict").namespace.__name__ == "array_api_strict"


def test_default_backend_does_not_decide_for_array_inputs():
    gpuad.set_backend("array_api_strict")
    y = xp.sin(np.asarray([0.0, 1.0]))
    assert isinstance(y, np.ndarray)


def test_mixing_libraries_names_both():
    a = np.asarray([1.0, 2.0])
    b = _strict().asarray([1.0, 2.0])
    with pytest.raises(TypeError) as info:
        xp.add(a, b)
    msg = str(info.value)
    assert "numpy" in msg and "array_api_strict" in msg


def test_mixing_libraries_under_grad():
    a = np.asarray([1.0, 2.0])
    b = _strict().asarray([1.0, 2.0])
    with pytest.raises(TypeError, match="array_api_strict"):
        gpuad.grad(lambda x: xp.sum(x * b))(a)


def test_mixing_devices_names_both():
    s = _strict()
    a = s.asarray([1.0, 2.0], device=s.Device("CPU_DEVICE"))
    b = s.asarray([1.0, 2.0], device=s.Device("device1"))
    with pytest.raises(ValueError) as info:
        xp.multiply(a, b)
    msg = str(info.value)
    assert "CPU_DEVICE" in msg and "device1" in msg


def test_mixing_devices_under_grad():
    s = _strict()
    a = s.asarray([1.0, 2.0], device=s.Device("CPU_DEVICE"))
    b = s.asarray([1.0, 2.0], device=s.Device("device1"))
    with pytest.raises(ValueError, match="device1"):
        gpuad.grad(lambda x: xp.sum(x * b))(a)


def test_scalars_do_not_pick_a_library():
    gpuad.set_backend("array_api_strict")
    y = xp.multiply(np.asarray([1.0, 2.0]), 3.0)
    assert isinstance(y, np.ndarray)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict", "cupy"])
def test_backend_module_interface(name):
    mod = _backend.backend_module(name)
    for fn in ("probe", "namespace", "owns", "register_overrides", "devices", "memory_stats", "version"):
        assert callable(getattr(mod, fn)), fn
    ok, reason = mod.probe()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    assert isinstance(mod.devices(), list)
    assert isinstance(mod.memory_stats(), dict)
    if ok:
        assert mod.devices()
        assert mod.owns(mod.namespace())


def test_numpy_index_add_override_accumulates_repeats():
    # backends/numpy.py overrides the index_add primitive with np.add.at.
    import array_api_compat.numpy as npx

    from gpuad._registry import PRIMITIVES

    if "index_add" not in PRIMITIVES:
        pytest.skip("index_add primitive not registered")
    _backend._attach_backend(npx)
    impl = PRIMITIVES["index_add"].impls.get(npx)
    assert impl is not None
    out = impl(npx, np.zeros(3), np.asarray([1.0, 2.0, 4.0]), key=np.asarray([0, 0, 2]))
    assert out.tolist() == [3.0, 0.0, 4.0]


def test_numpy_device_creates_on_numpy_whatever_the_default(monkeypatch):
    """``device="cpu"`` (NumPy's) picks NumPy even when the default is another backend (CuPy on a GPU machine)."""
    from gpuad import ops, optim

    monkeypatch.setenv("GPUAD_BACKEND", "array_api_strict")
    assert gpuad.get_backend().name == "array_api_strict"
    assert isinstance(ops.zeros((), dtype="int32", device=np.zeros(1).device), np.ndarray)
    state = optim.adam(0.1).init({"w": np.zeros(2)})  # its step counter: ops.zeros(device=leaf.device)
    assert all(isinstance(leaf, (np.ndarray, np.generic)) for leaf in gpuad.tree_leaves(state))
    assert type(xp.zeros(3)).__module__.startswith("array_api_strict")  # no device: still the default
