"""Workload 2: one step (forward + backward) of a deep tanh net, its time and its peak memory.

100 layers ``h = tanh(h @ W + b)``, width 512, batch 128, float32, loss
``sum(h_out ** 2) / batch``.  Each case returns ``(loss, [dW0, db0, dW1, ...])``.

Peak extra memory: with ``tracemalloc`` (NumPy reports its buffers to it)
started after the parameters and the input exist, the peak traced memory of
one step above what was traced before it, result (the gradients) included.
Libraries that allocate outside NumPy (torch, jax) are invisible to it and
are reported as ``None`` there; ``bench/rss.py`` measures every case again
as resident memory in a fresh process (``peak_extra_rss_MiB``), torch and jax
included.  The hand-written NumPy step keeps its list of
activations until the step ends, as a straightforward implementation does.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from .common import summarize, timed, timing_note
from .mlp import check

FULL = {"layers": 100, "width": 512, "batch": 128}
QUICK = {"layers": 10, "width": 64, "batch": 16}
MiB = 2.0 ** 20


def setup(layers, width, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = []
    for _ in range(layers):
        params.append((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
        params.append((rng.standard_normal(width) * 0.1).astype(np.float32))
    x = rng.standard_normal((batch, width)).astype(np.float32)
    return params, x


def numpy_step(params, x, np=np):
    """Hand-written forward and backward; returns (loss, grads in the order of params).

    ``np`` is the array module the arrays belong to: NumPy here, CuPy in
    ``bench/gpu.py`` (the same code is the baseline on both).
    """
    B = x.shape[0]
    hs = [x]
    h = x
    for i in range(0, len(params), 2):
        a = h @ params[i]
        a += params[i + 1]
        h = np.tanh(a, out=a)
        hs.append(h)
    loss = np.sum(h * h) / B
    g = h * np.float32(2.0 / B)
    grads = [None] * len(params)
    for i in range(len(params) // 2 - 1, -1, -1):
        t = hs[i + 1]
        g *= 1 - t * t  # through tanh: dt/da = 1 - t^2
        grads[2 * i] = hs[i].T @ g
        grads[2 * i + 1] = g.sum(axis=0)
        if i:
            g = g @ params[2 * i].T
    return loss, grads


def gpuad_loss(params, x):
    from gpuad import xp

    h = x
    for i in range(0, len(params), 2):
        h = xp.tanh(xp.matmul(h, params[i]) + params[i + 1])
    return xp.sum(h * h) / x.shape[0]


def gpuad_step_fn():
    import gpuad

    vg = gpuad.value_and_grad(gpuad_loss)
    return lambda params, x: vg(params, x)


def peer_steps(peers, params, x):
    """``{name: (label, step)}``; each ``step()`` returns (loss, list of NumPy grads)."""
    out = {}
    B = x.shape[0]
    if "torch" in peers:
        torch = peers["torch"]
        tp = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
        tx = torch.from_numpy(x)

        def torch_step():
            h = tx
            for i in range(0, len(tp), 2):
                h = torch.tanh(h @ tp[i] + tp[i + 1])
            loss = (h * h).sum() / B
            gs = torch.autograd.grad(loss, tp)
            return loss.detach().numpy(), [g.numpy() for g in gs]

        out["torch"] = ("torch eager", torch_step)
    if "jax" in peers:
        jax = peers["jax"]
        jnp = jax.numpy

        def jloss(ps, x):
            h = x
            for i in range(0, len(ps), 2):
                h = jnp.tanh(h @ ps[i] + ps[i + 1])
            return jnp.sum(h * h) / B

        jp = [jnp.asarray(p) for p in params]
        jx = jnp.asarray(x)
        vg, vg_jit = jax.value_and_grad(jloss), jax.jit(jax.value_and_grad(jloss))

        def runner(f):
            def step():
                loss, gs = jax.block_until_ready(f(jp, jx))
                return np.asarray(loss), [np.asarray(g) for g in gs]
            return step

        out["jax"] = ("jax (no jit)", runner(vg))
        out["jax_jit"] = ("jax.jit", runner(vg_jit))
    if "autograd" in peers:
        ag = peers["autograd"]
        anp = ag.numpy

        def aloss(ps):
            h = x
            for i in range(0, len(ps), 2):
                h = anp.tanh(anp.dot(h, ps[i]) + ps[i + 1])
            return anp.sum(h * h) / B

        avg = ag.value_and_grad(aloss)
        out["autograd"] = ("HIPS autograd", lambda: avg(list(params)))
    if "mygrad" in peers:
        mg = peers["mygrad"]
        mp = [mg.tensor(p) for p in params]

        def mygrad_step():
            h = x
            for i in range(0, len(mp), 2):
                h = mg.tanh(mg.matmul(h, mp[i]) + mp[i + 1])
            loss = mg.sum(h * h) / B
            loss.backward()
            return loss.data, [p.grad for p in mp]

        out["mygrad"] = ("mygrad", mygrad_step)
    return out


def peak_extra_bytes(fn, repeats=2):
    """Peak bytes traced by ``tracemalloc`` during ``fn()`` above the level before it (min of repeats)."""
    fn()  # warm caches outside the measurement
    best = None
    for _ in range(repeats):
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            res = fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        del res
        best = peak - base if best is None else min(best, peak - base)
    return best


def make_cases(cfg, peers):
    """``{name: (label, step)}``: hand-written NumPy, gpuad and the peers' steps on one set of arrays."""
    params, x = setup(cfg["layers"], cfg["width"], cfg["batch"])
    step = gpuad_step_fn()
    cases = {"numpy": ("hand-written NumPy", lambda: numpy_step(params, x)),
             "gpuad": ("gpuad.value_and_grad", lambda: step(params, x))}
    cases.update(peer_steps(peers, params, x))
    return cases


def run(cfg, peers, reps, warmup, memory=True, rounds=0):
    """The tanh workload; ``rounds > 0`` times it in fresh processes (see :mod:`bench.rounds`)."""
    cases = make_cases(cfg, peers)
    ref = cases["numpy"][1]()
    agrees = {}
    for k, (_, fn) in cases.items():
        loss, g = fn()
        agrees[k] = bool(check(ref, (loss, [np.asarray(v) for v in g])))
    mem, mem_rss = {}, {}
    if memory:
        for k, (_, fn) in cases.items():
            mem[k] = None if k in ("torch", "jax", "jax_jit") else peak_extra_bytes(fn) / MiB
        from . import rss

        if rss.supported():
            mem_rss = rss.measure(list(cases), cfg)
    timing = timed(cases, "tanh", cfg, reps, warmup, rounds)
    rows = {}
    for k, (label, _) in cases.items():
        t = timing[k]
        rows[k] = {"label": label, "ms": summarize(t["times"], 1e3), "agrees": agrees[k],
                   "vs_numpy": t["vs_numpy"], "cpu_per_wall": t["cpu_per_wall"],
                   "peak_extra_MiB": mem.get(k), "peak_extra_rss_MiB": mem_rss.get(k)}
    grad_bytes = cfg["layers"] * (cfg["width"] + 1) * cfg["width"] * 4
    act_bytes = cfg["layers"] * cfg["batch"] * cfg["width"] * 4
    return {"benchmark": "tanh", "unit": "ms per step",
            "workload": dict(cfg, dtype="float32", loss="sum(h_out**2) / batch",
                             gradients_MiB=grad_bytes / MiB, activations_MiB=act_bytes / MiB,
                             memory_method="tracemalloc peak above the level before the step; "
                                           "RSS high-water mark above RSS before the step, fresh process"),
            "timing": timing_note(rounds), "results": rows}
