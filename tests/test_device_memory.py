"""gpuad._device_memory: the GPUAD_GPU_MEMORY_LIMIT syntax and out-of-memory errors.

There is no GPU here: a stand-in exception plays CuPy's
``cupy.cuda.memory.OutOfMemoryError`` and the CuPy backend's predicate
``is_out_of_memory`` is patched to recognise it (the real predicate is tested
in ``tests/backends/test_cupy_detection.py``).
"""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad._device_memory import MemoryLimit, format_bytes, parse_memory_limit, tape_census
from gpuad._registry import Primitive
from gpuad.checkpointing import is_recomputing
from gpuad.backends import cupy as cupy_backend

N = 1000  # float64: 8,000 bytes per array

# ------------------------------------------------------------------ GPUAD_GPU_MEMORY_LIMIT


@pytest.mark.parametrize("text,size", [
    ("8589934592", 8589934592),
    ("8GiB", 8 * 2**30),
    ("8gib", 8 * 2**30),
    (" 8 GiB ", 8 * 2**30),
    ("512MB", 512 * 10**6),
    ("1.5GB", 1_500_000_000),
    ("1.5GiB", 3 * 2**29),
    ("100KiB", 102_400),
    ("2TB", 2 * 10**12),
    ("1024B", 1024),
    ("1.0001KB", 1000),  # rounded down to whole bytes
])
def test_parse_sizes(text, size):
    assert parse_memory_limit(text) == MemoryLimit(size, None, text.strip())


@pytest.mark.parametrize("text,fraction", [("50%", 0.5), ("100%", 1.0), ("12.5%", 0.125), ("0.1 %", 0.001)])
def test_parse_percentages(text, fraction):
    lim = parse_memory_limit(text)
    assert lim.size is None and lim.fraction == pytest.approx(fraction)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_parse_unset_means_no_limit(text):
    assert parse_memory_limit(text) is None


@pytest.mark.parametrize("text,why", [
    ("8G", "unknown unit 'G'"),
    ("8 gigabytes", "unknown unit"),
    ("0.5", "must be an integer"),
    ("1e9", "is not a memory limit"),
    ("0", "at least 1 byte"),
    ("0GB", "at least 1 byte"),
    ("0.1B", "at least 1 byte"),
    ("-1GB", "is not a memory limit"),
    ("150%", "at most 100%"),
    ("0%", "more than 0%"),
    ("8GiB!", "is not a memory limit"),
    ("lots", "is not a memory limit"),
    (".5GB", "is not a memory limit"),
    ("inf", "is not a memory limit"),
])
def test_parse_rejects_garbage_naming_variable_and_value(text, why):
    with pytest.raises(ValueError) as info:
        parse_memory_limit(text)
    msg = str(info.value)
    assert msg.startswith(f"GPUAD_GPU_MEMORY_LIMIT={text!r} is not a memory limit"), msg
    assert why in msg and "8GiB" in msg and "50%" in msg


def test_parse_names_the_given_variable():
    with pytest.raises(ValueError, match=r"^MY_LIMIT='x'"):
        parse_memory_limit("x", name="MY_LIMIT")


def test_format_bytes():
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(3 * 2**20) == "3,145,728 bytes (3.00 MiB)"
    assert format_bytes(8 * 2**30) == "8,589,934,592 bytes (8.00 GiB)"


# ------------------------------------------------------------------ out of memory


class FakeCupyOOM(MemoryError):
    """Stand-in for ``cupy.cuda.memory.OutOfMemoryError`` (same constructor and pickling)."""

    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")

    def __reduce__(self):
        return type(self), (self._size, self._total, self._limit)


POOL = {"pool_used_bytes": 5 * 2**20, "pool_total_bytes": 6 * 2**20, "pool_limit_bytes": 8 * 2**20}


@pytest.fixture
def fake_oom(monkeypatch):
    """Make the CuPy backend claim :class:`FakeCupyOOM` and report :data:`POOL`."""
    monkeypatch.setattr(cupy_backend, "is_out_of_memory", lambda e: isinstance(e, FakeCupyOOM))
    monkeypatch.setattr(cupy_backend, "memory_stats", lambda: dict(POOL))
    raised = []

    def oom(*_):
        raised.append(FakeCupyOOM(1024, 0))
        raise raised[-1]   # (a local bound to it would tie its traceback into a cycle)

    oom.raised = raised
    return oom


def _oom_primitive(oom, when=lambda: True):
    """An identity primitive whose implementation runs out of memory when ``when()``."""

    def impl(xp, x):
        if when():
            oom()
        return x

    return Primitive("oom_probe", impl, vjps=(lambda g, ans, x: g,), jvps=(lambda t, ans, x: t,),
                     keep_args=(), keep_ans=False)


def _x():
    return np.linspace(0.0, 1.0, N)


def _census():
    """:func:`tape_census` after a collection (earlier tests may leave cycles holding tapes)."""
    gc.collect()
    return tape_census()


def _check(err, oom, transform, phase, tape_bytes, tape_nodes):
    assert isinstance(err, gpuad.OutOfMemoryError) and isinstance(err, FakeCupyOOM)
    assert isinstance(err, MemoryError)
    assert err.__cause__ is oom.raised[-1] and err.original is oom.raised[-1]
    assert not isinstance(err.__cause__, gpuad.OutOfMemoryError)
    assert (err.transform, err.phase) == (transform, phase)
    assert (err.tape_bytes, err.tape_nodes) == (tape_bytes, tape_nodes)
    msg = str(err)
    assert msg.startswith("Out of memory allocating 1,024 bytes")  # the backend's message first
    assert f"in the {phase} pass of {transform}" in msg
    assert f"tape: {tape_bytes:,} bytes" in msg and f"in {tape_nodes} live tape node(s)" in msg
    assert "used 5,242,880 bytes (5.00 MiB)" in msg and "limit 8,388,608 bytes (8.00 MiB)" in msg
    assert "gpuad.checkpoint(f)" in msg and "gpuad.checkpoint_sequential(fns, x, budget_bytes=...)" in msg
    assert "smaller batch" in msg
    assert err._size == 1024  # the backend's attributes are kept
    assert err.pool == POOL


def test_forward_oom_in_a_primitive(fake_oom):
    base_bytes, base_nodes = _census()
    probe = _oom_primitive(fake_oom)

    def f(x):
        return xp.sum(probe(xp.exp(x)))   # exp keeps its output: 8,000 bytes

    with pytest.raises(FakeCupyOOM) as info:
        gpuad.grad(f)(_x())
    _check(info.value, fake_oom, "grad", "forward", base_bytes + 8 * N, base_nodes + 1)


def test_backward_oom_in_a_custom_vjp(fake_oom):
    base_bytes, base_nodes = _census()

    @gpuad.custom_vjp
    def boom(y):
        return y

    boom.defvjp(lambda y: (y, y), lambda res, g: fake_oom())

    def f(x):
        return xp.sum(boom(xp.exp(x)))   # exp's output, kept by exp and by boom: counted once

    with pytest.raises(MemoryError) as info:
        gpuad.value_and_grad(f)(_x())
    # sum's node was freed before boom's bwd ran; exp and boom still hold y.
    _check(info.value, fake_oom, "grad", "backward", base_bytes + 8 * N, base_nodes + 2)


def test_vjp_and_jvp_are_wrapped(fake_oom):
    # Each error's traceback keeps its tape alive until the error is dropped.
    base_bytes, base_nodes = _census()
    probe = _oom_primitive(fake_oom)
    with pytest.raises(gpuad.OutOfMemoryError) as info:
        gpuad.vjp(lambda x: probe(xp.sin(x)), _x())   # sin keeps its input
    _check(info.value, fake_oom, "vjp", "forward", base_bytes + 8 * N, base_nodes + 1)
    del info
    fake_oom.raised.clear()

    with pytest.raises(gpuad.OutOfMemoryError) as info:
        gpuad.jvp(lambda x: probe(x * 2.0), (_x(),), (_x(),))
    _check(info.value, fake_oom, "jvp", "forward", base_bytes, base_nodes)
    del info
    fake_oom.raised.clear()

    @gpuad.custom_vjp
    def boom(y):
        return y

    boom.defvjp(lambda y: (y, None), lambda res, g: fake_oom())
    out, f_vjp = gpuad.vjp(lambda x: boom(xp.exp(x)), _x())
    with pytest.raises(gpuad.OutOfMemoryError) as info:
        f_vjp(xp.ones_like(out))
    _check(info.value, fake_oom, "vjp", "backward", base_bytes + 8 * N, base_nodes + 2)


def test_checkpoint_recomputation_oom(fake_oom):
    base_bytes, base_nodes = _census()
    probe = _oom_primitive(fake_oom, when=is_recomputing)

    @gpuad.checkpoint
    def segment(y):
        return probe(xp.sin(y))

    def f(x):
        return xp.sum(segment(xp.exp(x)))

    with pytest.raises(gpuad.OutOfMemoryError) as info:
        gpuad.grad(f)(_x())
    # exp's output y, held by exp, by the checkpoint snapshot and by the recomputed sin.
    _check(info.value, fake_oom, "grad", "backward", base_bytes + 8 * N, base_nodes + 3)


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_nested_transforms_wrap_once(fake_oom, phase):
    probe = _oom_primitive(fake_oom, when=lambda: phase == "forward")

    @gpuad.custom_vjp
    def boom(y):
        return y

    boom.defvjp(lambda y: (y, None), lambda res, g: fake_oom() if phase == "backward" else (g,))

    def f(x):
        return xp.sum(boom(probe(xp.exp(x))))

    with pytest.raises(gpuad.OutOfMemoryError) as info:
        gpuad.grad(gpuad.grad(f))(np.asarray(0.5))
    err = info.value
    assert err.__cause__ is fake_oom.raised[-1]  # one wrap: its cause is the backend's error
    assert (err.transform, err.phase) == ("grad", phase)
    assert str(err).count("gpuad:") == 1
    if phase == "forward":  # jacfwd(jacrev(f)): jvp around vjp
        with pytest.raises(gpuad.OutOfMemoryError) as info:
            gpuad.hessian(lambda x: xp.sum(xp.sin(probe(x))))(_x()[:3])
        assert info.value.__cause__ is fake_oom.raised[-1]
        assert (info.value.transform, info.value.phase) == ("vjp", "forward")


def test_other_memory_errors_pass_unchanged(fake_oom):
    plain = MemoryError("host allocation failed")

    def f(x):
        raise plain

    with pytest.raises(MemoryError) as info:
        gpuad.grad(f)(_x())
    assert info.value is plain and not isinstance(info.value, gpuad.OutOfMemoryError)


def test_without_backend_claim_the_error_passes(monkeypatch):
    # The real predicate: CuPy is not imported here, so nothing is claimed.
    err = FakeCupyOOM(1, 0)

    def f(x):
        raise err

    with pytest.raises(FakeCupyOOM) as info:
        gpuad.grad(f)(_x())
    assert info.value is err


def test_wrapped_error_pickles(fake_oom):
    with pytest.raises(gpuad.OutOfMemoryError) as info:
        gpuad.grad(lambda x: xp.sum(_oom_primitive(fake_oom)(x)))(_x())
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is type(info.value) and isinstance(back, FakeCupyOOM)
    assert str(back) == str(info.value)
    assert (back.tape_bytes, back.phase, back._size) == (info.value.tape_bytes, "forward", 1024)
    assert isinstance(back.original, FakeCupyOOM)


def test_tape_is_released_with_the_error(fake_oom):
    # No reference cycle through the re-raise: dropping the error frees the tape at once.
    base = _census()
    gc.disable()
    try:
        with pytest.raises(gpuad.OutOfMemoryError) as info:
            gpuad.grad(lambda x: xp.sum(_oom_primitive(fake_oom)(xp.exp(x))))(_x())
        assert tape_census() == (base[0] + 8 * N, base[1] + 1)
        del info
        fake_oom.raised.clear()
        assert tape_census() == base
    finally:
        gc.enable()


def test_census_counts_live_nodes_and_snapshots():
    base_bytes, base_nodes = _census()
    out, f_vjp = gpuad.vjp(lambda x: xp.sin(xp.exp(x)), _x())   # y = exp(x): kept by exp and sin
    assert tape_census() == (base_bytes + 8 * N, base_nodes + 2)
    del out, f_vjp
    assert tape_census() == (base_bytes, base_nodes)
