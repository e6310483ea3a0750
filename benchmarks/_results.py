"""Shared by the benchmark scripts: timing helpers, the machine's description, and writing one
marked section of benchmarks/RESULTS.md (each script owns its sections; the rest is left alone)."""

from __future__ import annotations

import os
import platform
import re
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, device: str, repeat: int) -> float:
    """Best of ``repeat`` runs after one warm-up (seconds)."""
    fn()  # warm-up (and CUDA lazy init)
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def once(fn, device: str) -> float:
    """One run, no warm-up (seconds): for baselines that take many seconds."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def machine(device: str) -> str:
    """The CPU model with torch's thread count and vector capability, or the GPU's name."""
    if str(device).startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


def write_section(name: str, body: str) -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` of RESULTS.md
    with ``body`` (appended at the end when absent)."""
    marker_start, marker_end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    section = f"{marker_start}\n{body}\n{marker_end}"
    if marker_start in text:
        text = re.sub(re.escape(marker_start) + r".*?" + re.escape(marker_end), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)
    print(f"wrote the {name} section of {RESULTS}")
