"""gpuad.serialization: pytrees of arrays to .npz and back, across backends and devices."""

from __future__ import annotations

import json

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
    # Plain numpy.load reads the file too: entries named by depth-first leaf index, the tree in the metadata.
    with np.load(path) as z:
        names = sorted(n for n in z.files if n != "__metadata__")
        assert names == [f"arr_{i:04d}" for i in range(len(names))]
        meta = json.loads(str(z["__metadata__"][()]))
        assert meta["format"] == "gpuad-pytree-2"
        entry = meta["tree"]["dict"]["params"]["dict"]["conv"]["dict"]["w"]["array"]
        assert z[entry].shape == (2, 1, 3, 3)


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


# --- entry names: injective, never a numpy.savez keyword ---------------------------------------------
@pytest.mark.parametrize("tree", [
    {"": np.zeros(1), "leaf": np.ones(1)},                 # "" used to be saved as "leaf"
    {"": {"b": np.zeros(1)}, "b": np.ones(1)},              # "" + "/b" == "b"
    {"": [np.zeros(1)], "0": np.ones(1)},
    {"x.npy": np.zeros(1), "x": np.ones(1)},                # numpy.load maps "x.npy" to "x"
    {"file": np.zeros(1), "allow_pickle": np.ones(1)},      # numpy.savez keywords
    {"a\x00b": np.zeros(1), "x": {"__metadata__": np.ones(1)}, "..": np.full(1, 2.0)},
    [np.zeros(1), {"": np.ones(1), "0": np.full(1, 2.0)}],
])
def test_colliding_names_round_trip(tmp_path, tree):
    serialization.save(tmp_path / "c.npz", tree)
    _compare(tree, serialization.load(tmp_path / "c.npz", backend="numpy"), np.asarray, np.asarray)


def test_reads_format_1_files(tmp_path):
    # gpuad-pytree-1 named each entry by its path in the tree.
    from gpuad._backend import backend_module

    meta = json.dumps({"format": "gpuad-pytree-1", "tree": {"dict": {
        "params": {"dict": {"w": {"array": "params/w"}}}, "step": {"value": 3}, "l": {"list": [{"array": "l/0"}]}}}})
    backend_module("numpy").save_npz(str(tmp_path / "v1.npz"), {"params/w": np.arange(4.0), "l/0": np.ones(2)}, meta)
    back = serialization.load(tmp_path / "v1.npz", backend="numpy")
    _compare(back, {"params": {"w": np.arange(4.0)}, "step": 3, "l": [np.ones(2)]}, np.asarray, np.asarray)
    meta3 = json.dumps({"format": "gpuad-pytree-3", "tree": {"none": None}})
    backend_module("numpy").save_npz(str(tmp_path / "v3.npz"), {}, meta3)
    with pytest.raises(ValueError, match=r"load: .*v3.npz has the format 'gpuad-pytree-3', which this version of "
                                         r"gpuad cannot read"):
        serialization.load(tmp_path / "v3.npz")


@pytest.mark.parametrize("leaf,what", [
    (np.asarray(["ab", "c"]), r"the array at params/x \(shape \(2,\)\): its dtype <U2 is not supported"),
    (np.asarray(["2020-01-01"], dtype="datetime64[D]"), r"the array at params/x \(shape \(1,\)\): its dtype "
                                                        r"datetime64\[D\] is not supported"),
    (np.zeros(2, dtype=[("a", "i4")]), r"the array at params/x \(shape \(2,\)\): its dtype \[\('a', '<i4'\)\] "
                                       r"is not supported"),
    (np.asarray([b"ab"]), r"the array at params/x \(shape \(1,\)\): its dtype \|S2 is not supported"),
    (np.asarray([None]), r"an object array at params/x \(shape \(1,\); load reads no pickled data\)"),
])
def test_save_refuses_dtypes_load_cannot_read(tmp_path, leaf, what):
    with pytest.raises(TypeError, match=rf"save: cannot save {what}; supported dtypes: bool, int8, "):
        serialization.save(tmp_path / "d.npz", {"params": {"x": leaf, "ok": np.ones(2)}})
    assert not (tmp_path / "d.npz").exists()


def test_load_of_files_that_are_not_gpuad_archives(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(2))
    with pytest.raises(ValueError, match=r"load: .*a.npy is not a readable .npz file .*it is a .npy file \(a single "
                                         r"array\), not an .npz archive"):
        serialization.load(tmp_path / "a.npy")
    (tmp_path / "g.npz").write_bytes(b"hello, not a zip")
    with pytest.raises(ValueError, match=r"load: .*g.npz is not a readable .npz file .*not a zip archive"):
        serialization.load(tmp_path / "g.npz")
    for tree, what in [({"list": 5}, r"\(a 'list' node holds int 5, at /\)"),
                       ({"dict": [1]}, r"\(a 'dict' node holds list \[1\], at /\)"),
                       ({"dict": {"a": {"array": 5}}}, r"\(an 'array' node holds int 5, at a\)"),
                       ({"tuple": [{"value": [1]}]}, r"\(a 'value' node holds list \[1\], at 0\)"),
                       ({"dict": {"a": {"what": 1}}}, r"\(unknown node kind 'what', at a\)")]:
        np.savez(tmp_path / "m.npz", __metadata__=np.asarray(json.dumps({"format": serialization.FORMAT,
                                                                         "tree": tree})))
        with pytest.raises(ValueError, match=r"load: .*m.npz: malformed metadata " + what):
            serialization.load(tmp_path / "m.npz")
