"""The "where" benchmark on real weights and real boxes: EfficientNet-Lite0 (ImageNet weights) on
Tiny-ImageNet val images with their bounding boxes (``val_annotations.txt``, inclusive pixel coordinates).

On the same images, each method's map for the image's own class (its ImageNet logit: Tiny-ImageNet's
classes are ImageNet wnids), scored by :func:`neurocore.evaluate.where_benchmark`: localisation accuracy
(the box of the map above a threshold, IoU >= 0.5; the threshold chosen on held-out images and
reported), the pointing game (the map's maximum inside the box) and seconds per image:

* WWW class and sample heatmaps at ``bn2`` (1280×7×7, pooled by the head: closed-form importance),
  top-3 neurons; class importance from ``--train-per-class`` train images of each scored class;
  sample importance of the image for its own class;
* HINT at ``blocks.4`` (112×14×14; its benchmark's layer): concept classifiers and Shapley Φ on
  ``--hint-train`` train images (half from the animal classes) over the WordNet concepts "entity" (the
  root), "whole" and "animal", the top 80 % neurons by Φ; each image's most specific concept: the cells
  above 0.5 as a region (``hint regions``, HINT's localisation) and the probabilities as a score map
  (``hint scores``);
* Grad-CAM (``grad-cam`` package) at ``bn2`` (the last convolution) and at ``--cam-layer``, Score-CAM
  and Ablation-CAM at ``--cam-layer`` (default ``blocks.4``: they run one forward pass per channel and
  image, 112 there against 1280 at ``bn2``), LIME (``lime``, quickshift superpixels, ``--lime-samples``
  perturbations, seeded);
* the whole-image box (and the image centre as its point).

Images: the first val image of each class in ``val_annotations.txt`` order (one per class, classes in
order of first appearance), resized from 64 px to 224×224 (bicubic, no crop, mean = std = 0.5, as
``hint_tiny_imagenet.py``); boxes scaled to 224 px. The first ``--heldout`` images choose the
thresholds, the rest are scored. Seconds per image include each method's one-off fitting (WWW's class
importance, HINT's classifiers and Φ) spread over all the images it mapped.

    python benchmarks/bench_where.py [--images 60] [--heldout 20] [--lime-samples 32] [--write]

Sized for about 10 minutes on two free CPU cores (Score- and Ablation-CAM dominate: about 4 s per image
each there); more images give tighter numbers.

The last line printed is ``where: pointing <method> P ... , accuracy <method> A ... , n=N``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hint_tiny_imagenet import (  # noqa: E402
    DATA,
    SIZE,
    efficientnet_lite0,
    imagenet_logits,
    load_images,
    scale_boxes,
    train_rows,
    val_rows,
    wnids,
)

WWW_LAYER = "bn2"
HINT_LAYER = "blocks.4"
CAM_LAYER = "blocks.4"
HINT_CONCEPTS = ("whole", "animal")
ENTITY = "n00001740"  # WordNet's root synset, entity.n.01


def first_per_class(rows, count: int):
    """The first val row of each class, classes in order of first appearance, up to ``count`` rows."""
    seen, out = set(), []
    for r in rows:
        if r[1] not in seen:
            seen.add(r[1])
            out.append(r)
            if len(out) == count:
                break
    return out


def pointing_chance(boxes: torch.Tensor, size) -> torch.Tensor:
    """Tensor[B] float64: the share of the image each inclusive box covers (a random point's hit rate)."""
    b = torch.as_tensor(boxes, dtype=torch.float64)
    return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) / (size[0] * size[1])


def www_maps(model, images: torch.Tensor, targets: torch.Tensor, train_images: torch.Tensor, train_targets: torch.Tensor,
             layer: str = WWW_LAYER, batch_size: int = 32):
    """WWW's class and sample heatmaps (top-3 neurons, at the input size) of each image for its ``targets``
    logit; class importance from the training images. Returns ``(class maps, sample maps, seconds)``."""
    from neurocore.methods.www import class_heatmap, class_importance, sample_heatmap, sample_importance
    from neurocore.probe import spatial_maps

    clock = time.perf_counter()
    importance = class_importance(model, layer, list(zip(train_images, train_targets.tolist())), batch_size=batch_size)
    maps = spatial_maps(model, layer, images, range(len(images)), batch_size=batch_size)
    size = tuple(images.shape[-2:])
    own = sample_importance(model, layer, images, targets=targets, batch_size=batch_size)
    cls = class_heatmap(maps, importance, targets, size=size)
    smp = sample_heatmap(maps, own, size=size)
    return cls, smp, time.perf_counter() - clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60, help="val images (one per class), held-out ones included")
    parser.add_argument("--heldout", type=int, default=20, help="the first images, which choose the thresholds")
    parser.add_argument("--train-per-class", type=int, default=10, help="train images per scored class (WWW)")
    parser.add_argument("--hint-train", type=int, default=200, help="train images for HINT (half animal)")
    parser.add_argument("--lime-samples", type=int, default=32)
    parser.add_argument("--cam-layer", default=CAM_LAYER)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the where-tiny-imagenet section of RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark needs shared/data/tiny-imagenet-200")
    if not 0 < args.heldout < args.images:
        sys.exit(f"--heldout must lie in [1, --images); got {args.heldout} of {args.images}")

    import neurocore
    from _results import machine, write_section

    from neurocore.evaluate import hint_concept_maps, most_specific_concepts, where_benchmark
    from neurocore.methods.attribution import attribute
    from neurocore.methods.hint import ConceptHierarchy, Hint

    start = time.perf_counter()
    classes = wnids()
    logit = imagenet_logits(classes)
    model = efficientnet_lite0()
    rows = first_per_class(val_rows(DATA, classes), args.images)
    labels = torch.tensor([c for _, c, _ in rows])
    images = load_images([p for p, _, _ in rows])
    boxes = scale_boxes([b for _, _, b in rows])
    targets = logit[labels]
    n = len(rows)
    maps, seconds, setup = {}, {}, {}

    # WWW: class importance from train images of the scored classes.
    chosen = sorted(set(labels.tolist()))
    wrows = train_rows(DATA, classes, chosen, args.train_per_class * len(chosen))
    wimages = load_images([p for p, _ in wrows])
    cls, smp, www_s = www_maps(model, images, targets, wimages, logit[torch.tensor([c for _, c in wrows])],
                               batch_size=args.batch_size)
    maps["www class"], maps["www sample"] = cls, smp
    seconds["www class"] = seconds["www sample"] = www_s / n
    setup["WWW"] = f"class importance from {len(wrows)} train images ({args.train_per_class} per scored class), {www_s:.0f} s with the maps"
    del wimages

    # HINT: classifiers and Φ on train images (half animal) over "whole" and "animal".
    hierarchy = ConceptHierarchy.from_wordnet(classes, [ENTITY, *HINT_CONCEPTS])
    # WordNet's root, named: 18 of the 200 classes (foods, materials) lie under no other node
    hierarchy = ConceptHierarchy(hierarchy.leaves, (replace(hierarchy.nodes[0], name="entity"), *hierarchy.nodes[1:]))
    animal = set(hierarchy["animal"].leaves)
    half = args.hint_train // 2
    hrows = (train_rows(DATA, classes, [c for c in range(200) if c in animal], half)
             + train_rows(DATA, classes, [c for c in range(200) if c not in animal], args.hint_train - half))
    hlabels = torch.tensor([c for _, c in hrows])
    concepts = most_specific_concepts(hierarchy, labels)
    hm = hint_concept_maps(model, HINT_LAYER, load_images([p for p, _ in hrows]), logit[hlabels], hierarchy.membership(hlabels),
                           hierarchy.names, images, concepts, method=Hint(seed=args.seed, batch_size=args.batch_size))
    maps["hint regions"], maps["hint scores"] = hm.regions, hm.scores
    seconds["hint regions"] = seconds["hint scores"] = (hm.fit_seconds + hm.map_seconds) / n
    f1 = ", ".join(f"{c} {float(v):.3f}" for c, v in zip(hm.classifiers.concepts, hm.classifiers.f1))
    setup["HINT"] = (f"classifiers and Φ on {len(hrows)} train images ({half} animal), {hm.fit_seconds:.0f} s; "
                     f"held-out cell F1 (top 80 %): {f1}; of the {n} images {concepts.count('animal')} localise 'animal', "
                     f"{concepts.count('whole')} 'whole', {concepts.count('entity')} 'entity' (WordNet's root)")

    # The attribution baselines, for the same logit: Grad-CAM at the last conv layer (the usual choice) and
    # at the CAM layer, Score-CAM and Ablation-CAM at the CAM layer (one forward pass per channel), LIME.
    runs = [("gradcam", WWW_LAYER), ("gradcam", args.cam_layer), ("scorecam", args.cam_layer),
            ("ablationcam", args.cam_layer), ("lime", None)]
    for method, layer in runs:
        name = method if layer is None else f"{method} ({layer})"
        if name in maps:
            continue
        t0 = time.perf_counter()
        maps[name] = attribute(model, images, targets, method=method, layer=layer, batch_size=args.batch_size,
                               num_samples=args.lime_samples, seed=args.seed)
        seconds[name] = (time.perf_counter() - t0) / n
        print(f"{name}: {seconds[name]:.2f} s per image", flush=True)

    heldout = torch.arange(n) < args.heldout
    table = where_benchmark(maps, boxes, (SIZE, SIZE), heldout=heldout, seconds=seconds)
    with torch.no_grad():
        pred = torch.cat([model(images[s : s + args.batch_size]) for s in range(0, n, args.batch_size)])[:, logit].argmax(1)
    top1 = float((pred == labels).double().mean())
    test = ~heldout
    chance = float(pointing_chance(boxes[test], (SIZE, SIZE)).mean())
    total = time.perf_counter() - start

    lines = []
    for name, r in table.iterrows():
        t = "–" if r["threshold"] != r["threshold"] else f"{r['threshold']:.2f}"
        p = "–" if r["pointing"] != r["pointing"] else f"{r['pointing']:.3f}"
        lines.append(f"| {name} | {t} | {r['accuracy']:.3f} | {r['mean_iou']:.3f} | {p} | {r['seconds_per_image']:.3f} |")
    scored = int(table["images"].iloc[0])
    body = f"""## "Where" benchmark: EfficientNet-Lite0 on Tiny-ImageNet val boxes

{time.strftime('%Y-%m-%d')}, {machine('cpu')}, torch {torch.__version__}, neurocore {neurocore.__version__},
`python benchmarks/bench_where.py --images {args.images} --heldout {args.heldout} --train-per-class {args.train_per_class} --hint-train {args.hint_train} --lime-samples {args.lime_samples} --cam-layer {args.cam_layer} --write`
({total:.0f} s in all)

{n} val images, the first of each of {n} classes, resized 64 → 224 px (no crop), boxes scaled to 224 px; the
first {args.heldout} choose each map's threshold (the fraction of its min–max range kept, 0.05 … 0.95), the other
{scored} are scored. Every map explains the image's own class (its ImageNet logit; the model's top-1 among the
200 classes on these images: {top1:.3f}). WWW: heatmaps at `{WWW_LAYER}` (top-3 neurons), {setup['WWW']}.
HINT: `{HINT_LAYER}`, {setup['HINT']}; `hint regions` are the cells with probability > 0.5 (no threshold, no
maximum: no pointing), `hint scores` the probabilities. CAMs from the `grad-cam` package, at the layer in
brackets (Grad-CAM also at `{WWW_LAYER}`, the last convolution; Score- and Ablation-CAM need one forward pass
per channel and image: 112 at `blocks.4`, 1,280 at `bn2`);
LIME with {args.lime_samples} perturbed samples per image (quickshift superpixels, seed {args.seed}; its default
is 1,000). Seconds per image include the one-off fitting (WWW's importance, HINT's classifiers and Φ).

| method | threshold | localisation accuracy (IoU ≥ 0.5) | mean IoU | pointing game | seconds / image |
|---|---:|---:|---:|---:|---:|
{chr(10).join(lines)}

A uniformly random point falls in the box with probability {chance:.3f} here (the mean share of the image that
the scored boxes cover: the pointing game's chance level). The objects of Tiny-ImageNet are large (the whole-image box alone reaches IoU ≥ 0.5 on about half of the
images, and the centre lies inside most boxes), so the margins over the whole-image box are small here;
the concept world's planted boxes (`neurocore demo`) are the exact test.
"""
    summary = ("where: pointing " + ", ".join(f"{k} {v:.3f}" for k, v in table["pointing"].items() if v == v)
               + "; accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in table["accuracy"].items()) + f"; n={scored}")
    if args.write:
        write_section("where-tiny-imagenet", body.strip())
    else:
        print(body)
    print(summary)


if __name__ == "__main__":
    main()
