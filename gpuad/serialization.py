"""Save pytrees of arrays (parameters, optimiser state) to ``.npz`` and load them back.

``save(path, tree)`` copies every array to the host through its backend's
``to_numpy`` (array-api-strict devices: ``to_device(CPU)``; CuPy: ``.get()``)
and writes one ``.npz`` entry per array, named by the array's index in the
tree's depth-first order (``arr_0000``, ``arr_0001``, ...); the tree's
structure, dict keys included, goes in the entry ``__metadata__`` as JSON.
So no dict key can collide with another entry or reach ``numpy.savez`` as a
keyword, and the file opens with plain ``numpy.load`` too.  Files of the earlier format ``gpuad-pytree-1`` (entries
named by their path in the tree) still load.

``load(path, like=..., backend=..., device=...)`` rebuilds the tree on any
backend and device, whichever one saved it::

    gpuad.serialization.save("run.npz", {"params": params, "opt": opt_state})
    tree = gpuad.serialization.load("run.npz", backend="cupy")

Supported nodes: dicts with string keys (without ``"/"``, the separator of
the paths that error messages give; an array may not sit under the top-level
key ``"__metadata__"``), lists, tuples (namedtuples come back as
plain tuples), ``None``; leaves are arrays of a numeric or boolean dtype
(:data:`ARRAY_DTYPES`) or Python ``bool``, ``int``, ``float``, ``str``.
"""

from __future__ import annotations

import json
import os

from ._backend import BACKENDS, backend_module, get_backend, namespace_of
from ._dtypes import dtype_name

__all__ = ["save", "load", "FORMAT", "ARRAY_DTYPES"]

#: Written into every file; :func:`load` reads this and the formats in ``_READABLE``, and refuses others.
FORMAT = "gpuad-pytree-2"
#: ``gpuad-pytree-1`` named each entry by its path in the tree; the metadata is the same.
_READABLE = ("gpuad-pytree-1", FORMAT)
#: The ``.npz`` entry that holds the structure (see ``backends/numpy.py``).
_META = "__metadata__"
#: The array dtypes :func:`save` writes (strings, dates, records and objects are refused).
ARRAY_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float16", "float32", "float64", "complex64", "complex128")


def _backend_of(x, fname):
    from ._core import full_unbox

    x = full_unbox(x)
    ns = namespace_of((x,), fname)
    for name in BACKENDS:
        mod = backend_module(name)
        if mod.owns(ns):
            return mod, x
    raise TypeError(f"{fname}: no gpuad backend owns arrays of type {type(x).__name__}")


def _encode(tree, path, arrays, fname):
    """The metadata node of ``tree``; its arrays go into ``arrays`` as ``arr_NNNN`` (depth-first order)."""
    if isinstance(tree, dict):
        out = {}
        for k in sorted(tree):
            if not isinstance(k, str) or "/" in k:
                raise TypeError(f"{fname}: dict keys must be strings without '/', got {k!r} at {path or '/'}")
            out[k] = _encode(tree[k], f"{path}/{k}" if path else k, arrays, fname)
        return {"dict": out}
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return {kind: [_encode(v, f"{path}/{i}" if path else str(i), arrays, fname) for i, v in enumerate(tree)]}
    if tree is None:
        return {"none": None}
    if isinstance(tree, (bool, int, float, str)):
        return {"value": tree}
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        mod, x = _backend_of(tree, fname)
        if path == _META:  # kept reserved: the name of the metadata entry in files of format 1
            raise TypeError(f"{fname}: the key {_META!r} at the top of the tree is reserved for the file's metadata")
        dname = dtype_name(x.dtype)
        if dname not in ARRAY_DTYPES:
            what = (f"an object array at {path or '/'} (shape {tuple(x.shape)}; load reads no pickled data)"
                    if dname == "object" else
                    f"the array at {path or '/'} (shape {tuple(x.shape)}): its dtype {x.dtype} is not supported")
            raise TypeError(f"{fname}: cannot save {what}; supported dtypes: {', '.join(ARRAY_DTYPES)}")
        name = f"arr_{len(arrays):04d}"
        arrays[name] = mod.to_numpy(x)
        return {"array": name}
    raise TypeError(f"{fname}: cannot save a {type(tree).__name__} at {path or '/'}")


def save(path, tree):
    """Write a pytree of arrays to ``path`` (an ``.npz`` file).

    Parameters
    ----------
    path : str or os.PathLike
        Written atomically (temporary file, then rename).
    tree : pytree
        Dicts (string keys), lists, tuples and ``None``; leaves are arrays
        of any backend and device, or Python scalars and strings.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    TypeError
        For a leaf or key that cannot be stored (e.g. an array of strings,
        dates or records); the message gives its path and dtype.  Nothing
        is written then.
    """
    target = os.fspath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(f"save: {target!r} is a directory; give a file path such as "
                                f"{os.path.join(target, 'params.npz')!r}")
    parent = os.path.dirname(target) or "."
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"save: the directory {parent!r} of {target!r} does not exist")
    arrays = {}
    spec = _encode(tree, "", arrays, "save")
    meta = json.dumps({"format": FORMAT, "tree": spec})
    backend_module("numpy").save_npz(os.fspath(path), arrays, meta)
    return os.fspath(path)


def _target(like, backend, device, fname):
    if like is not None:
        if not (hasattr(like, "shape") and hasattr(like, "dtype")):
            raise TypeError(f"{fname}: like must be an array (its backend and device are used), "
                            f"got {type(like).__name__}")
        mod, x = _backend_of(like, fname)
        return mod, x.device
    if backend is None:
        return backend_module(get_backend().name), device
    if backend not in BACKENDS:
        raise ValueError(f"{fname}: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    mod = backend_module(backend)
    ok, reason = mod.probe()
    if not ok:  # the message gpuad.set_backend gives (e.g. cupy not installed, or no CUDA device)
        raise RuntimeError(f"{fname}: backend {backend!r} was requested but is not usable: {reason}")
    return mod, device


def _malformed(file, where, what):
    return ValueError(f"load: {file}: malformed metadata ({what}, at {where or '/'})")


def _decode(spec, arrays, mod, device, file, where=""):
    """The subtree that metadata node ``spec`` describes (``where``: its path, for messages)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _malformed(file, where, f"a tree node is {type(spec).__name__} {spec!r:.60}")
    (kind, val), = spec.items()
    sub = (lambda k: f"{where}/{k}" if where else str(k))  # noqa: E731
    if kind == "dict":
        if not isinstance(val, dict):
            raise _malformed(file, where, f"a 'dict' node holds {type(val).__name__} {val!r:.60}")
        return {k: _decode(v, arrays, mod, device, file, sub(k)) for k, v in val.items()}
    if kind in ("list", "tuple"):
        if not isinstance(val, list):
            raise _malformed(file, where, f"a {kind!r} node holds {type(val).__name__} {val!r:.60}")
        items = [_decode(v, arrays, mod, device, file, sub(i)) for i, v in enumerate(val)]
        return items if kind == "list" else tuple(items)
    if kind == "none":
        if val is not None:
            raise _malformed(file, where, f"a 'none' node holds {type(val).__name__} {val!r:.60}")
        return None
    if kind == "value":
        if not isinstance(val, (bool, int, float, str)):
            raise _malformed(file, where, f"a 'value' node holds {type(val).__name__} {val!r:.60}")
        return val
    if kind == "array":
        if not isinstance(val, str):
            raise _malformed(file, where, f"an 'array' node holds {type(val).__name__} {val!r:.60}")
        if val not in arrays:
            raise ValueError(f"load: {file} has no array {val!r} (for {where or '/'})")
        a = arrays[val]
        name = dtype_name(a.dtype)
        if name not in ARRAY_DTYPES or not hasattr(mod.namespace(), name):  # float16 on array_api_strict
            raise TypeError(f"load: {file}: the array {where or '/'!r} (shape {tuple(a.shape)}) has dtype {name}, "
                            f"which the {mod.NAME} backend does not support; load the file with another backend "
                            "(numpy or cupy), or save that leaf in a supported dtype")
        return mod.from_numpy(a, device)
    raise _malformed(file, where, f"unknown node kind {kind!r}")


def load(path, *, like=None, backend=None, device=None):
    """Read a pytree written by :func:`save` onto a backend and device.

    Parameters
    ----------
    path : str or os.PathLike
    like : array, optional
        Put the arrays on this array's backend and device.
    backend : {"numpy", "cupy", "array_api_strict"}, optional
        Used when ``like`` is not given (default: the default backend).
    device : device, optional
        A device of that backend (e.g. ``array_api_strict.Device("device1")``).

    Returns
    -------
    pytree
        The saved structure, arrays with their saved shapes and dtypes.

    Raises
    ------
    RuntimeError
        When ``backend`` is not usable here (e.g. ``"cupy"`` without CuPy or
        a CUDA device); the message says why.
    TypeError
        For an array whose dtype the backend lacks (float16 on
        array-api-strict); the message gives its path in the tree.
    ValueError
        For a file that is not an ``.npz`` archive written by :func:`save`
        (a ``.npy`` file, another archive, malformed metadata); the message
        names the file.
    """
    import zipfile

    mod, dev = _target(like, backend, device, "load")
    try:
        arrays, meta = backend_module("numpy").load_npz(os.fspath(path))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:  # not an .npz we can read
        raise ValueError(f"load: {os.fspath(path)} is not a readable .npz file written by "
                         f"gpuad.serialization.save ({type(e).__name__}: {e})") from e
    try:
        doc = json.loads(meta) if meta is not None else None
    except (ValueError, RecursionError):
        doc = None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if isinstance(fmt, str) and fmt.startswith("gpuad-pytree-") and fmt not in _READABLE:
        raise ValueError(f"load: {os.fspath(path)} has the format {fmt!r}, which this version of gpuad cannot read "
                         f"(it reads {', '.join(_READABLE)}); load it with a newer gpuad")
    if fmt not in _READABLE or "tree" not in doc:
        raise ValueError(f"load: {os.fspath(path)} was not written by gpuad.serialization.save "
                         f"(no {FORMAT!r} metadata)")
    return _decode(doc["tree"], arrays, mod, dev, os.fspath(path))
