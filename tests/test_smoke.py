import gpuad
from gpuad import xp
from gpuad.testing import check_grads


def test_grad_tanh_matches_closed_form(backend):
    x = backend.asarray([0.1, -0.5, 2.0])
    g = gpuad.grad(lambda x: xp.sum(xp.tanh(x) ** 2))(x)
    t = xp.tanh(x)
    expected = 2 * t * (1 - t * t)
    assert backend.to_numpy(g).tolist() == backend.to_numpy(expected).tolist() or \
        abs(backend.to_numpy(g - expected)).max() < 1e-12


def test_check_grads_on_matmul(backend):
    a = backend.asarray([[1.0, 2.0], [3.0, -1.0]])
    b = backend.asarray([0.5, -0.25])
    check_grads(lambda a, b: xp.tanh(a @ b), (a, b))
