"""gpuad benchmarks.  ``python -m bench`` runs them (see ``bench/__main__.py``).

Nothing here imports numpy at package import time, so ``__main__`` can pin the
BLAS/OpenMP thread counts before numpy loads.
"""
