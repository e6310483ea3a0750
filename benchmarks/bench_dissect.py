"""End-to-end time of CLIP-Dissect on a ResNet-50, split into recording, encoding and scoring.

The issue's sizes: 5 layers of a ResNet-50 (random weights: only the time matters), 2,000 real
images (the 1,000 ImageNet samples plus the first 1,000 Tiny-ImageNet validation images, decoded and
preprocessed as a user's probe would be), the 20k concept set, and open_clip's ViT-B-16 (the
reference explainer's architecture; random weights, no hub here) as the vision–language model.

    python benchmarks/bench_dissect.py [--device cpu|cuda] [--images 2000] [--quick] [--write]

Stages, each timed once (they take seconds to minutes; no warm-up except model construction):
recording (neurocore.probe.record over the 5 layers), image encoding and text encoding
(neurocore.vlm.embed_images / embed_texts), scoring (ClipDissect.explain: SoftWPMI for every neuron
of the 5 layers against the 20k concepts, with labels and top-5 concepts).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch
import torchvision

import neurocore
from neurocore.concepts import ConceptScores, load_concepts
from neurocore.methods.clip_dissect import ClipDissect
from neurocore.probe import ImageFolder, record
from neurocore.vlm import OpenClip, embed_images, embed_texts

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import machine, sync, write_section  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LAYERS = ["layer1", "layer2", "layer3", "layer4", "fc"]


def probe_images(n: int) -> torch.utils.data.Dataset:
    """n real images as PIL: the ImageNet samples first, then Tiny-ImageNet validation images."""
    parts = []
    samples = DATA / "imagenet-samples"
    tiny = DATA / "tiny-imagenet-200" / "val" / "images"
    for folder in (samples, tiny):
        if folder.is_dir() and n > sum(len(p) for p in parts):
            ds = ImageFolder(folder)
            take = min(len(ds), n - sum(len(p) for p in parts))
            parts.append(torch.utils.data.Subset(ds, range(take)))
    if not parts or sum(len(p) for p in parts) < n:
        sys.exit(f"need {n} images under {DATA} (imagenet-samples, tiny-imagenet-200/val)")
    return torch.utils.data.ConcatDataset(parts)


def timed(device: str, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concepts", default="20k")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="100 images, 1,000 concepts (smoke run)")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    device = args.device
    n_images = 100 if args.quick else args.images
    concepts = load_concepts(args.concepts)[: 1000 if args.quick else None]
    probe = probe_images(n_images)

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    transform = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    vlm = OpenClip("ViT-B-16", pretrained=None, device=device)

    store, t_record = timed(device, lambda: record(model, LAYERS, probe, transform=transform, top_k=100,
                                                   batch_size=args.batch_size, progress=True))
    images, t_images = timed(device, lambda: embed_images(vlm, probe, batch_size=args.batch_size, progress=True))
    texts, t_texts = timed(device, lambda: embed_texts(vlm, concepts, progress=True))

    def score():
        sims = images.embeddings.to(device) @ texts.to(device).T
        cs = ConceptScores.from_tensor(sims.cpu(), concepts)
        return ClipDissect(method="soft_wpmi").explain(store, cs)

    explanations, t_score = timed(device, score)
    neurons = sum(store[l].num_neurons for l in LAYERS)
    assert len(explanations) == neurons
    total = t_record + t_images + t_texts + t_score
    rows = [
        ("recording (5 layers, ResNet-50)", t_record),
        ("encoding images (ViT-B-16)", t_images),
        (f"encoding {len(concepts):,} concepts (ViT-B-16 text tower)", t_texts),
        (f"scoring (SoftWPMI, {neurons:,} neurons × {len(concepts):,} concepts, labels + top-5)", t_score),
        ("total", total),
    ]
    for name, t in rows:
        print(f"{name:70s} {t:8.1f} s")
    if args.write and not args.quick:
        body = [
            f"## dissect end to end, {device.upper()}: {machine(device)}",
            "",
            f"{datetime.date.today().isoformat()}, torch {torch.__version__}, neurocore {neurocore.__version__}, "
            f"`python benchmarks/bench_dissect.py --device {device} --write`. ResNet-50 (random weights) layers "
            f"{', '.join(LAYERS)} ({neurons:,} neurons), {len(store[LAYERS[0]].summaries):,} real images "
            f"(ImageNet samples + Tiny-ImageNet val, preprocessed to 224 px), {len(concepts):,} concepts (20k set), "
            f"open_clip ViT-B-16 (random weights), batch {args.batch_size}, no cache.",
            "",
            "| stage | time |",
            "|---|---:|",
            *[f"| {name} | {t:.1f} s |" for name, t in rows],
        ]
        write_section(f"dissect-{device}", "\n".join(body))


if __name__ == "__main__":
    main()
