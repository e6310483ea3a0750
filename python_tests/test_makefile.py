"""The Makefile rebuilds the extension only when a build input changed (``make demo`` then
``make test`` compiles once), checked with ``make -n`` on a scratch copy of the build inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = "pip install"


def _dry_run(root: Path, target: str, **variables) -> str:
    args = ["make", "-n", target, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, check=True, timeout=60).stdout


def _build(root: Path, **variables) -> None:
    # PY=true: the build recipe "runs" without compiling anything; only the stamp matters here
    args = ["make", "build", "PY=true", *(f"{k}={v}" for k, v in variables.items())]
    subprocess.run(args, cwd=root, capture_output=True, text=True, check=True, timeout=60)


@pytest.fixture
def tree(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("csrc", "cmake"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "requirements.txt", tmp_path / ".ci" / "requirements.txt")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()
    return tmp_path


def _edit(tree: Path, path: str) -> None:
    """Make ``path`` newer than the build stamp, whatever the file system's time resolution."""
    earlier = time.time() - 10
    for stamp in (tree / ".venv").glob(".built-*"):
        os.utime(stamp, (earlier, earlier))
    (tree / path).touch()


def test_build_runs_once_until_a_build_input_changes(tree):
    assert PIP in _dry_run(tree, "test")  # never built
    _build(tree)
    for target in ("test", "demo", "bench", "test"):
        assert PIP not in _dry_run(tree, target), target
    (tree / "cmake" / "__pycache__").mkdir()  # the build itself imports cmake/build_config.py
    (tree / "cmake" / "__pycache__" / "build_config.cpython-311.pyc").touch()
    assert PIP not in _dry_run(tree, "test")
    for changed in ("csrc/ops.cpp", "setup.py", "pyproject.toml", "cmake/build_config.py"):
        _edit(tree, changed)
        assert PIP in _dry_run(tree, "test"), changed
        _build(tree)
        assert PIP not in _dry_run(tree, "test"), changed
    # another CUDA setting is another build
    assert PIP in _dry_run(tree, "test", NEUROCORE_CUDA="0")
