"""The on-disk cache of recordings: one folder per (model, layer, summary, preprocessing, probe),
filled chunk by chunk so that an interrupted recording resumes where it stopped.

Layout under the caller's ``cache_dir``::

    activations/<layer>-<summary>-<digest>/manifest.json     the key (JSON) and the chunk size
    activations/<layer>-<summary>-<digest>/chunk-000000.pt   rows of dataset indices [0, chunk_size)

A chunk holds the summaries, dataset indices, ids and labels of its readable images and the unreadable
ones it skipped. Every file is written to a temporary name and renamed, so a killed run leaves whole
chunks or none. A different key is a different folder: a stale recording is never read.

The key sees the model's tensors (:func:`weights_digest`), its structure and code
(:func:`structure_digest`) and the preprocessing's description (:func:`describe_transform`); what it
cannot see (a plain attribute read by ``forward``) the content check of :func:`check_cached_rows` finds
by recomputing a few cached rows whenever a cache is reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurocore._io import atomic_write as _atomic
from neurocore._io import jsonable as _jsonable
from neurocore.probe._data import describe_transform, probe_fingerprint

CACHE_FORMAT = 2  # 2: structure digest, non-persistent buffers, transform_key
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")  # "<function f at 0x7f...>": differs on every run


def weights_digest(model: nn.Module) -> str:
    """A digest of the model's class and every tensor its forward pass reads: each ``state_dict``
    entry and each non-persistent buffer (name, dtype, shape, bytes).

    Buffers count (BatchNorm statistics change outputs), non-persistent ones too (they are not in
    ``state_dict`` but the forward pass reads them); so does the dtype (``model.double()``).
    blake2b over the raw bytes: about a second per GB on one core.

    Example:
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> weights_digest(a) == weights_digest(a), weights_digest(a) == weights_digest(b)
        (True, False)
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    state = model.state_dict()
    for name, t in state.items():
        if isinstance(t, torch.Tensor):
            h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
            h.update(_tensor_bytes(t))
        else:  # a module's get_extra_state(): whatever it is, its repr stands for it
            h.update(f"{name}\0extra\0{t!r}\n".encode())
    for name, t in model.named_buffers():
        if name not in state and t is not None:
            h.update(f"{name}\0non-persistent\0{t.dtype}\0{tuple(t.shape)}\n".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()


def structure_digest(model: nn.Module) -> str:
    """A digest of what, besides its tensors, decides a model's outputs and can be read from it.

    * ``repr(model)``: the module tree with each module's configuration (``inplace``, ``eps``,
      ``stride``, ...), parameter-free modules included (a ReLU swapped for a GELU);
    * the code of every module class: for each distinct class of ``model.modules()`` and its bases
      up to ``nn.Module``, the bytecode, constants and default arguments of each method and the
      simple class attributes, so an edited ``forward`` (or a helper method it calls) changes it;
    * the forward hooks and pre-hooks registered on its modules (and globally), by name and code.

    Not seen: plain Python attributes that ``forward`` reads but the module's ``extra_repr`` does not
    print (``self.gain = 3.0``), functions outside the module classes that ``forward`` calls, and
    global settings; the content check of a reused cache catches their effect on the outputs.

    Example:
        >>> a = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
        >>> b = nn.Sequential(nn.Linear(3, 2), nn.GELU())
        >>> structure_digest(a) == structure_digest(nn.Sequential(nn.Linear(3, 2), nn.ReLU())), structure_digest(a) == structure_digest(b)
        (True, False)
    """
    h = hashlib.blake2b(digest_size=20)
    try:
        text = repr(model)
    except Exception as exc:  # a broken extra_repr must not stop a recording; its class still counts
        text = f"<repr failed: {type(exc).__name__}>"
    h.update(text.encode("utf-8", "replace"))
    classes = {type(m) for m in model.modules()}
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        h.update(_class_digest(cls).encode())
    hooks = [(f"global.{kind}", hook) for kind, hook in _global_hooks()]
    for name, m in model.named_modules():
        for kind in ("_forward_pre_hooks", "_forward_hooks"):
            hooks += [(f"{name}.{kind}", hook) for hook in getattr(m, kind, {}).values()]
        if isinstance(m, torch.jit.ScriptModule):  # scripted code lives in .code, not in a Python class
            try:
                h.update(m.code.encode())
            except Exception:
                pass
    for where, hook in hooks:
        h.update(f"{where}\0{_callable_name(hook)}\0{_code_digest(hook)}\n".encode())
    return h.hexdigest()


def _global_hooks():
    from torch.nn.modules import module as torch_module

    for kind in ("_global_forward_pre_hooks", "_global_forward_hooks"):
        for hook in getattr(torch_module, kind, {}).values():
            yield kind, hook


def _callable_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _class_digest(cls: type) -> str:
    """``module.qualname`` and the code of the class and its bases below ``nn.Module``."""
    parts = []
    for klass in cls.__mro__:
        if klass is nn.Module or klass is object:
            continue
        parts.append(f"class {klass.__module__}.{klass.__qualname__}")
        for attr, value in sorted(vars(klass).items()):
            fns = _functions_of(value)
            if fns:
                parts += [f"{attr}:{_code_digest(fn)}" for fn in fns]
            elif not attr.startswith("__") and isinstance(value, (int, float, str, bool, tuple, type(None))):
                parts.append(_ADDRESS.sub("", f"{attr}={value!r}"))
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def _functions_of(value) -> list:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset) if f is not None]
    if isinstance(value, functools.partialmethod):
        value = value.func
    return [value] if isinstance(value, types.FunctionType) else []


def _code_digest(fn) -> str:
    """Digest of a function's behaviour: its bytecode with constants, names and defaults (available
    without source files, unchanged by edits elsewhere in the file); a callable object: its class."""
    fn = getattr(fn, "__func__", fn)  # bound methods
    while hasattr(fn, "__wrapped__") and isinstance(fn, types.FunctionType):
        inner = fn.__wrapped__
        if inner is fn:
            break
        fn = inner
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"object:{type(fn).__module__}.{type(fn).__qualname__}"
    h = hashlib.blake2b(digest_size=16)
    _hash_code(h, code)
    defaults = repr((getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None)))
    h.update(_ADDRESS.sub("", defaults).encode())  # a function as a default: its name, not this run's address
    return h.hexdigest()


def _hash_code(h, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(h, const)
        else:
            h.update(f"{_const_text(const)}\0".encode())


def _const_text(const) -> str:
    # frozenset constants (`x in {"a", "b"}`) print in hash order, which changes from run to run
    if isinstance(const, frozenset):
        return "frozenset(" + ",".join(sorted(_const_text(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(c) for c in const) + ")"
    return f"{type(const).__name__}:{const!r}"


def _tensor_bytes(t: torch.Tensor):
    # As raw bytes whatever the dtype (numpy has no bfloat16): a flat uint8 view of a contiguous CPU copy.
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()


def row_digests(images: torch.Tensor, indices: torch.Tensor, ids, labels: torch.Tensor | None) -> torch.Tensor:
    """Tensor[B, 16] uint8: a digest of each input row (its dataset index, id, label and pixels), to
    verify cached rows of a probe that has no fingerprint of its own."""
    out = torch.empty(images.shape[0], 16, dtype=torch.uint8)
    for r in range(images.shape[0]):
        h = hashlib.blake2b(digest_size=16)
        label = None if labels is None else int(labels[r])
        h.update(f"{int(indices[r])}\0{ids[r]}\0{label}\0{images.dtype}\0{tuple(images.shape[1:])}\n".encode())
        h.update(_tensor_bytes(images[r]))
        out[r] = torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# transforms that can key a cache


def _lambda_types() -> tuple[type, ...]:
    found = []
    try:
        from torchvision import transforms

        found.append(transforms.Lambda)
        from torchvision.transforms import v2

        found.append(v2.Lambda)
    except Exception:  # torchvision absent or without v2
        pass
    return tuple(found)


def undescribed_transforms(transform, where: str = "transform") -> list[str]:
    """The parts of ``transform`` whose ``repr`` does not describe what they do, as ``"path: repr"``.

    Such a part cannot key a cache: two different preprocessings would share one entry. They are
    torchvision's ``Lambda`` (its repr is ``Lambda()`` whatever the function), plain functions,
    lambdas, bound methods and ``functools.partial`` objects (a name or a memory address, not the
    code or the parameters), and any object whose repr holds a memory address (``<... at 0x...>``).
    ``Compose``-like containers (a ``.transforms`` list, at any depth) and ``nn.Module`` transforms
    are walked part by part.

    Example:
        >>> from torchvision import transforms as T
        >>> undescribed_transforms(T.Compose([T.ToTensor(), T.Lambda(lambda x: 2 * x)]))
        ['transform.transforms[1]: Lambda()']
        >>> undescribed_transforms(T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.2,))]))
        []
    """
    if transform is None:
        return []
    opaque = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
              functools.partial) + _lambda_types()
    if isinstance(transform, opaque):
        return [f"{where}: {_short(describe_transform(transform))}"]
    found: list[str] = []
    children = getattr(transform, "transforms", None)
    if isinstance(children, (list, tuple)):
        for i, child in enumerate(children):
            found += undescribed_transforms(child, f"{where}.transforms[{i}]")
    elif isinstance(transform, nn.Module):
        for name, child in transform.named_children():
            found += undescribed_transforms(child, f"{where}.{name}")
    if not found:
        try:
            text = repr(transform)
        except Exception as exc:
            text = f"<repr failed: {type(exc).__name__} at 0x0>"
        if _ADDRESS.search(text):
            found.append(f"{where}: {_short(text)}")
    return found


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def uncacheable_message(parts: list[str], alternative: str | None = None) -> str:
    """The warning for preprocessing that cannot key a cache (see :func:`undescribed_transforms`)."""
    listed = "; ".join(parts[:3]) + (f" (and {len(parts) - 3} more)" if len(parts) > 3 else "")
    return (
        f"not caching: the repr of {listed} does not describe what it does (torchvision's Lambda always prints "
        "'Lambda()'; a function or lambda prints only a name or a memory address), so another preprocessing "
        "would read the same cache entry. Make each such part an object whose class has a __repr__ stating "
        "its parameters (e.g. 'Scale(0.5)')" + (f", or {alternative}" if alternative else "")
    )


def cacheable_preprocessing(transform, probe, transform_key: str | None) -> bool:
    """True when ``record``'s cache key can tell this preprocessing from others; else a warning that
    says how to fix it and False (the recording then runs without the cache).

    ``transform_key`` (the user's name for the preprocessing) makes any transform cacheable.
    """
    if transform_key is not None:
        return True
    parts = undescribed_transforms(transform) + undescribed_transforms(getattr(probe, "transform", None), "probe.transform")
    if not parts:
        return True
    warnings.warn(
        "record(cache_dir=...) is " + uncacheable_message(
            parts, "pass record(..., transform_key='...') naming the preprocessing (one name per distinct preprocessing)"
        ),
        stacklevel=3,
    )
    return False


def recording_key(model: nn.Module, probe, transform, transform_key: str | None = None) -> dict[str, Any]:
    """What a recording's result depends on, except the layer, summary and top-k."""
    from neurocore import __version__
    from neurocore._errors import NeurocoreError

    if transform_key is not None and (not isinstance(transform_key, str) or not transform_key.strip()):
        raise NeurocoreError(
            f"transform_key must be a non-empty string naming the preprocessing (e.g. 'resize224-scale2'); got {transform_key!r}"
        )
    probe = getattr(probe, "_neurocore_wrapped", probe)  # a wrapper that only shares decoding
    return {
        "format": CACHE_FORMAT,
        "neurocore": __version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "weights": weights_digest(model),
        "structure": structure_digest(model),
        "transform": describe_transform(transform),
        "transform_key": transform_key,
        "probe_type": f"{type(probe).__module__}.{type(probe).__qualname__}",
        "probe_len": len(probe),
        "probe_fingerprint": probe_fingerprint(probe),
        # An ImageFolder's own transform shapes its tensors but not its file-list fingerprint.
        "probe_transform": describe_transform(getattr(probe, "transform", None)),
    }


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_jsonable(key), sort_keys=True).encode()).hexdigest()


class LayerCache:
    """The chunk files of one layer's recording in one folder (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike, key: Mapping[str, Any], chunk_size: int):
        self.key = dict(key)
        self.digest = key_digest(self.key)
        self.chunk_size = chunk_size
        safe_layer = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(key["layer"]))[:80]
        self.folder = Path(cache_dir) / "activations" / f"{safe_layer}-{key['summary']}-{self.digest[:16]}"
        manifest = {"key": _jsonable(self.key), "key_digest": self.digest, "chunk_size": chunk_size}
        old = self._read_manifest()
        if old != manifest:
            # A new folder, or one written with another chunk size (or a damaged manifest): its chunks
            # cannot be matched to this run's ranges, so they are dropped rather than trusted.
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic(self.folder / "manifest.json", lambda p: p.write_text(json.dumps(manifest, indent=1)))

    def _read_manifest(self):
        try:
            return json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def _path(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:06d}.pt"

    def load(self, chunk: int, start: int, stop: int, *, warn: bool = True) -> dict | None:
        """The chunk's content, or None when it is absent or does not belong to this key and range."""
        path = self._path(chunk)
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            ok = (
                data["key_digest"] == self.digest
                and (data["start"], data["stop"]) == (start, stop)
                and data["summaries"].shape[0] == data["dataset_indices"].shape[0] == len(data["ids"])
            )
        except Exception as exc:  # a damaged file is recomputed, never trusted
            if warn:
                warnings.warn(f"cache chunk {path} could not be read ({type(exc).__name__}: {exc}); recomputing it", stacklevel=3)
            return None
        return data if ok else None

    def write(self, chunk: int, data: dict) -> None:
        data = {**data, "key_digest": self.digest}
        _atomic(self._path(chunk), lambda p: torch.save(data, p))

    def clear(self) -> None:
        """Delete every chunk (the manifest stays): the next run recomputes and rewrites them."""
        for path in self.folder.glob("chunk-*.pt"):
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# the content check of a reused cache


class _Rows(torch.utils.data.Dataset):
    """Some items of a probe by dataset index, keeping the probe's image ids."""

    def __init__(self, probe, indices: list[int]):
        self.probe, self.indices = probe, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.probe[self.indices[i]]

    def image_id(self, i):
        own = getattr(self.probe, "image_id", None)
        return own(self.indices[i]) if callable(own) else str(self.indices[i])


def _end_rows(cache: LayerCache, n: int, per_end: int) -> dict | None:
    """The cached rows a run would reuse first and last: ``per_end`` rows from each end of the cache,
    as {dataset index: (summary row, digest row or None)}, and the layer's scale (max |summary|)."""
    size = cache.chunk_size
    spans = [(c, c * size, min((c + 1) * size, n)) for c in range(math.ceil(n / size))]

    def first_with_rows(order):
        for c, start, stop in order:
            data = cache.load(c, start, stop, warn=False)  # the run itself warns about damaged chunks
            if data is not None and data["dataset_indices"].numel():
                return c, data
        return None

    front = first_with_rows(spans)
    if front is None:
        return None
    back = first_with_rows(reversed(spans[front[0] + 1:])) or front
    rows, scale = {}, 0.0
    for data, picks in ((front[1], range(per_end)), (back[1], range(-1, -per_end - 1, -1))):
        count = data["dataset_indices"].numel()
        scale = max(scale, float(data["summaries"].abs().max()) if data["summaries"].numel() else 0.0)
        for p in picks:
            if -count <= p < count:
                digest = data["digests"][p] if data.get("digests") is not None else None
                rows[int(data["dataset_indices"][p])] = (data["summaries"][p], digest)
    return {"rows": rows, "scale": scale}


def _tolerance(model: nn.Module, device: torch.device) -> float:
    """Relative tolerance of a recomputed summary (to the layer's scale): batch composition changes the
    kernels' summation order; half precision and TF32 (cuDNN's default for float32 convolutions) add more."""
    from neurocore.probe._layers import model_float_dtype

    dtype = model_float_dtype(model)
    if dtype in (torch.float16, torch.bfloat16):
        return 2e-2
    tf32 = device.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    if tf32 or torch.get_float32_matmul_precision() != "highest":
        return 1e-2
    return 1e-4


def _summaries_now(model, modules, summaries, layouts, images, device) -> dict[str, torch.Tensor]:
    """Each layer's [B, K] summaries of ``images`` under the current model (one forward pass)."""
    from neurocore.probe._forward import hooked_forward
    from neurocore.probe._layers import eval_mode, model_float_dtype, summarise

    def keep(name, out):
        return summarise(out, summaries[name], name)

    # record's own dict: "auto" entries resolved here are written back, as a recording pass would
    layouts = layouts if layouts is not None else dict.fromkeys(modules, "auto")
    with eval_mode(model):
        outputs, _, _ = hooked_forward(
            model, modules, images, keep=keep, layouts=layouts, device=device, dtype=model_float_dtype(model),
            where="rows checked against the cache",
        )
    return {name: out.to("cpu", torch.float32) for name, out in outputs.items()}


def check_cached_rows(
    caches, model, modules, summaries, probe, transform, device, *, verify_rows: bool, layouts=None
) -> list[str]:
    """Recompute the first and last row that ``record`` would take from each layer's cache and compare
    them with the cached summaries; clear (and warn once about) every layer whose rows differ.

    The cache key cannot see everything that changes outputs (a plain attribute read by ``forward``, a
    function outside the module classes); this check costs one forward pass of at most a few images,
    with every cached layer hooked. A row agrees when ``|now - cached| <= rtol * (scale + |cached|)``,
    ``scale`` the largest ``|summary|`` of the layer's loaded chunks and ``rtol`` 1e-4 (1e-2 under TF32
    or half precision). With ``verify_rows`` (a probe without a fingerprint) only rows whose input
    digest still matches are compared: the others are recomputed by the run anyway.

    Returns:
        The names of the layers whose cache was cleared (the run recomputes and rewrites them).
    """
    from neurocore.probe._data import iter_batches

    n = len(probe)
    ends = {}
    for name, cache in caches.items():
        found = _end_rows(cache, n, 2 if verify_rows else 1)
        if found is not None:
            ends[name] = found
    if not ends:
        return []
    wanted = sorted({i for found in ends.values() for i in found["rows"]})
    view = _Rows(probe, wanted)
    images, indices, ids, labels = {}, [], [], []
    for batch in iter_batches(view, len(wanted), transform, skipped=[]):
        real = [wanted[int(i)] for i in batch.indices]
        digests = row_digests(batch.images, torch.tensor(real), batch.ids, batch.labels) if verify_rows else None
        for r, i in enumerate(real):
            images[i] = (batch.images[r], None if digests is None else digests[r])
    chosen: dict[str, list[int]] = {}
    for name, found in ends.items():
        usable = [
            i for i, (_, digest) in found["rows"].items()
            # without a fingerprint the run reuses a row only when its input digest matches: so here
            if i in images and (not verify_rows or (digest is not None and torch.equal(digest, images[i][1])))
        ]
        if usable:
            chosen[name] = [usable[0], usable[-1]] if len(usable) > 1 else usable
    rows = sorted({i for picks in chosen.values() for i in picks})
    if not rows:
        return []
    hooked = {name: modules[name] for name in chosen}
    now = _summaries_now(model, hooked, summaries, layouts, torch.stack([images[i][0] for i in rows]), device)
    rtol = _tolerance(model, device)
    stale = {}
    for name, picks in chosen.items():
        scale = ends[name]["scale"]
        for i in picks:
            cached = ends[name]["rows"][i][0]
            fresh = now[name][rows.index(i)]
            if fresh.shape != cached.shape:
                stale[name] = f"dataset index {i}: {cached.numel()} cached neurons, {fresh.numel()} now"
                break
            err = (fresh - cached).abs()
            bad = err > rtol * (scale + cached.abs())
            if bad.any():
                k = int(err.argmax())
                stale[name] = f"dataset index {i}, neuron {k}: cached {float(cached[k]):.6g}, now {float(fresh[k]):.6g}"
                break
    if stale:
        warnings.warn(
            "cache " + "; ".join(f"{caches[name].folder} ({why})" for name, why in stale.items())
            + " does not match the model's current outputs; recomputing. Something the cache key cannot see "
            "changed (e.g. a plain attribute read by forward, or code outside the model's module classes); "
            "use one cache_dir per experiment to avoid recomputing",
            stacklevel=3,
        )
        for name in stale:
            caches[name].clear()
    return list(stale)
