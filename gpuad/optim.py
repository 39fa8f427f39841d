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
:func:`warmup_cosine`.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

from . import ops
from ._args import int_or_none
from ._registry import deffused
from ._tree import tree_flatten, tree_map, tree_unflatten

__all__ = [
    "Optimizer", "sgd", "adam", "adamw", "clip_by_global_norm", "global_norm",
    "constant", "linear_warmup", "cosine_decay", "warmup_cosine",
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
def _real(v, fname, name, *, lo=None, lo_open=False, hi=None, hi_open=False):
    """``v`` as a finite float within the given bounds, else a ``ValueError`` naming ``fname`` and ``name``."""
    ok = not isinstance(v, bool) and (isinstance(v, numbers.Real) or getattr(v, "ndim", None) == 0)
    if ok:
        try:
            v = float(v)
        except (TypeError, ValueError):
            ok = False
    ok = ok and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        where = ""
        if lo is not None or hi is not None:
            where = " in " + ("(" if lo_open else "[") + (f"{lo:g}" if lo is not None else "-inf") + ", " + \
                (f"{hi:g}" if hi is not None else "inf") + (")" if hi_open or hi is None else "]")
        raise ValueError(f"{fname}: {name} must be a finite number{where}, got {v!r}")
    return float(v)


def _steps(v, fname, name, minimum):
    n = int_or_none(v)
    if n is None or n < minimum:
        raise ValueError(f"{fname}: {name} must be an int >= {minimum}, got {v!r}")
    return n


# --- schedules ---------------------------------------------------------------------
def _as_float(step):
    return ops.astype(step, "float32")


def constant(lr):
    """The schedule ``step -> lr``.

    Parameters
    ----------
    lr : float

    Returns
    -------
    callable
        0-d integer array -> 0-d float32 array.
    """
    lr = _real(lr, "constant", "lr")
    return lambda step: ops.full_like(_as_float(step), lr)


def linear_warmup(peak, warmup_steps, init_value=0.0):
    """Linear ramp from ``init_value`` to ``peak`` over ``warmup_steps``, then ``peak``.

    Parameters
    ----------
    peak : float
    warmup_steps : int
    init_value : float

    Returns
    -------
    callable
        0-d integer array -> 0-d float32 array.
    """
    _steps(warmup_steps, "linear_warmup", "warmup_steps", 0)
    peak = _real(peak, "linear_warmup", "peak")
    init_value = _real(init_value, "linear_warmup", "init_value")

    def schedule(step):
        t = ops.clip(_as_float(step) / max(warmup_steps, 1), 0.0, 1.0)
        return init_value + (peak - init_value) * t

    return schedule


def cosine_decay(init_value, decay_steps, final_value=0.0):
    """Half-cosine from ``init_value`` at step 0 to ``final_value`` at ``decay_steps``, flat after.

    Parameters
    ----------
    init_value : float
    decay_steps : int, > 0
    final_value : float

    Returns
    -------
    callable
        0-d integer array -> 0-d float32 array:
        ``final + (init - final) * (1 + cos(pi * min(step / decay_steps, 1))) / 2``.
    """
    _steps(decay_steps, "cosine_decay", "decay_steps", 1)
    init_value = _real(init_value, "cosine_decay", "init_value")
    final_value = _real(final_value, "cosine_decay", "final_value")

    def schedule(step):
        t = ops.clip(_as_float(step) / decay_steps, 0.0, 1.0)
        return final_value + (init_value - final_value) * 0.5 * (1.0 + ops.cos(math.pi * t))

    return schedule


def warmup_cosine(peak, warmup_steps, total_steps, final_value=0.0, init_value=0.0):
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to ``final_value``.

    Parameters
    ----------
    peak : float
    warmup_steps : int
    total_steps : int
        The decay ends at ``total_steps``.
    final_value, init_value : float

    Returns
    -------
    callable
        0-d integer array -> 0-d float32 array.
    """
    _steps(warmup_steps, "warmup_cosine", "warmup_steps", 0)
    _steps(total_steps, "warmup_cosine", "total_steps", 1)
    for name, v in (("peak", peak), ("final_value", final_value), ("init_value", init_value)):
        _real(v, "warmup_cosine", name)
    if total_steps <= warmup_steps:
        raise ValueError(f"warmup_cosine: total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    warm = linear_warmup(peak, warmup_steps, init_value)
    decay = cosine_decay(peak, total_steps - warmup_steps, final_value)

    def schedule(step):
        return ops.where(ops.less(step, warmup_steps), warm(step), decay(ops.subtract(step, warmup_steps)))

    return schedule


def _schedule(lr, fname):
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"{fname}: the learning rate must be a finite non-negative float or a schedule, "
                         f"got {lr!r}")
    return constant(float(lr))  # NumPy scalars too (np.float32 is a numbers.Real, not a float)


def _clip(clip_norm, fname):
    if clip_norm is not None:
        _real(clip_norm, fname, "clip_norm", lo=0.0, lo_open=True)


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
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"clip_by_global_norm: max_norm must be a finite number > 0, got {max_norm!r}")
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
    sched = _schedule(lr, "sgd")
    momentum = _real(momentum, "sgd", "momentum", lo=0.0)
    weight_decay = _real(weight_decay, "sgd", "weight_decay", lo=0.0)
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
        lr_t = sched(_state_step(state, "sgd.step"))
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
    sched = _schedule(lr, fname)
    b1 = _real(b1, fname, "b1", lo=0.0, hi=1.0, hi_open=True)
    b2 = _real(b2, fname, "b2", lo=0.0, hi=1.0, hi_open=True)
    eps = _real(eps, fname, "eps", lo=0.0)
    weight_decay = _real(weight_decay, fname, "weight_decay", lo=0.0)
    _clip(clip_norm, fname)

    def init(params):
        return {"step": _counter(params), "m": tree_map(ops.zeros_like, params),
                "v": tree_map(ops.zeros_like, params)}

    def step(params, grads, state):
        pl, gl, td = _check_trees(params, grads, f"{fname}.step")
        gl = tree_flatten(_prepare(tree_unflatten(td, gl), clip_norm))[0]
        ml = _state_leaves(state, "m", td, pl, f"{fname}.step")
        vl = _state_leaves(state, "v", td, pl, f"{fname}.step")
        t = _state_step(state, f"{fname}.step") + 1
        tf = ops.astype(t, "float32")
        lr_t = sched(state["step"])
        # Bias corrections 1 - b^t, as arrays: b^t = exp(t log b).
        c1 = 1.0 - ops.exp(tf * math.log(b1)) if b1 > 0 else ops.ones_like(tf)
        c2 = 1.0 - ops.exp(tf * math.log(b2)) if b2 > 0 else ops.ones_like(tf)
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
