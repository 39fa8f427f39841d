"""Packaging: pyproject metadata, and the built wheel installed into a fresh venv.

The wheel tests are marked ``packaging``; CI runs them in a separate bounded
step (``timeout 900 python -m pytest -q -m "packaging or slow"``); pytest.ini
deselects them from the default run.

The fresh venv gets the wheel only (``--no-deps --no-index``); its runtime
dependencies (numpy, array-api-compat) come from the test interpreter's
site-packages through a ``.pth`` file, so the install needs no network.  The
venv's own site-packages comes first on ``sys.path``, and the tests check
that ``gpuad`` is imported from there, not from the checkout.

``test_real_cupy_without_gpu`` also pip-installs ``cupy-cuda12x`` (about
100 MB; set ``GPUAD_SKIP_REAL_CUPY=1`` to skip it, ``GPUAD_REAL_CUPY_PACKAGE``
to pick another wheel) and checks detection against a real CuPy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# -- metadata (fast, part of the default suite) ------------------------------


def _pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_pyproject_lists_every_package():
    cfg = _pyproject()["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {"gpuad"}
    for init in (ROOT / "gpuad").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if "__pycache__" not in rel.parts:
            on_disk.add(".".join(rel.parts))
    on_disk.add("gpuad.backends")
    assert listed == on_disk, f"pyproject [tool.setuptools] packages must be {sorted(on_disk)}"
    assert cfg["package-dir"]["gpuad.backends"] == "backends"
    assert (ROOT / "backends" / "__init__.py").is_file()


def test_pyproject_metadata():
    meta = _pyproject()
    project = meta["project"]
    assert project["name"] == "gpuad"
    assert project["requires-python"] == ">=3.10"
    assert "version" in project["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gpuad.__version__"}
    assert set(project["dependencies"]) == {"numpy", "array-api-compat"}
    extras = project["optional-dependencies"]
    assert extras["cuda12"] == ["cupy-cuda12x"]
    assert extras["cuda13"] == ["cupy-cuda13x"]
    assert {"pytest", "hypothesis", "array-api-strict"} <= set(extras["test"])
    assert project["scripts"] == {"gpuad": "gpuad.cli:main"}


# -- the wheel (marker: packaging) ---------------------------------------------


def _run(cmd, timeout=600, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
        f"stderr:\n{proc.stderr[-4000:]}"
    )
    return proc


def _can_build_without_isolation():
    """setuptools >= 70.1 builds wheels alone; older ones need the ``wheel`` package."""
    try:
        import setuptools
    except ImportError:
        return False
    try:
        major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    except ValueError:
        return False
    if (major, minor) >= (70, 1):
        return True
    if major < 64:
        return False
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
    "results", ".benchmarks", "runs",
)


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory):
    # Build from a copy: a stale build/ in the checkout cannot leak into the wheel,
    # and the checkout is left untouched.
    src = tmp_path_factory.mktemp("src") / "gpuad"
    shutil.copytree(ROOT, src, ignore=_IGNORE)
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    if _can_build_without_isolation():
        cmd.insert(4, "--no-build-isolation")
    _run(cmd)
    wheels = list(dist.glob("gpuad-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv_python(venv):
    return venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")


def _make_venv(where, wheel=None):
    """A fresh venv that sees this interpreter's packages (after its own) and has ``wheel`` installed."""
    _run([sys.executable, "-m", "venv", str(where)])
    py = _venv_python(where)
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    outer = []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths()[key]
        if p not in outer:
            outer.append(p)
    Path(site, "_gpuad_test_outer_site.pth").write_text("\n".join(outer) + "\n")
    if wheel is not None:
        _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return py


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPUAD_BACKEND", "PYTHONHOME")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel_path):
    where = tmp_path_factory.mktemp("venv") / "env"
    return where, _make_venv(where, wheel_path)


@pytest.mark.packaging
def test_wheel_contents(wheel_path):
    with zipfile.ZipFile(wheel_path) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        eps = z.read(entry_points).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for f in ("gpuad/__init__.py", "gpuad/__main__.py", "gpuad/cli.py", "gpuad/backends/__init__.py",
              "gpuad/backends/numpy.py", "gpuad/backends/cupy.py", "gpuad/backends/array_api_strict.py",
              "gpuad/ops/__init__.py", "gpuad/xp/__init__.py"):
        assert f in names, f
    assert not any(n.startswith(("backends/", "tests/", "bench/")) for n in names), sorted(names)
    assert "gpuad = gpuad.cli:main" in eps
    assert wheel_path.name.startswith("gpuad-0.1.0-")
    assert "Requires-Dist: numpy" in metadata and "Requires-Dist: array-api-compat" in metadata
    assert 'cupy-cuda12x; extra == "cuda12"' in metadata
    assert 'cupy-cuda13x; extra == "cuda13"' in metadata


@pytest.mark.packaging
def test_installed_wheel_imports_and_differentiates(venv, tmp_path):
    where, py = venv
    script = tmp_path / "check_install.py"
    script.write_text(textwrap.dedent(f"""
        import json, os
        import numpy as np
        import gpuad
        import gpuad.backends.numpy as nb
        from gpuad import xp

        here = os.path.realpath(gpuad.__file__)
        assert here.startswith(os.path.realpath({str(where)!r})), here
        assert os.path.realpath(nb.__file__).startswith(os.path.dirname(here)), nb.__file__
        assert nb.probe()[0]
        x = np.asarray([0.0, 0.5, 1.0])
        g = gpuad.grad(lambda x: xp.sum(xp.sin(x) * 2.0))(x)
        assert np.allclose(g, 2.0 * np.cos(x)), g
        print(json.dumps({{"file": here, "backend": gpuad.get_backend().name, "version": gpuad.__version__}}))
    """))
    proc = _run([str(py), str(script)], cwd=tmp_path, env=_clean_env())
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"] == "0.1.0"


@pytest.mark.packaging
def test_console_script_info(venv, tmp_path):
    where, py = venv
    exe = py.parent / ("gpuad.exe" if os.name == "nt" else "gpuad")
    assert exe.exists()
    proc = _run([str(exe), "info", "--backend", "numpy"], cwd=tmp_path, env=_clean_env())
    assert "backend: numpy" in proc.stdout and "reason:" in proc.stdout and "gpuad: 0.1.0" in proc.stdout
    proc = _run([str(py), "-m", "gpuad", "info", "--json"], cwd=tmp_path, env=_clean_env())
    info = json.loads(proc.stdout)
    assert info["versions"]["gpuad"] == "0.1.0"


@pytest.mark.packaging
def test_real_cupy_without_gpu(tmp_path_factory, wheel_path, tmp_path):
    """A real CuPy wheel: detection must degrade cleanly when there is no driver/GPU."""
    if os.environ.get("GPUAD_SKIP_REAL_CUPY"):
        pytest.skip("GPUAD_SKIP_REAL_CUPY is set")
    package = os.environ.get("GPUAD_REAL_CUPY_PACKAGE", "cupy-cuda12x")
    where = tmp_path_factory.mktemp("cupyvenv") / "env"
    py = _make_venv(where, wheel_path)
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", package], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"could not install {package} (network?): {proc.stderr.strip()[-500:]}")
    probe = _run([str(py), "-c", "import json; from gpuad.backends import cupy as c; "
                  "print(json.dumps([c.probe(), c.version()]))"], cwd=tmp_path, env=_clean_env())
    (ok, reason), version = json.loads(probe.stdout.strip().splitlines()[-1])
    assert version, "cupy installed but version() is None"
    _check_real_oom(py, tmp_path)
    info = subprocess.run([str(py), "-m", "gpuad", "info"], capture_output=True, text=True, cwd=tmp_path,
                          env=_clean_env(GPUAD_BACKEND="cupy"), timeout=300)
    if ok:  # a CUDA machine: cupy is chosen
        assert info.returncode == 0, info.stderr
        assert "backend: cupy" in info.stdout
    else:
        assert reason and "\n" not in reason
        assert info.returncode != 0
        err = info.stderr.strip()
        assert err.startswith("gpuad: error:") and "cupy" in err and "Traceback" not in err, err
        assert len(err.splitlines()) == 1, err
        auto = _run([str(py), "-m", "gpuad", "info"], cwd=tmp_path, env=_clean_env())
        assert "backend: numpy" in auto.stdout and reason in auto.stdout


_REAL_OOM = """
import json, pickle
import numpy as np
import cupy
import gpuad
from gpuad import xp
from gpuad.backends import cupy as c

E = cupy.cuda.memory.OutOfMemoryError
assert c.is_out_of_memory(E(1024, 0)) and not c.is_out_of_memory(MemoryError())

def f(x):
    y = xp.exp(x)            # the tape keeps y: 80 bytes
    raise E(1024, 0)         # what CuPy's allocator raises, with its own constructor

try:
    gpuad.grad(f)(np.linspace(0.0, 1.0, 10))
except E as e:
    assert isinstance(e, gpuad.OutOfMemoryError) and isinstance(e, MemoryError), type(e).__mro__
    assert type(e.__cause__) is E, repr(e.__cause__)
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, E) and str(back) == str(e)
    print(json.dumps({"message": str(e), "tape_bytes": e.tape_bytes}))
"""


def _check_real_oom(py, cwd):
    """CuPy's real OutOfMemoryError is recognised and re-raised with the tape's bytes."""
    proc = _run([str(py), "-c", _REAL_OOM], cwd=cwd, env=_clean_env())
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["message"].startswith("Out of memory allocating 1,024 bytes"), out
    assert out["tape_bytes"] == 80 and "checkpoint_sequential" in out["message"], out
