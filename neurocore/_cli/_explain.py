"""``neurocore explain``: any registered methods over one recording, one report (issue 11).

The ``dissect``, ``hint`` and ``www`` commands are aliases: :func:`from_dissect`, :func:`from_hint` and
:func:`from_www` turn their arguments into ``explain``'s and :func:`cmd_explain` runs them, writing the
files those commands always wrote (flat, into ``--out``) and printing their lines. ``explain`` itself
writes one folder per method (its explanations and its own pages), ``skipped.csv``, ``run.json`` and the
one report of every method, ``index.html`` (:meth:`neurocore._pipeline.MethodsRun.write`).

Method settings come from the friendly options (``--similarity``, ``--saliency``, ``--n-images``...,
mapped by :data:`FRIENDLY`) and, for any setting of any method, ``--set METHOD.SETTING=VALUE``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import warnings
from pathlib import Path

from neurocore._errors import NeurocoreError, close_matches

DEFAULT_OUT = "neurocore-out"

# friendly option (argparse dest) -> {method: its setting}; given only for the methods named here
FRIENDLY = {
    "similarity": {"clip_dissect": "similarity"},
    "top_concepts": {"clip_dissect": "n_top_concepts"},
    "saliency": {"hint": "saliency"},
    "classifier": {"hint": "classifier"},
    "contribution": {"hint": "contribution"},
    "images_per_concept": {"hint": "images_per_concept"},
    "top_n": {"hint": "top_n"},
    "n_images": {"www": "n_images"},
    "alpha_major": {"www": "alpha_major"},
    "alpha_minor": {"www": "alpha_minor"},
    "crop_fraction": {"www": "crop_fraction"},
}
# run-wide options that also set the setting of that name of every method that has one (--engine ray
# also shards the methods' per-neuron work: Linear Explanations' search, HINT's contributions)
RUN_WIDE = ("seed", "batch_size", "cache_dir", "engine", "address")


def _cli():
    # the entry module, looked up at call time: its helpers (and tests' stand-ins for them) are used
    import neurocore.cli

    return neurocore.cli


def add_explain_parser(sub) -> argparse.ArgumentParser:
    """``neurocore explain``: its options (the command is :func:`cmd_explain`)."""
    from neurocore.concepts import builtin_concept_sets
    from neurocore.methods import list_methods
    from neurocore.methods.clip_dissect import SIMILARITIES
    from neurocore.methods.hint import CLASSIFIERS, CONTRIBUTIONS, SALIENCY_METHODS

    cli = _cli()
    at_least, fraction = cli._int_at_least, cli._fraction
    ep = sub.add_parser(
        "explain",
        help="explain every neuron of some layers with one or several registered methods, in one report",
        description=(
            "Record the layers of a model over a folder of images once, score the images against concepts once, "
            "and explain every neuron with each --method (CLIP-Dissect, Linear Explanations, HINT, WWW, ...). "
            "Writes one folder per method (explanations.csv/.json and its own pages), skipped.csv, run.json and "
            "one HTML report of all methods, index.html, to --out."
        ),
        epilog=(
            "Method settings: the options below, or --set METHOD.SETTING=VALUE for any setting (VALUE is read as "
            "JSON when it parses, else as text), e.g. --set linear.max_length=5 --set clip_dissect.top_k=50. "
            "Security: a --model FILE holding a pickled nn.Module is unpickled; only load model files you trust."
        ),
    )
    ep.add_argument("--method", required=True, nargs="+", type=_method_name, metavar="METHOD",
                    help=f"the methods, each once, among the registered ones: {', '.join(list_methods())}")
    ep.add_argument("--model", required=True, metavar="NAME_OR_FILE", help="as for 'neurocore dissect'")
    ep.add_argument("--layers", required=True, nargs="+", metavar="LAYER", help="module names (see 'neurocore layers')")
    ep.add_argument("--probe", "--images", dest="probe", required=True, metavar="DIR",
                    help="folder of probe images (class sub-folders or flat)")
    source = ep.add_mutually_exclusive_group()
    source.add_argument("--vlm", metavar="SPEC",
                        help="vision-language model 'open_clip:NAME:TAG_OR_CHECKPOINT' scoring images against --concepts "
                             "(WWW encodes its concepts with it too)")
    source.add_argument("--scores", metavar="FILE", help="given image-concept scores, as for 'neurocore dissect --scores'")
    source.add_argument("--labels", action="store_true", help="the probe's classes are the concepts (0/1 scores)")
    ep.add_argument("--annotations", metavar="FILE", help="file -> class table for --labels or HINT ('FILE<TAB>CLASS' lines)")
    ep.add_argument("--concepts", metavar="SET",
                    help=f"concept set for --vlm or --scores: a built-in set ({', '.join(builtin_concept_sets())}) or a "
                         "text file with one concept per line (WWW with --vlm alone: default wordnet_nouns)")
    ep.add_argument("--template", help="prompt template for --vlm, e.g. 'a photo of {}' (default: none; WWW: its own)")
    ep.add_argument("--set", action="append", default=[], metavar="METHOD.SETTING=VALUE",
                    help="any setting of a chosen method (repeatable)")
    cd = ep.add_argument_group("CLIP-Dissect (clip_dissect)")
    cd.add_argument("--similarity", choices=SIMILARITIES, help="similarity function (default: soft_wpmi)")
    cd.add_argument("--top-concepts", type=at_least(1), metavar="N", help="concepts kept per neuron (default: 5)")
    hg = ep.add_argument_group("HINT (hint)")
    hg.add_argument("--hint-concepts", nargs="+", metavar="CONCEPT",
                    help="HINT's concepts: WordNet nodes above the probe's classes (animal, whole, ...) or names of --groups")
    hg.add_argument("--groups", metavar="JSON", help="a JSON file {concept: [class, ...]} for classes that are not WordNet ids")
    hg.add_argument("--target", choices=("auto", "label", "predicted", "logit_sum", "imagenet"),
                    help="which logit HINT's saliency differentiates (default: auto; see 'neurocore hint --help')")
    hg.add_argument("--saliency", choices=SALIENCY_METHODS, help="(default: guided_backprop)")
    hg.add_argument("--classifier", choices=CLASSIFIERS, help="(default: logistic)")
    hg.add_argument("--contribution", choices=CONTRIBUTIONS, help="(default: shapley)")
    hg.add_argument("--images-per-concept", type=at_least(1), metavar="N", help="(default: 50)")
    hg.add_argument("--top-n", type=at_least(1), metavar="N", help="collaborative neurons per concept (default: 10)")
    hg.add_argument("--examples", type=at_least(0), default=4, metavar="N", help="example images per concept in HINT's page (default: 4)")
    wg = ep.add_argument_group("WWW (www)")
    wg.add_argument("--n-images", type=at_least(1), metavar="N", help="top images per neuron (default: 40)")
    wg.add_argument("--alpha-major", type=fraction, help="major concepts' threshold (default: 0.95)")
    wg.add_argument("--alpha-minor", type=fraction, help="minor concepts' threshold (default: 0.90)")
    wg.add_argument("--crop-fraction", type=fraction, help="crop side / input side (default: 0.5)")
    rg = ep.add_argument_group("report and evaluation")
    rg.add_argument("--heatmap-images", type=at_least(0), default=0, metavar="N",
                    help="images shown with WWW's class and sample heatmaps beside Grad-CAM, Score-CAM, Ablation-CAM and "
                         "LIME (default: 0)")
    rg.add_argument("--heatmap-layer", metavar="LAYER", help="the layer of the heatmaps (default: the last of --layers)")
    rg.add_argument("--simulator", metavar="SPEC_OR_SCORES",
                    help="score every method's explanations by simulation with another model than the explainer: an "
                         "'open_clip:...' spec, or a scores file/folder as --scores (its concept probabilities)")
    rg.add_argument("--probe-sizes", type=at_least(1), nargs="*", default=[100, 200, 500, 1000], metavar="N",
                    help="with clip_dissect: the probe-size effect on its labels (agreement of labels from N random "
                         "images with those from all images) in the report; give no N to leave it out "
                         "(default: 100 200 500 1000, sizes at or above the probe's dropped)")
    rg.add_argument("--report-neurons", type=at_least(0), metavar="N", help="neurons per layer with images in the reports (default: 64)")
    rg.add_argument("--report-images", type=at_least(0), metavar="N", help="top images per neuron in the reports (default: 5)")
    ep.add_argument("--seed", type=at_least(0), help="seed of the methods that draw at random and of --random-init weights (default: 0)")
    ep.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    ep.add_argument("--weights", metavar="FILE", help="state dict file to load into the model")
    ep.add_argument("--key-map", metavar="MAP", help="as for 'neurocore dissect' (e.g. order)")
    ep.add_argument("--random-init", action="store_true", help="do not fetch pretrained weights for a model name")
    cli._add_preprocessing_options(ep, "preprocessing (default: the model's own, else ImageNet's)")
    ep.add_argument("--summary", choices=("mean", "max", "first"), default="mean", help="per-neuron summary (default: mean)")
    ep.add_argument("--layout", nargs="+", default=["auto"], metavar="[LAYER=]LAYOUT", help="as for 'neurocore dissect'")
    ep.add_argument("--batch-size", type=at_least(1), metavar="N",
                    help="images per forward pass (default: 64 for the recording, each method's own otherwise)")
    ep.add_argument("--num-workers", type=at_least(0), default=0, help="data loader worker processes (default: 0)")
    ep.add_argument("--device", help="where the model runs, e.g. cpu, cuda or cuda:1 (default: cpu)")
    ep.add_argument("--cache-dir", metavar="DIR", help="cache recorded activations and embeddings here")
    ep.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local (default: this process) or ray: Ray workers record the model, encode images and concepts "
                         "with --vlm, and run the methods' per-neuron work (Linear Explanations' search, HINT's "
                         "contributions); needs --cache-dir and `pip install neurocore[ray]`; results equal local ones")
    ep.add_argument("--address", metavar="HOST:PORT", help="the Ray cluster for --engine ray")
    ep.add_argument("--no-progress", action="store_true", help="no progress bars")
    ep.set_defaults(alias=None, probe_flag="--probe", exact_score_rows=False)
    return ep


def _method_name(text: str) -> str:
    """``--method``: a registered method's name; an unknown one is a usage error naming the close match."""
    from neurocore.methods import get_method

    try:
        get_method(text)
    except NeurocoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_method_name.__name__ = "method name"


def explain_namespace(**given) -> argparse.Namespace:
    """``explain``'s arguments with their defaults, overridden by ``given`` (what an alias maps onto)."""
    parser = argparse.ArgumentParser(add_help=False)
    ep = add_explain_parser(parser.add_subparsers(dest="command"))
    ns = argparse.Namespace(command="explain")
    for action in ep._actions:
        if action.dest != "help":
            setattr(ns, action.dest, action.default)
    for key, value in ep._defaults.items():
        setattr(ns, key, value)
    unknown = sorted(set(given) - set(vars(ns)))
    if unknown:  # an alias that maps onto an option explain does not have: a programming error
        raise TypeError(f"explain has no options {unknown}")
    for key, value in given.items():
        setattr(ns, key, value)
    return ns


# ----------------------------------------------------------------------------------------------
# the aliases


def from_dissect(args) -> argparse.Namespace:
    """``neurocore dissect ...`` as ``neurocore explain --method clip_dissect ...``."""
    keep = ("model", "layers", "probe", "vlm", "scores", "labels", "annotations", "concepts", "similarity", "out",
            "weights", "key_map", "random_init", "input_size", "mean", "std", "interpolation", "crop_pct", "summary",
            "layout", "template", "batch_size", "num_workers", "device", "cache_dir", "engine", "address",
            "report_neurons", "report_images", "no_progress")
    return explain_namespace(method=["clip_dissect"], top_concepts=args.top_concepts, alias="dissect",
                             **{k: getattr(args, k) for k in keep})


def from_hint(args) -> argparse.Namespace:
    """``neurocore hint ...`` as ``neurocore explain --method hint ...``."""
    keep = ("model", "annotations", "groups", "target", "saliency", "classifier", "contribution", "images_per_concept",
            "top_n", "examples", "out", "weights", "key_map", "random_init", "input_size", "batch_size", "seed",
            "no_progress")
    return explain_namespace(method=["hint"], layers=[args.layer], probe=args.images, hint_concepts=args.concepts,
                             alias="hint", probe_flag="--images", **{k: getattr(args, k) for k in keep})


def from_www(args) -> argparse.Namespace:
    """``neurocore www ...`` as ``neurocore explain --method www ...`` (its --template is WWW's, used with --vlm)."""
    keep = ("model", "vlm", "scores", "concepts", "n_images", "alpha_major", "alpha_minor", "crop_fraction",
            "heatmap_images", "report_neurons", "report_images", "out", "weights", "key_map", "random_init",
            "input_size", "batch_size", "device", "cache_dir", "no_progress")
    return explain_namespace(method=["www"], layers=[args.layer], probe=args.images, alias="www", probe_flag="--images",
                             exact_score_rows=True, template=args.template if args.vlm is not None else None,
                             **{k: getattr(args, k) for k in keep})


# ----------------------------------------------------------------------------------------------
# settings


def _value(text: str):
    """``--set`` values: JSON when it parses (numbers, true/false/null, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items, names) -> dict[str, dict]:
    """``--set METHOD.SETTING=VALUE`` items -> ``{method: {setting: value}}`` for the chosen ``names``.

    Raises:
        NeurocoreError: a malformed item, or a method that is not among ``names`` (with close matches).

    Example:
        >>> parse_sets(["linear.max_length=5", "linear.split=null", "clip_dissect.similarity=wpmi"], ["linear", "clip_dissect"])
        {'linear': {'max_length': 5, 'split': None}, 'clip_dissect': {'similarity': 'wpmi'}}
    """
    out: dict[str, dict] = {n: {} for n in names}
    for item in items or ():
        key, sep, text = item.partition("=")
        method, dot, setting = key.partition(".")
        if not sep or not dot or not method or not setting:
            raise NeurocoreError(f"--set takes METHOD.SETTING=VALUE (e.g. --set linear.max_length=5); got {item!r}")
        if method not in out:
            hint = close_matches(method, list(out))
            raise NeurocoreError(
                f"--set {item!r} names method {method!r}, which is not among --method {' '.join(names)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "") + f": add --method {method} or fix the name"
            )
        out[method][setting] = _value(text)
    return out


def build_methods(args, names) -> tuple[dict, dict]:
    """The method objects of ``names`` from the friendly options, the run-wide ones and ``--set``
    (checked by the registry's settings check: a misspelt setting names its close matches).

    Returns:
        ``(methods, sets)``: name -> method object, and the ``--set`` settings per method.
    """
    from neurocore.methods import get_method

    sets = parse_sets(args.set, names)
    for dest, by_method in FRIENDLY.items():
        value = getattr(args, dest, None)
        if value is not None and not set(by_method) & set(names):
            flag = "--" + dest.replace("_", "-")
            raise NeurocoreError(
                f"{flag} is a setting of {', '.join(by_method)}, which is not among --method {' '.join(names)}: "
                f"add --method {next(iter(by_method))} or drop {flag}"
            )
    methods = {}
    for name in names:
        cls = get_method(name)
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        settings = {}
        for dest, by_method in FRIENDLY.items():
            value = getattr(args, dest, None)
            if value is not None and name in by_method:
                settings[by_method[name]] = value
        for dest in RUN_WIDE:
            value = getattr(args, dest, None)
            if value is not None and dest in params:
                settings[dest] = value
        if name == "www" and args.concepts is not None:
            settings["concept_set"] = args.concepts
        if name == "www" and args.template is not None:
            settings["template"] = args.template
        settings.update(sets[name])
        try:
            methods[name] = cls(**settings)
        except NeurocoreError as exc:
            raise NeurocoreError(f"--set: {exc}") from None
    return methods, sets


def _takes(method, setting: str) -> bool:
    return setting in inspect.signature(type(method).__init__).parameters


# ----------------------------------------------------------------------------------------------
# the command


def _open_probe(args, hint: bool):
    """The probe folder, with --annotations when given; --labels refuses what would give every neuron
    one label, and HINT a folder without classes, before any model is built."""
    from neurocore.probe import ImageFolder

    if args.annotations is not None:
        if not args.labels and not hint:
            raise NeurocoreError("--annotations gives the labels of --labels (or of HINT's images): add --labels")
        probe = ImageFolder(args.probe, annotations=args.annotations)
    else:
        probe = ImageFolder(args.probe)
    if hint and probe.classes is None:
        raise NeurocoreError(
            f"{args.probe_flag} {args.probe!r} is a flat folder: HINT needs each image's class (DIR/<wnid>/<image>, "
            "or --annotations FILE)"
        )
    if not args.labels:
        return probe
    found = getattr(probe, "annotations_hint", None)  # an annotations file next to the images, never used unasked
    hint_text = f"; {str(found)!r} looks like one: --annotations {found}" if found else ""
    if probe.classes is None:
        raise NeurocoreError(
            f"--labels needs class sub-folders in {args.probe_flag} {args.probe!r} (DIR/<class>/<image>); this folder is "
            f"flat. Put the images into class sub-folders, or name each file's class with --annotations FILE{hint_text}"
        )
    if len(probe.classes) < 2:
        raise NeurocoreError(
            f"--labels found a single class {probe.classes[0]!r} in {args.probe_flag} {args.probe!r}: every neuron would "
            "get that label. Put the images into one sub-folder per class (DIR/<class>/<image>), or give each file's "
            f"class with --annotations FILE (lines 'FILE<TAB>CLASS', as Tiny-ImageNet's val_annotations.txt){hint_text}"
        )
    return probe


def _hierarchy(args, probe):
    """HINT's concepts from --hint-concepts (WordNet nodes) or --groups."""
    from neurocore.methods.hint import ConceptHierarchy

    if not args.hint_concepts:
        flag = "--concepts" if args.alias == "hint" else "--hint-concepts"
        raise NeurocoreError(
            f"--method hint needs its concepts: {flag} NODE [NODE ...] (WordNet nodes above the probe's classes, "
            "e.g. animal whole; or names of --groups JSON)"
        )
    if args.groups is None:
        return ConceptHierarchy.from_wordnet(probe.classes, args.hint_concepts)
    try:
        groups = json.loads(Path(args.groups).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NeurocoreError(f"cannot read --groups {args.groups!r} as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(groups, dict):
        raise NeurocoreError(f"--groups {args.groups!r} must hold one JSON object {{concept: [class, ...]}}")
    unknown = [c for c in args.hint_concepts if c not in groups]
    if unknown:
        flag = "--concepts" if args.alias == "hint" else "--hint-concepts"
        raise NeurocoreError(f"{flag} {unknown} are not in --groups {args.groups!r} (it has: {list(groups)[:10]})")
    return ConceptHierarchy.from_groups(probe.classes, {c: groups[c] for c in args.hint_concepts})


def cmd_explain(args) -> None:
    """Run ``neurocore explain`` (and its aliases): every check that needs no model first, then one
    :func:`~neurocore._pipeline.run_methods`, then the files and printed lines."""
    from neurocore._pipeline import check_settings, run_methods
    from neurocore.concepts import load_concepts

    cli = _cli()
    progress = not args.no_progress
    # Every check that needs no model comes first: a typo must not cost a model download.
    device = cli._device(args.device)
    names = list(dict.fromkeys(args.method))
    if len(names) != len(args.method):
        raise NeurocoreError(f"--method names a method twice ({' '.join(args.method)}): name each once")
    if args.labels and args.concepts is not None:
        raise NeurocoreError("--concepts cannot be combined with --labels: the probe folder's class names are the concepts")
    probe = _open_probe(args, "hint" in names)
    if args.template is not None and args.vlm is None:
        raise NeurocoreError("--template applies to concepts encoded by --vlm")
    if args.random_init and args.weights is not None:
        raise NeurocoreError("--random-init and --weights contradict each other: give one")
    if args.key_map is not None and args.weights is None:
        raise NeurocoreError("--key-map maps the names of --weights: give --weights FILE too")
    key_map = cli._key_map(args.key_map)
    if args.engine == "ray" and args.cache_dir is None:
        raise NeurocoreError("--engine ray needs --cache-dir DIR (on storage every Ray node shares): the workers' shards meet there")
    if args.address is not None and args.engine != "ray":
        raise NeurocoreError("--address applies to --engine ray")
    if args.simulator is not None and args.vlm is not None and args.simulator == args.vlm:
        raise NeurocoreError(
            "--simulator is the explainer's --vlm: an explanation simulated by the model that made it scores too high. "
            "Give another model (or another model's scores file)"
        )
    methods, sets = build_methods(args, names)
    hierarchy = _hierarchy(args, probe) if "hint" in names else None
    check_settings(methods, len(probe))  # each method's own validation
    # WWW (and any method with a vlm setting) encodes its concepts with --vlm itself
    own_vlm = {n for n, m in methods.items() if args.vlm is not None and _takes(m, "vlm") and "vlm" not in sets[n]}
    readers = [n for n, m in methods.items() if n != "hint" and n not in own_vlm and getattr(m, "vlm", None) is None]
    if readers and args.vlm is None and args.scores is None and not args.labels:
        raise NeurocoreError(
            f"--method {' '.join(readers)} read(s) image-concept scores: give --vlm SPEC --concepts SET, --scores FILE or "
            "--labels"
        )
    concept_names = None
    given = None
    if args.vlm is not None and readers:
        if args.concepts is None:
            raise NeurocoreError("--vlm needs --concepts (e.g. --concepts 20k, a text file with one concept per line)")
        concept_names = load_concepts(args.concepts)
    elif args.scores is not None:
        given = cli._read_scores(args.scores, args.concepts)
        if args.exact_score_rows and given.num_images != len(probe):
            raise NeurocoreError(
                f"--scores {args.scores!r} has {given.num_images} rows but {args.probe_flag} has {len(probe)} images: give "
                "one row per image, in the folder's sorted order"
            )
        if given.num_images > len(probe):  # fewer may fit (unreadable images), known only after recording
            raise NeurocoreError(
                f"--scores {args.scores!r} has {given.num_images} rows but the probe folder has {len(probe)} "
                "images: give one row per image, in the folder's sorted order"
            )
    model, transform = cli.load_model(
        args.model, args.weights, pretrained=not args.random_init, key_map=key_map, input_size=args.input_size,
        mean=args.mean, std=args.std, interpolation=args.interpolation, crop_pct=args.crop_pct,
        seed=args.seed if args.seed is not None else 0,  # --random-init: the same random model run after run
    )
    if device is not None:
        model = model.to(device)
    vlm = None
    if args.vlm is not None:
        from neurocore.vlm import load_vlm

        vlm = load_vlm(args.vlm, device=device)
        for n in own_vlm:
            methods[n].vlm = vlm
    if "hint" in methods and "target" not in sets["hint"]:
        from neurocore.methods.hint import resolve_target

        try:  # resolved before recording, so that a wrong choice fails fast
            methods["hint"].target = resolve_target(args.target or "auto", model, probe, transform)
        except NeurocoreError as err:
            raise NeurocoreError(f"--target {args.target or 'auto'}: {err}") from None
    run = run_methods(
        model, args.layers, probe, methods, scores=given, concepts=concept_names,
        vlm=vlm if concept_names is not None else None, labels=bool(args.labels and readers),
        class_names=getattr(probe, "classes", None) if args.labels and readers else None,
        template=args.template if concept_names is not None else None, hierarchy=hierarchy, summary=args.summary,
        layout=cli._layouts(args.layout, args.layers), transform=transform, batch_size=args.batch_size or 64,
        device=device, cache_dir=args.cache_dir, num_workers=args.num_workers, engine=args.engine,
        address=args.address, progress=progress,
    )
    out = Path(args.out)
    context = _Context(args, run, device, progress)
    if args.alias is not None:
        name = names[0]
        lines, _ = METHOD_OUTPUTS.get(name, _table_outputs)(context, name, out, flat=True)
        from neurocore._pipeline import SKIPPED_FILE, _write_skipped

        _write_skipped(out / SKIPPED_FILE, run.skipped)
        run.write_manifest(out, model_name=args.model, probe_name=args.probe)
        _print_lines(lines, run, out, len(probe))
        return
    pages = []
    lines = []
    for name in names:
        more, files = METHOD_OUTPUTS.get(name, _table_outputs)(context, name, out / name, flat=False)
        lines += [f"== {name} =="] + more
        pages += [f"{name}/{f}" for f in files]
    maps = _image_maps(context, names) if args.heatmap_images else None
    simulation = _simulation(context) if args.simulator is not None else None
    summaries = _probe_size_effect(context)
    scores = run.concept_scores
    source = f"concept scores: {scores.source} ({scores.num_concepts} concepts)" if scores is not None else ""
    hier = f"HINT's concepts: {', '.join(run.hierarchy.names)}" if run.hierarchy is not None else ""
    report = run.write(
        out, model_name=args.model, probe_name=args.probe, title=f"neurocore: {args.model} on {args.probe}",
        intro=f"{', '.join(_method_title(run, n) for n in names)} of {', '.join(args.layers)} of {args.model} over "
              f"{run.store.num_images} images of {args.probe}" + "".join(f"; {t}" for t in (source, hier) if t) + ".",
        image_maps=maps, simulation=simulation, summaries=summaries, neurons_with_images=_or(args.report_neurons, 64),
        n_images=_or(args.report_images, 5), links=tuple(pages),
    )
    if simulation is not None:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 30):
            lines += ["simulation (a simulator other than the explainer):", simulation.to_string(index=False)]
    lines.append(f"wrote {', '.join(str(out / n) for n in names)} (one folder per method), {out / 'run.json'}, "
                 f"{out / 'skipped.csv'} and {report}")
    _print_lines(lines, run, out, len(probe))


def _or(value, default):
    return default if value is None else value


def _print_lines(lines, run, out: Path, num_probe: int) -> None:
    from neurocore._pipeline import SKIPPED_FILE

    for line in lines[:-1]:
        print(line)
    skipped = run.skipped
    if skipped:
        shown_count = _cli()._SKIPPED_SHOWN
        shown = "; ".join(f"{ident} ({reason})" for _, ident, reason in skipped[:shown_count])
        more = f"; and {len(skipped) - shown_count} more" if len(skipped) > shown_count else ""
        print(
            f"neurocore: warning: skipped {len(skipped)} unreadable image(s) of {num_probe} (all listed in "
            f"{out / SKIPPED_FILE}): {shown}{more}",
            file=sys.stderr,
        )
    if lines:
        print(lines[-1])


class _Context:
    """What every method's outputs read: the arguments, the run, the device, progress."""

    def __init__(self, args, run, device, progress):
        self.args, self.run, self.device, self.progress = args, run, device, progress


def _method_title(run, name: str) -> str:
    m = run.methods[name]
    titles = {"clip_dissect": f"CLIP-Dissect ({getattr(m, 'similarity', '')})", "linear": "Linear Explanations",
              "hint": "HINT", "www": "WWW"}
    return titles.get(name, name)


def _suffix(layers, layer) -> str:
    return "" if len(layers) == 1 else f"_{layer}"


# ----------------------------------------------------------------------------------------------
# each method's own files (flat: the alias's --out; else --out/<method>/) -> (printed lines, pages)


def _table_outputs(ctx, name, folder: Path, *, flat: bool):
    """Any method: explanations.csv/.json and the neuron table index.html; prints the layer summary."""
    import pandas as pd

    from neurocore.report import layer_summary, write_html_report

    args, run = ctx.args, ctx.run
    ex = run.explanations[name]
    ex.save(folder)
    scores = run.concept_scores
    source = f"; concept scores: {scores.source} ({scores.num_concepts} concepts)" if scores is not None else ""
    report = write_html_report(
        ex, folder, probe=run.probe, store=run.store, n_images=_or(args.report_images, 5),
        neurons_with_images=_or(args.report_neurons, 64),
        title=f"neurocore: {args.model} on {args.probe}" if flat else f"neurocore {name}: {args.model} on {args.probe}",
        intro=f"{_method_title(run, name)} of {', '.join(args.layers)} of {args.model} over {run.store.num_images} "
              f"images of {args.probe}{source}.",
    )
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        lines = [layer_summary(ex).to_string()]
    if flat:
        lines.append(f"wrote {folder / 'explanations.csv'}, {folder / 'explanations.json'}, {folder / 'skipped.csv'} "
                     f"and {report}")
    return lines, [report.name]


def _hint_outputs(ctx, name, folder: Path, *, flat: bool):
    """HINT: explanations, phi.csv, association.png, neurons.html and HINT's page index.html (per layer,
    with the layer in the names when there are several)."""
    import torch

    import neurocore
    from neurocore.methods.hint import association_figure, contribution_matrix
    from neurocore.probe._maps import _input_tensor
    from neurocore.report import ConceptExamples, write_hint_report, write_html_report

    args, run = ctx.args, ctx.run
    ex, method, hierarchy, probe = run.explanations[name], run.methods[name], run.hierarchy, run.probe
    ex.save(folder)
    layers = list(ex.layers)
    write_html_report(ex, folder, probe=probe, store=run.store, filename="neurons.html",
                      title=f"HINT: neurons of {', '.join(layers)}")
    labels = torch.tensor(probe.labels, dtype=torch.int64)
    member = hierarchy.membership(labels)
    lines, pages = [], []
    for layer in layers:
        sfx = _suffix(layers, layer)
        contribution_matrix(ex, layer).to_csv(folder / f"phi{sfx}.csv", index_label="unit")
        association_figure(method.phi_[layer], hierarchy.names, method.top_n, path=folder / f"association{sfx}.png")
        examples = {}
        clf = method.classifiers_[layer]
        for e, concept in enumerate(hierarchy.names):
            idx = member[:, e].nonzero().reshape(-1)[: args.examples].tolist()
            if not idx:
                continue
            maps, regions, _, _ = method.layer_cells(ctx.run.model, layer, probe, idx, member[idx], transform=run.transform)
            examples[concept] = ConceptExamples(
                torch.stack([_input_tensor(probe, i, run.transform) for i in idx]), regions,
                clf.cell_scores(maps)[:, e] > 0.5, tuple(probe.image_id(i) for i in idx),
            )
        report = write_hint_report(
            ex, folder, examples, layer=layer, top_n=method.top_n, filename=f"index{sfx}.html",
            title=f"neurocore HINT: {args.model} {layer} on {args.probe}",
            intro=f"HINT ({method.saliency} saliency, {method.classifier} classifiers, {method.contribution} contributions) "
                  f"of {layer} over {ex.params['images']} images of {args.probe}; concepts: {', '.join(hierarchy.names)} "
                  f"(neurocore {neurocore.__version__}).",
            links=("explanations.csv", "explanations.json", f"phi{sfx}.csv", f"association{sfx}.png", "neurons.html"),
        )
        pages.append(report.name)
        for concept in hierarchy.names:
            f1 = ex.params["f1"][layer].get(concept)
            top = ex.params["collaborative"][layer][concept][: min(5, method.top_n)]
            lines.append(f"{'' if len(layers) == 1 else layer + ': '}{concept}: classifier F1 {f1:.4f}, top neurons {top}")
    sfx = _suffix(layers, layers[0])
    lines.append(f"wrote {folder / 'explanations.csv'}, {folder / f'phi{sfx}.csv'}, {folder / f'association{sfx}.png'} "
                 f"and {folder / pages[0]}")
    return lines, pages + ["neurons.html"]


def _www_heatmaps(model, layer, probe, transform, count, batch_size, device, progress):
    """``count`` images' class and sample heatmaps (spread evenly over the folder); class importance over the
    whole folder, each image counted for its predicted class (the folder's classes need not be the model's)."""
    import torch

    from neurocore.methods.www import image_heatmaps
    from neurocore.probe._maps import _input_tensor
    from neurocore.report import HeatmapExample
    from neurocore.report._run import _predicted_class_importance

    preds, ci = _predicted_class_importance(model, layer, probe, transform=transform, batch_size=batch_size,
                                            device=device, progress=progress)
    # spread evenly over the probe (a class-folder probe lists one class after another)
    idx = torch.linspace(0, len(probe) - 1, min(count, len(probe))).round().long().unique().tolist()
    subset = [(_input_tensor(probe, i, transform), int(preds[i])) for i in idx]
    res = image_heatmaps(model, layer, subset, ci, batch_size=batch_size, device=device, keep_heatmaps=True)
    return [HeatmapExample(subset[j][0], res.class_heatmaps[j], res.sample_heatmaps[j], float(res.similarity[j]),
                           f"{probe.image_id(i)} · predicted {int(res.predictions[j])}") for j, i in enumerate(idx)]


def _www_outputs(ctx, name, folder: Path, *, flat: bool):
    """WWW: explanations and WWW's page index.html (per layer, with the layer in the name when there are several)."""
    import torch

    import neurocore
    from neurocore.probe import crops
    from neurocore.probe._maps import _input_tensor
    from neurocore.report import NeuronExamples, write_www_report

    args, run = ctx.args, ctx.run
    ex, method, probe, store, model, transform = (run.explanations[name], run.methods[name], run.probe, run.store,
                                                  run.model, run.transform)
    ex.save(folder)
    report_images, report_neurons = _or(args.report_images, 4), _or(args.report_neurons, 32)
    layers = list(ex.layers)
    lines, pages = [], []
    for layer in layers:
        la = store[layer]
        rows = la.top_indices[: min(report_images, la.top_indices.shape[0])]
        ds = store.dataset_indices[rows] if store.dataset_indices is not None else rows  # [n, K]
        units = list(range(min(report_neurons, la.num_neurons)))
        examples = {}
        if units and report_images:
            idx = ds[:, units].T.reshape(-1)
            unit_of = torch.tensor(units).repeat_interleave(ds.shape[0])
            try:
                cut = crops(model, layer, probe, idx, unit_of, transform=transform, fraction=method.crop_fraction,
                            batch_size=method.batch_size, device=ctx.device).images
            except NeurocoreError:  # a layer without cells ([B, C]): no crops
                cut = None
            n = ds.shape[0]
            for j, k in enumerate(units):
                pick = idx[j * n : (j + 1) * n].tolist()
                examples[k] = NeuronExamples(torch.stack([_input_tensor(probe, i, transform) for i in pick]),
                                             None if cut is None else cut[j * n : (j + 1) * n],
                                             tuple(probe.image_id(i) for i in pick))
        heatmaps = []
        if args.heatmap_images:
            try:
                heatmaps = _www_heatmaps(model, layer, probe, transform, args.heatmap_images, method.batch_size,
                                         ctx.device, ctx.progress)
            except NeurocoreError as exc:
                warnings.warn(f"no heatmaps for layer {layer!r}: {exc}")
        sfx = _suffix(layers, layer)
        report = write_www_report(
            ex, folder, examples, heatmaps, layer=layer, max_neurons=report_neurons, filename=f"index{sfx}.html",
            title=f"neurocore WWW: {args.model} {layer} on {args.probe}",
            intro=f"WWW of {layer} over {store.num_images} images of {args.probe}; concept similarities: "
                  f"{ex.params.get('concept_source')} (neurocore {neurocore.__version__}).",
            links=("explanations.csv", "explanations.json"),
        )
        pages.append(report.name)
        mine = ex.layer(layer)
        labelled = sum(bool(n.concepts) for n in mine)
        lines.append(f"{layer}: {labelled} of {len(mine.neurons)} neurons with a major concept")
        lines += [f"  neuron {n.unit}: {n.label}" for n in list(mine)[:10]]
        if heatmaps:
            lines.append("heatmap similarity: " + ", ".join(f"{h.similarity:.4f}" for h in heatmaps))
    lines.append(f"wrote {folder / 'explanations.csv'}, {folder / 'explanations.json'} and {folder / pages[0]}")
    return lines, pages


METHOD_OUTPUTS = {"hint": _hint_outputs, "www": _www_outputs}  # every other method: _table_outputs


# ----------------------------------------------------------------------------------------------
# the combined report's extras


def _image_maps(ctx, names):
    """``--heatmap-images N``: WWW's heatmaps beside the attribution baselines for N probe images, spread
    evenly over the probe."""
    from neurocore.report import image_maps

    args, run = ctx.args, ctx.run
    layer = args.heatmap_layer or args.layers[-1]
    if layer not in args.layers:
        raise NeurocoreError(f"--heatmap-layer {layer!r} is not among --layers {' '.join(args.layers)}")
    # Spread over the probe (a class-folder probe lists one class after another: the first N would be one class).
    import torch

    n = run.store.num_images
    picks = torch.linspace(0, n - 1, min(args.heatmap_images, n)).round().long().unique()
    indices = (run.store.dataset_indices[picks] if run.store.dataset_indices is not None else picks).tolist()
    try:
        return image_maps(run.model, layer, run.probe, indices, transform=run.transform, batch_size=args.batch_size or 32,
                          device=ctx.device, progress=ctx.progress)
    except NeurocoreError as exc:
        warnings.warn(f"no per-image maps for layer {layer!r}: {exc}")
        return None


def _probe_size_effect(ctx):
    """``--probe-sizes``: the analysis report's probe-size effect on CLIP-Dissect's labels, per layer."""
    from neurocore.evaluate import probe_size_effect

    args, run = ctx.args, ctx.run
    if "clip_dissect" not in run.explanations or not args.probe_sizes:
        return None
    table = probe_size_effect(run.methods["clip_dissect"], run.store, run.concept_scores, args.probe_sizes,
                              seed=args.seed or 0)
    return {"probe-size effect on CLIP-Dissect's labels (agreement with the labels from all images)": table.reset_index()}


def _simulation(ctx):
    """``--simulator``: every method's explanations scored by simulation (a model other than the explainer)."""
    from neurocore._pipeline import _align_rows
    from neurocore.evaluate import simulation_table

    args, run = ctx.args, ctx.run
    simulator = args.simulator
    if Path(simulator).exists():
        given = _cli()._read_scores(simulator, None)
        simulator = _align_rows(given, run.store, len(run.probe))
        if not simulator.image_ids and run.store.image_ids:
            from dataclasses import replace

            simulator = replace(simulator, image_ids=tuple(run.store.image_ids))
    elif not simulator.startswith("open_clip:"):
        raise NeurocoreError(
            f"--simulator {simulator!r} is neither a file or folder of scores nor a model spec 'open_clip:NAME:TAG'"
        )
    return simulation_table(run.explanations, run.store, simulator, probe=run.probe, model=run.model,
                            transform=run.transform, template=args.template, progress=ctx.progress)
