"""The cross-rank structure check: a few check words carried in the data of every collective.

# NOTE [check words]: every collective of a multi-rank communicator carries,
# at the end of its first bucket, a few *check words*: integers that encode
# this rank's plan (a hash of the tree structure, dict keys, leaf shapes,
# dtypes and bucket size; the number of leaves; the number of elements).  They
# are packed with the data (unscaled), reduced with it by the same call, and
# compared afterwards: a sum must be ``size * word`` for every word, a
# broadcast must deliver the receiver's own words.  There is no collective of
# its own, so every rank runs the same sequence of collectives whether or not
# its plan came from a cache (ranks cannot disagree on "hit or miss" and wait
# in different calls), and the hot path pays a few element copies and one
# comparison.  Words are integers from 0 to ``2**bits`` with ``size *
# 2**bits`` exactly representable in the bucket's dtype (``word_bits``), so
# the sums are exact in any order; if every rank saw ``sum == size * c_i``,
# all the ``c_i`` would be equal, so when the plans differ at least one rank
# sees a mismatch and raises :class:`DistributedError` (with two ranks, both
# do); MPI's abort-on-error ends the others.  A dtype that cannot carry
# ``MIN_BITS`` per word at this size (int8 on two ranks, bool) and a tree
# without elements get a float64 bucket of their own, reduced first.  The
# check is done right after the first bucket's collective, before buckets
# whose sizes may differ between the ranks are exchanged; when even the first
# buckets differ in size, MPI reports a truncated message or the words come
# back wrong (the transports say so; the local group compares the buffers).
"""

from __future__ import annotations

import hashlib

__all__ = ["Check", "word_bits", "structure_text", "leaf_paths", "tree_text", "MIN_BITS", "CHECK_DTYPE"]

#: Fewest code bits per word worth carrying in a bucket's own dtype; below, a bucket of its own.
MIN_BITS = 8
#: The dtype of that bucket of its own.
CHECK_DTYPE = "float64"
#: What the words encode, and how many bits of each: the number of words depends only on the
#: bucket's dtype and the number of ranks, so equal buckets have equal layouts.  A last word,
#: the same on every rank (``sentinel``), ends bucket 0: a sum that is not ``size`` times it
#: means the words were not summed in step (the buckets differ in size), so nothing is decoded.
FIELDS = (("structure", 40), ("leaves", 32), ("elements", 48))

# significand bits (integers up to 2**p are exact) and value bits of signed / unsigned integers
_FLOAT_BITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53, "complex64": 24, "complex128": 53}
_INT_BITS = {"int8": 7, "int16": 15, "int32": 31, "int64": 63, "uint8": 8, "uint16": 16, "uint32": 32,
             "uint64": 64}


def word_bits(dtype, size):
    """Code bits one element of ``dtype`` carries so that ``size`` times a word is exact (0: none).

    Parameters
    ----------
    dtype : str
        The bucket's dtype name.
    size : int
        The number of ranks.

    Returns
    -------
    int
        ``bits`` with ``size * 2**bits`` exactly representable (floats: within
        the significand; integers: without overflow).
    """
    if dtype in _FLOAT_BITS:
        top = 2 ** _FLOAT_BITS[dtype]
    elif dtype in _INT_BITS:
        top = 2 ** _INT_BITS[dtype] - 1
    else:
        return 0
    return max(0, (top // max(1, size)).bit_length() - 1)


# --- describing a tree ------------------------------------------------------------------
def _key_text(k):
    """A dict key as text that is the same in every process (no object addresses)."""
    if k is None or isinstance(k, (str, bytes, bool, int, float)):
        return f"{type(k).__name__}:{k!r}"
    if type(k) is tuple:
        return "(" + ",".join(_key_text(x) for x in k) + ")"
    return f"<{type(k).__module__}.{type(k).__qualname__}>"


def structure_text(td):
    """The tree structure (containers, dict keys, namedtuple classes) as process-independent text."""
    kind = td.kind
    if kind == "leaf":
        return "*"
    if kind == "none":
        return "N"
    inner = ",".join(structure_text(c) for c in td.children)
    if kind == "dict":
        return "{" + ",".join(f"{_key_text(k)}={structure_text(c)}" for k, c in zip(td.keys, td.children)) + "}"
    if kind == "namedtuple":
        cls = td.keys
        return f"{cls.__module__}.{cls.__qualname__}{tuple(cls._fields)}({inner})"
    return ("(" if kind == "tuple" else "[") + inner + (")" if kind == "tuple" else "]")


def leaf_paths(td):
    """Each leaf's path from the root, in flattening order: ``"['w'][0]"``, ``"<root>"`` for a bare leaf."""
    out = []

    def walk(node, path):
        if node.kind == "leaf":
            out.append(path or "<root>")
        elif node.kind != "none":
            for j, c in enumerate(node.children):
                step = f"[{node.keys[j]!r}]" if node.kind == "dict" else (
                    f".{node.keys._fields[j]}" if node.kind == "namedtuple" else f"[{j}]")
                walk(c, path + step)

    walk(td, "")
    return out


def tree_text(td, specs, limit=160):
    """``{'b': float32[4], 'w': float32[3, 4]}``: the tree with each leaf's dtype and shape (shortened)."""
    it = iter(specs)

    def walk(node):
        kind = node.kind
        if kind == "leaf":
            shape, dt, _ = next(it)
            return f"{dt}[{', '.join(map(str, shape))}]"
        if kind == "none":
            return "None"
        items = [walk(c) for c in node.children]
        if kind == "dict":
            return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(node.keys, items)) + "}"
        if kind == "namedtuple":
            return f"{node.keys.__name__}({', '.join(items)})"
        if kind == "tuple":
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"

    text = walk(td)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def signature_of(td, specs, bucket_bytes):
    """A 64-bit hash of the structure, dict keys, leaf shapes and dtypes, and the bucket size."""
    text = repr((structure_text(td) if td is not None else None, [(s[0], s[1]) for s in specs], bucket_bytes))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


# --- the words ----------------------------------------------------------------------------
class Check:
    """The check words of one plan (NOTE [check words]).

    Parameters
    ----------
    dtype : str
        Dtype of the bucket that carries them (bucket 0).
    size : int
        Number of ranks.
    values : tuple of int
        ``(structure hash, leaves, elements)``, one per entry of :data:`FIELDS`.
    start : int
        Offset of the first word in bucket 0.
    ns, device, mod
        Namespace, device and gpuad backend module of bucket 0.
    describe : str
        This rank's tree, for messages.

    Attributes
    ----------
    count : int
        Number of words.
    words : list of int
        This rank's words.
    array, zeros : arrays
        The words, and as many zeros, on bucket 0's device (what packing writes).
    sent, summed : bytes
        What a received broadcast and a sum must read back as.
    read : callable
        ``read(buf) -> bytes``: the words of bucket 0 ``buf`` (from the device, for CuPy).
    """

    def __init__(self, dtype, size, values, start, ns, device, mod, describe=""):
        self.dtype, self.size, self.start, self.mod = dtype, size, start, mod
        self.values, self.describe = tuple(values), describe
        self.bits = bits = word_bits(dtype, size)
        if bits < 1:  # pragma: no cover - callers choose a dtype with room
            raise ValueError(f"check words: dtype {dtype} cannot carry a word for {size} ranks")
        self.layout = []
        words = []
        for (name, fbits), value in zip(FIELDS, self.values):
            k = -(-fbits // bits)
            self.layout.append((name, len(words), k))
            for j in range(k):
                chunk = (value >> (bits * j)) & ((1 << bits) - 1)
                words.append(chunk + 1 if name == "structure" else chunk)  # structure words are never 0
        self.sentinel = ((1 << bits) - 1) // 3 * 2 + 1  # 0b1010...11: never 0, rarely a data value
        words.append(self.sentinel)
        self.words = words
        self.count = len(words)
        self.stop = start + self.count
        dt = getattr(ns, dtype)
        self.array = ns.asarray(words, dtype=dt, device=device)
        self.zeros = ns.zeros((self.count,), dtype=dt, device=device)
        self.sent = self._bytes(self.array)
        self.summed = self._bytes(ns.asarray([size * w for w in words], dtype=dt, device=device))
        s, e = self.start, self.stop
        if getattr(mod, "NAME", None) in ("numpy", "cupy"):  # ndarray.tobytes (CuPy: a copy to the host)
            self.read = lambda buf: buf[s:e].tobytes()
        else:
            self.read = lambda buf: self._bytes(buf[s:e])

    def _bytes(self, x):
        return self.mod.to_numpy(x).tobytes()

    def write(self, buf):
        """Put this rank's words into bucket 0 (``buf``)."""
        buf[self.start:self.stop] = self.array

    def clear(self, buf):
        """Zero the words of ``buf`` (a receive buffer): stale words can never pass for received ones."""
        buf[self.start:self.stop] = self.zeros

    # --- what a mismatch says -----------------------------------------------------------
    def _decode(self, vals, received):
        """Per field, ``(the other ranks' total, whether it could be read)`` from the words read back."""
        others = max(1, self.size - 1)
        out = {}
        for name, first, k in self.layout:
            total, ok = 0, True
            for j in range(k):
                v = vals[first + j]
                v = v.real if isinstance(v, complex) else v
                if not (v == v and abs(v) != float("inf") and float(v).is_integer()):
                    ok = False
                    break
                v = int(v)
                if received:  # the root's own words
                    chunk, hi = v - (1 if name == "structure" else 0), (1 << self.bits) - 1
                else:  # the other ranks' words, summed
                    chunk = v - self.words[first + j] - (others if name == "structure" else 0)
                    hi = others * ((1 << self.bits) - 1)
                if not 0 <= chunk <= hi:
                    ok = False
                    break
                total += chunk << (self.bits * j)
            out[name] = (total, ok)
        return out

    def message(self, op, rank, buf, root=None):
        """What a :class:`DistributedError` says when bucket 0 (``buf``) came back with other words.

        Parameters
        ----------
        op : str
        rank : int
        buf : array
            Bucket 0 after the collective.
        root : int, optional
            For a broadcast: the root whose words were received.
        """
        n, received = self.size, root is not None
        _, leaves, elements = self.values
        vals = None
        try:
            vals = self.mod.to_numpy(buf[self.start:self.stop]).tolist()
            last = vals[-1].real if isinstance(vals[-1], complex) else vals[-1]
            if last != self.sentinel * (1 if received else n):
                vals = None
        except Exception:  # noqa: BLE001 - a message about a broken state must not fail itself
            vals = None
        mine = f"{_count(leaves, 'leaf', 'leaves')}, {_count(elements, 'element')}: {self.describe}"
        head = (f"{op}: rank {rank} of {n}: the ranks passed pytrees of different structure, shapes or dtypes "
                f"(every rank must pass the same structure, dict keys, leaf shapes and dtypes). This rank: {mine}")
        try:
            dec = self._decode(vals, received) if vals is not None else {}
        except Exception:  # noqa: BLE001 - as above
            dec = {}
        if not dec or not all(ok for _, ok in dec.values()):
            who = f"rank {root}'s" if received else "the other ranks'"
            return (f"{head}; {who} check words do not decode, so their first bucket differs in size or dtype "
                    f"from this rank's ({self.dtype}, {self.start:,} elements + {self.count} check words)")
        div = 1 if received else max(1, n - 1)
        who = (f"rank {root} (the root)" if received else "the other rank" if n == 2
               else f"the other {n - 1} ranks (on average)")
        o_leaves, o_elems = dec["leaves"][0] / div, dec["elements"][0] / div
        fmt = (lambda v: f"{v:,.0f}") if div == 1 else (lambda v: f"{v:,.4g}")
        other = f"{_count(o_leaves, 'leaf', 'leaves', fmt)}, {_count(o_elems, 'element', fmt=fmt)}"
        if (o_leaves, o_elems) == (leaves, elements):
            other += " (the same numbers: the structure, dict keys, shapes, dtypes or bucket_mb differ)"
        return f"{head}; {who}: {other}"


def _count(n, one, many=None, fmt=None):
    """``"1 leaf"``, ``"2 leaves"``, ``"1,024 elements"``."""
    text = fmt(n) if fmt is not None else f"{n:,}"
    return f"{text} {one if n == 1 else many or one + 's'}"
