"""Shared test setup: the device parametrisation and the rule for CUDA test cases.

Tests that run on every device take a ``device`` argument; :func:`pytest_generate_tests` parametrises
it over :data:`DEVICES` (tests may also use ``@pytest.mark.parametrize("device", DEVICES)``).
Test cases marked ``cuda`` are skipped unless torch sees a GPU **and** neurocore was built with its
CUDA kernels. With ``NEUROCORE_REQUIRE_CUDA=1`` (set on the GPU machine) a missing GPU or a CPU-only
build fails the session instead: a silent skip there would hide an untested CUDA build.

Real-data tests read :data:`SHARED_DATA` (``../shared/data`` beside the checkout) and skip when it is
absent, with a reason that names the missing path under ``shared/data``. With
``NEUROCORE_REQUIRE_DATA=1`` (set by ``.ci/run``: CI has the data) a missing ``shared/data`` fails the
session, and any skip whose reason names it fails that test: the real-data tests cannot pass by
skipping there.

Ray tests take the ``cluster`` fixture: one local Ray cluster (2 CPUs) for the whole session, started by
the first test that needs it and shut down at the session's end (not once per test module), with the
requesting test module pickled by value (Ray's workers cannot import test files). Without ray those
tests skip, saying how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

REQUIRE_CUDA_VAR = "NEUROCORE_REQUIRE_CUDA"
REQUIRE_DATA_VAR = "NEUROCORE_REQUIRE_DATA"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require_cuda() -> bool:
    """Whether ``NEUROCORE_REQUIRE_CUDA=1`` asks for the CUDA cases to run (never to be skipped)."""
    return os.environ.get(REQUIRE_CUDA_VAR, "").strip() == "1"


def require_data() -> bool:
    """Whether ``NEUROCORE_REQUIRE_DATA=1`` asks for the real-data tests to run (never to be skipped)."""
    return os.environ.get(REQUIRE_DATA_VAR, "").strip() == "1"


def is_missing_data_skip(reason: str) -> bool:
    """Whether a skip reason says that real data under ``shared/data`` is missing."""
    return "shared/data" in reason or str(SHARED_DATA) in reason


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether the CUDA cases can run here, and why not when they cannot."""
    if not torch.cuda.is_available():
        return False, (
            f"torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"CUDA {torch.version.cuda or 'none: a CPU-only build'})"
        )
    try:
        import neurocore

        built = neurocore.built_with_cuda()
    except Exception as exc:  # a broken extension: report it rather than crash the collection
        return False, f"neurocore could not be loaded: {exc}"
    if not built:
        return False, (
            "neurocore was built without its CUDA kernels; rebuild with "
            "`NEUROCORE_CUDA=1 pip install --no-build-isolation -e .`"
        )
    return True, ""


RAY_MISSING = "ray is not installed (pip install neurocore[ray]); CI installs it"


@pytest.fixture(scope="session")
def ray_session():
    """The ``ray`` module with a local cluster of 2 CPUs, started once per session (or one already running)."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_session, request):
    """The session's Ray cluster (the ``ray`` module), with the requesting test module's functions and
    classes pickled by value: the workers cannot import a test file."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(request.module)
    return ray_session


def pytest_generate_tests(metafunc):
    # Any test taking `device` runs on every device unless it parametrises `device` itself.
    if "device" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if "device" in names:
            return
    metafunc.parametrize("device", DEVICES)


def pytest_collection_modifyitems(config, items):
    if require_data() and not SHARED_DATA.is_dir():
        raise pytest.UsageError(
            f"{REQUIRE_DATA_VAR}=1 but the real data is not at {SHARED_DATA}: put the shared data folder "
            f"beside the checkout (../shared/data), or unset {REQUIRE_DATA_VAR} to skip the real-data tests."
        )
    usable, reason = cuda_status()
    if require_cuda() and not usable:
        raise pytest.UsageError(
            f"{REQUIRE_CUDA_VAR}=1 but the CUDA tests cannot run: {reason}. Run on a machine with a GPU "
            f"and a CUDA build of neurocore, or unset {REQUIRE_CUDA_VAR} to skip the CUDA tests."
        )
    if usable:
        return
    skip = pytest.mark.skip(reason=f"CUDA tests skipped: {reason}")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and require_data()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if is_missing_data_skip(reason):
        # A skip for missing data would hide an untested real-data path where the data is promised.
        report.outcome = "failed"
        report.longrepr = (
            f"{REQUIRE_DATA_VAR}=1 but this real-data test skipped: {reason}. Provide the data under "
            f"{SHARED_DATA}, or unset {REQUIRE_DATA_VAR}."
        )


def pytest_report_header(config):
    usable, reason = cuda_status()
    data = "required" if require_data() else ("found" if SHARED_DATA.is_dir() else "absent: real-data tests skip")
    return [f"neurocore CUDA tests: {'run' if usable else 'skipped: ' + reason}", f"neurocore real data ({SHARED_DATA}): {data}"]
