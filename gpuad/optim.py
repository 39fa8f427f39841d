"""Optimisers whose state lives on the device, and learning-rate schedules.

An optimiser is a pair of pure functions::

    opt = optim.adam(1e-3)                     # or sgd, adamw, ...
    state = opt.init(params)                   # pytree of arrays beside params
    params, state = opt.step(params, grads, state)

``params`` and ``grads`` are pytrees of arrays of the same structure (what
``gpuad.grad`` returns for ``params``).  The state is a dict of arrays on the
parameters' device, the step counter included, and a step is array
arithmetic only: it never converts to a Python number, so nothing leaves the
GPU (``tests/test_optim.py`` checks this on a device that refuses host
transfers).  The update is written with gpuad ops, so it can itself be
differentiated (e.g. through a few steps of an inner loop).

A learning rate is a float or a *schedule*: a function of the step count (a
0-d integer array; 0 for the first step) returning a 0-d float array, such as
:func:`warmup_cosine` (a :class:`Schedule`, which also takes the dtype to
compute in).

# NOTE [optimizer arithmetic dtype]: a step computes its learning rate and
# Adam's bias corrections ``1 - b^t`` in one floating dtype, chosen from the
# parameters' dtypes (metadata only: no host synchronisation): float64 when
# any parameter leaf is float64, else float32.  So float64 parameters get
# float64 hyper-parameters (a float32 learning rate or correction would limit
# the update to ~1e-7 relative accuracy), float32 parameters compute in
# float32 as before, and float16 parameters too (float16 could not hold
# ``1 - b2^t`` for b2 near 1, nor most learning rates, accurately; the
# float32 values are cast to float16 once per leaf, as they always were).
# Mixed precision keeps float32 master weights, hence float32 here.  Each leaf
# casts these 0-d values to its own dtype.  The step counter is int32 on the
# parameters' device; converting it is exact in float64, and in float32 up to
# 2**24 steps.  ``1 - b^t`` is computed as ``-expm1(t log b)``, which keeps
# full relative precision where ``b^t`` is close to 1 (small t, b2 = 0.99999).
# A :class:`Schedule` computes in that dtype; any other callable schedule is
# called as ``lr(step)`` and its value cast to it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from . import ops
from ._args import finite_real
from ._dtypes import dtype_name
from ._lr_schedules import Schedule, as_schedule, constant, cosine_decay, linear_warmup, schedule_value, warmup_cosine
from ._registry import deffused
from ._tree import tree_flatten, tree_map, tree_unflatten

__all__ = [
    "Optimizer", "sgd", "adam", "adamw", "clip_by_global_norm", "global_norm",
    "Schedule", "constant", "linear_warmup", "cosine_decay", "warmup_cosine",
]


class Optimizer(NamedTuple):
    """``init(params) -> state`` and ``step(params, grads, state) -> (params, state)``.

    Attributes
    ----------
    init : callable
    step : callable
    name : str
    """

    init: Callable
    step: Callable
    name: str = "optimizer"


# --- argument checks (at construction; a step checks nothing it need not) --------------
def _clip(clip_norm, fname):
    if clip_norm is not None:
        finite_real(clip_norm, fname, "clip_norm", lo=0.0, lo_open=True)


# --- gradient clipping -----------------------------------------------------------------
def global_norm(tree):
    """The 2-norm of all leaves of ``tree`` together.

    Parameters
    ----------
    tree : pytree of arrays

    Returns
    -------
    0-d array (float32 unless a leaf is float64), on the leaves' device
    """
    leaves = tree_flatten(tree)[0]
    if not leaves:
        raise ValueError("global_norm: the pytree has no arrays")
    total = ops.sum(ops.square(leaves[0]))
    for g in leaves[1:]:
        total = ops.add(total, ops.sum(ops.square(g)))
    return ops.sqrt(total)


def clip_by_global_norm(grads, max_norm):
    """Scale ``grads`` so that their global norm is at most ``max_norm``.

    Parameters
    ----------
    grads : pytree of arrays
    max_norm : float, > 0

    Returns
    -------
    clipped : pytree of arrays, the structure and shapes of ``grads``
        ``grads * min(1, max_norm / norm)``.
    norm : 0-d array
        The global norm before clipping (stays on the device).
    """
    max_norm = finite_real(max_norm, "clip_by_global_norm", "max_norm", lo=0.0, lo_open=True)
    norm = global_norm(grads)
    scale = ops.minimum(ops.divide(max_norm, ops.maximum(norm, 1e-30)), 1.0)
    return tree_map(lambda g: ops.multiply(g, ops.astype(scale, g.dtype)), grads), norm


# --- optimisers ------------------------------------------------------------------------
def _check_trees(params, grads, fname):
    pl, ptd = tree_flatten(params)
    gl, gtd = tree_flatten(grads)
    if ptd != gtd:
        raise ValueError(f"{fname}: grads have structure {gtd!r}, params have {ptd!r}")
    for i, (p, g) in enumerate(zip(pl, gl)):
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(f"{fname}: leaf {i}: gradient shape {tuple(g.shape)} != parameter shape {tuple(p.shape)}")
    return pl, gl, ptd


def _state_leaves(state, key, td, pl, fname):
    """The leaves of ``state[key]``, which must mirror the parameters (structure and shapes)."""
    try:
        sub = state[key]
    except (KeyError, TypeError, IndexError):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{fname}: the optimiser state has no {key!r} (got {have}); pass the state made by "
                         "this optimiser's init") from None
    sl, std = tree_flatten(sub)
    if std != td:
        raise ValueError(f"{fname}: state[{key!r}] has structure {std!r}, params have {td!r}: the state was "
                         "made for other parameters")
    for i, (p, m) in enumerate(zip(pl, sl)):
        if p.shape != m.shape:
            raise ValueError(f"{fname}: leaf {i}: state[{key!r}] shape {tuple(m.shape)} != parameter shape "
                             f"{tuple(p.shape)}: the state was made for other parameters")
    return sl


def _state_step(state, fname):
    try:
        return state["step"]
    except (KeyError, TypeError, IndexError):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{fname}: the optimiser state has no 'step' (got {have}); pass the state made by "
                         "this optimiser's init") from None


def _counter(params):
    leaves = tree_flatten(params)[0]
    if not leaves:
        raise ValueError("optimizer init: params has no arrays")
    return ops.zeros((), dtype="int32", device=leaves[0].device)


def _compute_dtype(leaves):
    """The dtype of a step's learning rate and bias corrections: NOTE [optimizer arithmetic dtype]."""
    wide = ("float64", "complex128")
    return "float64" if any(dtype_name(p.dtype) in wide for p in leaves) else "float32"


def _prepare(grads, clip_norm):
    if clip_norm is None:
        return grads
    return clip_by_global_norm(grads, clip_norm)[0]


def sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Parameters
    ----------
    lr : float or schedule
    momentum : float, default 0
    nesterov : bool, default False
    weight_decay : float, default 0
        L2 penalty added to the gradient: ``g + weight_decay * p``.
    clip_norm : float, optional
        Clip gradients to this global norm first.

    Returns
    -------
    Optimizer
        PyTorch's convention: ``v = momentum * v + g``; the step is
        ``-lr * v``, or ``-lr * (g + momentum * v)`` with Nesterov.
        State: ``{"step": (), "velocity": like params}`` (no velocity
        without momentum).
    """
    sched = as_schedule(lr, "sgd")
    momentum = finite_real(momentum, "sgd", "momentum", lo=0.0)
    weight_decay = finite_real(weight_decay, "sgd", "weight_decay", lo=0.0)
    _clip(clip_norm, "sgd")
    if nesterov and momentum <= 0:
        raise ValueError("sgd: nesterov=True needs momentum > 0")

    def init(params):
        state = {"step": _counter(params)}
        if momentum:
            state["velocity"] = tree_map(ops.zeros_like, params)
        return state

    def step(params, grads, state):
        pl, gl, td = _check_trees(params, grads, "sgd.step")
        gl = tree_flatten(_prepare(tree_unflatten(td, gl), clip_norm))[0]
        vl = _state_leaves(state, "velocity", td, pl, "sgd.step") if momentum else [None] * len(pl)
        lr_t = schedule_value(sched, _state_step(state, "sgd.step"), _compute_dtype(pl), "sgd.step")
        new_p, new_v = [], []
        for p, g, v in zip(pl, gl, vl):
            if weight_decay:
                g = g + weight_decay * p
            if momentum:
                v = momentum * v + g
                d = g + momentum * v if nesterov else v
            else:
                d = g
            new_p.append(p - ops.astype(lr_t, p.dtype) * d)
            new_v.append(v)
        new_state = {"step": state["step"] + 1}
        if momentum:
            new_state["velocity"] = tree_unflatten(td, new_v)
        return tree_unflatten(td, new_p), new_state

    return Optimizer(init, step, "sgd")


def _adam_update_impl(xp, p, g, m, v, lr, c1, c2, *, b1, b2, eps, l2, weight_decay):
    if l2:
        g = g + l2 * p
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * (g * g)
    upd = (m / xp.astype(c1, p.dtype)) / (xp.sqrt(v / xp.astype(c2, p.dtype)) + eps)
    if weight_decay:
        upd = upd + weight_decay * p
    return p - xp.astype(lr, p.dtype) * upd, m, v


def _adam_update_composite(p, g, m, v, lr, c1, c2, *, b1, b2, eps, l2, weight_decay):
    if l2:
        g = g + l2 * p
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * ops.square(g)
    upd = (m / ops.astype(c1, p.dtype)) / (ops.sqrt(v / ops.astype(c2, p.dtype)) + eps)
    if weight_decay:
        upd = upd + weight_decay * p
    return p - ops.astype(lr, p.dtype) * upd, m, v


# One Adam/AdamW update of one parameter: (p, g, m, v, lr, c1, c2) -> (p, m, v),
# where c1, c2 are the bias corrections 1 - b^t (0-d arrays: nothing leaves the
# device); ``l2`` is Adam's coupled penalty, ``weight_decay`` AdamW's decoupled
# decay.  Fused: one CUDA kernel on CuPy (gpuad.backends.cupy_kernels).
_adam_update_p = deffused("adam_update", _adam_update_impl, _adam_update_composite)


def _adam(fname, lr, b1, b2, eps, weight_decay, decoupled, clip_norm):
    sched = as_schedule(lr, fname)
    b1 = finite_real(b1, fname, "b1", lo=0.0, hi=1.0, hi_open=True)
    b2 = finite_real(b2, fname, "b2", lo=0.0, hi=1.0, hi_open=True)
    eps = finite_real(eps, fname, "eps", lo=0.0)
    weight_decay = finite_real(weight_decay, fname, "weight_decay", lo=0.0)
    _clip(clip_norm, fname)

    def init(params):
        return {"step": _counter(params), "m": tree_map(ops.zeros_like, params),
                "v": tree_map(ops.zeros_like, params)}

    def step(params, grads, state):
        pl, gl, td = _check_trees(params, grads, f"{fname}.step")
        gl = tree_flatten(_prepare(tree_unflatten(td, gl), clip_norm))[0]
        ml = _state_leaves(state, "m", td, pl, f"{fname}.step")
        vl = _state_leaves(state, "v", td, pl, f"{fname}.step")
        step0 = _state_step(state, f"{fname}.step")
        t = step0 + 1
        ct = _compute_dtype(pl)  # NOTE [optimizer arithmetic dtype]
        tf = ops.astype(t, ct)
        lr_t = schedule_value(sched, step0, ct, f"{fname}.step")
        # Bias corrections 1 - b^t = -expm1(t log b), as arrays on the device.
        c1 = ops.negative(ops.expm1(tf * math.log(b1))) if b1 > 0 else ops.ones_like(tf)
        c2 = ops.negative(ops.expm1(tf * math.log(b2))) if b2 > 0 else ops.ones_like(tf)
        new_p, new_m, new_v = [], [], []
        hyper = dict(b1=b1, b2=b2, eps=eps, l2=0.0 if decoupled else weight_decay,
                     weight_decay=weight_decay if decoupled else 0.0)
        for p, g, m, v in zip(pl, gl, ml, vl):
            p, m, v = _adam_update_p(p, g, m, v, lr_t, c1, c2, **hyper)
            new_p.append(p)
            new_m.append(m)
            new_v.append(v)
        return tree_unflatten(td, new_p), {"step": t, "m": tree_unflatten(td, new_m),
                                           "v": tree_unflatten(td, new_v)}

    return Optimizer(init, step, fname)


def adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=None):
    """Adam (Kingma and Ba, 2015).

    Parameters
    ----------
    lr : float or schedule
    b1, b2 : float
        Decay rates of the first and second moment estimates.
    eps : float
    weight_decay : float, default 0
        L2 penalty added to the gradient (use :func:`adamw` for decoupled decay).
    clip_norm : float, optional
        Clip gradients to this global norm first.

    Returns
    -------
    Optimizer
        ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
        ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
        State: ``{"step": (), "m": like params, "v": like params}``.
    """
    return _adam("adam", lr, b1, b2, eps, weight_decay, False, clip_norm)


def adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, clip_norm=None):
    """AdamW: Adam with decoupled weight decay (Loshchilov and Hutter, 2019).

    Parameters
    ----------
    lr : float or schedule
    b1, b2, eps : float
        As in :func:`adam`.
    weight_decay : float, default 0.01
        ``p -= lr * (adam_update + weight_decay * p)``.
    clip_norm : float, optional

    Returns
    -------
    Optimizer
    """
    return _adam("adamw", lr, b1, b2, eps, weight_decay, True, clip_norm)
