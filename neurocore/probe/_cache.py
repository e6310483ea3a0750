"""The on-disk cache of recordings: one folder per (model weights, layer, summary, preprocessing, probe),
filled chunk by chunk so that an interrupted recording resumes where it stopped.

Layout under the caller's ``cache_dir``::

    activations/<layer>-<summary>-<digest>/manifest.json     the key (JSON) and the chunk size
    activations/<layer>-<summary>-<digest>/chunk-000000.pt   rows of dataset indices [0, chunk_size)

A chunk holds the summaries, dataset indices, ids and labels of its readable images and the unreadable
ones it skipped. Every file is written to a temporary name and renamed, so a killed run leaves whole
chunks or none. A different key is a different folder: a stale recording is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurocore.probe._data import describe_transform, probe_fingerprint
from neurocore.probe._store import _atomic, _jsonable

CACHE_FORMAT = 1


def weights_digest(model: nn.Module) -> str:
    """A digest of the model's class and every ``state_dict`` entry (name, dtype, shape, bytes).

    Buffers count (BatchNorm statistics change outputs). blake2b over the raw bytes: about a second
    per GB on one core.

    Example:
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> weights_digest(a) == weights_digest(a), weights_digest(a) == weights_digest(b)
        (True, False)
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


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


def recording_key(model: nn.Module, probe, transform) -> dict[str, Any]:
    """What a recording's result depends on, except the layer, summary and top-k."""
    from neurocore import __version__

    return {
        "format": CACHE_FORMAT,
        "neurocore": __version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "weights": weights_digest(model),
        "transform": describe_transform(transform),
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

    def load(self, chunk: int, start: int, stop: int) -> dict | None:
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
            warnings.warn(f"cache chunk {path} could not be read ({type(exc).__name__}: {exc}); recomputing it", stacklevel=3)
            return None
        return data if ok else None

    def write(self, chunk: int, data: dict) -> None:
        data = {**data, "key_digest": self.digest}
        _atomic(self._path(chunk), lambda p: torch.save(data, p))
