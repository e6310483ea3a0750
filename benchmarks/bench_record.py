"""Recording overhead: ``neurocore.record`` against the bare forward loop over the same batches.

The issue's sizes: three layers of a ResNet-18 (random weights: only the time matters; ``layer2``,
``layer3``, ``layer4``, mean summaries), 256 probe tensors of 3×224×224, batches of 64, on the CPU
(or ``--device cuda``). Both sides are timed in this one run, alternating, best of ``--repeat``:

* baseline: ``for batch in batches: model(batch)`` under ``torch.inference_mode()`` (the tensors are
  already stacked, so the loop costs only the model);
* neurocore: ``record(model, layers, probe, batch_size=64, top_k=100)``, reading the same 256 tensors
  from a list dataset (batching, hooks, summaries, streaming top-k and the store included).

    python benchmarks/bench_record.py [--device cpu|cuda] [--images 256] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch
import torchvision

import neurocore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import machine, sync, write_section  # noqa: E402

LAYERS = ["layer2", "layer3", "layer4"]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the result into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, 224, 224, generator=g)
    probe = list(images)  # a map-style dataset of tensors, as a user's preprocessed probe
    batches = [images[i : i + args.batch_size].to(args.device) for i in range(0, args.images, args.batch_size)]

    def bare():
        with torch.inference_mode():
            for x in batches:
                model(x)

    def recorded():
        neurocore.record(model, LAYERS, probe, batch_size=args.batch_size, top_k=100, progress=False,
                         device=args.device)

    bare()
    recorded()  # warm-up both
    t_bare, t_rec = [], []
    for _ in range(args.repeat):
        for fn, out in ((bare, t_bare), (recorded, t_rec)):
            sync(args.device)
            start = time.perf_counter()
            fn()
            sync(args.device)
            out.append(time.perf_counter() - start)
    b, r = min(t_bare), min(t_rec)
    ratio = r / b
    body = (
        f"### Recording overhead ({datetime.date.today().isoformat()})\n\n"
        f"Machine: {machine(args.device)}. ResNet-18 (random weights), layers {', '.join(LAYERS)} (mean summaries, "
        f"top-100), {args.images} tensors of 3×224×224, batches of {args.batch_size}; best of {args.repeat}, "
        "alternating, in one run (`python benchmarks/bench_record.py`).\n\n"
        "| bare forward loop | `record` | ratio (goal ≤ 1.15×) |\n|---|---|---|\n"
        f"| {b:.2f} s | {r:.2f} s | {ratio:.3f}× |\n"
    )
    print(body)
    if args.write:
        write_section(f"record-overhead-{'gpu' if str(args.device).startswith('cuda') else 'cpu'}", body)
    return body


if __name__ == "__main__":
    main()
