"""Workload 1: one training step (forward + backward) of a ReLU MLP.

784-1024-1024-10, batch 256, float32, mean softmax cross-entropy against
one-hot labels.  Each case returns ``(loss, [dW1, db1, dW2, db2, dW3, db3])``;
the hand-written NumPy backward below is the baseline, and every other case is
checked against it before timing (``agrees`` in the results).
"""

from __future__ import annotations

import numpy as np

from .common import summarize, timed, timing_note

FULL = {"sizes": (784, 1024, 1024, 10), "batch": 256}
QUICK = {"sizes": (784, 128, 128, 10), "batch": 32}


def setup(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32))
        params.append((rng.standard_normal(n_out) * 0.1).astype(np.float32))
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    labels = rng.integers(0, sizes[-1], batch)
    y = np.zeros((batch, sizes[-1]), np.float32)
    y[np.arange(batch), labels] = 1.0
    return params, x, y


def numpy_step(params, x, y, np=np):
    """Hand-written forward and backward; returns (loss, grads in the order of params).

    ``np`` is the array module the arrays belong to: NumPy here, CuPy in
    ``bench/gpu.py`` (the same code is the baseline on both).
    """
    W1, b1, W2, b2, W3, b3 = params
    B = x.shape[0]
    a1 = x @ W1
    a1 += b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ W2
    a2 += b2
    h2 = np.maximum(a2, 0)
    logits = h2 @ W3
    logits += b3
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    s = e.sum(axis=1, keepdims=True)
    loss = -(y * (logits - np.log(s))).sum() / B
    # backward
    d = e
    d /= s
    d -= y
    d /= B  # dloss/dlogits = (softmax - y) / B
    dW3 = h2.T @ d
    db3 = d.sum(axis=0)
    dh = d @ W3.T
    dh *= a2 > 0
    dW2 = h1.T @ dh
    db2 = dh.sum(axis=0)
    dh1 = dh @ W2.T
    dh1 *= a1 > 0
    dW1 = x.T @ dh1
    db1 = dh1.sum(axis=0)
    return loss, [dW1, db1, dW2, db2, dW3, db3]


def gpuad_loss(params, x, y):
    from gpuad import nn, xp

    W1, b1, W2, b2, W3, b3 = params
    h = nn.relu(xp.matmul(x, W1) + b1)
    h = nn.relu(xp.matmul(h, W2) + b2)
    logp = nn.log_softmax(xp.matmul(h, W3) + b3, axis=-1)
    return -xp.sum(y * logp) / x.shape[0]


def gpuad_step_fn():
    import gpuad

    vg = gpuad.value_and_grad(gpuad_loss)
    return lambda params, x, y: vg(params, x, y)


def peer_steps(peers, params, x, y):
    """``{name: (label, step)}``; each ``step()`` returns (loss, list of NumPy grads)."""
    out = {}
    B = x.shape[0]
    if "torch" in peers:
        torch = peers["torch"]
        tp = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def torch_step():
            W1, b1, W2, b2, W3, b3 = tp
            h = torch.relu(tx @ W1 + b1)
            h = torch.relu(h @ W2 + b2)
            logp = torch.log_softmax(h @ W3 + b3, dim=-1)
            loss = -(ty * logp).sum() / B
            gs = torch.autograd.grad(loss, tp)
            return loss.detach().numpy(), [g.numpy() for g in gs]

        out["torch"] = ("torch eager", torch_step)
    if "jax" in peers:
        jax = peers["jax"]
        jnp = jax.numpy

        def jloss(ps, x, y):
            W1, b1, W2, b2, W3, b3 = ps
            h = jax.nn.relu(x @ W1 + b1)
            h = jax.nn.relu(h @ W2 + b2)
            return -jnp.sum(y * jax.nn.log_softmax(h @ W3 + b3, axis=-1)) / B

        jp = [jnp.asarray(p) for p in params]
        jx, jy = jnp.asarray(x), jnp.asarray(y)
        vg, vg_jit = jax.value_and_grad(jloss), jax.jit(jax.value_and_grad(jloss))

        def runner(f):
            def step():
                loss, gs = jax.block_until_ready(f(jp, jx, jy))
                return np.asarray(loss), [np.asarray(g) for g in gs]
            return step

        out["jax"] = ("jax (no jit)", runner(vg))
        out["jax_jit"] = ("jax.jit", runner(vg_jit))
    if "autograd" in peers:
        ag = peers["autograd"]
        anp = ag.numpy

        def aloss(ps):
            W1, b1, W2, b2, W3, b3 = ps
            h = anp.maximum(anp.dot(x, W1) + b1, 0.0)
            h = anp.maximum(anp.dot(h, W2) + b2, 0.0)
            z = anp.dot(h, W3) + b3
            z = z - anp.max(z, axis=1, keepdims=True)
            logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
            return -anp.sum(y * logp) / B

        avg = ag.value_and_grad(aloss)
        out["autograd"] = ("HIPS autograd", lambda: avg(list(params)))
    if "mygrad" in peers:
        mg = peers["mygrad"]
        from mygrad.nnet.activations import logsoftmax, relu

        mp = [mg.tensor(p) for p in params]

        def mygrad_step():
            W1, b1, W2, b2, W3, b3 = mp
            h = relu(mg.matmul(x, W1) + b1)
            h = relu(mg.matmul(h, W2) + b2)
            loss = -mg.sum(y * logsoftmax(mg.matmul(h, W3) + b3, axis=-1)) / B
            loss.backward()
            return loss.data, [p.grad for p in mp]

        out["mygrad"] = ("mygrad", mygrad_step)
    return out


def check(ref, got, rtol=2e-3, atol=1e-5):
    """True when ``got`` = (loss, grads) matches ``ref`` (float32 tolerances)."""
    (l0, g0), (l1, g1) = ref, got
    if not np.allclose(np.asarray(l1, np.float64), l0, rtol=rtol, atol=atol):
        return False
    return all(np.allclose(np.asarray(b, np.float64), a, rtol=rtol, atol=atol * max(1.0, np.abs(a).max()))
               for a, b in zip(g0, g1))


def make_cases(cfg, peers):
    """``{name: (label, step)}``: hand-written NumPy, gpuad and the peers' steps on one set of arrays."""
    params, x, y = setup(cfg["sizes"], cfg["batch"])
    step = gpuad_step_fn()
    cases = {"numpy": ("hand-written NumPy", lambda: numpy_step(params, x, y)),
             "gpuad": ("gpuad.value_and_grad", lambda: step(params, x, y))}
    cases.update(peer_steps(peers, params, x, y))
    return cases


def run(cfg, peers, reps, warmup, rounds=0):
    """The MLP workload; ``rounds > 0`` times it in fresh processes (see :mod:`bench.rounds`)."""
    cases = make_cases(cfg, peers)
    ref = cases["numpy"][1]()
    agrees = {}
    for k, (_, fn) in cases.items():
        loss, g = fn()
        if k == "gpuad":
            g = [np.asarray(v) for v in g]
        agrees[k] = bool(check(ref, (loss, g)))
    timing = timed(cases, "mlp", cfg, reps, warmup, rounds)
    rows = {}
    for k, (label, _) in cases.items():
        t = timing[k]
        rows[k] = {"label": label, "ms": summarize(t["times"], 1e3), "agrees": agrees[k],
                   "vs_numpy": t["vs_numpy"], "cpu_per_wall": t["cpu_per_wall"]}
    return {"benchmark": "mlp", "unit": "ms per step",
            "workload": {"sizes": list(cfg["sizes"]), "batch": cfg["batch"], "dtype": "float32",
                         "loss": "mean softmax cross-entropy, ReLU hidden layers"},
            "timing": timing_note(rounds), "results": rows}
