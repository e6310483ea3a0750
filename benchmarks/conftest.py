"""pytest-benchmark suites: ``pytest benchmarks --benchmark-only`` (sizes for a 2-core CPU; set
``NEUROCORE_BENCH_SCALE=10`` for the published sizes on a large machine, ``NEUROCORE_BENCH_DEVICE=cuda``
for the GPU). Each kernel and its baseline share a ``group``, so the report shows their ratio; save a run
with ``--benchmark-autosave`` and compare a later one with ``--benchmark-compare`` (regressions show
as ratios to the saved run). The end-to-end scripts (bench_*.py) stay scripts."""

from __future__ import annotations

import os

import pytest
import torch

SCALE = float(os.environ.get("NEUROCORE_BENCH_SCALE", "1"))
DEVICE = os.environ.get("NEUROCORE_BENCH_DEVICE", "cpu")


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


@pytest.fixture
def device() -> str:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("NEUROCORE_BENCH_DEVICE=cuda but torch sees no GPU")
    return DEVICE


@pytest.fixture
def run(benchmark, device):
    """``run(fn)``: benchmark fn, synchronising the GPU after each call so that times are complete."""

    def call(fn, *args):
        if device == "cuda":
            def timed():
                out = fn(*args)
                torch.cuda.synchronize()
                return out
            return benchmark(timed)
        return benchmark(fn, *args)

    return call


# The first implementation of each group is the one measured (neurocore's kernel or drop-in); the
# others are its baselines. With --benchmark-results (set by `make bench`) the run's medians and
# ratios replace the "benchmark-suites" section of benchmarks/RESULTS.md.
_MEASURED = ("kernel", "compat")


def pytest_addoption(parser):
    parser.addoption("--benchmark-results", action="store_true",
                     help="write the suites' medians and ratios into benchmarks/RESULTS.md")


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("--benchmark-results", default=False):
        return
    bench = getattr(session.config, "_benchmarksession", None)
    rows = [b for b in getattr(bench, "benchmarks", []) if getattr(b, "stats", None) is not None]
    if not rows:
        return
    import datetime
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _results import machine, write_section

    groups: dict[str, list] = {}
    for b in rows:
        groups.setdefault(b.group or b.name, []).append(b)
    lines = [
        f"### Benchmark suites ({datetime.date.today().isoformat()})", "",
        f"Machine: {machine(DEVICE)}. `pytest benchmarks --benchmark-only` (scale {SCALE:g}); median of the "
        "rounds; ratio = baseline median / measured median (>1: neurocore is faster).", "",
        "| group | measured | median | baseline | median | ratio |", "|---|---|---|---|---|---|",
    ]
    for group, members in groups.items():
        impl = {b.param if b.param else b.name: b for b in members}
        measured = next((impl[k] for k in impl if any(str(k).startswith(m) for m in _MEASURED)), members[0])
        for b in members:
            if b is measured:
                continue
            ratio = b.stats.median / measured.stats.median if measured.stats.median else float("nan")
            lines.append(
                f"| {group} | {measured.param or measured.name} | {measured.stats.median * 1e3:.3g} ms | "
                f"{b.param or b.name} | {b.stats.median * 1e3:.3g} ms | {ratio:.3g}× |"
            )
    write_section(f"benchmark-suites-{DEVICE}", "\n".join(lines) + "\n")
