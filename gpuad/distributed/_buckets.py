"""Packing the leaves of a pytree into a few flat buckets, one dtype per bucket.

A collective on a pytree of ``L`` leaves makes one call per *bucket*, not one
per leaf.  Leaves are grouped by (array library, device, dtype) in the order
they first appear and filled into buckets of at most ``bucket_bytes`` (at
least one element each).  A leaf that does not fit in the room left in its
group's open bucket starts a new one, so that it stays whole and comes back
as a view of its bucket; only a leaf larger than a whole bucket is cut, and
spans two or more buckets (it is concatenated back after the collective).
Size-0 leaves take no room and ``None`` subtrees have no leaves at all.

Buckets of backends whose views keep their base array alive
(``REUSABLE_BUCKETS``, NumPy) are kept by the plan, in up to two sets
(:class:`KeptBuckets`), and a set is refilled by a later collective only once
no returned leaf, nor any view of one, refers to it any more (its buckets'
reference counts are back to what they were when it was made): fresh memory
costs page faults, warm memory does not.  Results therefore never change
after they are returned.  A loop that drops each result before the next
collective uses one set; one that still holds the previous result (``grads =
comm.allreduce_mean(...)`` in a loop) alternates between two; when both are
held, the collective packs into a new set, which replaces the older one (its
holders keep that alive).  Kept sets come from the backend's ``comm_empty``
where it has one (NumPy: huge pages for large buckets, which MPI reduces
faster).  With kept NumPy buckets each
set also holds, per leaf that lies whole in one bucket, its view of the
bucket in the leaf's shape: packing is one ``multiply``/``copyto`` per leaf
into that view, and unpacking one ``view()`` of it.

A :class:`BucketPlan` depends only on the tree structure and the leaves'
shapes and dtypes, so it is computed once per structure and reused (see
``Communicator._plan``).  A communicator's plans also carry the check words
of NOTE [check words] (:mod:`._check`) at the end of bucket 0.
Packing, unpacking and the buckets themselves use the array-API namespace of
the leaves: on the GPU everything stays on the device.
"""

from __future__ import annotations

import math
import sys

from .._backend import BACKENDS, backend_module, namespace_of
from .._core import Tracer, full_unbox
from .._dtypes import dtype_name, is_floating
from ._check import CHECK_DTYPE, MIN_BITS, Check, signature_of, tree_text, word_bits

__all__ = ["BucketPlan", "leaf_spec", "device_key", "ITEMSIZE"]

#: Bytes per element of each dtype name (bool is one byte, as MPI_C_BOOL).
ITEMSIZE = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
    "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
    "complex64": 8, "complex128": 16,
}

_mod_by_ns: dict = {}


def _backend_mod(ns):
    mod = _mod_by_ns.get(id(ns))
    if mod is None:
        for name in BACKENDS:
            m = backend_module(name)
            if m.owns(ns):
                mod = m
                break
        else:  # pragma: no cover - every namespace gpuad dispatches on has a backend
            raise TypeError(f"gpuad.distributed: no gpuad backend owns namespace {ns.__name__}")
        _mod_by_ns[id(ns)] = mod
    return mod


def _numpy_home():
    return backend_module("numpy").namespace(), "cpu"


def leaf_spec(x, where):
    """``(shape, dtype name, (namespace, device))`` of a leaf, for planning.

    Raises
    ------
    TypeError
        For a leaf that is not an array (``where`` names it in the message).
    """
    x = full_unbox(x)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"gpuad.distributed: {where} is a {type(x).__name__}, not an array "
                        "(pytree leaves must be arrays; use None for an empty subtree)")
    ns = namespace_of((x,), "gpuad.distributed")
    return tuple(int(d) for d in x.shape), dtype_name(x.dtype), (ns, x.device)


#: Per device type, how a leaf's device becomes part of a hashable plan-cache key.
_DEVICE_KEYS = {}


def device_key(x):
    """The device of leaf ``x`` as a hashable plan-cache key.

    Parameters
    ----------
    x : array

    Returns
    -------
    hashable
        ``x.device`` where it is hashable; else the ``device_key`` of ``x``'s
        backend (CuPy 14's ``Device`` is unhashable: ``("cuda", id)``), else
        ``(type name, str(device))``.  Decided once per device type.
    """
    dev = x.device
    fn = _DEVICE_KEYS.get(type(dev))
    if fn is None:
        fn = _DEVICE_KEYS[type(dev)] = _device_key_fn(x, dev)
    return fn(dev)


def _device_key_fn(x, dev):
    try:
        hash(dev)
        return _same
    except TypeError:
        pass
    mod = _backend_mod(namespace_of((x,), "gpuad.distributed"))
    fn = getattr(mod, "device_key", None)
    if fn is not None:
        return fn
    return lambda d: (type(d).__qualname__, str(d))


def _same(d):
    return d


def _reshaper(ns, mod):
    """``reshape(x, shape)``: the array's own method where the backend allows it (cheaper), else ``ns.reshape``."""
    if getattr(mod, "NAME", None) in ("numpy", "cupy"):  # ndarray.reshape: a view when possible, as ns.reshape
        return lambda x, shape: x.reshape(shape)
    return ns.reshape


class BucketPlan:
    """Where each leaf's elements go in the flat buckets.

    Parameters
    ----------
    specs : list of (shape, dtype name, (namespace, device))
        One per leaf, from :func:`leaf_spec`.
    bucket_bytes : int
        Largest bucket in bytes (a bucket holds at least one element).
    size : int, optional
        Number of ranks.  With 2 or more, bucket 0 ends with the check words
        of NOTE [check words] (``check``), which may make it a few elements
        larger than ``bucket_bytes``; a bucket of its own (float64, bucket 0)
        holds them where the first bucket's dtype cannot, or when there is no
        data at all.
    treedef : gpuad._tree.TreeDef, optional
        The tree's structure: part of ``signature`` and of the messages.
    home : callable, optional
        ``home() -> (namespace, device)`` of that bucket of its own when the
        tree has no arrays to take them from (default: NumPy on the CPU).

    Attributes
    ----------
    buckets : list of (group index, dtype name, number of elements)
        The number includes the check words (bucket 0).
    groups : list of (namespace, device, dtype name, backend module)
    segments : list of list of (bucket, bucket_start, leaf_start, leaf_stop)
        Per leaf, the pieces of its flattened elements; empty for size-0 leaves.
    signature : int
        64-bit hash of the structure, dict keys, shapes, dtypes and bucket
        size, equal on every process that planned the same tree.
    check : Check or None
        The check words (None with fewer than 2 ranks).
    calls : list of (group, tuple of bucket indices)
        The transport calls of a collective, in order: bucket 0 alone first
        (its check words are verified before any other bucket is exchanged),
        then the rest of its group, then each other group.
    """

    def __init__(self, specs, bucket_bytes, *, size=1, treedef=None, home=None):
        if bucket_bytes < 1:
            raise ValueError(f"bucket size must be positive, got {bucket_bytes} bytes")
        self.specs = list(specs)
        self.bucket_bytes = int(bucket_bytes)
        self.groups = []
        self.buckets = []
        self.segments = [[] for _ in self.specs]
        group_of = {}
        fill = {}  # group -> (bucket index, elements used) of its open bucket
        for i, (shape, dt, (ns, dev)) in enumerate(self.specs):
            if dt not in ITEMSIZE:
                raise TypeError(f"gpuad.distributed: leaf {i} has dtype {dt}, which collectives do not support")
            key = (id(ns), str(dev), dt)
            g = group_of.get(key)
            if g is None:
                g = group_of[key] = len(self.groups)
                self.groups.append((ns, dev, dt, _backend_mod(ns)))
            cap = max(1, self.bucket_bytes // ITEMSIZE[dt])
            n = math.prod(shape)
            a = 0
            while a < n:
                b, used = fill.get(g, (None, cap))
                if used == cap or (a == 0 and used + n > cap >= n):  # full, or keep a leaf that fits whole
                    b, used = len(self.buckets), 0
                    self.buckets.append([g, dt, 0])
                k = min(n - a, cap - used)
                self.segments[i].append((b, used, a, a + k))
                self.buckets[b][2] += k
                fill[g] = (b, used + k)
                a += k
        self.signature = signature_of(treedef, self.specs, self.bucket_bytes)
        self.check = None
        if size > 1:
            self._add_check(size, treedef, home)
        self.buckets = [tuple(b) for b in self.buckets]
        # per leaf, what pack and unpack do: (reshape, [(bucket, start, a, z, whole, scale_into)])
        self._ops = []
        for i, segs in enumerate(self.segments):
            if not segs:
                self._ops.append(None)
                continue
            ns, _, _, mod = self.groups[self.buckets[segs[0][0]][0]]
            n = math.prod(self.specs[i][0])
            into = getattr(mod, "scale_into", None)
            self._ops.append((_reshaper(ns, mod), [(b, st, a, z, a == 0 and z == n, into) for b, st, a, z in segs]))
        #: Whether every leaf is floating (real or complex): what a mean needs.
        self.floating = all(is_floating(dt) for _, dt, _ in self.specs)
        #: ``(group, [bucket indices])`` in order: one transport call sequence per group.
        by_group = {}
        for b, (g, _, _) in enumerate(self.buckets):
            by_group.setdefault(g, []).append(b)
        self.by_group = list(by_group.items())
        self.calls = []
        for g, idx in self.by_group:
            if idx[0] == 0 and len(idx) > 1:
                self.calls += [(g, (0,)), (g, tuple(idx[1:]))]
            else:
                self.calls.append((g, tuple(idx)))
        #: Every bucket's index (what a collective over the kept buckets names on a timeout).
        self.all_buckets = tuple(range(len(self.buckets)))
        # Reference counts only mean "nobody else holds this" under CPython.
        self._reuse = (sys.implementation.name == "cpython"
                       and all(getattr(grp[3], "REUSABLE_BUCKETS", False) for grp in self.groups))
        #: The kept sets of buckets (:class:`KeptBuckets`), at most :data:`KEPT_POOLS`.
        self.pools = []
        # NumPy's fast path: each pool has, per leaf, its shaped view of the pool's buckets
        self._numpy = None
        if self._reuse and self.groups and all(getattr(grp[3], "NAME", None) == "numpy" for grp in self.groups):
            import numpy

            self._numpy = numpy
        self._scale = None      # the scale of the last pack, and per leaf that scale as a 0-d array
        self._scales = None
        #: Per leaf, where NumPy's fast path takes it from when unpacking kept buckets: ``"view"``
        #: (its kept view), ``"like"`` (size 0: the caller's leaf) or ``"split"``; None off that path.
        self.sources = None
        if self._numpy is not None:
            self.sources = ["like" if op is None else "view" if len(op[1]) == 1 else "split" for op in self._ops]
        #: Set by the communicator: why ``allreduce_*`` / ``broadcast`` refuse these leaves' dtypes (or None).
        self.refuse_sum = self.refuse_bcast = None

    def _add_check(self, size, treedef, home):
        """Append the check words to bucket 0, or give them a float64 bucket 0 of their own."""
        values = (self.signature, len(self.specs), sum(math.prod(s[0]) for s in self.specs))
        if self.buckets and word_bits(self.buckets[0][1], size) >= MIN_BITS:
            g, dt, start = self.buckets[0]
            ns, dev, _, mod = self.groups[g]
        else:  # a bucket of its own, first: its group is new (reduced alone, before the others)
            ns, dev = (self.groups[0][0], self.groups[0][1]) if self.groups else (home or _numpy_home)()
            mod = _backend_mod(ns)
            g, dt, start = len(self.groups), CHECK_DTYPE, 0
            self.groups.append((ns, dev, dt, mod))
            self.buckets.insert(0, [g, dt, 0])
            self.segments = [[(b + 1, st, a, z) for b, st, a, z in segs] for segs in self.segments]
        text = tree_text(treedef, self.specs) if treedef is not None else f"{len(self.specs)} leaves"
        self.check = Check(dt, size, values, start, ns, dev, mod, text)
        self.buckets[0] = [g, dt, start + self.check.count]

    @property
    def nbytes(self):
        """Total bytes over all buckets."""
        return sum(n * ITEMSIZE[dt] for _, dt, n in self.buckets)

    def describe(self, b):
        """``"bucket 2/3 (float32, 1,048,576 elements)"`` for messages (data elements, not check words)."""
        _, dt, n = self.buckets[b]
        if b == 0 and self.check is not None:
            n -= self.check.count
            if n == 0:
                return f"bucket 1/{len(self.buckets)} ({dt}, check words only)"
        return f"bucket {b + 1}/{len(self.buckets)} ({dt}, {n:,} elements)"

    def empty(self, kept=False):
        """Freshly allocated, uninitialised buckets (receive buffers).

        For a set the plan will keep (``kept=True``), a backend with
        ``comm_empty(n, dtype name)`` allocates them (NumPy: large buckets on
        huge pages, which MPI reduces faster); otherwise ``ns.empty`` on the
        group's device.
        """
        out = []
        for g, dt, n in self.buckets:
            ns, dev, _, mod = self.groups[g]
            make = getattr(mod, "comm_empty", None) if kept else None
            out.append(make(n, dt) if make is not None else ns.empty((n,), dtype=getattr(ns, dt), device=dev))
        return out

    @staticmethod
    def _refcounts(bufs):
        return [sys.getrefcount(b) for b in bufs]

    def free_pool(self):
        """A kept set of buckets that nothing else refers to (None where buckets are not reusable).

        The first free one in the order they were made; when every kept set
        is held by results still in use, a new set is made and, beyond
        :data:`KEPT_POOLS`, replaces the oldest (whose holders keep it alive
        as long as they need it).  Two sets serve a loop that keeps the
        previous step's result while reducing the next.
        """
        if not self._reuse:
            return None
        for pool in self.pools:
            if self._refcounts(pool.bufs) == pool.refs:
                return pool
        bufs = self.empty(kept=True)
        views = self._leaf_views(bufs) if self._numpy is not None else None
        chk = self.check
        words = bufs[0][chk.start:chk.stop] if chk is not None and views is not None else None
        # the baseline: the set's own views only (a view's ``base`` is the bucket itself)
        pool = KeptBuckets(bufs, views, self._refcounts(bufs), words)
        if len(self.pools) >= KEPT_POOLS:
            del self.pools[0]
        self.pools.append(pool)
        return pool

    def buffers(self):
        """Buckets to fill: a free kept set (see :meth:`free_pool`), else fresh ones.

        Returns a new list (the caller may replace its items).
        """
        pool = self.free_pool()
        return list(pool.bufs) if pool is not None else self.empty()

    def _leaf_views(self, bufs):
        views = []
        for i, op in enumerate(self._ops):
            if op is None or len(op[1]) != 1:
                views.append(None)
                continue
            b, start, a, z, _, _ = op[1][0]
            views.append(bufs[b][start:start + (z - a)].reshape(self.specs[i][0]))
        return views

    def _leaf_scales(self, scale, views):
        if scale != self._scale:
            np = self._numpy
            self._scales = [None if v is None else np.asarray(scale, dtype=v.dtype) for v in views]
            self._scale = scale
        return self._scales

    def pack(self, leaves, scale=1, plain=False):
        """Buckets holding ``leaf * scale`` for every leaf (one pass per piece).

        The backend's ``scale_into`` fuses the copy and the scaling where it
        has one (NumPy, CuPy); otherwise a slice assignment does it.
        ``plain=True`` says no leaf is a :class:`Tracer` (nothing to unbox).
        """
        pool = self.pack_kept(leaves, scale, plain)
        if pool is not None:
            return list(pool.bufs)
        bufs = self.buffers()
        for x, op in zip(leaves, self._ops):
            if op is not None:
                self._pack_leaf(bufs, x, op, scale)
        if self.check is not None:
            self.check.write(bufs[0])
        return bufs

    def pack_kept(self, leaves, scale=1, plain=False):
        """Pack into a free kept set of buckets (see :meth:`free_pool`) on NumPy's fast path.

        The fast path of a collective on a compiled structure: no bucket list
        is made.  Returns the set, or None (nothing touched) off NumPy's fast
        path; the caller then uses :meth:`pack`.
        """
        pool = self.free_pool()
        if pool is None or pool.views is None:
            return None
        self._pack_views(pool, leaves, scale, plain)
        return pool

    def _pack_views(self, pool, leaves, scale, plain):
        np = self._numpy
        bufs, views = pool.bufs, pool.views
        if pool.words is not None:  # NOTE [check words]: this rank's, unscaled
            np.copyto(pool.words, self.check.array)
        if not plain:
            leaves = [full_unbox(x) if isinstance(x, Tracer) else x for x in leaves]
        if pool.all_views:  # every leaf has its view: one ufunc call each, nothing to test
            if scale == 1:
                copyto = np.copyto
                for x, v in zip(leaves, views):
                    copyto(v, x)
            else:
                multiply = np.multiply
                for x, v, s in zip(leaves, views, self._leaf_scales(scale, views)):
                    multiply(x, s, out=v)
            return
        if scale == 1:
            copyto = np.copyto
            for x, v, op in zip(leaves, views, self._ops):
                if v is not None:
                    copyto(v, x)
                elif op is not None:
                    self._pack_leaf(bufs, x, op, scale)
        else:
            multiply = np.multiply
            for x, v, s, op in zip(leaves, views, self._leaf_scales(scale, views), self._ops):
                if v is not None:
                    multiply(x, s, out=v)
                elif op is not None:
                    self._pack_leaf(bufs, x, op, scale)

    @staticmethod
    def _pack_leaf(bufs, x, op, scale):
        if isinstance(x, Tracer):
            x = full_unbox(x)
        reshape, segs = op
        flat = reshape(x, (-1,))
        for b, start, a, z, whole, into in segs:
            src = flat if whole else flat[a:z]
            if into is not None:
                into(bufs[b], start, src, scale)
            else:
                bufs[b][start:start + (z - a)] = src if scale == 1 else src * scale

    def unpack(self, bufs, like):
        """Leaves rebuilt from ``bufs``; ``like`` gives the size-0 leaves back as they were.

        A leaf that lies in one bucket is a reshaped view of it (no copy); a
        leaf split across buckets is concatenated from its pieces.  Each call
        returns new array objects (views), never the plan's own views.
        """
        views = self.kept_views(bufs)
        if views is not None:
            return [v.view() if v is not None else self._unpack_leaf(bufs, i, like)
                    for i, v in enumerate(views)]
        return [self._unpack_leaf(bufs, i, like) for i in range(len(self._ops))]

    def kept_views(self, bufs):
        """The per-leaf views of the kept set whose buckets ``bufs`` are, else None."""
        for pool in self.pools:
            kept = pool.bufs
            if pool.views is not None and len(bufs) == len(kept) and all(a is b for a, b in zip(bufs, kept)):
                return pool.views
        return None

    def _unpack_leaf(self, bufs, i, like):
        op = self._ops[i]
        if op is None:
            return like[i]
        reshape, segs = op
        if len(segs) == 1:
            b, start, a, z, _, _ = segs[0]
            flat = bufs[b][start:start + (z - a)]
        else:
            ns = self.groups[self.buckets[segs[0][0]][0]][0]
            flat = ns.concat([bufs[b][start:start + (z - a)] for b, start, a, z, _, _ in segs])
        return reshape(flat, self.specs[i][0])


#: Kept sets of buckets per plan: one for a loop that drops each result before the next
#: collective, a second for one that still holds the previous result.
KEPT_POOLS = 2


class KeptBuckets:
    """One set of buckets a :class:`BucketPlan` keeps and refills.

    Attributes
    ----------
    bufs : list of arrays
        The buckets, one per entry of ``plan.buckets``.
    views : list of (array or None) or None
        NumPy's fast path: per leaf, its shaped view of ``bufs`` (None for a
        size-0 or split leaf); None elsewhere.
    all_views : bool
        Every leaf has its view.
    refs : list of int
        The buckets' reference counts when nothing but this set refers to
        them: the set is free when they are back to these.
    words : array or None
        NumPy's fast path: the view of bucket 0 that holds the check words.
    """

    __slots__ = ("bufs", "views", "all_views", "refs", "words")

    def __init__(self, bufs, views, refs, words=None):
        self.bufs, self.views, self.refs, self.words = bufs, views, refs, words
        self.all_views = views is not None and all(v is not None for v in views)
