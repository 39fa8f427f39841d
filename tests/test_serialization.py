"""gpuad.serialization: pytrees of arrays to .npz and back, across backends and devices."""

from __future__ import annotations

import numpy as np
import pytest

from gpuad import nn, optim, random, serialization

strict = pytest.importorskip("array_api_strict")


def _state(backend):
    key = random.key(0, like=backend.asarray(0.0))
    params = {"conv": nn.Conv2d(1, 2, 3).init(key, "float32"), "fc": [nn.Linear(3, 2).init(key, "float64")]}
    opt = optim.adam(1e-3)
    return {"params": params, "opt": opt.init(params), "meta": {"epoch": 3, "name": "x", "none": None},
            "pair": (backend.asarray([1, 2], dtype="int64"), 0.5)}


def _compare(a, b, to_np_a, to_np_b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _compare(a[k], b[k], to_np_a, to_np_b)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _compare(x, y, to_np_a, to_np_b)
    elif hasattr(a, "shape"):
        x, y = to_np_a(a), to_np_b(b)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
    else:
        assert a == b


def test_round_trip_on_each_backend(backend, tmp_path):
    tree = _state(backend)
    path = serialization.save(tmp_path / "s.npz", tree)
    back = serialization.load(path, like=backend.asarray(0.0))
    _compare(tree, back, backend.to_numpy, backend.to_numpy)
    leaf = back["params"]["conv"]["w"]
    assert leaf.device == backend.asarray(0.0).device
    # Plain numpy.load reads the file too, entries named by their path.
    with np.load(path) as z:
        assert "params/conv/w" in z.files and z["params/conv/w"].shape == (2, 1, 3, 3)


def test_numpy_to_strict_device1_and_back(tmp_path):
    import array_api_compat.numpy as xnp

    from conftest import Backend, make_backend

    src = Backend("numpy", xnp)
    tree = _state(src)
    serialization.save(tmp_path / "a.npz", tree)
    dev1 = make_backend("array_api_strict_device1")
    back = serialization.load(tmp_path / "a.npz", backend="array_api_strict", device=dev1.device)
    assert back["opt"]["m"]["conv"]["w"].device == dev1.device
    _compare(tree, back, src.to_numpy, dev1.to_numpy)
    serialization.save(tmp_path / "b.npz", back)  # device1 -> file goes through to_device(CPU)
    again = serialization.load(tmp_path / "b.npz", backend="numpy")
    _compare(tree, again, src.to_numpy, src.to_numpy)


def test_errors(tmp_path):
    with pytest.raises(TypeError, match=r"save: dict keys must be strings without '/', got 1 at a"):
        serialization.save(tmp_path / "x.npz", {"a": {1: np.zeros(2)}})
    with pytest.raises(TypeError, match="save: cannot save a object at b"):
        serialization.save(tmp_path / "x.npz", {"b": object()})
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="was not written by gpuad.serialization.save"):
        serialization.load(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="load: unknown backend 'tpu'"):
        serialization.load(tmp_path / "plain.npz", backend="tpu")


def test_load_onto_an_unusable_backend_says_why(tmp_path, monkeypatch):
    from gpuad._backend import backend_module

    serialization.save(tmp_path / "a.npz", {"w": np.ones(2)})
    # CuPy not installed (or no CUDA device): the reason gpuad.set_backend gives, not a bare ModuleNotFoundError.
    monkeypatch.setattr(backend_module("cupy"), "probe", lambda: (False, "cupy is not installed (simulated)"))
    with pytest.raises(RuntimeError, match=r"load: backend 'cupy' was requested but is not usable: cupy is not "
                                           r"installed \(simulated\)"):
        serialization.load(tmp_path / "a.npz", backend="cupy")


def test_float16_onto_array_api_strict_names_the_leaf(tmp_path):
    # array-api-strict has no float16 (not a standard dtype): a clear error naming the entry.
    serialization.save(tmp_path / "h.npz", {"params": {"w": np.ones((2, 3), np.float16)}, "b": np.ones(2)})
    with pytest.raises(TypeError, match=r"load: .*h.npz: the array 'params/w' \(shape \(2, 3\)\) has dtype float16, "
                                        r"which the array_api_strict backend does not support"):
        serialization.load(tmp_path / "h.npz", backend="array_api_strict")
    assert serialization.load(tmp_path / "h.npz", backend="numpy")["params"]["w"].dtype == np.float16
