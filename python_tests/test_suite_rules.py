"""The suite's own rules (conftest.py): skips are reported, and under ``NEUROCORE_REQUIRE_DATA=1`` a
real-data test cannot pass by skipping, nor the session run without the data."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import conftest

HERE = Path(__file__).resolve().parent

TESTS = '''
import pytest
from conftest import SHARED_DATA

def test_needs_data():
    pytest.skip(f"real data absent: {SHARED_DATA / 'no-such-set'}")

@pytest.mark.skipif(True, reason="shared/data/no-such-set is absent")
def test_needs_data_marked():
    pass

def test_needs_a_tool():
    pytest.skip("make is not installed")
'''


def run_suite(tmp_path, require: str | None, shared_data: Path | None = None) -> subprocess.CompletedProcess:
    """Run pytest on TESTS with this conftest as a plugin (its SHARED_DATA optionally replaced)."""
    (tmp_path / "test_x.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != conftest.REQUIRE_DATA_VAR}
    if require is not None:
        env[conftest.REQUIRE_DATA_VAR] = require
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    patch = f"conftest.SHARED_DATA = __import__('pathlib').Path({str(shared_data)!r}); " if shared_data else ""
    code = (
        "import sys, pytest, conftest; " + patch +
        f"sys.exit(pytest.main([{str(tmp_path)!r}, '-p', 'conftest', '-rfEs', '-p', 'no:cacheprovider', '--rootdir', {str(tmp_path)!r}]))"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_data_skips_are_reported_and_pass_without_the_requirement(tmp_path):
    out = run_suite(tmp_path, None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 skipped" in out.stdout
    assert "SKIPPED" in out.stdout and "make is not installed" in out.stdout  # reasons are printed


def test_require_data_turns_data_skips_into_failures(tmp_path):
    out = run_suite(tmp_path, "1")
    assert out.returncode == 1, out.stdout + out.stderr
    # a skip in the call fails the test; one from a skipif mark (at setup) errors it
    assert "1 failed" in out.stdout and "1 error" in out.stdout and "1 skipped" in out.stdout, out.stdout
    assert "NEUROCORE_REQUIRE_DATA=1 but this real-data test skipped" in out.stdout
    assert "FAILED" in out.stdout and "test_needs_data_marked" in out.stdout


def test_require_data_without_the_folder_stops_the_session(tmp_path):
    out = run_suite(tmp_path, "1", shared_data=tmp_path / "absent")
    assert out.returncode != 0
    assert f"NEUROCORE_REQUIRE_DATA=1 but the real data is not at {tmp_path / 'absent'}" in out.stdout + out.stderr
    assert run_suite(tmp_path, "0", shared_data=tmp_path / "absent").returncode == 0  # only "1" requires


def test_skip_reasons_are_always_printed_and_ci_requires_the_data():
    addopts = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    flags = next(a for a in addopts.split() if a.startswith("-r"))
    assert "s" in flags, addopts
    assert "export NEUROCORE_REQUIRE_DATA=1" in (HERE.parent / ".ci" / "run").read_text()
