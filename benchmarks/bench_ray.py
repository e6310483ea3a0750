"""The Ray engine of ``record``: its overhead against one process, and the reader's merge time against
the number of shards.

* overhead: ``record(..., engine="ray")`` with 2 shards on a local 2-CPU Ray cluster (one thread per
  worker) against ``record(...)`` in this process (all threads), three layers of a ResNet-18 (random
  weights: only the time matters; ``layer2``..``layer4``, mean summaries), ``--images`` probe tensors of
  3×``--size``², batches of 32, chunks of 32. Both timed in this one run, best of ``--repeat``; the Ray
  run includes writing and reading the chunk files (a fresh cache folder each time), not starting the
  cluster (started once before timing, as a user's session would). Goal on 2 cores: ratio <= 1.2.
* merge: the reader alone (the local ``record`` over a cache every chunk of which is on disk: reading,
  appending rows, streaming ``ops.topk``/``ops.topk_merge``, the two-row content check) with the probe
  cut into S shards of one chunk each, S = 1, 2, 4, ..., 32.

    python benchmarks/bench_ray.py [--images 128] [--size 128] [--repeat 2] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

import torch
import torchvision

from neurocore.probe import record

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import machine, write_section  # noqa: E402

LAYERS = ["layer2", "layer3", "layer4"]


class Tensors(torch.utils.data.Dataset):
    """In-memory probe tensors with a fingerprint (so cached chunks are reused without re-reading)."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 10

    def fingerprint(self):
        return f"bench-ray-{tuple(self.x.shape)}"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this script
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    probe = Tensors(torch.rand(args.images, 3, args.size, args.size))
    kw = dict(batch_size=32, chunk_size=32, top_k=100, progress=False)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: the workers start and import torch once
        record(model, LAYERS, Tensors(probe.x[:4]), engine="ray", shards=2, cache_dir=tmp, **kw)
    local, remote = [], []
    for r in range(args.repeat):
        start = time.perf_counter()
        a = record(model, LAYERS, probe, **kw)
        local.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            b = record(model, LAYERS, probe, engine="ray", shards=2, cache_dir=tmp, **kw)
            remote.append(time.perf_counter() - start)
        assert all(torch.equal(a[n].summaries, b[n].summaries) for n in LAYERS)
    t_local, t_ray = min(local), min(remote)
    merge = []
    for shards in (1, 2, 4, 8, 16, 32):
        chunk = -(-args.images // shards)
        with tempfile.TemporaryDirectory() as tmp:
            record(model, LAYERS, probe, engine="ray", shards=shards, cache_dir=tmp, **{**kw, "chunk_size": chunk})
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                record(model, LAYERS, probe, cache_dir=tmp, **{**kw, "chunk_size": chunk})
                times.append(time.perf_counter() - start)
        merge.append((shards, min(times)))
    ray.shutdown()
    lines = [
        f"Ray engine of `record` ({datetime.date.today()}, {machine('cpu')}, ray {ray.__version__}): ResNet-18 "
        f"{'/'.join(LAYERS)}, {args.images} images of 3×{args.size}², batches of 32, chunks of 32, best of {args.repeat}.",
        "",
        "| path | seconds | ratio |",
        "|---|---|---|",
        f"| one process (`record`) | {t_local:.2f} | 1.00 |",
        f"| Ray, 2 shards on a local 2-CPU cluster (`engine=\"ray\"`) | {t_ray:.2f} | {t_ray / t_local:.2f} |",
        "",
        "Merge (the reader alone, every chunk on disk; one chunk per shard):",
        "",
        "| shards | seconds |",
        "|---|---|",
        *[f"| {s} | {t:.3f} |" for s, t in merge],
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section("ray-record-cpu", body)
    return body


if __name__ == "__main__":
    main()
