"""What recording a model over a probe set yields: per layer, the N×K summaries and each neuron's top-k."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurocore._errors import NeurocoreError
from neurocore._io import jsonable as _jsonable
from neurocore._io import read_meta, read_result, write_result

DEAD_THRESHOLD = 0.01  # ALGORITHMS.md §2: a neuron is dead when its max activation is below this


def dead_neurons(acts: torch.Tensor, threshold: float = DEAD_THRESHOLD) -> torch.Tensor:
    """Tensor[K] bool: the dead neurons of ``acts (Tensor[N, K])``: max activation below ``threshold``
    over the N images (the published rule, ALGORITHMS.md §2; every method and evaluation uses this one
    definition). No image: every neuron is dead.

    The rule is written for non-negative (post-ReLU) activations. On a signed layer (pre-activations,
    batch-norm outputs before a residual add) a neuron that is negative on every image counts as dead
    although it varies; pass ``threshold=-math.inf`` (``dead_threshold=`` of the callers) to keep them.

    Example:
        >>> dead_neurons(torch.tensor([[0.0, -2.0, 0.5], [0.005, -1.0, 0.0]])).tolist()
        [True, True, False]
    """
    if acts.shape[0] == 0:
        return torch.ones(acts.shape[1], dtype=torch.bool)
    return acts.amax(dim=0) < threshold


@dataclass(frozen=True)
class LayerActivations:
    """One layer's recorded activations.

    Attributes:
        layer: module name as ``model.named_modules()`` spells it.
        summary: how each map was reduced to one number per neuron (``"mean"``, ``"max"``, ``"first"``).
        summaries (Tensor[N, K], float32, CPU): summarised activation of every image and neuron.
        top_values (Tensor[k, K]), top_indices (Tensor[k, K], int64): each neuron's k most activating
            images, rank-major and best first (ties to the lower image index), as :func:`neurocore.ops.topk`.
    """

    layer: str
    summary: str
    summaries: torch.Tensor
    top_values: torch.Tensor
    top_indices: torch.Tensor

    @property
    def num_images(self) -> int:
        return self.summaries.shape[0]

    @property
    def num_neurons(self) -> int:
        return self.summaries.shape[1]

    def dead(self, threshold: float = DEAD_THRESHOLD) -> torch.Tensor:
        """Tensor[K] bool: neurons whose max activation over the probe set is below ``threshold`` (:func:`dead_neurons`)."""
        return dead_neurons(self.summaries, threshold)


@dataclass(frozen=True)
class ActivationStore:
    """Recorded activations of several layers of one model over one probe set.

    Attributes:
        layers: layer name -> :class:`LayerActivations`, in the order they were asked for.
        num_images: N, the probe set's size (after unreadable images were skipped).
        labels (Tensor[N], int64) or None: the probe's labels when it yields ``(image, label)``.
        image_ids: one identifier per kept image, aligned with the rows of the summaries (from
            :func:`~neurocore.probe.record`: the file path relative to the probe root for image folders,
            ``dataset.image_id(i)`` when the dataset has it, else the dataset index as a string), or
            ``()`` when unknown (:meth:`from_tensor` without ``image_ids``).
        key: what determined the recording (model digest, preprocessing, dataset identity...).
        dataset_indices (Tensor[N], int64): the probe dataset's index of every row (rows skip
            unreadable images, so row ``i`` is image ``dataset_indices[i]`` of the dataset); defaults
            to ``0..N-1``. :func:`neurocore.probe.spatial_maps` takes dataset indices:
            ``spatial_maps(model, layer, probe, store.dataset_indices[rows])``.
        skipped: ``(dataset index, reason)`` of every unreadable image left out of the rows.

    Example:
        >>> store = ActivationStore.from_tensor(torch.rand(6, 3), "fc", top_k=2)
        >>> store["fc"].top_indices.shape, store.dataset_indices.tolist(), store.image_ids
        (torch.Size([2, 3]), [0, 1, 2, 3, 4, 5], ())
    """

    layers: Mapping[str, LayerActivations]
    num_images: int
    labels: torch.Tensor | None = None
    image_ids: tuple[str, ...] = ()
    key: Mapping[str, Any] = field(default_factory=dict)
    dataset_indices: torch.Tensor | None = None
    skipped: tuple[tuple[int, str], ...] = ()

    def __post_init__(self):
        if self.image_ids and len(self.image_ids) != self.num_images:
            raise NeurocoreError(
                f"image_ids has {len(self.image_ids)} ids but the store has {self.num_images} rows: give one id per row (or none)"
            )
        if self.dataset_indices is None:
            object.__setattr__(self, "dataset_indices", torch.arange(self.num_images, dtype=torch.int64))
        elif self.dataset_indices.shape != (self.num_images,):
            raise NeurocoreError(
                f"dataset_indices must be a Tensor[{self.num_images}] (one per row); got shape "
                f"{tuple(self.dataset_indices.shape)}"
            )

    def __getitem__(self, layer: str) -> LayerActivations:
        try:
            return self.layers[layer]
        except KeyError:
            raise NeurocoreError(
                f"layer {layer!r} was not recorded; this store has: {', '.join(self.layers)}"
            ) from None

    def __contains__(self, layer: str) -> bool:
        return layer in self.layers

    def dead(self, threshold: float = DEAD_THRESHOLD) -> dict[str, torch.Tensor]:
        """layer -> Tensor[K] bool: the dead neurons of every layer (:func:`dead_neurons`)."""
        return {name: acts.dead(threshold) for name, acts in self.layers.items()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``activations.json`` (names, ids, skipped images, key, the tensors' digest) and
        ``activations.pt`` (tensors) into ``directory`` (created if needed), each atomically, with
        :func:`neurocore._io.write_result`. :meth:`load` reads them back. Returns the folder."""
        directory = Path(directory)
        tensors: dict[str, torch.Tensor] = {"dataset_indices": self.dataset_indices}
        if self.labels is not None:
            tensors["labels"] = self.labels
        for i, acts in enumerate(self.layers.values()):
            tensors[f"{i}.summaries"] = acts.summaries
            tensors[f"{i}.top_values"] = acts.top_values
            tensors[f"{i}.top_indices"] = acts.top_indices
        meta = {
            "num_images": self.num_images,
            "layers": [{"name": a.layer, "summary": a.summary} for a in self.layers.values()],
            "layer_keys": list(self.layers),
            "image_ids": list(self.image_ids),
            "skipped": [[int(i), str(why)] for i, why in self.skipped],
            "key": _jsonable(self.key),
        }
        return write_result(directory / "activations.json", "activations", _STORE_FORMAT, meta, tensors,
                            directory / "activations.pt")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ActivationStore:
        """Read a store written by :meth:`save` (also the digest-less format 1 of earlier versions).

        Raises:
            NeurocoreError: the folder lacks the files, they come from another format version, or the
                tensors are not those the JSON was written with.
        """
        directory = Path(directory)
        meta_path, tensor_path = directory / "activations.json", directory / "activations.pt"
        if not meta_path.is_file() or not tensor_path.is_file():
            raise NeurocoreError(f"{directory} holds no saved ActivationStore: pass the folder ActivationStore.save() wrote")
        meta = read_meta(meta_path, "activations", "ActivationStore")
        if "format" not in meta and meta.get("format_version") == 1:
            meta = {**meta, "format": "neurocore.activations"}  # format 1 had no kind and no digest
        meta, tensors = read_result(meta_path, "activations", (1, _STORE_FORMAT), tensor_path, what="ActivationStore", meta=meta)
        layers = {}
        for i, (key, info) in enumerate(zip(meta["layer_keys"], meta["layers"])):
            layers[key] = LayerActivations(
                info["name"], info["summary"], tensors[f"{i}.summaries"], tensors[f"{i}.top_values"], tensors[f"{i}.top_indices"]
            )
        return cls(
            layers,
            int(meta["num_images"]),
            labels=tensors.get("labels"),
            image_ids=tuple(meta["image_ids"]),
            key=meta["key"],
            dataset_indices=tensors["dataset_indices"],
            skipped=tuple((int(i), str(why)) for i, why in meta["skipped"]),
        )

    @classmethod
    def from_tensor(
        cls,
        acts: torch.Tensor,
        layer: str = "layer",
        top_k: int = 100,
        labels=None,
        *,
        image_ids=None,
        dataset_indices=None,
    ) -> ActivationStore:
        """A store of one layer from an already summarised ``acts (Tensor[N, K])``.

        Args:
            acts (Tensor[N, K]): summarised activations, row i = image i.
            layer: the layer's name in the store.
            top_k: each neuron's top images kept (at most N).
            labels (Tensor[N], int64, optional): the images' labels.
            image_ids: the N images' ids (e.g. paths relative to the probe root, as
                :func:`neurocore.probe.record` gives them). Default ``()``: unknown. No ids are made up,
                so rows of this store are never mistaken for files; results then carry no image ids
                and alignment checks compare only numbers of images.
            dataset_indices (Tensor[N], int64, optional): the probe dataset's index of every row
                (default ``0..N-1``).

        Raises:
            NeurocoreError: ``acts`` not 2-D or with NaN, ``image_ids`` of another length.
        """
        from neurocore import ops

        if acts.dim() != 2:
            raise NeurocoreError(f"acts must be a Tensor[N, K] of summarised activations; got shape {tuple(acts.shape)}")
        acts = acts.detach().to("cpu", torch.float32).contiguous()
        if torch.isnan(acts).any():
            raise NeurocoreError(f"acts of layer {layer!r} contain NaN; check the model and inputs")
        if isinstance(image_ids, str):
            raise NeurocoreError("image_ids must be a sequence of N strings (one per row); got one string")
        ids = () if image_ids is None else tuple(str(i) for i in image_ids)
        if dataset_indices is not None:
            dataset_indices = torch.as_tensor(dataset_indices, dtype=torch.int64).reshape(-1)
        values, indices = ops.topk(acts, top_k)
        layer_acts = LayerActivations(layer, "given", acts, values, indices)
        return cls({layer: layer_acts}, acts.shape[0], labels=labels, image_ids=ids, dataset_indices=dataset_indices)


_STORE_FORMAT = 2  # 2: the common result header and the tensors' digest (neurocore._io)


