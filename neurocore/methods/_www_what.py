"""WWW's "what": adaptive cosine similarity (ACS) and the adaptive threshold (ALGORITHMS.md §4, WWW
CVPR 2024 §3.1, supplementary §A), and the embedding of a few chosen images or crops with a
vision–language model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError

_CHUNK_NEURONS = 256  # neurons whose image embeddings are normalised in float64 at once
_CHUNK_CONCEPTS = 8192  # concepts per block of the product


def adaptive_cosine_similarity(
    image_embeddings: torch.Tensor,
    concept_embeddings: torch.Tensor,
    template_embedding: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adaptive cosine similarity of every neuron and concept (WWW §3.1, ALGORITHMS.md §4 step 2).

    ``ACS[k, m] = Σ_i [cos(I_ki, T_m) − cos(I_ki, T_template)]`` over neuron k's n example images
    ``I_ki`` (its top-40 images or crops), with plain cosine sums when no template embedding is given.
    Because the cosine is linear in the normalised image embedding,
    ``Σ_i cos(I_ki, T) = (Σ_i Î_ki) · T̂``: the normalised image embeddings are summed per neuron first
    (float64), and one ``K×d`` by ``d×M`` product gives the result. No ``(K·n)×M`` matrix is ever built
    (the released code builds one of 13–27 GB at WordNet scale, and its chunked sums are wrong when 4
    does not divide K). The template term is ``n_k · cos`` summed once per neuron the same way.

    Args:
        image_embeddings (Tensor[K, n, d] floating): raw (unnormalised) image embeddings, n per neuron.
            A zero embedding counts as a zero cosine.
        concept_embeddings (Tensor[M, d] floating): raw text embeddings of the concepts (with the
            template applied, "A photo of a {concept}").
        template_embedding (Tensor[d] floating) or None: the template's own embedding ("A photo of a");
            None (default) gives plain cosine sums.

    Returns:
        Tensor[K, M]: float64 when any input is float64, else float32 (accumulated in float64), on the
        inputs' device.

    Raises:
        NeurocoreError: wrong ranks, embedding sizes that differ, inputs on different devices,
            non-floating or non-finite inputs.

    Example:
        >>> images = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]], dtype=torch.float64)  # one neuron, two images, d = 2
        >>> concepts = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
        >>> adaptive_cosine_similarity(images, concepts).tolist()
        [[2.0, 0.0]]
        >>> adaptive_cosine_similarity(images, concepts, torch.tensor([1.0, 1.0], dtype=torch.float64)).round(decimals=4).tolist()
        [[0.5858, -1.4142]]
    """
    _check_embeddings(image_embeddings, 3, "image_embeddings", "[K, n, d]")
    _check_embeddings(concept_embeddings, 2, "concept_embeddings", "[M, d]")
    d = image_embeddings.shape[2]
    if concept_embeddings.shape[1] != d:
        raise NeurocoreError(
            f"concept_embeddings has d={concept_embeddings.shape[1]} but image_embeddings has d={d}: embed both "
            "with the same vision–language model"
        )
    tensors = [image_embeddings, concept_embeddings]
    if template_embedding is not None:
        _check_embeddings(template_embedding, 1, "template_embedding", "[d]")
        if template_embedding.shape[0] != d:
            raise NeurocoreError(f"template_embedding must be a Tensor[{d}] (the text embedding size); got {tuple(template_embedding.shape)}")
        tensors.append(template_embedding)
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise NeurocoreError(f"the embeddings are on different devices {sorted(map(str, devices))}; move them to one")
    out_dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    K, M = image_embeddings.shape[0], concept_embeddings.shape[0]
    # Sum of unit image vectors per neuron, in float64 (40 terms of norm 1 lose digits in float32),
    # in chunks of neurons: the float64 copy of the inputs never exists whole.
    summed = torch.empty(K, d, dtype=torch.float64, device=image_embeddings.device)
    for s in range(0, K, _CHUNK_NEURONS):
        summed[s : s + _CHUNK_NEURONS] = F.normalize(image_embeddings[s : s + _CHUNK_NEURONS].to(torch.float64), dim=2).sum(dim=1)
    left = summed.to(out_dtype)
    shift = None
    if template_embedding is not None:
        shift = (summed @ F.normalize(template_embedding.to(torch.float64), dim=0)).to(out_dtype)[:, None]
    acs = torch.empty(K, M, dtype=out_dtype, device=image_embeddings.device)
    # One K×d by d×M product, written in column blocks so that the normalised text copy stays small.
    # In float32 the sums are exact to float32 precision and the product's error is that of one d-term dot product.
    for s in range(0, M, _CHUNK_CONCEPTS):
        acs[:, s : s + _CHUNK_CONCEPTS] = left @ F.normalize(concept_embeddings[s : s + _CHUNK_CONCEPTS].to(out_dtype), dim=1).T
        if shift is not None:
            acs[:, s : s + _CHUNK_CONCEPTS] -= shift
    return acs


def _check_embeddings(t, rank: int, name: str, shape: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise NeurocoreError(f"{name} must be a Tensor{shape}; got {type(t).__name__}")
    if t.dim() != rank:
        raise NeurocoreError(f"{name} must be a Tensor{shape}; got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise NeurocoreError(f"{name} must be floating point; got {t.dtype}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise NeurocoreError(f"{name} holds NaN or inf; check the vision–language model's outputs")


def adaptive_threshold(scores: torch.Tensor, alpha: float = 0.95) -> list[list[int]]:
    """The concepts that pass WWW's adaptive threshold, per neuron (WWW §3.1, ALGORITHMS.md §4 step 3).

    Concept m passes for neuron k when ``scores[k, m] > alpha · max_m scores[k, m]`` (strict). The
    passing indices are sorted by descending score, ties by ascending index, so the first is the
    neuron's major (resp. minor) concept. When the maximum is ``<= 0`` nothing passes (the threshold
    would not be below the maximum): ``[]``, shown as "none". NaN scores never pass.

    Args:
        scores (Tensor[K, M] floating): ACS of every neuron and concept (:func:`adaptive_cosine_similarity`).
        alpha: the fraction of the maximum, in [0, 1] (0.95 for major concepts, 0.90 for minor ones).

    Returns:
        K lists of concept indices.

    Raises:
        NeurocoreError: a non-2-D or non-floating ``scores``; ``alpha`` outside [0, 1].

    Example:
        >>> adaptive_threshold(torch.tensor([[1.0, 0.96, 0.95, 0.2], [-1.0, -0.5, 0.0, -2.0]]))
        [[0, 1], []]
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise NeurocoreError(f"scores must be a floating Tensor[K, M]; got {got}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise NeurocoreError(f"alpha must be a number in [0, 1] (0.95: major concepts, 0.90: minor); got {alpha!r}")
    if scores.shape[1] == 0:
        return [[] for _ in range(scores.shape[0])]
    s = scores.detach().to("cpu", torch.float64)
    top = torch.nan_to_num(s, nan=-torch.inf).amax(dim=1, keepdim=True)
    passing = (s > alpha * top) & (top > 0)
    out = []
    for k in range(s.shape[0]):
        idx = passing[k].nonzero().flatten()
        # stable sort on the negated score: equal scores keep ascending index order
        order = torch.sort(-s[k, idx], stable=True).indices
        out.append(idx[order].tolist())
    return out


# ----------------------------------------------------------------------------------------------
# Embedding chosen images and crops


def normalize_of(transform) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean, std)`` of the last ``torchvision.transforms.Normalize`` inside ``transform`` (a
    ``Compose`` or the transform itself), or None when it has none."""
    import torchvision.transforms as T

    found = None
    stack = [transform]
    while stack:
        t = stack.pop(0)
        if isinstance(t, T.Normalize):
            found = t
        for attr in ("transforms",):
            inner = getattr(t, attr, None)
            if isinstance(inner, (list, tuple)):
                stack = list(inner) + stack
    if found is None:
        return None
    return torch.as_tensor(found.mean, dtype=torch.float32), torch.as_tensor(found.std, dtype=torch.float32)


def model_input_to_rgb(images: torch.Tensor, transform) -> torch.Tensor:
    """Model inputs ``Tensor[B, 3, H, W]`` back to RGB in [0, 1]: the transform's ``Normalize`` is
    inverted (none: the inputs are taken as RGB in [0, 1]), then clamped.

    Example:
        >>> import torchvision.transforms as T
        >>> x = torch.zeros(1, 3, 2, 2)
        >>> model_input_to_rgb(x, T.Normalize([0.5] * 3, [0.25] * 3))[0, :, 0, 0].tolist()
        [0.5, 0.5, 0.5]
    """
    norm = normalize_of(transform) if transform is not None else None
    x = images.detach().to("cpu", torch.float32)
    if norm is not None:
        mean, std = norm
        x = x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    return x.clamp(0.0, 1.0)


def embed_rgb(vlm, images: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised ``vlm`` embeddings ``Tensor[B, d]`` (float32, CPU) of RGB images
    ``Tensor[B, 3, H, W]`` in [0, 1]: each image becomes a PIL image and goes through
    ``vlm.preprocess`` (the model's own resizing and normalisation), as probe images do.

    Example:
        >>> import types, torchvision.transforms as T
        >>> vlm = types.SimpleNamespace(preprocess=T.ToTensor(), encode_images=lambda x: x.mean((2, 3)))
        >>> [round(v, 3) for v in embed_rgb(vlm, torch.ones(1, 3, 4, 4))[0].tolist()]
        [0.577, 0.577, 0.577]
    """
    import torchvision.transforms.functional as TF

    if images.shape[0] == 0:
        raise NeurocoreError("no images to embed")
    out = []
    for s in range(0, images.shape[0], batch_size):
        part = images[s : s + batch_size]
        batch = torch.stack([vlm.preprocess(TF.to_pil_image(img)) for img in part])
        with torch.no_grad():
            emb = vlm.encode_images(batch.to(getattr(vlm, "device", "cpu")))
        if not isinstance(emb, torch.Tensor) or emb.shape[:1] != (part.shape[0],) or emb.dim() != 2:
            raise NeurocoreError(f"vlm.encode_images must return a Tensor[{part.shape[0]}, d]; got {getattr(emb, 'shape', emb)}")
        out.append(F.normalize(emb.detach().to("cpu", torch.float32), dim=1))
    return torch.cat(out)


def probe_rgb(probe, indices: Sequence[int]) -> list:
    """The probe's items at ``indices`` as the vision–language model takes them: PIL images as they
    are, tensors (RGB in [0, 1]) converted to PIL images."""
    import torchvision.transforms.functional as TF

    out = []
    for i in indices:
        item = probe[int(i)]
        image = item[0] if isinstance(item, (tuple, list)) else item
        if isinstance(image, torch.Tensor):
            image = TF.to_pil_image(image.detach().to("cpu", torch.float32).clamp(0, 1))
        out.append(image)
    return out


def embed_probe_images(vlm, probe, indices: Sequence[int], *, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised embeddings ``Tensor[len(indices), d]`` of the probe images at ``indices`` (only
    these are read and encoded)."""
    out = []
    indices = list(indices)
    for s in range(0, len(indices), batch_size):
        pil = probe_rgb(probe, indices[s : s + batch_size])
        batch = torch.stack([vlm.preprocess(p) for p in pil])
        with torch.no_grad():
            emb = vlm.encode_images(batch.to(getattr(vlm, "device", "cpu")))
        out.append(F.normalize(emb.detach().to("cpu", torch.float32), dim=1))
    return torch.cat(out)


def template_text(template: str) -> str:
    """The template's own text: ``"A photo of a {}"`` -> ``"A photo of a"``.

    Example:
        >>> template_text("A photo of a {}")
        'A photo of a'
    """
    return " ".join(template.replace("{}", " ").split())

