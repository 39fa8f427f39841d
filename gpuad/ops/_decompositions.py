"""Linear algebra (part 2): cholesky, eigh, svd, qr, the norms and pinv.

Exported as ``linalg_<name>`` (``gpuad.xp.linalg`` strips the prefix).  The
rules assume real floating inputs and are written with gpuad ops only, so
they differentiate again (second order is tested).

# NOTE [symmetric inputs]: ``cholesky``, ``eigh`` and ``eigvalsh`` read only
# half of their input in LAPACK, which half depending on the backend.  Like
# JAX, they are applied to ``(x + x^T) / 2``: identical for the symmetric
# inputs they are meant for, and it makes the derivative well defined -- the
# cotangent of ``x`` is symmetric and the derivative along any direction ``v``
# is the derivative along ``(v + v^T) / 2``.

# NOTE [spectral gradients]: the eigh and svd rules divide by eigenvalue
# (singular value squared) differences, so the derivatives of the vectors
# assume distinct eigenvalues (singular values): with repeated ones the vectors
# are not unique and their derivative is undefined.  The svd rules for
# non-square matrices also divide by the singular values, which must then be
# non-zero.  Each reciprocal is guarded (1/0 is taken as 0), so functions of the
# values alone (eigvalsh, svdvals, nuclear and spectral norms) get their exact
# derivatives -- no nan from 0 * inf -- even at repeated or zero values, where
# the vectors' cotangents are zero.  References: Murray (2016) for cholesky; Giles
# (2008) / Seeger et al. (2017) for eigh; Townsend (2016) for svd; Walter and
# Lehmann (2018) for qr.
"""

from __future__ import annotations

from collections import namedtuple

from .._dtypes import dtype_name
from .._registry import defnondiff, defop
from ._elementwise import (
    abs, add, astype, divide, equal, greater, logical_or, multiply, pow, reciprocal, sign, subtract, where,
)
from ._indexing import getitem
from ._linalg import (
    _check_matrix, _check_square, _diag_matrix, _eye_mask, _mT, _real_only, _shape, _sym, _traced, _tril,
    linalg_diagonal, linalg_inv,
)
from ._manipulation import expand_dims, normalize_axes, normalize_axis, permute_dims, reshape
from ._matmul import matmul
from ._reductions import expand_reduced, keepdims_shape, sum

__all__ = [
    "linalg_cholesky", "linalg_eigh", "linalg_eigvalsh", "linalg_svd", "linalg_svdvals", "linalg_qr",
    "linalg_pinv", "linalg_vector_norm", "linalg_matrix_norm", "linalg_norm", "linalg_matrix_rank",
    "EighResult", "SVDResult", "QRResult",
]

EighResult = namedtuple("EighResult", ["eigenvalues", "eigenvectors"])
SVDResult = namedtuple("SVDResult", ["U", "S", "Vh"])
QRResult = namedtuple("QRResult", ["Q", "R"])

_INF = float("inf")


def _phi(x):
    """Lower triangle with the diagonal halved."""
    half_diag = where(_eye_mask(x.shape[-1], x.device), multiply(x, 0.5), 0.0)
    return subtract(_tril(x), half_diag)


def _offdiag_reciprocal(d):
    """``1 / d`` off the diagonal, 0 on it and where ``d == 0`` (d: (..., K, K))."""
    skip = logical_or(_eye_mask(d.shape[-1], d.device), equal(d, 0))
    return where(skip, 0.0, reciprocal(where(skip, 1.0, d)))


def _safe_reciprocal(s):
    """``1 / s``, 0 where ``s == 0``."""
    zero = equal(s, 0)
    return where(zero, 0.0, reciprocal(where(zero, 1.0, s)))


def _col_scale(x, s):
    """``x @ diag(s)``."""
    return multiply(x, expand_dims(s, -2))


def _row_scale(s, x):
    """``diag(s) @ x``."""
    return multiply(expand_dims(s, -1), x)


# --- cholesky -------------------------------------------------------------------
# dL = L Phi(L^-1 dA L^-T);  A_bar = sym(L^-T Phi(L^T L_bar) L^-1)   (Murray 2016)
def _chol_jvp(t, ans, x):
    linv = linalg_inv(ans)
    return matmul(ans, _phi(matmul(linv, matmul(t, _mT(linv)))))


def _chol_vjp(g, ans, x):
    linv = linalg_inv(ans)
    s = matmul(_mT(linv), matmul(_phi(matmul(_mT(ans), g)), linv))
    return _sym(s)


cholesky_p = defop(
    "linalg_cholesky", lambda xp, x: xp.linalg.cholesky(x),
    vjp=(_chol_vjp,), jvp=(_chol_jvp,), keep_args=(), keep_ans=True)


def linalg_cholesky(x, /, *, upper=False):
    """Cholesky factor of symmetric positive-definite matrices: (..., M, M) -> (..., M, M).

    ``x = L L^T`` with ``L`` lower triangular (``upper=True`` returns ``L^T``).
    ``x`` is symmetrised first (NOTE [symmetric inputs]).
    """
    _check_square(x, "cholesky")
    _real_only(x, "cholesky")
    low = cholesky_p(_sym(x))
    return _mT(low) if upper else low


# --- eigh -------------------------------------------------------------------------
# With A = V diag(w) V^T and M = V^T dA V:  dw = diag(M),  dV = V (F o M),
# F_ij = 1 / (w_j - w_i) off the diagonal;  A_bar = V (diag(w_bar) + F o (V^T V_bar)) V^T.
def _eigh_f(w):
    return _offdiag_reciprocal(subtract(expand_dims(w, -2), expand_dims(w, -1)))


def _eigh_jvp(tangents, ans, x):
    (t,) = tangents
    if t is None:
        return (None, None)
    w, v = ans
    m = matmul(_mT(v), matmul(t, v))
    return (linalg_diagonal(m), matmul(v, multiply(_eigh_f(w), m)))


def _eigh_vjp(g, ans, x):
    w, v = ans
    gw, gv = g
    inner = add(_diag_matrix(gw), multiply(_eigh_f(w), matmul(_mT(v), gv)))
    return _sym(matmul(v, matmul(inner, _mT(v))))


def _eigh_impl(xp, x):
    r = xp.linalg.eigh(x)
    return (r[0], r[1])


eigh_p = defop("linalg_eigh", _eigh_impl, vjp=(_eigh_vjp,), jvp_joint=_eigh_jvp,
               keep_args=(), keep_ans=True, multiple_results=True)
_eigvalsh_nondiff = defnondiff("linalg_eigvalsh", lambda xp, x: xp.linalg.eigvalsh(x))


def linalg_eigh(x, /):
    """Eigen-decomposition of symmetric matrices.

    Parameters
    ----------
    x : array, shape (..., M, M)
        Symmetrised first (NOTE [symmetric inputs]).

    Returns
    -------
    EighResult
        ``eigenvalues`` (..., M) in ascending order and ``eigenvectors``
        (..., M, M), one per column.  Derivatives assume distinct
        eigenvalues (NOTE [spectral gradients]).
    """
    _check_square(x, "eigh")
    _real_only(x, "eigh")
    w, v = eigh_p(_sym(x))
    return EighResult(w, v)


def linalg_eigvalsh(x, /):
    """Eigenvalues of symmetric matrices, ascending: (..., M, M) -> (..., M)."""
    _check_square(x, "eigvalsh")
    _real_only(x, "eigvalsh")
    if not _traced(x):
        return _eigvalsh_nondiff(_sym(x))
    return eigh_p(_sym(x))[0]


# --- svd ---------------------------------------------------------------------------
# Reduced SVD A = U diag(s) V^T (A: (m, n), k = min(m, n)), P = U^T dA V:
#   ds = diag(P)
#   dU = U (F o (P S + S P^T)) + (I - U U^T) dA V S^-1       (second term if m > k)
#   dV = V (F o (S P + P^T S)) + (I - V V^T) dA^T U S^-1     (second term if n > k)
# with F_ij = 1 / (s_j^2 - s_i^2) off the diagonal (Townsend 2016).  The VJP is
# the adjoint: with J = F o (U^T U_bar), K = F o (V^T V_bar),
#   A_bar = U (diag(s_bar) + (J + J^T) S + S (K + K^T)) V^T
#           + (I - U U^T) U_bar S^-1 V^T + U S^-1 V_bar^T (I - V V^T).
def _svd_f(s):
    s2 = multiply(s, s)
    return _offdiag_reciprocal(subtract(expand_dims(s2, -2), expand_dims(s2, -1)))


def _svd_jvp(tangents, ans, x):
    (t,) = tangents
    if t is None:
        return (None, None, None)
    u, s, vh = ans
    v = _mT(vh)
    m, n = x.shape[-2], x.shape[-1]
    k = s.shape[-1]
    f = _svd_f(s)
    tv = matmul(t, v)
    p = matmul(_mT(u), tv)
    ps = _col_scale(p, s)
    sp = _row_scale(s, p)
    du = matmul(u, multiply(f, add(ps, _mT(ps))))
    dv = matmul(v, multiply(f, add(sp, _mT(sp))))
    if m > k:
        du = add(du, _col_scale(subtract(tv, matmul(u, p)), _safe_reciprocal(s)))
    if n > k:
        du_t = matmul(_mT(t), u)
        dv = add(dv, _col_scale(subtract(du_t, matmul(v, _mT(p))), _safe_reciprocal(s)))
    return (du, linalg_diagonal(p), _mT(dv))


def _svd_vjp(g, ans, x):
    u, s, vh = ans
    gu, gs, gvh = g
    v = _mT(vh)
    gv = _mT(gvh)
    m, n = x.shape[-2], x.shape[-1]
    k = s.shape[-1]
    f = _svd_f(s)
    utgu = matmul(_mT(u), gu)
    vtgv = matmul(_mT(v), gv)
    j = multiply(f, utgu)
    kk = multiply(f, vtgv)
    core = add(_diag_matrix(gs), add(_col_scale(add(j, _mT(j)), s), _row_scale(s, add(kk, _mT(kk)))))
    out = matmul(u, matmul(core, vh))
    if m > k:
        proj = subtract(gu, matmul(u, utgu))  # (I - U U^T) U_bar
        out = add(out, matmul(_col_scale(proj, _safe_reciprocal(s)), vh))
    if n > k:
        proj = subtract(gv, matmul(v, vtgv))  # (I - V V^T) V_bar
        out = add(out, matmul(_col_scale(u, _safe_reciprocal(s)), _mT(proj)))
    return out


def _svd_impl(xp, x):
    r = xp.linalg.svd(x, full_matrices=False)
    return (r[0], r[1], r[2])


svd_p = defop("linalg_svd", _svd_impl, vjp=(_svd_vjp,), jvp_joint=_svd_jvp,
              keep_args=(), keep_ans=True, multiple_results=True)
_svd_full_nondiff = defnondiff(
    "linalg_svd_full", lambda xp, x: tuple(xp.linalg.svd(x, full_matrices=True)))
_svdvals_nondiff = defnondiff("linalg_svdvals", lambda xp, x: xp.linalg.svdvals(x))


def linalg_svd(x, /, *, full_matrices=True):
    """Singular value decomposition ``x = U diag(S) Vh``.

    Parameters
    ----------
    x : array, shape (..., M, N)
    full_matrices : bool
        True gives ``U`` (..., M, M) and ``Vh`` (..., N, N); False the reduced
        ``U`` (..., M, K), ``Vh`` (..., K, N), ``K = min(M, N)``.  Only the
        reduced form (or a square ``x``) is differentiable.

    Returns
    -------
    SVDResult
        ``U``, ``S`` (..., K) in descending order, ``Vh``.  Derivatives assume
        distinct (and, for non-square ``x``, non-zero) singular values (NOTE
        [spectral gradients]).
    """
    _check_matrix(x, "svd")
    _real_only(x, "svd")
    if full_matrices and x.shape[-1] != x.shape[-2]:
        if _traced(x):
            raise NotImplementedError(
                f"svd: full_matrices=True of a non-square matrix (shape {_shape(x)}) is not differentiable "
                "(its extra singular vectors are not unique); pass full_matrices=False"
            )
        return SVDResult(*_svd_full_nondiff(x))
    return SVDResult(*svd_p(x))


def linalg_svdvals(x, /):
    """Singular values, descending: (..., M, N) -> (..., min(M, N))."""
    _check_matrix(x, "svdvals")
    _real_only(x, "svdvals")
    if not _traced(x):
        return _svdvals_nondiff(x)
    return svd_p(x)[1]


# --- qr -----------------------------------------------------------------------------
# Reduced QR of a tall A (m >= n).  With X = dA R^-1, C = Q^T X, O = L - L^T
# (L the strictly lower triangle of C):  dQ = Q (O - C) + X,  dR = (C - O) R.
# Adjoint: Y = Q^T Q_bar - R_bar R^T,  C_bar = tril(Y - Y^T, -1) - Y,
# A_bar = (Q_bar + Q C_bar) R^-T   (Walter and Lehmann 2018).
def _qr_jvp(tangents, ans, x):
    (t,) = tangents
    if t is None:
        return (None, None)
    q, r = ans
    xm = matmul(t, linalg_inv(r))
    c = matmul(_mT(q), xm)
    low = _tril(c, -1)
    om = subtract(low, _mT(low))
    return (add(matmul(q, subtract(om, c)), xm), matmul(subtract(c, om), r))


def _qr_vjp(g, ans, x):
    q, r = ans
    gq, gr = g
    y = subtract(matmul(_mT(q), gq), matmul(gr, _mT(r)))
    cbar = subtract(_tril(subtract(y, _mT(y)), -1), y)
    return matmul(add(gq, matmul(q, cbar)), _mT(linalg_inv(r)))


def _qr_impl(xp, x):
    r = xp.linalg.qr(x, mode="reduced")
    return (r[0], r[1])


qr_p = defop("linalg_qr", _qr_impl, vjp=(_qr_vjp,), jvp_joint=_qr_jvp,
             keep_args=(), keep_ans=True, multiple_results=True)
_qr_nondiff = defnondiff("linalg_qr_any", lambda xp, x, *, mode: tuple(xp.linalg.qr(x, mode=mode)))


def linalg_qr(x, /, *, mode="reduced"):
    """QR decomposition ``x = Q R``.

    Parameters
    ----------
    x : array, shape (..., M, N)
    mode : {"reduced", "complete"}
        Reduced: ``Q`` (..., M, K), ``R`` (..., K, N), ``K = min(M, N)``.
        Derivatives exist for the reduced mode of square or tall matrices
        (M >= N) of full rank.

    Returns
    -------
    QRResult
    """
    _check_matrix(x, "qr")
    _real_only(x, "qr")
    if mode not in ("reduced", "complete"):
        raise ValueError(f"qr: mode must be 'reduced' or 'complete', got {mode!r}")
    m, n = x.shape[-2], x.shape[-1]
    diff = m >= n and (mode == "reduced" or m == n)
    if not diff:
        if _traced(x):
            raise NotImplementedError(
                f"qr: derivatives need mode='reduced' and M >= N; got mode={mode!r} and shape {_shape(x)}"
            )
        return QRResult(*_qr_nondiff(x, mode=mode))
    return QRResult(*qr_p(x))


# --- vector_norm -------------------------------------------------------------
# NOTE [norm derivatives]: D = d||x||/dx has x's shape; the JVP is sum(D t) and
# the VJP g D.  For ord=2, D = x / ||x|| with both divisions guarded by where,
# so D = 0 (not nan) at x = 0, to every order.  ord=+-inf splits the
# derivative evenly between tied extreme entries; ord=0 (a count) has none.
def _norm_deriv(x, n, ord, axes):
    """D for ``n`` = the norm with kept dims (broadcastable to ``x``)."""
    if ord == 2:
        zero = equal(n, 0)
        return where(zero, 0.0, divide(x, where(zero, 1.0, n)))
    if ord == 1:
        return sign(x)
    if ord in (_INF, -_INF):
        hit = equal(abs(x), n)
        count = sum(astype(hit, x.dtype), axis=axes, keepdims=True)
        return where(hit, divide(sign(x), where(equal(count, 0), 1.0, count)), 0.0)
    # general p: sign(x) (|x| / n)^(p - 1), 0 where x == 0
    ax = abs(x)
    at0 = equal(ax, 0)
    r = divide(ax, where(equal(n, 0), 1.0, n))
    return where(at0, 0.0, multiply(sign(x), pow(where(at0, 1.0, r), ord - 1)))


def _kept(ans, x, axes, keepdims):
    return ans if keepdims else reshape(ans, keepdims_shape(_shape(x), axes))


def _vnorm_vjp(g, ans, x, *, axes, keepdims, ord):
    if ord == 0:
        return None
    d = _norm_deriv(x, _kept(ans, x, axes, keepdims), ord, axes)
    return multiply(expand_reduced(g, _shape(x), axes, keepdims), d)


def _vnorm_jvp(t, ans, x, *, axes, keepdims, ord):
    if ord == 0:
        return None
    d = _norm_deriv(x, _kept(ans, x, axes, keepdims), ord, axes)
    return sum(multiply(d, t), axis=axes, keepdims=keepdims)


def _vnorm_impl(xp, x, *, axes, keepdims, ord):
    axis = None if len(axes) == x.ndim else axes
    return xp.linalg.vector_norm(x, axis=axis, keepdims=keepdims, ord=ord)


vector_norm_p = defop(
    "linalg_vector_norm", _vnorm_impl,
    vjp=(_vnorm_vjp,), jvp=(_vnorm_jvp,), keep_args=(0,), keep_ans=True)


def linalg_vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    """Vector ``ord``-norm over ``axis`` (all axes by default).

    Parameters
    ----------
    x : array, shape S
    axis : None, int or tuple of int
    keepdims : bool
    ord : int or float
        2 (default), 1, ``inf``, ``-inf``, 0 (count of non-zeros, no
        derivative) or any other p: ``sum(|x|^p)^(1/p)``.

    Returns
    -------
    array
        ``S`` without ``axis`` (or with size-1 axes if ``keepdims``).

    Notes
    -----
    See NOTE [norm derivatives]: the ord=2 derivative at 0 is 0.
    """
    if isinstance(ord, bool) or not isinstance(ord, (int, float)):
        raise ValueError(f"vector_norm: ord must be a number, got {ord!r}")
    _real_only(x, "vector_norm")
    axes = normalize_axes(axis, x.ndim, "vector_norm")
    return vector_norm_p(x, axes=axes, keepdims=bool(keepdims), ord=ord)


# --- built on svd ---------------------------------------------------------------------
def linalg_pinv(x, /, *, rtol=None):
    """Moore-Penrose pseudo-inverse via the SVD: (..., M, N) -> (..., N, M).

    Singular values at most ``rtol * max(s)`` (default ``max(M, N) * eps``)
    are treated as zero.  Derivatives assume distinct non-zero singular values
    and a rank that does not change nearby.
    """
    _check_matrix(x, "pinv")
    m, n = x.shape[-2], x.shape[-1]
    if m == 0 or n == 0:
        return reshape(_mT(x), _shape(x)[:-2] + (n, m))
    if rtol is None:
        rtol = max(m, n) * (1.2e-7 if dtype_name(x.dtype) in ("float32", "complex64") else 2.3e-16)
    u, s, vh = linalg_svd(x, full_matrices=False)
    cutoff = multiply(getitem(s, (Ellipsis, slice(0, 1))), rtol)
    keep = greater(s, cutoff)
    s_inv = where(keep, reciprocal(where(keep, s, 1.0)), 0.0)
    return matmul(_col_scale(_mT(vh), s_inv), _mT(u))


_matrix_rank = defnondiff(
    "linalg_matrix_rank", lambda xp, x, *, rtol: xp.linalg.matrix_rank(x, rtol=rtol))


def linalg_matrix_rank(x, /, *, rtol=None):
    """Number of singular values above ``rtol * max(s)``: (..., M, N) -> (...).  No derivative."""
    _check_matrix(x, "matrix_rank")
    return _matrix_rank(x, rtol=rtol)


def linalg_matrix_norm(x, /, *, keepdims=False, ord="fro"):
    """Matrix norm of each matrix: (..., M, N) -> (...) (or (..., 1, 1) with ``keepdims``).

    ``ord``: ``"fro"``, ``"nuc"`` (sum of singular values), 2 / -2 (largest /
    smallest singular value), 1 / -1 (max / min column abs-sum), ``inf`` /
    ``-inf`` (max / min row abs-sum).  Spectral ones assume distinct singular
    values for their derivatives.
    """
    _check_matrix(x, "matrix_norm")
    if ord == "fro":
        return linalg_vector_norm(x, axis=(-2, -1), keepdims=keepdims, ord=2)
    if ord in ("nuc", 2, -2):
        s = linalg_svdvals(x)
        if ord == "nuc":
            out = sum(s, axis=-1)
        else:
            out = getitem(s, (Ellipsis, 0 if ord == 2 else -1))
    elif ord in (1, -1, _INF, -_INF):
        sums = linalg_vector_norm(x, axis=-2 if ord in (1, -1) else -1, ord=1)
        out = linalg_vector_norm(sums, axis=-1, ord=_INF if ord in (1, _INF) else -_INF)
    else:
        raise ValueError(f"matrix_norm: unsupported ord {ord!r}; use 'fro', 'nuc', 1, -1, 2, -2, inf or -inf")
    if keepdims:
        out = reshape(out, _shape(out) + (1, 1))
    return out


def linalg_norm(x, /, ord=None, axis=None, keepdims=False):
    """NumPy-style ``norm``: a matrix norm for a 2-tuple ``axis`` (or a 2-D ``x``
    with ``axis=None`` and ``ord`` given), a vector norm otherwise (``ord=None``:
    2 / "fro")."""
    if axis is None and ord is not None and x.ndim == 2:
        axis = (0, 1)
    if isinstance(axis, tuple) and len(axis) == 2:
        a, b = (normalize_axis(ax, x.ndim, "norm") for ax in axis)
        if a == b:
            raise ValueError(f"norm: axis {axis} repeats an axis")
        rest = tuple(i for i in range(x.ndim) if i not in (a, b))
        xt = permute_dims(x, rest + (a, b))
        out = linalg_matrix_norm(xt, ord="fro" if ord is None else ord)
        if keepdims:
            shape = [x.shape[i] for i in range(x.ndim)]
            shape[a] = shape[b] = 1
            out = reshape(out, tuple(shape))
        return out
    return linalg_vector_norm(x, axis=axis, keepdims=keepdims, ord=2 if ord is None else ord)
