"""ConceptScores: the N×M image–concept matrix every method consumes, with its concept names."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurocore._errors import NeurocoreError
from neurocore._io import read_meta, read_result, write_result


@dataclass(frozen=True)
class ConceptScores:
    """Image–concept scores.

    Attributes:
        scores (Tensor[N, M], float32, CPU): row i = probe image i, column j = concept j. From a
            vision–language model: cosine of L2-normalised embeddings; from labels: 0/1.
        concepts: the M concept names, aligned with the columns (unique, non-empty).
        source: where the scores came from (``"labels"``, ``"tensor"``, ``"open_clip:ViT-B-16:openai"``...).
        key: what determined them (for caches and provenance).
        image_ids: one identifier per row (the probe's image ids, as in
            :attr:`neurocore.probe.ActivationStore.image_ids`), or ``()`` when unknown.
    """

    scores: torch.Tensor
    concepts: tuple[str, ...]
    source: str = "tensor"
    key: Mapping[str, Any] = field(default_factory=dict)
    image_ids: tuple[str, ...] = ()

    def __post_init__(self):
        if self.scores.dim() != 2:
            raise NeurocoreError(f"scores must be a Tensor[N, M]; got shape {tuple(self.scores.shape)}")
        if self.scores.shape[1] != len(self.concepts):
            raise NeurocoreError(
                f"scores has {self.scores.shape[1]} columns but {len(self.concepts)} concept names were given"
            )
        if len(self.concepts) == 0:
            raise NeurocoreError("the concept set is empty: give at least one concept")
        if self.image_ids and len(self.image_ids) != self.scores.shape[0]:
            raise NeurocoreError(
                f"scores has {self.scores.shape[0]} rows but {len(self.image_ids)} image ids were given"
            )

    @property
    def num_images(self) -> int:
        return self.scores.shape[0]

    @property
    def num_concepts(self) -> int:
        return self.scores.shape[1]

    @classmethod
    def from_tensor(cls, scores: torch.Tensor, concepts: Sequence[str], source: str = "tensor", *,
                    image_ids: Sequence[str] | None = None) -> ConceptScores:
        """Wrap a given ``scores (Tensor[N, M])`` with its concept names (validated, float32, CPU)
        and, optionally, the N image ids of its rows."""
        scores = torch.as_tensor(scores).detach().to("cpu", torch.float32).contiguous()
        concepts = tuple(str(c) for c in concepts)
        if len(set(concepts)) != len(concepts):
            dup = sorted({c for c in concepts if concepts.count(c) > 1})[:5]
            raise NeurocoreError(f"concept names must be unique; duplicated: {dup}")
        if scores.dim() == 2 and not torch.isfinite(scores).all():
            raise NeurocoreError("scores contain NaN or inf; concept scores must be finite")
        return cls(scores, concepts, source, image_ids=() if image_ids is None else tuple(str(i) for i in image_ids))

    @classmethod
    def from_labels(cls, labels: torch.Tensor, class_names: Sequence[str], *,
                    image_ids: Sequence[str] | None = None) -> ConceptScores:
        """0/1 scores from dataset labels: concept j = class j.

        Args:
            labels: ``Tensor[N]`` of integer class indices in ``[0, C)`` (one class per image), or
                ``Tensor[N, C]`` multi-hot (bool, or numbers that are all 0 or 1).
            class_names: the C class names, in class order (unique).
            image_ids: optional N identifiers of the rows.

        Returns:
            ConceptScores with ``scores[i, j] = 1.0`` when image i has class j, else 0.0 (float32),
            ``source="labels"``.

        Raises:
            NeurocoreError: labels of another shape, non-integer class indices, indices outside
                ``[0, C)``, a multi-hot matrix whose width is not C or with values other than 0/1.

        Example:
            >>> cs = ConceptScores.from_labels(torch.tensor([0, 2, 1]), ["cat", "dog", "car"])
            >>> cs.scores
            tensor([[1., 0., 0.],
                    [0., 0., 1.],
                    [0., 1., 0.]])
        """
        names = tuple(str(c) for c in class_names)
        C = len(names)
        if C == 0:
            raise NeurocoreError("class_names is empty: give one name per class, in class order")
        labels = torch.as_tensor(labels).detach().to("cpu")
        if labels.dim() == 1:
            if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
                raise NeurocoreError(
                    f"labels of shape [N] must hold integer class indices (int64); got dtype {labels.dtype}"
                )
            labels = labels.long()
            if labels.numel() and (labels.min() < 0 or labels.max() >= C):
                bad = labels[(labels < 0) | (labels >= C)]
                raise NeurocoreError(
                    f"labels must lie in [0, {C}) for {C} class names; got {bad[0].item()} "
                    f"({bad.numel()} label(s) out of range)"
                )
            scores = torch.zeros(labels.shape[0], C, dtype=torch.float32)
            scores[torch.arange(labels.shape[0]), labels] = 1.0
        elif labels.dim() == 2:
            if labels.shape[1] != C:
                raise NeurocoreError(
                    f"multi-hot labels have {labels.shape[1]} columns but {C} class names were given"
                )
            scores = labels.to(torch.float32)
            if not ((scores == 0) | (scores == 1)).all():
                raise NeurocoreError("multi-hot labels must hold only 0 and 1 (or booleans)")
        else:
            raise NeurocoreError(
                f"labels must be a Tensor[N] of class indices or a Tensor[N, C] multi-hot matrix; got shape {tuple(labels.shape)}"
            )
        return cls.from_tensor(scores, names, source="labels", image_ids=image_ids)

    @classmethod
    def from_vlm(
        cls,
        vlm,
        probe,
        concepts,
        *,
        template: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        engine: str = "local",
        address: str | None = None,
    ) -> ConceptScores:
        """Cosine similarities of a probe set's images and a concept set's texts (CLIP-Dissect's ``S``).

        The images are read by :func:`neurocore.probe.iter_batches` with ``transform=vlm.preprocess``
        (the loop that records activations: same order, same unreadable images skipped), so row i
        matches row i of an :class:`~neurocore.probe.ActivationStore` of the same probe. Image and
        text embeddings are L2-normalised; ``S = I·Tᵀ``.

        Args:
            vlm: a :class:`neurocore.vlm.VisionLanguageModel` (e.g. :class:`neurocore.vlm.OpenClip`) or a
                spec string ``"open_clip:NAME:TAG_OR_FILE"``.
            probe: a dataset yielding PIL images or ``(image, label)``
                (:class:`neurocore.probe.ImageFolder`).
            concepts: anything :func:`neurocore.concepts.load_concepts` accepts (built-in name, file,
                list of strings).
            template: prompt with ``"{}"`` for the concept (``"a photo of a {}"``); None (default, as
                CLIP-Dissect) encodes the concepts as they are.
            batch_size: images per forward pass.
            num_workers: DataLoader workers.
            cache_dir: folder for cached embeddings (None: no caching). Image and text embeddings are
                cached separately, each keyed by everything that determines it (model identity with
                weights digest, preprocessing, dataset fingerprint; concept list digest, template),
                so another concept set reuses the image embeddings and nothing stale is ever reused.
            progress: progress bars (tqdm).
            engine, address: ``"local"`` (default) or ``"ray"``: images and texts are encoded in Ray
                shards (:func:`neurocore.vlm.embed_images`, :func:`neurocore.vlm.embed_texts`; the same
                embeddings as locally), on the cluster at ``address`` (None: a local one).

        Returns:
            ConceptScores ``[N, M]`` of cosines in [-1, 1], ``source=vlm.identity``, ``image_ids`` of
            the rows and a ``key`` naming what determined them.

        Raises:
            NeurocoreError: see :func:`neurocore.concepts.load_concepts`,
                :func:`neurocore.vlm.embed_images` and :func:`neurocore.vlm.embed_texts`.
        """
        from neurocore.vlm._embed import check_vlm, embed_images

        vlm = check_vlm(vlm)
        images = embed_images(vlm, probe, batch_size=batch_size, num_workers=num_workers,
                              cache_dir=cache_dir, progress=progress, engine=engine, address=address)
        return cls.from_image_embeddings(vlm, images, concepts, template=template, cache_dir=cache_dir, progress=progress,
                                         engine=engine, address=address)

    @classmethod
    def from_image_embeddings(
        cls,
        vlm,
        images,
        concepts,
        *,
        template: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        engine: str = "local",
        address: str | None = None,
    ) -> ConceptScores:
        """:meth:`from_vlm` for image embeddings already computed by :func:`neurocore.vlm.embed_images`
        with the same ``vlm`` (so a caller that needs them again does not encode the probe twice).
        Only the concepts are encoded here; the arguments are those of :meth:`from_vlm`."""
        from neurocore.concepts._sets import load_concepts
        from neurocore.vlm._embed import _digest, check_vlm, embed_texts

        vlm = check_vlm(vlm)
        names = load_concepts(concepts)
        texts = embed_texts(vlm, names, template=template, cache_dir=cache_dir, progress=progress, engine=engine,
                            address=address)
        if images.embeddings.shape[1] != texts.shape[1]:
            raise NeurocoreError(
                f"the vlm's image embeddings have {images.embeddings.shape[1]} dimensions but its text "
                f"embeddings {texts.shape[1]}; encode_images and encode_texts must share one space"
            )
        key = {
            "vlm": vlm.identity,
            "images": dict(images.key),
            "concepts_sha256": _digest(names),
            "template": template,
        }
        return cls(images.embeddings @ texts.T, tuple(names), vlm.identity, key, images.image_ids)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write to ``directory`` (created): ``scores.pt`` (the tensor) and ``concept_scores.json``
        (concepts, source, key, image ids, and a digest of the tensor that :meth:`load` checks), with
        :func:`neurocore._io.write_result`: each file is written to a temporary name and renamed, so an
        interrupted save never leaves a half-written file. Keys that are not JSON values are stored
        as text. Returns the directory."""
        directory = Path(directory)
        scores = self.scores.detach().to("cpu").contiguous()
        meta = {
            "shape": list(scores.shape),
            "concepts": list(self.concepts),
            "source": self.source,
            "key": self.key,
            "image_ids": list(self.image_ids),
        }
        return write_result(directory / "concept_scores.json", "concept_scores", _FORMAT, meta, {"scores": scores},
                            directory / "scores.pt")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ConceptScores:
        """Read what :meth:`save` wrote (also the format 1 of earlier versions).

        Raises:
            NeurocoreError: missing or unreadable files, or files that do not match each other.

        Example:
            >>> import tempfile
            >>> cs = ConceptScores.from_tensor(torch.rand(3, 2), ["sky", "dog"])
            >>> back = ConceptScores.load(cs.save(tempfile.mkdtemp()))
            >>> torch.equal(back.scores, cs.scores), back.concepts
            (True, ('sky', 'dog'))
        """
        directory = Path(directory)
        meta_path, scores_path = directory / "concept_scores.json", directory / "scores.pt"
        if not meta_path.is_file() or not scores_path.is_file():
            raise NeurocoreError(
                f"{str(directory)!r} holds no saved ConceptScores (concept_scores.json and scores.pt); "
                "write one with ConceptScores.save(directory)"
            )
        try:
            meta = read_meta(meta_path, "concept_scores", "ConceptScores")
        except NeurocoreError as exc:
            raise NeurocoreError(f"cannot read saved ConceptScores in {str(directory)!r}: {exc}") from None
        if meta.get("format") == 1:  # format 1: a bare tensor and its own digest
            try:
                scores = torch.load(scores_path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise NeurocoreError(f"cannot read saved ConceptScores in {str(directory)!r} ({type(exc).__name__}: {exc})") from None
            if not isinstance(scores, torch.Tensor) or _tensor_digest(scores.contiguous()) != meta.get("scores_sha256"):
                raise NeurocoreError(
                    f"{str(scores_path)!r} does not match {str(meta_path)!r}; the two files come from different saves: save again"
                )
        else:
            meta, tensors = read_result(meta_path, "concept_scores", (_FORMAT,), scores_path, what="ConceptScores", meta=meta)
            scores = tensors.get("scores")
        if not isinstance(scores, torch.Tensor) or list(scores.shape) != meta.get("shape"):
            raise NeurocoreError(
                f"{str(scores_path)!r} does not match {str(meta_path)!r} (shape {meta.get('shape')}); "
                "the two files come from different saves: save again"
            )
        return cls(scores.to(torch.float32).contiguous(), tuple(meta["concepts"]), meta["source"],
                   meta.get("key") or {}, tuple(meta.get("image_ids") or ()))


_FORMAT = 2  # 2: the common result header (neurocore._io); 1: {"format": 1, "scores_sha256"} and a bare tensor


def _tensor_digest(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"").hexdigest()
