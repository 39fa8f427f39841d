"""Stateless layer functions: the maths behind :mod:`gpuad.nn.layers`.

Each function takes arrays (plain or traced) and returns arrays; it is
written with gpuad ops only, so every transform differentiates it to any
order, on any backend and device.  Images are ``NCHW``.

# NOTE [conv as one matmul]: :func:`conv2d` pads with one ``index_set`` into
# zeros, gathers the ``kh * kw`` shifted (strided) views of the input, stacks
# them, and does a single ``(N*Ho*Wo, C*kh*kw) @ (C*kh*kw, O)`` matrix
# product (im2col).  The reverse pass is the transposes of those: a matmul,
# a reshape, ``kh * kw`` slice scatters and one slice of the padding; there
# is no per-output-pixel Python loop, so the cost is a fixed ~15 ops per
# call plus BLAS.
"""

from __future__ import annotations

import math

from .. import ops
from .._args import int_or_none
from ._checks import (
    _broadcast_shape, _need_broadcast_to, _need_eps, _need_ids_in_range, _need_ndim, _need_shape, _pair, _shape_of,
    _window_args,
)
from .activations import log_softmax, softmax, softplus

__all__ = [
    "linear", "conv2d", "max_pool2d", "avg_pool2d", "layer_norm", "batch_norm", "dropout",
    "embedding", "causal_self_attention", "pad2d",
    "cross_entropy", "mse", "binary_cross_entropy_with_logits", "accuracy",
]


def linear(x, w, b=None):
    """Affine map ``x @ w + b``.

    Parameters
    ----------
    x : array, shape ``(..., in)``
    w : array, shape ``(in, out)``
    b : array, shape ``(out,)``, optional

    Returns
    -------
    array, shape ``(..., out)``
    """
    if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"linear: x of shape {tuple(x.shape)} does not match weight of shape "
                         f"{tuple(w.shape)} (need x.shape[-1] == w.shape[0])")
    _need_shape(b, (w.shape[1],), "linear", "the bias", f" (weight of shape {tuple(w.shape)})")
    if x.ndim > 2:
        # One (prod(...), in) @ (in, out) product: a broadcast matmul would run one small
        # GEMM per leading index, and its weight gradient would build a (..., in, out)
        # stack before summing it.
        lead = tuple(x.shape[:-1])
        y = ops.reshape(ops.matmul(ops.reshape(x, (math.prod(lead), x.shape[-1])), w), lead + (w.shape[1],))
    else:
        y = ops.matmul(x, w)
    return y if b is None else ops.add(y, b)


# --- convolution ----------------------------------------------------------------------
def pad2d(x, padding, value=0.0):
    """Pad the last two axes of ``x`` with a constant.

    Parameters
    ----------
    x : array, shape ``(..., H, W)``
    padding : int or (int, int)
        Rows added above and below, columns added left and right.
    value : float

    Returns
    -------
    array, shape ``(..., H + 2 ph, W + 2 pw)``
    """
    ph, pw = _pair(padding, "padding", "pad2d")
    if ph == 0 and pw == 0:
        return x
    if ph < 0 or pw < 0:
        raise ValueError(f"pad2d: padding must be >= 0, got {padding!r}")
    *lead, h, w = x.shape
    base = ops.full(tuple(lead) + (h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=x.device)
    key = (Ellipsis, slice(ph, ph + h), slice(pw, pw + w))
    return ops.index_set(base, x, key=key)


def _windows(x, kh, kw, sh, sw, fname):
    """The ``kh * kw`` strided views of ``x`` (N, C, H, W), each (N, C, Ho, Wo)."""
    h, w = x.shape[-2], x.shape[-1]
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{fname}: the window {kh}x{kw} does not fit the (padded) input of size {h}x{w}")
    views = []
    for i in range(kh):
        for j in range(kw):
            views.append(x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw])
    return views, ho, wo


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in every deep-learning library), NCHW.

    Parameters
    ----------
    x : array, shape ``(N, C, H, W)``
    w : array, shape ``(O, C, kh, kw)``
    b : array, shape ``(O,)``, optional
    stride : int or (int, int), >= 1
    padding : int or (int, int), >= 0
        Zero padding on each side of ``H`` and ``W``.

    Returns
    -------
    array, shape ``(N, O, Ho, Wo)`` with
    ``Ho = (H + 2 ph - kh) // sh + 1`` and ``Wo`` likewise.

    Notes
    -----
    See NOTE [conv as one matmul].
    """
    _need_ndim(x, 4, "conv2d", "x", " (N, C, H, W)")
    _need_ndim(w, 4, "conv2d", "weight", " (O, C, kh, kw)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but the weight "
                         f"expects {w.shape[1]} (shape {tuple(w.shape)})")
    _need_shape(b, (w.shape[0],), "conv2d", "the bias", f" (weight of shape {tuple(w.shape)})")
    o, c, kh, kw = w.shape
    if kh < 1 or kw < 1:
        raise ValueError(f"conv2d: the weight's kernel must be at least 1x1, got a weight of shape {tuple(w.shape)}")
    _, (sh, sw), padding = _window_args((kh, kw), stride, padding, "conv2d")
    n = x.shape[0]
    xp_ = pad2d(x, padding)
    if kh == 1 and kw == 1:
        views, ho, wo = _windows(xp_, 1, 1, sh, sw, "conv2d")
        cols = ops.reshape(ops.permute_dims(views[0], (0, 2, 3, 1)), (n * ho * wo, c))
    else:
        views, ho, wo = _windows(xp_, kh, kw, sh, sw, "conv2d")
        patches = ops.stack(views, axis=-1)                    # (N, C, Ho, Wo, kh*kw)
        patches = ops.permute_dims(patches, (0, 2, 3, 1, 4))   # (N, Ho, Wo, C, kh*kw)
        cols = ops.reshape(patches, (n * ho * wo, c * kh * kw))
    wmat = ops.permute_dims(ops.reshape(w, (o, c * kh * kw)), (1, 0))  # (C*kh*kw, O)
    y = ops.matmul(cols, wmat)                                  # (N*Ho*Wo, O)
    if b is not None:
        y = ops.add(y, b)
    return ops.permute_dims(ops.reshape(y, (n, ho, wo, o)), (0, 3, 1, 2))


# --- pooling ------------------------------------------------------------------------
def _pool(x, kernel_size, stride, padding, fname, reduce, fill):
    _need_ndim(x, 4, fname, "x", " (N, C, H, W)")
    (kh, kw), (sh, sw), (ph, pw) = _window_args(kernel_size, stride, padding, fname, pool=True)
    n, c, h, w = x.shape
    if (ph, pw) == (0, 0) and (sh, sw) == (kh, kw) and h % kh == 0 and w % kw == 0:
        # Non-overlapping windows that tile the input: a reshape and one reduction.
        blocks = ops.reshape(x, (n, c, h // kh, kh, w // kw, kw))
        return reduce(blocks, (3, 5))
    xp_ = pad2d(x, (ph, pw), value=fill)
    views, _, _ = _windows(xp_, kh, kw, sh, sw, fname)
    return reduce(ops.stack(views, axis=-1), (-1,))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling over ``kernel_size`` windows, NCHW.

    Parameters
    ----------
    x : array, shape ``(N, C, H, W)``
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int)
        Padding with ``-inf`` on each side; at most ``kernel_size // 2`` on
        each axis (a window wholly in the padding is refused).

    Returns
    -------
    array, shape ``(N, C, Ho, Wo)``, ``Ho = (H + 2 ph - kh) // sh + 1``

    Notes
    -----
    Where a window holds several equal maxima the gradient is shared
    equally among them (gpuad's ``max`` convention).
    """
    return _pool(x, kernel_size, stride, padding, "max_pool2d",
                 lambda v, axes: ops.max(v, axis=axes), -math.inf)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling over ``kernel_size`` windows, NCHW (zero padding is counted).

    Parameters
    ----------
    x : array, shape ``(N, C, H, W)``
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int)
        Zero padding on each side; at most ``kernel_size // 2`` on each axis.

    Returns
    -------
    array, shape ``(N, C, Ho, Wo)``
    """
    return _pool(x, kernel_size, stride, padding, "avg_pool2d",
                 lambda v, axes: ops.mean(v, axis=axes), 0.0)


# --- normalisation ---------------------------------------------------------------------
def layer_norm(x, gamma=None, beta=None, eps=1e-5, axis=-1):
    """Layer normalisation over ``axis`` (the features).

    Parameters
    ----------
    x : array, shape ``(..., D)``
    gamma, beta : arrays broadcastable to ``x`` (usually shape ``(D,)``), optional
        Scale and shift.
    eps : float
    axis : int or tuple of int

    Returns
    -------
    array, shape of ``x``: ``(x - mean) / sqrt(var + eps) * gamma + beta``
    """
    _need_eps(eps, "layer_norm")
    _need_broadcast_to(gamma, tuple(x.shape), "layer_norm", "gamma")
    _need_broadcast_to(beta, tuple(x.shape), "layer_norm", "beta")
    mean = ops.mean(x, axis=axis, keepdims=True)
    xc = ops.subtract(x, mean)
    var = ops.mean(ops.square(xc), axis=axis, keepdims=True)
    y = ops.multiply(xc, ops.reciprocal(ops.sqrt(ops.add(var, eps))))
    if gamma is not None:
        y = ops.multiply(y, gamma)
    if beta is not None:
        y = ops.add(y, beta)
    return y


def batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum=0.1, eps=1e-5,
               axis=1):
    """Batch normalisation of feature axis ``axis``.

    Parameters
    ----------
    x : array, shape ``(N, C, ...)`` (features on ``axis``, default 1)
    gamma, beta : arrays, shape ``(C,)``
    running_mean, running_var : arrays, shape ``(C,)``
    training : bool
        ``True``: normalise with the batch statistics and update the running
        ones; ``False``: normalise with the running statistics.
    momentum : float
        ``new = (1 - momentum) * old + momentum * batch`` (PyTorch's
        convention; the batch variance is the unbiased one, as there).
    eps : float
    axis : int

    Returns
    -------
    y : array, shape of ``x``
    new_running_mean, new_running_var : arrays, shape ``(C,)``
        Constants to every transform (no gradient flows into the state).
    """
    from ..transforms import stop_gradient

    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"batch_norm: x must have a feature axis, got shape {_shape_of(x)}")
    _need_eps(eps, "batch_norm")
    axis = axis % x.ndim
    for what, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        _need_shape(a, (x.shape[axis],), "batch_norm", what, f" (x of shape {tuple(x.shape)}, features on axis {axis})")
    red = tuple(a for a in range(x.ndim) if a != axis)
    bshape = tuple(x.shape[a] if a == axis else 1 for a in range(x.ndim))
    if training:
        mean = ops.mean(x, axis=red, keepdims=True)
        xc = ops.subtract(x, mean)
        var = ops.mean(ops.square(xc), axis=red, keepdims=True)
        count = x.size // x.shape[axis]
        bm = stop_gradient(ops.reshape(mean, (-1,)))
        bv = stop_gradient(ops.reshape(var, (-1,))) * (count / max(count - 1, 1))
        new_mean = running_mean * (1.0 - momentum) + bm * momentum
        new_var = running_var * (1.0 - momentum) + bv * momentum
    else:
        xc = ops.subtract(x, ops.reshape(running_mean, bshape))
        var = ops.reshape(running_var, bshape)
        new_mean, new_var = running_mean, running_var
    y = ops.multiply(xc, ops.reciprocal(ops.sqrt(ops.add(var, eps))))
    y = ops.add(ops.multiply(y, ops.reshape(gamma, bshape)), ops.reshape(beta, bshape))
    return y, new_mean, new_var


# --- dropout and embedding ---------------------------------------------------------------
def dropout(key, x, rate, training=True):
    """Inverted dropout: zero each element with probability ``rate``, scale the rest.

    Parameters
    ----------
    key : gpuad.random key (on ``x``'s device)
    x : array, shape ``S``
    rate : float in ``[0, 1)``
    training : bool
        ``False`` returns ``x`` unchanged.

    Returns
    -------
    array, shape ``S``: ``x / (1 - rate)`` where kept, 0 elsewhere
    """
    from .. import random

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    if not training or rate == 0.0:
        return x
    keep = random.bernoulli(key, 1.0 - rate, tuple(x.shape))
    return ops.where(keep, ops.multiply(x, 1.0 / (1.0 - rate)), 0.0)


def embedding(table, ids):
    """Rows of ``table`` at integer ``ids``.

    Parameters
    ----------
    table : array, shape ``(V, D)``
    ids : integer array, shape ``I``

    Returns
    -------
    array, shape ``I + (D,)``
    """
    _need_ndim(table, 2, "embedding", "the table", " (V, D)")
    _need_ids_in_range(ids, table.shape[0], "embedding", "ids", f"the table has shape {tuple(table.shape)}")
    shape = tuple(ids.shape)
    flat = ops.reshape(ids, (-1,)) if len(shape) != 1 else ids
    rows = ops.take(table, flat, axis=0)
    return ops.reshape(rows, shape + (table.shape[1],)) if len(shape) != 1 else rows


# --- attention -------------------------------------------------------------------------
def causal_self_attention(x, wqkv, wo, num_heads, bqkv=None, bo=None):
    """Causal multi-head self-attention (decoder style).

    Parameters
    ----------
    x : array, shape ``(B, T, D)``
    wqkv : array, shape ``(D, 3 D)``
        Query, key and value projections side by side.
    wo : array, shape ``(D, D)``
        Output projection.
    num_heads : int
        Divides ``D``.
    bqkv : array, shape ``(3 D,)``, optional
    bo : array, shape ``(D,)``, optional

    Returns
    -------
    array, shape ``(B, T, D)``
        Position ``t`` attends to positions ``<= t`` only.
    """
    _need_ndim(x, 3, "causal_self_attention", "x", " (B, T, D)")
    bsz, t, d = x.shape
    heads = int_or_none(num_heads)
    if heads is None or heads < 1:
        raise ValueError(f"causal_self_attention: num_heads must be a positive int, got {num_heads!r}")
    num_heads = heads
    if d % num_heads:
        raise ValueError(f"causal_self_attention: model width {d} is not divisible by num_heads={num_heads}")
    if tuple(wqkv.shape) != (d, 3 * d):
        raise ValueError(f"causal_self_attention: wqkv must have shape {(d, 3 * d)}, got {tuple(wqkv.shape)}")
    why = f" (x of shape {tuple(x.shape)})"
    _need_shape(wo, (d, d), "causal_self_attention", "wo", why)
    _need_shape(bqkv, (3 * d,), "causal_self_attention", "bqkv", why)
    _need_shape(bo, (d,), "causal_self_attention", "bo", why)
    dh = d // num_heads
    qkv = linear(x, wqkv, bqkv)                                          # (B, T, 3D)
    qkv = ops.permute_dims(ops.reshape(qkv, (bsz, t, 3, num_heads, dh)), (2, 0, 3, 1, 4))
    q, k, v = qkv[0, ...], qkv[1, ...], qkv[2, ...]                                   # (B, H, T, dh)
    scores = ops.multiply(ops.matmul(q, ops.matrix_transpose(k)), 1.0 / math.sqrt(dh))
    pos = ops.arange(t, device=x.device)
    causal = ops.greater_equal(ops.reshape(pos, (t, 1)), ops.reshape(pos, (1, t)))
    scores = ops.where(causal, scores, -math.inf)
    att = softmax(scores, axis=-1)
    out = ops.matmul(att, v)                                             # (B, H, T, dh)
    out = ops.reshape(ops.permute_dims(out, (0, 2, 1, 3)), (bsz, t, d))
    return linear(out, wo, bo)


# --- losses ------------------------------------------------------------------------------
def _reduce(loss, reduction, fname):
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{fname}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy from unnormalised logits and integer class labels.

    Parameters
    ----------
    logits : array, shape ``(..., K)``
    labels : integer array, shape ``(...)``, values in ``[0, K)``
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    array, shape ``()`` (or ``(...)`` for ``"none"``)
        ``-log_softmax(logits)[label]``; stable for any logits (computed
        through :func:`log_softmax`).
    """
    from .._dtypes import dtype_name, is_integral

    if logits.ndim < 1 or tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"cross_entropy: labels of shape {tuple(labels.shape)} do not match logits of shape "
                         f"{tuple(logits.shape)} (need labels.shape == logits.shape[:-1])")
    if not is_integral(labels.dtype) or dtype_name(labels.dtype) == "bool":
        raise TypeError(f"cross_entropy: labels must be integers, got dtype {labels.dtype}")
    _need_ids_in_range(labels, logits.shape[-1], "cross_entropy", "labels",
                       f"class ids for logits of shape {tuple(logits.shape)}")
    lp = log_softmax(logits, axis=-1)
    picked = ops.take_along_axis(lp, ops.expand_dims(labels, axis=-1), axis=-1)
    return _reduce(ops.negative(ops.squeeze(picked, axis=-1)), reduction, "cross_entropy")


def mse(pred, target, reduction="mean"):
    """Mean squared error.

    Parameters
    ----------
    pred, target : arrays of broadcast-compatible shapes
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    array, shape ``()`` (or the broadcast shape for ``"none"``)
    """
    if hasattr(pred, "shape") and hasattr(target, "shape") and _broadcast_shape(
            tuple(pred.shape), tuple(target.shape)) is None:
        raise ValueError(f"mse: pred of shape {tuple(pred.shape)} and target of shape {tuple(target.shape)} "
                         "do not broadcast")
    return _reduce(ops.square(ops.subtract(pred, target)), reduction, "mse")


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in ``[0, 1]``.

    Parameters
    ----------
    logits : array, shape ``S``
    targets : array, shape broadcastable to ``S``
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    array, shape ``()`` (or ``S`` for ``"none"``)
        ``softplus(z) - z * t``, which neither overflows nor loses
        precision for large ``|z|``.
    """
    _need_broadcast_to(targets, tuple(logits.shape), "binary_cross_entropy_with_logits", "targets", "logits")
    loss = ops.subtract(softplus(logits), ops.multiply(logits, targets))
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def accuracy(logits, labels):
    """Fraction of rows whose arg-max equals the label.

    Parameters
    ----------
    logits : array, shape ``(N, K)``
    labels : integer array, shape ``(N,)``

    Returns
    -------
    0-d float array (on the device; not differentiable)
    """
    from .._core import full_unbox

    logits = full_unbox(logits)
    hit = ops.equal(ops.argmax(logits, axis=-1), ops.astype(full_unbox(labels), "int64"))
    return ops.mean(ops.astype(hit, logits.dtype))
