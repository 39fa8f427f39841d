"""gpuad.checkpoint: a segment keeps its inputs and recomputes; it composes with every transform."""

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad.checkpointing import is_recomputing, on_forward_only, replayed, save_only

from test_device_residency import no_host_transfers


def seg(x, w):
    return xp.tanh(xp.matmul(x, w)) * xp.sin(x)


def plain_loss(x, w):
    return xp.sum(seg(seg(x, w), w) ** 2)


def make_loss(segment):
    def loss(x, w):
        return xp.sum(segment(segment(x, w), w) ** 2)
    return loss


def nested_segment():
    inner = gpuad.checkpoint(seg)
    outer = gpuad.checkpoint(lambda x, w: inner(inner(x, w), w))
    return lambda x, w: xp.sum(outer(x, w) ** 2)


VARIANTS = {
    "plain-ckpt": lambda: make_loss(gpuad.checkpoint(seg)),
    "policy": lambda: make_loss(gpuad.checkpoint(seg, policy=save_only("matmul"))),
    "nested": nested_segment,
}


@pytest.fixture
def xw(backend):
    rng = np.random.default_rng(0)
    return backend.asarray(rng.normal(size=(3, 4))), backend.asarray(rng.normal(size=(4, 4)) / 2)


def close(backend, a, b, tol=1e-12):
    for u, v in zip(gpuad.tree_leaves(a), gpuad.tree_leaves(b)):
        np.testing.assert_allclose(backend.to_numpy(u), backend.to_numpy(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_transforms_match_plain(backend, xw, variant):
    x, w = xw
    loss = VARIANTS[variant]()
    close(backend, gpuad.grad(loss, (0, 1))(x, w), gpuad.grad(plain_loss, (0, 1))(x, w))
    gg = lambda f: gpuad.grad(lambda x: xp.sum(gpuad.grad(f, 1)(x, w) ** 2))(x)  # noqa: E731
    close(backend, gg(loss), gg(plain_loss))
    v = backend.asarray(np.ones((3, 4)))
    close(backend, gpuad.hvp(lambda x: loss(x, w), (x,), (v,)), gpuad.hvp(lambda x: plain_loss(x, w), (x,), (v,)))
    close(backend, gpuad.jvp(lambda x: loss(x, w), (x,), (v,)), gpuad.jvp(lambda x: plain_loss(x, w), (x,), (v,)))
    ck = gpuad.checkpoint(seg)
    close(backend, gpuad.jacrev(ck, (0, 1))(x, w), gpuad.jacrev(seg, (0, 1))(x, w))


def test_stays_on_device():
    import array_api_strict as strict

    dev = strict.Device("device1")
    x = strict.asarray(np.ones((3, 4)), device=dev)
    w = strict.asarray(np.eye(4) * 0.5, device=dev)
    loss = VARIANTS["policy"]()
    with no_host_transfers():
        g = gpuad.grad(loss, (0, 1))(x, w)
        gpuad.hvp(lambda x: loss(x, w), (x,), (x,))
    assert g[0].device == dev


def test_recomputes_once_and_keeps_only_inputs():
    calls = []

    def f(x):
        calls.append(is_recomputing())
        return xp.exp(xp.exp(x))

    x = np.linspace(0.0, 1.0, 10)
    ck = gpuad.checkpoint(f)
    with gpuad.memory.track() as rep:
        g = gpuad.grad(lambda x: xp.sum(ck(x)))(x)
    assert calls == [False, True]
    np.testing.assert_array_equal(g, gpuad.grad(lambda x: xp.sum(f(x)))(x))
    assert rep.peak_bytes == 3 * 80          # backward: the input and the two recomputed exp outputs
    assert rep.forward_peak_bytes == 80 and rep.snapshot_peak_bytes == 80


def test_policy_keeps_chosen_values():
    x, w = np.ones((3, 4)), np.eye(4)
    plain = gpuad.checkpoint(seg)
    kept = gpuad.checkpoint(seg, policy=save_only("matmul"))
    with gpuad.memory.track() as r0:
        gpuad.grad(lambda x: xp.sum(plain(x, w)))(x)
    with gpuad.memory.track() as r1:
        g = gpuad.grad(lambda x: xp.sum(kept(x, w)))(x)
    assert r1.snapshot_peak_bytes - r0.snapshot_peak_bytes == 3 * 4 * 8   # the matmul output
    np.testing.assert_allclose(g, gpuad.grad(lambda x: xp.sum(seg(x, w)))(x), rtol=1e-15)


def test_policy_with_forward_only_ops_and_a_path_that_changes():
    # NOTE [uncounted ops]: ops inside on_forward_only/replayed take no position, so the saved
    # matmul outputs land on the matmuls; a recomputation that takes another path raises.
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    stats = []

    def updates_stats(x, w):
        h = x * 2.0
        on_forward_only(lambda: stats.append(xp.mean(h)))
        return xp.sum(xp.sin(xp.tanh(h @ w) @ w))

    def reads_host(x, w):
        h = x * 2.0
        h = h + replayed(lambda: float(xp.sum(h)) * 0.0)  # an impure read (a host value)
        return xp.sum(xp.sin(xp.tanh(h @ w) @ w))

    for f in (updates_stats, reads_host):
        kept = gpuad.checkpoint(f, policy=save_only("matmul"))
        got = gpuad.grad(kept, argnums=(0, 1))(x, w)
        want = gpuad.grad(f, argnums=(0, 1))(x, w)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert len(stats) == 2

    def wandering(x, w):
        h = x * 2.0
        if not is_recomputing():
            h = h + xp.mean(h) * 0.0
        return xp.sum(xp.sin(xp.tanh(h @ w) @ w))

    with pytest.raises(RuntimeError, match="same ops when it is recomputed"):
        gpuad.grad(gpuad.checkpoint(wandering, policy=save_only("matmul")))(x, w)


class Counter:
    """A deterministic 'random' source: each draw advances a global counter."""

    def __init__(self):
        self.n = 0

    def draw(self, shape):
        self.n += 1
        rng = np.random.default_rng(self.n)
        return rng.uniform(size=shape) > 0.5


def test_random_draws_replay_and_state_updates_once():
    src = Counter()
    running = []

    def dropout_seg(x):
        mask = replayed(src.draw, x.shape)          # logged on the first run, replayed after
        on_forward_only(running.append, 1)          # a state update: happens once
        return xp.where(xp.asarray(mask), xp.tanh(x), 0.0) * 2.0

    x = np.linspace(-1.0, 1.0, 8)
    src.n = 0
    g_plain = gpuad.grad(lambda x: xp.sum(dropout_seg(x) ** 2))(x)
    assert src.n == 1 and running == [1]
    src.n = 0
    ck = gpuad.checkpoint(dropout_seg)
    g_ck = gpuad.grad(lambda x: xp.sum(ck(x) ** 2))(x)
    assert src.n == 1 and running == [1, 1]        # no extra draw, no extra update
    np.testing.assert_array_equal(g_ck, g_plain)   # identical masks: bitwise equal


def test_explicit_keys_replay_trivially():
    def noisy(x, key):
        return x * key                               # the key is an argument: the node keeps it

    key = np.linspace(0.5, 1.5, 5)
    x = np.ones(5)
    ck = gpuad.checkpoint(noisy)
    np.testing.assert_array_equal(gpuad.grad(lambda x: xp.sum(ck(x, key) ** 2))(x),
                                  gpuad.grad(lambda x: xp.sum(noisy(x, key) ** 2))(x))


def test_closure_over_traced_value_is_an_error():
    w = np.ones(3)
    with pytest.raises(ValueError, match="closure"):
        gpuad.grad(lambda w: xp.sum(gpuad.checkpoint(lambda x: x * w)(np.ones(3))))(w)


def test_bad_arguments():
    with pytest.raises(TypeError, match="checkpoint: f must be callable"):
        gpuad.checkpoint(3)
    with pytest.raises(TypeError, match="policy"):
        gpuad.checkpoint(seg, policy=1)


def test_decorator_forms_and_pytrees():
    @gpuad.checkpoint(policy=save_only("matmul"))
    def f(p, x):
        return {"y": xp.tanh(xp.matmul(x, p["w"])), "z": xp.sum(x)}

    p = {"w": np.eye(2)}
    x = np.ones((2, 2))
    out = f(p, x)
    assert set(out) == {"y", "z"}
    g = gpuad.grad(lambda p: xp.sum(f(p, x)["y"]))(p)
    np.testing.assert_allclose(g["w"], gpuad.grad(lambda p: xp.sum(xp.tanh(xp.matmul(x, p["w"]))))(p)["w"])
