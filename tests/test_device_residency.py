"""Nothing leaves the device: array-api-strict's Device("device1") stands in for a GPU.

Arrays there already refuse conversion to NumPy and mixing with other devices.
On top of that, while a transform runs, ``float``/``bool``/``int``/``__index__``
/``__dlpack__``/``__array__`` are made to raise for any array not on the CPU
device, so a hidden host round-trip anywhere in forward or backward fails.
"""

import contextlib

import numpy as np
import pytest

import gpuad
from gpuad import xp

strict = pytest.importorskip("array_api_strict")
DEV = strict.Device("device1")
CPU = strict.Device("CPU_DEVICE")


@contextlib.contextmanager
def no_host_transfers():
    Array = type(strict.asarray(0.0))
    names = ["__float__", "__bool__", "__int__", "__index__", "__dlpack__", "__array__", "__complex__"]
    saved = {n: getattr(Array, n) for n in names if hasattr(Array, n)}

    def guard(name, orig):
        def method(self, *a, **k):
            if self.device != CPU:
                raise AssertionError(f"host transfer: {name} called on an array on {self.device}")
            return orig(self, *a, **k)

        return method

    for n, orig in saved.items():
        setattr(Array, n, guard(n, orig))
    try:
        yield
    finally:
        for n, orig in saved.items():
            setattr(Array, n, orig)


def _arr(a):
    return strict.asarray(np.asarray(a, dtype=np.float64), device=DEV)


def mlp_params(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(4, 8), (8, 8), (8, 1)]
    return [{"w": _arr(rng.normal(size=s) / np.sqrt(s[0])), "b": _arr(rng.normal(size=s[1]) * 0.1)} for s in sizes]


def mlp_loss(params, x, y):
    h = x
    for i, layer in enumerate(params):
        h = xp.add(xp.matmul(h, layer["w"]), layer["b"])  # (strict: plain_array + tracer raises)
        if i < len(params) - 1:
            h = xp.tanh(h)
    return xp.mean((h - y) ** 2)


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return _arr(rng.normal(size=(5, 4))), _arr(rng.normal(size=(5, 1)))


def test_guard_really_trips():
    with no_host_transfers(), pytest.raises(AssertionError, match="host transfer"):
        float(_arr(1.0))


def test_grad_of_mlp_stays_on_device(data):
    x, y = data
    params = mlp_params()
    with no_host_transfers():
        g = gpuad.grad(mlp_loss)(params, x, y)
    for layer in g:
        for v in layer.values():
            assert v.device == DEV
    # Same numbers as on the CPU device (computed with the guard off).
    params_cpu = [{k: v.to_device(CPU) for k, v in layer.items()} for layer in params]
    g_cpu = gpuad.grad(mlp_loss)(params_cpu, x.to_device(CPU), y.to_device(CPU))
    for a, b in zip(g, g_cpu):
        for k in a:
            np.testing.assert_allclose(np.asarray(a[k].to_device(CPU)), np.asarray(b[k]), rtol=1e-13)


def test_jvp_and_hessian_of_mlp_stay_on_device(data):
    x, y = data
    params = mlp_params()
    tangents = [{k: strict.ones_like(v) for k, v in layer.items()} for layer in params]
    with no_host_transfers():
        out, t = gpuad.jvp(lambda p: mlp_loss(p, x, y), (params,), (tangents,))
        assert out.device == DEV and t.device == DEV

        def loss_b3(b3):
            p = [params[0], params[1], {"w": params[2]["w"], "b": b3}]
            return mlp_loss(p, x, y)

        h = gpuad.hessian(loss_b3)(params[2]["b"])
        assert h.shape == (1, 1) and h.device == DEV

        def loss_w3(w3):
            return mlp_loss([params[0], params[1], {"w": w3, "b": params[2]["b"]}], x, y)

        hw = gpuad.hessian(loss_w3)(params[2]["w"])
        assert hw.shape == (8, 1, 8, 1) and hw.device == DEV
        hv = gpuad.hvp(loss_w3, (params[2]["w"],), (strict.ones_like(params[2]["w"]),))
        assert hv.device == DEV
    # d2 loss / d b3^2 = 2 (mean of squared error over 5 rows: 2/5 * 5)
    assert abs(float(h.to_device(CPU)[0, 0]) - 2.0) < 1e-12


def test_mask_assignment_of_array_values_stays_on_device():
    # A lone mask key reaches the backend bare: array-api-strict's tuple-key setitem goes through NumPy.
    z = strict.asarray([-1.5, -0.5, 0.5, 1.5], device=DEV)

    def f(x):
        y = x * 1.0
        y[x > 0] = x[x > 0] * 3.0
        return xp.sum(y ** 2)

    with no_host_transfers():
        g = gpuad.grad(f)(z)
        h = gpuad.hessian(f)(z)
    assert g.device == DEV and h.device == DEV
    z_host = np.asarray([-1.5, -0.5, 0.5, 1.5])
    np.testing.assert_array_equal(np.asarray(g.to_device(CPU)), np.where(z_host > 0, 18.0, 2.0) * z_host)
    np.testing.assert_array_equal(np.diag(np.asarray(h.to_device(CPU))), np.where(z_host > 0, 18.0, 2.0))


def test_mixing_devices_is_a_clear_error():
    a = _arr([1.0, 2.0])
    b = strict.asarray([1.0, 2.0])
    with pytest.raises(ValueError, match="two devices") as e:
        gpuad.grad(lambda a: xp.sum(xp.multiply(a, b)))(a)
    assert "device1" in str(e.value) and "CPU_DEVICE" in str(e.value)
