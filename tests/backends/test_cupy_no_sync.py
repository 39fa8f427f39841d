"""No hidden host synchronisation on a real GPU: only an explicit ``float(loss)`` waits for the device.

A gradient step, an HVP, a checkpointed chain's recomputation and an Adam
step run inside :func:`no_sync`, which uses two detectors:

* CuPy's own, ``cupyx.allow_synchronize(False)``: CuPy raises
  ``cupyx.DeviceSynchronized`` at the call that would synchronise (every
  device-to-host copy: ``ndarray.get``, hence ``float``/``bool``/``int``/
  ``item``/``tolist``/``cupy.asnumpy``; ``Device.synchronize``), so a failure
  points at the offending line.  CuPy deprecated it in v10 (it only sees the
  calls CuPy declares as synchronising, and not those made outside CuPy) and
  may remove it; it is used when present.
* A spin kernel, which needs nothing from CuPy's bookkeeping: before the block
  a one-thread kernel that spins on the GPU's clock for ``spin_s`` seconds is
  launched on the current stream and an event recorded after it.  Every
  later launch queues behind it, so if the event is still pending when the
  block returns, the host never waited for the device during the block: a
  synchronisation of any kind (a device-to-host copy, a stream or device
  synchronise, a synchronous ``cudaMemcpy``, ``cudaFree``) would have waited
  for the spin.  Host-to-device copies are not synchronisations: CuPy stages
  them in pinned memory and copies asynchronously (0-d arrays from Python
  scalars are filled by a kernel), so they do not trip it.

Every block runs twice first, outside the detectors, so that kernels are
compiled, cuBLAS handles made and CuPy's memory pools hold the blocks the
measured run reuses (first-time ``cudaMalloc``/``cudaHostAlloc`` and NVRTC
are setup costs, not per-step syncs).  The spin lasts ten times a warm run
(at least 1 s), and the blocks are small, so they queue far fewer launches
than the GPU's launch queue holds (a full queue would also make the host
wait, and the failure message says so).

Runs only where the CuPy backend is usable (``ci/gpu.sh``); elsewhere every
test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np
import pytest

import gpuad
from gpuad import nn, optim, xp
from gpuad.backends import cupy as cupy_backend

_usable, _why = cupy_backend.probe()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _usable, reason=f"CuPy backend not usable: {_why}")]

_SPIN_SRC = r"""
extern "C" __global__ void gpuad_spin(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
"""


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


class Spin:
    """A kernel spinning ``seconds`` on the current stream, and an event recorded after it."""

    _kernel = None

    def __init__(self, cupy, seconds):
        if Spin._kernel is None:
            Spin._kernel = cupy.RawKernel(_SPIN_SRC, "gpuad_spin")
        self.seconds = seconds
        Spin._kernel((1,), (1,), (np.uint64(int(seconds * 1e9)),))
        self.event = cupy.cuda.Event()
        self.event.record()

    @property
    def finished(self):
        """Whether the spin is over (``cudaEventQuery``: does not wait)."""
        return self.event.done


@contextlib.contextmanager
def _cupy_refuses_sync(allow):
    """``cupyx.allow_synchronize(allow)`` when this CuPy has it (its deprecation warning silenced)."""
    import cupyx

    detector = getattr(cupyx, "allow_synchronize", None)
    with contextlib.ExitStack() as stack:
        if detector is not None:  # else (removed from CuPy) the spin kernel alone decides
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "deprecated" (v10+) / "experimental" (before)
                stack.enter_context(detector(allow))
        yield


@contextlib.contextmanager
def no_sync(cupy, spin_s):
    """Fail if the block waits for the GPU; yields the :class:`Spin` (still running after the block)."""
    spin = Spin(cupy, spin_s)
    t0 = time.perf_counter()
    with _cupy_refuses_sync(False):
        yield spin
    dt = time.perf_counter() - t0
    if spin.finished:
        pytest.fail(f"the block waited for the GPU: the {spin_s:.2f} s spin launched before it had finished when "
                    f"it returned after {dt:.2f} s. Something in it synchronised with the device (or, less "
                    f"likely, it launched more kernels than the GPU's launch queue holds)")


def check_no_sync(cupy, block):
    """Warm ``block`` up, run it under :func:`no_sync`, then show that ``float`` of its loss waits.

    ``block()`` returns ``(loss, other)``; returns ``(float(loss), other)``.
    """
    block()
    t0 = time.perf_counter()
    block()
    cupy.cuda.get_current_stream().synchronize()
    spin_s = max(1.0, 10 * (time.perf_counter() - t0))
    try:
        with no_sync(cupy, spin_s) as spin:
            loss, other = block()
        assert not spin.finished
        value = float(loss)  # the explicit transfer: it has to wait for the spin and the block's kernels
        assert spin.finished, "float(loss) returned before the GPU work queued before it was done"
        return value, other
    finally:
        cupy.cuda.get_current_stream().synchronize()


# --- the detectors themselves -----------------------------------------------------------------
def test_spin_sees_a_synchronisation_and_not_async_work(cp):
    x = cp.arange(4, dtype=cp.float32)
    spin = Spin(cp, 1.0)
    y = cp.sin(x) * 2 + cp.asarray(3.0) + cp.asarray(np.ones(4, np.float32))  # launches and H2D copies only
    assert not spin.finished
    cp.cuda.get_current_stream().synchronize()
    assert spin.finished
    spin = Spin(cp, 1.0)
    float(y[0])
    assert spin.finished


def test_no_sync_fails_on_float_of_a_device_array(cp):
    x = cp.ones(3)
    with pytest.raises((AssertionError, pytest.fail.Exception, RuntimeError)):
        with no_sync(cp, 1.0):
            float(x.sum())
    cp.cuda.get_current_stream().synchronize()


def test_cupy_detector_raises_when_present(cp):
    import cupyx

    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize; the spin kernel detects syncs alone")
    with pytest.raises(cupyx.DeviceSynchronized):
        with _cupy_refuses_sync(False):
            x = cp.ones(3)
            x.sum().get()


# --- gpuad ------------------------------------------------------------------------------------
def _mlp(cupy, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(12, 32), (32, 32), (32, 5)]
    params = [{"w": (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32),
               "b": (rng.standard_normal(s[1]) * 0.1).astype(np.float32)} for s in sizes]
    x = rng.standard_normal((16, 12)).astype(np.float32)
    labels = rng.integers(0, 5, 16)
    host = (params, x, labels)
    dev = ([{k: cupy.asarray(v) for k, v in p.items()} for p in params], cupy.asarray(x), cupy.asarray(labels))
    return host, dev


def mlp_loss(params, x, labels):
    h = x
    for i, layer in enumerate(params):
        h = nn.linear(h, layer["w"], layer["b"])
        if i < len(params) - 1:
            h = nn.relu(h)
    return nn.cross_entropy(h, labels)


def _close(dev_tree, host_tree, rtol=2e-4, atol=1e-5):
    for a, b in zip(gpuad.tree_leaves(dev_tree), gpuad.tree_leaves(host_tree)):
        np.testing.assert_allclose(a.get(), np.asarray(b), rtol=rtol, atol=atol)


def test_grad_of_mlp_loss_does_not_sync(cp):
    host, dev = _mlp(cp)
    vg = gpuad.value_and_grad(mlp_loss)
    value, grads = check_no_sync(cp, lambda: vg(*dev))
    want_value, want = gpuad.value_and_grad(mlp_loss)(*host)
    assert value == pytest.approx(float(want_value), rel=1e-5)
    _close(grads, want)


def test_hvp_does_not_sync(cp):
    host, dev = _mlp(cp)

    def hvp_of(params, x, labels):
        w = params[1]["w"]

        def f(w):
            ps = [params[0], {"w": w, "b": params[1]["b"]}, params[2]]
            return mlp_loss(ps, x, labels)

        v = xp.ones_like(w)
        return f(w), gpuad.hvp(f, (w,), (v,))

    _, got = check_no_sync(cp, lambda: hvp_of(*dev))
    _close(got, hvp_of(*host)[1], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("strategy,kw", [("revolve", {"snapshots": 2}), ("uniform", {"segments": 2})])
def test_checkpoint_sequential_recomputation_does_not_sync(cp, strategy, kw):
    rng = np.random.default_rng(3)
    ws = [(rng.standard_normal((16, 16)) / 4).astype(np.float32) for _ in range(6)]
    x = rng.standard_normal((8, 16)).astype(np.float32)

    def step(w, h):
        return xp.tanh(xp.matmul(h, w))

    def loss(ws, x):
        return xp.sum(gpuad.checkpoint_sequential([(step, w) for w in ws], x, strategy=strategy, **kw) ** 2)

    vg = gpuad.value_and_grad(loss)
    dws, dx = [cp.asarray(w) for w in ws], cp.asarray(x)
    value, grads = check_no_sync(cp, lambda: vg(dws, dx))
    rep = gpuad.checkpointing.last_report()
    assert rep.strategy == strategy and rep.actual_advances > 0  # the backward really recomputed
    want_value, want = gpuad.value_and_grad(loss)(ws, x)
    assert value == pytest.approx(float(want_value), rel=1e-5)
    _close(grads, want)


def test_adam_step_does_not_sync(cp):
    host, dev = _mlp(cp)
    opt = optim.adam(1e-2, clip_norm=1.0)
    state = opt.init(dev[0])
    grads = gpuad.grad(mlp_loss)(*dev)

    def block():
        params, new_state = opt.step(dev[0], grads, state)
        return mlp_loss(params, dev[1], dev[2]), (params, new_state)

    value, (params, new_state) = check_no_sync(cp, block)
    assert math.isfinite(value)
    hstate = opt.init(host[0])
    hparams, _ = opt.step(host[0], gpuad.grad(mlp_loss)(*host), hstate)
    _close(params, hparams)
    assert all(isinstance(leaf, cp.ndarray) for leaf in gpuad.tree_leaves(new_state))
