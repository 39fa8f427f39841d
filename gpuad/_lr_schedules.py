"""Learning-rate schedules of :mod:`gpuad.optim` (re-exported there).

A schedule maps the step count (0 for the first step) to a learning rate,
on the device: ``schedule(step, dtype=None) -> 0-d float array``.  ``step``
is an integer array (the optimiser's counter) or a Python int; ``dtype`` is
the floating dtype to compute in (default float32).  An optimiser passes the
dtype it computes its update in (NOTE [optimizer arithmetic dtype] in
:mod:`gpuad.optim`), so a float64 model gets a float64 learning rate.
"""

from __future__ import annotations

import math
import numbers

from . import ops
from ._args import finite_real, int_at_least, int_or_none, short_repr
from ._dtypes import dtype_name, is_floating, is_integral

__all__ = ["Schedule", "constant", "linear_warmup", "cosine_decay", "warmup_cosine", "as_schedule",
           "schedule_value"]


def _as_step(step, fname):
    """``step`` as an integer array: a Python or NumPy int becomes a 0-d int64 array of the default backend."""
    if isinstance(step, numbers.Integral) and not isinstance(step, bool):
        n = int_or_none(step)
        if n < 0:
            raise ValueError(f"{fname}: step must be >= 0 (0 is the first step), got {n}")
        return ops.asarray(n, dtype="int64")
    dt = getattr(step, "dtype", None)
    if dt is None or not hasattr(step, "shape"):
        raise TypeError(f"{fname}: step must be an int or an integer array (0 for the first step), got "
                        f"{type(step).__name__}: {short_repr(step)}")
    if not is_integral(dt) or dtype_name(dt) == "bool":
        raise TypeError(f"{fname}: step must be an int or an integer array (0 for the first step), got an "
                        f"array of dtype {dtype_name(dt)} and shape {tuple(step.shape)}")
    return step


def _float_dtype(dtype, fname):
    if dtype is None:
        return "float32"
    name = dtype_name(dtype)
    if not is_floating(name) or name.startswith("complex"):
        raise TypeError(f"{fname}: dtype must be a real floating dtype such as 'float32' or 'float64', "
                        f"got {dtype!r}")
    return name


class Schedule:
    """A learning-rate schedule: ``schedule(step, dtype=None) -> 0-d float array``.

    Parameters
    ----------
    name : str
        The function that made it (for messages and ``repr``).
    fn : callable
        ``fn(step, dtype)``: an integer array and a floating dtype name ->
        the learning rate in that dtype, on the step's device.
    args : dict
        The arguments it was made with (for ``repr``).

    Notes
    -----
    Calling it: ``step`` is an integer array of any shape (the optimiser's
    0-d counter) or a Python int ``>= 0`` (then the array is on the default
    backend); floats are refused, not truncated.  ``dtype`` (default
    float32) is the floating dtype the value is computed in.
    """

    __slots__ = ("name", "fn", "args")

    def __init__(self, name, fn, args):
        self.name, self.fn, self.args = name, fn, dict(args)

    def __call__(self, step, dtype=None):
        fname = f"{self.name} schedule"
        return self.fn(_as_step(step, fname), _float_dtype(dtype, fname))

    def __repr__(self):
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


def as_schedule(lr, fname):
    """``lr`` (a float or a schedule) as a callable schedule; a clear ``ValueError`` for anything else."""
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"{fname}: the learning rate must be a finite non-negative float or a schedule, "
                         f"got {short_repr(lr)}")
    return constant(float(lr))  # NumPy scalars too (np.float32 is a numbers.Real, not a float)


def schedule_value(sched, step, dtype, fname):
    """The learning rate at ``step`` as a 0-d array of ``dtype``, on the step's device.

    A :class:`Schedule` computes in ``dtype``; any other callable is called
    as ``sched(step)`` and its array cast to ``dtype`` (a Python number it
    returns is filled into an array like ``step``).
    """
    if isinstance(sched, Schedule):
        return sched(step, dtype)
    v = sched(step)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return ops.full_like(step, float(v), dtype=dtype)
    if not (hasattr(v, "dtype") and hasattr(v, "shape")):
        raise TypeError(f"{fname}: the learning-rate schedule returned {type(v).__name__}; it must return a "
                        "0-d float array (or a float)")
    return ops.astype(v, dtype)


def _lr_arg(v, fname, name):
    return finite_real(v, fname, name, lo=0.0)


def constant(lr):
    """The schedule ``step -> lr``.

    Parameters
    ----------
    lr : float, finite, >= 0

    Returns
    -------
    Schedule
        ``(step, dtype=float32) -> 0-d array of dtype`` (the shape of ``step``).
    """
    lr = _lr_arg(lr, "constant", "lr")
    return Schedule("constant", lambda step, dt: ops.full_like(step, lr, dtype=dt), {"lr": lr})


def _warmup(peak, warmup_steps, init_value):
    def fn(step, dt):
        t = ops.astype(step, dt)
        if warmup_steps == 0:  # no ramp: the peak from step 0
            return ops.full_like(t, peak)
        t = ops.clip(t / warmup_steps, 0.0, 1.0)
        return peak * t + init_value * (1.0 - t)  # exactly init_value at t = 0 and peak at t = 1
    return fn


def linear_warmup(peak, warmup_steps, init_value=0.0):
    """Linear ramp from ``init_value`` to ``peak`` over ``warmup_steps``, then ``peak``.

    Parameters
    ----------
    peak : float, finite, >= 0
    warmup_steps : int, >= 0
        With 0 the schedule is ``peak`` from step 0.
    init_value : float, finite, >= 0

    Returns
    -------
    Schedule
        ``(step, dtype=float32) -> 0-d array of dtype``:
        ``init_value + (peak - init_value) * min(step / warmup_steps, 1)``.
    """
    warmup_steps = int_at_least(warmup_steps, "linear_warmup", "warmup_steps", 0)
    peak = _lr_arg(peak, "linear_warmup", "peak")
    init_value = _lr_arg(init_value, "linear_warmup", "init_value")
    return Schedule("linear_warmup", _warmup(peak, warmup_steps, init_value),
                    {"peak": peak, "warmup_steps": warmup_steps, "init_value": init_value})


def _cosine(init_value, decay_steps, final_value):
    def fn(step, dt):
        t = ops.clip(ops.astype(step, dt) / decay_steps, 0.0, 1.0)
        return final_value + (init_value - final_value) * (0.5 * (1.0 + ops.cos(math.pi * t)))
    return fn


def cosine_decay(init_value, decay_steps, final_value=0.0):
    """Half-cosine from ``init_value`` at step 0 to ``final_value`` at ``decay_steps``, flat after.

    Parameters
    ----------
    init_value : float, finite, >= 0
    decay_steps : int, > 0
    final_value : float, finite, >= 0

    Returns
    -------
    Schedule
        ``(step, dtype=float32) -> 0-d array of dtype``:
        ``final + (init - final) * (1 + cos(pi * min(step / decay_steps, 1))) / 2``.
    """
    decay_steps = int_at_least(decay_steps, "cosine_decay", "decay_steps", 1)
    init_value = _lr_arg(init_value, "cosine_decay", "init_value")
    final_value = _lr_arg(final_value, "cosine_decay", "final_value")
    return Schedule("cosine_decay", _cosine(init_value, decay_steps, final_value),
                    {"init_value": init_value, "decay_steps": decay_steps, "final_value": final_value})


def warmup_cosine(peak, warmup_steps, total_steps, final_value=0.0, init_value=0.0):
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to ``final_value``.

    Parameters
    ----------
    peak : float, finite, >= 0
    warmup_steps : int, >= 0
    total_steps : int, > warmup_steps
        The decay ends at ``total_steps``.
    final_value, init_value : float, finite, >= 0

    Returns
    -------
    Schedule
        ``(step, dtype=float32) -> 0-d array of dtype``: :func:`linear_warmup`
        before ``warmup_steps``, then :func:`cosine_decay` of ``step - warmup_steps``.
    """
    warmup_steps = int_at_least(warmup_steps, "warmup_cosine", "warmup_steps", 0)
    total_steps = int_at_least(total_steps, "warmup_cosine", "total_steps", 1)
    peak, final_value, init_value = (_lr_arg(v, "warmup_cosine", name) for name, v in
                                     (("peak", peak), ("final_value", final_value), ("init_value", init_value)))
    if total_steps <= warmup_steps:
        raise ValueError(f"warmup_cosine: total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    warm = _warmup(peak, warmup_steps, init_value)
    decay = _cosine(peak, total_steps - warmup_steps, final_value)

    def fn(step, dt):
        return ops.where(ops.less(step, warmup_steps), warm(step, dt), decay(ops.subtract(step, warmup_steps), dt))

    return Schedule("warmup_cosine", fn, {"peak": peak, "warmup_steps": warmup_steps, "total_steps": total_steps,
                                          "final_value": final_value, "init_value": init_value})
