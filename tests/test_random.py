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
        "trunc": random.truncated_normal(k1, (7,), "float64", -0.5, 3.0),
        "trunc_tail": random.truncated_normal(k2, (7,), "float32", 6.0, float("inf")),
        "u_range": random.uniform(k3, (9,), "float32", 1000.0, 1001.0),
        "randint8": random.randint(k1, (6,), -128, 128, "int8"),
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
             "s": random.split(key)[0], "r": random.randint(key, (2,), 0, 5), "b": random.bernoulli(key, 0.5, (2,)),
             "ur": random.uniform(key, (3,), "float32", -3.0, 7.0), "r8": random.randint(key, (2,), -3, 5, "int8"),
             "t": random.truncated_normal(key, (3,), lower=3.0, upper=5.0),
             "p2": random.permutation(key, strict.asarray([1.0, 2.0], device=strict.Device("device1")))}
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


# --- pinned bits: the fixes below did not change what the default draws give ---------------
def test_pinned_bits_of_the_unchanged_draws():
    k = _nkey(0)
    assert np.asarray(random.bits(k, (4,))).tolist() == [1797259609, 928981903, 2579123966, 3453687069]
    assert np.asarray(random.uniform(k, (4,))).view(np.uint32).tolist() == [1054228482, 1046314124, 1058650702,
                                                                            1062066965]
    assert np.asarray(random.uniform(k, (3,), "float64")).view(np.uint64).tolist() == [
        4601209873060713078, 4596960885403922768, 4606870062312732930]
    assert np.asarray(random.uniform(k, (4,), "float16")).view(np.uint16).tolist() == [14002, 13036, 14542, 14959]
    assert np.asarray(random.uniform(k, (3,), "float64", -2.0, 3.0)).view(np.uint64).tolist() == [
        4591314295443452224, 13829820573517800028, 4613547372631967554]
    assert np.asarray(random.uniform(k, (4,), "float32", -0.5, 0.25)).view(np.uint32).tolist() == [
        3191775228, 3199005004, 3175826520, 1037247104]
    assert np.asarray(random.normal(k, (3,), "float64")).view(np.uint64).tolist() == [
        4607257186184537207, 13827159361857416855, 13820649506325581644]
    assert np.asarray(random.randint(k, (5,), -3, 12)).tolist() == [3, 0, 11, 6, 9]
    assert np.asarray(random.randint(k, (3,), 0, 2**32)).tolist() == [1797259609, 928981903, 2579123966]
    assert np.asarray(random.bernoulli(k, 0.3, (8,))).tolist() == [False, True] + [False] * 6
    assert np.asarray(random.permutation(k, 8)).tolist() == [1, 5, 0, 4, 3, 7, 6, 2]


# --- uniform: strictly inside [minval, maxval) ------------------------------------------------
@pytest.mark.parametrize("seed,n,dtype,lo,hi", [
    (116, 1000, "float32", 1000.0, 1001.0),   # gave 1001.0 before the clamp
    (0, 1000, "float16", 1.0, 2.0),           # gave 2.0
    (3, 1 << 20, "float64", 1e15, 1e15 + 1),  # gave 1e15 + 1
    (0, 1000, "float32", 0.7, 0.9),           # float32(0.7) < 0.7: the smallest value is clamped up
])
def test_uniform_stays_in_half_open_interval(seed, n, dtype, lo, hi):
    u = np.asarray(random.uniform(_nkey(seed), (n,), dtype, lo, hi))
    assert u.dtype == dtype
    assert (u.astype(np.float64) >= lo).all() and (u.astype(np.float64) < hi).all()


def test_uniform_float16_wide_range_has_no_nan_and_bad_ranges_are_refused():
    u = np.asarray(random.uniform(_nkey(0), (10_000,), "float16", -6e4, 6e4))
    assert np.isfinite(u).all() and u.min() >= -6e4 and u.max() < 6e4 and abs(float(u.mean())) < 2e3
    k = _nkey(0)
    with pytest.raises(ValueError, match=r"random.uniform: \[minval, maxval\) = \[-100000.0, 100000.0\) is outside "
                                         r"the range of float16 \(largest finite value 65504.0\)"):
        random.uniform(k, (4,), "float16", -1e5, 1e5)
    with pytest.raises(ValueError, match=r"random.uniform: maxval - minval = 3e\+38 - -3e\+38 overflows float32"):
        random.uniform(k, (4,), "float32", -3e38, 3e38)
    with pytest.raises(ValueError, match=r"random.uniform: no float16 value lies in \[minval, maxval\) = "
                                         r"\[1.0001, 1.0002\)"):
        random.uniform(k, (4,), "float16", 1.0001, 1.0002)
    assert np.asarray(random.uniform(k, (2,), "float64", -3e38, 3e38)).dtype == np.float64


# --- randint: integer dtypes only, ranges that fit ---------------------------------------------
def test_randint_refuses_bad_dtypes_and_ranges_that_do_not_fit():
    k = _nkey(0)
    with pytest.raises(ValueError, match=r"random.randint: \[minval, maxval\) = \[0, 4294967296\) does not fit "
                                         r"dtype int32, whose values are -2147483648 to 2147483647"):
        random.randint(k, (5,), 0, 2**32, dtype="int32")
    with pytest.raises(ValueError, match=r"\[0, 300\) does not fit dtype uint8"):
        random.randint(k, (5,), 0, 300, dtype="uint8")
    with pytest.raises(ValueError, match=r"\[-5, 5\) does not fit dtype uint32, whose values are 0 to 4294967295"):
        random.randint(k, (5,), -5, 5, dtype="uint32")
    for dt in ("float32", "bool", np.float64):
        with pytest.raises(TypeError, match="random.randint: dtype must be an integer dtype"):
            random.randint(k, (5,), 0, 2, dtype=dt)
    # The edges fit: maxval is exclusive, and the offset never wraps around.
    v = np.asarray(random.randint(k, (50_000,), -2**31, 2**31, dtype="int32"))
    assert v.dtype == np.int32 and v.min() < -2**30 and v.max() > 2**30
    v = np.asarray(random.randint(k, (1000,), -128, 128, dtype="int8"))
    assert v.dtype == np.int8 and v.min() == -128 and v.max() == 127
    v = np.asarray(random.randint(k, (1000,), 2**64 - 3, 2**64, dtype="uint64"))
    assert v.dtype == np.uint64 and set(v.tolist()) == {2**64 - 3, 2**64 - 2, 2**64 - 1}
    v = np.asarray(random.randint(k, (1000,), 0, 256, dtype="uint8"))
    assert v.dtype == np.uint8 and v.min() == 0 and v.max() == 255


# --- truncated_normal: exact in distribution ------------------------------------------------------
@pytest.mark.parametrize("lo,hi", [(3.0, 5.0), (0.1, 0.3), (-2.0, 2.0), (-np.inf, -1.0), (1.5, np.inf),
                                   (-np.inf, np.inf), (-7.0, -6.5), (-0.3, 9.0), (12.0, 14.0)])
def test_truncated_normal_matches_scipy(lo, hi):
    stats = pytest.importorskip("scipy.stats")
    t = np.asarray(random.truncated_normal(_nkey(5), (100_000,), "float64", lo, hi))
    assert t.min() >= lo and t.max() <= hi
    ref = stats.truncnorm(lo, hi)
    assert stats.kstest(t, ref.cdf).pvalue > 1e-3
    assert abs(t.mean() - ref.mean()) < 5 * ref.std() / np.sqrt(t.size)
    assert abs(t.std() / ref.std() - 1) < 0.02
    # On [3, 5] the old rejection sampler returned 3.0 for 98.9% of the samples.
    assert np.mean(t == lo) < 1e-3 and np.mean(t == hi) < 1e-3


def test_truncated_normal_is_the_inverse_cdf_of_a_uniform():
    special = pytest.importorskip("scipy.special")
    k = _nkey(9)
    t = np.asarray(random.truncated_normal(k, (2000,), "float64", -1.0, 2.0))
    v = (np.asarray(random.bits(k, (4000,))) >> 6).astype(np.float64)
    u = ((v[:2000] * 2.0**26 + v[2000:]) + 0.5) * 2.0**-52
    pa, pb = special.ndtr(-1.0), special.ndtr(2.0)
    np.testing.assert_allclose(t, special.ndtri(pa + (pb - pa) * u), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype,lo,hi", [("float32", 0.1, 0.3), ("float16", 0.1, 0.3), ("float16", -2.0, 2.0),
                                         ("float32", 3.0, 3.0 + 1e-6), ("float16", 30.0, 30.05)])
def test_truncated_normal_stays_in_bounds_in_every_dtype(dtype, lo, hi):
    t = np.asarray(random.truncated_normal(_nkey(1), (50_000,), dtype, lo, hi))
    assert t.dtype == dtype and (t.astype(np.float64) >= lo).all() and (t.astype(np.float64) <= hi).all()


def test_truncated_normal_bad_bounds():
    k = _nkey(0)
    with pytest.raises(ValueError, match=r"random.truncated_normal: \[lower, upper\] = \[36.0, inf\] lies entirely "
                                         r"beyond \+-35 standard deviations"):
        random.truncated_normal(k, (2,), lower=36.0, upper=np.inf)
    with pytest.raises(ValueError, match=r"random.truncated_normal: need lower < upper, got \[nan, 1.0\]"):
        random.truncated_normal(k, (2,), lower=np.nan, upper=1.0)
    with pytest.raises(ValueError, match=r"random.truncated_normal: no float16 value lies in \[lower, upper\]"):
        random.truncated_normal(k, (2,), "float16", 1.0001, 1.0002)


def test_log64_and_ndtri_accuracy():
    special = pytest.importorskip("scipy.special")
    import array_api_compat.numpy as xnp

    rng = np.random.default_rng(0)
    t = np.concatenate([rng.uniform(0, 1, 20_000), 10.0 ** rng.uniform(-307, 0, 20_000), [2.0**-1022, 0.5, 1.0]])
    ref = np.log(t)
    assert (np.abs(random._log64(xnp, t) - ref) <= np.spacing(np.abs(ref).clip(1e-300))).all()
    p = np.concatenate([rng.uniform(0, 1, 20_000), 10.0 ** rng.uniform(-300, -1, 20_000)])
    np.testing.assert_allclose(random._ndtri(xnp, p), special.ndtri(p), rtol=2e-15, atol=0)


# --- array parameters are refused (NOTE [scalar parameters]) --------------------------------------
def test_array_parameters_are_refused():
    k = _nkey(0)
    with pytest.raises(TypeError, match=r"random.uniform: minval must be a Python or NumPy real scalar, got an array "
                                        r"of shape \(\) and dtype float64; array parameters are not supported"):
        random.uniform(k, (2,), minval=np.asarray(2.0), maxval=np.asarray(1.0))
    with pytest.raises(TypeError, match=r"random.normal: mean must be a Python or NumPy real scalar, got an array "
                                        r"of shape \(2,\)"):
        random.normal(k, (2,), mean=np.asarray([0.0, 10.0]))
    with pytest.raises(TypeError, match="random.bernoulli: p must be a Python or NumPy real scalar"):
        random.bernoulli(k, np.asarray(0.3), (4,))
    with pytest.raises(TypeError, match="random.truncated_normal: upper must be a Python or NumPy real scalar"):
        random.truncated_normal(k, (2,), upper=np.asarray(1.0))
    with pytest.raises(TypeError, match="random.randint: minval must be a Python or NumPy integer scalar, got an "
                                        "array of shape"):
        random.randint(k, (2,), np.asarray(0), 5)
    strict_key = random.key(0, device=strict.Device("device1"))
    with pytest.raises(TypeError, match="random.uniform: maxval must be a Python or NumPy real scalar"):
        random.uniform(strict_key, (2,), maxval=strict.asarray(2.0, device=strict.Device("device1")))
    # NumPy scalars are scalars.
    u = np.asarray(random.uniform(k, (100,), "float64", np.float32(2.0), np.float64(3.0)))
    assert u.min() >= 2.0 and u.max() < 3.0


# --- permutation: the key's library and device ------------------------------------------------------
def test_permutation_of_an_array_of_another_library_or_device():
    with pytest.raises(TypeError, match=r"random.permutation: x \(shape \(3,\)\) is an array of array_api_strict "
                                        r"but the key is an array of array_api_compat.numpy"):
        random.permutation(_nkey(0), strict.asarray([1, 2, 3]))
    key1 = random.key(0, device=strict.Device("device1"))
    with pytest.raises(ValueError, match=r"random.permutation: the key is on device .*device1.* but x \(shape "
                                         r"\(3,\)\) is on device .*CPU_DEVICE"):
        random.permutation(key1, strict.asarray([1, 2, 3]))
    out = random.permutation(key1, strict.asarray([1, 2, 3], device=strict.Device("device1")))
    assert out.device == strict.Device("device1")
