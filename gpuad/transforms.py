"""The transforms: vjp and jvp, and everything built from them.

Semantics follow JAX.  Arguments and outputs may be pytrees (nested tuples,
lists and dicts) of arrays.
"""

from __future__ import annotations

from . import ops
from ._backend import namespace_of
from ._core import Tracer, full_unbox, new_trace
from ._dtypes import dtype_name, is_floating
from ._forward import JVPTrace, JVPTracer
from ._reverse import VJPTrace, VJPTracer, backward
from ._tree import tree_flatten, tree_unflatten

__all__ = [
    "vjp", "jvp", "grad", "value_and_grad", "jacfwd", "jacrev", "hessian", "hvp",
    "stop_gradient",
]


def _describe(x):
    return f"shape {tuple(x.shape)} and dtype {x.dtype}" if hasattr(x, "shape") else repr(type(x))


def _check_matches(c, v, what, of, fname):
    """``ValueError`` (``TypeError`` for a non-array) unless ``c`` has ``v``'s shape, dtype, library and device."""
    if type(c) is type(v) and c.shape == v.shape and c.dtype == v.dtype and c.device == v.device:
        return  # the common case, decided without a namespace lookup
    if not hasattr(c, "shape") or not hasattr(c, "dtype"):
        raise TypeError(f"{fname}: {what} is a {type(c).__name__}, not an array; {of} has {_describe(v)}")
    try:  # the same library and device (both errors name the two arrays)
        namespace_of((full_unbox(c), full_unbox(v)), fname)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{fname}: {what} does not match {of}: {str(e).split(': ', 1)[-1]}") from None
    if tuple(c.shape) != tuple(v.shape) or dtype_name(c.dtype) != dtype_name(v.dtype):
        raise ValueError(f"{fname}: {what} has {_describe(c)}, but {of} has {_describe(v)}")


def _check_callable(f, fname):
    """``TypeError`` naming the transform unless ``f`` can be called."""
    if not callable(f):
        raise TypeError(f"{fname}: the function to transform must be a callable, got {type(f).__name__} {f!r}")


def _check_differentiable(x, what, fname):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{fname}: {what} must be an array, got {type(x).__name__}: {x!r}")
    namespace_of((full_unbox(x),), fname)  # lets the backend attach (NOTE [namespace cache])
    if not is_floating(x.dtype):
        raise TypeError(
            f"{fname}: {what} has dtype {x.dtype} (shape {tuple(x.shape)}); only floating-point inputs "
            "can be differentiated. Cast it with xp.astype, or leave it out of argnums"
        )


def _vjp_flat(f, args, diff_leaves_idx, fname):
    """Run f on args with a reverse trace around the leaves listed in diff_leaves_idx.

    Returns (trace, out_tree_value, leaf_nodes, in_treedef, aux_or_None).
    """
    leaves, td = tree_flatten(args)
    trace = VJPTrace()
    with new_trace(trace):
        boxed = list(leaves)
        nodes = []
        for i in diff_leaves_idx:
            _check_differentiable(leaves[i], f"input {i}", fname)
            tr = trace.new_input(leaves[i])
            boxed[i] = tr
            nodes.append(tr._node)
        with _explain_out_of_memory(fname, "forward"):
            out = f(*tree_unflatten(td, boxed))
    return trace, out, nodes


class _explain_out_of_memory:
    """Re-raise a backend's out-of-memory error with the tape's bytes and a hint.

    See NOTE [one wrap] in ``gpuad._device_memory`` (imported only when a
    ``MemoryError`` passes, so the normal path costs nothing).
    """

    __slots__ = ("fname", "phase")

    def __init__(self, fname, phase):
        self.fname = fname
        self.phase = phase

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, MemoryError):
            from ._device_memory import needs_explaining, out_of_memory

            if needs_explaining(exc):
                raise out_of_memory(exc, self.fname, self.phase) from exc
        return False


def _backward(roots, free, fname):
    """:func:`backward`, with out-of-memory errors explained."""
    with _explain_out_of_memory(fname, "backward"):
        return backward(roots, free=free)


def _unbox_outputs(trace, out, fname):
    """Split outputs into plain values and tape references (None for constants)."""
    leaves, td = tree_flatten(out)
    values, refs = [], []
    for o in leaves:
        if isinstance(o, VJPTracer) and o._trace is trace:
            values.append(o._primal)
            refs.append((o._node, o._index))
        else:
            if not hasattr(o, "shape"):
                raise TypeError(f"{fname}: the function returned a {type(o).__name__}, not an array")
            values.append(o)
            refs.append(None)
    return values, refs, td


def _split_aux(out, has_aux, fname):
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{fname}: with has_aux=True the function must return a pair (output, aux)")
    return out[0], out[1]


def _strip(tree):
    leaves, td = tree_flatten(tree)
    return tree_unflatten(td, [_strip_leaf(x) for x in leaves])


def _strip_leaf(x):
    # Aux outputs: drop only the levels made by transforms that have ended.
    while isinstance(x, Tracer) and not x._trace.alive:
        x = x._primal
    return x


def _zeros_for(x):
    return ops.zeros_like(x) if not isinstance(x, Tracer) else ops.zeros_like(full_unbox(x))


def _cotangents_to_inputs(leaf_nodes, leaf_values, grads):
    out = []
    for node, x in zip(leaf_nodes, leaf_values):
        g = grads.get(node)
        out.append(g if g is not None else ops.zeros_like(full_unbox(x)))
    return out


def vjp(f, *primals, has_aux=False):
    """Evaluate ``f(*primals)`` and return ``(out, vjp_fn)`` (and ``aux``).

    ``vjp_fn(ct)`` takes a cotangent with the structure, shapes and dtypes of
    ``out`` and returns a tuple with one cotangent per primal.  It may be
    called any number of times (the tape is kept until ``vjp_fn`` is freed).
    """
    _check_callable(f, "vjp")
    leaves, in_td = tree_flatten(primals)
    trace, out, nodes = _vjp_flat(f, primals, range(len(leaves)), "vjp")
    out, aux = _split_aux(out, has_aux, "vjp")
    values, refs, out_td = _unbox_outputs(trace, out, "vjp")

    def vjp_fn(ct):
        ct_leaves, ct_td = tree_flatten(ct)
        if ct_td != out_td:
            raise ValueError(f"vjp_fn: cotangent structure {ct_td!r} does not match output structure {out_td!r}")
        roots = []
        for k, (c, v, r) in enumerate(zip(ct_leaves, values, refs)):
            _check_matches(c, v, f"cotangent {k}", "the output", "vjp_fn")
            if r is not None:
                roots.append((r, c))
        grads = _backward(roots, False, "vjp")
        return tree_unflatten(in_td, _cotangents_to_inputs(nodes, leaves, grads))

    out_value = tree_unflatten(out_td, values)
    if has_aux:
        return out_value, vjp_fn, _strip(aux)
    return out_value, vjp_fn


def _argnums_tuple(argnums, nargs, fname):
    single = isinstance(argnums, int) and not isinstance(argnums, bool)
    try:
        nums = (argnums,) if single else tuple(argnums)
    except TypeError:
        nums = None
    if nums is None or isinstance(argnums, str) or any(not isinstance(a, int) or isinstance(a, bool) for a in nums):
        raise TypeError(f"{fname}: argnums must be an int or a tuple of ints, got {argnums!r}")
    for a in nums:
        if not -nargs <= a < nargs:
            raise ValueError(f"{fname}: argnums {argnums!r} is out of range for {nargs} positional arguments")
    nums = tuple(a % nargs for a in nums)
    if len(set(nums)) != len(nums):
        raise ValueError(f"{fname}: argnums {argnums!r} names the same argument twice")
    return single, nums


def value_and_grad(f, argnums=0, has_aux=False):
    """Return a function computing ``(f(*args), grad)`` (``((value, aux), grad)`` with aux).

    ``f`` must return a scalar (shape ``()``) floating-point array.
    """
    _check_callable(f, "value_and_grad")

    def value_and_grad_f(*args, **kwargs):
        single, nums = _argnums_tuple(argnums, len(args), "grad")
        # Flatten only the differentiated arguments; the rest are constants.
        leaf_counts = [len(tree_flatten(a)[0]) for a in args]
        starts = [sum(leaf_counts[:i]) for i in range(len(args))]
        diff = [starts[i] + j for i in nums for j in range(leaf_counts[i])]
        trace, out, nodes = _vjp_flat(lambda *a: f(*a, **kwargs), tuple(args), diff, "grad")
        out, aux = _split_aux(out, has_aux, "grad")
        if not hasattr(out, "shape") or tuple(out.shape) != ():
            shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise TypeError(
                f"grad: the function must return a scalar (shape ()), but it returned shape {shape}; "
                "use jacrev or vjp for non-scalar outputs, or reduce with xp.sum"
            )
        if not is_floating(out.dtype):
            raise TypeError(
                f"grad: the function returned dtype {out.dtype}; only floating outputs can be differentiated")
        if dtype_name(out.dtype).startswith("complex"):
            raise TypeError(
                f"grad: the function returned dtype {out.dtype}; grad needs a real output. Return xp.real(y) "
                "or xp.abs(y), or use vjp with a complex cotangent")
        if isinstance(out, VJPTracer) and out._trace is trace:
            value = out._primal
            root = ((out._node, out._index), ops.ones_like(full_unbox(value)))
            grads = _backward([root], True, "grad")
        else:
            value, grads = out, {}
        all_leaves = tree_flatten(tuple(args))[0]
        flat = _cotangents_to_inputs(nodes, [all_leaves[i] for i in diff], grads)
        per_arg, k = [], 0
        for i in nums:
            td = tree_flatten(args[i])[1]
            per_arg.append(tree_unflatten(td, flat[k:k + leaf_counts[i]]))
            k += leaf_counts[i]
        g = per_arg[0] if single else tuple(per_arg)
        if has_aux:
            return (value, _strip(aux)), g
        return value, g

    value_and_grad_f.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    return value_and_grad_f


def grad(f, argnums=0, has_aux=False):
    """Return a function computing the gradient of scalar-valued ``f``.

    Parameters
    ----------
    f : callable
        Returns a 0-d floating array (and an aux pytree if ``has_aux``).
    argnums : int or tuple of int
        Which positional arguments to differentiate.

    Returns
    -------
    callable
        Same arguments as ``f``; returns gradients shaped like the
        differentiated arguments (a tuple for tuple ``argnums``), plus ``aux``.
    """
    _check_callable(f, "grad")
    vg = value_and_grad(f, argnums, has_aux)

    def grad_f(*args, **kwargs):
        (value_aux, g) = vg(*args, **kwargs)
        if has_aux:
            return g, value_aux[1]
        return g

    grad_f.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return grad_f


def jvp(f, primals, tangents):
    """Forward mode: return ``(f(*primals), J @ tangents)``.

    ``primals`` and ``tangents`` are tuples of pytrees of identical structure,
    shapes and dtypes.
    """
    _check_callable(f, "jvp")
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp: primals and tangents must be tuples (one entry per positional argument)")
    p_leaves, p_td = tree_flatten(tuple(primals))
    t_leaves, t_td = tree_flatten(tuple(tangents))
    if p_td != t_td:
        raise ValueError(f"jvp: tangent structure {t_td!r} does not match primal structure {p_td!r}")
    for k, (p, t) in enumerate(zip(p_leaves, t_leaves)):
        _check_differentiable(p, f"primal {k}", "jvp")
        if not hasattr(t, "shape"):
            raise ValueError(f"jvp: tangent {k} has {_describe(t)}, but its primal has {_describe(p)}")
        _check_matches(t, p, f"tangent {k}", "its primal", "jvp")
    trace = JVPTrace()
    with new_trace(trace):
        boxed = [JVPTracer(trace, p, t) for p, t in zip(p_leaves, t_leaves)]
        with _explain_out_of_memory("jvp", "forward"):
            out = f(*tree_unflatten(p_td, boxed))
    o_leaves, o_td = tree_flatten(out)
    outs, touts = [], []
    for o in o_leaves:
        if isinstance(o, JVPTracer) and o._trace is trace:
            outs.append(o._primal)
            touts.append(o._tangent)
        else:
            if not hasattr(o, "shape"):
                raise TypeError(f"jvp: the function returned a {type(o).__name__}, not an array")
            outs.append(o)
            touts.append(ops.zeros_like(full_unbox(o)))
    return tree_unflatten(o_td, outs), tree_unflatten(o_td, touts)


def _one_hot_rows(x):
    """Plain one-hot arrays, one per element of ``x``, each shaped like ``x``."""
    raw = full_unbox(x)
    n = 1
    for s in raw.shape:
        n *= s
    eye = ops.eye(n, dtype=raw.dtype, device=raw.device) if n else None
    return [ops.reshape(eye[i, :], tuple(raw.shape)) for i in range(n)]


def _assemble(columns, out_shape, in_shape, like):
    """Stack per-input-element columns into an array of shape out_shape + in_shape."""
    if not columns:
        raw = full_unbox(like)
        return ops.zeros(tuple(out_shape) + tuple(in_shape), dtype=raw.dtype, device=raw.device)
    stacked = ops.stack(columns, axis=-1)
    return ops.reshape(stacked, tuple(out_shape) + tuple(in_shape))


def jacfwd(f, argnums=0):
    """Jacobian by forward mode: one JVP sweep per input element.

    Keyword arguments of the returned function go to ``f`` undifferentiated.

    For output leaf of shape ``O`` and input of shape ``I`` the result has
    shape ``O + I``; pytree outputs give a pytree of such Jacobians.  Every
    differentiated argument is traced in every sweep (its tangent is zero
    except in its own sweeps), so ``f`` sees tracers wherever it expects them.
    """
    _check_callable(f, "jacfwd")

    def jacfwd_f(*args, **kwargs):
        single, nums = _argnums_tuple(argnums, len(args), "jacfwd")
        arg_tds = [tree_flatten(args[i])[1] for i in nums]
        in_leaves = tree_flatten(tuple(args[i] for i in nums))[0]
        for j, leaf in enumerate(in_leaves):
            _check_differentiable(leaf, f"input leaf {j}", "jacfwd")

        def g(*leaves):
            new_args = list(args)
            k = 0
            for i, td in zip(nums, arg_tds):
                new_args[i] = tree_unflatten(td, leaves[k:k + td.num_leaves])
                k += td.num_leaves
            return f(*new_args, **kwargs)

        zeros = [ops.zeros_like(full_unbox(x)) for x in in_leaves]
        out_struct = None
        out_leaves = None
        columns = []  # columns[j][k]: tangents of output leaf k, one per element of input leaf j
        for j, leaf in enumerate(in_leaves):
            cols = None
            for onehot in _one_hot_rows(leaf):
                tangents = list(zeros)
                tangents[j] = onehot
                out, tout = jvp(g, tuple(in_leaves), tuple(tangents))
                out_leaves, out_struct = tree_flatten(out)
                t_leaves = tree_flatten(tout)[0]
                if cols is None:
                    cols = [[] for _ in t_leaves]
                for c, t in zip(cols, t_leaves):
                    c.append(t)
            columns.append(cols)
        if out_leaves is None:  # every input is empty: evaluate once for the output shapes
            out_leaves, out_struct = tree_flatten(g(*in_leaves))
        blocks = [[_assemble(columns[j][k] if columns[j] else [], o.shape, x.shape, x)
                   for j, x in enumerate(in_leaves)] for k, o in enumerate(out_leaves)]
        per_arg, j = [], 0
        for td in arg_tds:
            n = td.num_leaves
            per_arg.append((td, [[blocks[k][j + m] for k in range(len(out_leaves))] for m in range(n)]))
            j += n
        return _jac_tree(out_struct, per_arg, single)

    return jacfwd_f


def _jac_tree(out_td, per_arg, single):
    """Nest Jacobian blocks as out_tree[arg][in_tree], like JAX."""
    n_out = out_td.num_leaves
    result_leaves = []
    for k in range(n_out):
        args_part = [tree_unflatten(a_td, [blocks[k] for blocks in per_leaf]) for a_td, per_leaf in per_arg]
        result_leaves.append(args_part[0] if single else tuple(args_part))
    return tree_unflatten(out_td, result_leaves)


def jacrev(f, argnums=0):
    """Jacobian by reverse mode: one VJP sweep per output element.

    Keyword arguments of the returned function go to ``f`` undifferentiated.
    """
    _check_callable(f, "jacrev")

    def jacrev_f(*args, **kwargs):
        single, nums = _argnums_tuple(argnums, len(args), "jacrev")
        arg_tds = [tree_flatten(args[i])[1] for i in nums]

        def g(*diff_args):
            new_args = list(args)
            for i, a in zip(nums, diff_args):
                new_args[i] = a
            return f(*new_args, **kwargs)

        out, vjp_fn = vjp(g, *[args[i] for i in nums])
        out_leaves, out_td = tree_flatten(out)
        in_leaves = tree_flatten(tuple(args[i] for i in nums))[0]
        blocks = []  # blocks[k][j]: Jacobian of out leaf k wrt in leaf j
        for k, o in enumerate(out_leaves):
            rows = [[] for _ in in_leaves]
            for onehot in _one_hot_rows(o):
                cts = [onehot if kk == k else ops.zeros_like(full_unbox(oo)) for kk, oo in enumerate(out_leaves)]
                cols = tree_flatten(vjp_fn(tree_unflatten(out_td, cts)))[0]
                for r, c in zip(rows, cols):
                    r.append(c)
            blk = []
            for j, x in enumerate(in_leaves):
                if rows[j]:
                    st = ops.stack(rows[j], axis=0)
                    blk.append(ops.reshape(st, tuple(o.shape) + tuple(x.shape)))
                else:
                    blk.append(ops.zeros(tuple(o.shape) + tuple(x.shape), dtype=x.dtype, device=x.device))
            blocks.append(blk)
        per_arg, j = [], 0
        for td in arg_tds:
            n = td.num_leaves
            per_arg.append((td, [[blocks[k][j + m] for k in range(len(out_leaves))] for m in range(n)]))
            j += n
        return _jac_tree(out_td, per_arg, single)

    return jacrev_f


def hessian(f, argnums=0):
    """Hessian by forward-over-reverse: ``jacfwd(jacrev(f))``."""
    _check_callable(f, "hessian")
    return jacfwd(jacrev(f, argnums), argnums)


def hvp(f, primals, tangents):
    """Hessian-vector product ``H(primals) @ tangents`` without forming H.

    Reverse-over-forward: the gradient of the directional derivative,
    ``grad(lambda *x: jvp(f, x, tangents)[1])(*primals)``.  ``f`` returns a
    scalar and is differentiated with respect to all its positional
    arguments; the result has the structure of ``primals``.

    Notes
    -----
    NOTE [hvp mode]: forward-over-reverse (``jvp(grad(f))``, what
    :func:`hessian` does per column) also computes the gradient itself, which
    an HVP throws away; eagerly nothing removes that work.  Reverse over
    forward computes only what the product needs, and skips the backward of
    every tangent op whose other operand is constant (``A @ v``): on
    ``sum(tanh(A @ x) ** 2)`` it does three matrix-vector products, as a
    hand-written HVP does, against four (bench/hvp.py: ×1.6 of a gradient
    against ×2.0).
    """
    _check_callable(f, "hvp")
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError(
            f"hvp: primals and tangents must be tuples (one entry per positional argument), got "
            f"{type(primals).__name__} and {type(tangents).__name__}; write hvp(f, (x,), (v,))")
    n = len(primals)
    tangents = tuple(tangents)
    if n != len(tangents):
        raise ValueError(f"hvp: {n} primals but {len(tangents)} tangents; give one tangent per primal")

    def directional(*xs):
        return jvp(f, xs, tangents)[1]

    return grad(directional, argnums=tuple(range(n)) if n != 1 else 0)(*primals)


def stop_gradient(x):
    """``x`` with every level of tracing removed: a constant to all transforms."""
    leaves, td = tree_flatten(x)
    return tree_unflatten(td, [full_unbox(v) for v in leaves])


