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


#: Base images that already have a user at UID 1000 (Ubuntu 23.04 and later: "ubuntu").
_UID_1000 = {"ubuntu": r"(?:^|[-:])ubuntu(2[3-9]|[3-9]\d)\.\d\d\b|^ubuntu:(2[3-9]|[3-9]\d)\.\d\d"}


def _base_users(base):
    """Users the base image ``base`` already has at UID 1000 (from its tag: nvidia/cuda:*-ubuntu24.04, ubuntu:24.04)."""
    return [user for user, pattern in _UID_1000.items() if re.search(pattern, base)]


@pytest.mark.parametrize("base, users", [
    ("nvidia/cuda:12.6.3-runtime-ubuntu24.04", ["ubuntu"]),
    ("ubuntu:24.04", ["ubuntu"]),
    ("nvidia/cuda:12.6.3-runtime-ubuntu22.04", []),
    ("python:3.11.10-slim-bookworm", []),
])
def test_base_image_users(base, users):
    assert _base_users(base) == users


@pytest.mark.parametrize("path", DOCKERFILES)
def test_user_uid_is_free_in_the_base_image(path):
    # useradd --uid 1000 fails ("UID 1000 is not unique") where the base image has a user there already,
    # as Ubuntu 24.04 images have "ubuntu": the Dockerfile must remove it first, in the same or an earlier RUN.
    ins = _instructions(path)
    base = [arg for i, arg in ins if i == "FROM"][-1].split()[0]
    runs = [arg for i, arg in ins if i == "RUN"]
    add = next(k for k, arg in enumerate(runs) if "useradd" in arg)
    pinned = re.search(r"useradd\b[^&;|]*(?:--uid|-u)[ =]?1000\b", runs[add])
    for user in _base_users(base):
        if not pinned:
            continue
        before = " ".join(runs[:add]) + runs[add].split("useradd")[0]
        assert re.search(rf"userdel\b[^&;|]*\b{user}\b", before), (
            f"{path}: FROM {base} already has user {user!r} at UID 1000; remove it (userdel) before useradd --uid 1000")


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


# --- ci/gpu.sh ------------------------------------------------------------------------------
def _gpu_sh():
    return (ROOT / "ci/gpu.sh").read_text()


def test_gpu_job_installs_the_train_extra_and_nccl_of_the_wheels_cuda_major():
    text = _gpu_sh()
    # the training tests (tests/test_train*.py) skip without the train extra
    assert re.search(r'pip install -q -e "\.\[test,train,\$extra\]"', text), "gpu.sh: gpuad[test,train,...]"
    # CuPy's wheels do not bundle NCCL (cupyx.distributed, test_nccl_two_gpus): the wheel of the same CUDA major
    assert re.search(r'extra=cuda\$wheel_major', text)
    assert re.search(r'pip install -q "nvidia-nccl-cu\$\{wheel_major\}"', text), "gpu.sh: nvidia-nccl-cu<major>"
    assert re.search(r'cupy-cuda\$\{wheel_major\}x\[ctk\]', text)


def _has_toolkit(tmp_path, major, ldconfig_lines=(), home_files=()):
    """Run ci/cuda_toolkit.sh's has_cuda_toolkit with a fake ldconfig and CUDA_HOME."""
    import os
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir, home = tmp_path / "bin", tmp_path / "cuda"
    bin_dir.mkdir(exist_ok=True)
    (home / "lib64").mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "ldconfig"
    listing = "".join(f"\t{name} (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/{name}\\n" for name in ldconfig_lines)
    fake.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    fake.chmod(0o755)
    for name in home_files:
        (home / "lib64" / name).write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "CUDA_HOME": str(home)}
    proc = subprocess.run(["bash", "-c", f". ci/cuda_toolkit.sh && has_cuda_toolkit {major}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


@pytest.mark.parametrize("major, ldconfig, files, want", [
    (12, ["libnvrtc.so.12"], [], True),
    (13, ["libnvrtc.so.12"], [], False),          # a CUDA 12 toolkit does not serve cupy-cuda13x
    (13, ["libnvrtc.so.13", "libnvrtc.so.12"], [], True),
    (12, ["libnvrtc.so.120"], [], False),         # not a prefix match
    (13, [], ["libnvrtc.so.13.0.48"], True),      # under $CUDA_HOME/lib64
    (13, [], ["libnvrtc.so.12.6.77"], False),     # a lib64 directory alone is not a toolkit of this major
    (12, [], [], False),
])
def test_gpu_job_toolkit_check_matches_the_cuda_major(tmp_path, major, ldconfig, files, want):
    assert _has_toolkit(tmp_path, major, ldconfig, files) is want
    text = _gpu_sh()
    assert 'has_cuda_toolkit "$wheel_major"' in text and "/usr/local/cuda/lib64 ]" not in text


@pytest.mark.parametrize("path", DOCKERFILES)
def test_image_holds_what_its_test_suite_reads(path):
    # README: `docker run ... python -m pytest -q` runs the suite in the image, whose repository
    # checks (this file, the CI scripts' tests) read ci/, docker/ and .github/.
    copied = {src.rstrip("/") for word, arg in _instructions(path) if word == "COPY" for src in arg.split()[:-1]}
    missing = {"gpuad", "backends", "tests", "bench", "ci", "docker", ".github", "pytest.ini"} - copied
    assert not missing, f"{path} does not copy {sorted(missing)}"
