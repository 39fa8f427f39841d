"""Linear algebra: tensordot, vecdot and the linalg extension.

Every differentiable primitive goes through ``check_grads`` to order 2 in
both modes on every backend, with well-conditioned fixed inputs (SPD
matrices, distinct eigen/singular values).  Eigen/singular vectors are only
defined up to sign, so their checks use sign-invariant functions of them
(squares, products ``U diag(s) Vh``).  Closed-form gradients are checked
against the textbook results, and a hypothesis run covers batched shapes
(size-0 and size-1 batch dimensions included) on the CPU backends.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuad
from gpuad import xp
from gpuad.ops import _linalg
from gpuad.testing import check_grads

from strategies import seeds


def adjugate_p(x):
    """The ``linalg_adjugate`` primitive (internal: det's derivative, NOTE [det at singular matrices])."""
    return _linalg.adjugate_p(x)


LA = xp.linalg

#: Primitives whose derivatives this module checks to order 2, fwd and rev.
COVERS = {
    "linalg_diagonal", "linalg_inv", "linalg_solve", "linalg_det", "linalg_slogdet", "linalg_adjugate",
    "linalg_cholesky", "linalg_eigh", "linalg_svd", "linalg_qr", "linalg_vector_norm",
}


# --- fixed, well-conditioned inputs ---------------------------------------------
def _rng(seed=0):
    return np.random.default_rng(seed)


def _general(batch=(), n=3, seed=0):
    """Strictly diagonally dominant, hence well-conditioned, square matrices."""
    return _rng(seed).uniform(-0.8, 0.8, size=batch + (n, n)) + 3.0 * np.eye(n)


def _spd(batch=(), n=3, seed=0):
    """SPD with distinct eigenvalues: Q diag(1, 2, ...) Q^T with a random orthogonal Q."""
    q, _ = np.linalg.qr(_rng(seed).normal(size=batch + (n, n)))
    w = np.arange(1.0, n + 1.0) * 1.5
    return (q * w[..., None, :]) @ np.swapaxes(q, -1, -2)


def _distinct_sv(batch=(), m=4, n=3, seed=0):
    """Matrices with well-separated non-zero singular values."""
    rng = _rng(seed)
    k = min(m, n)
    u, _ = np.linalg.qr(rng.normal(size=batch + (m, k)))
    v, _ = np.linalg.qr(rng.normal(size=batch + (n, k)))
    s = np.arange(k, 0, -1) * 1.0 + 0.5
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def _svd_recon(r):
    """Sign-invariant functions of an SVD: the values, and U diag(s) Vh."""
    u, s, vh = r
    return s, xp.matmul(u * s[..., None, :], vh)


def _svd_parts(r):
    u, s, vh = r
    return s, u * u, vh * vh, xp.matmul(u, vh)


def _eigh_parts(r):
    w, v = r
    return w, v * v, xp.matmul(v * w[..., None, :], xp.matrix_transpose(v))


CASES = {
    # name: (function, (numpy inputs...))
    "tensordot_int": (lambda a, b: xp.tensordot(a, b, axes=1),
                      (_rng(1).normal(size=(2, 3)), _rng(2).normal(size=(3, 4)))),
    "tensordot_pairs": (lambda a, b: xp.tensordot(a, b, axes=([0, 2], [1, 0])),
                        (_rng(1).normal(size=(2, 3, 4)), _rng(2).normal(size=(4, 2, 5)))),
    "vecdot": (lambda a, b: xp.vecdot(a, b, axis=-1), (_rng(1).normal(size=(2, 3)), _rng(2).normal(size=(3,)))),
    "outer": (LA.outer, (_rng(1).normal(size=(3,)), _rng(2).normal(size=(2,)))),
    "cross": (lambda a, b: LA.cross(a, b), (_rng(1).normal(size=(2, 3)), _rng(2).normal(size=(3,)))),
    "diagonal": (lambda a: LA.diagonal(a, offset=1), (_rng(1).normal(size=(2, 3, 4)),)),
    "diagonal_neg": (lambda a: LA.diagonal(a, offset=-2), (_rng(1).normal(size=(4, 3)),)),
    "trace": (LA.trace, (_rng(1).normal(size=(2, 3, 3)),)),
    "inv": (LA.inv, (_general(),)),
    "solve_matrix": (LA.solve, (_general((2,)), _rng(3).normal(size=(3, 2)))),
    "solve_vector": (LA.solve, (_general((2,)), _rng(3).normal(size=(3,)))),
    "det": (LA.det, (_general((2,)),)),
    "adjugate": (adjugate_p, (_general((2,)),)),
    "adjugate_4x4": (adjugate_p, (_rng(6).normal(size=(4, 4)),)),
    "adjugate_1x1": (adjugate_p, (_rng(6).normal(size=(2, 1, 1)),)),
    "slogdet": (lambda a: LA.slogdet(a)[1], (_general() - 6.0 * np.eye(3),)),
    "matrix_power_3": (lambda a: LA.matrix_power(a, 3), (_general(seed=4) / 3.0,)),
    "matrix_power_neg": (lambda a: LA.matrix_power(a, -2), (_general(),)),
    "cholesky": (LA.cholesky, (_spd(),)),
    "cholesky_upper": (lambda a: LA.cholesky(a, upper=True), (_spd((2,)),)),
    "eigh": (lambda a: _eigh_parts(LA.eigh(a)), (_spd(),)),
    "eigvalsh": (LA.eigvalsh, (_spd((2,)),)),
    "svd_tall": (lambda a: _svd_parts(LA.svd(a, full_matrices=False)), (_distinct_sv(m=4, n=3),)),
    "svd_wide": (lambda a: _svd_parts(LA.svd(a, full_matrices=False)), (_distinct_sv(m=2, n=4),)),
    "svd_square": (lambda a: _svd_parts(LA.svd(a)), (_distinct_sv(m=3, n=3),)),
    "svdvals": (LA.svdvals, (_distinct_sv((2,)),)),
    "qr_tall": (lambda a: tuple(LA.qr(a)), (_distinct_sv(m=4, n=3),)),
    "qr_square": (lambda a: tuple(LA.qr(a)), (_general(),)),
    "vector_norm_2": (lambda a: LA.vector_norm(a, axis=0), (_rng(1).normal(size=(3, 2)),)),
    "vector_norm_all": (LA.vector_norm, (_rng(1).normal(size=(2, 3)),)),
    "vector_norm_1": (lambda a: LA.vector_norm(a, axis=-1, ord=1, keepdims=True), (_rng(1).normal(size=(3, 2)),)),
    "vector_norm_inf": (lambda a: LA.vector_norm(a, axis=(0, 1), ord=xp.inf), (_rng(1).normal(size=(2, 3)),)),
    "vector_norm_-inf": (lambda a: LA.vector_norm(a, ord=-xp.inf), (_rng(1).normal(size=(5,)),)),
    "vector_norm_3": (lambda a: LA.vector_norm(a, axis=1, ord=3), (_rng(1).normal(size=(2, 3)),)),
    "vector_norm_half": (lambda a: LA.vector_norm(a, ord=0.5), (_rng(1).normal(size=(4,)),)),
    "matrix_norm_fro": (LA.matrix_norm, (_rng(1).normal(size=(2, 3, 2)),)),
    "matrix_norm_nuc": (lambda a: LA.matrix_norm(a, ord="nuc"), (_distinct_sv(),)),
    "matrix_norm_2": (lambda a: LA.matrix_norm(a, ord=2, keepdims=True), (_distinct_sv(),)),
    "matrix_norm_-2": (lambda a: LA.matrix_norm(a, ord=-2), (_distinct_sv(),)),
    "matrix_norm_1": (lambda a: LA.matrix_norm(a, ord=1), (_rng(1).normal(size=(3, 3)),)),
    "matrix_norm_inf": (lambda a: LA.matrix_norm(a, ord=xp.inf), (_rng(1).normal(size=(3, 3)),)),
    "norm_axis_pair": (lambda a: LA.norm(a, axis=(0, 2)), (_rng(1).normal(size=(2, 3, 2)),)),
    "pinv": (LA.pinv, (_distinct_sv(),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_grads(backend, name):
    f, inputs = CASES[name]
    check_grads(f, tuple(backend.asarray(a) for a in inputs), order=2, modes=("fwd", "rev"))


# --- closed-form gradients ---------------------------------------------------------
def _close(backend, got, want, tol=1e-9):
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=tol, atol=tol)


def test_det_gradient_closed_form(backend):
    a = _general((2,))
    g = gpuad.grad(lambda x: xp.sum(LA.det(x)))(backend.asarray(a))
    want = np.linalg.det(a)[:, None, None] * np.swapaxes(np.linalg.inv(a), -1, -2)
    _close(backend, g, want)


# NOTE [det at singular matrices]: the derivative of det is the transposed adjugate.
_RANK2 = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])
_RANK2_ADJ_T = np.array([[4.0, 4.0, -4.0], [-2.0, -2.0, 2.0], [0.0, 0.0, 0.0]])  # cofactors of _RANK2
_RANK1 = np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0])


def test_det_derivative_at_singular_matrices(backend):
    # was: LinAlgError "linalg_inv: Singular matrix" from grad(det)
    a = backend.asarray(np.stack([_RANK2, _RANK1, _general()]))
    g = gpuad.grad(lambda x: xp.sum(LA.det(x)))(a)
    want = np.stack([_RANK2_ADJ_T, np.zeros((3, 3)), np.linalg.det(_general()) * np.linalg.inv(_general()).T])
    _close(backend, g, want)
    t = _rng(7).normal(size=(3, 3, 3))
    _, dt = gpuad.jvp(LA.det, (a,), (backend.asarray(t),))
    _close(backend, dt, np.sum(want * t, axis=(-2, -1)))
    _close(backend, adjugate_p(backend.asarray(_RANK2)), _RANK2_ADJ_T.T)
    # 1x1: det(x) = x, derivative 1 even at 0
    _close(backend, gpuad.grad(lambda x: xp.sum(LA.det(x)))(backend.asarray([[0.0]])), [[1.0]])


def test_det_second_derivative_at_the_identity(backend):
    # Repeated singular values (where an SVD's own derivative breaks down) are fine:
    # d2 det / dA_ij dA_kl at I is d_ij d_kl - d_il d_kj.
    n = 3
    e = np.eye(n)
    want = np.einsum("ij,kl->ijkl", e, e) - np.einsum("il,kj->ijkl", e, e)
    _close(backend, gpuad.hessian(LA.det)(backend.asarray(e)), want)
    check_grads(LA.det, (backend.asarray(e),), order=3)


def test_slogdet_derivative_at_a_singular_matrix_is_a_clear_error(backend):
    if backend.name == "cupy":
        pytest.skip("CuPy's inv returns non-finite values at a singular matrix instead of raising")
    with pytest.raises(ValueError, match=r"slogdet: derivative at a singular matrix \(shape \(3, 3\)\)"):
        gpuad.grad(lambda x: LA.slogdet(x)[1])(backend.asarray(_RANK2))


def test_logdet_gradient_closed_form(backend):
    a = _general() - 6.0 * np.eye(3)  # negative determinant: the sign does not matter
    g = gpuad.grad(lambda x: LA.slogdet(x)[1])(backend.asarray(a))
    _close(backend, g, np.linalg.inv(a).T)


def test_trace_gradient_closed_form(backend):
    a, b = _rng(1).normal(size=(3, 3)), _rng(2).normal(size=(3, 3))
    g = gpuad.grad(lambda x: LA.trace(xp.matmul(x, backend.asarray(b))))(backend.asarray(a))
    _close(backend, g, b.T)


def test_inv_gradient_closed_form(backend):
    a, c = _general(), _rng(5).normal(size=(3, 3))
    g = gpuad.grad(lambda x: xp.sum(LA.inv(x) * backend.asarray(c)))(backend.asarray(a))
    ai = np.linalg.inv(a)
    _close(backend, g, -ai.T @ c @ ai.T)


def test_solve_gradient_closed_form(backend):
    a, b, c = _general(), _rng(3).normal(size=(3,)), _rng(4).normal(size=(3,))
    ga, gb = gpuad.grad(lambda x, y: xp.sum(LA.solve(x, y) * backend.asarray(c)), argnums=(0, 1))(
        backend.asarray(a), backend.asarray(b))
    gb_want = np.linalg.solve(a.T, c)
    _close(backend, gb, gb_want)
    _close(backend, ga, -np.outer(gb_want, np.linalg.solve(a, b)))


def test_vector_norm_gradient_at_zero_is_zero(backend):
    z = backend.asarray(np.zeros((2, 3)))
    g = gpuad.grad(lambda x: xp.sum(LA.vector_norm(x, axis=-1)))(z)
    _close(backend, g, np.zeros((2, 3)), tol=0)
    _, t = gpuad.jvp(lambda x: LA.vector_norm(x), (z,), (backend.asarray(np.ones((2, 3))),))
    _close(backend, t, 0.0, tol=0)
    h = gpuad.grad(lambda x: xp.sum(gpuad.grad(lambda y: LA.vector_norm(y))(x)))(z)
    assert np.all(np.isfinite(backend.to_numpy(h)))


def test_value_only_gradients_at_repeated_and_zero_values(backend):
    # First derivatives of functions of eigen/singular values alone are exact even
    # where the vectors are not unique (NOTE [spectral gradients]): no 0 * inf.
    q, _ = np.linalg.qr(_rng(7).normal(size=(3, 3)))
    a = (q * np.array([2.0, 2.0, 5.0])) @ q.T
    g = gpuad.grad(lambda x: xp.sum(LA.eigvalsh(x) ** 2))(backend.asarray(a))
    _close(backend, g, 2 * a, tol=1e-8)
    t = np.zeros((4, 3))
    t[0, 0], t[1, 1] = 2.0, 2.0  # singular values (2, 2, 0)
    g = gpuad.grad(lambda x: xp.sum(LA.svdvals(x) ** 2))(backend.asarray(t))
    _close(backend, g, 2 * t, tol=1e-8)
    g = gpuad.grad(lambda x: LA.matrix_norm(x, ord="nuc"))(backend.asarray(t + np.eye(4, 3) * [0, 0, 1.0]))
    _close(backend, g, np.eye(4, 3), tol=1e-8)


# --- values --------------------------------------------------------------------------
def test_values_match_numpy(backend):
    a, s, t = _general((2,)), _spd(), _distinct_sv()
    A, S, T = backend.asarray(a), backend.asarray(s), backend.asarray(t)
    _close(backend, LA.inv(A), np.linalg.inv(a))
    _close(backend, LA.det(A), np.linalg.det(a))
    _close(backend, LA.cholesky(S), np.linalg.cholesky(s))
    _close(backend, LA.eigvalsh(S), np.linalg.eigvalsh(s))
    _close(backend, LA.eigh(S).eigenvalues, np.linalg.eigvalsh(s))
    _close(backend, LA.svdvals(T), np.linalg.svd(t, compute_uv=False))
    _close(backend, LA.matrix_norm(T, ord="nuc"), np.linalg.norm(t, "nuc"))
    _close(backend, LA.matrix_norm(T, ord=2), np.linalg.norm(t, 2))
    _close(backend, LA.matrix_norm(T, ord=1), np.linalg.norm(t, 1))
    _close(backend, LA.matrix_norm(T, ord=-xp.inf), np.linalg.norm(t, -np.inf))
    _close(backend, LA.vector_norm(T, ord=3), np.sum(np.abs(t) ** 3) ** (1 / 3))
    _close(backend, LA.norm(T), np.linalg.norm(t))
    _close(backend, LA.trace(T, offset=-1), np.trace(t, offset=-1))
    _close(backend, LA.diagonal(T, offset=1), np.diagonal(t, offset=1))
    _close(backend, LA.pinv(T), np.linalg.pinv(t))
    _close(backend, LA.matrix_power(A, -3), np.linalg.matrix_power(a, -3))
    _close(backend, LA.matrix_power(A, 0), np.broadcast_to(np.eye(3), a.shape))
    _close(backend, xp.tensordot(T, T, axes=([0], [0])), np.tensordot(t, t, axes=([0], [0])))
    _close(backend, LA.cross(T[..., 0:3, :], backend.asarray(np.ones(3))), np.cross(t[0:3], np.ones(3)))
    q, r = LA.qr(T)
    _close(backend, xp.matmul(q, r), t)
    sign, logdet = LA.slogdet(A)
    _close(backend, sign * xp.exp(logdet), np.linalg.det(a))
    assert int(LA.matrix_rank(T)) == 3


def test_untraced_full_modes(backend):
    t = backend.asarray(_distinct_sv())
    u, s, vh = LA.svd(t)
    assert (tuple(u.shape), tuple(s.shape), tuple(vh.shape)) == ((4, 4), (3,), (3, 3))
    q, r = LA.qr(t, mode="complete")
    assert (tuple(q.shape), tuple(r.shape)) == ((4, 4), (4, 3))
    q, r = LA.qr(xp.matrix_transpose(t))
    assert (tuple(q.shape), tuple(r.shape)) == ((3, 3), (3, 4))


def test_linalg_namespace_exports():
    for name in ("cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "matmul", "matrix_norm",
                 "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv", "qr", "slogdet", "solve",
                 "svd", "svdvals", "tensordot", "trace", "vecdot", "vector_norm", "norm"):
        assert callable(getattr(LA, name)), name
    assert xp.tensordot is LA.tensordot and xp.vecdot is LA.vecdot


def test_covers_lists_every_differentiable_linalg_primitive():
    own = {n for n, p in gpuad.PRIMITIVES.items() if n.startswith("linalg_") and not p.nondiff}
    assert own == COVERS


# --- errors -----------------------------------------------------------------------------
def test_errors_name_op_argument_and_shape(backend):
    t = backend.asarray(_rng(0).normal(size=(4, 3)))
    a = backend.asarray(_general())
    for f, words in [
        (lambda: LA.inv(t), ("inv", "x", "(4, 3)")),
        (lambda: LA.det(t), ("det", "(4, 3)")),
        (lambda: LA.cholesky(t), ("cholesky", "(4, 3)")),
        (lambda: LA.eigh(t), ("eigh", "(4, 3)")),
        (lambda: LA.solve(t, a), ("solve", "x1", "(4, 3)")),
        (lambda: LA.solve(a, t), ("solve", "x2", "(4, 3)")),
        (lambda: LA.solve(a, backend.asarray(np.ones(4))), ("solve", "x2", "(4,)")),
        (lambda: xp.tensordot(t, t, axes=([0], [1])), ("tensordot", "(4, 3)")),
        (lambda: xp.vecdot(t, a), ("vecdot", "(4, 3)", "(3, 3)")),
        (lambda: LA.cross(t, backend.asarray(np.ones(4))), ("cross", "x2", "size 3")),
        (lambda: LA.outer(t, t), ("outer", "1-D")),
        (lambda: LA.matrix_norm(t, ord=3), ("matrix_norm", "ord")),
    ]:
        with pytest.raises(ValueError) as info:
            f()
        for w in words:
            assert w in str(info.value), (w, str(info.value))
    with pytest.raises(NotImplementedError, match="svd: full_matrices=True"):
        gpuad.grad(lambda x: xp.sum(LA.svd(x)[1]))(t)
    with pytest.raises(NotImplementedError, match="qr: derivatives need"):
        gpuad.grad(lambda x: xp.sum(LA.qr(x)[1]))(xp.matrix_transpose(t))
    with pytest.raises(TypeError, match="matrix_power"):
        LA.matrix_power(a, 1.5)


# --- batched shapes (hypothesis, CPU backends) -----------------------------------------------
_BATCHED = {
    "inv": (LA.inv, lambda b, seed: (_general(b, seed=seed),)),
    "solve": (LA.solve, lambda b, seed: (_general(b, seed=seed), _rng(seed).normal(size=b + (3, 2)))),
    "solve_vec": (LA.solve, lambda b, seed: (_general(b, seed=seed), _rng(seed).normal(size=(3,)))),
    "det": (LA.det, lambda b, seed: (_general(b, seed=seed),)),
    "adjugate": (adjugate_p, lambda b, seed: (_general(b, seed=seed),)),
    "slogdet": (lambda a: LA.slogdet(a)[1], lambda b, seed: (_general(b, seed=seed),)),
    "cholesky": (LA.cholesky, lambda b, seed: (_spd(b, seed=seed),)),
    "eigh": (lambda a: _eigh_parts(LA.eigh(a)), lambda b, seed: (_spd(b, seed=seed),)),
    "svd": (lambda a: _svd_recon(LA.svd(a, full_matrices=False)), lambda b, seed: (_distinct_sv(b, seed=seed),)),
    "qr": (lambda a: tuple(LA.qr(a)), lambda b, seed: (_distinct_sv(b, seed=seed),)),
    "trace": (LA.trace, lambda b, seed: (_rng(seed).normal(size=b + (3, 2)),)),
    "vector_norm": (lambda a: LA.vector_norm(a, axis=-1), lambda b, seed: (_rng(seed).normal(size=b + (3,)),)),
}


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(_BATCHED)),
       batch=st.lists(st.integers(0, 2), min_size=0, max_size=2).map(tuple), seed=seeds)
def test_batched_shapes(cpu_backend, name, batch, seed):
    f, make = _BATCHED[name]
    seed = seed % 1000
    args = tuple(cpu_backend.asarray(a) for a in make(batch, seed))
    check_grads(f, args, order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("batch", [(0,), (1,), (0, 2), (1, 1)])
@pytest.mark.parametrize("name", ["inv", "cholesky", "eigh", "svd", "qr", "solve"])
def test_degenerate_batches(cpu_backend, name, batch):
    f, make = _BATCHED[name]
    args = tuple(cpu_backend.asarray(a) for a in make(batch, 0))
    check_grads(f, args, order=2, modes=("fwd", "rev"))


def test_float32(backend):
    a = backend.asarray(_general(), dtype="float32")
    s = backend.asarray(_spd(), dtype="float32")
    check_grads(LA.inv, (a,), order=1)
    check_grads(LA.cholesky, (s,), order=1)
    check_grads(LA.eigvalsh, (s,), order=1)
    assert LA.cholesky(s).dtype == s.dtype
