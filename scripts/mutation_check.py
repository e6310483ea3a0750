"""Plant small bugs in a scratch copy of the repository and check that the test suite catches each.

Each mutation is (name, file, exact old text, new text, test files). The script copies the checkout
to a temporary folder (without .venv and build outputs), builds the CPU-only extension there once
(``NEUROCORE_CUDA=0 python setup.py build_ext --inplace``; no nvcc needed), checks that the listed
tests pass unmutated, then for each mutation: replaces the text (an error when the old text is not
found exactly once, so the list stays in step with the code), rebuilds when a C++ file changed, runs
the mutation's test files with the current interpreter and ``PYTHONPATH=<copy>``, and restores the
file. A mutation that the tests do not fail on "survived": the script exits 1 and names it.

Not part of CI (it builds several times). Run from the repository root:

    .venv/bin/python scripts/mutation_check.py            # all mutations
    .venv/bin/python scripts/mutation_check.py topk_block  # those whose name contains the word
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file, old, new, test files): each old text must occur exactly once in its file.
MUTATIONS = [
    ("topk_block_off_by_one", "csrc/cpu/topk.cpp",
     "const int64_t c0 = b * kBlockCols, B = std::min(kBlockCols, K - c0);",
     "const int64_t c0 = b * kBlockCols, B = std::min(kBlockCols - 1, K - c0);",
     ["python_tests/test_topk.py"]),
    ("soft_wpmi_dropped_group_past_512_concepts", "csrc/cpu/soft_wpmi.cpp",
     "const int64_t groups = (M + gw - 1) / gw;",
     "const int64_t groups = std::min<int64_t>((M + gw - 1) / gw, 1);",
     ["python_tests/test_soft_wpmi.py"]),
    ("soft_wpmi_marginal_wrong_sign", "csrc/cpu/soft_wpmi.cpp",
     "out[j * M + m0 + t] = static_cast<T>(buf[j * width + t] - shift[t]);",
     "out[j * M + m0 + t] = static_cast<T>(buf[j * width + t] + shift[t]);",
     ["python_tests/test_soft_wpmi.py"]),
    ("shapley_float32_second_block_short", "csrc/cpu/shapley.cpp",
     "shapley_block(dz_ptr, start_ptr, w_ptr, D, C, perm_ptr, P, lk, r0, std::min(L, R - r0), phi_ptr);",
     "shapley_block(dz_ptr, start_ptr, w_ptr, D, C, perm_ptr, P, lk, r0, std::min(L, R - r0) - (b > 0 && L == 16), phi_ptr);",
     ["python_tests/test_shapley.py"]),
    ("le_gram_drops_blocks_past_4096_rows", "neurocore/methods/_linear_learn.py",
     "        G_part.addmm_(z.T, z)\n",
     "        G_part.addmm_(z.T, z) if i == 0 else None\n",
     ["python_tests/test_linear_learn_enet.py"]),
    ("probe_capture_skips_the_copy", "neurocore/probe/_layers.py",
     "                kept = kept.clone()\n",
     "                kept = kept\n",
     ["python_tests/test_probe_forward.py", "python_tests/test_probe_record.py"]),
    ("replace_units_writes_into_its_input", "neurocore/probe/_replace.py",
     "    return torch.where(mask, vals.to(z.dtype), z.unsqueeze(0))\n",
     "    z.add_(0.5)\n    return torch.where(mask, vals.to(z.dtype), z.unsqueeze(0))\n",
     ["python_tests/test_impact.py"]),
    ("cpu_only_build_check_dropped", "neurocore/ops.py",
     "    if value.is_cuda and not _extension.built_with_cuda():",
     "    if value.is_cuda and not _extension.built_with_cuda() and False:",
     ["python_tests/test_extension.py"]),
]

IGNORE = shutil.ignore_patterns(".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "demo-out", ".git")


def run(cmd, cwd, env=None, log=None) -> int:
    with open(log, "a") if log else open(os.devnull, "w") as out:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def build(copy: Path, log: Path) -> None:
    env = dict(os.environ, NEUROCORE_CUDA="0", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    if run([sys.executable, "setup.py", "build_ext", "--inplace"], copy, env, log) != 0:
        sys.exit(f"the build in {copy} failed; see {log}")


def tests_fail(copy: Path, files: list[str], log: Path) -> bool:
    env = dict(os.environ, PYTHONPATH=str(copy))
    env.pop("NEUROCORE_REQUIRE_CUDA", None)
    cmd = [sys.executable, "-m", "pytest", *files, "-x", "-q", "-p", "no:cacheprovider"]
    return run(cmd, copy, env, log) != 0


def main(words: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not words or any(w in m[0] for w in words)]
    for name, rel, old, _, _ in chosen:  # check every old text before any work
        count = (ROOT / rel).read_text().count(old)
        if count != 1:
            sys.exit(f"mutation {name}: the old text occurs {count} times in {rel} (expected once); update MUTATIONS")
    with tempfile.TemporaryDirectory(prefix="neurocore-mutation-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE, symlinks=True)
        for so in (copy / "neurocore").glob("_C*.so"):
            so.unlink()  # built afresh, CPU-only, below
        log = Path(tmp) / "log.txt"
        print(f"scratch copy: {copy}; building the CPU-only extension ...", flush=True)
        t0 = time.time()
        build(copy, log)
        check = [sys.executable, "-c", "import neurocore, sys; sys.exit(0 if neurocore.__file__.startswith(sys.argv[1]) and not neurocore.built_with_cuda() else 1)", str(copy)]
        if run(check, copy, dict(os.environ, PYTHONPATH=str(copy))) != 0:
            sys.exit("the copy's neurocore is not the one imported (or not CPU-only); check PYTHONPATH and the build")
        print(f"  built in {time.time() - t0:.0f} s", flush=True)
        files = sorted({f for m in chosen for f in m[4]})
        if tests_fail(copy, files, log):
            sys.exit(f"the unmutated copy fails its tests; see {log}")
        results = []
        for name, rel, old, new, tests in chosen:
            path = copy / rel
            original = path.read_text()
            path.write_text(original.replace(old, new))
            t0 = time.time()
            try:
                if rel.startswith("csrc/"):
                    build(copy, log)
                caught = tests_fail(copy, tests, log)
            finally:
                path.write_text(original)
            results.append((name, caught))
            print(f"  {name:45s} {'caught' if caught else 'SURVIVED'}  ({time.time() - t0:.0f} s; {', '.join(tests)})", flush=True)
        survivors = [n for n, caught in results if not caught]
        print(f"{len(results) - len(survivors)} of {len(results)} mutations caught" + (f"; survived: {survivors}" if survivors else ""))
        if survivors:
            keep = Path(tempfile.gettempdir()) / "neurocore-mutation-log.txt"
            shutil.copy(log, keep)
            print(f"test output: {keep}")
        return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
