"""Data sets for ``gpuad train``, moved onto a backend's device.

Only small data sets that ship inside installed packages are used, so
training needs no network.  The loaders import their packages lazily and
raise :class:`MissingDependency` (naming the extra to install) when one is
absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._backend import backend_module

__all__ = ["MissingDependency", "Split", "load_digits", "require", "batches"]

#: The fixed train/test split of the digits: sklearn's ``train_test_split``
#: with this seed, stratified by label.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def require(module, extra="train", package=None):
    """Import ``module`` or raise :class:`MissingDependency` naming ``pip install 'gpuad[extra]'``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = package or module
        raise MissingDependency(
            f"the optional dependency {pkg!r} is not installed; install it with: pip install 'gpuad[{extra}]'"
        ) from None


@dataclass
class Split:
    """A train/test split on one backend and device.

    Attributes
    ----------
    x_train, x_test : arrays, shape ``(N, 1, 8, 8)``, floating, values in ``[0, 1]``
    y_train, y_test : int64 arrays, shape ``(N,)``
    num_classes : int
    """

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    num_classes: int


def load_digits(backend="numpy", device=None, dtype="float32"):
    """scikit-learn's 8x8 handwritten digits (1,797 images), split 80/20.

    Parameters
    ----------
    backend : {"numpy", "cupy", "array_api_strict"}
    device : device of that backend, optional
    dtype : {"float32", "float64"}

    Returns
    -------
    Split
        1,437 training and 360 test images of shape ``(1, 8, 8)`` scaled to
        ``[0, 1]``; the split is fixed (stratified, seed
        :data:`DIGITS_SPLIT_SEED`), so every run and backend sees the same
        images.
    """
    datasets = require("sklearn.datasets", package="scikit-learn")
    model_selection = require("sklearn.model_selection", package="scikit-learn")
    d = datasets.load_digits()
    x = (d.data / 16.0).astype(dtype).reshape(-1, 1, 8, 8)
    y = d.target.astype("int64")
    xtr, xte, ytr, yte = model_selection.train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y)
    mod = backend_module(backend)
    put = lambda a: mod.from_numpy(a, device)  # noqa: E731
    return Split(put(xtr), put(ytr), put(xte), put(yte), 10)


def batches(n, batch_size, perm=None):
    """Index arrays (or slices) covering ``range(n)`` in batches.

    Parameters
    ----------
    n : int
    batch_size : int
    perm : integer array of shape ``(n,)``, optional
        A permutation on the device; the batches are its consecutive slices.

    Returns
    -------
    list of slices (no ``perm``) or integer arrays of shape ``(<= batch_size,)``
    """
    out = []
    for i in range(0, n, batch_size):
        sl = slice(i, min(i + batch_size, n))
        out.append(sl if perm is None else perm[sl])
    return out
