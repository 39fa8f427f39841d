"""Functional layers: a layer object holds hyper-parameters only.

``layer.init(key, dtype=...)`` returns the parameters, a dict of arrays on
the key's backend and device; ``layer.apply(params, x, ...)`` computes the
output.  Parameters are ordinary pytrees, so ``gpuad.grad`` differentiates
a loss with respect to them, and :mod:`gpuad.optim` updates them::

    from gpuad import nn, random

    conv = nn.Conv2d(1, 16, 3, padding=1)
    params = conv.init(random.key(0))            # {"w": (16, 1, 3, 3), "b": (16,)}
    y = conv.apply(params, x)                   # x: (N, 1, H, W) -> (N, 16, H, W)

Layers with state (:class:`BatchNorm`) keep it apart from the parameters:
``init_state()`` makes it and ``apply`` returns ``(y, new_state)``.
"""

from __future__ import annotations

from .. import random
from .._args import int_or_none
from . import functional as F
from . import initializers as init
from ._checks import _window_args

__all__ = [
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "LayerNorm", "BatchNorm", "Dropout", "Embedding",
    "CausalSelfAttention",
]


class _Layer:
    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not callable(v))
        return f"{type(self).__name__}({fields})"


def _params(params, layer, required, optional=()):
    """``params[k]`` for the ``required`` keys (and ``.get`` for the optional ones), with a clear error."""
    if not isinstance(params, dict):
        raise TypeError(f"{type(layer).__name__}.apply: params must be the dict made by "
                        f"{type(layer).__name__}.init, got {type(params).__name__}")
    missing = [k for k in required if k not in params]
    if missing:
        raise KeyError(f"{type(layer).__name__}.apply: params has no {', '.join(map(repr, missing))}; expected "
                       f"the keys of {type(layer).__name__}.init: {', '.join(map(repr, required + optional))}, "
                       f"got {', '.join(map(repr, params)) or 'none'}")
    return [params[k] for k in required] + [params.get(k) for k in optional]


def _positive(v, name, cls):
    n = int_or_none(v)
    if n is None or n < 1:
        raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")
    return n


class Linear(_Layer):
    """``y = x @ w + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    w_init : initialiser, default :func:`~gpuad.nn.initializers.glorot_uniform`
        Called as ``w_init(key, (in_features, out_features), dtype)``.

    Notes
    -----
    Parameters: ``{"w": (in, out), "b": (out,)}``.  ``apply(params, x)``
    maps ``(..., in)`` to ``(..., out)``.
    """

    def __init__(self, in_features, out_features, *, bias=True, w_init=init.glorot_uniform):
        self.in_features = _positive(in_features, "in_features", "Linear")
        self.out_features = _positive(out_features, "out_features", "Linear")
        self.bias = bool(bias)
        self.w_init = w_init

    def init(self, key, dtype="float32"):
        """Parameters ``{"w": (in, out)[, "b": (out,)]}`` on the key's device."""
        p = {"w": self.w_init(key, (self.in_features, self.out_features), dtype)}
        if self.bias:
            p["b"] = init.zeros(key, (self.out_features,), dtype)
        return p

    def apply(self, params, x):
        """``x`` of shape ``(..., in)`` -> array of shape ``(..., out)``."""
        return F.linear(x, *_params(params, self, ("w",), ("b",)))


def _takes_fan_axes(fn):
    """Whether the initialiser ``fn`` accepts ``in_axis`` and ``out_axis`` keywords."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return "in_axis" in params and "out_axis" in params


class Conv2d(_Layer):
    """2-D convolution over NCHW images (see :func:`gpuad.nn.functional.conv2d`).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int), >= 1
    stride : int or (int, int), default 1
        >= 1.
    padding : int or (int, int), default 0
        >= 0.
    bias : bool, default True
    w_init : initialiser, default He normal over ``fan_in = C * kh * kw``
        Called as ``w_init(key, (O, C, kh, kw), dtype, in_axis=1, out_axis=0)`` when it
        takes ``in_axis`` and ``out_axis`` (every variance-scaling initialiser of
        :mod:`gpuad.nn.initializers` does, so its fans are ``C*kh*kw`` and ``O*kh*kw``),
        else as ``w_init(key, (O, C, kh, kw), dtype)``.

    Notes
    -----
    Parameters: ``{"w": (O, C, kh, kw), "b": (O,)}``.  ``apply(params, x)``
    maps ``(N, C, H, W)`` to ``(N, O, Ho, Wo)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=True,
                 w_init=None):
        self.in_channels = _positive(in_channels, "in_channels", "Conv2d")
        self.out_channels = _positive(out_channels, "out_channels", "Conv2d")
        self.kernel_size, self.stride, self.padding = _window_args(kernel_size, stride, padding, "Conv2d")
        self.bias = bool(bias)
        self.w_init = w_init

    def init(self, key, dtype="float32"):
        """Parameters ``{"w": (O, C, kh, kw)[, "b": (O,)]}`` on the key's device."""
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        w_init = init.he_normal if self.w_init is None else self.w_init
        if _takes_fan_axes(w_init):
            w = w_init(key, shape, dtype, in_axis=1, out_axis=0)
        else:
            w = w_init(key, shape, dtype)
        p = {"w": w}
        if self.bias:
            p["b"] = init.zeros(key, (self.out_channels,), dtype)
        return p

    def apply(self, params, x):
        """``x`` of shape ``(N, C, H, W)`` -> array of shape ``(N, O, Ho, Wo)``."""
        w, b = _params(params, self, ("w",), ("b",))
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding)


class MaxPool2d(_Layer):
    """Max pooling; no parameters (see :func:`gpuad.nn.functional.max_pool2d`).

    Parameters
    ----------
    kernel_size : int or (int, int), >= 1
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0
        At most ``kernel_size // 2`` on each axis.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = _window_args(kernel_size, stride, padding, type(self).__name__,
                                                                   pool=True)

    def init(self, key=None, dtype=None):
        """No parameters: ``{}``."""
        return {}

    def apply(self, params, x):
        """``(N, C, H, W)`` -> ``(N, C, Ho, Wo)``."""
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    """Average pooling; no parameters (see :func:`gpuad.nn.functional.avg_pool2d`)."""

    def apply(self, params, x):
        """``(N, C, H, W)`` -> ``(N, C, Ho, Wo)``."""
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class LayerNorm(_Layer):
    """Layer normalisation over the last axis, with a learned scale and shift.

    Parameters
    ----------
    features : int
        Size ``D`` of the last axis.
    eps : float, default 1e-5

    Notes
    -----
    Parameters: ``{"gamma": (D,), "beta": (D,)}`` (ones and zeros).
    ``apply(params, x)`` maps ``(..., D)`` to ``(..., D)``.
    """

    def __init__(self, features, eps=1e-5):
        self.features = _positive(features, "features", "LayerNorm")
        self.eps = eps

    def init(self, key, dtype="float32"):
        """``{"gamma": ones (D,), "beta": zeros (D,)}``."""
        return {"gamma": init.ones(key, (self.features,), dtype), "beta": init.zeros(key, (self.features,), dtype)}

    def apply(self, params, x):
        """``(..., D)`` -> ``(..., D)``."""
        if x.shape[-1] != self.features:
            raise ValueError(f"LayerNorm: expected last axis of size {self.features}, got shape {tuple(x.shape)}")
        return F.layer_norm(x, *_params(params, self, ("gamma", "beta")), eps=self.eps)


class BatchNorm(_Layer):
    """Batch normalisation of axis 1 (channels of ``(N, C)`` or ``(N, C, H, W)``).

    Parameters
    ----------
    features : int
        ``C``.
    momentum : float, default 0.1
    eps : float, default 1e-5

    Notes
    -----
    Parameters ``{"gamma": (C,), "beta": (C,)}``; state
    ``{"mean": (C,), "var": (C,)}`` from :meth:`init_state`.
    ``apply(params, state, x, training=...)`` returns ``(y, new_state)``; in
    evaluation mode the state is returned unchanged.
    """

    def __init__(self, features, momentum=0.1, eps=1e-5):
        self.features = _positive(features, "features", "BatchNorm")
        self.momentum, self.eps = momentum, eps

    def init(self, key, dtype="float32"):
        """``{"gamma": ones (C,), "beta": zeros (C,)}``."""
        return {"gamma": init.ones(key, (self.features,), dtype), "beta": init.zeros(key, (self.features,), dtype)}

    def init_state(self, key, dtype="float32"):
        """Running statistics ``{"mean": zeros (C,), "var": ones (C,)}`` on the key's device."""
        return {"mean": init.zeros(key, (self.features,), dtype), "var": init.ones(key, (self.features,), dtype)}

    def apply(self, params, state, x, training):
        """``x`` of shape ``(N, C, ...)`` -> ``(y of x's shape, new_state)``."""
        if x.ndim < 2 or x.shape[1] != self.features:
            raise ValueError(f"BatchNorm: expected x of shape (N, {self.features}, ...), got {tuple(x.shape)}")
        gamma, beta = _params(params, self, ("gamma", "beta"))
        if not isinstance(state, dict) or "mean" not in state or "var" not in state:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise KeyError(f"BatchNorm.apply: state must be the dict made by BatchNorm.init_state, with keys "
                           f"'mean' and 'var', got {got}")
        y, m, v = F.batch_norm(x, gamma, beta, state["mean"], state["var"],
                               training=training, momentum=self.momentum, eps=self.eps)
        return y, {"mean": m, "var": v}


class Dropout(_Layer):
    """Inverted dropout with rate ``rate``; no parameters.

    ``apply(params, x, key=..., training=True)``: shape-preserving.
    """

    def __init__(self, rate):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = rate

    def init(self, key=None, dtype=None):
        """No parameters: ``{}``."""
        return {}

    def apply(self, params, x, *, key=None, training=True):
        """``x`` -> array of the same shape; ``key`` is required when training."""
        if training and self.rate > 0.0 and key is None:
            raise ValueError("Dropout.apply: a random key is needed in training mode (key=...)")
        return F.dropout(key, x, self.rate, training)


class Embedding(_Layer):
    """A lookup table of ``num`` vectors of size ``features``.

    Parameters
    ----------
    num, features : int
    stddev : float, default 0.02
        Standard deviation of the normal initialisation.

    Notes
    -----
    Parameters ``{"table": (num, features)}``.  ``apply(params, ids)`` maps
    integer ids of shape ``I`` to ``I + (features,)``.
    """

    def __init__(self, num, features, stddev=0.02):
        self.num = _positive(num, "num", "Embedding")
        self.features = _positive(features, "features", "Embedding")
        self.stddev = stddev

    def init(self, key, dtype="float32"):
        """``{"table": N(0, stddev^2) of shape (num, features)}``."""
        return {"table": random.normal(key, (self.num, self.features), dtype=dtype, stddev=self.stddev)}

    def apply(self, params, ids):
        """Integer ``ids`` of shape ``I`` -> array of shape ``I + (features,)``."""
        return F.embedding(*_params(params, self, ("table",)), ids)


class CausalSelfAttention(_Layer):
    """Causal multi-head self-attention (see :func:`gpuad.nn.functional.causal_self_attention`).

    Parameters
    ----------
    features : int
        Model width ``D``.
    num_heads : int
        Divides ``D``.
    bias : bool, default True

    Notes
    -----
    Parameters ``{"wqkv": (D, 3D), "bqkv": (3D,), "wo": (D, D), "bo": (D,)}``.
    ``apply(params, x)`` maps ``(B, T, D)`` to ``(B, T, D)``.
    """

    def __init__(self, features, num_heads, bias=True):
        self.features = _positive(features, "features", "CausalSelfAttention")
        self.num_heads = _positive(num_heads, "num_heads", "CausalSelfAttention")
        if features % num_heads:
            raise ValueError(f"CausalSelfAttention: features={features} is not divisible by num_heads={num_heads}")
        self.bias = bool(bias)

    def init(self, key, dtype="float32"):
        """Glorot-uniform projections, zero biases."""
        d = self.features
        k1, k2 = random.split(key)
        p = {"wqkv": init.glorot_uniform(k1, (d, 3 * d), dtype), "wo": init.glorot_uniform(k2, (d, d), dtype)}
        if self.bias:
            p["bqkv"] = init.zeros(key, (3 * d,), dtype)
            p["bo"] = init.zeros(key, (d,), dtype)
        return p

    def apply(self, params, x):
        """``(B, T, D)`` -> ``(B, T, D)``."""
        wqkv, wo, bqkv, bo = _params(params, self, ("wqkv", "wo"), ("bqkv", "bo"))
        return F.causal_self_attention(x, wqkv, wo, self.num_heads, bqkv, bo)
