"""The ``neurocore`` command line: ``demo``, ``dissect`` and ``layers``.

``neurocore demo`` dissects a small CNN trained on a synthetic world whose concepts are known, offline,
in well under two minutes on two CPU cores. ``neurocore dissect`` runs CLIP-Dissect on any torchvision
or timm model, or a model saved to a file, over a folder of images. ``neurocore layers`` lists a
model's layer names. Bad input ends with ``neurocore: error: ...`` and exit status 1 (2 for malformed
arguments), without a traceback.

Security: ``--model FILE`` holding a whole pickled ``nn.Module`` (``torch.save(model, FILE)``) is read
with ``torch.load(weights_only=False)``, which unpickles it, and unpickling can run arbitrary code:
only load model files you trust. State dicts given with ``--weights`` are read with
``weights_only=True`` (tensors only, safe).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

from neurocore._errors import NeurocoreError, close_matches

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_DISSECT_OUT = "neurocore-out"

# ----------------------------------------------------------------------------------------------
# models: names, files, weights, preprocessing


def load_model(spec: str, weights: str | os.PathLike | None = None, *, pretrained: bool = True, input_size: int | None = None):
    """Build a model and its preprocessing from a name or a file (what ``--model`` accepts).

    Args:
        spec: one of

            * a torchvision model name (``torchvision.models.list_models()``), e.g. ``"resnet18"``,
              optionally prefixed ``"torchvision:"``;
            * a timm model name (``timm.list_models()``), e.g. ``"tf_efficientnet_lite0"``,
              optionally prefixed ``"timm:"`` (a name both libraries know goes to torchvision
              unless prefixed);
            * a file: a whole ``nn.Module`` saved with ``torch.save(model, path)`` (unpickled with
              ``weights_only=False``: this can run code from the file, load only files you trust),
              or a ``torch.export`` program saved with ``torch.export.save`` (``.pt2``; its module
              hierarchy is restored with ``torch.export.unflatten`` so layers can be hooked; export
              with a dynamic batch dimension). TorchScript files cannot be dissected: torch does
              not support forward hooks on ScriptModules.
        weights: a state dict file (``torch.save(model.state_dict(), path)``, possibly wrapped in
            ``{"state_dict": ...}`` or ``{"model": ...}``, keys possibly prefixed ``module.``) loaded
            into the model; every key must match. With a model name, the name's pretrained weights
            are then not fetched.
        pretrained: for names without ``weights``: fetch the library's pretrained weights (from the
            torch/Hugging Face cache, or downloaded). False: random initialisation.
        input_size: the square input edge of the preprocessing (images are resized to
            ``input_size / 0.875`` and centre-cropped); None: the model's own (timm's data config,
            torchvision's weights transforms) or 224.

    Returns:
        ``(model, transform)``: the model in eval mode on the CPU, and a callable from a PIL image to
        the model's input tensor.

    Raises:
        NeurocoreError: an unknown name (with close matches), an unreadable or wrong kind of file,
            weights that do not fit the architecture, pretrained weights that cannot be fetched.

    Example:
        >>> model, transform = load_model("resnet18", pretrained=False, input_size=64)
        >>> import PIL.Image
        >>> transform(PIL.Image.new("RGB", (80, 100))).shape
        torch.Size([3, 64, 64])
    """
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1):
        raise NeurocoreError(f"input_size must be a positive integer; got {input_size!r}")
    library, name = _split_spec(spec)
    if library == "file":
        model = _load_model_file(Path(name))
        transform = None
    elif library == "torchvision":
        model, transform = _torchvision_model(name, pretrained and weights is None)
    else:
        model, transform = _timm_model(name, pretrained and weights is None, input_size)
    if weights is not None:
        load_state_dict_file(model, weights)
    if transform is None or (input_size is not None and library != "timm"):
        transform = imagenet_transform(input_size or 224)
    return model.eval(), transform


def _split_spec(spec: str) -> tuple[str, str]:
    """``(library, name)`` with library ``"file"``, ``"torchvision"`` or ``"timm"``."""
    if not isinstance(spec, str) or not spec.strip():
        raise NeurocoreError(f"--model must be a model name or a file; got {spec!r}")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in ("torchvision", "timm"):
        known = rest in _torchvision_names() if prefix == "torchvision" else _is_timm_model(rest)
        if not known:
            names = _torchvision_names() if prefix == "torchvision" else _timm_names()
            raise NeurocoreError(_unknown_name_message(rest, names, f"{prefix} model"))
        return prefix, rest
    path = Path(spec).expanduser()
    if path.is_file():
        return "file", str(path)
    if path.is_dir():
        raise NeurocoreError(f"--model {spec!r} is a folder; give a model name or a model file")
    if spec in _torchvision_names():
        return "torchvision", spec
    if _is_timm_model(spec):
        return "timm", spec
    looks_like_file = os.sep in spec or spec.endswith((".pt", ".pth", ".pt2", ".bin", ".ckpt"))
    if looks_like_file:
        raise NeurocoreError(f"model file {spec!r} does not exist")
    names = list(dict.fromkeys(_torchvision_names() + _timm_names()))
    raise NeurocoreError(_unknown_name_message(spec, names, "model name"))


def _unknown_name_message(name: str, names: Sequence[str], what: str) -> str:
    near = close_matches(name, names)
    hint = f"; close matches: {', '.join(near)}" if near else ""
    return (
        f"unknown {what} {name!r}{hint}. Give a torchvision model name (torchvision.models.list_models()), "
        "a timm model name (timm.list_models()), or the path of a model file"
    )


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models())


def _is_timm_model(name: str) -> bool:
    """timm knows the architecture (a pretrained tag such as ``resnet18.a1_in1k`` is allowed)."""
    import timm

    return bool(timm.is_model(name))


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def _torchvision_model(name: str, pretrained: bool):
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(name, weights=None), None
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        enum = None
    if enum is None or not len(enum):
        raise NeurocoreError(
            f"torchvision has no pretrained weights for {name!r}: pass --weights FILE or --random-init"
        )
    weights = enum.DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as exc:  # a download failure has many types (URLError, HTTPError, hash mismatch...)
        raise NeurocoreError(
            f"could not get torchvision's pretrained weights {weights} for {name!r} ({type(exc).__name__}: {exc}). "
            "Offline? Put the file into torch's hub cache, pass a state dict with --weights FILE, or use "
            "--random-init for random weights"
        ) from None
    return model, weights.transforms()


def _timm_model(name: str, pretrained: bool, input_size: int | None):
    import timm
    from timm.data import create_transform, resolve_data_config

    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as exc:  # hub and network errors come in many types
        if not pretrained:
            raise
        raise NeurocoreError(
            f"could not get timm's pretrained weights for {name!r} ({type(exc).__name__}: {exc}). Offline? "
            "Pass a state dict with --weights FILE, or use --random-init for random weights"
        ) from None
    override = {} if input_size is None else {"input_size": (3, input_size, input_size)}
    config = resolve_data_config(override, model=model)
    return model, create_transform(**config)


def imagenet_transform(size: int = 224):
    """The standard ImageNet evaluation preprocessing: resize to ``size / 0.875`` (256 for 224),
    centre-crop ``size``, tensor in [0, 1], normalise with ImageNet's mean and std."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(round(size / 0.875)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _load_model_file(path: Path):
    import torch
    from torch import nn

    kind = _archive_kind(path)
    if kind == "torchscript":
        raise NeurocoreError(
            f"{str(path)!r} is a TorchScript model; torch cannot hook the layers of ScriptModules. Save the "
            "nn.Module itself (torch.save(model, path)), a torch.export program (torch.export.save), or pass "
            "the architecture's name with --weights FILE"
        )
    if kind == "export":
        try:
            program = torch.export.load(str(path))
            return torch.export.unflatten(program)
        except Exception as exc:
            raise NeurocoreError(f"cannot read the torch.export program {str(path)!r} ({type(exc).__name__}: {exc})") from None
    try:
        # weights_only=False unpickles arbitrary objects, which can run code: documented in --help.
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise NeurocoreError(
            f"{str(path)!r} pickles a model whose class cannot be imported here ({exc}); make the module that "
            "defines it importable (PYTHONPATH), or save a torch.export program / a state dict for a named model"
        ) from None
    except Exception as exc:
        raise NeurocoreError(f"cannot read model file {str(path)!r} ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        raise NeurocoreError(
            f"{str(path)!r} holds a dict (a state dict or checkpoint), not a model: pass the architecture's name "
            f"with --model and this file with --weights {path}"
        )
    raise NeurocoreError(f"{str(path)!r} holds a {type(obj).__name__}, not a torch.nn.Module")


def _archive_kind(path: Path) -> str:
    """``"torchscript"``, ``"export"`` or ``"pickle"`` (a torch.save file, zip or legacy)."""
    if not zipfile.is_zipfile(path):
        return "pickle"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "export"
    return "pickle"


def _load_user_file(path: Path, missing_name: str, option: str, as_what: str, fix: str):
    """``torch.load(weights_only=True)`` of a file a user named: a missing or unreadable file is a
    NeurocoreError naming the option and how to save the file right."""
    import torch

    if not path.is_file():
        raise NeurocoreError(f"{missing_name} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NeurocoreError(
            f"cannot read {option} {str(path)!r}{as_what} ({type(exc).__name__}: {str(exc).splitlines()[0]}); {fix}"
        ) from None


def load_state_dict_file(model, path: str | os.PathLike) -> None:
    """Load a state dict file into ``model`` (in place), every key and shape matching.

    Accepts ``{name: tensor}``, or one wrapped in a dict under ``"state_dict"``, ``"model"`` or
    ``"model_state_dict"``; a ``module.`` prefix on every key (``DataParallel``) is removed. The file
    is read with ``weights_only=True``: tensors only, nothing executed.

    Raises:
        NeurocoreError: unreadable file, not a state dict, missing or unexpected keys, shape mismatches
            (the message lists the first few of each).
    """
    import torch

    path = Path(path)
    state = _load_user_file(path, "--weights file", "--weights", " as a state dict", "save it with torch.save(model.state_dict(), path)")
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NeurocoreError(
            f"--weights {str(path)!r} is not a state dict (a dict of tensors); save it with torch.save(model.state_dict(), path)"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{len(items)} {what}: {', '.join(items[:5])}{more}")
    if problems:
        raise NeurocoreError(
            f"--weights {str(path)!r} does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check that --model names the architecture these weights were trained with"
        )
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------
# argument parsing


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


def build_parser() -> argparse.ArgumentParser:
    """The ``neurocore`` argument parser (sub-commands ``demo``, ``dissect``, ``layers``)."""
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
        "--method", choices=SIMILARITIES, default="wpmi",
        help="CLIP-Dissect similarity function (default: wpmi; soft_wpmi saturates on exact 0/1 concept scores)",
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
            "(--labels). Writes explanations.csv/.json and the HTML report index.html to --out."
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
    source.add_argument("--labels", action="store_true", help="the probe folder's class names are the concepts (0/1 scores)")
    dis.add_argument("--concepts", metavar="SET",
                     help=f"concept set for --vlm or --scores: a built-in set ({', '.join(builtin_concept_sets())}) "
                          "or a text file with one concept per line")
    dis.add_argument("--method", choices=SIMILARITIES, default="soft_wpmi", help="similarity function (default: soft_wpmi)")
    dis.add_argument("--out", default=DEFAULT_DISSECT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_DISSECT_OUT})")
    dis.add_argument("--weights", metavar="FILE", help="state dict file to load into the model")
    dis.add_argument("--random-init", action="store_true", help="do not fetch pretrained weights for a model name")
    dis.add_argument("--input-size", type=_int_at_least(1), metavar="PIXELS", help="input edge of the preprocessing (default: the model's, else 224)")
    dis.add_argument("--summary", choices=("mean", "max", "first"), default="mean", help="per-neuron summary of a layer's output (default: mean)")
    dis.add_argument("--template", help="prompt template for --vlm, e.g. 'a photo of {}' (default: none)")
    dis.add_argument("--batch-size", type=_int_at_least(1), default=64, help="images per forward pass (default: 64)")
    dis.add_argument("--num-workers", type=_int_at_least(0), default=0, help="data loader worker processes (default: 0)")
    dis.add_argument("--device", help="where the model runs, e.g. cpu or cuda (default: cpu)")
    dis.add_argument("--cache-dir", metavar="DIR", help="cache recorded activations and embeddings here")
    dis.add_argument("--top-concepts", type=_int_at_least(1), default=5, metavar="N", help="concepts kept per neuron (default: 5)")
    dis.add_argument("--report-neurons", type=_int_at_least(0), default=64, metavar="N",
                     help="neurons per layer shown with their top images in the report (default: 64)")
    dis.add_argument("--report-images", type=_int_at_least(0), default=5, metavar="N", help="top images per neuron in the report (default: 5)")
    dis.add_argument("--no-progress", action="store_true", help="no progress bars")

    lay = sub.add_parser("layers", help="list a model's layer (module) names", description="List the module names of a model, for --layers.")
    lay.add_argument("--model", required=True, metavar="NAME_OR_FILE", help="as for 'neurocore dissect'")
    lay.add_argument("--depth", type=_int_at_least(1), metavar="N", help="only names with at most N dot-separated parts")
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
        method=args.method,
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
    print(f"labels by CLIP-Dissect ({args.method}) from exact concept scores; neurons per concept family of their label:")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        print(result.summary.to_string())
    print("label_precision: share of a neuron's top images that show its label's concept (ground truth)")
    print(f"wrote {result.report} and the explanations (CSV/JSON) in {result.out_dir} ({total:.1f} s in all)")
    print(f"final-layer accuracy: {result.final_layer_accuracy:.4f}")


def _cmd_dissect(args) -> None:
    import pandas as pd
    import torch

    from neurocore.concepts import ConceptScores, load_concepts
    from neurocore.methods import ClipDissect
    from neurocore.probe import ImageFolder, record
    from neurocore.report import layer_summary, write_html_report

    progress = not args.no_progress
    # Every check that needs no model comes first: a typo must not cost a model download.
    probe = ImageFolder(args.probe)
    if args.labels:
        if args.concepts is not None:
            raise NeurocoreError("--concepts cannot be combined with --labels: the probe folder's class names are the concepts")
        if probe.classes is None:
            raise NeurocoreError(
                f"--labels needs class sub-folders in --probe {args.probe!r} (DIR/<class>/<image>); this folder is flat"
            )
    if args.template is not None and args.vlm is None:
        raise NeurocoreError("--template applies to concepts encoded by --vlm")
    if args.random_init and args.weights is not None:
        raise NeurocoreError("--random-init and --weights contradict each other: give one")
    explainer = ClipDissect(method=args.method, n_top_concepts=args.top_concepts)
    top_k = explainer.required_top_k(len(probe))  # validates the settings
    names = None
    given = None
    if args.vlm is not None:
        if args.concepts is None:
            raise NeurocoreError("--vlm needs --concepts (e.g. --concepts 20k, a text file with one concept per line)")
        names = load_concepts(args.concepts)
    elif args.scores is not None:
        given = _read_scores(args.scores, args.concepts)
    model, transform = load_model(args.model, args.weights, pretrained=not args.random_init, input_size=args.input_size)
    if args.device is not None:
        try:
            model = model.to(torch.device(args.device))
        except (RuntimeError, AssertionError) as exc:
            raise NeurocoreError(f"cannot use --device {args.device!r}: {exc}") from None
    vlm = None
    if args.vlm is not None:
        from neurocore.vlm import load_vlm

        vlm = load_vlm(args.vlm, device=args.device)

    store = record(
        model, args.layers, probe, summary=args.summary, top_k=top_k, batch_size=args.batch_size,
        transform=transform, device=args.device, cache_dir=args.cache_dir, num_workers=args.num_workers,
        progress=progress,
    )
    if args.labels:
        scores = ConceptScores.from_labels(store.labels, probe.classes, image_ids=store.image_ids)
    elif vlm is not None:
        scores = ConceptScores.from_vlm(
            vlm, probe, names, template=args.template, batch_size=args.batch_size, num_workers=args.num_workers,
            cache_dir=args.cache_dir, progress=progress,
        )
    else:
        scores = _align_rows(given, store, len(probe), args.scores)
    explanations = explainer.explain(store, scores, progress=progress)
    out = Path(args.out)
    explanations.save(out)
    report = write_html_report(
        explanations, out, probe=probe, store=store, n_images=args.report_images,
        neurons_with_images=args.report_neurons, title=f"neurocore: {args.model} on {args.probe}",
        intro=f"CLIP-Dissect ({args.method}) of {', '.join(args.layers)} of {args.model} over {store.num_images} "
              f"images of {args.probe}; concept scores: {scores.source} ({scores.num_concepts} concepts).",
    )
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        print(layer_summary(explanations).to_string())
    print(f"wrote {out / 'explanations.csv'}, {out / 'explanations.json'} and {report}")


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
    obj = _load_user_file(p, "--scores", "--scores", "", "save a tensor with torch.save(scores, path)")
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


def _align_rows(scores, store, num_probe: int, path: str):
    """Given scores with one row per probe image (or per readable image) -> the store's rows."""
    from dataclasses import replace

    n = scores.num_images
    if n == store.num_images:
        return scores
    if n == num_probe:
        keep = store.dataset_indices
        ids = tuple(scores.image_ids[i] for i in keep.tolist()) if scores.image_ids else ()
        return replace(scores, scores=scores.scores[keep].contiguous(), image_ids=ids)
    raise NeurocoreError(
        f"--scores {path!r} has {n} rows but the probe folder has {num_probe} images ({store.num_images} readable): "
        "give one row per image, in the folder's sorted order"
    )


def _cmd_layers(args) -> None:
    model, _ = load_model(args.model, pretrained=False)
    for name, module in model.named_modules():
        if not name or (args.depth is not None and name.count(".") + 1 > args.depth):
            continue
        print(f"{name}\t{type(module).__name__}")


_COMMANDS = {"demo": _cmd_demo, "dissect": _cmd_dissect, "layers": _cmd_layers}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 bad input or a file system error,
    2 malformed arguments (argparse exits), 130 interrupted)."""
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
