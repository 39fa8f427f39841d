"""Static checks of docker/ and the CI workflow (no Docker engine runs here).

The images must build from what the repository holds, pin what they install,
run as an unprivileged user and print ``gpuad info`` by default; the workflow
must run the CPU job on Python 3.10-3.13, the GPU job and a job that builds both
images.  These tests read the files; a Docker build is left to the workflow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["docker/Dockerfile.cpu", "docker/Dockerfile.cuda"]


def _instructions(path):
    """``[(INSTRUCTION, argument text)]`` of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(reqs):
    return {_normal(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in reqs}


def _pins():
    pins = {}
    for line in (ROOT / "docker/constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.+!-]*)", line)
            assert m, f"docker/constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_normal(m.group(1))] = m.group(2)
    return pins


@pytest.mark.parametrize("path", DOCKERFILES)
def test_every_copied_path_exists(path):
    copies = [arg.split()[:-1] for ins, arg in _instructions(path) if ins == "COPY"]
    assert copies, f"{path}: no COPY"
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"{path}: COPY {src}: no such file in the repository"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_base_image_is_pinned(path):
    bases = [arg for ins, arg in _instructions(path) if ins == "FROM"]
    assert bases, f"{path}: no FROM"
    for base in bases:
        image, _, tag = base.split()[0].partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{path}: FROM {base} is not pinned"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_installs_under_the_constraints_then_drops_root(path):
    ins = _instructions(path)
    env = " ".join(arg for i, arg in ins if i == "ENV")
    assert "PIP_CONSTRAINT=/src/docker/constraints.txt" in env, f"{path}: pip is not constrained"
    kinds = [i for i, _ in ins]
    assert "USER" in kinds, f"{path}: runs as root"
    user = [arg for i, arg in ins if i == "USER"][-1]
    assert user not in ("root", "0"), f"{path}: USER {user}"
    last_install = max(k for k, (i, arg) in enumerate(ins) if i == "RUN" and "pip install" in arg)
    assert kinds.index("USER") > last_install, f"{path}: USER must follow the installation"
    assert any(i == "RUN" and "useradd" in arg and user in arg for i, arg in ins), f"{path}: user {user} not made"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_default_command_is_gpuad_info(path):
    cmds = [arg for i, arg in _instructions(path) if i == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["gpuad", "info"], f"{path}: CMD {cmds[-1:]}"


def test_constraints_pin_every_dependency_the_images_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = _requirement_names(project["dependencies"] + extras["test"] + extras["train"] + extras["cuda12"])
    pins = _pins()
    assert needed <= set(pins), f"unpinned: {sorted(needed - set(pins))}"
    for path in DOCKERFILES:
        text = (ROOT / path).read_text()
        for extra in re.findall(r"pip install '\.\[([a-z0-9,]+)\]'", text):
            for name in extra.split(","):
                assert _requirement_names(extras[name]) <= set(pins), f"{path}: extra {name} has unpinned packages"


def test_workflow_runs_cpu_gpu_and_docker_jobs():
    wf = ROOT / ".github/workflows/ci.yml"
    link = ROOT / "ci/workflows/ci.yml"
    assert link.resolve() == wf.resolve(), "ci/workflows/ci.yml must point at .github/workflows/ci.yml"
    text = wf.read_text()
    jobs = re.findall(r"^  ([a-z][a-z0-9_-]*):\s*$", text, flags=re.M)
    assert {"cpu", "gpu", "docker"} <= set(jobs), jobs
    versions = re.search(r"python: \[([^\]]*)\]", text).group(1)
    assert [v.strip(' "') for v in versions.split(",")] == ["3.10", "3.11", "3.12", "3.13"]
    assert "bash ci/cpu.sh" in text and "bash ci/gpu.sh" in text
    assert re.search(r"runs-on: \[self-hosted, gpu\]", text)
    for path in DOCKERFILES:
        assert f"docker build -f {path}" in text, f"the docker job does not build {path}"
