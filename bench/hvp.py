"""Workload 4: Hessian-vector product of ``f(x) = sum(tanh(A x) ** 2)``, as a multiple of one gradient.

A is 1000 x 1000 float32 (a closed-over constant), x and v have 1000
elements.  For each library the HVP time is divided by the same library's
gradient time (paired per repetition), so the ratio says what the second
order costs on top of the first.  gpuad: ``gpuad.hvp`` (forward-over-reverse)
against ``gpuad.grad``.  Hand-written NumPy: three matrix-vector products for
the HVP against two for the gradient.
"""

from __future__ import annotations

import numpy as np

from .common import CPU_PER_WALL, paired_ratio, summarize, time_interleaved

FULL = {"n": 1000}
QUICK = {"n": 200}


def setup(n, seed=0):
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    return A, x, v


def numpy_grad(A, x):
    t = np.tanh(A @ x)
    return A.T @ (2 * t * (1 - t * t))  # d/dy tanh(y)^2 = 2 t (1 - t^2)


def numpy_hvp(A, x, v):
    t = np.tanh(A @ x)
    t2 = t * t
    s2 = 2 * (1 - t2) * (1 - 3 * t2)  # d2/dy2 tanh(y)^2
    return A.T @ (s2 * (A @ v))


def cases(peers, A, x, v):
    """``{library: (label, grad_fn, hvp_fn)}``; each fn returns a NumPy array (hvp_fn may be None)."""
    import gpuad
    from gpuad import xp

    def f(x):
        return xp.sum(xp.tanh(xp.matmul(A, x)) ** 2)

    gf = gpuad.grad(f)
    out = {
        "numpy": ("hand-written NumPy", lambda: numpy_grad(A, x), lambda: numpy_hvp(A, x, v)),
        "gpuad": ("gpuad.grad / gpuad.hvp", lambda: gf(x), lambda: gpuad.hvp(f, (x,), (v,))),
    }
    if "torch" in peers:
        torch = peers["torch"]
        tA, tv = torch.from_numpy(A), torch.from_numpy(v)
        tx = torch.from_numpy(x.copy()).requires_grad_()

        def tf(x):
            return torch.sum(torch.tanh(tA @ x) ** 2)

        def torch_grad():
            return torch.autograd.grad(tf(tx), tx)[0].numpy()

        def torch_hvp():  # reverse-over-reverse, the usual eager recipe
            (g,) = torch.autograd.grad(tf(tx), tx, create_graph=True)
            return torch.autograd.grad(g, tx, grad_outputs=tv)[0].numpy()

        out["torch"] = ("torch eager (double backward)", torch_grad, torch_hvp)
    if "jax" in peers:
        jax = peers["jax"]
        jnp = jax.numpy
        jA, jx, jv = jnp.asarray(A), jnp.asarray(x), jnp.asarray(v)

        def jf(x):
            return jnp.sum(jnp.tanh(jA @ x) ** 2)

        def jhvp(x, v):
            return jax.jvp(jax.grad(jf), (x,), (v,))[1]

        jg, jg_jit, jh_jit = jax.grad(jf), jax.jit(jax.grad(jf)), jax.jit(jhvp)
        out["jax"] = ("jax (no jit), jvp of grad",
                      lambda: np.asarray(jax.block_until_ready(jg(jx))),
                      lambda: np.asarray(jax.block_until_ready(jhvp(jx, jv))))
        out["jax_jit"] = ("jax.jit, jvp of grad",
                          lambda: np.asarray(jax.block_until_ready(jg_jit(jx))),
                          lambda: np.asarray(jax.block_until_ready(jh_jit(jx, jv))))
    if "autograd" in peers:
        ag = peers["autograd"]
        anp = ag.numpy

        def af(x):
            return anp.sum(anp.tanh(anp.dot(A, x)) ** 2)

        ag_g, ag_h = ag.grad(af), ag.hessian_vector_product(af)
        out["autograd"] = ("HIPS autograd", lambda: ag_g(x), lambda: ag_h(x, v))
    return out


def run(cfg, peers, reps, warmup):
    A, x, v = setup(cfg["n"])
    cs = cases(peers, A, x, v)
    g_ref, h_ref = numpy_grad(A, x), numpy_hvp(A, x, v)
    fns, agrees = {}, {}
    for k, (_, g, h) in cs.items():
        agrees[k] = bool(np.allclose(np.asarray(g()), g_ref, rtol=1e-3, atol=1e-4)
                         and np.allclose(np.asarray(h()), h_ref, rtol=1e-3, atol=1e-4))
        fns[k + ":grad"], fns[k + ":hvp"] = g, h
    times = time_interleaved(fns, reps, warmup)
    rows = {}
    for k, (label, _, _) in cs.items():
        tg, th = times[k + ":grad"], times[k + ":hvp"]
        rows[k] = {"label": label, "grad_ms": summarize(tg, 1e3), "hvp_ms": summarize(th, 1e3),
                   "hvp_over_grad": paired_ratio(th, tg), "agrees": agrees[k],
                   "cpu_per_wall": max(CPU_PER_WALL.get(k + ":grad", 0), CPU_PER_WALL.get(k + ":hvp", 0))}
    return {"benchmark": "hvp", "unit": "HVP time / gradient time",
            "workload": {"f": "sum(tanh(A @ x) ** 2)", "n": cfg["n"], "dtype": "float32"},
            "results": rows}
