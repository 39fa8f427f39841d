"""gpuad.optim: updates against hand computation, schedules, clipping, and steps
that never leave the device (strict device1 with host conversions disabled)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuad
from gpuad import optim
from test_device_residency import no_host_transfers

strict = pytest.importorskip("array_api_strict")


def _tree(backend, w, b):
    return {"w": backend.asarray(w), "b": backend.asarray(b)}


def _np(backend, tree):
    return {k: backend.to_numpy(v) for k, v in tree.items()}


def _run(backend, opt, steps=3):
    p = _tree(backend, [[1.0, -2.0], [0.5, 3.0]], [0.1, -0.2])
    g = _tree(backend, [[0.3, -0.1], [0.2, 0.4]], [1.0, -0.5])
    state = opt.init(p)
    for _ in range(steps):
        p, state = opt.step(p, g, state)
    return _np(backend, p), state


P0 = {"w": np.array([[1.0, -2.0], [0.5, 3.0]]), "b": np.array([0.1, -0.2])}
G = {"w": np.array([[0.3, -0.1], [0.2, 0.4]]), "b": np.array([1.0, -0.5])}


def _ref(update, steps=3):
    out = {}
    for k in P0:
        p, s = P0[k].copy(), {}
        for t in range(1, steps + 1):
            p = update(p, G[k], s, t)
        out[k] = p
    return out


def _check(backend, opt, update, steps=3):
    got, state = _run(backend, opt, steps)
    ref = _ref(update, steps)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, err_msg=k)
    assert int(backend.to_numpy(state["step"])) == steps


def test_sgd_plain_momentum_nesterov(backend):
    lr, mu = 0.1, 0.9

    def plain(p, g, s, t):
        return p - lr * g

    def mom(p, g, s, t):
        s["v"] = mu * s.get("v", 0.0) + g
        return p - lr * s["v"]

    def nest(p, g, s, t):
        s["v"] = mu * s.get("v", 0.0) + g
        return p - lr * (g + mu * s["v"])

    _check(backend, optim.sgd(lr), plain)
    _check(backend, optim.sgd(lr, momentum=mu), mom)
    _check(backend, optim.sgd(lr, momentum=mu, nesterov=True), nest)


def test_adam_and_adamw(backend):
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1

    def adam(p, g, s, t, decoupled=False, wd=0.0):
        if wd and not decoupled:
            g = g + wd * p
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        u = (s["m"] / (1 - b1 ** t)) / (np.sqrt(s["v"] / (1 - b2 ** t)) + eps)
        if decoupled:
            u = u + wd * p
        return p - lr * u

    _check(backend, optim.adam(lr), adam)
    _check(backend, optim.adam(lr, weight_decay=wd), lambda p, g, s, t: adam(p, g, s, t, False, wd))
    _check(backend, optim.adamw(lr, weight_decay=wd), lambda p, g, s, t: adam(p, g, s, t, True, wd))


def test_clip_by_global_norm(backend):
    g = _tree(backend, [[3.0, 0.0], [0.0, 0.0]], [4.0, 0.0])
    clipped, norm = optim.clip_by_global_norm(g, 1.0)
    assert float(backend.to_numpy(norm)) == pytest.approx(5.0)
    np.testing.assert_allclose(backend.to_numpy(clipped["w"])[0, 0], 0.6)
    np.testing.assert_allclose(backend.to_numpy(clipped["b"])[0], 0.8)
    same, _ = optim.clip_by_global_norm(g, 10.0)
    np.testing.assert_allclose(backend.to_numpy(same["b"]), [4.0, 0.0])

    def clipped_sgd(p, g_, s, t):
        return p - 0.1 * g_ * (1.0 / np.sqrt(sum((G[k] ** 2).sum() for k in G)))

    _check(backend, optim.sgd(0.1, clip_norm=1.0), clipped_sgd)


def test_schedules(backend):
    step = lambda i: backend.asarray(i, dtype="int32")  # noqa: E731
    val = lambda s, i: float(backend.to_numpy(s(step(i))))  # noqa: E731
    assert val(optim.constant(0.5), 7) == pytest.approx(0.5)
    w = optim.linear_warmup(1.0, 4)
    assert [val(w, i) for i in (0, 2, 4, 9)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    c = optim.cosine_decay(1.0, 10, final_value=0.1)
    assert [val(c, i) for i in (0, 5, 10, 20)] == pytest.approx([1.0, 0.55, 0.1, 0.1], abs=1e-6)
    wc = optim.warmup_cosine(2.0, 2, 12)
    assert [val(wc, i) for i in (0, 1, 2, 7, 12)] == pytest.approx(
        [0.0, 1.0, 2.0, 1.0 * (1 + math.cos(math.pi * 0.5)), 0.0], abs=1e-6)
    # A schedule drives the optimizer: step 0 of a warm-up from 0 leaves params unchanged.
    got, _ = _run(backend, optim.sgd(optim.linear_warmup(1.0, 10)), steps=1)
    np.testing.assert_allclose(got["w"], P0["w"])


def test_training_step_stays_on_device():
    dev = strict.Device("device1")

    def arr(a):
        return strict.asarray(np.asarray(a, dtype=np.float64), device=dev)

    params = {"w": arr([[0.5, -0.3], [0.2, 0.1]]), "b": arr([0.0, 0.1])}
    x, y = arr([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.3]]), arr([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    def loss(p):
        return gpuad.xp.mean((gpuad.xp.matmul(x, p["w"]) + p["b"] - y) ** 2)

    for opt in (optim.sgd(0.1, momentum=0.9, nesterov=True), optim.adam(0.05, clip_norm=1.0),
                optim.adamw(optim.warmup_cosine(0.05, 2, 20))):
        p = params
        with no_host_transfers():
            state = opt.init(p)
            l0 = loss(p)
            for _ in range(20):
                g = gpuad.grad(loss)(p)
                p, state = opt.step(p, g, state)
            l1 = loss(p)
        for leaf in gpuad.tree_leaves((p, state)):
            assert leaf.device == dev
        cpu = strict.Device("CPU_DEVICE")
        assert float(l1.to_device(cpu)) < float(l0.to_device(cpu)), opt.name


def test_errors():
    p = {"w": np.zeros((2, 2))}
    opt = optim.adam(0.1)
    s = opt.init(p)
    with pytest.raises(ValueError, match=r"adam.step: leaf 0: gradient shape \(3,\) != parameter shape \(2, 2\)"):
        opt.step(p, {"w": np.zeros(3)}, s)
    with pytest.raises(ValueError, match="adam.step: grads have structure"):
        opt.step(p, {"v": np.zeros((2, 2))}, s)
    with pytest.raises(ValueError, match="sgd: the learning rate must be"):
        optim.sgd(-1.0)
    with pytest.raises(ValueError, match="sgd: nesterov=True needs momentum > 0"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"warmup_cosine: total_steps \(5\) must exceed warmup_steps \(5\)"):
        optim.warmup_cosine(0.1, 5, 5)
