"""Checking derivatives against finite differences.

``check_grads`` is the project's gradient checker: every primitive goes
through it, in forward and reverse mode, to second order, on every backend.
"""

from __future__ import annotations

import math
import numbers
import random

from . import ops
from ._args import int_or_none
from ._core import full_unbox
from ._dtypes import dtype_name, is_floating
from ._tree import tree_flatten, tree_unflatten
from .transforms import jvp, vjp

__all__ = ["check_grads", "GradientCheckError", "default_tolerance"]

#: (atol, rtol) by the lowest floating precision involved.  Finite differences
#: are always taken in float64, so only the AD side limits the accuracy.
_TOLERANCES = {"float64": (1e-6, 1e-6), "float32": (3e-3, 3e-3), "float16": (5e-2, 5e-2)}
_EPS = 1e-5


class GradientCheckError(AssertionError):
    """A derivative disagreed with finite differences."""


def default_tolerance(dtypes):
    """``(atol, rtol)`` for the least precise of ``dtypes``."""
    names = [dtype_name(d) for d in dtypes]
    for n in ("float16", "bfloat16", "float32", "complex64"):
        if n in names:
            return _TOLERANCES["float16" if n in ("float16", "bfloat16") else "float32"]
    return _TOLERANCES["float64"]


def check_grads(f, args, order=2, modes=("fwd", "rev"), atol=None, rtol=None, eps=None, seed=0):
    """Check ``f``'s derivatives with central finite differences in random directions.

    Parameters
    ----------
    f : callable
        Takes ``*args``; returns a pytree of floating arrays.
    args : tuple
        Pytrees of arrays.  Floating leaves are differentiated; the others
        are held fixed.
    order : int
        1 checks JVPs and/or VJPs of ``f``; 2 also checks the derivatives of
        those (forward-over-forward, reverse-over-forward, forward-over-
        reverse and reverse-over-reverse), and so on.
    modes : tuple of {"fwd", "rev"}
    atol, rtol : float, optional
        Finite and >= 0.  Defaults depend on the least precise dtype
        (float64: 1e-6; float32: 3e-3); finite differences are always
        computed in float64.
    eps : float, optional
        Finite-difference step (default 1e-5).
    seed : int
        Seed of the random directions.

    Raises
    ------
    GradientCheckError
        Naming the mode, the order, the argument, and the size of the error.
    """
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    for m in modes:
        if m not in ("fwd", "rev"):
            raise ValueError(f"check_grads: unknown mode {m!r}; expected 'fwd' or 'rev'")
    if not modes:
        raise ValueError("check_grads: modes is empty; give 'fwd', 'rev' or both")
    given, order = order, int_or_none(order)
    if order is None or order < 1:
        raise ValueError(f"check_grads: order must be a positive int, got {given!r}")
    if not callable(f):
        raise TypeError(f"check_grads: f must be a callable, got {type(f).__name__} {f!r}")
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is None:
            continue
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"check_grads: {name} must be a finite number >= 0 (or None for the default), "
                             f"got {tol!r}")
    if eps is None:
        eps = _EPS
    elif not eps > 0:
        raise ValueError(f"check_grads: eps must be positive, got {eps!r}")
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"check_grads: args must be a tuple of the arguments of f, got {type(args).__name__}; "
            "write check_grads(f, (x,))")
    args = tuple(args)
    leaves, td = tree_flatten(args)
    float_idx = [i for i, x in enumerate(leaves) if hasattr(x, "dtype") and is_floating(x.dtype)]
    if not float_idx:
        raise ValueError("check_grads: no floating-point array among the arguments")

    def g(*xs):
        new = list(leaves)
        for i, x in zip(float_idx, xs):
            new[i] = x
        return f(*tree_unflatten(td, new))

    names = [f"leaf {i} of the arguments" if td.num_leaves != len(args) else f"argument {i}" for i in float_idx]
    _check(g, [leaves[i] for i in float_idx], names, order, modes, atol, rtol, eps,
           random.Random(seed), "f")


def _randn_like(x, rng):
    raw = full_unbox(x)
    n = 1
    for s in raw.shape:
        n *= s
    vals = [rng.gauss(0.0, 1.0) for _ in range(n)]
    return ops.reshape(ops.asarray(vals, dtype=raw.dtype, device=raw.device), tuple(raw.shape))


def _f64(x):
    return ops.astype(x, "float64") if dtype_name(x.dtype) != "float64" else x


def _flat_outputs(out):
    leaves = tree_flatten(out)[0]
    return [ops.reshape(_f64(o), (-1,)) for o in leaves]


def _vdot(a_list, b_list):
    total = 0.0
    scale = 0.0
    for a, b in zip(a_list, b_list):
        p = ops.multiply(a, b)
        total += float(ops.sum(p))
        scale += float(ops.sum(ops.abs(p)))
    return total, scale


def _fd(f, xs, i, v, eps):
    """Central difference of f along v in argument i, in float64 (flattened outputs)."""
    x64 = [_f64(x) for x in xs]
    v64 = _f64(v)
    plus = list(x64)
    minus = list(x64)
    plus[i] = ops.add(x64[i], ops.multiply(v64, eps))
    minus[i] = ops.subtract(x64[i], ops.multiply(v64, eps))
    fp = _flat_outputs(f(*plus))
    fm = _flat_outputs(f(*minus))
    return [ops.divide(ops.subtract(a, b), 2 * eps) for a, b in zip(fp, fm)]


def _raw(name, x):
    """A Python scalar from a plain array's reduction (testing only, not traced)."""
    from ._backend import namespace_of

    raw = full_unbox(x)
    return float(getattr(namespace_of((raw,), name), name)(raw))


def _tol(xs, out, atol, rtol):
    dts = [x.dtype for x in xs] + [o.dtype for o in tree_flatten(out)[0] if hasattr(o, "dtype")]
    da, dr = default_tolerance(dts)
    return (da if atol is None else atol), (dr if rtol is None else rtol)


def _fail(mode, order, fname, argname, detail):
    raise GradientCheckError(
        f"check_grads: {mode} mode disagrees with finite differences at order {order} "
        f"(checking {fname}) for {argname}: {detail}"
    )


def _check(f, xs, names, order, modes, atol, rtol, eps, rng, fname):
    level = fname.count("(")  # 0 for f itself
    this_order = level + 1
    out = f(*xs)
    a, r = _tol(xs, out, atol, rtol)
    out_leaves = tree_flatten(out)[0]
    if not out_leaves:
        raise ValueError(f"check_grads: {fname} returned {out!r}, which has no arrays to check")
    for o in out_leaves:
        if not hasattr(o, "dtype") or not is_floating(o.dtype):
            raise TypeError(f"check_grads: {fname} returned a non-floating output {o!r}")

    if "fwd" in modes:
        for i, x in enumerate(xs):
            v = _randn_like(x, rng)
            tangents = [v if j == i else ops.zeros_like(full_unbox(y)) for j, y in enumerate(xs)]
            _, t_out = jvp(f, tuple(xs), tuple(tangents))
            ad = _flat_outputs(t_out)
            fd = _fd(f, xs, i, v, eps)
            for k, (p, q) in enumerate(zip(ad, fd)):
                err = ops.abs(ops.subtract(p, q))
                bound = ops.add(a, ops.multiply(r, ops.abs(q)))
                if p.shape[0] and _raw("any", ops.greater(err, bound)):
                    worst = _raw("max", err)
                    _fail("forward", this_order, fname, names[i],
                          f"output {k}: max |JVP - FD| = {worst:.3e} (atol={a:g}, rtol={r:g})")

    if "rev" in modes:
        out_val, vjp_fn = vjp(f, *xs)
        o_leaves, o_td = tree_flatten(out_val)
        cts = [_randn_like(o, rng) for o in o_leaves]
        grads = vjp_fn(tree_unflatten(o_td, cts))
        ct64 = [ops.reshape(_f64(c), (-1,)) for c in cts]
        for i, x in enumerate(xs):
            v = _randn_like(x, rng)
            fd = _fd(f, xs, i, v, eps)
            lhs, s1 = _vdot(ct64, fd)
            rhs, s2 = _vdot([ops.reshape(_f64(grads[i]), (-1,))], [ops.reshape(_f64(v), (-1,))])
            if abs(lhs - rhs) > a * max(1.0, len(ct64)) + r * max(s1, s2, abs(lhs)):
                _fail("reverse", this_order, fname, names[i],
                      f"<ct, J v> by FD = {lhs:.6e} but <VJP(ct), v> = {rhs:.6e} "
                      f"(difference {abs(lhs - rhs):.3e}, atol={a:g}, rtol={r:g})")

    if order > 1:
        n = len(xs)
        if "fwd" in modes:
            vs = [_randn_like(x, rng) for x in xs]

            def f_jvp(*z):
                return jvp(f, tuple(z[:n]), tuple(z[n:]))[1]

            _check(f_jvp, list(xs) + vs, names + [f"tangent of {nm}" for nm in names], order - 1,
                   modes, atol, rtol, eps, rng, f"jvp({fname})")
        if "rev" in modes:
            out_val = f(*xs)
            o_leaves, o_td = tree_flatten(out_val)
            cts = [_randn_like(o, rng) for o in o_leaves]
            m = len(cts)

            def f_vjp(*z):
                out, fn = vjp(f, *z[:n])
                # Finite differences run in float64; cotangents follow the output's dtype.
                cts = [c if dtype_name(c.dtype) == dtype_name(o.dtype) else ops.astype(c, o.dtype)
                       for c, o in zip(z[n:], tree_flatten(out)[0])]
                return fn(tree_unflatten(o_td, cts))

            _check(f_vjp, list(xs) + cts, names + [f"cotangent {k} of the output" for k in range(m)],
                   order - 1, modes, atol, rtol, eps, rng, f"vjp({fname})")
