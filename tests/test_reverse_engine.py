"""The reverse engine's fast paths keep the general behaviour.

Each test pins one invariant of ``gpuad._reverse`` / ``gpuad._registry`` that
a fast path could break: the unrolled node constructor, the newest-first
heap with symbolic zeros, re-entrant and concurrent passes over one tape,
edges to later outputs of multi-output nodes, the dispatch memo and the
derived ``keep_prefix``.
"""

import sys
import threading

import numpy as np
import pytest

import gpuad
from gpuad import xp
from gpuad._core import new_trace
from gpuad._registry import Primitive
from gpuad._reverse import Node, VJPTrace, VJPTracer, get_tape_observer, set_tape_observer


def _chain(x, n):
    for i in range(n):
        x = xp.sin(x) if i % 2 else x * 0.999 + 0.001
    return x


def test_record_fast_path_builds_what_the_constructors_build():
    x = np.array([0.1, 0.2])
    trace = VJPTrace()
    with new_trace(trace):
        t = trace.new_input(x)
        y = xp.exp(t)
        z = xp.add(y, 1.0)
    ref = Node(y._node.prim, y._node.parents, y._node.args, y._node.ans, y._node.params)
    for slot in Node.__slots__:
        if slot in ("seq", "__weakref__"):
            continue
        assert getattr(y._node, slot) is getattr(ref, slot) or slot == "nout", slot
    assert y._node.nout == ref.nout == 1
    assert t._node.seq < y._node.seq < z._node.seq < ref.seq
    assert y._node.parents == (t._node,)  # NOTE [edges]: output 0 is the node itself
    assert y._node.ans is y._primal  # exp keeps its output ...
    assert z._node.ans is None and z._node.args[1] == 1.0  # ... add keeps neither, only Specs
    assert (z._node.args[0].shape, z._node.args[0].dtype) == ((2,), x.dtype)
    assert isinstance(y, VJPTracer) and y._trace is trace and y._index == 0 and y._edge is y._node


def test_edges_to_later_outputs_of_a_multi_output_node():
    a = np.array([[2.0, 0.5], [0.5, 1.0]])

    def f(a):
        w, v = xp.linalg.eigh(a + xp.matrix_transpose(a))
        return xp.sum(v * v * 3.0) + xp.sum(w * w)  # output 1 before output 0

    trace = VJPTrace()
    with new_trace(trace):
        t = trace.new_input(a)
        w, v = xp.linalg.eigh(t)
    assert w._edge is w._node and v._edge == (v._node, 1) and v._index == 1
    g = gpuad.grad(f)(a)
    eps = 1e-6
    num = np.zeros_like(a)
    for i in range(2):
        for j in range(2):
            d = np.zeros_like(a)
            d[i, j] = eps
            num[i, j] = (float(f(a + d)) - float(f(a - d))) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


class _Counter:
    def __init__(self, prev):
        self.prev, self.saved_ids, self.freed_ids = prev, set(), set()

    def saved(self, node):
        self.saved_ids.add(id(node))

    def freed(self, node):
        self.freed_ids.add(id(node))


def test_nodes_behind_a_symbolic_zero_are_visited_and_released():
    # copysign's rule for its second argument returns None: the nodes that
    # only feed that argument get a zero cotangent, run no rule, and are still
    # released by grad (NOTE [newest first]).
    calls = []
    cos_prim = gpuad.PRIMITIVES["cos"]
    rule = cos_prim.vjps[0]

    def f(x):
        sign = xp.cos(xp.exp(x))  # reaches the output only through copysign's 2nd argument
        return xp.sum(xp.copysign(x * 2.0, sign))

    x = np.array([0.3, 1.7])
    counter = _Counter(get_tape_observer())
    prev = set_tape_observer(counter)
    cos_prim.vjps = (lambda *a, **k: calls.append(1) or rule(*a, **k),)
    try:
        g = gpuad.grad(f)(x)
    finally:
        cos_prim.vjps = (rule,)
        set_tape_observer(prev)
    np.testing.assert_allclose(g, 2.0 * np.sign(np.cos(np.exp(x))))
    assert calls == []
    assert counter.saved_ids and counter.saved_ids <= counter.freed_ids


def test_a_tape_can_be_walked_again_from_inside_its_own_pass():
    state = {}

    @gpuad.custom_vjp
    def probe(x):
        return x

    def probe_bwd(res, g):
        if not state.get("nested"):  # a nested pass over the very tape being walked
            state["nested"] = True
            state["inner"] = state["vjp_fn"](np.ones(3))[0]
        return (g,)

    probe.defvjp(lambda x: (x, None), probe_bwd)

    def f(x):
        y = xp.sin(x)
        return xp.exp(probe(y)) * y

    x = np.array([0.1, 0.5, 0.9])
    out, vjp_fn = gpuad.vjp(f, x)
    state["vjp_fn"] = vjp_fn
    (g,) = vjp_fn(np.ones(3))
    s = np.sin(x)
    expected = (np.exp(s) * s + np.exp(s)) * np.cos(x)
    np.testing.assert_allclose(g, expected, rtol=1e-12)
    np.testing.assert_allclose(state["inner"], expected, rtol=1e-12)


def test_concurrent_passes_over_one_tape():
    x = np.linspace(0.1, 0.9, 5)
    out, vjp_fn = gpuad.vjp(lambda x: _chain(x, 600), x)
    expected = vjp_fn(np.ones(5))[0]
    results, errors = [], []

    def work(scale):
        try:
            for _ in range(5):
                results.append((scale, vjp_fn(np.full(5, scale))[0]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(float(k),)) for k in (1, 2, 3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that the passes interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert len(results) == 15
    for scale, g in results:
        np.testing.assert_allclose(g, scale * expected, rtol=1e-12)


def test_grad_of_grad_through_the_fast_paths():
    f = lambda x: xp.sum(xp.sin(x) * x + xp.cos(x * 0.5))  # noqa: E731
    x = np.array([0.3, 0.8])
    h = gpuad.hessian(f)(x)
    d2 = -np.sin(x) * x + 2 * np.cos(x) - 0.25 * np.cos(0.5 * x)
    np.testing.assert_allclose(h, np.diag(d2), rtol=1e-12, atol=1e-12)


def test_dispatch_memo_still_compares_devices():
    strict = pytest.importorskip("array_api_strict")
    dev1 = strict.Device("device1")
    a = strict.asarray([1.0, 2.0], device=dev1)
    b = strict.asarray([3.0, 4.0], device=dev1)
    c = strict.asarray([3.0, 4.0])
    for _ in range(2):  # warm whatever can be memoised for this pair of types
        xp.multiply(a, b)
    with pytest.raises(ValueError, match="two devices"):
        xp.multiply(a, c)
    with pytest.raises(ValueError, match="two devices"):
        gpuad.grad(lambda a: xp.sum(xp.multiply(a, c)))(a)


def test_dispatch_memo_follows_the_default_backend_for_scalars_only_calls(monkeypatch):
    # A call with no array is never memoised: the default backend answers it
    # (array-api-strict refuses a Python float, NumPy takes it).
    from gpuad import _backend

    monkeypatch.setattr(_backend, "_choice", _backend.get_backend())  # restored afterwards
    exp = gpuad.PRIMITIVES["exp"]
    gpuad.set_backend("numpy")
    assert float(exp(0.0)) == 1.0
    gpuad.set_backend("array_api_strict")
    with pytest.raises(TypeError, match="Array"):
        exp(0.0)


def test_keep_prefix_follows_keep_args():
    p = Primitive("test_only_keep_prefix", lambda xp_, x, y, z: x, vjps=(None, None, None))
    assert p.keep_args == (0, 1, 2) and p.keep_prefix == 3
    p.keep_args = (1, 0)
    assert p.keep_prefix == 2
    p.keep_args = (1,)
    assert p.keep_prefix == 0
    p.keep_args = ()
    assert p.keep_prefix == 0
