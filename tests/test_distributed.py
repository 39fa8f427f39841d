"""gpuad.distributed: bucketing, communicator selection, collectives, failure handling.

The in-process tests use :func:`gpuad.distributed.run_local` (threads as
ranks) and a fake ``cupyx.distributed`` backend for the NCCL communicator, so
they need neither MPI nor a GPU.  The MPI tests start ``mpiexec -n 2`` (from
the ``mpich`` wheel of ``gpuad[distributed]``) with a hard timeout each, and
are skipped, saying why, when mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gpuad import distributed
from gpuad.distributed import BucketPlan, DistributedError, detect, run_local
from gpuad.distributed._buckets import leaf_spec

ROOT = Path(__file__).resolve().parent.parent


# --- bucketing -------------------------------------------------------------------------
def _plan(leaves, bucket_bytes):
    return BucketPlan([leaf_spec(x, f"leaf {i}") for i, x in enumerate(leaves)], bucket_bytes)


def test_plan_groups_by_dtype_and_splits_a_parameter_at_a_bucket_boundary():
    leaves = [np.zeros(10, np.float32), np.zeros(3), np.zeros((0, 4), np.float32), np.zeros(5, np.float32)]
    plan = _plan(leaves, 24)  # 6 float32 or 3 float64 per bucket
    # buckets are numbered as they open: float32, float32, float64, float32
    assert plan.buckets == [(0, "float32", 6), (0, "float32", 4), (1, "float64", 3), (0, "float32", 5)]
    # leaf 0 (10 elements) is larger than a bucket: it spans buckets 0 and 1
    assert plan.segments[0] == [(0, 0, 0, 6), (1, 0, 6, 10)]
    assert plan.segments[1] == [(2, 0, 0, 3)]
    # leaf 3 (5 elements) would not fit in the 2 left in bucket 1: it starts bucket 3 and stays whole
    assert plan.segments[3] == [(3, 0, 0, 5)]
    assert plan.segments[2] == []  # size 0: no room taken
    assert plan.nbytes == 15 * 4 + 3 * 8


def test_plan_splits_a_leaf_that_overflows_the_open_bucket_only_when_larger_than_a_bucket():
    leaves = [np.zeros(4, np.float32), np.zeros(20, np.float32), np.zeros(2, np.float32)]
    plan = _plan(leaves, 32)  # 8 float32 per bucket
    assert plan.segments[0] == [(0, 0, 0, 4)]
    assert plan.segments[1] == [(0, 4, 0, 4), (1, 0, 4, 12), (2, 0, 12, 20)]  # fills bucket 0 up, then on
    assert plan.segments[2] == [(3, 0, 0, 2)]
    assert [n for _, _, n in plan.buckets] == [8, 8, 8, 2]


def test_plan_one_bucket_when_everything_fits():
    leaves = [np.zeros((4, 5), np.float32), np.zeros(7, np.float32)]
    plan = _plan(leaves, 25_000_000)
    assert plan.buckets == [(0, "float32", 27)]


def test_plan_signature_depends_on_shapes_and_dtypes():
    a = _plan([np.zeros(3), np.zeros(4, np.float32)], 100)
    assert a.signature == _plan([np.ones(3), np.ones(4, np.float32)], 100).signature
    assert a.signature != _plan([np.zeros(4), np.zeros(3, np.float32)], 100).signature
    assert a.signature != _plan([np.zeros(3), np.zeros(4)], 100).signature


def test_pack_unpack_round_trip_with_scaling(backend):
    rng = np.random.default_rng(0)
    host = [rng.normal(size=(3, 5)), rng.normal(size=(0,)), rng.normal(size=7).astype(np.float32),
            rng.normal(size=(2, 2))]
    leaves = [backend.asarray(h, dtype=None) for h in host]
    plan = _plan(leaves, 32)
    bufs = plan.pack(leaves, scale=0.5)
    assert all(b.ndim == 1 for b in bufs)
    out = plan.unpack(bufs, leaves)
    for h, o in zip(host, out):
        assert tuple(o.shape) == h.shape
        np.testing.assert_array_equal(backend.to_numpy(o), h * np.asarray(0.5, h.dtype))
        assert o.device == leaves[0].device


class InPlace(distributed.Communicator):
    """Two identical ranks, reduced in place as MPI does: the sum is twice the bucket."""

    backend = "inplace"

    def _sum_(self, group, bufs):
        for b in bufs:
            b *= 2
        return bufs


class InPlaceKept(InPlace):
    """:class:`InPlace` with the kept-bucket fast path (as MPI has); ``kept_calls`` counts its uses."""

    kept_calls = 0

    def _sum_kept_(self, op, plan, bufs):
        wd = self._arm(op, plan, plan.all_buckets)
        try:
            for b in bufs:
                b *= 2
            self._verify(op, plan, bufs[0])
            self.kept_calls += 1
        finally:
            if wd is not None:
                wd.disarm()


def _count_allocations(monkeypatch):
    """A list that gets one entry, ``kept``, per :meth:`BucketPlan.empty` call from now on."""
    made = []
    original = BucketPlan.empty
    monkeypatch.setattr(BucketPlan, "empty", lambda self, kept=False: made.append(kept) or original(self, kept=kept))
    return made


@pytest.fixture(params=["plain pages", "huge pages"])
def bucket_memory(request, monkeypatch):
    """NumPy buckets from ``numpy.empty`` or (threshold 0) from ``comm_empty``'s huge-page mappings."""
    from gpuad._backend import backend_module

    if request.param == "huge pages":
        monkeypatch.setattr(backend_module("numpy"), "HUGEPAGE_MIN_BYTES", 0)
    else:
        monkeypatch.setenv("GPUAD_DIST_HUGEPAGES", "0")
    return request.param


@pytest.mark.parametrize("transport", [InPlace, InPlaceKept])
def test_buckets_are_reused_only_when_no_result_refers_to_them(monkeypatch, transport, bucket_memory):
    made = _count_allocations(monkeypatch)
    comm = transport(0, 2, timeout=None)
    tree = {"a": np.arange(6.0), "b": np.ones(3)}
    first = comm.allreduce_mean(tree)
    view = first["a"][2:]          # a view of a view of the bucket outlives the result
    del first
    second = comm.allreduce_mean({"a": tree["a"] * 10, "b": tree["b"]})
    np.testing.assert_array_equal(view, [2.0, 3.0, 4.0, 5.0])  # not overwritten
    np.testing.assert_array_equal(second["a"], np.arange(6.0) * 10)
    assert len(made) == 2          # the kept buckets were busy: fresh ones
    del view, second
    for k in range(3):             # results dropped each time: the same buckets again
        np.testing.assert_array_equal(comm.allreduce_mean(tree)["a"], np.arange(6.0))
    assert len(made) == 2


class Counting(InPlace):
    """:class:`InPlace` that counts the plans it makes and the buffer sizes of its transport calls."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.plans_made = 0
        self.sums = []

    def _sum_(self, group, bufs):
        self.sums.append([b.shape[0] for b in bufs])
        return super()._sum_(group, bufs)

    def _plan_for(self, op, leaves, td):
        plan, key, made = super()._plan_for(op, leaves, td)
        self.plans_made += made
        return plan, key, made


def _grads(k=1.0):
    return [{"w": np.full((3, 4), k, np.float32), "b": np.full(4, 2 * k, np.float32)},
            {"w": np.full((4, 2), 3 * k, np.float32), "b": None, "e": np.zeros((0, 2), np.float32)}]


def test_plan_and_compiled_structure_are_cached_and_reused(monkeypatch):
    made = []
    original = BucketPlan.__init__
    monkeypatch.setattr(BucketPlan, "__init__", lambda self, *a, **k: made.append(1) or original(self, *a, **k))
    comm = Counting(0, 2, timeout=None)
    for k in range(1, 6):
        out = comm.allreduce_mean(_grads(k))  # two ranks of equal trees: the mean is the tree
        np.testing.assert_array_equal(out[0]["w"], np.full((3, 4), k, np.float32))
        np.testing.assert_array_equal(out[1]["w"], np.full((4, 2), 3 * k, np.float32))
        assert out[0]["b"].dtype == np.float32 and out[1]["b"] is None and out[1]["e"].shape == (0, 2)
    assert len(made) == 1 and comm.plans_made == 1  # one plan for five calls
    words = next(iter(comm._plans.values())).check.count
    assert comm.sums == [[12 + 4 + 8 + words]] * 5  # one bucket (and its check words), one transport call per call
    (entries,) = comm._fast.values()                # compiled on the second call, used from then on
    assert len(entries) == 1 and entries[0].plan is next(iter(comm._plans.values()))
    assert entries[0].rebuild is not None   # NumPy, no split leaf: unpacked and rebuilt in one expression


def test_plan_cache_tells_structures_shapes_and_dtypes_apart():
    comm = Counting(0, 2, timeout=None)
    base = _grads()
    comm.allreduce_mean(base)
    comm.allreduce_mean(base)  # compiled now
    variants = {
        "shape": [{**base[0], "w": np.ones((4, 3), np.float32)}, base[1]],
        "dtype": [{**base[0], "b": np.ones(4)}, base[1]],
        "leaf is None": [{**base[0], "b": None}, base[1]],
        "None is a leaf": [base[0], {**base[1], "b": np.ones(1, np.float32)}],
        "other key": [{"w": base[0]["w"], "c": base[0]["b"]}, base[1]],
        "tuple": (base[0], base[1]),
        "longer": [*base, {"w": np.ones(2, np.float32)}],
    }
    for name, tree in variants.items():
        out = comm.allreduce_mean(tree)
        for got, want in zip(distributed._comm.tree_flatten(out)[0], distributed._comm.tree_flatten(tree)[0]):
            np.testing.assert_array_equal(got, want, err_msg=name)
            assert got.dtype == want.dtype and got.shape == want.shape, name
        assert distributed._comm.tree_flatten(out)[1] == distributed._comm.tree_flatten(tree)[1], name
    # every structure has its plan: its hash is part of the check words (other keys, tuple for list too)
    assert comm.plans_made == 1 + 7
    signatures = {p.signature for p in comm._plans.values()}
    assert len(signatures) == 8
    np.testing.assert_array_equal(comm.allreduce_mean(base)[0]["b"], base[0]["b"])  # the first one still hits
    assert comm.plans_made == 8


@pytest.mark.parametrize("transport", [InPlace, InPlaceKept])
def test_results_never_alias_buckets_a_later_call_refills(transport, bucket_memory):
    comm = transport(0, 2, timeout=None)
    first = comm.allreduce_mean(_grads(1.0))
    second = comm.allreduce_mean(_grads(2.0))        # ``first`` is held: fresh buckets
    third = comm.allreduce_mean(_grads(3.0))         # compiled path, both held: fresh again
    for x, y in [(first, second), (second, third), (first, third)]:
        assert not np.shares_memory(x[0]["w"], y[0]["w"]) and not np.shares_memory(x[1]["w"], y[1]["w"])
    for k, out in [(1.0, first), (2.0, second), (3.0, third)]:
        np.testing.assert_array_equal(out[0]["w"], k)
        np.testing.assert_array_equal(out[0]["b"], 2 * k)
    # dropped results free their buckets: the next calls refill the same memory, as new array objects
    del first, second, x, y, out
    a = comm.allreduce_mean(_grads(4.0))
    addr = a[0]["w"].__array_interface__["data"][0]
    a[0]["w"] += 100                                 # results are the caller's to change
    del a
    b = comm.allreduce_mean(_grads(5.0))
    assert b[0]["w"].__array_interface__["data"][0] == addr
    np.testing.assert_array_equal(b[0]["w"], 5.0)
    np.testing.assert_array_equal(third[0]["w"], 3.0)  # still held, never touched


def test_kept_bucket_fast_path_is_taken_only_when_the_buckets_are_free(bucket_memory):
    fast, general = InPlaceKept(0, 2, timeout=600), InPlace(0, 2, timeout=600)

    def check(got, want):
        for a, b in zip(distributed._comm.tree_flatten(got)[0], distributed._comm.tree_flatten(want)[0]):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype and a.shape == b.shape
        assert distributed._comm.tree_flatten(got)[1] == distributed._comm.tree_flatten(want)[1]

    taken = []
    for k in range(1, 6):  # results dropped after each call
        before = fast.kept_calls
        check(fast.allreduce_mean(_grads(k), weight=0.25 * k), general.allreduce_mean(_grads(k), weight=0.25 * k))
        check(fast.allreduce_sum(_grads(k)), general.allreduce_sum(_grads(k)))
        taken.append(fast.kept_calls - before)
    # the first mean plans and the first sum compiles the structure (they share both); then all are fast
    assert taken == [0, 2, 2, 2, 2]
    plan = fast._fast[(list, 2)][0].plan
    held = fast.allreduce_mean(_grads(7.0))           # fast, and its result holds the first kept set
    first = plan.pools[0]
    again = fast.allreduce_mean(_grads(8.0))          # so this one makes the second set, fast too
    assert fast.kept_calls == 10 and len(plan.pools) == 2
    third = fast.allreduce_sum(_grads(1.0))           # both held: a third set, which replaces the first
    assert fast.kept_calls == 11 and len(plan.pools) == 2 and first not in plan.pools
    for x, y in [(held, again), (again, third), (held, third)]:
        assert not np.shares_memory(x[0]["w"], y[0]["w"])
    np.testing.assert_array_equal(held[0]["w"], 7.0)  # the replaced set is still the holder's
    np.testing.assert_array_equal(again[0]["w"], 8.0)
    np.testing.assert_array_equal(third[0]["w"], 2.0)
    del again, x, y
    np.testing.assert_array_equal(fast.allreduce_sum(_grads(2.0))[1]["w"], 12.0)  # the second set is free
    assert fast.kept_calls == 12 and len(plan.pools) == 2
    np.testing.assert_array_equal(held[0]["w"], 7.0)
    np.testing.assert_array_equal(third[0]["w"], 2.0)
    assert fast.collective_calls == general.collective_calls + 4  # one bucket per call either way
    (kept,) = plan.pools[0].bufs
    assert (kept.ctypes.data % (2 << 20) == 0) == (bucket_memory == "huge pages")


def test_a_loop_that_holds_the_previous_result_alternates_two_kept_sets(monkeypatch, bucket_memory):
    made = _count_allocations(monkeypatch)
    comm = InPlaceKept(0, 2, timeout=None)
    previous, addresses = None, []
    for k in range(1, 9):   # as ``grads = comm.allreduce_mean(...)`` in a loop: the old ``grads`` still lives
        out = comm.allreduce_mean(_grads(k))
        if previous is not None:
            np.testing.assert_array_equal(previous[0]["w"], k - 1)   # never overwritten while held
        np.testing.assert_array_equal(out[0]["w"], k)
        addresses.append(out[0]["w"].__array_interface__["data"][0])
        previous = out
    assert made == [True, True]                       # two kept sets, no one-off buckets
    assert len(set(addresses)) == 2 and addresses[2:] == addresses[:2] * 3
    assert comm.kept_calls == 6                       # calls 3-8: compiled, a free set each time


def test_a_result_held_for_good_does_not_make_every_later_call_allocate(monkeypatch):
    made = _count_allocations(monkeypatch)
    comm = InPlaceKept(0, 2, timeout=None)
    kept_for_good = comm.allreduce_mean(_grads(0.5))  # e.g. the first step's gradients, kept for a report
    previous = None
    for k in range(1, 10):                            # and the usual loop that holds the previous result
        out = comm.allreduce_mean(_grads(k))
        np.testing.assert_array_equal(out[0]["w"], k)
        previous = out                                # noqa: F841 - held until the next call returns
    np.testing.assert_array_equal(kept_for_good[0]["w"], 0.5)
    assert len(made) == 3                             # the first call's set, and two for the loop
    assert len(comm._fast[(list, 2)][0].plan.pools) == 2  # the set held for good is no longer tracked


def test_kept_bucket_fast_path_arms_the_watchdog(capsys):
    aborted = threading.Event()

    class Stuck(InPlaceKept):
        backend = "stuck"

        def _sum_kept_(self, op, plan, bufs):
            wd = self._arm(op, plan, plan.all_buckets)
            aborted.wait(10)  # a peer that never answers
            wd.disarm()

        def abort(self, code=1):
            aborted.set()

    comm = Stuck(0, 2, timeout=0.3)
    comm.allreduce_sum({"g": np.ones(3)})
    comm.allreduce_sum({"g": np.ones(3)})  # compiled now; the next call takes the fast path
    assert not aborted.is_set()
    t0 = time.monotonic()
    comm.allreduce_sum({"g": np.ones(3)})
    assert aborted.is_set() and time.monotonic() - t0 < 5
    assert ("rank 0 of 2 (stuck): allreduce_sum of bucket 1/1 (float64, 3 elements) "
            "did not complete within 0.3 s") in capsys.readouterr().err


def test_compiled_path_splits_leaves_across_buckets_and_changes_weights():
    comm = Counting(0, 2, bucket_mb=20e-6, timeout=None)  # 5 float32 per bucket: leaves are split
    for k in range(1, 5):
        w = 0.5 * k
        out = comm.allreduce_mean(_grads(k), weight=w)    # both ranks weigh alike: mean = w * tree
        np.testing.assert_array_equal(out[0]["w"], np.full((3, 4), k * w, np.float32))
        np.testing.assert_array_equal(out[0]["b"], np.full(4, 2 * k * w, np.float32))
        np.testing.assert_array_equal(out[1]["w"], np.full((4, 2), 3 * k * w, np.float32))
        s = comm.allreduce_sum(_grads(k))
        np.testing.assert_array_equal(s[1]["w"], np.full((4, 2), 6 * k, np.float32))
    words = next(iter(comm._plans.values())).check.count
    assert comm.plans_made == 1 and len(comm.sums) == 16
    # bucket 0 alone first (its words are checked before the rest is exchanged), then the other buckets
    assert all(first == [5 + words] and sum(rest) == 24 - 5 for first, rest in zip(comm.sums[::2], comm.sums[1::2]))


def test_compiled_path_with_a_transport_that_returns_new_buffers():
    # the local group sums into new arrays (no kept-bucket fast path): results are rebuilt from those
    def work(comm):
        return [comm.allreduce_mean(_grads(comm.rank + k)) for k in range(4)]

    for outs in run_local(2, work):
        for k, out in enumerate(outs):
            np.testing.assert_array_equal(out[0]["w"], np.full((3, 4), k + 0.5, np.float32))
            np.testing.assert_array_equal(out[1]["w"], np.full((4, 2), 3 * (k + 0.5), np.float32))
            assert out[1]["b"] is None and out[1]["e"].shape == (0, 2)


def test_compile_tree_matches_only_its_own_structure():
    from collections import namedtuple

    from gpuad._tree import tree_flatten, tree_unflatten
    from gpuad.distributed._compiled import compile_tree

    P = namedtuple("P", "a b")
    tree = {"x": (np.ones(2), None, [np.zeros((2, 3), np.float32)]), "n": P(np.ones(()), {"k": np.ones(1)}),
            "y": np.int32(4) + np.zeros(2, np.int32)}
    leaves, td = tree_flatten(tree)
    extract, build, rebuild = compile_tree(td, leaves, ["view", "like", "view", "view", "view"])
    again = {"x": (np.full(2, 5.0), None, [np.ones((2, 3), np.float32)]), "n": P(np.zeros(()), {"k": np.ones(1)}),
             "y": np.zeros(2, np.int32)}
    got = extract(again)
    assert [a is b for a, b in zip(got, tree_flatten(again)[0])] == [True] * 5
    rebuilt = build(got)
    assert tree_flatten(rebuilt)[1] == td and list(rebuilt) == list(tree_unflatten(td, got))
    assert type(rebuilt["n"]) is P and rebuilt["x"][1] is None
    fresh = rebuild(got, ["like"] * 5)  # leaf 1 from the second list, the others new views of the first
    assert fresh["y"] is not got[4] and fresh["y"].base is got[4] and fresh["n"].b["k"] == "like"
    assert compile_tree(td, leaves)[2] is None and compile_tree(td, leaves, ["split"] * 5)[2] is None
    others = [
        {**again, "y": np.zeros(3, np.int32)},                             # shape
        {**again, "y": np.zeros(2, np.int64)},                             # dtype
        {**again, "y": [np.zeros(2, np.int32)]},                           # a list where a leaf was
        {**again, "x": list(again["x"])},                                  # list for tuple
        {**again, "x": (np.full(2, 5.0), np.ones(1), again["x"][2])},      # a leaf where None was
        {**again, "n": (again["n"][0], again["n"][1])},                          # plain tuple for the namedtuple
        {**again, "n": P(np.zeros(()), {"j": np.ones(1)})},                  # another key, same length
        {"x": again["x"], "n": again["n"]},                                    # a key fewer
        [again],
    ]
    for other in others:
        try:
            assert extract(other) is None
        except KeyError:
            pass


def test_non_array_leaf_is_a_clear_error():
    comm = distributed.local_group(1)[0]
    with pytest.raises(TypeError, match="leaf 1 is a float, not an array"):
        comm._plan("allreduce_mean", [np.zeros(2), 1.5], None)


# --- collectives on the in-process group ---------------------------------------------------
def _tree(rank):
    """Mixed dtypes, None and size-0 leaves; values depend on the rank."""
    r = rank + 1.0
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4) * r,
            "b": np.full(5, r, dtype=np.float64),
            "none": None,
            "empty": np.zeros((0, 3), np.float32),
            "z": [np.full(3, 1 + 2j * r, dtype=np.complex64), None]}


def _expected_mean(size):
    trees = [_tree(r) for r in range(size)]
    return {k: (None if trees[0][k] is None else sum(t[k] for t in trees) / size) for k in ("w", "b", "none", "empty")}


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("bucket_mb", [25, 16e-6])  # 16 bytes: every parameter is split
def test_allreduce_mean_mixed_dtypes_empty_leaves_split_buckets(size, bucket_mb):
    def work(comm):
        return comm.allreduce_mean(_tree(comm.rank)), getattr(comm, "calls", [])

    results = run_local(size, work, bucket_mb=bucket_mb)
    want = _expected_mean(size)
    for out, calls in results:
        for k in ("w", "b", "empty"):
            assert out[k].dtype == _tree(0)[k].dtype
            np.testing.assert_allclose(out[k], want[k].astype(_tree(0)[k].dtype), rtol=1e-6)
        assert out["none"] is None and out["z"][1] is None
        assert out["empty"].shape == (0, 3)
        z = sum(_tree(r)["z"][0] for r in range(size)) / size
        np.testing.assert_allclose(out["z"][0], z, rtol=1e-6)
        assert out["z"][0].dtype == np.complex64
    if size > 1:
        calls = results[0][1]
        plan_sizes = sorted(n for _, _, n in calls)
        assert calls[0][1] == "float64"  # bucket 0 ("b"), with 4 check words (of 51-52 bits)
        assert sum(plan_sizes) == 12 + 5 + 3 + 4  # every element once, empty leaves none
        if bucket_mb == 25:
            assert sorted(dt for _, dt, _ in calls) == ["complex64", "float32", "float64"]  # one call per dtype


def test_allreduce_mean_float64_exact_for_two_ranks():
    """x/2 + y/2 is exact in binary floating point: the mean equals (x + y) / 2 bit for bit."""
    rng = np.random.default_rng(1)
    data = [rng.normal(size=1000), rng.normal(size=1000)]
    out = run_local(2, lambda c: c.allreduce_mean({"g": data[c.rank]}))
    np.testing.assert_array_equal(out[0]["g"], (data[0] + data[1]) / 2)
    np.testing.assert_array_equal(out[1]["g"], out[0]["g"])


def test_allreduce_mean_weights_unequal_shards():
    # rank 0 saw 3 examples with mean gradient 1, rank 1 saw 1 example with gradient 5: global mean 2
    n = [3, 1]
    out = run_local(2, lambda c: c.allreduce_mean([np.full(4, [1.0, 5.0][c.rank])], weight=n[c.rank] * 2 / 4))
    np.testing.assert_allclose(out[0][0], 2.0)


def test_allreduce_sum_integers_and_floats():
    out = run_local(3, lambda c: c.allreduce_sum((np.arange(4) * (c.rank + 1), np.float32(0.5) + np.zeros(()))))
    np.testing.assert_array_equal(out[2][0], np.arange(4) * 6)
    assert out[2][0].dtype == np.int64
    np.testing.assert_allclose(out[2][1], 1.5)


def test_allreduce_mean_rejects_integer_leaves():
    comm = distributed.local_group(1)[0]
    with pytest.raises(TypeError, match="leaf 0 has dtype int64"):
        comm.allreduce_mean([np.arange(3)])


@pytest.mark.parametrize("root", [0, 2])
def test_broadcast_from_root(root):
    def work(comm):
        mine = _tree(comm.rank)
        return comm.broadcast(mine, root=root)

    for out in run_local(3, work, bucket_mb=20e-6):
        want = _tree(root)
        for k in ("w", "b", "empty"):
            np.testing.assert_array_equal(out[k], want[k])
        np.testing.assert_array_equal(out["z"][0], want["z"][0])
        assert out["none"] is None


def test_mismatched_trees_across_ranks_fail_clearly():
    def work(comm):
        return comm.allreduce_mean({"g": np.zeros(3 + comm.rank)})

    with pytest.raises(DistributedError, match="different structure, shapes or dtypes"):
        run_local(2, work)


# --- the structure check (NOTE [check words]) ----------------------------------------------------
def test_ranks_that_disagree_on_their_plan_caches_run_the_same_collectives():
    # A plan-cache hit on one rank and a miss on another must not change which collectives they call:
    # the structure check travels in the data, not in a collective of its own.
    def work(comm):
        outs = []
        for k in range(4):
            if comm.rank == 1:  # rank 1 forgets its plans (e.g. it made MAX_PLANS others): a miss every time
                comm._plans.clear()
                comm._fast.clear()
            outs.append(comm.allreduce_mean(_grads(comm.rank + k)))
        return outs, comm.collective_calls

    (outs0, calls0), (outs1, calls1) = run_local(2, work, timeout=20)
    assert calls0 == calls1 == 4
    for k in range(4):
        for out in (outs0[k], outs1[k]):
            np.testing.assert_array_equal(out[0]["w"], np.full((3, 4), k + 0.5, np.float32))


def _raises_on_every_rank(work, size=2):
    """Run ``work`` on ``size`` local ranks; every rank's exception (None where it returned).

    The group is not broken when a rank fails: each rank must fail on its own, at once.
    """
    comms = distributed.local_group(size, timeout=10)
    errors = [None] * size

    def main(r):
        try:
            work(comms[r])
        except BaseException as e:  # noqa: BLE001 - inspected by the test
            errors[r] = e

    threads = [threading.Thread(target=main, args=(r,)) for r in range(size)]
    t0 = time.monotonic()
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert time.monotonic() - t0 < 5, "a mismatch must fail at once, not at a timeout"
    return errors


def test_a_rank_that_changes_its_tree_after_a_cached_call_fails_clearly_on_every_rank():
    # the first call caches the plan on both ranks; then rank 1 passes another structure of the same size
    def work(comm):
        comm.allreduce_mean([np.ones(4)])
        comm.allreduce_mean([np.ones(4)] if comm.rank == 0 else [np.ones(2), np.ones(2)])

    errors = _raises_on_every_rank(work)
    assert all(isinstance(e, DistributedError) for e in errors), errors
    assert "rank 0 of 2: the ranks passed pytrees of different structure" in str(errors[0])
    assert "This rank: 1 leaf, 4 elements: [float64[4]]; the other rank: 2 leaves, 4 elements" in str(errors[0])
    assert "This rank: 2 leaves, 4 elements: [float64[2], float64[2]]; the other rank: 1 leaf, 4 elements" \
        in str(errors[1])


def test_dict_keys_are_part_of_the_check():
    # D2: same leaf shapes and dtypes under other keys: "a" must never be averaged with "x"
    def work(comm):
        comm.allreduce_mean({"a": np.ones(2), "b": np.ones(2)} if comm.rank == 0 else
                            {"x": np.ones(2), "b": np.ones(2)})

    errors = _raises_on_every_rank(work)
    assert all(isinstance(e, DistributedError) for e in errors), errors
    assert "{'a': float64[2], 'b': float64[2]}" in str(errors[0]) and "{'b': float64[2], 'x': float64[2]}" \
        in str(errors[1])
    assert "the same numbers: the structure, dict keys, shapes, dtypes or bucket_mb differ" in str(errors[0])
    td = [distributed._comm.tree_flatten(t)[1] for t in ({"a": 0, "b": 0}, {"x": 0, "b": 0})]
    specs = [leaf_spec(np.ones(2), "leaf")] * 2
    assert BucketPlan(specs, 100, treedef=td[0]).signature != BucketPlan(specs, 100, treedef=td[1]).signature


@pytest.mark.parametrize("mine, other", [
    ([np.ones(4)], [np.ones(7)]),                          # sizes differ after a cached call
    ([np.ones(4)], [np.ones(4, np.float32)]),              # dtypes
    ({"a": np.zeros(0)}, {"a": np.ones(3)}),               # a rank with no elements still takes part
])
def test_trees_of_other_sizes_or_dtypes_fail_on_every_rank(mine, other):
    def work(comm):
        comm.allreduce_sum([np.ones(4)])
        comm.allreduce_sum(mine if comm.rank == 0 else other)

    errors = _raises_on_every_rank(work)
    assert all(isinstance(e, DistributedError) for e in errors), errors
    assert all("different structure, shapes or dtypes" in str(e) for e in errors)


def test_trees_without_elements_and_first_buckets_without_room_carry_a_check_bucket():
    comm = InPlace(0, 2, timeout=None)
    for tree, dt in [({"e": np.zeros((0, 3)), "n": None}, "float64"), ([], "float64"),
                     ([np.arange(3, dtype=np.int8), np.ones(2)], "int8")]:
        out = comm.allreduce_sum(tree)
        plan = comm._plan("x", *distributed._comm.tree_flatten(tree))
        assert plan.buckets[0][1] == "float64" and plan.describe(0).endswith("check words only)"), plan.buckets
        assert plan.calls[0] == (plan.buckets[0][0], (0,))  # exchanged and checked first, alone
        if dt == "int8":
            np.testing.assert_array_equal(out[0], np.arange(3, dtype=np.int8) * 2)
    # a float32 first bucket carries them itself: 7 words of 23 bits for two ranks, and the sentinel
    plan = comm._plan("x", [np.ones(5, np.float32)])
    assert plan.buckets == [(0, "float32", 5 + 8)] and plan.check.count == 8
    assert plan.describe(0) == "bucket 1/1 (float32, 5 elements)"


def test_check_words_sum_exactly_in_every_dtype():
    for size in (2, 3, 7, 1000):
        for dt in ("float16", "float32", "float64", "complex64", "int16", "int32", "int64", "uint32"):
            def work(comm, dt=dt):
                return comm.allreduce_sum([np.ones(3, dt)])

            if size > 7:  # the words' arithmetic only: many ranks' sums of the largest words stay exact
                from gpuad.distributed._check import word_bits

                bits = word_bits(dt, size)
                assert bits == 0 or float(np.asarray(size * 2 ** bits, dt).real) == size * 2 ** bits, (dt, size)
                continue
            for out in run_local(size, work, timeout=20):
                np.testing.assert_array_equal(out[0], np.full(3, size, dt))


def test_non_array_leaf_path_and_unsupported_dtypes_are_refused_before_any_collective():
    comm = InPlace(0, 2, timeout=None)
    tree = {"x": np.ones(2), "mask": [np.ones(3, bool)]}
    with pytest.raises(TypeError, match=r"allreduce_sum: leaf \['mask'\]\[0\] has dtype bool, which InPlace "
                                        r"cannot sum .*astype\('int32'\)"):
        comm.allreduce_sum(tree)
    with pytest.raises(TypeError, match=r"leaf 0 has dtype bool; a mean needs floating leaves"):
        comm.allreduce_mean(tree)
    assert comm.collective_calls == 0
    np.testing.assert_array_equal(comm.allreduce_sum({"mask": np.zeros(0, bool)})["mask"], np.zeros(0, bool))
    bc = run_local(2, lambda c: c.broadcast({"mask": np.arange(3) == c.rank}, root=1))  # bool broadcasts fine
    np.testing.assert_array_equal(bc[0]["mask"], [False, True, False])


def test_plan_cache_hits_for_leaves_whose_device_is_unhashable(monkeypatch):
    # D3: CuPy 14's Device is unhashable; the cache key must still hit (not rebuild the plan every call)
    class Device:
        def __eq__(self, other):
            return other == "cpu" or isinstance(other, Device)

        def __str__(self):
            return "cpu"

    class Arr(np.ndarray):
        @property
        def device(self):
            return Device()

    with pytest.raises(TypeError):
        hash(Device())
    made = []
    original = BucketPlan.__init__
    monkeypatch.setattr(BucketPlan, "__init__", lambda self, *a, **k: made.append(1) or original(self, *a, **k))
    comm = InPlace(0, 2, timeout=None)
    tree = {"w": np.ones((2, 3)).view(Arr), "b": np.arange(3.0).view(Arr)}
    for _ in range(4):
        out = comm.allreduce_sum(tree)
        np.testing.assert_array_equal(out["b"], np.arange(3.0) * 2)
    assert len(made) == 1 and len(comm._plans) == 1 and comm._fast  # planned once, then compiled


def test_single_process_collectives_return_their_input():
    comm = distributed.SingleProcessCommunicator()
    tree = {"a": np.ones(3), "n": None}
    assert comm.allreduce_mean(tree) is tree
    assert comm.allreduce_sum(tree) is tree
    assert comm.broadcast(tree) is tree
    comm.barrier()
    assert comm.shard(10) == (0, 10)
    np.testing.assert_array_equal(comm.allreduce_mean(tree, weight=2.0)["a"], 2.0)


def test_shard_and_rank_key():
    from gpuad import random

    comms = distributed.local_group(3)
    assert [c.shard(8) for c in comms] == [(0, 2), (2, 5), (5, 8)]
    key = random.key(0, like=np.zeros(()))
    ks = [np.asarray(c.rank_key(key)) for c in comms]
    assert len({k.tobytes() for k in ks}) == 3


def test_a_failing_rank_breaks_the_group_instead_of_hanging():
    def work(comm):
        if comm.rank == 1:
            raise RuntimeError("rank 1 crashed")
        return comm.allreduce_mean([np.ones(2)])

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 1 crashed"):
        run_local(2, work, timeout=30)
    assert time.monotonic() - t0 < 10


def test_watchdog_aborts_a_collective_that_overruns(capsys):
    aborted = threading.Event()

    class Stuck(distributed.Communicator):
        backend = "stuck"

        def _sum_(self, group, bufs):
            aborted.wait(10)  # a peer that never answers
            return [b * 2 for b in bufs]  # (then it does, as an identical rank)

        def abort(self, code=1):
            aborted.set()

    comm = Stuck(0, 2, timeout=0.3)
    t0 = time.monotonic()
    comm.allreduce_mean({"g": np.ones(3)})
    assert aborted.is_set() and time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    assert ("rank 0 of 2 (stuck): allreduce_mean of bucket 1/1 (float64, 3 elements) "
            "did not complete within 0.3 s") in err


def test_timeout_from_environment(monkeypatch):
    monkeypatch.setenv("GPUAD_DIST_TIMEOUT", "7.5")
    assert distributed.default_timeout() == 7.5
    monkeypatch.setenv("GPUAD_DIST_TIMEOUT", "0")
    assert distributed.default_timeout() is None
    monkeypatch.setenv("GPUAD_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="GPUAD_DIST_TIMEOUT"):
        distributed.default_timeout()


# --- the NCCL communicator with a fake cupyx.distributed backend -----------------------------
class FakeNCCL:
    """The three methods of ``cupyx.distributed.NCCLBackend`` gpuad uses, over an in-process group."""

    def __init__(self, local):
        self.local = local
        self.log = []

    def all_reduce(self, in_array, out_array, op="sum"):
        assert op == "sum" and in_array is out_array  # in place, on the bucket itself
        self.log.append(("all_reduce", in_array.dtype.name, in_array.shape[0]))
        (res,) = self.local._sum_((np, None, in_array.dtype.name, None), [in_array])
        self.local._barrier_()  # every rank has read in_array before anyone overwrites it
        out_array[...] = res

    def broadcast(self, in_out_array, root=0):
        self.log.append(("broadcast", in_out_array.dtype.name, in_out_array.shape[0]))
        (res,) = self.local._bcast_((np, None, in_out_array.dtype.name, None), [in_out_array], root)
        self.local._barrier_()
        in_out_array[...] = res

    def barrier(self):
        self.local._barrier_()


def test_nccl_communicator_buckets_with_a_fake_backend():
    locals_ = distributed.local_group(2)
    results = [None, None]

    def rank_main(r):
        fake = FakeNCCL(locals_[r])
        comm = distributed.NCCLCommunicator(r, 2, nccl=fake, bucket_mb=24e-6, timeout=None)
        params = comm.broadcast(_tree(r))
        grads = comm.allreduce_mean(_tree(r))
        comm.barrier()
        results[r] = (params, grads, fake.log, comm.local_rank)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    want = _expected_mean(2)
    for r in range(2):
        params, grads, log, local_rank = results[r]
        assert local_rank == r
        np.testing.assert_array_equal(params["w"], _tree(0)["w"])
        np.testing.assert_allclose(grads["w"], want["w"])
        np.testing.assert_allclose(grads["b"], want["b"])
        # 24-byte buckets, leaves in sorted-key order: b (5 float64) -> 2 buckets, w (12 float32) -> 2,
        # z (3 complex64) -> 1; one NCCL call per bucket
        reduces = [e for e in log if e[0] == "all_reduce"]
        assert [(dt, n) for _, dt, n in reduces] == [("float64", 3 + 4), ("float64", 2), ("float32", 6),
                                                     ("float32", 6), ("complex64", 3)]  # + 4 check words


def _nccl_pair(trees, **kw):
    """Two NCCLCommunicators over FakeNCCL; ``trees[r](comm)`` runs on rank ``r``; ``(results, errors)``."""
    locals_ = distributed.local_group(2, timeout=10)
    results, errors = [None, None], [None, None]

    def main(r):
        try:
            comm = distributed.NCCLCommunicator(r, 2, nccl=FakeNCCL(locals_[r]), timeout=None, **kw)
            results[r] = trees[r](comm)
        except BaseException as e:  # noqa: BLE001 - inspected by the test
            errors[r] = e

    threads = [threading.Thread(target=main, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    return results, errors


def test_nccl_communicator_checks_the_structure_across_ranks():
    # D7: the check words travel through NCCL too (the fake sums them as NCCL would)
    same = [lambda c: c.allreduce_mean([np.ones(4)]), lambda c: c.allreduce_mean([np.ones(4)])]
    results, errors = _nccl_pair(same)
    assert errors == [None, None] and all(np.array_equal(r[0], np.ones(4)) for r in results)
    other = [lambda c: c.allreduce_mean({"a": np.ones(4)}), lambda c: c.allreduce_mean({"b": np.ones(4)})]
    _, errors = _nccl_pair(other)
    assert all(isinstance(e, DistributedError) and "different structure" in str(e) for e in errors), errors
    bcast = [lambda c: c.broadcast({"a": np.ones(4)}), lambda c: c.broadcast({"b": np.zeros(4)})]
    _, errors = _nccl_pair(bcast)  # the root only sends: the receiver sees the words differ
    assert errors[0] is None and isinstance(errors[1], DistributedError), errors
    assert "broadcast: rank 1 of 2" in str(errors[1]) and "rank 0 (the root): 1 leaf, 4 elements" in str(errors[1])


@pytest.mark.parametrize("mode, reads", [(None, 2), ("first", 2), ("every", 6)])
def test_nccl_reads_check_words_on_a_plans_first_collective_only(monkeypatch, mode, reads):
    # NOTE [when check words are read]: reading them waits for the device, so NCCL does it once per
    # plan (two ranks x one plan here), unless GPUAD_DIST_CHECK=every; MPI reads them every call.
    from gpuad.distributed import _check

    if mode is None:
        monkeypatch.delenv("GPUAD_DIST_CHECK", raising=False)
    else:
        monkeypatch.setenv("GPUAD_DIST_CHECK", mode)
    count = []
    made = _check.Check.__init__

    def counting(self, *args, **kwargs):
        made(self, *args, **kwargs)
        read = self.read
        self.read = lambda buf: count.append(1) or read(buf)

    monkeypatch.setattr(_check.Check, "__init__", counting)
    three = [lambda c: [c.allreduce_mean([np.ones(4)])[0] for _ in range(3)]] * 2
    results, errors = _nccl_pair(three)
    assert errors == [None, None] and len(count) == reads
    assert all(np.array_equal(r, np.ones(4)) for rs in results for r in rs)
    assert distributed.MPICommunicator.check_every_call and not distributed.NCCLCommunicator.check_every_call
    monkeypatch.setenv("GPUAD_DIST_CHECK", "sometimes")
    with pytest.raises(ValueError, match="GPUAD_DIST_CHECK must be 'every' or 'first'"):
        distributed.NCCLCommunicator(0, 2, nccl=object(), timeout=None)


def test_nccl_refuses_dtypes_cupyx_cannot_reduce_and_broadcasts_them_as_bytes():
    # D4: cupyx's NCCL has no bool, int16, uint16
    comm = distributed.NCCLCommunicator(0, 2, nccl=object(), timeout=None)
    with pytest.raises(TypeError, match=r"allreduce_sum: leaf \['h'\] has dtype int16, which NCCLCommunicator "
                                        r"cannot sum"):
        comm.allreduce_sum({"h": np.ones(2, np.int16), "x": np.ones(2)})
    trees = [lambda c: c.broadcast({"m": np.array([True, False, True]), "h": np.arange(3, dtype=np.int16)}),
             lambda c: c.broadcast({"m": np.zeros(3, bool), "h": np.zeros(3, np.int16)})]
    results, errors = _nccl_pair(trees)
    assert errors == [None, None], errors
    np.testing.assert_array_equal(results[1]["m"], [True, False, True])
    np.testing.assert_array_equal(results[1]["h"], [0, 1, 2])


def test_nccl_without_the_nccl_library_says_how_to_install_it(monkeypatch):
    # D9: CuPy's wheels do not bundle NCCL; cupyx raises a bare RuntimeError('NCCL is not available')
    import types

    from gpuad.backends import cupy as cupy_backend

    monkeypatch.setattr(cupy_backend, "probe", lambda: (True, "fake"))
    monkeypatch.setattr(cupy_backend, "device_count", lambda: 1)
    monkeypatch.setattr(cupy_backend, "use_device", lambda i: None)
    fake = types.ModuleType("cupyx.distributed")

    def init_process_group(n, rank, host=None, port=None):
        raise RuntimeError("NCCL is not available")

    fake.init_process_group = init_process_group
    cupyx = types.ModuleType("cupyx")
    cupyx.distributed = fake
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.distributed", fake)
    with pytest.raises(DistributedError, match=r"cannot load the NCCL library .*pip install nvidia-nccl-cu1[23]"):
        distributed.NCCLCommunicator(0, 2)  # the wheel of the installed CuPy's CUDA major (tests/backends)


def test_check_available_names_the_extra_of_the_installed_cupy(monkeypatch):
    # D12
    from gpuad.data import MissingDependency

    monkeypatch.setitem(sys.modules, "cupyx.distributed", None)  # not importable
    env = {"RANK": "0", "WORLD_SIZE": "2"}
    for dist, want in [("cupy-cuda13x", "gpuad[cuda13]"), ("cupy-cuda12x", "gpuad[cuda12]"),
                       (None, "'gpuad[cuda12]' (CUDA 12) or 'gpuad[cuda13]' (CUDA 13)")]:
        monkeypatch.setattr("gpuad.backends.cupy_env._distribution", lambda d=dist: d)
        with pytest.raises(MissingDependency) as info:
            distributed.check_available(environ=env)
        assert want in str(info.value)


# --- communicator selection ---------------------------------------------------------------
@pytest.mark.parametrize("env, kind", [
    ({}, "none"),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "1"}, "mpi"),            # MPICH hydra
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, "mpi"),          # Open MPI
    ({"PMIX_RANK": "0"}, "mpi"),                                                   # PMIx launchers
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}, "nccl"),
    ({"RANK": "0", "WORLD_SIZE": "1"}, "none"),                                    # one process
    ({"PMI_SIZE": "2", "PMI_RANK": "0", "GPUAD_DISTRIBUTED": "none"}, "none"),     # explicit wins
])
def test_detect(env, kind):
    assert detect(environ=env).kind == kind


def test_detect_nccl_details():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500",
           "CUPYX_DISTRIBUTED_PORT": "13400"}
    launch = detect(environ=env)
    assert (launch.kind, launch.rank, launch.size, launch.local_rank) == ("nccl", 3, 4, 1)
    assert (launch.host, launch.port) == ("node0", "13400")  # cupyx's own variables take precedence
    # NCCL under mpiexec: rank and size from the MPI launcher
    env = {"GPUAD_DISTRIBUTED": "nccl", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    launch = detect(environ=env)
    assert (launch.kind, launch.rank, launch.size, launch.local_rank) == ("nccl", 1, 2, 1)


def test_detect_errors():
    with pytest.raises(ValueError, match="unknown distributed backend 'gloo'"):
        detect("gloo", environ={})
    with pytest.raises(DistributedError, match="NCCL was requested but"):
        detect("nccl", environ={})
    with pytest.raises(DistributedError, match="RANK='x'"):
        detect(environ={"RANK": "x", "WORLD_SIZE": "2"})


def test_init_without_a_launcher_is_a_single_process(monkeypatch):
    monkeypatch.setattr(distributed, "_current", None)
    comm = distributed.init(environ={})
    assert isinstance(comm, distributed.SingleProcessCommunicator) and comm.size == 1
    assert distributed.init() is comm and distributed.current() is comm


def test_init_nccl_needs_the_cupy_backend(monkeypatch):
    import gpuad

    monkeypatch.setattr(distributed, "_current", None)
    gpuad.set_backend("numpy")
    with pytest.raises(DistributedError, match="NCCL needs the cupy backend"):
        distributed.init(environ={"RANK": "0", "WORLD_SIZE": "2"})


def test_importing_gpuad_distributed_imports_no_mpi_or_cupy():
    code = ("import sys, gpuad, gpuad.distributed; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'cupy', 'cupyx')))")
    env = {k: v for k, v in os.environ.items() if k != "GPUAD_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- real MPI: mpiexec -n 2 ----------------------------------------------------------------
def _mpiexec():
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def _mpi_skip_reason():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'gpuad[distributed]')"
    if _mpiexec() is None:
        return "mpiexec is not on PATH (pip install 'gpuad[distributed]' installs MPICH's)"
    return None


mpi = pytest.mark.skipif(_mpi_skip_reason() is not None, reason=str(_mpi_skip_reason()))


def run_mpi(n, args, timeout=90, env=None):
    """``mpiexec -n n python ARGS`` with a hard timeout: the whole process group is killed after it."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI_", "MPI_", "HYDRA"))}
    full.update({"PYTHONPATH": str(ROOT), "GPUAD_BACKEND": "numpy", "OMP_NUM_THREADS": "1",
                 "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    full.update(env or {})
    t0 = time.monotonic()
    proc = subprocess.Popen([_mpiexec(), "-n", str(n), sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=full, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} did not finish within {timeout} s (killed)\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err, time.monotonic() - t0


def _script(tmp_path, body):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


COLLECTIVES = """
    import json, sys
    import numpy as np
    from gpuad import distributed

    comm = distributed.init(bucket_mb=float(sys.argv[1]), timeout=30)
    r = comm.rank

    def tree(rank):
        x = rank + 1.0
        return {"w": np.arange(12, dtype=np.float32).reshape(3, 4) * x, "b": np.full(5, x),
                "none": None, "empty": np.zeros((0, 3), np.float32),
                "z": [np.full(3, 1 + 2j * x, dtype=np.complex64), None], "i": np.arange(3) * x}

    t = tree(r)
    ints = {"i": t.pop("i").astype(np.int32)}
    mean = comm.allreduce_mean(t)
    again = [comm.allreduce_mean(t) for _ in range(3)]  # plan cached, then compiled; all results held
    total = comm.allreduce_sum(ints)
    bc = comm.broadcast(tree(r), root=1)
    comm.barrier()
    trees = [tree(k) for k in range(comm.size)]
    ok = {
        "w": bool(np.allclose(mean["w"], sum(u["w"] for u in trees) / comm.size) and mean["w"].dtype == np.float32),
        "b": bool(np.array_equal(mean["b"], sum(u["b"] for u in trees) / comm.size)),
        "z": bool(np.allclose(mean["z"][0], sum(u["z"][0] for u in trees) / comm.size)
                  and mean["z"][0].dtype == np.complex64),
        "none": mean["none"] is None and mean["z"][1] is None,
        "again": all(np.array_equal(m["w"], mean["w"]) and np.array_equal(m["z"][0], mean["z"][0])
                     and not np.shares_memory(m["w"], mean["w"]) for m in again),
        "empty": mean["empty"].shape == (0, 3),
        "int": bool(np.array_equal(total["i"], sum(u["i"] for u in trees).astype(np.int32))
                    and total["i"].dtype == np.int32),
        "bcast": bool(np.array_equal(bc["w"], trees[1]["w"]) and np.array_equal(bc["b"], trees[1]["b"])),
    }
    used = []  # the kept-bucket fast path: taken once a structure is compiled and its buckets are free
    kept = comm._sum_kept_
    comm._sum_kept_ = lambda op, plan, bufs: used.append(op) or kept(op, plan, bufs)
    del mean, again
    want = sum(u["w"] for u in trees) / comm.size
    ok["fast"] = (all(bool(np.allclose(comm.allreduce_mean(t)["w"], want)) for _ in range(3))
                  and len(used) == (3 if float(sys.argv[1]) >= 1 else 0))  # split leaves: general path
    if float(sys.argv[1]) >= 1:  # a 1.2 MB bucket: on huge pages, reduced in place by MPI, reused
        big = {"g": np.full(300_000, r + 1.0, np.float32), "h": np.arange(5.0) * (r + 1)}
        sums = [comm.allreduce_sum(big) for _ in range(1)] + [comm.allreduce_sum(big)["g"][::1000].copy()
                                                               for _ in range(3)]
        plan = next(p for p in comm._plans.values() if p.buckets[0][2] == 300_000 + p.check.count)
        ok["huge"] = (all(bool(np.all(s_ == 3.0)) for s_ in sums[1:]) and bool(np.all(sums[0]["g"] == 3.0))
                      and bool(np.array_equal(sums[0]["h"], np.arange(5.0) * 3))
                      and plan.pools[0].bufs[0].ctypes.data % (2 << 20) == 0)
    rows = comm.mpi_comm.gather({"rank": r, "size": comm.size, "kind": comm.backend, "ok": ok,
                                 "calls": comm.collective_calls})
    if r == 0:
        print("\\n".join(json.dumps(row) for row in rows), flush=True)
"""


@mpi
@pytest.mark.parametrize("bucket_mb", ["25", "0.000016"])
def test_mpi_collectives(tmp_path, bucket_mb):
    rc, out, err, _ = run_mpi(2, [_script(tmp_path, COLLECTIVES), bucket_mb])
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert sorted(row["rank"] for row in rows) == [0, 1]
    for row in rows:
        assert row["size"] == 2 and row["kind"] == "mpi"
        assert all(row["ok"].values()), row
    calls = rows[0]["calls"]
    # 25 MB: 7 x float32, float64, complex64 (mean) + int32 (sum) + 3 (broadcast)
    # + 4 x float32, float64 (the 1.2 MB tree's sums) buckets
    assert calls == 33 if bucket_mb == "25" else calls > 25


EQUIVALENCE = """
    import json
    import numpy as np
    import gpuad
    from gpuad import distributed, nn, optim, random
    from gpuad.training import DigitsCNN

    comm = distributed.init(timeout=60)
    key = random.key(0, like=np.zeros(1))
    k_init, k_x, k_y = random.split(key, 3)
    model = DigitsCNN(channels=(4, 8), hidden=16)
    x = np.asarray(random.uniform(k_x, (12, 1, 8, 8), dtype="float64"))  # one fixed batch
    y = np.asarray(random.randint(k_y, (12,), 0, 10))

    def loss(p, xb, yb):
        return nn.cross_entropy(model.apply(p, xb), yb)

    def run(params, grads_of):
        opt = optim.adamw(1e-2, weight_decay=1e-4)
        state = opt.init(params)
        for _ in range(5):
            params, state = opt.step(params, grads_of(params), state)
        return params

    lo, hi = comm.shard(12)
    init = comm.broadcast(model.init(k_init, "float64"))
    dist = run(init, lambda p: comm.allreduce_mean(gpuad.grad(loss)(p, x[lo:hi], y[lo:hi])))
    single = run(model.init(k_init, "float64"), lambda p: gpuad.grad(loss)(p, x, y))
    leaves_d, leaves_s = gpuad.tree_leaves(dist), gpuad.tree_leaves(single)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves_d, leaves_s))
    scale = max(float(np.max(np.abs(b))) for b in leaves_s)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves_s, gpuad.tree_leaves(init)))
    same = comm.mpi_comm.allgather(b"".join(np.ascontiguousarray(a).tobytes() for a in leaves_d))
    rows = comm.mpi_comm.gather({"rank": comm.rank, "diff": diff, "scale": scale, "moved": moved,
                                 "ranks_agree": len(set(same)) == 1})
    if comm.rank == 0:
        print("\\n".join(json.dumps(row) for row in rows), flush=True)
"""


@mpi
def test_mpi_training_equals_one_process_on_the_concatenated_batch(tmp_path):
    rc, out, err, _ = run_mpi(2, [_script(tmp_path, EQUIVALENCE)])
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(rows) == 2
    for row in rows:
        assert row["ranks_agree"]
        assert row["moved"] > 1e-3  # the steps did change the parameters
        assert row["diff"] <= 1e-13 * max(1.0, row["scale"]), row  # float64 round-off


CRASH = """
    import os, sys, time
    import numpy as np
    from gpuad import distributed

    comm = distributed.init(timeout=float(sys.argv[2]))
    mode = sys.argv[1]
    if comm.rank == 1:
        if mode == "raise":
            raise RuntimeError("rank 1 failed on purpose")
        if mode == "kill":
            os.kill(os.getpid(), 9)
        if mode == "hang":
            time.sleep(600)
    comm.allreduce_mean({"g": np.ones(4)})
    print("rank", comm.rank, "finished")
"""


@mpi
@pytest.mark.parametrize("mode, expect", [
    ("raise", "RuntimeError: rank 1 failed on purpose"),
    ("kill", None),
    ("hang", "did not complete within 3 s"),
])
def test_mpi_a_crashed_rank_fails_the_job_within_bounded_time(tmp_path, mode, expect):
    rc, out, err, seconds = run_mpi(2, [_script(tmp_path, CRASH), mode, "3"], timeout=60)
    assert rc != 0
    assert "rank 0 finished" not in out
    assert seconds < 45
    if expect:
        assert expect in err, err
    if mode == "raise":
        assert "calling MPI_Abort" in err


MISMATCH = """
    import sys
    import numpy as np
    from gpuad import distributed

    comm = distributed.init()  # the default timeout (600 s): the watchdog must not be what ends the job
    mode, r = sys.argv[1], comm.rank
    a = [np.ones(4)]
    comm.allreduce_mean(a)
    comm.allreduce_mean(a)  # cached and compiled on both ranks
    if mode == "diverge":  # rank 1 forgets its plans: a miss there, a hit on rank 0, the same collectives
        for k in range(3):
            if r == 1:
                comm._plans.clear()
                comm._fast.clear()
            out = comm.allreduce_sum({"g": np.full(3, r + 1.0), "i": np.arange(2)})
            assert np.array_equal(out["g"], np.full(3, 3.0)) and np.array_equal(out["i"], [0, 2]), out
        print("rank", r, "ok", flush=True)
    elif mode == "structure":  # the same size, another structure, after a cached call
        comm.allreduce_mean(a if r == 0 else [np.ones(2), np.ones(2)])
    elif mode == "keys":
        comm.allreduce_mean({"a": np.ones(2), "b": np.ones(2)} if r == 0 else {"x": np.ones(2), "b": np.ones(2)})
    elif mode == "sizes":
        comm.allreduce_mean(a if r == 0 else [np.ones(7)])
    print("rank", r, "finished", flush=True)
"""


@mpi
@pytest.mark.parametrize("mode", ["diverge", "structure", "keys", "sizes"])
def test_mpi_ranks_with_other_trees_or_cache_states_never_hang(tmp_path, mode):
    env = {"GPUAD_DIST_TIMEOUT": ""}
    rc, out, err, seconds = run_mpi(2, [_script(tmp_path, MISMATCH), mode], timeout=60, env=env)
    if mode == "diverge":
        assert rc == 0, err
        assert out.count(" ok") == 2
        return
    assert rc != 0 and "finished" not in out
    assert seconds < 30, f"took {seconds:.0f} s: a mismatch must end the job at once"
    if mode == "sizes":  # MPI itself may stop first ("Message truncated"), else gpuad says so
        assert "Message truncated" in err or "DistributedError" in err, err
    else:
        assert "DistributedError: allreduce_mean: rank" in err, err
        assert "the ranks passed pytrees of different structure, shapes or dtypes" in err
        assert "calling MPI_Abort" in err
    if mode == "structure":
        assert "This rank: 1 leaf, 4 elements: [float64[4]]; the other rank: 2 leaves, 4 elements" in err \
            or "This rank: 2 leaves, 4 elements: [float64[2], float64[2]]; the other rank: 1 leaf" in err


@mpi
def test_gpuad_train_distributed_matches_one_process(tmp_path):
    common = ["--epochs", "1", "--batch-size", "64", "--dtype", "float64", "--no-progress", "--backend", "numpy"]
    rc, out, err, _ = run_mpi(2, ["-m", "gpuad", "train", "--distributed", "--out", str(tmp_path / "two"), *common],
                              timeout=180)
    assert rc == 0, err
    assert out.count("epoch   1/1") == 1  # rank 0 prints, rank 1 does not
    assert "distributed: 2 process(es), mpi" in out
    one = subprocess.run([sys.executable, "-m", "gpuad", "train", "--out", str(tmp_path / "one"), *common],
                         capture_output=True, text=True, cwd=ROOT, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert m2["test_accuracy"] == m1["test_accuracy"]
    assert m2["history"][0]["train_accuracy"] == m1["history"][0]["train_accuracy"]
    assert abs(m2["final_loss"] - m1["final_loss"]) < 1e-12
    p1, p2 = np.load(tmp_path / "one" / "params.npz"), np.load(tmp_path / "two" / "params.npz")
    for k in p1.files:
        if k != "__metadata__":
            np.testing.assert_allclose(p2[k], p1[k], rtol=0, atol=1e-13)


@mpi
def test_allreduce_benchmark_smoke():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.allreduce", "--only", "allreduce", "--sizes", "0.1",
                             "--reps", "3", "--rounds", "1", "--no-write"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the mpiexec job it started
        pytest.fail("python -m bench.allreduce did not finish within 120 s (killed)")
    assert proc.returncode == 0, err
    assert "| 0.1 MB | 16 | 1 |" in out


def test_cli_distributed_rejects_other_models(capsys, tmp_path):
    from gpuad.cli import main

    assert main(["train", "--distributed", "--model", "gpt", "--out", str(tmp_path), "--epochs", "1"]) == 2
    assert "only --model cnn" in capsys.readouterr().err


# --- real NCCL: two GPUs (ci/gpu.sh on a multi-GPU runner) -----------------------------------
def _gpus():
    from gpuad.backends import cupy as cupy_backend

    ok, why = cupy_backend.probe()
    if not ok:
        return 0, f"CuPy backend not usable: {why}"
    n = cupy_backend.device_count()
    if n >= 2:
        ok, why = cupy_backend.nccl_available()  # CuPy's wheels do not bundle NCCL (nvidia-nccl-cuXX)
        if not ok:
            return 0, f"NCCL not usable: {why}"
    return n, f"needs 2 CUDA devices, found {n}"


NCCL_JOB = """
    import json, sys
    import gpuad
    gpuad.set_backend("cupy")
    import cupy
    from gpuad import distributed

    comm = distributed.init(bucket_mb=float(sys.argv[1]), timeout=120)
    r = comm.rank

    def tree(rank):
        return {"w": cupy.arange(12, dtype=cupy.float32).reshape(3, 4) * (rank + 1),
                "b": cupy.full(5, rank + 1.0), "e": cupy.zeros((0, 2), dtype=cupy.float32), "n": None}

    mean = comm.allreduce_mean(tree(r))
    bc = comm.broadcast(tree(r), root=1)
    comm.barrier()
    ok = {
        "kind": comm.backend == "nccl",
        "device": mean["w"].device.id == r and isinstance(mean["w"], cupy.ndarray),
        "w": bool(cupy.allclose(mean["w"], cupy.arange(12, dtype=cupy.float32).reshape(3, 4) * 1.5)),
        "b": bool(cupy.all(mean["b"] == 1.5)),
        "empty": mean["e"].shape == (0, 2) and mean["n"] is None,
        "bcast": bool(cupy.all(bc["b"] == 2.0)),
    }
    print(json.dumps({"rank": r, "ok": ok}), flush=True)
"""


@pytest.mark.gpu
@pytest.mark.skipif(_gpus()[0] < 2, reason=_gpus()[1])
@pytest.mark.parametrize("bucket_mb", ["25", "0.000016"])
def test_nccl_two_gpus(tmp_path, bucket_mb):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = _script(tmp_path, NCCL_JOB)
    procs = []
    for r in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI_", "MPI_"))}
        env.update({"PYTHONPATH": str(ROOT), "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                    "CUPYX_DISTRIBUTED_HOST": "127.0.0.1", "CUPYX_DISTRIBUTED_PORT": str(port)})
        procs.append(subprocess.Popen([sys.executable, script, bucket_mb], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                                      start_new_session=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180))
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("the NCCL job did not finish within 180 s (killed)")
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        row = json.loads(out.strip().splitlines()[-1])
        assert all(row["ok"].values()), row
