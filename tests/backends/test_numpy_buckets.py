"""backends/numpy.py's buckets for gpuad.distributed: huge pages, alignment, view bookkeeping."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuad._backend import backend_module

numpy_backend = backend_module("numpy")
HUGEPAGE = 2 * 1024 * 1024
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _hugepage_kb(addr):
    """AnonHugePages (kB) of the mapping of this process that holds ``addr``."""
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path("/proc/self/smaps").read_text()):
        lo, hi = (int(v, 16) for v in block.split(None, 1)[0].split("-"))
        if lo <= addr < hi:
            return int(re.search(r"^AnonHugePages:\s+(\d+) kB", block, re.M).group(1))
    raise AssertionError(f"no mapping holds {addr:#x}")


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_HUGEPAGE"), reason="no MADV_HUGEPAGE on this platform")
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "int32"])
def test_large_bucket_is_aligned_and_owns_its_views(dtype):
    n = (3 * HUGEPAGE) // np.dtype(dtype).itemsize + 7   # spans four huge pages
    b = numpy_backend.comm_empty(n, dtype)
    assert isinstance(b, np.ndarray) and b.shape == (n,) and b.dtype == np.dtype(dtype)
    assert b.flags.c_contiguous and b.flags.writeable
    assert b.ctypes.data % HUGEPAGE == 0
    assert not isinstance(b.base, np.ndarray)   # the bucket is the base of its views ...
    before = sys.getrefcount(b)
    v = b[5:17].reshape(3, 4).view()
    with_view = sys.getrefcount(b)                # (counted outside ``assert``: pytest keeps operands)
    del v
    after = sys.getrefcount(b)
    assert (with_view, after) == (before + 1, before)  # ... so a live view keeps it referenced
    b[:] = 3                                      # the whole bucket is usable memory
    assert b[-1] == 3 and b[0] == 3
    assert numpy_backend.comm_buffer(b) is b


def test_small_bucket_and_opt_out_are_plain_numpy(monkeypatch):
    small = numpy_backend.comm_empty(10, "float64")
    assert small.base is None and small.shape == (10,)
    monkeypatch.setenv("GPUAD_DIST_HUGEPAGES", "0")
    big = numpy_backend.comm_empty(HUGEPAGE, "float32")
    assert big.base is None and big.shape == (HUGEPAGE,)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and THP.exists()
                         and re.search(r"\[(always|madvise)\]", THP.read_text())),
                    reason="transparent huge pages are not enabled for madvise on this machine")
def test_large_bucket_is_backed_by_huge_pages():
    b = numpy_backend.comm_empty(HUGEPAGE // 4, "float32")   # exactly one huge page
    b[:] = 1                                                 # fault it in
    assert _hugepage_kb(b.ctypes.data) >= 2048
