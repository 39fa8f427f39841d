"""Dynamic loss scaling for float16 training, on the device.

float16 gradients underflow where float32 ones do not, so the loss is
multiplied by a large scale before differentiating and the gradients are
divided by it before the optimiser step.  :func:`loss_scaled_step` does that
division, skips the step when any gradient is inf or NaN (halving the scale)
and doubles the scale after a run of finite steps, all with ``where`` on the
device: no host synchronisation.  ``gpuad train --model gpt --dtype float16``
uses it on CuPy.
"""

from __future__ import annotations

from . import xp as gxp
from ._tree import tree_leaves, tree_map

__all__ = ["init_loss_scale", "loss_scaled_step"]


def init_loss_scale(like, scale=2.0 ** 15):
    """State of dynamic loss scaling on ``like``'s device.

    Parameters
    ----------
    like : array, any shape
        Its backend and device hold the state (only those are read).
    scale : float, default ``2**15``
        The initial loss scale.

    Returns
    -------
    dict
        ``{"scale": float32 array of shape (), "good": int64 array of shape
        () (finite steps since the last change of scale), "skipped": int64
        array of shape () (overflowed steps)}``, for :func:`loss_scaled_step`.
    """
    from ._backend import namespace_of

    ns = namespace_of((like,), "init_loss_scale")
    kw = {"device": like.device}
    return {"scale": ns.asarray(scale, dtype=ns.float32, **kw), "good": ns.asarray(0, dtype=ns.int64, **kw),
            "skipped": ns.asarray(0, dtype=ns.int64, **kw)}


def loss_scaled_step(opt, params, grads, opt_state, ls, growth_interval=200):
    """One optimiser step on gradients of ``loss * ls["scale"]``, skipped on overflow.

    Everything stays on the device (no host synchronisation): the gradients
    are unscaled, checked for inf/NaN, and the new parameters and optimiser
    state are selected with ``where``.  The scale halves on an overflow and
    doubles after ``growth_interval`` finite steps in a row.

    Parameters
    ----------
    opt : gpuad.optim.Optimizer
    params, grads, opt_state : pytrees
        ``grads`` are of the scaled loss, in the parameters' dtype.
    ls : dict
        From :func:`init_loss_scale` or a previous call.
    growth_interval : int

    Returns
    -------
    (params, opt_state, ls)
    """
    scale = ls["scale"]
    grads = tree_map(lambda g: g / gxp.astype(scale, g.dtype), grads)
    ok = None
    for g in tree_leaves(grads):
        f = gxp.all(gxp.isfinite(g))
        ok = f if ok is None else gxp.logical_and(ok, f)
    grads = tree_map(lambda g: gxp.where(ok, g, gxp.zeros_like(g)), grads)  # keep inf/NaN out of the moments
    new_p, new_s = opt.step(params, grads, opt_state)
    params = tree_map(lambda n, o: gxp.where(ok, n, o), new_p, params)
    opt_state = tree_map(lambda n, o: gxp.where(ok, n, o), new_s, opt_state)
    good = gxp.where(ok, ls["good"] + 1, gxp.zeros_like(ls["good"]))
    grow = good >= growth_interval
    scale = gxp.where(ok, gxp.where(grow, scale * 2.0, scale), scale * 0.5)
    good = gxp.where(grow, gxp.zeros_like(good), good)
    skipped = ls["skipped"] + gxp.astype(gxp.logical_not(ok), "int64")
    return params, opt_state, {"scale": scale, "good": good, "skipped": skipped}
