"""``python -m bench``: run the gpuad benchmarks and write their results.

Results go to ``bench/results/`` (gitignored) as JSON and a markdown table;
``--record`` also rewrites ``bench/RESULTS.md`` with the table, the command
and the machine.  Thread pools are pinned to one thread (unless already set)
before numpy is imported, and the settings are reported.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402

from .overhead import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
