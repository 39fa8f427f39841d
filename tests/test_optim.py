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


# --- float64 parameters get float64 hyper-parameters (NOTE [optimizer arithmetic dtype]) -----
def _exact_correction(b, t):
    """``1 - b**t`` of the float ``b``, rounded once (exact rational arithmetic)."""
    from fractions import Fraction

    return float(1 - Fraction(b) ** t)


def _wc_ref(peak, warm, total, final, step):
    """warmup_cosine's value at ``step`` in float64, from the formula."""
    if step < warm:
        return peak * (step / warm)
    t = min((step - warm) / (total - warm), 1.0)
    return final + (peak - final) * (0.5 * (1.0 + math.cos(math.pi * t)))


def _displacements(backend, opt, steps):
    """``p_t - p_0`` after each of ``steps`` steps, float64 parameters."""
    p = _tree(backend, P0["w"], P0["b"])
    g = _tree(backend, G["w"], G["b"])
    state, out = opt.init(p), []
    for _ in range(steps):
        p, state = opt.step(p, g, state)
        out.append({k: backend.to_numpy(p[k]) - P0[k] for k in P0})
    return out


def test_adam_first_step_is_exactly_lr_in_float64(backend):
    # m_1 / (1 - b1) = g and v_1 / (1 - b2) = g^2: with eps = 0 the first step moves each
    # parameter by lr * sign(g), to round-off (float32 corrections were off by ~1e-7).
    for b2 in (0.999, 0.99999):
        (d,) = _displacements(backend, optim.adam(1.0, b2=b2, eps=0.0), 1)
        for k in P0:
            np.testing.assert_allclose(d[k], -np.sign(G[k]), rtol=1e-15, atol=0, err_msg=(b2, k))


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_float64_matches_the_paper_to_round_off(backend, decoupled):
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.99999, 1e-12, 0.01
    opt = (optim.adamw if decoupled else optim.adam)(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd)
    got = _displacements(backend, opt, 4)
    for k in P0:
        p, m, v = P0[k].copy(), 0.0, 0.0
        for t in range(1, 5):
            g = G[k] if decoupled else G[k] + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            u = (m / _exact_correction(b1, t)) / (np.sqrt(v / _exact_correction(b2, t)) + eps)
            p = p - lr * (u + wd * p if decoupled else u)
            np.testing.assert_allclose(got[t - 1][k], p - P0[k], rtol=1e-13, atol=0, err_msg=(k, t))


def test_sgd_float64_learning_rates_are_float64(backend):
    # A constant 0.1 and a warm-up/cosine schedule, both taken in float64 for float64 parameters.
    for lr, sched in ((0.1, lambda s: 0.1), (optim.warmup_cosine(0.3, 3, 9, final_value=1e-3),
                                            lambda s: _wc_ref(0.3, 3, 9, 1e-3, s))):
        got = _displacements(backend, optim.sgd(lr), 6)
        for k in P0:
            p = P0[k].copy()
            for s in range(6):
                p = p - sched(s) * G[k]
                np.testing.assert_allclose(got[s][k], p - P0[k], rtol=1e-14, atol=1e-17, err_msg=(k, s))


def test_float32_and_float16_parameters_keep_their_dtypes():
    for dt in ("float32", "float16"):
        p = {"w": np.asarray([1.0, -2.0], dtype=dt)}
        g = {"w": np.asarray([0.5, 0.25], dtype=dt)}
        for opt in (optim.adam(1e-2, eps=1e-3), optim.sgd(optim.warmup_cosine(0.1, 1, 5), momentum=0.9)):
            state = opt.init(p)
            q, state = opt.step(p, g, state)
            assert q["w"].dtype == np.dtype(dt) and state["step"].dtype == np.int32
            moments = [leaf for k, sub in state.items() if k != "step" for leaf in sub.values()]
            assert all(leaf.dtype == np.dtype(dt) for leaf in moments)
    # float32 parameters: the learning rate is rounded to float32, as the update is.
    q, _ = optim.sgd(0.1).step({"w": np.float32([1.0])}, {"w": np.float32([3.0])},
                               optim.sgd(0.1).init({"w": np.float32([1.0])}))
    assert q["w"][0] == np.float32(1.0) - np.float32(0.1) * np.float32(3.0)


# --- schedules ---------------------------------------------------------------------------------
def test_linear_warmup_without_warmup_steps_is_the_peak_from_step_0(backend):
    step = lambda i: backend.asarray(i, dtype="int32")  # noqa: E731
    w = optim.linear_warmup(0.5, 0, init_value=0.1)
    assert [float(backend.to_numpy(w(step(i)))) for i in (0, 1, 100)] == [0.5, 0.5, 0.5]
    # and as the optimiser's schedule: the first step already uses the peak
    got, _ = _run(backend, optim.sgd(optim.linear_warmup(1.0, 0)), steps=1)
    np.testing.assert_allclose(got["w"], P0["w"] - G["w"])


def test_schedules_take_python_ints_and_a_dtype(backend):
    wc = optim.warmup_cosine(1.0, 10, 100)
    assert float(wc(5)) == pytest.approx(0.5) and float(wc(0)) == 0.0
    assert float(optim.constant(0.25)(3)) == 0.25 and float(optim.cosine_decay(1.0, 4)(np.int64(4))) == 0.0
    s = backend.asarray(2, dtype="int32")
    for dt in ("float32", "float64"):
        v = wc(s, dtype=dt)
        assert str(v.dtype).endswith(dt) and v.device == s.device
    assert float(backend.to_numpy(wc(s, dtype="float64"))) == 0.2
    assert "warmup_cosine(peak=1.0, warmup_steps=10, total_steps=100" in repr(wc)


@pytest.mark.parametrize("step,err,message", [
    (2.5, TypeError, "warmup_cosine schedule: step must be an int or an integer array .*got float: 2.5"),
    (5.0, TypeError, "warmup_cosine schedule: step must be an int .*got float: 5.0"),
    (np.asarray(3.0), TypeError, r"warmup_cosine schedule: .*got an array of dtype float64 and shape \(\)"),
    (np.asarray(True), TypeError, "warmup_cosine schedule: .*got an array of dtype bool"),
    ("3", TypeError, "warmup_cosine schedule: step must be an int .*got str: '3'"),
    (-1, ValueError, r"warmup_cosine schedule: step must be >= 0 \(0 is the first step\), got -1"),
])
def test_schedules_refuse_non_integer_steps(step, err, message):
    with pytest.raises(err, match=message):
        optim.warmup_cosine(1.0, 10, 100)(step)


def test_schedule_dtype_must_be_floating():
    with pytest.raises(TypeError, match="constant schedule: dtype must be a real floating dtype .*'int32'"):
        optim.constant(0.1)(0, dtype="int32")


def test_a_plain_callable_schedule_is_cast_to_the_step_dtype():
    p, g = {"w": np.ones(2)}, {"w": np.full(2, 0.5)}
    opt = optim.sgd(lambda step: np.asarray(0.1, dtype=np.float32))  # a user schedule in float32
    q, _ = opt.step(p, g, opt.init(p))
    assert q["w"].dtype == np.float64
    np.testing.assert_array_equal(q["w"], 1.0 - float(np.float32(0.1)) * 0.5)
    bad = optim.sgd(lambda step: "fast")
    with pytest.raises(TypeError, match="sgd.step: the learning-rate schedule returned str"):
        bad.step(p, g, bad.init(p))
