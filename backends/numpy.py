"""NumPy backend: the CPU default."""

from __future__ import annotations

NAME = "numpy"
#: Every NumPy array is on the CPU: gpuad skips device comparisons between them.
SINGLE_DEVICE = True
#: NumPy arrays are in host memory: reading a value never waits for a device.
HOST_VALUES = True


def version():
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def probe():
    """``(True, reason)`` when NumPy imports; never raises."""
    v = version()
    if v is None:
        return False, "numpy is not installed"
    return True, f"NumPy {v} on the CPU"


def namespace():
    import array_api_compat.numpy as xp

    return xp


def owns(ns):
    return ns.__name__ == "array_api_compat.numpy"


def devices():
    return ["cpu"]


def memory_stats():
    """NumPy has no pool; host memory is not tracked here."""
    return {}


def buffer_of(x):
    """``(key, nbytes, owner)`` of the memory block that array ``x`` lives in.

    Views are followed through ``.base`` to the object that owns the data:
    an ndarray, or a foreign buffer under ``np.frombuffer`` (through the
    memoryview to its ``bytearray``/``mmap``/``bytes``) or ``as_strided``
    (through its interface object to the array it strides over).  Two views
    of one block report the same key (``id`` of the owner) and the owner's
    full size.  ``owner`` is the object to watch (weakref, where it allows
    one) for the block's release.  Used by ``gpuad.memory`` to count an
    aliased buffer once.
    """
    import numpy

    arr = x
    while isinstance(getattr(arr, "base", None), numpy.ndarray):
        arr = arr.base
    owner, nbytes = arr, int(arr.nbytes)
    foreign = arr.base
    for _ in range(32):  # a foreign chain: interface objects, memoryviews, the buffer itself
        if foreign is None:
            break
        owner = foreign
        if isinstance(foreign, numpy.ndarray):
            while isinstance(getattr(owner, "base", None), numpy.ndarray):
                owner = owner.base
            nbytes = int(owner.nbytes)
            foreign = owner.base
            continue
        if isinstance(foreign, memoryview):
            nbytes = max(nbytes, foreign.nbytes)
            foreign = foreign.obj
            continue
        try:
            with memoryview(foreign) as view:
                nbytes = max(nbytes, view.nbytes)
        except TypeError:
            pass
        foreign = getattr(foreign, "base", None)
    return id(owner), nbytes, owner


def register_overrides(ns):
    import numpy

    from gpuad._registry import override

    def index_add(xp, base, values, *, key):
        out = numpy.array(base, copy=True)
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, numpy.ndarray) and k.dtype.kind in "iu" for k in parts):
            # np.add.at accumulates repeated indices, which plain setitem would not.
            numpy.add.at(out, key, values)
        else:
            # Slices, ints and masks never repeat an element; += is exact and
            # far faster than the unbuffered np.add.at.
            out[key] += values
        return out

    override("index_add", ns, index_add)


# --- host transfer and files (gpuad.serialization) ----------------------------
def to_numpy(x):
    """A NumPy array with ``x``'s values (no copy when ``x`` already is one)."""
    import numpy

    return numpy.asarray(x)


def from_numpy(a, device=None):
    """``a`` as an array of this backend (NumPy: the array itself)."""
    import numpy

    return numpy.asarray(a)


def save_npz(path, arrays, metadata=None):
    """Write a dict ``name -> NumPy array`` (and a ``metadata`` string) to ``path``.

    The file is an uncompressed ``.npz``; ``metadata`` goes in the entry
    ``__metadata__`` as a 0-d unicode array.  Names must be non-empty
    strings without NUL that ``numpy.savez`` does not take as
    its own keywords (``file``, ``allow_pickle``) and that do not end in
    ``.npy`` (``numpy.load`` strips it), so every entry reads back under its
    own name; ``gpuad.serialization`` passes ``arr_0000``, ``arr_0001``, ...

    The write goes to a temporary file first and is renamed into place, so an
    interrupted save never leaves a truncated file under ``path``.
    """
    import os

    import numpy

    arrays = dict(arrays)
    for name in arrays:
        if (not isinstance(name, str) or not name or "\x00" in name or name.endswith(".npy")
                or name in ("file", "allow_pickle", "__metadata__")):
            raise ValueError(f"save_npz: {name!r} cannot name an .npz entry of {path!r}")
    if metadata is not None:
        arrays["__metadata__"] = numpy.asarray(metadata)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            numpy.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_npz(path):
    """Read an ``.npz``: ``(dict name -> NumPy array, metadata string or None)``.

    Raises
    ------
    EOFError
        For an empty file.
    ValueError
        For a file that is not a zip archive (a ``.npy`` array, a pickle, a
        truncated file) or an archive NumPy cannot read; object arrays are
        never unpickled.
    """
    import numpy

    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError("it is a .npy file (a single array), not an .npz archive")
    if not head:
        raise EOFError("the file is empty")
    if not head.startswith(b"PK"):
        raise ValueError("it is not a zip archive, which an .npz file is")
    z = numpy.load(path, allow_pickle=False)
    if not hasattr(z, "files"):  # pragma: no cover - a zip is always opened as an NpzFile
        raise ValueError(f"numpy.load returned a {type(z).__name__}, not an .npz archive")
    with z:
        arrays = {k: z[k] for k in z.files}
    meta = arrays.pop("__metadata__", None)
    return arrays, (str(meta[()]) if meta is not None and meta.ndim == 0 else None)


# --- collectives (gpuad.distributed) ------------------------------------------
#: A NumPy view keeps its base array referenced (``.base`` is the array that
#: owns the memory), so while any view of a bucket lives, the bucket's
#: reference count stays raised: gpuad.distributed reuses a bucket for the
#: next collective only once it is back to its baseline (warm memory, no page
#: faults).
REUSABLE_BUCKETS = True


def comm_buffer(x):
    """``x`` as a buffer MPI reads and writes in place: the C-contiguous ndarray itself.

    gpuad's collectives pass only the flat buckets they allocate, so no copy
    is ever needed; mpi4py takes them through the buffer protocol (no pickle).
    """
    import numpy

    if not (isinstance(x, numpy.ndarray) and x.flags.c_contiguous and x.flags.writeable):
        raise ValueError("comm_buffer: expected a writeable C-contiguous NumPy array")
    return x


def scale_into(buf, start, src, scale):
    """``buf[start:start + n] = src * scale`` in one pass (``src`` 1-D of size ``n``).

    ``scale == 1`` is a plain copy; otherwise ``numpy.multiply`` writes the
    product straight into the bucket, so packing and averaging share a pass.
    """
    import numpy

    dst = buf[start:start + src.shape[0]]
    if scale == 1:
        numpy.copyto(dst, src)
    else:
        numpy.multiply(src, scale, out=dst)


#: Buckets of at least this many bytes are placed on transparent huge pages
#: (see :func:`comm_empty`); ``GPUAD_DIST_HUGEPAGES=0`` turns that off.
HUGEPAGE_MIN_BYTES = 256 * 1024
_HUGEPAGE = 2 * 1024 * 1024


def comm_empty(n, dtype_name):
    """An uninitialised 1-D bucket of ``n`` elements for gpuad.distributed's collectives.

    From :data:`HUGEPAGE_MIN_BYTES` up (on Linux), the bucket starts on a
    2 MiB boundary of a private anonymous mapping advised ``MADV_HUGEPAGE``,
    so the kernel backs it with transparent huge pages where it allows them
    (``/sys/kernel/mm/transparent_hugepage/enabled`` ``always`` or
    ``madvise``).  MPI reduces such a bucket markedly faster than one on
    4 KiB pages (measured with MPICH between two processes on one machine:
    0.6-0.7x the time of an in-place ``Allreduce`` from 256 KB to 4 MB).  The
    cost: physical memory is taken in 2 MiB pages, so a bucket holds at most
    2 MiB more than its size; the slack used for alignment is never touched.
    Smaller buckets, other systems, and ``GPUAD_DIST_HUGEPAGES=0`` get
    ``numpy.empty``.

    The bucket owns its memory as far as NumPy views are concerned (its
    ``base`` is the mapping, not an array), so views of it keep the bucket
    itself referenced, as :data:`REUSABLE_BUCKETS` requires.
    """
    import numpy

    dtype = numpy.dtype(dtype_name)
    nbytes = n * dtype.itemsize
    if nbytes < HUGEPAGE_MIN_BYTES or not _hugepages_enabled():
        return numpy.empty((n,), dtype=dtype)
    import mmap

    span = -(-nbytes // _HUGEPAGE) * _HUGEPAGE
    try:
        mm = mmap.mmap(-1, span + _HUGEPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError):  # pragma: no cover - out of address space or mapping refused
        return numpy.empty((n,), dtype=dtype)
    start = numpy.frombuffer(mm, numpy.uint8, count=1).__array_interface__["data"][0]
    offset = -start % _HUGEPAGE
    try:
        mm.madvise(mmap.MADV_HUGEPAGE, offset, span)
    except OSError:  # pragma: no cover - a kernel without THP: plain pages, still correct
        pass
    return numpy.frombuffer(mm, dtype=dtype, count=n, offset=offset)


def _hugepages_enabled():
    import mmap
    import os

    if os.environ.get("GPUAD_DIST_HUGEPAGES", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return all(hasattr(mmap, name) for name in ("MADV_HUGEPAGE", "MAP_PRIVATE", "MAP_ANONYMOUS"))
