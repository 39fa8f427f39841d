"""gpuad.random: Threefry known answers, identical numbers on every backend and device,
distribution sanity, independence of split keys, and no host round trip."""

from __future__ import annotations

import numpy as np
import pytest

from gpuad import random
from test_device_residency import no_host_transfers

strict = pytest.importorskip("array_api_strict")


def _key(backend, seed):
    return random.key(seed, like=backend.asarray(0.0))


def _nkey(seed):
    """A key on NumPy whatever the default backend (the statistics below are checked on the host)."""
    return random.key(seed, like=np.zeros(()))


@pytest.mark.parametrize("k,c,expected", [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(backend, k, c, expected):
    u32 = lambda v: backend.asarray([v], dtype="uint32")  # noqa: E731
    y0, y1 = random.threefry2x32(backend.xp, u32(k[0]), u32(k[1]), u32(c[0]), u32(c[1]))
    assert (int(backend.to_numpy(y0)[0]), int(backend.to_numpy(y1)[0])) == expected


def _draws(backend):
    key = _key(backend, 42)
    k1, k2, k3 = random.split(key, 3)
    return {
        "key": key, "split": k1, "fold": random.fold_in(k2, 7),
        "bits": random.bits(k1, (5,)),
        "u32": random.uniform(k1, (4, 3)), "u64": random.uniform(k2, (7,), "float64", -2.0, 3.0),
        "normal": random.normal(k3, (5,), "float64"), "normal32": random.normal(k3, (6,)),
        "bern": random.bernoulli(k1, 0.3, (9,)), "randint": random.randint(k2, (8,), -3, 12),
        "perm": random.permutation(k3, 10),
    }


def test_same_key_same_numbers_on_every_backend(backend):
    import array_api_compat.numpy as xnp

    from conftest import Backend

    ref = _draws(Backend("numpy", xnp))
    got = _draws(backend)
    for name in ref:
        a, b = backend.to_numpy(got[name]), np.asarray(ref[name])
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert got[name].device == got["key"].device


def test_no_host_transfer_on_device1():
    key = random.key(0, device=strict.Device("device1"))
    with no_host_transfers():
        d = {"u": random.uniform(key, (3,)), "n": random.normal(key, (3,)), "p": random.permutation(key, 5),
             "s": random.split(key)[0], "r": random.randint(key, (2,), 0, 5), "b": random.bernoulli(key, 0.5, (2,))}
    for v in d.values():
        assert v.device == strict.Device("device1")


def test_distributions():
    key = _nkey(1)
    u = np.asarray(random.uniform(key, (200_000,), "float64"))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    z = np.asarray(random.normal(key, (200_000,), "float64"))
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.005
    b = np.asarray(random.bernoulli(key, 0.2, (100_000,)))
    assert abs(b.mean() - 0.2) < 0.005
    r = np.asarray(random.randint(key, (100_000,), 5, 9))
    assert set(np.unique(r)) == {5, 6, 7, 8} and abs(r.mean() - 6.5) < 0.02
    p = np.asarray(random.permutation(key, 1000))
    assert sorted(p) == list(range(1000)) and not (p == np.arange(1000)).all()
    t = np.asarray(random.truncated_normal(key, (10_000,), "float64"))
    assert t.min() >= -2 and t.max() <= 2


def test_split_keys_are_independent():
    key = _nkey(0)
    ks = random.split(key, 4)
    assert len({tuple(np.asarray(k)) for k in ks}) == 4
    draws = [np.asarray(random.uniform(k, (50_000,), "float64")) for k in (key,) + ks]
    c = np.corrcoef(np.stack(draws))
    assert np.abs(c - np.eye(5)).max() < 0.03
    # A key's own samples never equal its children's keys (NOTE [counter domains]).
    words = set(np.asarray(random.bits(key, (64,))).tolist())
    assert not words & {int(w) for k in ks for w in np.asarray(k)}
    assert not np.array_equal(np.asarray(random.fold_in(key, 1)), np.asarray(random.fold_in(key, 2)))


def test_seeds_and_determinism():
    assert not np.array_equal(np.asarray(random.uniform(_nkey(0), (4,))),
                              np.asarray(random.uniform(_nkey(1), (4,))))
    np.testing.assert_array_equal(np.asarray(_nkey(2**40 + 5)), [256, 5])
    np.testing.assert_array_equal(np.asarray(random.normal(_nkey(3), (3,))),
                                  np.asarray(random.normal(_nkey(3), (3,))))


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match=r"random.uniform: key must be a uint32 array of shape \(2,\)"):
        random.uniform(np.zeros(2), (3,))
    with pytest.raises(TypeError, match="random.key: seed must be an int"):
        random.key(1.5)
    with pytest.raises(ValueError, match="random.split: num must be a positive int"):
        random.split(random.key(0), 0)
    with pytest.raises(ValueError, match=r"random.randint: need 0 < maxval - minval"):
        random.randint(random.key(0), (2,), 3, 3)
    with pytest.raises(TypeError, match="random.normal: dtype must be a real floating dtype"):
        random.normal(random.key(0), (2,), "int32")
    with pytest.raises(ValueError, match="random.uniform: shape .* has a negative dimension"):
        random.uniform(random.key(0), (2, -1))


@pytest.mark.parametrize("fn", [random.truncated_normal, random.is_key])
def test_docstrings_have_parameters_and_returns(fn):
    import inspect

    doc = inspect.getdoc(fn)
    assert "Parameters\n----------\n" in doc and "Returns\n-------\n" in doc, fn.__name__
