"""Benchmark neurocore's kernels against their pure-torch references, in one process, same inputs.

Sizes are the ones the core issue fixes (``--quick`` shrinks them for a smoke run). Every row times a
kernel and its baseline on the same inputs and reports the ratio; ``--write`` replaces this device's
section of benchmarks/RESULTS.md. Timings are the best of ``--repeat`` runs after one warm-up
(baselines that take many seconds run once).

    python benchmarks/bench_kernels.py [--device cpu|cuda] [--quick] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys

import torch

import neurocore
from neurocore import ops, reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import best_time, machine, once, write_section  # noqa: E402


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, float, float]] = []

    def add(self, kernel: str, sizes: str, baseline: str, t_kernel: float, t_base: float) -> None:
        self.rows.append((kernel, sizes, baseline, t_kernel, t_base))
        print(f"{kernel:22s} {sizes:38s} kernel {t_kernel * 1e3:10.1f} ms | {baseline:32s} "
              f"{t_base * 1e3:10.1f} ms | x{t_base / t_kernel:8.1f}", flush=True)

    def markdown(self) -> str:
        lines = ["| kernel | sizes | kernel time | baseline | baseline time | speed-up |",
                 "|---|---|---:|---|---:|---:|"]
        for kernel, sizes, baseline, tk, tb in self.rows:
            lines.append(f"| {kernel} | {sizes} | {tk * 1e3:.1f} ms | {baseline} | {tb * 1e3:.1f} ms | {tb / tk:.1f}× |")
        return "\n".join(lines)


def bench_topk(table: Table, device: str, N: int, K: int, k: int, repeat: int) -> None:
    x = torch.randn(N, K, generator=torch.Generator().manual_seed(0)).to(device)
    sizes = f"N={N:,}, K={K:,}, k={k}, float32"
    t = best_time(lambda: ops.topk(x, k), device, repeat)
    table.add("topk", sizes, "reference.topk (stable sort)", t, once(lambda: reference.topk(x, k), device))
    table.add("topk", sizes, "torch.topk (ties unordered)", t,
              best_time(lambda: torch.topk(x, k, dim=0), device, repeat))


def soft_wpmi_inputs(N: int, M: int, K: int, k: int, device: str):
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(N, M, generator=g).mul_(0.4).to(device)  # in place: no second N×M copy
    top = ops.topk(torch.randn(N, K, generator=g).to(device), k)[1]
    return sims, top, ops.soft_wpmi_weights(k).to(device)


def bench_soft_wpmi(table: Table, device: str, N: int, M: int, K: int, k: int, repeat: int, loop: bool) -> None:
    sims, top, p = soft_wpmi_inputs(N, M, K, k, device)
    sizes = f"N={N:,}, M={M:,}, K={K:,}, k={k}, float32"
    run = lambda: ops.soft_wpmi(sims, top, p, 10.0, 1.0)  # noqa: E731
    t = best_time(run, device, repeat)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        extra = torch.cuda.max_memory_allocated() - base
        print(f"soft_wpmi peak GPU memory beyond inputs: {extra / 2**20:.0f} MiB "
              f"(output {K * M * 4 / 2**20:.0f} MiB, an N×M softmax would be {N * M * 4 / 2**20:.0f} MiB)")
    table.add("soft_wpmi", sizes, "reference.soft_wpmi (vectorised)", t,
              once(lambda: reference.soft_wpmi(sims, top, p, 10.0, 1.0), device))
    if loop:
        table.add("soft_wpmi", sizes, "per-neuron loop (authors' code)", t,
                  once(lambda: reference.soft_wpmi_per_neuron_loop(sims, top, p, 10.0, 1.0), device))


def soft_wpmi_cpu_memory(N: int, M: int, K: int, k: int) -> str:
    """Peak resident memory the CPU kernel adds beyond its inputs (output included), measured in a
    fresh process: the peak (VmHWM, reset through /proc/self/clear_refs just before the call) minus
    the resident size before it."""
    code = (
        "import sys, torch; sys.path.insert(0, %r); from bench_kernels import soft_wpmi_inputs, status_kib; "
        "from neurocore import ops; s, t, p = soft_wpmi_inputs(%d, %d, %d, %d, 'cpu'); "
        "open('/proc/self/clear_refs', 'w').write('5'); before = status_kib('VmRSS'); "
        "out = ops.soft_wpmi(s, t, p, 10.0, 1.0); print(status_kib('VmHWM') - before)"
    ) % (os.path.dirname(os.path.abspath(__file__)), N, M, K, k)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return f"soft_wpmi CPU memory not measured: {result.stderr.strip().splitlines()[-1]}"
    grown_kib = int(result.stdout.split()[-1])
    line = (f"soft_wpmi (CPU, N={N:,}, M={M:,}, K={K:,}) peak resident memory beyond its inputs: {grown_kib / 1024:.0f} MiB, "
            f"of which the output is {K * M * 4 / 2**20:.0f} MiB; an N×M float32 softmax alone would be {N * M * 4 / 2**20:.0f} MiB.")
    print(line)
    return line


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))


def gram_inputs(M: int, K: int, device: str, seed: int) -> ops.GramStats:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(M, 64, generator=g, dtype=torch.float64)
    cov = A @ A.T / 64 + 0.1 * torch.eye(M, dtype=torch.float64)
    cross = torch.randn(M, K, generator=g, dtype=torch.float64) * 0.1
    return ops.GramStats(1000, torch.rand(M, generator=g, dtype=torch.float64).to(device), cov.to(device),
                         torch.randn(K, generator=g, dtype=torch.float64).to(device), cross.to(device),
                         (torch.rand(K, generator=g, dtype=torch.float64) + 0.5).to(device))


def bench_lstsq(table: Table, device: str, K: int, R: int, M: int, max_s: int, repeat: int) -> None:
    train, val = gram_inputs(M, K, device, 1), gram_inputs(M, K, device, 2)
    g = torch.Generator().manual_seed(3)
    rounds = [torch.stack([torch.randperm(M, generator=g)[: s * R].view(R, s) for _ in range(K)]).to(device)
              for s in range(1, max_s + 1)]
    kernel = lambda: [ops.lstsq_gram(train, val, sets) for sets in rounds]  # noqa: E731
    base = lambda: [reference.lstsq_gram(train, val, sets) for sets in rounds]  # noqa: E731
    sizes = f"K={K:,} × R={R} sets, s=1…{max_s} (all rounds), M={M:,}"
    table.add("lstsq_gram", sizes, "reference.lstsq_gram (batched solve)", best_time(kernel, device, repeat),
              best_time(base, device, max(1, repeat // 2)))


def bench_shapley(table: Table, device: str, R: int, D: int, C: int, P: int, link: str, repeat: int) -> None:
    g = torch.Generator().manual_seed(0)
    x, bg = torch.randn(R, D, generator=g).to(device), torch.zeros(R, D).to(device)
    w, b = (torch.randn(C, D, generator=g) / D**0.5).to(device), torch.zeros(C).to(device)
    perms = ops.sample_permutations(P, D, seed=0).to(device)
    sizes = f"R={R:,}, D={D}, C={C}, P={P}, {link}, float32"
    t = best_time(lambda: ops.shapley_permutation(x, w, b, bg, perms, link), device, repeat)
    table.add("shapley_permutation", sizes, "reference.shapley_permutation", t,
              once(lambda: reference.shapley_permutation(x, w, b, bg, perms, link), device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not (torch.cuda.is_available() and neurocore.built_with_cuda()):
        sys.exit("--device cuda needs a visible GPU and neurocore built with its CUDA kernels")
    q = args.quick
    table = Table()
    notes = []
    bench_topk(table, device, 5_000 if q else 50_000, 256 if q else 2_048, 100, args.repeat)
    bench_soft_wpmi(table, device, 2_000 if q else 10_000, 2_000 if q else 20_000, 64 if q else 512, 100,
                    args.repeat, loop=True)
    if device == "cuda" and not q:
        bench_soft_wpmi(table, device, 50_000, 20_000, 2_048, 100, args.repeat, loop=False)
    if device == "cpu":
        notes.append(soft_wpmi_cpu_memory(2_000 if q else 10_000, 2_000 if q else 20_000, 64 if q else 512, 100))
    bench_lstsq(table, device, 256 if q else 2_048, 10, 1_000 if q else 8_438, 10, args.repeat)
    bench_shapley(table, device, 1_000 if q else 10_000, 128 if q else 512, 1, 16 if q else 64, "sigmoid", args.repeat)
    bench_shapley(table, device, 500 if q else 2_000, 128 if q else 512, 10, 8 if q else 16, "softmax", args.repeat)

    if args.write and not q:
        heading = (f"## {device.upper()}: {machine(device)}\n\n{datetime.date.today().isoformat()}, torch "
                   f"{torch.__version__}, neurocore {neurocore.__version__}, "
                   f"`python benchmarks/bench_kernels.py --device {device} --write`\n")
        write_section(device, heading + "\n" + table.markdown() + ("\n\n" + "\n".join(notes) if notes else ""))


if __name__ == "__main__":
    main()
