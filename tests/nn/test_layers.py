"""gpuad.nn layers, functional forms and losses: values against NumPy references,
gradients through check_grads on every backend (strict device1 included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuad
from gpuad import nn, random
from gpuad.nn import functional as F
from gpuad.testing import check_grads

BOTH = ("fwd", "rev")
RNG = np.random.default_rng(0)


def _r(*shape, scale=1.0):
    return RNG.normal(size=shape) * scale


def conv_ref(x, w, b, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, c, h, wd = xp.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // s + 1, (wd - kw) // s + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i * s:i * s + kh, j * s:j * s + kw], w)
    return out + (0 if b is None else b[None, :, None, None])


def pool_ref(x, k, s, p, op):
    fill = -np.inf if op is np.max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    h, w = xp.shape[2:]
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = op(xp[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return out


# --- values ------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2), (3, 0)])
def test_conv2d_matches_reference(backend, stride, padding):
    x, w, b = _r(2, 3, 7, 6), _r(4, 3, 3, 2), _r(4)
    y = F.conv2d(backend.asarray(x), backend.asarray(w), backend.asarray(b), stride=stride, padding=padding)
    np.testing.assert_allclose(backend.to_numpy(y), conv_ref(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)


def test_conv2d_1x1_and_no_bias(backend):
    x, w = _r(2, 3, 4, 4), _r(5, 3, 1, 1)
    y = F.conv2d(backend.asarray(x), backend.asarray(w), stride=2)
    np.testing.assert_allclose(backend.to_numpy(y), conv_ref(x, w, None, 2, 0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (2, 1, 0), (3, 2, 1)])
def test_pools_match_reference(backend, k, s, p):
    x = _r(2, 2, 6, 6)
    got = F.max_pool2d(backend.asarray(x), k, s, p)
    np.testing.assert_allclose(backend.to_numpy(got), pool_ref(x, k, s, p, np.max))
    got = F.avg_pool2d(backend.asarray(x), k, s, p)
    np.testing.assert_allclose(backend.to_numpy(got), pool_ref(x, k, s, p, np.mean), rtol=1e-12)


def test_layer_norm_and_batch_norm_values(backend):
    x = _r(4, 3, 2, 2) * 3 + 1
    y = F.layer_norm(backend.asarray(x), axis=(1, 2, 3))
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    v = x.var(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(backend.to_numpy(y), (x - m) / np.sqrt(v + 1e-5), rtol=1e-10)
    bn = nn.BatchNorm(3, momentum=0.5)
    key = random.key(0, like=backend.asarray(0.0))
    params, state = bn.init(key, "float64"), bn.init_state(key, "float64")
    y, new = bn.apply(params, state, backend.asarray(x), training=True)
    bm, bv = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(backend.to_numpy(y), (x - bm[None, :, None, None]) /
                               np.sqrt(bv[None, :, None, None] + 1e-5), rtol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(new["mean"]), 0.5 * bm, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(new["var"]), 0.5 + 0.5 * bv * 16 / 15, rtol=1e-12)
    y2, same = bn.apply(params, new, backend.asarray(x), training=False)
    np.testing.assert_allclose(backend.to_numpy(y2), (x - 0.5 * bm[None, :, None, None]) /
                               np.sqrt(backend.to_numpy(new["var"])[None, :, None, None] + 1e-5), rtol=1e-10)
    assert same["mean"] is new["mean"] and same["var"] is new["var"]


def test_losses_values_and_stability(backend):
    logits = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3]])
    labels = np.array([1, 2])
    ce = F.cross_entropy(backend.asarray(logits), backend.asarray(labels, dtype="int64"), reduction="none")
    ref1 = 1000.0
    ref2 = -(0.3 - np.log(np.exp(0.1) + np.exp(0.2) + np.exp(0.3)))
    np.testing.assert_allclose(backend.to_numpy(ce), [ref1, ref2], rtol=1e-12)
    z = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    t = np.array([0.0, 1.0, 0.5, 0.0, 1.0])
    got = F.binary_cross_entropy_with_logits(backend.asarray(z), backend.asarray(t), reduction="none")
    ref = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(backend.to_numpy(got), ref, rtol=1e-12)
    assert np.isfinite(backend.to_numpy(got)).all()
    m = F.mse(backend.asarray([1.0, 2.0]), backend.asarray([0.0, 0.0]))
    assert backend.to_numpy(m) == pytest.approx(2.5)


def test_attention_is_causal_and_matches_reference(backend):
    b, t, d, h = 2, 4, 6, 2
    x, wqkv, wo = _r(b, t, d), _r(d, 3 * d, scale=0.3), _r(d, d, scale=0.3)
    y = backend.to_numpy(F.causal_self_attention(backend.asarray(x), backend.asarray(wqkv), backend.asarray(wo), h))
    qkv = (x @ wqkv).reshape(b, t, 3, h, d // h).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // h)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ref = (a @ v).transpose(0, 2, 1, 3).reshape(b, t, d) @ wo
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    # Changing a later token leaves earlier outputs unchanged.
    x2 = x.copy()
    x2[:, -1] += 5.0
    y2 = backend.to_numpy(F.causal_self_attention(backend.asarray(x2), backend.asarray(wqkv), backend.asarray(wo), h))
    np.testing.assert_allclose(y2[:, :-1], y[:, :-1], rtol=1e-12, atol=1e-12)


def test_dropout_mask_scale_and_determinism(backend):
    x = backend.asarray(np.ones((1000,)))
    key = random.key(3, like=x)
    y = backend.to_numpy(F.dropout(key, x, 0.25))
    assert set(np.unique(y)) <= {0.0, 1.0 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.05
    np.testing.assert_array_equal(backend.to_numpy(F.dropout(key, x, 0.25)), y)
    assert F.dropout(key, x, 0.25, training=False) is x


def test_layers_init_on_the_key_device(backend):
    key = random.key(0, like=backend.asarray(0.0))
    layers = {
        "lin": (nn.Linear(3, 4), {"w": (3, 4), "b": (4,)}),
        "conv": (nn.Conv2d(2, 5, (3, 2)), {"w": (5, 2, 3, 2), "b": (5,)}),
        "ln": (nn.LayerNorm(4), {"gamma": (4,), "beta": (4,)}),
        "emb": (nn.Embedding(7, 3), {"table": (7, 3)}),
        "att": (nn.CausalSelfAttention(4, 2), {"wqkv": (4, 12), "bqkv": (12,), "wo": (4, 4), "bo": (4,)}),
    }
    for name, (layer, shapes) in layers.items():
        p = layer.init(key, "float32")
        assert {k: tuple(v.shape) for k, v in p.items()} == shapes, name
        for v in p.values():
            assert v.device == key.device and "float32" in str(v.dtype)


def test_initializer_statistics():
    key = random.key(1, like=np.zeros(()))  # on NumPy whatever the default backend: statistics on the host
    w = np.asarray(nn.he_normal(key, (400, 300), "float64"))
    assert abs(w.std() - math.sqrt(2 / 400)) < 0.002
    w = np.asarray(nn.glorot_uniform(key, (400, 300), "float64"))
    a = math.sqrt(6 / 700)
    assert w.min() >= -a and w.max() < a and abs(w.std() - a / math.sqrt(3)) < 0.002
    assert nn.initializers.fans((8, 3, 5, 5), in_axis=1, out_axis=0) == (75, 200)


def test_conv2d_variance_scaling_w_init_uses_conv_fans():
    # (O, C, kh, kw) weights: fan_in = C*kh*kw, fan_out = O*kh*kw, whichever initialiser is given.
    import functools

    key = random.key(2, like=np.zeros(()))
    o, c, k = 64, 48, 3
    std = lambda layer: float(np.asarray(layer.init(key, "float64")["w"]).std())  # noqa: E731
    assert abs(std(nn.Conv2d(c, o, k, w_init=nn.he_normal)) - math.sqrt(2 / (c * k * k))) < 0.002
    a = math.sqrt(6 / ((c + o) * k * k))
    assert abs(std(nn.Conv2d(c, o, k, w_init=nn.glorot_uniform)) - a / math.sqrt(3)) < 0.002
    gained = functools.partial(nn.glorot_normal, gain=2.0)
    assert abs(std(nn.Conv2d(c, o, k, w_init=gained)) - 2 * math.sqrt(2 / ((c + o) * k * k))) < 0.004
    # An initialiser without fan axes is called with (key, shape, dtype) only.
    w = nn.Conv2d(c, o, k, w_init=lambda key, shape, dtype: nn.initializers.ones(key, shape, dtype)).init(key)["w"]
    assert np.asarray(w).shape == (o, c, k, k) and float(np.asarray(w).min()) == 1.0


def test_embedding_values(backend):
    table = _r(5, 3)
    ids = np.array([[0, 4], [4, 2]])
    got = F.embedding(backend.asarray(table), backend.asarray(ids, dtype="int64"))
    np.testing.assert_allclose(backend.to_numpy(got), table[ids])


# --- gradients ------------------------------------------------------------------
def test_conv2d_check_grads(backend):
    x, w, b = backend.asarray(_r(2, 2, 5, 4)), backend.asarray(_r(3, 2, 3, 2)), backend.asarray(_r(3))
    check_grads(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1), (x, w, b), order=1, modes=BOTH)


def test_conv2d_second_order_small(cpu_backend):
    x, w = cpu_backend.asarray(_r(1, 1, 3, 3)), cpu_backend.asarray(_r(2, 1, 2, 2))
    check_grads(lambda x, w: F.conv2d(x, w, padding=1), (x, w), order=2, modes=BOTH)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1)])
def test_pool_check_grads(backend, k, s, p):
    x = backend.asarray(_r(1, 2, 5, 5) if (k, s, p) != (2, 2, 0) else _r(1, 2, 4, 4))
    check_grads(lambda x: F.max_pool2d(x, k, s, p), (x,), order=2, modes=BOTH)
    check_grads(lambda x: F.avg_pool2d(x, k, s, p), (x,), order=2, modes=BOTH)


def test_linear_layer_norm_check_grads(backend):
    x, w, b = backend.asarray(_r(3, 4)), backend.asarray(_r(4, 2)), backend.asarray(_r(2))
    g, be = backend.asarray(_r(4)), backend.asarray(_r(4))
    check_grads(F.linear, (x, w, b), order=2, modes=BOTH)
    check_grads(lambda x, g, be: F.layer_norm(x, g, be), (x, g, be), order=2, modes=BOTH)


def test_batch_norm_check_grads(backend):
    x, g, b = backend.asarray(_r(4, 3, 2)), backend.asarray(_r(3)), backend.asarray(_r(3))
    rm, rv = backend.asarray(np.zeros(3)), backend.asarray(np.ones(3))
    for training in (True, False):
        check_grads(lambda x, g, b: F.batch_norm(x, g, b, rm, rv, training=training)[0], (x, g, b),
                    order=2 if training else 1, modes=BOTH)


def test_dropout_embedding_check_grads(backend):
    x = backend.asarray(_r(3, 4))
    key = random.key(0, like=x)
    check_grads(lambda x: F.dropout(key, x, 0.5), (x,), order=2, modes=BOTH)
    table = backend.asarray(_r(4, 2))
    ids = backend.asarray([[0, 3, 3]], dtype="int64")
    check_grads(lambda t: F.embedding(t, ids), (table,), order=2, modes=BOTH)


def test_attention_check_grads(backend):
    x, wqkv, wo = backend.asarray(_r(1, 3, 4)), backend.asarray(_r(4, 12, scale=0.5)), backend.asarray(_r(4, 4))
    bqkv, bo = backend.asarray(_r(12)), backend.asarray(_r(4))
    check_grads(lambda x, a, c, d, e: F.causal_self_attention(x, a, c, 2, d, e), (x, wqkv, wo, bqkv, bo),
                order=1, modes=BOTH)


def test_losses_check_grads(backend):
    logits = backend.asarray(_r(3, 4))
    labels = backend.asarray([0, 3, 1], dtype="int64")
    check_grads(lambda z: F.cross_entropy(z, labels), (logits,), order=2, modes=BOTH)
    t = backend.asarray(RNG.uniform(size=(3, 4)))
    check_grads(F.binary_cross_entropy_with_logits, (logits, t), order=2, modes=BOTH)
    check_grads(F.mse, (logits, t), order=2, modes=BOTH)


def test_cross_entropy_gradient_is_softmax_minus_onehot(backend):
    z = _r(2, 3)
    g = gpuad.grad(lambda z: F.cross_entropy(z, backend.asarray([2, 0], dtype="int64"), reduction="sum"))(
        backend.asarray(z))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    p[0, 2] -= 1
    p[1, 0] -= 1
    np.testing.assert_allclose(backend.to_numpy(g), p, rtol=1e-12)


# --- errors -----------------------------------------------------------------------
def test_errors_name_function_and_shapes():
    x = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"conv2d: x has 3 channels.*\(2, 3, 4, 4\).*expects 2"):
        F.conv2d(x, np.zeros((5, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: x must be 4-D"):
        F.conv2d(np.zeros((3, 4, 4)), np.zeros((5, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: the window 3x3 does not fit"):
        F.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"linear: x of shape \(2, 3\) does not match weight of shape \(4, 5\)"):
        F.linear(np.zeros((2, 3)), np.zeros((4, 5)))
    msg = r"cross_entropy: labels of shape \(3,\) do not match logits of shape \(2, 4\)"
    with pytest.raises(ValueError, match=msg):
        F.cross_entropy(np.zeros((2, 4)), np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="cross_entropy: labels must be integers"):
        F.cross_entropy(np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="dropout: rate must be in"):
        F.dropout(random.key(0), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="CausalSelfAttention: features=5 is not divisible by num_heads=2"):
        nn.CausalSelfAttention(5, 2)
    with pytest.raises(ValueError, match="Linear: in_features must be a positive int"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match=r"LayerNorm: expected last axis of size 4, got shape \(2, 3\)"):
        nn.LayerNorm(4).apply({"gamma": None, "beta": None}, np.zeros((2, 3)))


@pytest.mark.parametrize("make,message", [
    (lambda: nn.Conv2d(3, 4, 0), "Conv2d: kernel_size must be >= 1 on each axis, got 0"),
    (lambda: nn.Conv2d(3, 4, (3, 0)), r"Conv2d: kernel_size must be >= 1 on each axis, got \(3, 0\)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "Conv2d: stride must be >= 1 on each axis, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, padding=(0, -1)), r"Conv2d: padding must be >= 0 on each axis, got \(0, -1\)"),
    (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be >= 1 on each axis, got 0"),
    (lambda: nn.AvgPool2d(2, stride=0), "AvgPool2d: stride must be >= 1 on each axis, got 0"),
    (lambda: nn.MaxPool2d(2, padding=2), r"MaxPool2d: padding 2 is more than half of kernel_size 2 \(at most 1 x 1\)"),
    (lambda: nn.AvgPool2d((3, 2), padding=(1, 2)), r"AvgPool2d: padding \(1, 2\) is more than half of kernel_size "
                                                  r"\(3, 2\) \(at most 1 x 1\)"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 2, 2)), 2, 2, padding=2),
     "max_pool2d: padding 2 is more than half of kernel_size 2 .*windows entirely in the padding"),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), 3, padding=2), "avg_pool2d: padding 2 is more than half"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=-1), "max_pool2d: padding must be >= 0"),
    (lambda: F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), padding=-1),
     "conv2d: padding must be >= 0 on each axis, got -1"),
    (lambda: F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), stride=(1, 0)), "conv2d: stride must be >= 1"),
    (lambda: F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 0, 3))),
     r"conv2d: the weight's kernel must be at least 1x1, got a weight of shape \(1, 1, 0, 3\)"),
])
def test_window_arguments_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_pool_padding_up_to_half_the_kernel_is_fine():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    y = F.max_pool2d(x, 2, 2, padding=1)  # every window holds an input element
    np.testing.assert_array_equal(np.asarray(y), [[[[0.0, 1.0], [2.0, 3.0]]]])
    layer = nn.MaxPool2d(np.int64(2), padding=1)  # NumPy integers are ints
    assert (layer.kernel_size, layer.stride, layer.padding) == ((2, 2), (2, 2), (1, 1))
    np.testing.assert_array_equal(np.asarray(layer.apply({}, x)), np.asarray(y))


@pytest.mark.parametrize("name", ["zeros", "ones", "constant", "normal", "uniform", "glorot_uniform",
                                  "glorot_normal", "he_normal", "he_uniform", "lecun_normal"])
def test_initializers_have_numpydoc_parameters_and_returns(name):
    import inspect

    doc = inspect.getdoc(getattr(nn.initializers, name))
    assert "Parameters\n----------\n" in doc and "Returns\n-------\n" in doc, name
    assert "shape" in doc.split("Returns")[1], name  # the shape of what comes back
    assert "; see :func:" not in doc.splitlines()[0], name  # a summary of its own, not a pointer
