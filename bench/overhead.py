"""Workload 3: per-op overhead of gpuad on tiny arrays.

A chain of ``n_ops`` elementwise ops (``sin``, ``cos``, ``multiply`` by 0.9,
``add`` 0.1, in turn) on a float32 array of shape (4,), so the arithmetic is
negligible and the time is the per-op cost of the library.

Measured, each as total time / ``n_ops``:

``numpy_forward``
    the chain in plain NumPy (the floor);
``gpuad_forward``
    the chain through ``gpuad.xp`` on plain NumPy arrays (no transform:
    dispatch only);
``gpuad_grad``
    ``gpuad.grad`` of ``sum(chain(x))`` (forward with taping + backward);
``numpy_tape_grad``
    a hand-written NumPy forward that saves what the backward needs, then
    the backward pass (what a zero-overhead reverse mode would cost);
``torch``, ``jax``, ``autograd``, ``mygrad``
    the same gradient with each peer that is installed (jax without jit: with
    jit the chain compiles to one kernel and per-op cost is not defined).
"""

from __future__ import annotations

import numpy as np

from .common import CPU_PER_WALL, paired_ratio, summarize, time_interleaved

FULL = {"n_ops": 2000, "size": 4}
QUICK = {"n_ops": 200, "size": 4}


def chain(ns, x, n_ops):
    """``n_ops`` elementwise ops through namespace ``ns`` (numpy or gpuad.xp)."""
    sin, cos, mul, add = ns.sin, ns.cos, ns.multiply, ns.add
    for i in range(n_ops):
        k = i & 3
        if k == 0:
            x = sin(x)
        elif k == 1:
            x = cos(x)
        elif k == 2:
            x = mul(x, 0.9)
        else:
            x = add(x, 0.1)
    return x


def numpy_tape_grad(np, x, n_ops):
    """Gradient of ``sum(chain(x))`` by a hand-written NumPy tape."""
    tape = []
    for i in range(n_ops):
        k = i & 3
        if k == 0:
            tape.append(np.cos(x))  # d sin
            x = np.sin(x)
        elif k == 1:
            tape.append(-np.sin(x))  # d cos
            x = np.cos(x)
        elif k == 2:
            tape.append(None)
            x = np.multiply(x, 0.9)
        else:
            tape.append(None)
            x = np.add(x, 0.1)
    g = np.ones_like(x)
    for i in range(n_ops - 1, -1, -1):
        k = i & 3
        if k == 2:
            g = np.multiply(g, 0.9)
        elif k < 2:
            g = np.multiply(g, tape[i])
    return np.sum(x), g


def peer_grads(peers, x0, n_ops):
    """``{name: (label, fn)}``; each ``fn()`` returns the gradient as a NumPy array."""
    out = {}
    if "torch" in peers:
        torch = peers["torch"]
        tx = torch.from_numpy(x0.copy()).requires_grad_()

        def torch_grad():
            (g,) = torch.autograd.grad(torch.sum(chain(torch, tx, n_ops)), (tx,))
            return g.numpy()

        out["torch"] = ("torch eager", torch_grad)
    if "jax" in peers:
        jax = peers["jax"]
        jnp = jax.numpy
        jx = jnp.asarray(x0)
        jg = jax.grad(lambda x: jnp.sum(chain(jnp, x, n_ops)))
        out["jax"] = ("jax (no jit)", lambda: np.asarray(jax.block_until_ready(jg(jx))))
    if "autograd" in peers:
        ag = peers["autograd"]
        anp = ag.numpy
        agf = ag.grad(lambda x: anp.sum(chain(anp, x, n_ops)))
        out["autograd"] = ("HIPS autograd", lambda: agf(x0))
    if "mygrad" in peers:
        mg = peers["mygrad"]

        def mygrad_grad():
            x = mg.tensor(x0)
            mg.sum(chain(mg, x, n_ops)).backward()
            return x.grad

        out["mygrad"] = ("mygrad", mygrad_grad)
    return out


def run(cfg, peers, reps, warmup):
    import gpuad
    from gpuad import xp

    n_ops, size = cfg["n_ops"], cfg["size"]
    x0 = np.linspace(0.1, 0.7, size, dtype=np.float32)
    gf = gpuad.grad(lambda x: xp.sum(chain(xp, x, n_ops)))

    # The cases compute the same thing; check before timing.
    ref = chain(np, x0, n_ops)
    assert np.allclose(chain(xp, x0, n_ops), ref)
    _, g_tape = numpy_tape_grad(np, x0, n_ops)
    cases = {
        "numpy_forward": ("raw NumPy forward", lambda: chain(np, x0, n_ops)),
        "gpuad_forward": ("gpuad.xp forward, plain arrays (no transform)", lambda: chain(xp, x0, n_ops)),
        "gpuad_grad": ("gpuad.grad (forward + backward)", lambda: gf(x0)),
        "numpy_tape_grad": ("hand-written NumPy tape (forward + backward)", lambda: numpy_tape_grad(np, x0, n_ops)),
    }
    cases.update(peer_grads(peers, x0, n_ops))
    agrees = {k: bool(np.allclose(np.asarray(fn()), g_tape, rtol=1e-4, atol=1e-6))
              for k, (_, fn) in cases.items() if k not in ("numpy_forward", "gpuad_forward", "numpy_tape_grad")}
    times = time_interleaved({k: fn for k, (_, fn) in cases.items()}, reps, warmup)
    rows = {}
    for key, (label, _) in cases.items():
        base = "numpy_forward" if key.endswith("_forward") else "numpy_tape_grad"
        rows[key] = {"label": label, "us_per_op": summarize(times[key], 1e6 / n_ops),
                     "vs_numpy": paired_ratio(times[key], times[base]), "cpu_per_wall": CPU_PER_WALL.get(key)}
        if key in agrees:
            rows[key]["agrees"] = agrees[key]
    return {"benchmark": "overhead", "unit": "µs per op",
            "workload": {"n_ops": n_ops, "shape": [size], "dtype": "float32",
                         "ops": "sin, cos, multiply(x, 0.9), add(x, 0.1), repeated"},
            "results": rows}
