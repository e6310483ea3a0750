"""The ``neurocore`` command line: ``demo``, ``explain``, ``dissect``, ``hint``, ``www`` and ``layers``.

``neurocore explain --method clip_dissect linear hint www ...`` runs any methods of the registry over one
recording and writes one report (:mod:`neurocore._cli._explain`); ``dissect``, ``hint`` and ``www`` are
its aliases for one method, with the options and files those commands always had.

``neurocore demo`` dissects a small CNN trained on a synthetic world whose concepts are known, offline,
in well under two minutes on two CPU cores. ``neurocore dissect`` runs CLIP-Dissect on any torchvision
or timm model, or a model saved to a file (loaded by :mod:`neurocore.models`), over a folder of images,
through the pipeline that :func:`neurocore.dissect` and the demo share. ``neurocore layers`` lists a
model's layer names. ``neurocore hint`` and ``neurocore www`` run those methods on a folder of images
and write their explanations and HTML reports. Bad input ends with ``neurocore: error: ...`` and exit status 1 (2 for malformed
arguments), without a traceback.

Security: ``--model FILE`` holding a whole pickled ``nn.Module`` (``torch.save(model, FILE)``) is read
with ``torch.load(weights_only=False)``, which unpickles it, and unpickling can run arbitrary code:
only load model files you trust. State dicts given with ``--weights`` are read with
``weights_only=True`` (tensors only, safe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from neurocore import models as _models
from neurocore._errors import NeurocoreError
from neurocore.scale import _sweep

DEFAULT_DISSECT_OUT = "neurocore-out"

# Model loading lives in neurocore.models; these names stay importable from here.
load_model = _models.load_model
load_state_dict_file = _models.load_weights
imagenet_transform = _models.imagenet_transform
IMAGENET_MEAN, IMAGENET_STD = _models.IMAGENET_MEAN, _models.IMAGENET_STD
_SKIPPED_SHOWN = 10  # skipped files named on stderr; all of them go to OUT/skipped.csv

# ----------------------------------------------------------------------------------------------
# argument parsing


def _layouts(values, layers):
    """``--layout``: one layout for every layer, or ``LAYER=LAYOUT`` pairs (other layers: auto)."""
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out = {}
    for value in values:
        layer, sep, layout = value.rpartition("=")
        if not sep or not layer:
            raise NeurocoreError(
                f"--layout takes one layout for all layers or LAYER=LAYOUT pairs; got {value!r} among {values}"
            )
        if layer not in layers:
            raise NeurocoreError(f"--layout names layer {layer!r}, which is not in --layers {list(layers)}")
        out[layer] = layout
    return out


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {value}")
    return value


_fraction.__name__ = "number in (0, 1]"


def _add_preprocessing_options(parser: argparse.ArgumentParser, title: str) -> None:
    """The preprocessing options of ``dissect`` and ``explain`` (read by ``models.load_model``), in a group ``title``."""
    pre = parser.add_argument_group(title)
    pre.add_argument("--input-size", type=_int_at_least(1), metavar="PIXELS", help="input edge")
    pre.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation mean, [0, 1] scale")
    pre.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation std, [0, 1] scale")
    pre.add_argument("--interpolation", choices=_models.INTERPOLATIONS, help="resize interpolation")
    pre.add_argument("--crop-pct", type=_fraction, metavar="FRACTION",
                     help="input edge / resized edge before the centre crop (0.875: resize 256, crop 224)")


def build_parser() -> argparse.ArgumentParser:
    """The ``neurocore`` argument parser (sub-commands ``demo``, ``explain``, ``dissect``, ``hint``, ``www``, ``layers``).

    Example:
        >>> args = build_parser().parse_args(["demo", "--epochs", "2", "--no-progress"])
        >>> args.command, args.epochs, args.similarity
        ('demo', 2, 'wpmi')
    """
    from neurocore import __version__
    from neurocore.concepts import builtin_concept_sets
    from neurocore.demo import DEFAULT_OUT
    from neurocore.methods.clip_dissect import SIMILARITIES

    parser = argparse.ArgumentParser(
        prog="neurocore",
        description="Explain what individual neurons of vision networks do.",
        epilog="Run 'neurocore COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"neurocore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="dissect a small CNN trained on a synthetic world with known concepts (offline, < 2 min)",
        description=(
            "Train a small CNN (deterministically, on the CPU) to classify synthetic images of coloured, "
            "textured shapes ('red circle', ...), dissect every layer with CLIP-Dissect using the images' exact "
            "concepts, and compare with the ground truth. Writes explanations.csv/.json, summary.csv, demo.json, "
            "demo_cnn.pt and the HTML report index.html to --out; prints a summary and, last, "
            "'final-layer accuracy: <fraction>' (share of output neurons labelled with their own class)."
        ),
    )
    demo.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    demo.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of images, initialisation and shuffling (default: 0)")
    demo.add_argument(
        "--similarity", "--method", dest="similarity", choices=SIMILARITIES, default="wpmi",
        help="CLIP-Dissect similarity function (default: wpmi; soft_wpmi saturates on exact 0/1 concept scores); "
             "--method is its old name",
    )
    demo.add_argument("--epochs", type=_int_at_least(1), default=8, help="training epochs (default: 8)")
    demo.add_argument("--train-per-class", type=_int_at_least(1), default=150, metavar="N", help="training images per class (default: 150)")
    demo.add_argument("--probe-per-class", type=_int_at_least(1), default=150, metavar="N", help="probe images per class (default: 150)")
    demo.add_argument("--image-size", type=_int_at_least(24), default=32, metavar="PIXELS", help="image edge (default: 32)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    dis = sub.add_parser(
        "dissect",
        help="label every neuron of some layers of a model with CLIP-Dissect",
        description=(
            "Record the layers of a model over a folder of images and label each neuron with the concept that "
            "best matches its most activating images (CLIP-Dissect). Image-concept scores come from a "
            "vision-language model (--vlm), a given score matrix (--scores) or the folder's class labels "
            "(--labels). Writes explanations.csv/.json, skipped.csv (unreadable images) and the HTML report "
            "index.html to --out."
        ),
        epilog=(
            "Security: a --model FILE holding a pickled nn.Module is unpickled (torch.load(weights_only=False)), "
            "which can run arbitrary code: only load model files you trust. --weights files are read with "
            "weights_only=True."
        ),
    )
    dis.add_argument("--model", required=True, metavar="NAME_OR_FILE",
                     help="torchvision or timm model name (prefix 'timm:' or 'torchvision:' to choose), or a model file")
    dis.add_argument("--layers", required=True, nargs="+", metavar="LAYER",
                     help="module names as model.named_modules() spells them (see 'neurocore layers')")
    dis.add_argument("--probe", required=True, metavar="DIR", help="folder of probe images (class sub-folders or flat)")
    source = dis.add_mutually_exclusive_group(required=True)
    source.add_argument("--vlm", metavar="SPEC", help="vision-language model 'open_clip:NAME:TAG_OR_CHECKPOINT' scoring images against --concepts")
    source.add_argument("--scores", metavar="FILE",
                        help="given image-concept scores: a .pt file with a Tensor[N, M] (columns: --concepts; rows: the probe's images in sorted order) "
                             "or a {'scores': ..., 'concepts': [...]} dict, or a folder written by ConceptScores.save")
    source.add_argument("--labels", action="store_true",
                        help="the probe's classes are the concepts (0/1 scores): its class sub-folders, or --annotations")
    dis.add_argument("--annotations", metavar="FILE",
                     help="file -> class table for --labels, one image per line: 'FILE<TAB>CLASS[<TAB>...]' "
                          "(Tiny-ImageNet's val_annotations.txt), for a probe whose images are not in class sub-folders")
    dis.add_argument("--concepts", metavar="SET",
                     help=f"concept set for --vlm or --scores: a built-in set ({', '.join(builtin_concept_sets())}) "
                          "or a text file with one concept per line")
    dis.add_argument("--similarity", "--method", dest="similarity", choices=SIMILARITIES, default="soft_wpmi",
                     help="similarity function (default: soft_wpmi); --method is its old name")
    dis.add_argument("--out", default=DEFAULT_DISSECT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_DISSECT_OUT})")
    dis.add_argument("--weights", metavar="FILE", help="state dict file to load into the model")
    dis.add_argument("--key-map", metavar="MAP",
                     help="how the names in --weights map to the model's: 'order' (same tensors in the same order, "
                          "other names: weights from another codebase), 'strip:PREFIX', or a JSON file {old: new}")
    dis.add_argument("--random-init", action="store_true", help="do not fetch pretrained weights for a model name")
    _add_preprocessing_options(dis, "preprocessing (default: the model's own, else ImageNet's: 224, bilinear, crop 0.875)")
    dis.add_argument("--summary", choices=("mean", "max", "first"), default="mean", help="per-neuron summary of a layer's output (default: mean)")
    dis.add_argument(
        "--layout", nargs="+", default=["auto"], metavar="[LAYER=]LAYOUT",
        help="where batch and channels sit in the layers' outputs: auto (default), NCHW, NHWC (Swin), NLC (tokens), "
             "LNC (sequence-first tokens), NCL or NC; one for all layers, or LAYER=LAYOUT per layer",
    )
    dis.add_argument("--template", help="prompt template for --vlm, e.g. 'a photo of {}' (default: none)")
    dis.add_argument("--batch-size", type=_int_at_least(1), default=64, help="images per forward pass (default: 64)")
    dis.add_argument("--num-workers", type=_int_at_least(0), default=0, help="data loader worker processes (default: 0)")
    dis.add_argument("--device", help="where the model runs, e.g. cpu, cuda or cuda:1 (default: cpu)")
    dis.add_argument("--cache-dir", metavar="DIR", help="cache recorded activations and embeddings here")
    dis.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="record (and encode with --vlm) in this process (local, default) or in Ray workers (ray: "
                          "needs --cache-dir and `pip install neurocore[ray]`; the shards meet in the cache)")
    dis.add_argument("--address", metavar="HOST:PORT",
                     help="the Ray cluster for --engine ray ('auto' or HOST:6379 after `ray start --head`; default: a local one)")
    dis.add_argument("--top-concepts", type=_int_at_least(1), default=5, metavar="N", help="concepts kept per neuron (default: 5)")
    dis.add_argument("--report-neurons", type=_int_at_least(0), default=64, metavar="N",
                     help="neurons per layer shown with their top images in the report (default: 64)")
    dis.add_argument("--report-images", type=_int_at_least(0), default=5, metavar="N", help="top images per neuron in the report (default: 5)")
    dis.add_argument("--no-progress", action="store_true", help="no progress bars")

    from neurocore._cli._explain import add_explain_parser

    add_explain_parser(sub)
    _add_hint_parser(sub)
    _add_www_parser(sub)

    lay = sub.add_parser("layers", help="list a model's layer (module) names", description="List the module names of a model, for --layers.")
    lay.add_argument("--model", required=True, metavar="NAME_OR_FILE", help="as for 'neurocore dissect'")
    lay.add_argument("--depth", type=_int_at_least(1), metavar="N", help="only names with at most N dot-separated parts")
    # further commands add their parser here (and their function to _COMMANDS)
    _sweep.add_sweep_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------------
# commands


def _cmd_demo(args) -> None:
    import pandas as pd

    from neurocore.demo import run_demo

    start = time.perf_counter()
    result = run_demo(
        args.out,
        seed=args.seed,
        image_size=args.image_size,
        train_per_class=args.train_per_class,
        probe_per_class=args.probe_per_class,
        epochs=args.epochs,
        similarity=args.similarity,
        progress=not args.no_progress,
    )
    total = time.perf_counter() - start
    world, training = result.world, result.training
    print(
        f"concept world: {len(world.classes)} classes ('<colour> <shape>'), {len(world.concepts)} concepts "
        f"({len(world.shapes)} shapes, {len(world.colours)} colours, {len(world.textures)} textures, "
        f"{len(world.backgrounds)} backgrounds, {len(world.classes)} objects)"
    )
    print(
        f"CNN trained on {args.train_per_class * len(world.classes)} images in {result.seconds['training']:.1f} s "
        f"(weights digest {training.digest[:16]}); accuracy on {len(result.probe)} probe images: {result.probe_accuracy:.4f}"
    )
    print(f"labels by CLIP-Dissect ({args.similarity}) from exact concept scores; neurons per concept family of their label:")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        print(result.summary.to_string())
    print("label_precision: share of a neuron's top images that show its label's concept (ground truth)")
    if result.hint is not None:
        row = result.hint.localization.loc[80] if 80 in result.hint.localization.index else result.hint.localization.iloc[-1]
        print(
            f"HINT ({result.hint.layer}, concept 'object', top 80% neurons by Shapley contribution): localization "
            f"accuracy {row['accuracy']:.4f} vs whole-image box {row['whole_image']:.4f} on {result.hint.num_test} "
            "planted object boxes"
        )
    if result.where is not None:  # the "where" benchmark on the planted objects (issue 11)
        print("where (planted object boxes; threshold chosen on held-out images):\n" + result.where.round(4).to_string())
    print(f"wrote {result.report} and the explanations (CSV/JSON) in {result.out_dir} ({total:.1f} s in all)")
    print(f"final-layer accuracy: {result.final_layer_accuracy:.4f}")


def _device(text: str | None):
    """``--device`` as a torch.device, refused before any model is built or moved when the machine
    does not have it (moving a model to a missing GPU fails deep inside torch)."""
    import torch

    if text is None:
        return None
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise NeurocoreError(f"--device {text!r} is not a device ({str(exc).splitlines()[0]}); e.g. cpu, cuda, cuda:1") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "no NVIDIA GPU or driver was found" if torch.version.cuda else f"torch {torch.__version__} is a CPU build"
            raise NeurocoreError(
                f"--device {text!r}: no CUDA device is available: torch.cuda.is_available() is False ({why}). "
                "Leave --device out (or --device cpu) to run on the CPU"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise NeurocoreError(f"--device {text!r}: this machine has {count} CUDA device(s), numbered 0..{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise NeurocoreError(f"--device {text!r}: no MPS device is available: torch.backends.mps.is_available() is False")
    return device


def _key_map(text: str | None):
    """``--key-map``: 'order', 'strip:PREFIX', or a JSON file holding {old name: new name}."""
    if text is None or text == "order" or text.startswith("strip:"):
        return text
    path = Path(text)
    if not path.is_file():
        raise NeurocoreError(f"--key-map must be 'order', 'strip:PREFIX' or a JSON file {{old: new}}; {text!r} is none of them")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NeurocoreError(f"cannot read --key-map {text!r} as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise NeurocoreError(f"--key-map {text!r} must hold one JSON object {{\"old name\": \"new name\", ...}}")
    return mapping


def _cmd_dissect(args) -> None:
    """``neurocore dissect``: ``explain --method clip_dissect`` with dissect's options and files."""
    from neurocore._cli._explain import cmd_explain, from_dissect

    cmd_explain(from_dissect(args))


def _read_scores(path: str, concepts):
    """``--scores``: a ConceptScores folder, or a .pt tensor / dict (concept names from --concepts)."""
    import torch

    from neurocore.concepts import ConceptScores, load_concepts

    p = Path(path)
    if p.is_dir():
        loaded = ConceptScores.load(p)
        if concepts is not None and list(load_concepts(concepts)) != list(loaded.concepts):
            raise NeurocoreError(f"--concepts differ from the concepts saved with --scores {path!r}; leave --concepts out")
        return loaded
    obj = _models._load_user_file(p, "--scores", "--scores", "", "save a tensor with torch.save(scores, path)")
    names = None
    if isinstance(obj, dict):
        if "scores" not in obj:
            raise NeurocoreError(f"--scores {path!r} holds a dict without a 'scores' entry")
        names = obj.get("concepts")
        obj = obj["scores"]
    if not isinstance(obj, torch.Tensor) or obj.dim() != 2:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise NeurocoreError(f"--scores must hold a Tensor[N images, M concepts]; {path!r} holds {shape}")
    if concepts is not None:
        if names is not None and list(load_concepts(concepts)) != [str(n) for n in names]:
            raise NeurocoreError(f"--concepts differ from the concept names saved in --scores {path!r}; leave --concepts out")
        names = load_concepts(concepts)
    if names is None:
        raise NeurocoreError(f"--scores {path!r} is a bare tensor: name its {obj.shape[1]} columns with --concepts (a file or set)")
    if obj.shape[1] != len(names):
        raise NeurocoreError(
            f"--scores has {obj.shape[1]} columns but {len(names)} concepts were given: one column per concept, in order"
        )
    return ConceptScores.from_tensor(obj, names, source=f"file:{p.name}")


def _add_hint_parser(sub) -> None:
    """``neurocore hint``: its options (the command is :func:`_cmd_hint`)."""
    from neurocore.methods.hint import CLASSIFIERS, CONTRIBUTIONS, SALIENCY_METHODS

    hp = sub.add_parser(
        "hint",
        help="HINT: which neurons of a layer detect hierarchical concepts (animal, whole, ...), and where",
        description=(
            "Compute each image's layer saliency and responsible regions, fit one linear classifier per concept "
            "of the WordNet hierarchy above the images' classes (or of --groups), and score every neuron's Shapley "
            "contribution to each concept (HINT, Wang et al. 2022). Writes explanations.csv/.json, phi.csv, "
            "association.png, the neuron table neurons.html and the HINT report index.html to --out."
        ),
    )
    hp.add_argument("--model", required=True, metavar="NAME_OR_FILE", help="as for 'neurocore dissect'")
    hp.add_argument("--layer", required=True, metavar="LAYER", help="a convolutional layer's module name")
    hp.add_argument("--images", required=True, metavar="DIR",
                    help="labelled images: class sub-folders named by WordNet id (n01443537/...), or --annotations")
    hp.add_argument("--annotations", metavar="FILE", help="file -> class table ('FILE<TAB>CLASS' lines) for a flat folder")
    hp.add_argument("--concepts", required=True, nargs="+", metavar="CONCEPT",
                    help="hierarchy nodes by name (animal, whole, mammal, bird, ...) or WordNet id; with --groups, its names")
    hp.add_argument("--groups", metavar="JSON",
                    help="a JSON file {concept: [class, ...]} for classes that are not WordNet ids")
    hp.add_argument("--target", default="auto", choices=("auto", "label", "predicted", "logit_sum", "imagenet"),
                    help="which logit the saliency differentiates: auto (ImageNet's logit of each WordNet class for a "
                         "1000-class model, the class label when the model has one output per class, else an "
                         "error: choose predicted or logit_sum), label, predicted, logit_sum, imagenet")
    hp.add_argument("--saliency", choices=SALIENCY_METHODS, default="guided_backprop", help="(default: guided_backprop)")
    hp.add_argument("--classifier", choices=CLASSIFIERS, default="logistic", help="(default: logistic)")
    hp.add_argument("--contribution", choices=CONTRIBUTIONS, default="shapley", help="(default: shapley)")
    hp.add_argument("--images-per-concept", type=_int_at_least(1), default=50, metavar="N", help="(default: 50)")
    hp.add_argument("--top-n", type=_int_at_least(1), default=10, metavar="N", help="collaborative neurons per concept (default: 10)")
    hp.add_argument("--examples", type=_int_at_least(0), default=4, metavar="N", help="example images per concept in the report (default: 4)")
    hp.add_argument("--out", default="neurocore-hint", metavar="DIR", help="output folder (default: neurocore-hint)")
    hp.add_argument("--weights", metavar="FILE", help="state dict file to load into the model")
    hp.add_argument("--key-map", metavar="MAP", help="as for 'neurocore dissect' (e.g. order)")
    hp.add_argument("--random-init", action="store_true", help="do not fetch pretrained weights for a model name")
    hp.add_argument("--input-size", type=_int_at_least(1), metavar="PIXELS", help="input edge (default: the model's)")
    hp.add_argument("--batch-size", type=_int_at_least(1), default=32, help="images per pass (default: 32)")
    hp.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of every random choice (default: 0)")
    hp.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_hint(args) -> None:
    """``neurocore hint``: ``explain --method hint`` with hint's options and files."""
    from neurocore._cli._explain import cmd_explain, from_hint

    cmd_explain(from_hint(args))


def _cmd_layers(args) -> None:
    model, _ = load_model(args.model, pretrained=False)
    for name, module in model.named_modules():
        if not name or (args.depth is not None and name.count(".") + 1 > args.depth):
            continue
        print(f"{name}\t{type(module).__name__}")


def _add_www_parser(sub) -> None:
    """``neurocore www``: its options (the command is :func:`_cmd_www`)."""
    wp = sub.add_parser(
        "www",
        help="WWW: major and minor concepts of every neuron of a layer, and class vs sample heatmaps",
        description=(
            "Label every neuron of a layer with its major concepts (adaptive cosine similarity over its top images) "
            "and minor concepts (over the crops around its highest cell), and show per image the class and sample "
            "heatmaps with their similarity (WWW, Ahn et al. 2024). Image-concept similarities come from a "
            "vision-language model (--vlm) or a given score matrix (--scores; no minor concepts then). Writes "
            "explanations.csv/.json and the WWW report index.html to --out."
        ),
    )
    wp.add_argument("--model", required=True, metavar="NAME_OR_FILE", help="as for 'neurocore dissect'")
    wp.add_argument("--layer", required=True, metavar="LAYER", help="the module whose neurons are explained")
    wp.add_argument("--images", required=True, metavar="DIR", help="folder of probe images (class sub-folders or flat)")
    source = wp.add_mutually_exclusive_group(required=True)
    source.add_argument("--vlm", metavar="SPEC", help="vision-language model 'open_clip:NAME:TAG_OR_CHECKPOINT'")
    source.add_argument("--scores", metavar="FILE", help="given image-concept scores, as for 'neurocore dissect --scores'")
    wp.add_argument("--concepts", metavar="SET",
                    help="concept set: a built-in set or a text file, one concept per line (default with --vlm: wordnet_nouns)")
    wp.add_argument("--template", default="A photo of a {}", help="prompt template for --vlm (default: 'A photo of a {}')")
    wp.add_argument("--n-images", type=_int_at_least(1), default=40, metavar="N", help="top images per neuron (default: 40)")
    wp.add_argument("--alpha-major", type=_fraction, default=0.95, help="major concepts' threshold (default: 0.95)")
    wp.add_argument("--alpha-minor", type=_fraction, default=0.90, help="minor concepts' threshold (default: 0.90)")
    wp.add_argument("--crop-fraction", type=_fraction, default=0.5, help="crop side / input side (default: 0.5)")
    wp.add_argument("--heatmap-images", type=_int_at_least(0), default=6, metavar="N",
                    help="images shown with their class and sample heatmaps (default: 6; class importance counts each "
                         "image of --images for its predicted class)")
    wp.add_argument("--report-neurons", type=_int_at_least(0), default=32, metavar="N", help="neurons in the report (default: 32)")
    wp.add_argument("--report-images", type=_int_at_least(0), default=4, metavar="N",
                    help="example images (and crops) per neuron in the report (default: 4)")
    wp.add_argument("--out", default="neurocore-www", metavar="DIR", help="output folder (default: neurocore-www)")
    wp.add_argument("--weights", metavar="FILE", help="state dict file to load into the model")
    wp.add_argument("--key-map", metavar="MAP", help="as for 'neurocore dissect' (e.g. order)")
    wp.add_argument("--random-init", action="store_true", help="do not fetch pretrained weights for a model name")
    wp.add_argument("--input-size", type=_int_at_least(1), metavar="PIXELS", help="input edge (default: the model's)")
    wp.add_argument("--batch-size", type=_int_at_least(1), default=32, help="images per pass (default: 32)")
    wp.add_argument("--device", help="where the models run (default: cpu)")
    wp.add_argument("--cache-dir", metavar="DIR", help="cache embeddings here")
    wp.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_www(args) -> None:
    """``neurocore www``: ``explain --method www`` with www's options and files."""
    from neurocore._cli._explain import cmd_explain, from_www

    cmd_explain(from_www(args))


def _cmd_explain(args) -> None:
    from neurocore._cli._explain import cmd_explain

    cmd_explain(args)


_COMMANDS = {
    "demo": _cmd_demo,
    "explain": _cmd_explain,
    "dissect": _cmd_dissect,
    "layers": _cmd_layers,
    "hint": _cmd_hint,
    "www": _cmd_www,
    "sweep": _sweep.cmd_sweep,
    # further commands: one entry here and their parser at the end of build_parser
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 bad input or a file system error,
    2 malformed arguments (argparse exits), 130 interrupted).

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     status = main(["layers", "--model", "no_such_model"])
        >>> status, err.getvalue().startswith("neurocore: error:")
        (1, True)
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 and a usage message on malformed arguments

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"neurocore: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            _COMMANDS[args.command](args)
        except NeurocoreError as exc:
            print(f"neurocore: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # an unwritable --out, a full disk...: the environment, not a bug
            print(f"neurocore: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("neurocore: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
