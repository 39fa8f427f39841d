"""Linear algebra: tensordot, vecdot and the ``linalg`` extension (part 1).

This module holds the products, ``inv``/``solve``/``det``/``slogdet``,
``matrix_power``, the diagonal and the trace.  The factorisations (cholesky,
eigh, svd, qr), the norms and ``pinv`` live in ``_decompositions``.  Functions of
the ``linalg`` extension are exported as ``linalg_<name>``; ``gpuad.xp.linalg``
strips the prefix.

Rules are written with gpuad ops only, so they can be differentiated again.
Matrix rules assume real floating inputs (transposes, not conjugate
transposes).

# NOTE [matrix calculus]: with ``X = inv(A)``, ``dX = -X dA X`` and the
# cotangent is ``-X^T G X^T``; ``d det(A) = det(A) tr(A^{-1} dA)``, so the
# cotangent is ``g det(A) A^{-T}`` (``slogdet``: ``g A^{-T}``).  ``X =
# solve(A, B)``: ``dX = A^{-1} (dB - dA X)``, ``B_bar = A^{-T} G`` and
# ``A_bar = -B_bar X^T``.  These need ``A`` invertible; at a singular ``A``
# the backend's ``inv``/``solve`` raises or returns non-finite values.  det's
# rules use the adjugate instead (NOTE [det at singular matrices]).
"""

from __future__ import annotations

from collections import namedtuple

from .._core import Tracer
from .._dtypes import dtype_name
from .._registry import deflinear, defop
from ._creation import arange, eye, zeros
from ._elementwise import add, conj, divide, equal, less_equal, multiply, negative, subtract, where
from ._indexing import getitem
from ._manipulation import (
    broadcast_to, concat, expand_dims, matrix_transpose, normalize_axis, permute_dims, reshape, stack,
)
from ._matmul import matmul
from ._triangular import _offset
from ._reductions import sum

__all__ = [
    "tensordot", "vecdot",
    "linalg_tensordot", "linalg_vecdot", "linalg_matmul", "linalg_matrix_transpose",
    "linalg_outer", "linalg_diagonal", "linalg_trace", "linalg_inv", "linalg_solve", "linalg_det",
    "linalg_slogdet", "linalg_matrix_power", "linalg_cross",
    "SlogdetResult",
]

# --- helpers shared with _decompositions ------------------------------------
def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _shape(x):
    return tuple(x.shape)


def _check_square(x, op, arg="x"):
    """Raise unless ``x`` is a (stack of) square matrices."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{op}: argument {arg} must be a square matrix or a stack of them, shape (..., M, M); "
            f"got shape {_shape(x)}"
        )


def _check_matrix(x, op, arg="x"):
    if x.ndim < 2:
        raise ValueError(f"{op}: argument {arg} must have at least 2 dimensions (..., M, N); got shape {_shape(x)}")


def _broadcast_shapes(op, names, *shapes):
    """The broadcast of ``shapes``; ``ValueError`` naming ``op`` and the arguments if they clash."""
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(nd):
        size = 1
        for s in shapes:
            i = len(s) - nd + k
            d = s[i] if i >= 0 else 1
            if d != 1:
                if size not in (1, d):
                    desc = ", ".join(f"{n} {tuple(s)}" for n, s in zip(names, shapes))
                    raise ValueError(f"{op}: shapes do not broadcast: {desc}")
                size = d
        out.append(size)
    return tuple(out)


def _mT(x):
    return matrix_transpose(x)


def _index_grid(n, m, device):
    rows = reshape(arange(n, device=device), (n, 1))
    cols = reshape(arange(m, device=device), (1, m))
    return rows, cols


def _tril_mask(n, m, k, device):
    """Boolean (n, m) mask of ``j <= i + k`` (the lower triangle from diagonal ``k``)."""
    rows, cols = _index_grid(n, m, device)
    return less_equal(cols, add(rows, k))


def _eye_mask(n, device):
    rows, cols = _index_grid(n, n, device)
    return equal(rows, cols)


def _tril(x, k=0):
    """Lower triangle of a stack of matrices (entries above diagonal ``k`` set to 0)."""
    return where(_tril_mask(x.shape[-2], x.shape[-1], k, x.device), x, 0.0)


def _diag_matrix(d):
    """Stack of diagonal matrices (..., K, K) from (..., K)."""
    k = d.shape[-1]
    return multiply(expand_dims(d, -1), eye(k, dtype=d.dtype, device=d.device))


def _sym(x):
    """``(x + x^T) / 2``."""
    return multiply(add(x, _mT(x)), 0.5)


def _is_complex(x):
    return dtype_name(x.dtype).startswith("complex")


def _traced(*xs):
    return any(isinstance(x, Tracer) for x in xs)


def _real_only(x, op):
    """Raise for a traced complex ``x``: ``op``'s rules are written for real inputs."""
    if _is_complex(x) and _traced(x):
        raise NotImplementedError(f"{op}: derivatives of complex inputs are not implemented (got dtype {x.dtype})")


# --- tensordot, vecdot, outer ------------------------------------------------
def tensordot(x1, x2, /, *, axes=2):
    """Contract ``x1`` and ``x2`` over ``axes``.

    Parameters
    ----------
    x1, x2 : array
    axes : int or (sequence of int, sequence of int)
        An int ``n`` contracts the last ``n`` axes of ``x1`` with the first
        ``n`` of ``x2``; a pair lists the axes explicitly.

    Returns
    -------
    array
        Shape: ``x1``'s free axes followed by ``x2``'s.
    """
    if isinstance(axes, int):
        if axes < 0 or axes > min(x1.ndim, x2.ndim):
            raise ValueError(
                f"tensordot: axes={axes} must be between 0 and min(x1.ndim, x2.ndim) for shapes "
                f"{_shape(x1)} and {_shape(x2)}"
            )
        a1 = tuple(range(x1.ndim - axes, x1.ndim))
        a2 = tuple(range(axes))
    else:
        try:
            a1, a2 = axes
        except (TypeError, ValueError):
            raise ValueError(f"tensordot: axes must be an int or a pair of axis sequences, got {axes!r}") from None
        a1 = (a1,) if isinstance(a1, int) else tuple(a1)
        a2 = (a2,) if isinstance(a2, int) else tuple(a2)
        if len(a1) != len(a2):
            raise ValueError(f"tensordot: axes {a1} and {a2} must have the same length")
        a1 = tuple(normalize_axis(a, x1.ndim, "tensordot") for a in a1)
        a2 = tuple(normalize_axis(a, x2.ndim, "tensordot") for a in a2)
        if len(set(a1)) != len(a1) or len(set(a2)) != len(a2):
            raise ValueError(f"tensordot: repeated axis in axes={axes!r}")
    for i, j in zip(a1, a2):
        if x1.shape[i] != x2.shape[j]:
            raise ValueError(
                f"tensordot: contracted axis {i} of x1 (shape {_shape(x1)}) has size {x1.shape[i]} but "
                f"axis {j} of x2 (shape {_shape(x2)}) has size {x2.shape[j]}"
            )
    free1 = tuple(i for i in range(x1.ndim) if i not in a1)
    free2 = tuple(i for i in range(x2.ndim) if i not in a2)
    s1 = tuple(x1.shape[i] for i in free1)
    s2 = tuple(x2.shape[i] for i in free2)
    k = _prod(x1.shape[i] for i in a1)
    p1 = reshape(permute_dims(x1, free1 + a1), (_prod(s1), k))
    p2 = reshape(permute_dims(x2, a2 + free2), (k, _prod(s2)))
    return reshape(matmul(p1, p2), s1 + s2)


def vecdot(x1, x2, /, *, axis=-1):
    """Dot product along ``axis`` (``x1`` conjugated), broadcasting the other axes.

    Shapes: ``x1`` and ``x2`` broadcast to ``S``; the result has ``S`` without ``axis``.
    """
    shape = _broadcast_shapes("vecdot", ("x1", "x2"), _shape(x1), _shape(x2))
    ax = normalize_axis(axis, len(shape), "vecdot")
    back = ax - len(shape)  # the same axis counted from the end
    n1 = x1.shape[back] if x1.ndim >= -back else 1
    n2 = x2.shape[back] if x2.ndim >= -back else 1
    if n1 != n2:
        raise ValueError(
            f"vecdot: axis {axis} has size {n1} in x1 (shape {_shape(x1)}) but {n2} in x2 (shape {_shape(x2)})"
        )
    if _is_complex(x1):
        x1 = conj(x1)
    return sum(multiply(x1, x2), axis=ax)


def linalg_outer(x1, x2, /):
    """Outer product of vectors: (N,), (M,) -> (N, M)."""
    if x1.ndim != 1 or x2.ndim != 1:
        raise ValueError(f"outer: x1 and x2 must be 1-D, got shapes {_shape(x1)} and {_shape(x2)}")
    return multiply(reshape(x1, (x1.shape[0], 1)), reshape(x2, (1, x2.shape[0])))


def linalg_cross(x1, x2, /, *, axis=-1):
    """Cross product of 3-vectors along ``axis`` (other axes broadcast)."""
    nd = max(x1.ndim, x2.ndim)
    back = normalize_axis(axis, nd, "cross") - nd  # the axis counted from the end
    for name, x in (("x1", x1), ("x2", x2)):
        if x.ndim < -back or x.shape[back] != 3:
            raise ValueError(f"cross: axis {axis} of {name} (shape {_shape(x)}) must have size 3")
    shape = _broadcast_shapes("cross", ("x1", "x2"), _shape(x1), _shape(x2))
    ax = nd + back
    x1 = broadcast_to(x1, shape)
    x2 = broadcast_to(x2, shape)

    def c(x, i):
        return getitem(x, (slice(None),) * ax + (i, Ellipsis))

    a0, a1, a2 = c(x1, 0), c(x1, 1), c(x1, 2)
    b0, b1, b2 = c(x2, 0), c(x2, 1), c(x2, 2)
    return stack([
        subtract(multiply(a1, b2), multiply(a2, b1)),
        subtract(multiply(a2, b0), multiply(a0, b2)),
        subtract(multiply(a0, b1), multiply(a1, b0)),
    ], axis=ax)


# --- diagonal and trace --------------------------------------------------------
def _diag_len(n, m, k):
    return max(0, min(n, m - k)) if k >= 0 else max(0, min(n + k, m))


def _diag_embed(d, n, m, k):
    """The transpose of ``diagonal``: (..., L) -> (..., n, m) with ``d`` on diagonal ``k``."""
    length = d.shape[-1]
    along = n if k >= 0 else m  # diagonal entries are indexed by row (k >= 0) or column
    if along > length:
        pad = zeros(_shape(d)[:-1] + (along - length,), dtype=d.dtype, device=d.device)
        d = concat([d, pad], axis=-1)
    e = eye(n, m, k=k, dtype=d.dtype, device=d.device)
    return multiply(expand_dims(d, -1 if k >= 0 else -2), e)


def _diagonal_impl(xp, x, *, offset):
    return xp.linalg.diagonal(x, offset=offset)


diagonal_p = deflinear(
    "linalg_diagonal", _diagonal_impl,
    vjp=(lambda g, ans, x, *, offset: _diag_embed(g, x.shape[-2], x.shape[-1], offset),))


def linalg_diagonal(x, /, *, offset=0):
    """Diagonal ``offset`` of each matrix: (..., M, N) -> (..., L)."""
    _check_matrix(x, "diagonal")
    return diagonal_p(x, offset=_offset(offset, "diagonal", "offset"))


def linalg_trace(x, /, *, offset=0, dtype=None):
    """Sum of diagonal ``offset``: (..., M, N) -> (...)."""
    _check_matrix(x, "trace")
    return sum(linalg_diagonal(x, offset=offset), axis=-1, dtype=dtype)


# --- inv, solve --------------------------------------------------------------
inv_p = defop(
    "linalg_inv", lambda xp, x: xp.linalg.inv(x),
    vjp=(lambda g, ans, x: negative(matmul(_mT(ans), matmul(g, _mT(ans)))),),
    jvp=(lambda t, ans, x: negative(matmul(ans, matmul(t, ans))),),
    keep_args=(), keep_ans=True)


def linalg_inv(x, /):
    """Inverse of each matrix: (..., M, M) -> (..., M, M)."""
    _check_square(x, "inv")
    return inv_p(x)


def _solve_vjp_b(g, ans, a, b):
    return _solve_mat(_mT(a), g)


def _solve_vjp_a(g, ans, a, b):
    return negative(matmul(_solve_mat(_mT(a), g), _mT(ans)))


solve_p = defop(
    "linalg_solve", lambda xp, a, b: xp.linalg.solve(a, b),
    vjp=(_solve_vjp_a, _solve_vjp_b),
    jvp=(lambda t, ans, a, b: negative(_solve_mat(a, matmul(t, ans))),
         lambda t, ans, a, b: _solve_mat(a, t)),
    keep_args=(0,), keep_ans=True)


def _solve_mat(a, b):
    """solve for (..., M, M) and (..., M, K) stacks; batch dims broadcast."""
    batch = _broadcast_shapes("solve", ("x1 batch", "x2 batch"), _shape(a)[:-2], _shape(b)[:-2])
    a = broadcast_to(a, batch + _shape(a)[-2:])
    b = broadcast_to(b, batch + _shape(b)[-2:])
    return solve_p(a, b)


def linalg_solve(x1, x2, /):
    """Solve ``x1 @ X = x2``.

    Parameters
    ----------
    x1 : array, shape (..., M, M)
    x2 : array, shape (M,) or (..., M, K)
        A 1-D ``x2`` is one right-hand side vector, shared by every matrix
        of ``x1`` (the standard's rule); otherwise batch dimensions broadcast.

    Returns
    -------
    array, shape (..., M) for 1-D ``x2``, else (broadcast batch, M, K)
    """
    _check_square(x1, "solve", "x1")
    m = x1.shape[-1]
    if x2.ndim == 1:
        if x2.shape[0] != m:
            raise ValueError(
                f"solve: x2 of shape {_shape(x2)} does not match x1 of shape {_shape(x1)} (needs {m} rows)"
            )
        x = _solve_mat(x1, reshape(x2, (m, 1)))
        return reshape(x, _shape(x)[:-1])
    if x2.ndim < 1 or x2.shape[-2] != m:
        raise ValueError(
            f"solve: x2 of shape {_shape(x2)} does not match x1 of shape {_shape(x1)}; x2 must be (M,) or "
            f"(..., M, K) with M = {m}"
        )
    return _solve_mat(x1, x2)


# --- det, slogdet ------------------------------------------------------------
def _inv_t(a):
    return _mT(linalg_inv(a))


def _mat_scalar(s):
    return expand_dims(expand_dims(s, -1), -1)


def _adjugate_impl(xp, x):
    # adj(A) = det(A) A^{-1} = det(U) det(Vh) V diag(p) U^H for A = U diag(s) Vh, with
    # p_i the product of the singular values other than s_i: finite and exact for
    # every A, singular or not (rank n-1 gives a rank-1 adjugate, lower rank 0).
    n = x.shape[-1]
    if n <= 1:
        return xp.ones(x.shape, dtype=x.dtype, device=x.device)
    u, sv, vh = xp.linalg.svd(x, full_matrices=False)
    rows = xp.broadcast_to(sv[..., None, :], sv.shape[:-1] + (n, n))
    others = xp.where(xp.eye(n, dtype=xp.bool, device=x.device), xp.ones_like(rows), rows)
    p = xp.prod(others, axis=-1)
    scale = xp.linalg.det(u) * xp.linalg.det(vh)
    v = xp.matrix_transpose(vh)
    uh = xp.matrix_transpose(u)
    if _is_complex(x):
        v, uh = xp.conj(v), xp.conj(uh)
    return ((v * p[..., None, :]) @ uh) * scale[..., None, None]


def _adjugate_jvp(t, ans, x):
    # d adj(A) = (tr(adj dA) adj - adj dA adj) / det(A): needs A invertible.
    tr = sum(multiply(_mT(ans), t), axis=(-2, -1))
    return divide(subtract(multiply(_mat_scalar(tr), ans), matmul(ans, matmul(t, ans))),
                  _mat_scalar(det_p(x)))


def _adjugate_vjp(g, ans, x):
    inner = sum(multiply(g, ans), axis=(-2, -1))
    ct = _mT(ans)
    return divide(subtract(multiply(_mat_scalar(inner), ct), matmul(ct, matmul(g, ct))), _mat_scalar(det_p(x)))


# NOTE [det at singular matrices]: the derivative of det is the transposed
# adjugate (cofactor matrix), which exists for every matrix; det A^{-T}
# does not at a singular A.  ``linalg_adjugate`` computes it from an SVD, so
# grad(det) and jvp(det) are exact at singular matrices too (JAX's values).
# Second derivatives go through adjugate's own rules, which divide by det:
# they need A invertible.
adjugate_p = defop(
    "linalg_adjugate", _adjugate_impl, vjp=(_adjugate_vjp,), jvp=(_adjugate_jvp,),
    keep_args=(0,), keep_ans=True,
    doc="Adjugate ``det(x) inv(x)`` of each matrix, computed for singular ones too (NOTE [det at singular matrices]).")

det_p = defop(
    "linalg_det", lambda xp, x: xp.linalg.det(x),
    vjp=(lambda g, ans, x: multiply(_mat_scalar(g), _mT(adjugate_p(x))),),
    jvp=(lambda t, ans, x: sum(multiply(_mT(adjugate_p(x)), t), axis=(-2, -1)),),
    keep_args=(0,), keep_ans=False)


def linalg_det(x, /):
    """Determinant of each matrix: (..., M, M) -> (...).

    Its derivative, the transposed adjugate, is exact at singular matrices too;
    second derivatives need ``x`` invertible (NOTE [det at singular matrices]).
    """
    _check_square(x, "det")
    return det_p(x)


def _slogdet_impl(xp, x):
    r = xp.linalg.slogdet(x)
    return (r[0], r[1])


def _logdet_grad_t(x):
    """``x^{-T}``, the derivative of logabsdet; a clear error at a singular ``x``."""
    try:
        return _inv_t(x)
    except ValueError as e:  # numpy.linalg.LinAlgError is a ValueError
        if "singular" not in str(e).lower():
            raise
        raise type(e)(
            f"slogdet: derivative at a singular matrix (shape {_shape(x)}): logabsdet is -inf there and has no "
            "derivative. Use det (its derivative, the adjugate, exists everywhere) or keep x invertible") from e


def _slogdet_jvp(tangents, ans, x):
    (t,) = tangents
    if t is None:
        return (None, None)
    return (None, sum(multiply(_logdet_grad_t(x), t), axis=(-2, -1)))


slogdet_p = defop(
    "linalg_slogdet", _slogdet_impl,
    vjp=(lambda g, ans, x: multiply(_mat_scalar(g[1]), _logdet_grad_t(x)),),
    jvp_joint=_slogdet_jvp, keep_args=(0,), keep_ans=False, multiple_results=True)

SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])


def linalg_slogdet(x, /):
    """``(sign, logabsdet)`` of each matrix: (..., M, M) -> two arrays of shape (...).

    ``sign`` carries no derivative; ``logabsdet``'s cotangent is ``g x^{-T}``.
    """
    _check_square(x, "slogdet")
    _real_only(x, "slogdet")
    s, l = slogdet_p(x)
    return SlogdetResult(s, l)


# --- matrix_power ----------------------------------------------
def linalg_matrix_power(x, n, /):
    """``x`` multiplied by itself ``n`` times (``inv(x)`` for negative ``n``): (..., M, M)."""
    _check_square(x, "matrix_power")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"matrix_power: n must be an int, got {type(n).__name__}")
    if n == 0:
        return broadcast_to(eye(x.shape[-1], dtype=x.dtype, device=x.device), _shape(x))
    if n < 0:
        x, n = linalg_inv(x), -n
    result, base = None, x
    while n:
        if n & 1:
            result = base if result is None else matmul(result, base)
        n >>= 1
        if n:
            base = matmul(base, base)
    return result


linalg_tensordot = tensordot
linalg_vecdot = vecdot
linalg_matmul = matmul
linalg_matrix_transpose = matrix_transpose
