"""gpuad.memory: exact byte counts of what the tape keeps."""

import gc

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad.memory import nbytes_of, track

N = 10  # float64: 80 bytes per array


def test_exp_keeps_its_output_only(backend):
    x = backend.asarray(np.linspace(0.0, 1.0, N))
    with track() as rep:
        gpuad.grad(lambda x: xp.sum(xp.exp(x)))(x)
    assert rep.peak_bytes == 8 * N
    assert rep.forward_peak_bytes == 8 * N and rep.backward_peak_bytes == 8 * N
    assert rep.live_bytes == 0  # freed after backward
    assert rep.nodes_saved == rep.nodes_freed == 2
    assert "peak" in str(rep)


def test_each_kept_array_counts(backend):
    # sin keeps x, tanh keeps its output, multiply keeps both factors:
    # x, sin(x), tanh(x) -- the tanh output is counted once.
    x = backend.asarray(np.linspace(0.0, 1.0, N))
    with track() as rep:
        gpuad.grad(lambda x: xp.sum(xp.sin(x) * xp.tanh(x)))(x)
    assert rep.peak_bytes == 3 * 8 * N
    assert rep.live_bytes == 0


def test_views_of_one_buffer_count_once(backend):
    def f(x):
        y = xp.exp(x)                       # keeps y
        a, b = y[0:5], y[5:]                # views of y
        return xp.sum(xp.sin(a)) + xp.sum(xp.sin(b))   # sin keeps its (view) input

    x = backend.asarray(np.linspace(0.0, 1.0, N))
    with track() as rep:
        gpuad.grad(f)(x)
    assert rep.peak_bytes == 8 * N


def test_nbytes_of_resolves_views():
    x = np.arange(12.0)
    k1, n1, _ = nbytes_of(x)
    k2, n2, _ = nbytes_of(x[3:7])
    assert k1 == k2 and n1 == n2 == 96


def test_nbytes_of_follows_foreign_buffers():
    # as_strided (an interface object over x) and np.frombuffer views of one bytearray
    x = np.arange(12.0)
    strided = np.lib.stride_tricks.as_strided(x, shape=(3,), strides=(32,))
    assert nbytes_of(strided)[:2] == nbytes_of(x)[:2]
    raw = bytearray(96)
    a, b = np.frombuffer(raw), np.frombuffer(raw, count=4)[1:]
    assert nbytes_of(a)[:2] == nbytes_of(b)[:2] == (id(raw), 96)

    with track() as rep:
        y = np.frombuffer(raw)
        gpuad.grad(lambda y: xp.sum(xp.sin(y)) + xp.sum(y[1:4] * b))(y)
    assert rep.peak_bytes == 96  # sin keeps y, multiply keeps y[1:4] and b: one block


def test_unpulled_vjp_tape_released_when_collected():
    x = np.linspace(0.0, 1.0, N)
    with track() as rep:
        out, f_vjp = gpuad.vjp(lambda x: xp.exp(x), x)
        assert gpuad.memory.live_bytes() == 8 * N
        del out, f_vjp
        gc.collect()
        assert gpuad.memory.live_bytes() == 0
    assert rep.peak_bytes == 8 * N


def test_jacrev_and_hessian_tapes_stop_counting_when_collected():
    # NOTE [when bytes stop counting]: their vjp tapes serve every row (nothing is freed by a
    # backward pass) and stop counting when the nodes die, though the user still holds x.
    x = np.linspace(0.0, 1.0, N)
    f = lambda x: xp.sin(x) * xp.exp(x)  # noqa: E731
    with track() as rep:
        gpuad.jacrev(f)(x)
    assert rep.live_bytes == 0 and rep.nodes_saved == rep.nodes_freed > 0
    assert rep.peak_bytes == 3 * 8 * N  # sin keeps x, multiply keeps sin(x) and exp(x)
    with track() as rep:
        gpuad.hessian(lambda x: xp.sum(f(x)))(x)
    assert rep.live_bytes == 0 and rep.nodes_saved == rep.nodes_freed
    with track() as rep:
        out, pull = gpuad.vjp(f, x)
        pull(np.ones(N))
        pull(np.ones(N))
        assert gpuad.memory.live_bytes() == 3 * 8 * N  # pulled back twice: still held
        del out, pull
        assert gpuad.memory.live_bytes() == 0


def test_nested_track_and_chaining():
    x = np.linspace(0.0, 1.0, N)
    with track() as outer:
        with track() as inner:
            gpuad.grad(lambda x: xp.sum(xp.exp(x)))(x)
        gpuad.grad(lambda x: xp.sum(xp.sin(x) * xp.tanh(x)))(x)
    assert inner.peak_bytes == 8 * N
    assert outer.peak_bytes == 3 * 8 * N
    assert gpuad._reverse.get_tape_observer() is None


def test_checkpoint_inputs_are_snapshot_bytes():
    x = np.linspace(0.0, 1.0, N)
    seg = gpuad.checkpoint(lambda x: xp.tanh(xp.exp(x)))
    with track() as rep:
        gpuad.grad(lambda x: xp.sum(seg(x)))(x)
    assert rep.snapshot_peak_bytes == 8 * N
    assert rep.live_bytes == 0


def test_enable_disable_and_report():
    acc = gpuad.memory.enable()
    try:
        assert gpuad.memory.enable() is acc
        gpuad.grad(lambda x: xp.sum(xp.exp(x)))(np.ones(N))
        r = gpuad.memory.report()
        assert r.peak_bytes == 8 * N and r.pool == {}
    finally:
        gpuad.memory.disable()
    assert gpuad.memory.live_bytes() == 0
    assert gpuad._reverse.get_tape_observer() is None


def test_enable_and_track_nest_in_any_order():
    # NOTE [observer chain]: ending one accountant removes that one only.
    obs = gpuad._reverse.get_tape_observer
    gpuad.memory.enable()
    with track():
        gpuad.memory.disable()
    assert obs() is None and gpuad.memory.current() is None
    with track() as rep:
        acc = gpuad.memory.enable()
    try:
        assert obs() is acc and acc.prev is None
        gpuad.grad(lambda x: xp.sum(xp.exp(x)))(np.ones(N))
        assert gpuad.memory.report().peak_bytes == 8 * N and rep.peak_bytes == 0
    finally:
        gpuad.memory.disable()
    assert obs() is None


@pytest.mark.gpu
def test_cupy_pool_stats():
    from gpuad.backends import cupy as cb

    ok, why = cb.probe()
    if not ok:
        pytest.skip(why)
    import cupy

    x = cupy.linspace(0.0, 1.0, N)
    with track() as rep:
        gpuad.grad(lambda x: xp.sum(xp.exp(x)))(x)
    assert rep.peak_bytes == 8 * N
    assert rep.pool["pool_total_bytes"] >= rep.pool["pool_used_bytes"] > 0
