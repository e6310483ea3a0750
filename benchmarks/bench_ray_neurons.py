"""Per-neuron work on Ray (:func:`neurocore.scale.map_neuron_ranges`): Linear Explanations on a layer of a few
hundred neurons, one process against Ray with 2 workers on the same machine, in one run.

* Data: a planted layer (seeded): ``--images`` probe images with ``--concepts`` 0/1 concepts (each present
  with probability 0.2), ``--neurons`` neurons, each a sparse positive combination of 3 concepts plus
  noise. LE's defaults (elastic net λ≈0.0505, η=0.99, greedy v=10, r=10), ``neuron_block`` =
  ``--neurons`` / 2 in both runs (the elastic net solves two blocks of neurons; the Ray run gives one
  block to each worker).
* Timed (best of ``--repeat``, the two paths interleaved, after one warm-up call of each so that the
  Ray workers have started and imported torch; the cold start is reported separately):
  ``LinearExplanations(...).explain`` with ``engine="local"`` (all threads of this process) and
  ``engine="ray", shards=2`` on a local 2-CPU cluster (one thread per worker); and the two sharded
  steps alone (``elastic_net``, ``greedy_search``). Every Ray result is checked equal, bit for bit, to
  the local one.
* Goal on 2 cores: ratio Ray / local <= 1.2.

    python benchmarks/bench_ray_neurons.py [--neurons 256] [--concepts 600] [--images 4000] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

from neurocore.concepts import ConceptScores
from neurocore.methods.linear import LinearExplanations, elastic_net, greedy_search, rank_concepts
from neurocore.probe import ActivationStore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import machine, write_section  # noqa: E402


def planted(images: int, concepts: int, neurons: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    P = (torch.rand(images, concepts, generator=g) < 0.2).float()
    W = torch.zeros(concepts, neurons)
    for k in range(neurons):
        W[torch.randperm(concepts, generator=g)[:3], k] = 0.3 + torch.rand(3, generator=g)
    acts = P @ W + 0.3 * torch.rand(images, neurons, generator=g)
    return P, acts


def _interleaved(local_fn, ray_fn, repeat, check):
    local, remote = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        a = local_fn()
        local.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = ray_fn()
        remote.append(time.perf_counter() - start)
        check(a, b)
    return min(local), min(remote)


def _same_explanations(a, b):
    assert [(n.concepts, n.scores, n.bias) for n in a] == [(n.concepts, n.scores, n.bias) for n in b]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--concepts", type=int, default=600)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write the ray-neurons section of benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import ray

    P, acts = planted(args.images, args.concepts, args.neurons)
    names = [f"c{j}" for j in range(args.concepts)]
    store = ActivationStore.from_tensor(acts, top_k=10)
    scores = ConceptScores.from_tensor(P, names)
    block = max(1, args.neurons // 2)
    local_le = LinearExplanations(neuron_block=block)
    ray_le = LinearExplanations(neuron_block=block, engine="ray", shards=2)

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    start = time.perf_counter()
    first = ray_le.explain(store, scores)
    cold_s = time.perf_counter() - start
    _same_explanations(first, local_le.explain(store, scores))  # also the local path's warm-up

    le_local, le_ray = _interleaved(lambda: local_le.explain(store, scores), lambda: ray_le.explain(store, scores),
                                    args.repeat, _same_explanations)

    # the two sharded steps alone, on the split LE uses
    split = local_le._resolve_split(store)[0]
    tr_P, va_P = P[split.train], P[split.val]
    tr_a, va_a = acts[split.train], acts[split.val]
    en_local, en_ray = _interleaved(
        lambda: elastic_net(tr_P, tr_a, chunk_size=block),
        lambda: elastic_net(tr_P, tr_a, chunk_size=block, engine="ray", shards=2),
        args.repeat, lambda a, b: torch.equal(a, b) or sys.exit("elastic net differs"))
    ranking = rank_concepts(elastic_net(tr_P, tr_a, chunk_size=block))
    gs = (tr_P, va_P, tr_a, va_a, ranking)
    gr_local, gr_ray = _interleaved(lambda: greedy_search(*gs), lambda: greedy_search(*gs, engine="ray", shards=2),
                                    args.repeat, lambda a, b: a == b or sys.exit("greedy search differs"))
    ray.shutdown()
    load = os.getloadavg()[0]

    rows = [
        ("`LinearExplanations.explain` (whole method)", le_local, le_ray),
        ("`elastic_net` (blocks of neurons on Ray)", en_local, en_ray),
        ("`greedy_search` (neuron ranges on Ray)", gr_local, gr_ray),
    ]
    lines = [
        "## Per-neuron work on Ray: Linear Explanations, one process vs 2 Ray workers",
        "",
        f"{datetime.date.today()}, {machine('cpu')}; `python benchmarks/bench_ray_neurons.py --neurons {args.neurons} "
        f"--concepts {args.concepts} --images {args.images} --repeat {args.repeat}`. Planted layer (seeded): "
        f"{args.images} images, {args.concepts} 0/1 concepts, {args.neurons} neurons; LE's defaults, "
        f"`neuron_block={block}` in both runs. Local: this process, all threads; Ray: `engine=\"ray\", shards=2` on "
        "a local 2-CPU cluster (one thread per worker), warm workers; best of "
        f"{args.repeat}, interleaved. Every Ray result equal to the local one bit for bit (checked).",
        "",
        "| step | local (s) | Ray, 2 workers (s) | ratio Ray / local |",
        "|---|---:|---:|---:|",
    ]
    for name, a, b in rows:
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    lines += [
        "",
        f"Cold start, once: `ray.init` {init_s:.1f} s, then the first Ray `explain` {cold_s:.1f} s (the workers start "
        "a Python process and import torch and neurocore). Goal on 2 cores: ratio <= 1.2. Load average (1 min) at "
        f"the end of the run: {load:.1f} on {os.cpu_count()} CPUs (a shared machine: the steps' times, fractions of "
        "a second, move with it).",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section("ray-neurons", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
