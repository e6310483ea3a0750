"""The Ray engine of ``record``: its overhead against one process, where that overhead goes, and the
reader's merge time against the number of shards.

* overhead: ``record(..., engine="ray")`` with 2 shards on a local 2-CPU Ray cluster (each task with
  the driver's thread count, reserving that many CPUs) against ``record(...)`` in this process (all threads), on the same probe in the same run:
  three layers of a ResNet-18 (random weights: only the time matters; ``layer2``..``layer4``, mean
  summaries), probe tensors of 3×``--size``², batches of 32, chunks of 32, top-100. Best of
  ``--repeat``, the two paths interleaved; the Ray run includes hashing the weights, shipping model and
  probe, the workers' recording, writing and reading the chunk files (a fresh cache folder each time).
  At ``--images`` (the issue's size) and at ``--large`` images (fixed costs amortised). Goal on 2
  cores: ratio <= 1.2. The cold start (``ray.init`` and the first call, whose workers start a Python
  process and import torch and neurocore) is timed once, separately: later calls reuse the workers.
* breakdown: the parts of one warm Ray call, each timed alone (best of ``--repeat``).
* merge: the reader alone (every chunk on disk: reading the files, appending rows, the top-k) with the
  probe cut into S shards of one chunk each, S = 1, 2, 4, ..., 64, least-squares line ``a + b·S``; and,
  for comparison, the same reader feeding the chunks one by one (a top-k merge per chunk, as before).

    python benchmarks/bench_ray.py [--images 128] [--large 512] [--size 128] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
import warnings

import torch
import torchvision

from neurocore.probe import record

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import machine, write_section  # noqa: E402

LAYERS = ["layer2", "layer3", "layer4"]
SHARDS = (1, 2, 4, 8, 16, 32, 64)


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


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _ratio(model, probe, kw, repeat):
    """Best-of-``repeat`` seconds of the local and the Ray path on ``probe`` (interleaved), checked equal."""
    local, remote = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        a = record(model, LAYERS, probe, **kw)
        local.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            b = record(model, LAYERS, probe, engine="ray", shards=2, cache_dir=tmp, **kw)
            remote.append(time.perf_counter() - start)
        assert all(torch.equal(a[n].summaries, b[n].summaries) for n in LAYERS)
        assert all(torch.equal(a[n].top_indices, b[n].top_indices) for n in LAYERS)
    return min(local), min(remote)


def _breakdown(ray, model, probe, kw, repeat):
    """Seconds of each part of a warm 2-shard Ray call, timed alone."""
    from neurocore.probe._cache import recording_key
    from neurocore.probe._record import _record_local
    from neurocore.scale._ray import _pack, _unpack

    @ray.remote(num_cpus=1)
    def receive(model, probe):  # what a task pays before it records: scheduling and unpacking
        return len(_unpack(probe)), type(_unpack(model)).__name__

    def shards_alone():  # what the workers compute: both halves of the probe, the driver's threads, no cache
        half = len(probe) // 2
        record(model, LAYERS, Tensors(probe.x[:half]), **kw)
        record(model, LAYERS, Tensors(probe.x[half:]), **kw)

    key = recording_key(model, probe, None)
    parts = [
        ("cache key (hash the weights; the local path pays it too)", _best(lambda: recording_key(model, probe, None), repeat)),
        ("`ray.put` of model and probe (tensors out of band: `_pack`)", _best(lambda: (ray.put(_pack(model)), ray.put(_pack(probe))), repeat)),
        ("(the same with plain pickling: `ray.put(model)`, `ray.put(probe)`)", _best(lambda: (ray.put(model), ray.put(probe)), repeat)),
    ]
    refs = ray.put(_pack(model)), ray.put(_pack(probe))
    parts.append(("2 tasks scheduled, model and probe unpacked", _best(lambda: ray.get([receive.remote(*refs) for _ in range(2)]), repeat)))
    parts.append(("the two shards' recordings (halves of the probe, one after the other with the driver's threads, "
                  "in this process)", _best(shards_alone, repeat)))
    with tempfile.TemporaryDirectory() as tmp:
        record(model, LAYERS, probe, engine="ray", shards=2, cache_dir=tmp, **kw)
        merge = dict(kw, cache_dir=tmp, layout="auto", summary="mean", transform=None, transform_key=None,
                     device=None, num_workers=0)
        parts.append(("the reader (merge of the chunk files)", _best(
            lambda: _record_local(model, LAYERS, probe, **merge, base_key=key, merge=True), repeat)))
    return parts


def _merge_times(model, probe, kw, repeat):
    """(shards, joined seconds, chunk-by-chunk seconds) of the reader over S one-chunk shards."""
    import neurocore.probe._record as rec
    from neurocore.probe._cache import recording_key

    key = recording_key(model, probe, None)
    out = []
    for shards in SHARDS:
        chunk = -(-len(probe) // shards)
        with tempfile.TemporaryDirectory() as tmp:
            record(model, LAYERS, probe, engine="ray", shards=shards, cache_dir=tmp, **{**kw, "chunk_size": chunk})
            merge = dict(kw, chunk_size=chunk, cache_dir=tmp, layout="auto", summary="mean", transform=None,
                         transform_key=None, device=None, num_workers=0)

            def read():
                return rec._record_local(model, LAYERS, probe, **merge, base_key=key, merge=True)

            joined = _best(read, repeat)
            saved = rec._CACHED_ROWS
            rec._CACHED_ROWS = 1  # one recorder update (one top-k merge) per chunk
            try:
                one_by_one = _best(read, repeat)
            finally:
                rec._CACHED_ROWS = saved
        out.append((shards, joined, one_by_one))
    return out


def _fit(points):
    """Least-squares ``t = a + b * s``: (a, b)."""
    s = torch.tensor([p[0] for p in points], dtype=torch.float64)
    t = torch.tensor([p[1] for p in points], dtype=torch.float64)
    design = torch.stack([torch.ones_like(s), s], dim=1)
    a, b = torch.linalg.lstsq(design, t[:, None]).solution.flatten().tolist()
    return a, b


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--large", type=int, default=512, help="a larger probe, where fixed costs are amortised")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    import ray
    import ray.cloudpickle

    warnings.filterwarnings("ignore", message="layer .* neurons are dead")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this script
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    probe = Tensors(torch.rand(args.images, 3, args.size, args.size))
    kw = dict(batch_size=32, chunk_size=32, top_k=100, progress=False)

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:  # the first call: both workers start and import torch
        start = time.perf_counter()
        record(model, LAYERS, probe, engine="ray", shards=2, cache_dir=tmp, **kw)
        t_first = time.perf_counter() - start
    load = os.getloadavg()[0]  # others' processes on the same cores slow the 2-thread local path the most
    t_local, t_ray = _ratio(model, probe, kw, args.repeat)
    large = Tensors(torch.rand(args.large, 3, args.size, args.size))
    t_local_l, t_ray_l = _ratio(model, large, kw, args.repeat)
    parts = _breakdown(ray, model, probe, kw, args.repeat)
    merge = _merge_times(model, probe, kw, args.repeat)
    ray.shutdown()
    a, b = _fit([(s, t) for s, t, _ in merge])
    a1, b1 = _fit([(s, t) for s, _, t in merge])
    lines = [
        f"Ray engine of `record` ({datetime.date.today()}, {machine('cpu')}, ray {ray.__version__}): ResNet-18 "
        f"{'/'.join(LAYERS)}, images of 3×{args.size}², batches of 32, chunks of 32, top-100, best of "
        f"{args.repeat}; Ray: 2 shards on a local 2-CPU cluster, each task computing with the driver's thread count and reserving that "
        "many CPUs (so that results equal the local run bit for bit; on 2 cores the shards run one after another), "
        "one process: all threads. "
        f"Stores checked equal bit for bit. Load average when the timing began: {load:.1f} (on 2 cores).",
        "",
        "| probe | one process (`record`), s | Ray (`engine=\"ray\"`), s | ratio |",
        "|---|---|---|---|",
        f"| {args.images} images | {t_local:.2f} | {t_ray:.2f} | {t_ray / t_local:.2f} |",
        f"| {args.large} images | {t_local_l:.2f} | {t_ray_l:.2f} | {t_ray_l / t_local_l:.2f} |",
        "",
        f"Cold cluster, paid once per session: `ray.init` {t_init:.2f} s, then the first call ({args.images} images) "
        f"{t_first:.2f} s (each worker process starts and imports torch and neurocore; Ray reuses them afterwards).",
        "",
        f"Where a warm Ray call's time goes ({args.images} images), each part timed alone:",
        "",
        "| part | seconds |",
        "|---|---|",
        *[f"| {what} | {t:.3f} |" for what, t in parts],
        "",
        f"Sum of the parts on the Ray path: {sum(t for what, t in parts if not what.startswith('(')):.2f} s. With "
        "more cores than the driver's threads, shards run side by side.",
        "",
        f"Merge (the reader alone, every chunk on disk; {args.images} images cut into S shards of one chunk each). "
        "Joined: consecutive chunks fed to the recorder as one update (one top-k); one by one: a top-k merge "
        "per chunk.",
        "",
        "| shards | joined, s | one by one, s |",
        "|---|---|---|",
        *[f"| {s} | {t:.3f} | {t1:.3f} |" for s, t, t1 in merge],
        "",
        f"Growth (least squares over S = {', '.join(map(str, SHARDS))}): joined {a:.3f} s + {1e3 * b:.2f} ms per shard "
        f"(reading each shard's {len(LAYERS)} chunk files); one by one {a1:.3f} s + {1e3 * b1:.2f} ms per shard.",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section("ray-record-cpu", body)
    return body


if __name__ == "__main__":
    main()
