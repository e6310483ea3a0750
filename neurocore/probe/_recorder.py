"""The streaming state of a recording: summaries kept row by row, each neuron's top-k merged batch by batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.probe._layers import layer_summaries, summarise
from neurocore.probe._store import ActivationStore, LayerActivations


class ActivationRecorder:
    """Accumulates layer outputs batch by batch into an :class:`ActivationStore` (torchmetrics style:
    :meth:`update` per batch, :meth:`compute` at the end, :meth:`reset` to start over).

    Each batch's outputs are summarised (:func:`summarise`), appended to the N×K summary matrix (float32,
    CPU) and folded into each neuron's running top-k with :func:`neurocore.ops.topk` and
    :func:`neurocore.ops.topk_merge`. Rows are numbered in arrival order (0..N-1), so the streamed top-k
    equals ``ops.topk`` over the whole matrix. Full maps are never kept.

    Args:
        layers: the layer names, in order.
        summary: one of ``"mean"``, ``"max"``, ``"first"`` for every layer, or a dict layer -> summary.
        top_k: images kept per neuron (fewer when fewer images were seen).

    Raises:
        NeurocoreError: unknown summaries, ``top_k < 1``, no layers.

    Example:
        >>> rec = ActivationRecorder(["conv"], summary="max", top_k=2)
        >>> for _ in range(3):
        ...     rec.update({"conv": torch.rand(4, 8, 5, 5)})
        >>> store = rec.compute()
        >>> store.num_images, store["conv"].summaries.shape, store["conv"].top_indices.shape
        (12, torch.Size([12, 8]), torch.Size([2, 8]))
    """

    def __init__(self, layers: Sequence[str], summary: str | Mapping[str, str] = "mean", top_k: int = 100):
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers:
            raise NeurocoreError("layers is empty: give at least one layer name")
        self.summaries = layer_summaries(summary, self.layers)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise NeurocoreError(f"top_k must be an integer >= 1; got {top_k!r}")
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._rows: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self._top: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = dict.fromkeys(self.layers)
        self._labels: list[torch.Tensor] = []
        self._has_labels: bool | None = None
        self._ids: list[str] = []
        self._indices: list[torch.Tensor] = []
        self._num_batches = 0
        self.num_images = 0

    def update(
        self,
        outputs: Mapping[str, torch.Tensor],
        *,
        labels: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        dataset_indices: torch.Tensor | None = None,
    ) -> None:
        """Add one batch.

        Args:
            outputs: layer name -> that layer's output for the batch (``Tensor[B, C, H, W]``,
                ``Tensor[B, T, C]`` or already summarised ``Tensor[B, C]``); every recorded layer, same B.
            labels (Tensor[B], int64): the batch's labels; give them for every batch or for none.
            ids: B image identifiers (default: the row numbers).
            dataset_indices (Tensor[B], int64): the images' dataset indices (default: the row numbers).

        Raises:
            NeurocoreError: missing or extra layers, batch sizes or neuron counts that disagree,
                NaN or infinite activations (the message names the layer and the batch).
        """
        missing = [n for n in self.layers if n not in outputs]
        extra = [n for n in outputs if n not in self.summaries]
        if missing or extra:
            raise NeurocoreError(
                f"outputs must hold exactly the layers {self.layers}; missing: {missing}, unexpected: {extra}"
            )
        rows = {}
        for name in self.layers:
            s = summarise(outputs[name], self.summaries[name], name).detach().to("cpu", torch.float32)
            if s.is_inference():
                # Tensors made under torch.inference_mode() cannot enter autograd later (LE fits on them).
                s = s.clone()
            rows[name] = s
        sizes = {name: s.shape[0] for name, s in rows.items()}
        b = next(iter(sizes.values()))
        if len(set(sizes.values())) != 1:
            raise NeurocoreError(f"the layers' outputs disagree on the batch size: {sizes}")
        for name, s in rows.items():
            if self._rows[name] and s.shape[1] != self._rows[name][0].shape[1]:
                raise NeurocoreError(
                    f"layer {name!r} has {s.shape[1]} neurons in batch {self._num_batches} but "
                    f"{self._rows[name][0].shape[1]} before; every batch must come from the same layer"
                )
            check_finite(s, name, f"batch {self._num_batches} (rows {self.num_images}..{self.num_images + b - 1})")
        if (labels is not None) != self._has_labels and self._has_labels is not None:
            raise NeurocoreError("labels were given for some batches and not for others; give them for all or none")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
            if labels.shape[0] != b:
                raise NeurocoreError(f"labels has {labels.shape[0]} entries for a batch of {b} images")
        if ids is not None and len(ids) != b:
            raise NeurocoreError(f"ids has {len(ids)} entries for a batch of {b} images")
        if dataset_indices is not None:
            dataset_indices = torch.as_tensor(dataset_indices, dtype=torch.int64).reshape(-1)
            if dataset_indices.shape[0] != b:
                raise NeurocoreError(f"dataset_indices has {dataset_indices.shape[0]} entries for a batch of {b} images")
        if b == 0:
            return
        offset = self.num_images
        for name, s in rows.items():
            values, indices = ops.topk(s, self.top_k)
            indices = indices + offset  # global row numbers: the merge orders ties by them
            if self._top[name] is not None:
                values, indices = ops.topk_merge(*self._top[name], values, indices, k=self.top_k)
            self._top[name] = (values, indices)
            self._rows[name].append(s)
        self._has_labels = labels is not None
        if labels is not None:
            self._labels.append(labels)
        self._ids += [str(i) for i in ids] if ids is not None else [str(offset + i) for i in range(b)]
        self._indices.append(dataset_indices if dataset_indices is not None else torch.arange(offset, offset + b))
        self.num_images += b
        self._num_batches += 1

    def compute(self) -> ActivationStore:
        """The store of everything seen so far (its ``key`` is empty: :func:`record` fills it).

        Raises:
            NeurocoreError: no image was added.
        """
        if self.num_images == 0:
            raise NeurocoreError("no images were recorded: call update() with at least one non-empty batch")
        layers = {}
        for name in self.layers:
            values, indices = self._top[name]
            layers[name] = LayerActivations(name, self.summaries[name], torch.cat(self._rows[name]), values, indices)
        return ActivationStore(
            layers,
            self.num_images,
            labels=torch.cat(self._labels) if self._has_labels else None,
            image_ids=tuple(self._ids),
            dataset_indices=torch.cat(self._indices),
        )


def check_finite(summaries: torch.Tensor, layer: str, where: str) -> None:
    """Raise when a layer's summaries hold NaN or inf: continuing would corrupt every score downstream."""
    bad = ~torch.isfinite(summaries)
    if bad.any():
        rows, cols = bad.nonzero(as_tuple=True)
        kind = "NaN" if torch.isnan(summaries).any() else "infinite"
        raise NeurocoreError(
            f"layer {layer!r} gave {kind} activations in {where}: {int(bad.sum())} values, first at row "
            f"{int(rows[0])} of the batch, neuron {int(cols[0])}; check the model's weights and the inputs "
            "(preprocessing, dtype overflow)"
        )
