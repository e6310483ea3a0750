"""A sweep: models × layers × methods from one YAML file, each (model, layer) a Ray task, one table and report.

``neurocore sweep CONFIG.yaml`` (:func:`cmd_sweep`) and :func:`run_sweep` run every **cell** — one model,
one layer, one method — through the one pipeline (:func:`neurocore._pipeline.run_methods`) and write:

* ``<out>/<model>/<layer>/<method>/``: the cell's own ``explanations.csv``/``.json``, ``skipped.csv``,
  HTML report ``index.html`` and, written last and atomically, ``done.json`` holding the digest of the
  cell's configuration (a failed cell writes ``failed.json`` instead, with its error and traceback);
* ``<out>/sweep.csv``: one row per cell (model, layer, method, neurons, interpretable, dead,
  mean/max similarity, seconds, status, path, error), and ``<out>/sweep.json``: the configuration it came from;
* ``<out>/index.html``: that table, a figure of the highest similarity per layer (one panel per method,
  one line per model) and a link to every cell's report.

**Unit of work.** One Ray task (``num_cpus=cpus_per_task``, default 1; ``num_gpus=1`` when ``device`` is CUDA) per
(model, layer) pair runs the pending cells of that pair one after the other: the model is loaded once
per task and the layer recorded once — the recording lands in ``cache_dir`` (keyed by the model's
structure and weights, the layer, the preprocessing and the probe; :mod:`neurocore.probe._cache`), so the
pair's other methods, and later sweeps, read it back instead of running the model again. Tasks per
(model, layer × method) would record the same layer concurrently into the same cache folder (work done
twice, writers racing); tasks per model would serialise its layers. Each cell still has its own marker,
status and error: one cell failing does not stop the others of its task.

**Skipping finished cells.** A cell is skipped when its ``done.json`` holds the digest of its present
configuration (model entry and the files it names, layer, method and settings, probe folder and its
fingerprint, concept source, HINT's hierarchy, batch size, summary, device, seed, neurocore version) and
its explanations are on disk; changing one method's settings reruns only that method's cells. ``out``,
``cache_dir``, ``engine`` and ``address`` never change a result and are not part of the digest.

Relative paths in the YAML file are read relative to the file's folder.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurocore._errors import NeurocoreError, close_matches

SWEEP_TABLE = "sweep.csv"
DONE_FILE = "done.json"
FAILED_FILE = "failed.json"
TABLE_COLUMNS = ("model", "layer", "method", "neurons", "interpretable", "dead", "mean_similarity",
                 "max_similarity", "seconds", "status", "path", "error")
ENGINES = ("ray", "local")
SUMMARIES = ("mean", "max", "first")
_TOP_KEYS = ("models", "layers", "methods", "probe", "annotations", "labels", "scores", "vlm", "concepts", "template",
             "hierarchy", "out", "cache_dir", "engine", "address", "cpus_per_task", "batch_size", "seed", "device", "summary")
_MODEL_KEYS = ("name", "id", "weights", "key_map", "random_init", "input_size", "mean", "std", "interpolation", "crop_pct")


@dataclass(frozen=True)
class SweepModel:
    """One model of a sweep (its ``models:`` entry): the arguments of :func:`neurocore.models.load_model`.

    Attributes:
        id: the model's name in the table, the output folder and ``layers:`` (default: the library
            name, or a model file's stem).
        name: a torchvision/timm model name or a model file (absolute path).
        weights: a state dict file (absolute path) or None. key_map: ``"order"``, ``"strip:PREFIX"`` or None.
        random_init: do not fetch pretrained weights for a name: random weights drawn with the sweep's
            ``seed`` (the same model, hence the same recording cache, in every run and cell).
        input_size, mean, std, interpolation, crop_pct: preprocessing overrides (None: the model's own).
    """

    id: str
    name: str
    weights: str | None = None
    key_map: str | None = None
    random_init: bool = False
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep configuration (:func:`load_sweep_config`); paths are absolute.

    Attributes:
        models: the models, in order. layers: ``{model id: (layer, ...)}``.
        methods: ``((method name, {setting: value}), ...)``, registered names (:func:`neurocore.methods.list_methods`).
        probe: folder of probe images. annotations: file -> class table for a flat folder, or None.
        labels, scores, vlm: the one concept source (the probe's classes; a scores file or folder;
            an ``"open_clip:..."`` spec). concepts: the concept set of ``scores``/``vlm``. template: prompt of ``vlm``.
        hierarchy: HINT's concepts: node names (WordNet) or ``{node: [class, ...]}``; None.
        out: output folder. cache_dir: recording and embedding cache (default ``<out>/cache``).
        engine: ``"ray"`` (one Ray task per model × layer) or ``"local"`` (one after the other here).
        address: Ray cluster address (None: a local cluster). cpus_per_task: Ray CPUs (and torch threads) of a
            CPU task (default 1: as many tasks side by side as the cluster has cores).
        batch_size, seed, device, summary: of every cell.
        source: the YAML file read, or None.
    """

    models: tuple[SweepModel, ...]
    layers: Mapping[str, tuple[str, ...]]
    methods: tuple[tuple[str, Mapping[str, Any]], ...]
    probe: str
    out: str
    annotations: str | None = None
    labels: bool = False
    scores: str | None = None
    vlm: str | None = None
    concepts: str | None = None
    template: str | None = None
    hierarchy: Any = None
    cache_dir: str | None = None
    engine: str = "ray"
    address: str | None = None
    cpus_per_task: int = 1
    batch_size: int = 64
    seed: int = 0
    device: str | None = None
    summary: str = "mean"
    source: str | None = None

    @property
    def cells(self) -> list[tuple[str, str, str]]:
        """Every ``(model id, layer, method)``, models then layers then methods in the file's order."""
        return [(m.id, layer, name) for m in self.models for layer in self.layers[m.id] for name, _ in self.methods]


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        table: ``pandas.DataFrame`` with :data:`TABLE_COLUMNS`, one row per cell (also ``<out>/sweep.csv``).
            ``status`` is ``"ran"`` (computed now), ``"reused"`` (finished before with the same
            configuration: skipped) or ``"failed"`` (``error`` says why).
        out: the output folder. report: ``<out>/index.html``.
    """

    table: Any
    out: Path
    report: Path
    config: SweepConfig | None = None
    seconds: float = 0.0

    @property
    def failed(self):
        """The rows of the failed cells."""
        return self.table[self.table["status"] == "failed"]

    @property
    def ok(self) -> bool:
        """Whether no cell failed."""
        return bool(len(self.failed) == 0)


# ----------------------------------------------------------------------------------------------
# The configuration


def _where(path: str) -> str:
    return path or "the top level"


def _fail(path: str, expected: str, got, fix: str = "") -> NeurocoreError:
    shown = repr(got) if not isinstance(got, (dict, list)) else f"{type(got).__name__} {json.dumps(got, default=str)[:80]}"
    return NeurocoreError(f"sweep config: {_where(path)} must be {expected}; got {shown}" + (f". {fix}" if fix else ""))


def _unknown_keys(given: Mapping, known: Sequence[str], path: str) -> None:
    for key in given:
        if key not in known:
            near = close_matches(str(key), known, n=3)
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            where = f"{path}.{key}" if path else str(key)
            raise NeurocoreError(f"sweep config: unknown key {where!r}{hint}; the keys here are: {', '.join(known)}")


def _text(value, path: str, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, what, value)
    return value


def _int(value, path: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(path, f"an integer >= {low}", value)
    return value


def _bool(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _path(value, path: str, base: Path, *, kind: str = "file") -> str:
    p = Path(_text(value, path, f"a path to a {kind}")).expanduser()
    p = p if p.is_absolute() else base / p
    exists = p.is_dir() if kind == "folder" else p.is_file() if kind == "file" else p.exists()
    if not exists:
        raise NeurocoreError(f"sweep config: {path} names {str(p)!r}, which is not an existing {kind} "
                             f"(relative paths are read from the config file's folder {str(base)!r})")
    return str(p.resolve())


def _model(entry, i: int, base: Path) -> SweepModel:
    path = f"models[{i}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        raise _fail(path, "a model name or a mapping {name: ..., weights: ..., ...}", entry)
    _unknown_keys(entry, _MODEL_KEYS, path)
    if "name" not in entry:
        raise NeurocoreError(f"sweep config: {path} needs name: (a torchvision/timm model name or a model file)")
    name = _text(entry["name"], f"{path}.name")
    candidate = Path(name).expanduser()
    candidate = candidate if candidate.is_absolute() else base / candidate
    is_file = candidate.is_file()
    if is_file:
        name = str(candidate.resolve())
    elif os.sep in name or name.endswith((".pt", ".pth", ".pt2", ".ckpt", ".bin")):
        raise NeurocoreError(f"sweep config: {path}.name names the model file {str(candidate)!r}, which does not exist "
                             f"(relative paths are read from the config file's folder {str(base)!r})")
    default_id = Path(name).stem if is_file else name.split(":", 1)[-1]
    ident = _text(entry.get("id", default_id), f"{path}.id")
    if "/" in ident or ident in (".", ".."):
        raise _fail(f"{path}.id", "a name usable as a folder (no '/')", ident)
    weights = _path(entry["weights"], f"{path}.weights", base) if entry.get("weights") is not None else None
    key_map = entry.get("key_map")
    if key_map is not None:
        key_map = _text(key_map, f"{path}.key_map", "'order' or 'strip:PREFIX'")
        if key_map != "order" and not key_map.startswith("strip:"):
            raise _fail(f"{path}.key_map", "'order' or 'strip:PREFIX'", key_map)
        if weights is None:
            raise NeurocoreError(f"sweep config: {path}.key_map maps the names of weights: give {path}.weights too")
    random_init = _bool(entry.get("random_init", False), f"{path}.random_init")
    if random_init and weights is not None:
        raise NeurocoreError(f"sweep config: {path} has both random_init: true and weights: give one")
    input_size = _int(entry["input_size"], f"{path}.input_size", 1) if entry.get("input_size") is not None else None
    stats = {}
    for key in ("mean", "std"):
        value = entry.get(key)
        if value is not None:
            if (not isinstance(value, list) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise _fail(f"{path}.{key}", "a list of 3 numbers (R, G, B on the [0, 1] scale)", value)
            value = tuple(float(v) for v in value)
        stats[key] = value
    interpolation = entry.get("interpolation")
    if interpolation is not None:
        from neurocore.models import INTERPOLATIONS

        if interpolation not in INTERPOLATIONS:
            raise _fail(f"{path}.interpolation", f"one of {', '.join(INTERPOLATIONS)}", interpolation)
    crop_pct = entry.get("crop_pct")
    if crop_pct is not None and (isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1):
        raise _fail(f"{path}.crop_pct", "a number in (0, 1]", crop_pct)
    return SweepModel(ident, name, weights, key_map, random_init, input_size, stats["mean"], stats["std"], interpolation,
                      None if crop_pct is None else float(crop_pct))


def _methods(value) -> tuple[tuple[str, dict], ...]:
    from neurocore.methods import UnknownSettingError, get_method, list_methods

    if not isinstance(value, list) or not value:
        raise _fail("methods", "a non-empty list of method names or {name: {setting: value}} entries", value)
    out, seen = [], set()
    for i, entry in enumerate(value):
        path = f"methods[{i}]"
        if isinstance(entry, str):
            name, settings = entry, {}
        elif isinstance(entry, Mapping) and len(entry) == 1:
            name, settings = next(iter(entry.items()))
            settings = {} if settings is None else settings
            if not isinstance(settings, Mapping):
                raise _fail(f"{path}.{name}", "a mapping {setting: value}", settings)
        else:
            raise _fail(path, "a method name or a one-key mapping {name: {setting: value}}", entry)
        if name not in list_methods():
            near = close_matches(str(name), list_methods(), n=3)
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            raise NeurocoreError(f"sweep config: {path} names unknown method {name!r}{hint}; "
                                 f"registered methods: {', '.join(list_methods())}")
        if name in seen:
            raise NeurocoreError(f"sweep config: {path} repeats method {name!r}; give each method once")
        seen.add(name)
        try:  # the registry's checked __init__ names a misspelt setting's close matches (values are checked by explain)
            get_method(name)(**settings)
        except UnknownSettingError as exc:
            raise NeurocoreError(f"sweep config: {path}.{name}: {exc}") from None
        except TypeError as exc:
            raise NeurocoreError(f"sweep config: {path}.{name}: {exc}") from None
        out.append((name, dict(settings)))
    return tuple(out)


def _layers(value, models: Sequence[SweepModel]) -> dict[str, tuple[str, ...]]:
    ids = [m.id for m in models]

    def names(v, path):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise _fail(path, "a non-empty list of layer (module) names", v)
        if len(set(v)) != len(v):
            raise _fail(path, "distinct layer names", v)
        return tuple(v)

    if isinstance(value, Mapping):
        _unknown_keys(value, ids, "layers")
        missing = [i for i in ids if i not in value]
        if missing:
            raise NeurocoreError(f"sweep config: layers has no entry for model(s) {missing}: give layers: {{{missing[0]}: [...]}} "
                                 "for every model id, or one list for all models")
        return {i: names(value[i], f"layers.{i}") for i in ids}
    shared = names(value, "layers")
    return {i: shared for i in ids}


def sweep_config(raw: Mapping[str, Any], base: str | os.PathLike = ".", *, source: str | None = None) -> SweepConfig:
    """Validate a sweep configuration given as a mapping (what the YAML file holds).

    Args:
        raw: the configuration; keys as in ``examples/sweep.yaml``: ``models`` (names or
            ``{name, id, weights, key_map, random_init, input_size, mean, std, interpolation, crop_pct}``),
            ``layers`` (one list for every model, or ``{model id: [layer, ...]}``), ``methods``
            (``[name, {name: {setting: value}}, ...]``), ``probe``, ``annotations``, one concept source
            (``labels: true``, ``scores: FILE`` or ``vlm: SPEC``) with ``concepts``/``template``,
            ``hierarchy`` (HINT), ``out``, ``cache_dir``, ``engine`` (``ray``, default, or ``local``),
            ``address``, ``cpus_per_task`` (1), ``batch_size`` (64), ``seed`` (0), ``device`` (None: CPU),
            ``summary`` (``mean``).
        base: folder that relative paths are read from (the YAML file's).
        source: the file the mapping came from, kept in the result.

    Returns:
        :class:`SweepConfig`.

    Raises:
        NeurocoreError: naming the key path (``models[1].input_size``, ``methods[0].linear``), what was
            expected and what was received, and close matches of a misspelt key, method or setting.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "probe").mkdir()
        >>> cfg = sweep_config({"models": [{"name": "resnet18", "random_init": True}], "layers": ["layer4"],
        ...                     "methods": ["clip_dissect"], "probe": "probe", "labels": True, "out": "out"}, d)
        >>> cfg.cells, cfg.engine
        ([('resnet18', 'layer4', 'clip_dissect')], 'ray')
        >>> sweep_config({"model": []}, d)
        Traceback (most recent call last):
        neurocore._errors.NeurocoreError: sweep config: unknown key 'model' (did you mean 'models'...
    """
    base = Path(base).expanduser().resolve()
    if not isinstance(raw, Mapping):
        raise _fail("", "a mapping of keys (models:, layers:, methods:, ...)", raw)
    _unknown_keys(raw, _TOP_KEYS, "")
    for key in ("models", "layers", "methods", "probe", "out"):
        if raw.get(key) is None:
            raise NeurocoreError(f"sweep config: the key {key!r} is missing; see examples/sweep.yaml")
    if not isinstance(raw["models"], list) or not raw["models"]:
        raise _fail("models", "a non-empty list of models", raw["models"])
    models = tuple(_model(e, i, base) for i, e in enumerate(raw["models"]))
    ids = [m.id for m in models]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise NeurocoreError(f"sweep config: models share the id {twice[0]!r}: give each entry its own id: (its folder name)")
    layers = _layers(raw["layers"], models)
    methods = _methods(raw["methods"])
    probe = _path(raw["probe"], "probe", base, kind="folder")
    annotations = _path(raw["annotations"], "annotations", base) if raw.get("annotations") is not None else None
    labels = _bool(raw.get("labels", False), "labels")
    scores = _path(raw["scores"], "scores", base, kind="file or folder") if raw.get("scores") is not None else None
    vlm = _text(raw["vlm"], "vlm", "a vision-language model spec 'open_clip:NAME:TAG_OR_CHECKPOINT'") if raw.get("vlm") is not None else None
    given = [k for k, v in (("labels", labels), ("scores", scores), ("vlm", vlm)) if v]
    if len(given) != 1:
        raise NeurocoreError(
            "sweep config: give exactly one concept source: labels: true (the probe's classes), scores: FILE or vlm: SPEC; "
            f"got {', '.join(given) if given else 'none'}"
        )
    concepts = raw.get("concepts")
    if concepts is not None:
        if labels:
            raise NeurocoreError("sweep config: concepts cannot be combined with labels: true (the probe's classes are the concepts)")
        concepts = _text(concepts, "concepts", "a built-in concept set or a text file")
        maybe = base / concepts
        if maybe.is_file():
            concepts = str(maybe.resolve())
    if vlm is not None and concepts is None:
        raise NeurocoreError("sweep config: vlm needs concepts: (a built-in set such as 20k, or a text file with one concept per line)")
    template = raw.get("template")
    if template is not None:
        if vlm is None:
            raise NeurocoreError("sweep config: template applies to concepts encoded by vlm")
        template = _text(template, "template")
    if annotations is not None and not labels and "hint" not in dict(methods):
        raise NeurocoreError("sweep config: annotations gives the probe's classes, used by labels: true or hint: add labels: true")
    hierarchy = raw.get("hierarchy")
    if hierarchy is not None:
        if isinstance(hierarchy, list):
            if not hierarchy or not all(isinstance(h, str) and h for h in hierarchy):
                raise _fail("hierarchy", "a list of WordNet node names or a mapping {node: [class, ...]}", hierarchy)
            hierarchy = tuple(hierarchy)
        elif isinstance(hierarchy, Mapping):
            for node, leaves in hierarchy.items():
                if not isinstance(leaves, list) or not leaves or not all(isinstance(x, str) for x in leaves):
                    raise _fail(f"hierarchy.{node}", "a non-empty list of class names", leaves)
            hierarchy = {str(k): tuple(v) for k, v in hierarchy.items()}
        else:
            raise _fail("hierarchy", "a list of WordNet node names or a mapping {node: [class, ...]}", hierarchy)
    if "hint" in dict(methods) and hierarchy is None:
        raise NeurocoreError("sweep config: methods has hint, which needs hierarchy: (WordNet node names such as "
                             "[animal, whole], or {concept: [class, ...]})")
    out = Path(_text(raw["out"], "out", "an output folder")).expanduser()
    out = (out if out.is_absolute() else base / out).resolve()
    cache_dir = raw.get("cache_dir")
    if cache_dir is not None:
        cache_dir = Path(_text(cache_dir, "cache_dir", "a folder")).expanduser()
        cache_dir = str((cache_dir if cache_dir.is_absolute() else base / cache_dir).resolve())
    engine = raw.get("engine", "ray")
    if engine not in ENGINES:
        raise _fail("engine", f"one of {', '.join(ENGINES)}", engine)
    address = raw.get("address")
    if address is not None:
        address = _text(address, "address", "a Ray address ('auto' or HOST:PORT)")
        if engine != "ray":
            raise NeurocoreError("sweep config: address applies to engine: ray")
    summary = raw.get("summary", "mean")
    if summary not in SUMMARIES:
        raise _fail("summary", f"one of {', '.join(SUMMARIES)}", summary)
    device = raw.get("device")
    if device is not None:
        import torch

        try:
            device = str(torch.device(_text(device, "device", "a device such as cpu, cuda or cuda:1")))
        except (RuntimeError, ValueError):
            raise _fail("device", "a device such as cpu, cuda or cuda:1", device) from None
    return SweepConfig(
        models=models, layers=layers, methods=methods, probe=probe, out=str(out), annotations=annotations, labels=labels,
        scores=scores, vlm=vlm, concepts=concepts, template=template, hierarchy=hierarchy, cache_dir=cache_dir,
        engine=engine, address=address, cpus_per_task=_int(raw.get("cpus_per_task", 1), "cpus_per_task", 1),
        batch_size=_int(raw.get("batch_size", 64), "batch_size", 1),
        seed=_int(raw.get("seed", 0), "seed", 0), device=device, summary=summary, source=source,
    )


def load_sweep_config(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a sweep configuration from a YAML file (schema: :func:`sweep_config`,
    example: ``examples/sweep.yaml``); relative paths in it are read from the file's folder.

    Args:
        path: the YAML file.

    Returns:
        :class:`SweepConfig`.

    Raises:
        NeurocoreError: a missing or unreadable file, YAML syntax errors (with line and column), and every
            error of :func:`sweep_config` (naming the key path).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "images").mkdir()
        >>> _ = (d / "sweep.yaml").write_text(
        ...     "models: [{name: resnet18, random_init: true, input_size: 64}]\\n"
        ...     "layers: {resnet18: [layer3, layer4]}\\nmethods: [clip_dissect, {linear: {max_length: 3}}]\\n"
        ...     "probe: images\\nlabels: true\\nout: sweep-out\\n")
        >>> cfg = load_sweep_config(d / "sweep.yaml")
        >>> len(cfg.cells), cfg.methods[1], cfg.out == str((d / "sweep-out").resolve())
        (4, ('linear', {'max_length': 3}), True)
    """
    try:
        import yaml
    except ImportError:
        raise NeurocoreError("reading a sweep config needs PyYAML: pip install neurocore[ray] (or pyyaml)") from None
    p = Path(path).expanduser()
    if not p.is_file():
        raise NeurocoreError(f"sweep config {str(p)!r} does not exist or is not a file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise NeurocoreError(f"sweep config {str(p)!r} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NeurocoreError(f"cannot read sweep config {str(p)!r} ({type(exc).__name__}: {exc})") from None
    if raw is None:
        raise NeurocoreError(f"sweep config {str(p)!r} is empty; see examples/sweep.yaml")
    return sweep_config(raw, p.resolve().parent, source=str(p.resolve()))


# ----------------------------------------------------------------------------------------------
# Cells: their configuration digests and their runs


def _stamp(path: str | None):
    """What identifies a file or folder's content cheaply: size and modification time (of every file)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(p).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"path": str(p), "files_sha256": h.hexdigest()}


def _open_probe(config: SweepConfig):
    from neurocore.probe import ImageFolder

    if config.annotations is not None:
        return ImageFolder(config.probe, annotations=config.annotations)
    return ImageFolder(config.probe)


def _cell_config(config: SweepConfig, model: SweepModel, layer: str, method: str, probe_fingerprint: str) -> dict:
    """Everything a cell's result depends on (its digest decides whether a finished cell is reused)."""
    from dataclasses import asdict

    from neurocore import __version__

    settings = dict(dict(config.methods)[method])
    entry = asdict(model)
    entry["weights"] = _stamp(model.weights)
    entry["file"] = _stamp(model.name) if Path(model.name).is_file() else None
    return {
        "neurocore": __version__,
        "model": entry,
        "layer": layer,
        "method": method,
        "settings": settings,
        "probe": {"path": config.probe, "annotations": _stamp(config.annotations), "fingerprint": probe_fingerprint},
        "concepts": {"labels": config.labels, "scores": _stamp(config.scores), "vlm": config.vlm,
                     "concepts": _stamp(config.concepts) if config.concepts and Path(config.concepts).is_file() else config.concepts,
                     "template": config.template},
        "hierarchy": config.hierarchy if method == "hint" else None,
        "batch_size": config.batch_size, "summary": config.summary, "device": config.device, "seed": config.seed,
    }


def _digest(cell_config: Mapping) -> str:
    from neurocore._io import jsonable

    return hashlib.sha256(json.dumps(jsonable(cell_config), sort_keys=True).encode()).hexdigest()


def cell_stats(explanations) -> dict[str, Any]:
    """The sweep table's numbers of one cell's explanations (one layer, one method).

    ``neurons``: all of them; ``interpretable``/``dead``: their flags; ``mean_similarity`` and
    ``max_similarity``: over the live, labelled neurons with a finite similarity (the rule of
    :func:`neurocore.evaluate.highest_similarity`, whose value ``max_similarity`` is); NaN when there is none.

    Args:
        explanations: :class:`~neurocore.methods.Explanations`.

    Returns:
        dict with ``neurons``, ``interpretable``, ``dead`` (int) and ``mean_similarity``, ``max_similarity`` (float).

    Example:
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> e = Explanations("clip_dissect", (NeuronExplanation("fc", 0, "dog", 0.2), NeuronExplanation("fc", 1, "cat", 0.4),
        ...                                   NeuronExplanation("fc", 2, "", float("nan"), dead=True, interpretable=False)))
        >>> cell_stats(e)
        {'neurons': 3, 'interpretable': 2, 'dead': 1, 'mean_similarity': 0.30000000000000004, 'max_similarity': 0.4}
    """
    from neurocore.evaluate._summaries import _usable

    usable = [float(n.similarity) for n in explanations if _usable(n)]
    return {
        "neurons": len(explanations),
        "interpretable": sum(bool(n.interpretable) for n in explanations),
        "dead": sum(bool(n.dead) for n in explanations),
        "mean_similarity": math.fsum(usable) / len(usable) if usable else float("nan"),
        "max_similarity": max(usable) if usable else float("nan"),
    }


def _read_scores(path: str, concepts):
    """``scores:`` as a ConceptScores: a folder written by ``ConceptScores.save``, or a ``.pt`` file holding a
    ``Tensor[N, M]`` (columns: ``concepts``) or ``{"scores": ..., "concepts": [...]}``."""
    import torch

    from neurocore.concepts import ConceptScores, load_concepts

    p = Path(path)
    if p.is_dir():
        return ConceptScores.load(p)
    obj = torch.load(p, map_location="cpu", weights_only=True)
    names = None
    if isinstance(obj, dict):
        if "scores" not in obj:
            raise NeurocoreError(f"sweep config: scores {path!r} holds a dict without a 'scores' entry")
        names, obj = obj.get("concepts"), obj["scores"]
    if concepts is not None:
        names = load_concepts(concepts)
    if names is None:
        raise NeurocoreError(f"sweep config: scores {path!r} is a bare tensor: name its columns with concepts:")
    return ConceptScores.from_tensor(obj, [str(n) for n in names], source=f"file:{p.name}")


def _hierarchy(config_hierarchy, probe):
    if config_hierarchy is None:
        return None
    if isinstance(config_hierarchy, Mapping):
        from neurocore.methods.hint import ConceptHierarchy

        return ConceptHierarchy.from_groups(probe.classes, {k: list(v) for k, v in config_hierarchy.items()})
    return list(config_hierarchy)


def _write_json(path: Path, obj) -> None:
    from neurocore._io import atomic_write, jsonable

    atomic_write(path, lambda p: p.write_text(json.dumps(jsonable(obj), indent=1, sort_keys=True), encoding="utf-8"))


def _run_group(task: Mapping[str, Any]) -> list[dict]:
    """Run the pending cells of one (model, layer) pair: load the model once, then each method's cell through
    :func:`neurocore._pipeline.run_methods` (the layer's recording shared through ``cache_dir``). Returns one
    result dict per cell; an error fails its cell only (or every cell when the model or probe cannot be read)."""
    import torch

    from neurocore.methods import get_method
    from neurocore.models import load_model

    config: SweepConfig = task["config"]
    model_spec: SweepModel = task["model"]
    layer = task["layer"]
    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    results = []

    def failed(cell, exc, seconds):
        error = f"{type(exc).__name__}: {exc}"
        cell_dir = Path(cell["dir"])
        cell_dir.mkdir(parents=True, exist_ok=True)
        _write_json(cell_dir / FAILED_FILE, {"error": error, "traceback": traceback.format_exc(), "digest": cell["digest"]})
        return {**cell, "status": "failed", "error": error, "seconds": seconds}

    start = time.perf_counter()
    try:
        probe = _open_probe(config)
        model, transform = load_model(
            model_spec.name, model_spec.weights, pretrained=not model_spec.random_init, key_map=model_spec.key_map,
            input_size=model_spec.input_size, mean=model_spec.mean, std=model_spec.std,
            interpolation=model_spec.interpolation, crop_pct=model_spec.crop_pct,
            seed=config.seed,  # random_init: every cell of this model gets the same random weights (and cache keys)
        )
        if config.device is not None:
            model = model.to(config.device)
        scores = _read_scores(config.scores, config.concepts) if config.scores is not None else None
        hierarchy = _hierarchy(config.hierarchy, probe)
    except Exception as exc:  # noqa: BLE001 — the pair's cells fail with this error; the other pairs go on
        return [failed(cell, exc, time.perf_counter() - start) for cell in task["cells"]]
    from neurocore._pipeline import run_methods

    for cell in task["cells"]:
        clock = time.perf_counter()
        cell_dir = Path(cell["dir"])
        try:
            cell_dir.mkdir(parents=True, exist_ok=True)
            for stale in (DONE_FILE, FAILED_FILE):
                (cell_dir / stale).unlink(missing_ok=True)
            name = cell["method"]
            cls = get_method(name)
            settings = dict(cell["settings"])
            if "seed" in _init_params(cls) and "seed" not in settings:
                settings["seed"] = config.seed  # the sweep's seed, unless the method's entry sets its own
            method = cls(**settings)
            source = {"scores": scores, "concepts": None if scores is not None else config.concepts, "vlm": config.vlm,
                      "labels": config.labels, "template": config.template}
            if not _reads_image_scores(method):  # HINT (and WWW with its own vlm): no encoding for nothing
                source = {}
            torch.manual_seed(config.seed)
            run = run_methods(
                model, [layer], probe, {name: method}, hierarchy=hierarchy if name == "hint" else None, summary=config.summary,
                transform=transform, batch_size=config.batch_size, device=config.device, cache_dir=config.cache_dir,
                progress=False, **source,
            )
            explanations = run.explanations[name]
            run.write(cell_dir, model_name=model_spec.name, probe_name=config.probe,
                      title=f"neurocore sweep: {model_spec.id} {layer} {name}")
            stats = cell_stats(explanations)
            seconds = time.perf_counter() - clock
            # Written last: its presence with this digest means every other file of the cell is complete.
            _write_json(cell_dir / DONE_FILE, {"digest": cell["digest"], "config": cell["config"], "stats": stats,
                                               "seconds": seconds, "explanations": _explanations_dir(cell_dir, name)})
            results.append({**cell, **stats, "status": "ran", "error": "", "seconds": seconds})
        except Exception as exc:  # noqa: BLE001 — a failed cell is reported; the others finish
            results.append(failed(cell, exc, time.perf_counter() - clock))
    return results


def _reads_image_scores(method) -> bool:
    """Whether ``method`` reads the image–concept scores (the pipeline's own rule where it has one)."""
    from neurocore import _pipeline

    rule = getattr(_pipeline, "_needs_image_scores", None)
    return bool(rule(method)) if rule is not None else getattr(method, "name", "") != "hint"


def _init_params(cls) -> list[str]:
    import inspect

    return [p for p in inspect.signature(cls).parameters]


def _explanations_dir(cell_dir: Path, method: str) -> str:
    """Where the cell's ``explanations.csv`` lies, relative to the cell folder (``MethodsRun.write`` puts
    each method's files into a sub-folder named after it)."""
    for rel in (method, "."):
        if (cell_dir / rel / "explanations.json").is_file() or (cell_dir / rel / "explanations.csv").is_file():
            return rel
    return method


def _finished(cell_dir: Path, digest: str) -> dict | None:
    """The cell's ``done.json`` when it holds ``digest`` and its explanations are on disk; else None."""
    marker = cell_dir / DONE_FILE
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("digest") != digest:
        return None
    if not (cell_dir / str(done.get("explanations", ".")) / "explanations.csv").is_file():
        return None
    return done


# ----------------------------------------------------------------------------------------------
# The sweep


def run_sweep(config: SweepConfig | str | os.PathLike, *, address: str | None = None, progress: bool = True) -> SweepResult:
    """Run every cell (model × layer × method) of a sweep that is not finished yet; write the combined table
    ``<out>/sweep.csv`` and report ``<out>/index.html``.

    One task per (model, layer) pair (a Ray task with ``engine: ray``, ``num_cpus=1`` or ``num_gpus=1`` on
    CUDA) runs that pair's pending cells with :func:`neurocore._pipeline.run_methods`; see the module
    docstring for why the pair, not the cell, is the unit, and for what makes a finished cell reusable.
    Before any task starts, the probe folder is opened, every model is built once and every layer name
    checked against it, so a typo costs no run.

    Args:
        config: a :class:`SweepConfig` or the path of its YAML file (:func:`load_sweep_config`).
        address: Ray cluster address overriding the config's (``"auto"``, ``"HOST:6379"`` after
            ``ray start --head``); None: the config's, else a local cluster (or the one already started).
        progress: a progress bar over the cells.

    Returns:
        :class:`SweepResult`; failed cells are rows with ``status == "failed"`` and their ``error``
        (:attr:`SweepResult.ok` is False), never an exception.

    Raises:
        NeurocoreError: an invalid config; a model that cannot be built; a layer a model does not have
            (with close matches); ``engine: ray`` without the ``ray`` package.

    Example:
        >>> import tempfile, pathlib, PIL.Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for c in ("a", "b"):
        ...     (d / "probe" / c).mkdir(parents=True)
        ...     for i in range(3):
        ...         PIL.Image.new("RGB", (16, 16), (90 * i, 200 if c == "a" else 0, 50)).save(d / "probe" / c / f"{i}.png")
        >>> cfg = sweep_config({"models": [{"name": "resnet18", "random_init": True, "input_size": 32}],
        ...     "layers": ["layer4"], "methods": ["clip_dissect"], "probe": "probe", "labels": True, "out": "out",
        ...     "engine": "local"}, d)
        >>> result = run_sweep(cfg, progress=False)
        >>> result.table[["model", "layer", "method", "neurons", "status"]].values.tolist()
        [['resnet18', 'layer4', 'clip_dissect', 512, 'ran']]
    """
    from dataclasses import asdict

    from tqdm.auto import tqdm

    if isinstance(config, (str, os.PathLike)):
        config = load_sweep_config(config)
    if not isinstance(config, SweepConfig):
        raise NeurocoreError(f"config must be a SweepConfig or the path of a YAML file; got {type(config).__name__}")
    address = address if address is not None else config.address
    out = Path(config.out)
    if config.cache_dir is None:
        from dataclasses import replace

        config = replace(config, cache_dir=str(out / "cache"))
    start = time.perf_counter()
    probe = _open_probe(config)
    if config.labels and (probe.classes is None or len(probe.classes) < 2):
        raise NeurocoreError(
            f"sweep config: labels: true needs at least two classes in probe {config.probe!r}: class sub-folders "
            f"(DIR/<class>/<image>) or annotations: FILE; found {'none (a flat folder)' if probe.classes is None else list(probe.classes)}"
        )
    fingerprint = probe.fingerprint()
    _preflight(config)
    rows: dict[tuple[str, str, str], dict] = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    models = {m.id: m for m in config.models}
    for model_id, layer, method in config.cells:
        cell_config = _cell_config(config, models[model_id], layer, method, fingerprint)
        digest = _digest(cell_config)
        cell_dir = out / _safe(model_id) / _safe(layer) / method
        cell = {"model": model_id, "layer": layer, "method": method, "dir": str(cell_dir), "digest": digest,
                "config": cell_config, "settings": dict(dict(config.methods)[method])}
        done = _finished(cell_dir, digest)
        if done is not None:
            rows[(model_id, layer, method)] = {**cell, **done.get("stats", {}), "status": "reused", "error": "",
                                               "seconds": float(done.get("seconds", float("nan")))}
        else:
            groups.setdefault((model_id, layer), []).append(cell)
    tasks = [{"config": config, "model": models[m], "layer": layer, "cells": cells} for (m, layer), cells in groups.items()]
    pending = sum(len(t["cells"]) for t in tasks)
    with tqdm(total=len(rows) + pending, initial=len(rows), unit="cell", desc="sweep", disable=not progress) as bar:
        for result in _execute(tasks, config, address):
            for r in result:
                rows[(r["model"], r["layer"], r["method"])] = r
            bar.update(len(result))
    ordered = [rows[c] for c in config.cells]
    table = _table(ordered, out)
    out.mkdir(parents=True, exist_ok=True)
    from neurocore._io import atomic_write

    atomic_write(out / SWEEP_TABLE, lambda p: table.to_csv(p, index=False))
    _write_json(out / "sweep.json", {"config": asdict(config), "probe_fingerprint": fingerprint})  # what the table came from
    report = write_sweep_report(table, out, title="neurocore sweep", intro=_intro(config))
    return SweepResult(table, out, report, config, time.perf_counter() - start)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _preflight(config: SweepConfig) -> None:
    """Build every model once and check its layer names (close matches), before any task starts."""
    from neurocore.models import load_model

    for m in config.models:
        try:
            model, _ = load_model(m.name, m.weights, pretrained=not m.random_init, key_map=m.key_map, input_size=m.input_size,
                                  mean=m.mean, std=m.std, interpolation=m.interpolation, crop_pct=m.crop_pct,
                                  seed=config.seed)
        except NeurocoreError as exc:
            raise NeurocoreError(f"sweep config: models entry {m.id!r}: {exc}") from None
        names = [n for n, _ in model.named_modules() if n]
        for i, layer in enumerate(config.layers[m.id]):
            if layer not in names:
                near = close_matches(layer, names, n=3)
                hint = f"; close matches: {', '.join(near)}" if near else ""
                raise NeurocoreError(f"sweep config: layers of {m.id!r}[{i}]: layer {layer!r} is not a module of {m.id}{hint} "
                                     "(`neurocore layers --model ...` lists them)")
        del model


def _execute(tasks: list[dict], config: SweepConfig, address):
    """Yield each task's results as it finishes: Ray tasks, or one after the other in this process."""
    if not tasks:
        return
    if config.engine == "local":
        for task in tasks:
            yield _run_group(task)
        return
    from neurocore.scale._ray import _ensure_ray

    ray = _ensure_ray(address)
    gpu = config.device is not None and config.device.startswith("cuda")
    # cpus_per_task CPUs (default 1) and as many torch threads per task: tasks run side by side on the cores.
    cpus = config.cpus_per_task
    remote = ray.remote(num_cpus=0 if gpu else cpus, num_gpus=1 if gpu else 0, max_retries=1)(_run_group)
    refs = {remote.remote({**t, "threads": None if gpu else cpus}): t for t in tasks}
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for ref in done:
            try:
                yield ray.get(ref)
            except Exception as exc:  # noqa: BLE001 — a worker that died: its cells fail, the others go on
                task = refs[ref]
                yield [{**cell, "status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        "seconds": float("nan")} for cell in task["cells"]]


def _table(rows: list[dict], out: Path):
    import pandas as pd

    records = []
    for r in rows:
        rel = os.path.relpath(r["dir"], out)
        records.append({
            "model": r["model"], "layer": r["layer"], "method": r["method"],
            "neurons": r.get("neurons"), "interpretable": r.get("interpretable"), "dead": r.get("dead"),
            "mean_similarity": r.get("mean_similarity", float("nan")), "max_similarity": r.get("max_similarity", float("nan")),
            "seconds": r.get("seconds", float("nan")), "status": r["status"], "path": Path(rel).as_posix(),
            "error": r.get("error", ""),
        })
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    for col in ("neurons", "interpretable", "dead"):
        table[col] = table[col].astype("Int64")
    for col in ("mean_similarity", "max_similarity", "seconds"):
        table[col] = table[col].astype(float)
    return table


def _intro(config: SweepConfig) -> str:
    source = "the probe's classes" if config.labels else f"scores {config.scores}" if config.scores else f"{config.vlm} on {config.concepts}"
    return (f"{len(config.models)} model(s) × their layers × {len(config.methods)} method(s) over the images of "
            f"{config.probe}; concepts: {source}.")


# ----------------------------------------------------------------------------------------------
# The report


def similarity_figure(table, path: str | os.PathLike | None = None):
    """The highest similarity per layer: one panel per method, one line per model over its layers (the
    sweep's finished cells; similarity scales differ between methods, hence the panels).

    Args:
        table: the sweep table (:data:`TABLE_COLUMNS`).
        path: where to save a PNG; None: not saved.

    Returns:
        the ``matplotlib.figure.Figure``.

    Raises:
        NeurocoreError: a table without the sweep's columns.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"model": ["a", "a"], "layer": ["l1", "l2"], "method": ["m", "m"],
        ...                   "max_similarity": [0.2, 0.5], "status": ["ran", "ran"]})
        >>> len(similarity_figure(t).axes)
        1
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    missing = [c for c in ("model", "layer", "method", "max_similarity", "status") if c not in table.columns]
    if missing:
        raise NeurocoreError(f"table must be a sweep table; it lacks the columns {missing}")
    ok = table[table["status"] != "failed"]
    methods = list(dict.fromkeys(table["method"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        part = ok[ok["method"] == method]
        for model in dict.fromkeys(part["model"]):
            rows = part[part["model"] == model]
            ax.plot(list(rows["layer"]), list(rows["max_similarity"]), marker="o", label=str(model))
        ax.set_title(str(method))
        ax.set_xlabel("layer")
        ax.set_ylabel("highest similarity")
        ax.tick_params(axis="x", labelrotation=30)
        if len(part):
            ax.legend(fontsize="small")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def write_sweep_report(table, out_dir: str | os.PathLike, *, title: str = "neurocore sweep", intro: str | None = None) -> Path:
    """Write ``index.html`` into ``out_dir``: the sweep table with a link to every finished cell's own report,
    failed cells marked with their error, and :func:`similarity_figure` (also saved as
    ``highest_similarity.png``).

    Args:
        table: the sweep table (:data:`TABLE_COLUMNS`; ``path`` relative to ``out_dir``).
        out_dir: the sweep's output folder. title, intro: the page's heading and first paragraph.

    Returns:
        the page's path.

    Raises:
        NeurocoreError: a table without the sweep's columns.

    Example:
        >>> import tempfile, pandas as pd
        >>> t = pd.DataFrame([{"model": "a", "layer": "l1", "method": "m", "neurons": 2, "interpretable": 1, "dead": 0,
        ...     "mean_similarity": 0.1, "max_similarity": 0.2, "seconds": 1.0, "status": "failed", "path": "a/l1/m",
        ...     "error": "NeurocoreError: bad"}])
        >>> page = write_sweep_report(t, tempfile.mkdtemp())
        >>> "NeurocoreError: bad" in page.read_text()
        True
    """
    from neurocore import __version__
    from neurocore.report._html import _CSS, _e, page_head, write_page

    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise NeurocoreError(f"table must be a sweep table; it lacks the columns {missing}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = table["status"].value_counts().to_dict()
    meta = [("cells", len(table))] + [(k, v) for k, v in sorted(counts.items())] + [("neurocore", __version__)]
    parts = page_head(title, intro, meta, out, (SWEEP_TABLE, "sweep.json", "highest_similarity.png"))
    figure = out / "highest_similarity.png"
    similarity_figure(table, figure)
    data = base64.b64encode(figure.read_bytes()).decode()
    parts.append(f"<h2>Highest similarity per layer</h2><img alt='highest similarity per layer' src='data:image/png;base64,{data}'>")
    head = "".join(f"<th>{_e(c)}</th>" for c in TABLE_COLUMNS if c != "path") + "<th>report</th>"
    body = []
    for r in table.to_dict("records"):
        flag = {"failed": "dead", "reused": "uninterp"}.get(r["status"], "ok")
        cells = []
        for c in TABLE_COLUMNS:
            if c == "path":
                continue
            v = r[c]
            if c == "status":
                cells.append(f"<td><span class='flag {flag}'>{_e(v)}</span></td>")
            elif isinstance(v, float):
                cells.append(f"<td class='num'>{'' if math.isnan(v) else f'{v:.4g}'}</td>")
            else:
                cells.append(f"<td>{'' if v is None or (not isinstance(v, str) and _isna(v)) else _e(v)}</td>")
        page = Path(r["path"]) / "index.html"
        link = f"<a href='{_e(page.as_posix())}'>report</a>" if (out / page).is_file() and r["status"] != "failed" else ""
        body.append("<tr>" + "".join(cells) + f"<td>{link}</td></tr>")
    parts.append(f"<h2>Cells</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return write_page(out, "index.html", title, _CSS, parts)


def _isna(v) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# The command line


def add_sweep_parser(sub) -> argparse.ArgumentParser:
    """Add ``neurocore sweep CONFIG.yaml [--address HOST:PORT] [--no-progress]`` to the sub-command parsers ``sub``
    (its command is :func:`cmd_sweep`).

    Example:
        >>> parser = argparse.ArgumentParser(prog="neurocore")
        >>> sub = parser.add_subparsers(dest="command")
        >>> _ = add_sweep_parser(sub)
        >>> args = parser.parse_args(["sweep", "s.yaml", "--no-progress"])
        >>> args.command, args.config, args.address, args.no_progress
        ('sweep', 's.yaml', None, True)
    """
    sp = sub.add_parser(
        "sweep",
        help="run models x layers x methods from a YAML file (each model x layer a Ray task); one table and report",
        description=(
            "Explain every layer of every model with every method listed in CONFIG.yaml (see examples/sweep.yaml). "
            "Each (model, layer) pair runs as a Ray task (engine: ray, default) or here (engine: local); every cell "
            "(model, layer, method) writes OUT/<model>/<layer>/<method>/ with its report and, last, done.json. A rerun "
            "skips the cells whose done.json matches their configuration; changed settings rerun only their cells. "
            "Writes OUT/sweep.csv (one row per cell) and OUT/index.html. Exit status 1 when a cell failed."
        ),
    )
    sp.add_argument("config", metavar="CONFIG.yaml", help="the sweep configuration (relative paths in it: from its folder)")
    sp.add_argument("--address", metavar="HOST:PORT",
                    help="Ray cluster ('auto' or HOST:6379 after `ray start --head`); overrides the config's address")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    return sp


def cmd_sweep(args) -> None:
    """Run ``neurocore sweep``: print the table; a failed cell ends with a :class:`NeurocoreError` (exit status 1)
    after every other cell finished and the table and report are written.

    Raises:
        NeurocoreError: an invalid config, or failed cells (named with their errors).

    Example:
        >>> cmd_sweep(argparse.Namespace(config="missing.yaml", address=None, no_progress=True))
        Traceback (most recent call last):
        neurocore._errors.NeurocoreError: sweep config 'missing.yaml' does not exist or is not a file
    """
    import pandas as pd

    result = run_sweep(args.config, address=args.address, progress=not args.no_progress)
    shown = result.table.drop(columns=["path", "error"])
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(shown.to_string(index=False))
    print(f"wrote {result.out / SWEEP_TABLE} and {result.report}")
    failed = result.failed
    if len(failed):
        lines = "; ".join(f"{r.model}/{r.layer}/{r.method}: {r.error}" for r in failed.itertuples())
        raise NeurocoreError(f"{len(failed)} of {len(result.table)} cells failed ({lines}); the others are in "
                             f"{result.out / SWEEP_TABLE}. Fix them and rerun: finished cells are skipped")
