"""File helpers shared by every result type that saves itself (STYLE.md: results are dataclasses with
``save``/``load``): JSON-safe values, atomic writes, and the one pair :func:`write_result` /
:func:`read_result` that every result object (:class:`~neurocore.methods.Explanations`,
:class:`~neurocore.probe.ActivationStore`, :class:`~neurocore.concepts.ConceptScores`,
:class:`~neurocore.Split`, :class:`~neurocore.evaluate.SimulationScores`) saves and loads with.

A saved result is a JSON file (metadata, with ``"format": "neurocore.<kind>"`` and
``"format_version"``) and, when it has tensors, one tensor file written by ``torch.save``. The JSON
holds the SHA-256 of the tensors (``"tensors_sha256"``), so a reader never pairs the metadata of one
save with the tensors of another (a crash between the two writes, or files copied by hand).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from neurocore._errors import NeurocoreError


def jsonable(value):
    """Tuples to lists, NaN to None (strict JSON readers reject NaN), tensors and numpy values to
    Python numbers; infinities stay floats (``json`` writes them as ``Infinity``).

    Example:
        >>> import torch
        >>> jsonable({"a": (1, float("nan")), "b": torch.tensor([0.5])})
        {'a': [1, None], 'b': [0.5]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``: a
    reader (or an interrupted run) never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def tensors_digest(tensors: Mapping[str, Any]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in sorted name order.

    Example:
        >>> import torch
        >>> tensors_digest({"a": torch.zeros(2)}) == tensors_digest({"a": torch.zeros(2)})
        True
        >>> tensors_digest({"a": torch.zeros(2)}) == tensors_digest({"a": torch.ones(2)})
        False
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_result(
    meta_path: str | os.PathLike,
    kind: str,
    version: int,
    meta: Mapping[str, Any],
    tensors: Mapping[str, Any] | None = None,
    tensor_path: str | os.PathLike | None = None,
) -> Path:
    """Save one result object: ``meta`` as JSON at ``meta_path`` and ``tensors`` (if any) with
    ``torch.save`` at ``tensor_path``, each written atomically, tied by the tensors' digest.

    Args:
        meta_path: the JSON file (its folder is created).
        kind: the result type (``"explanations"``, ``"activations"``...); written as
            ``"format": "neurocore.<kind>"``.
        version: the format version :func:`read_result` will require.
        meta: JSON-ready metadata (:func:`jsonable` is applied; keys that are not JSON values are
            written as text).
        tensors: name -> tensor, or None for a JSON-only result.
        tensor_path: where the tensors go (required with ``tensors``).

    Returns:
        ``meta_path``'s folder.

    Example:
        >>> import tempfile, torch
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = write_result(d / "x.json", "demo", 1, {"n": 2}, {"a": torch.ones(2)}, d / "x.pt")
        >>> meta, tensors = read_result(d / "x.json", "demo", (1,), d / "x.pt")
        >>> meta["n"], tensors["a"].tolist()
        (2, [1.0, 1.0])
    """
    import torch

    meta_path = Path(meta_path)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": f"neurocore.{kind}", "format_version": int(version)}
    if tensors is not None:
        if tensor_path is None:
            raise TypeError("write_result: tensor_path is required with tensors")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        payload["tensors_sha256"] = tensors_digest(tensors)
        payload["tensor_file"] = Path(tensor_path).name
    payload.update(jsonable(dict(meta)))
    text = json.dumps(payload, indent=1, ensure_ascii=False, default=str)
    if tensors is not None:
        atomic_write(Path(tensor_path), lambda p: torch.save(dict(tensors), p))
    atomic_write(meta_path, lambda p: p.write_text(text, encoding="utf-8"))
    return meta_path.parent


def read_meta(meta_path: str | os.PathLike, kind: str, what: str) -> dict:
    """The JSON of a saved result, with clear errors for a missing or unreadable file."""
    meta_path = Path(meta_path)
    if not meta_path.is_file():
        raise NeurocoreError(f"{str(meta_path)!r} does not exist: pass what {what}.save() wrote")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NeurocoreError(f"{str(meta_path)!r} is not valid JSON ({exc}); save the {what} again") from None
    if not isinstance(meta, dict):
        raise NeurocoreError(f"{str(meta_path)!r} is not a saved {what}: expected a JSON object")
    return meta


def read_result(
    meta_path: str | os.PathLike,
    kind: str,
    versions: tuple[int, ...],
    tensor_path: str | os.PathLike | None = None,
    *,
    what: str | None = None,
    meta: dict | None = None,
) -> tuple[dict, dict | None]:
    """Read what :func:`write_result` wrote: ``(meta, tensors)`` (tensors None for JSON-only results).

    Args:
        meta_path, tensor_path: the files (tensor_path None: no tensors expected).
        kind: the expected result type.
        versions: the format versions this reader understands.
        what: the class name for messages (default: ``kind``).
        meta: the already-parsed JSON (callers that read it to choose a format).

    Raises:
        NeurocoreError: a missing or unreadable file, another kind, an unknown format version, or
            tensors that are not the ones the JSON was written with.
    """
    import torch

    what = what or kind
    meta = read_meta(meta_path, kind, what) if meta is None else meta
    if meta.get("format") != f"neurocore.{kind}":
        raise NeurocoreError(
            f"{str(meta_path)!r} is not a saved {what} (format {meta.get('format')!r}, expected 'neurocore.{kind}')"
        )
    if meta.get("format_version") not in versions:
        raise NeurocoreError(
            f"{str(meta_path)!r} has format version {meta.get('format_version')}; this neurocore reads "
            f"{', '.join(map(str, versions))}: save it again with this version"
        )
    if tensor_path is None:
        return meta, None
    tensor_path = Path(tensor_path)
    if not tensor_path.is_file():
        raise NeurocoreError(f"{str(tensor_path)!r} is missing next to {Path(meta_path).name}: save the {what} again")
    try:
        tensors = torch.load(tensor_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one message with the fix
        raise NeurocoreError(f"cannot read {str(tensor_path)!r} ({type(exc).__name__}: {exc}); save the {what} again") from None
    if not isinstance(tensors, dict) or "tensors_sha256" in meta and tensors_digest(tensors) != meta["tensors_sha256"]:
        raise NeurocoreError(
            f"{str(tensor_path)!r} does not match {str(meta_path)!r}: the two files come from different saves "
            f"(the tensors' digest differs); save the {what} again"
        )
    return meta, tensors


# The JSON file name of each result kind, for :func:`load_any`.
RESULT_FILES = {
    "explanations.json": "explanations",
    "activations.json": "activations",
    "concept_scores.json": "concept_scores",
    "split.json": "split",
    "simulation_scores.json": "simulation_scores",
}


def load_any(path: str | os.PathLike):
    """Load whatever result a folder (or a split's JSON file) holds.

    Raises:
        NeurocoreError: the path holds no saved result, or several.
    """
    path = Path(path)
    if path.is_file():
        meta = read_meta(path, "result", "result")
        kind = str(meta.get("format", "")).removeprefix("neurocore.")
        if kind != "split":
            raise NeurocoreError(f"{str(path)!r} is a file; pass the folder a result's save() wrote")
        return _loader(kind)(path)
    if not path.is_dir():
        raise NeurocoreError(f"{str(path)!r} does not exist: pass the folder a result's save() wrote")
    found = [kind for name, kind in RESULT_FILES.items() if (path / name).is_file()]
    if not found:
        raise NeurocoreError(
            f"{str(path)!r} holds no saved neurocore result (none of {', '.join(RESULT_FILES)}): pass the folder "
            "that Explanations/ActivationStore/ConceptScores/Split/SimulationScores.save() wrote"
        )
    if len(found) > 1:
        raise NeurocoreError(
            f"{str(path)!r} holds several saved results ({', '.join(found)}); load one with its class's load()"
        )
    return _loader(found[0])(path)


def _loader(kind: str):
    if kind == "explanations":
        from neurocore.methods._base import Explanations

        return Explanations.load
    if kind == "activations":
        from neurocore.probe._store import ActivationStore

        return ActivationStore.load
    if kind == "concept_scores":
        from neurocore.concepts._scores import ConceptScores

        return ConceptScores.load
    if kind == "split":
        from neurocore._split import Split

        return Split.load
    from neurocore.evaluate._simulation import SimulationScores

    return SimulationScores.load
