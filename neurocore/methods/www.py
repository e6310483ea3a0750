"""WWW (Ahn et al., CVPR 2024, "WWW: a unified framework for explaining what, where and why of neural
networks by interpretation of neuron concepts"), as specified in ALGORITHMS.md §4 (corrected against
the authors' released code).

* **What**: each neuron's major concepts from its top-40 probe images and minor concepts from the
  crops around its highest cell in those images, by :func:`adaptive_cosine_similarity` (ACS) and
  :func:`adaptive_threshold` (α = 0.95 major, 0.90 minor). Crop rule (neurocore's, the released code
  ships none): a box of ``crop_fraction`` (default half) of the input's height and width, centred on the
  highest cell of the neuron's map mapped to input pixels and shifted inside the image
  (:func:`neurocore.probe.crops`); only the selected images are re-run to get their maps. The crop is
  cut from the image as the model sees it (after its resizing), mapped back to RGB by inverting the
  transform's ``Normalize``, and given to the vision–language model's own preprocessing.
* **Why**: :func:`class_importance`, :func:`sample_importance` (activation × gradient at the pooled
  output; exact closed form ``a_k·W[c, k]`` for pooled linear heads, autograd otherwise, Shapley values
  as an option).
* **Where**: :func:`class_heatmap`, :func:`sample_heatmap`, :func:`heatmap_similarity`,
  :func:`image_heatmaps`; misprediction detection in :func:`neurocore.evaluate.misprediction_auroc`.

:class:`WWW` is the registered method ``"www"``; :func:`www` the one-call pipeline.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence

import torch

from neurocore._alignment import check_same_images
from neurocore._errors import NeurocoreError
from neurocore.methods._base import Explanations, NeuronExplanation, probe_identity, register_method, top_image_refs
from neurocore.methods._www_what import (
    adaptive_cosine_similarity,
    adaptive_threshold,
    embed_probe_images,
    embed_rgb,
    model_input_to_rgb,
    template_text,
)
from neurocore.methods._www_where import (
    ImageHeatmaps,
    class_heatmap,
    heatmap_similarity,
    image_heatmaps,
    sample_heatmap,
    weighted_heatmap,
)
from neurocore.methods._www_why import IMPORTANCE_METHODS, class_importance, sample_importance

__all__ = [
    "adaptive_cosine_similarity",
    "adaptive_threshold",
    "class_importance",
    "sample_importance",
    "IMPORTANCE_METHODS",
    "class_heatmap",
    "sample_heatmap",
    "weighted_heatmap",
    "heatmap_similarity",
    "image_heatmaps",
    "ImageHeatmaps",
    "WWW",
    "www",
    "minor_concepts",
    "NONE",
]

NONE = "none"  # how an empty concept list is shown (and scored by the WWW metrics)
_UNITS_PER_CROP_CHUNK = 32  # neurons whose crops are computed together (bounds the maps kept in memory)


@register_method("www")
class WWW:
    """WWW's "what" as a registered method: major and minor concepts of every neuron.

    Settings (stored only; :meth:`explain` validates them):
        vlm: a vision–language model (:class:`neurocore.vlm.VisionLanguageModel` or a spec such as
            ``"open_clip:ViT-B-32:openai"``, the released code's explainer). None (default): the major
            concepts come from the given :class:`~neurocore.concepts.ConceptScores` (ACS = the sum of
            the scores of the neuron's top images, i.e. plain cosine sums when the scores are cosines;
            no template term), and minor concepts are not computed (crops need the model to embed them).
        concept_set: the concepts with ``vlm`` (a :func:`~neurocore.concepts.load_concepts` source);
            default ``"wordnet_nouns"`` (WordNet 80k, the paper's).
        template: the prompt (``"A photo of a {}"``); its own text ``"A photo of a"`` is the template
            embedding subtracted in ACS. None: plain cosine sums.
        n_images: example images (and crops) per neuron (40).
        alpha_major, alpha_minor: the adaptive thresholds (0.95, 0.90).
        minor: compute minor concepts from crops (needs ``vlm``, the model and a spatial layer).
        crop_fraction: the crop's side as a fraction of the input's (0.5).
        cache_dir: folder for cached text (and, for PIL probes, image) embeddings.
        batch_size: images per forward pass of the model and the vision–language model.

    Example:
        >>> from neurocore.concepts import ConceptScores
        >>> from neurocore.probe import ActivationStore
        >>> store = ActivationStore.from_tensor(torch.tensor([[1.0], [0.0], [2.0]]), "fc", top_k=3)
        >>> scores = ConceptScores.from_tensor(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), ["a", "b"])
        >>> ex = WWW(n_images=2).explain(store, scores)
        >>> ex[0].label, ex[0].concepts, ex[0].scores
        ('a', ('a',), (2.0,))
    """

    needs = {"store", "scores", "model", "probe", "transform"}

    def __init__(
        self,
        vlm=None,
        concept_set: str | Sequence[str] = "wordnet_nouns",
        template: str | None = "A photo of a {}",
        n_images: int = 40,
        alpha_major: float = 0.95,
        alpha_minor: float = 0.90,
        minor: bool = True,
        crop_fraction: float = 0.5,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 64,
    ):
        self.vlm = vlm
        self.concept_set = concept_set
        self.template = template
        self.n_images = n_images
        self.alpha_major = alpha_major
        self.alpha_minor = alpha_minor
        self.minor = minor
        self.crop_fraction = crop_fraction
        self.cache_dir = cache_dir
        self.batch_size = batch_size

    def check_settings(self) -> None:
        """Validate the settings (the method contract's check, run by ``explain`` and, before recording, by
        :func:`neurocore.run_methods`); raises :class:`~neurocore.NeurocoreError` naming the setting."""
        if isinstance(self.n_images, bool) or not isinstance(self.n_images, int) or self.n_images < 1:
            raise NeurocoreError(f"n_images must be an integer >= 1 (WWW: 40); got {self.n_images!r}")
        for name in ("alpha_major", "alpha_minor"):
            a = getattr(self, name)
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
                raise NeurocoreError(f"{name} must be in [0, 1] (WWW: 0.95 major, 0.90 minor); got {a!r}")
        if not isinstance(self.crop_fraction, (int, float)) or not 0 < self.crop_fraction <= 1:
            raise NeurocoreError(f"crop_fraction must be in (0, 1]; got {self.crop_fraction!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise NeurocoreError(f"batch_size must be an integer >= 1; got {self.batch_size!r}")

    def _settings(self) -> dict:
        vlm = self.vlm if self.vlm is None or isinstance(self.vlm, str) else getattr(self.vlm, "identity", repr(self.vlm))
        concept_set = self.concept_set if isinstance(self.concept_set, str) else list(self.concept_set)
        return {
            "vlm": vlm, "concept_set": concept_set, "template": self.template, "n_images": self.n_images,
            "alpha_major": self.alpha_major, "alpha_minor": self.alpha_minor, "minor": self.minor,
            "crop_fraction": self.crop_fraction, "batch_size": self.batch_size,
        }

    def explain(
        self,
        store,
        scores=None,
        layers: str | Sequence[str] | None = None,
        *,
        model=None,
        probe=None,
        transform: Callable | None = None,
        progress: bool = False,
    ) -> Explanations:
        """Major (and minor) concepts of every neuron of the chosen layers.

        Args:
            store: :class:`~neurocore.probe.ActivationStore` (its per-neuron top images; ``top_k`` of the
                recording should be at least ``n_images``, else the kept ones are used).
            scores: :class:`~neurocore.concepts.ConceptScores` of the same images (needed without ``vlm``;
                ignored with one).
            layers: layer name(s) of the store (default: all).
            model, probe, transform: the recorded model, its probe dataset and preprocessing: needed with
                ``vlm`` (the probe images are embedded; crops re-run the model on the selected images).
            progress: progress bars.

        Returns:
            :class:`~neurocore.methods.Explanations` (method ``"www"``): per neuron, ``label`` and
            ``description`` = the major concept (``"none"`` when nothing passes), ``concepts``/``scores`` =
            the concepts passing α_major with their ACS, best first, ``similarity`` = the major concept's
            ACS (NaN for none), ``interpretable`` = some concept passed, ``metrics["acs_max"]``, top images
            (the ``n_images`` used). Minor concepts: ``params["minor"][layer][unit] = [concepts, ACS]``
            (None when not computed); read them with :func:`minor_concepts`.

        Raises:
            NeurocoreError: bad settings; no scores without ``vlm``; store and scores of other images;
                ``vlm`` without ``probe``; unknown layers.
        """
        from neurocore.concepts import ConceptScores, load_concepts
        from neurocore.probe import ActivationStore

        self.check_settings()
        if not isinstance(store, ActivationStore):
            raise NeurocoreError(f"store must be an ActivationStore (from neurocore.probe.record); got {type(store).__name__}")
        names = _layers(store, layers)
        vlm = None
        if self.vlm is None:
            if not isinstance(scores, ConceptScores):
                raise NeurocoreError(
                    "WWW without vlm= takes the image–concept scores as given: pass a ConceptScores of the probe "
                    f"images (or set vlm='open_clip:ViT-B-32:openai'); got {type(scores).__name__}"
                )
            check_same_images(store, scores, "the activation store", "scores",
                              "record and score the same dataset, in the same order")
            concepts = list(scores.concepts)
            source = scores.source
        else:
            from neurocore.vlm._embed import check_vlm

            vlm = check_vlm(self.vlm)
            if probe is None:
                raise NeurocoreError("WWW with vlm= embeds the neurons' top images: pass probe= (the recorded dataset)")
            concepts = load_concepts(self.concept_set)
            source = vlm.identity
            text, tmpl = self._texts(vlm, concepts, progress)
        neurons: list[NeuronExplanation] = []
        minor_all: dict[str, list | None] = {}
        iterator = names
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(names, desc="www", unit="layer")
        for name in iterator:
            la = store[name]
            n = min(self.n_images, la.top_indices.shape[0])
            rows = la.top_indices[:n]  # [n, K] store rows, best first
            if vlm is None:
                acs = _summed_scores(scores.scores, rows)
            else:
                emb = self._image_embeddings(vlm, probe, store, rows)
                acs = adaptive_cosine_similarity(emb, text, tmpl)
            major = adaptive_threshold(acs, self.alpha_major)
            minor = None
            if vlm is not None and self.minor and model is not None:
                minor = self._minor(vlm, model, name, probe, transform, store, rows, text, tmpl, concepts)
            minor_all[name] = minor
            dead = la.dead()
            acs_max = acs.amax(dim=1) if acs.shape[1] else torch.full((acs.shape[0],), math.nan)
            for k in range(la.num_neurons):
                picked = major[k]
                label = concepts[picked[0]] if picked else NONE
                neurons.append(NeuronExplanation(
                    layer=name,
                    unit=k,
                    description=label,
                    similarity=float(acs[k, picked[0]]) if picked else math.nan,
                    concepts=tuple(concepts[j] for j in picked),
                    scores=tuple(float(acs[k, j]) for j in picked),
                    interpretable=bool(picked),
                    dead=bool(dead[k]),
                    metrics={"acs_max": float(acs_max[k])},
                    label=label,
                    **top_image_refs(store, rows[:, k].tolist()),
                ))
        params = self._settings()
        params.update(
            concepts=concepts if len(concepts) <= 5000 else {"count": len(concepts)},
            concept_source=source,
            num_images=store.num_images,
            layers=list(names),
            minor=minor_all,
            store_key=dict(store.key),
            probe=probe_identity(store),
        )
        return Explanations(method=self.name, neurons=tuple(neurons), params=params)

    # -- helpers -------------------------------------------------------------------------------

    def _texts(self, vlm, concepts, progress):
        from neurocore.vlm import embed_texts

        text = embed_texts(vlm, concepts, template=self.template, cache_dir=self.cache_dir, progress=progress)
        tmpl = None
        if self.template is not None:
            tmpl = embed_texts(vlm, [template_text(self.template)], cache_dir=self.cache_dir, progress=False)[0]
        return text, tmpl

    def _image_embeddings(self, vlm, probe, store, rows) -> torch.Tensor:
        """``Tensor[K, n, d]``: embeddings of each neuron's top images (only the images used are
        encoded, unless the whole probe's embeddings are cached: PIL probes with ``cache_dir``)."""
        ds = store.dataset_indices[rows] if store.dataset_indices is not None else rows  # [n, K]
        wanted = ds.unique(sorted=True)
        table = None
        if self.cache_dir is not None and not isinstance(_first_image(probe), torch.Tensor):
            from neurocore.vlm import embed_images

            full = embed_images(vlm, probe, batch_size=self.batch_size, cache_dir=self.cache_dir, progress=False)
            pos = {int(i): r for r, i in enumerate(full.indices.tolist())}
            table = full.embeddings[torch.tensor([pos[int(i)] for i in wanted])]
        if table is None:
            table = embed_probe_images(vlm, probe, wanted.tolist(), batch_size=self.batch_size)
        where = torch.searchsorted(wanted, ds)
        return table[where].transpose(0, 1).contiguous()  # [K, n, d]

    def _minor(self, vlm, model, layer, probe, transform, store, rows, text, tmpl, concepts):
        from neurocore.probe import crops, spatial_maps

        ds = store.dataset_indices[rows] if store.dataset_indices is not None else rows  # [n, K]
        first = spatial_maps(model, layer, probe, [int(ds[0, 0])], transform=transform)
        if first.dim() < 3:
            return None  # a [B, C] layer has no cells to crop around
        n, K = ds.shape
        out = []
        for s in range(0, K, _UNITS_PER_CROP_CHUNK):
            units = torch.arange(s, min(K, s + _UNITS_PER_CROP_CHUNK))
            idx = ds[:, units].T.reshape(-1)  # unit-major: [units·n]
            c = crops(model, layer, probe, idx, units.repeat_interleave(n), transform=transform,
                      fraction=self.crop_fraction, batch_size=self.batch_size)
            emb = embed_rgb(vlm, model_input_to_rgb(c.images, transform), batch_size=self.batch_size)
            acs = adaptive_cosine_similarity(emb.view(units.numel(), n, -1), text, tmpl)
            for k, picked in enumerate(adaptive_threshold(acs, self.alpha_minor)):
                out.append([[concepts[j] for j in picked], [float(acs[k, j]) for j in picked]])
        return out


def minor_concepts(explanations: Explanations, layer: str, unit: int) -> tuple[tuple[str, float], ...] | None:
    """A WWW neuron's minor concepts with their ACS, best first (``()``: none passed; None: not computed).

    Example:
        >>> ex = Explanations("www", (), {"minor": {"fc": [[["a"], [1.5]]]}})
        >>> minor_concepts(ex, "fc", 0)
        (('a', 1.5),)
    """
    table = (explanations.params.get("minor") or {}).get(layer)
    if table is None:
        return None
    names, values = table[unit]
    return tuple(zip(names, (float(v) for v in values)))


def _layers(store, layers) -> list[str]:
    if layers is None:
        return list(store.layers)
    names = [layers] if isinstance(layers, str) else list(layers)
    for n in names:
        store[n]  # raises with the store's layers
    return names


def _summed_scores(scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``Tensor[K, M]``: per neuron, the sum of the score rows of its top images (float64 accumulation,
    as a sparse K×N selection times the N×M scores: no n×K×M gather)."""
    n, K = rows.shape
    N = scores.shape[0]
    cols = rows.T.reshape(-1)
    ks = torch.arange(K).repeat_interleave(n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
        sel = torch.sparse_coo_tensor(torch.stack([ks, cols]), torch.ones(K * n, dtype=torch.float64), (K, N),
                                      check_invariants=True).coalesce()
        return torch.sparse.mm(sel, scores.to(torch.float64)).to(torch.float32)


def _first_image(probe):
    item = probe[0]
    return item[0] if isinstance(item, (tuple, list)) else item


def www(
    model,
    layers: str | Sequence[str],
    probe,
    *,
    vlm=None,
    scores=None,
    transform: Callable | None = None,
    top_k: int = 100,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
    **settings,
) -> Explanations:
    """The one-call WWW pipeline: record ``model``'s ``layers`` over ``probe``, then :class:`WWW` explains.

    Args:
        model, layers, probe, transform, batch_size, device: as :func:`neurocore.record`.
        vlm: the vision–language model (e.g. ``"open_clip:ViT-B-32:openai"``); None: ``scores`` required.
        scores: :class:`~neurocore.concepts.ConceptScores` of the probe images (used when ``vlm`` is None).
        top_k: images kept per neuron by the recording (at least ``n_images``).
        progress: progress bars.
        **settings: :class:`WWW`'s settings (``template``, ``n_images``, ``alpha_major``...).

    Returns:
        :class:`~neurocore.methods.Explanations`.

    Example:
        >>> from neurocore.demo import ConceptWorld, PlantedConceptNet
        >>> world = ConceptWorld(); probe = world.sample(8, seed=0)
        >>> ex = www(PlantedConceptNet(world), "colours", probe, scores=probe.concept_scores(), n_images=10, progress=False)
        >>> [n.label for n in ex]
        ['red', 'green', 'blue', 'yellow']
    """
    from neurocore.probe import record

    method = WWW(vlm=vlm, batch_size=batch_size, **settings)
    store = record(model, layers, probe, top_k=max(top_k, method.n_images), batch_size=batch_size, transform=transform,
                   device=device, progress=progress)
    if scores is not None and not scores.image_ids and store.image_ids:
        from neurocore.concepts import ConceptScores

        scores = ConceptScores.from_tensor(scores.scores, scores.concepts, scores.source, image_ids=store.image_ids)
    return method.explain(store, scores, model=model, probe=probe, transform=transform, progress=progress)
