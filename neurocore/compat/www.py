"""WWW's concept matching (Ahn et al., CVPR 2024) with the released semantics, as one K×M product.

The released scripts embed every example image of every neuron (``num_example`` rows per neuron, the
neurons one after another, as an ``ImageFolder`` of the example images lists them), compute each image's
cosine with every concept text ``"A photo of a {word}"`` minus its cosine with the template ``"A photo
of a"``, pickle the per-image ``(K·n)×M`` matrix in ``concept_sim_num`` chunks, sum the ``n`` rows of
each neuron, and keep the concepts above ``alpha / 100`` of each neuron's maximum. Here the two steps
are functions on tensors:

* :func:`concept_similarity` gives the per-neuron sums (the released ``img_weights``) without the
  per-image matrix: ``Σ_i cos(I_i, T) = (Σ_i Î_i) · T̂``, one K×d by d×M product
  (:func:`neurocore.methods.www.adaptive_cosine_similarity`, ALGORITHMS.md §4 step 2);
* :func:`concept_discovery` applies the adaptive threshold with ``alpha`` in percent, as released
  (:func:`neurocore.methods.www.adaptive_threshold`, step 3), and returns the released ``(concept,
  concept_weight)`` pair.

Differences from the released code: no files (tensors in, lists out); the per-neuron sums are right for
every K (the released chunked sums are wrong when ``concept_sim_num`` does not divide the rows); equal
weights are ordered by ascending concept index (the released ``np.argsort(...)[::-1]`` leaves them
arbitrary).

Example:
    >>> from neurocore.compat import www
    >>> images = torch.randn(3 * 5, 8)          # 3 neurons x 5 example images, d = 8
    >>> words = torch.randn(10, 8)              # embeddings of "A photo of a {word}"
    >>> weights = www.concept_similarity(images, words, template_features=torch.randn(8), num_example=5)
    >>> concepts, concept_weights = www.concept_discovery(weights, [f"w{i}" for i in range(10)], alpha=95)
    >>> weights.shape, len(concepts)
    (torch.Size([3, 10]), 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from neurocore._errors import NeurocoreError
from neurocore.methods.www import adaptive_cosine_similarity, adaptive_threshold

__all__ = ["concept_similarity", "concept_discovery"]


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise NeurocoreError(f"{name} must be an array or tensor; got {type(value).__name__}") from exc


def concept_similarity(img_features, word_features, template_features=None, num_example: int = 40) -> torch.Tensor:
    """Per-neuron sums of the example images' (template-adjusted) cosines: the released ``img_weights``.

    ``out[k, m] = Σ_{i < n} [cos(I_{k n + i}, T_m) − cos(I_{k n + i}, T_template)]`` (the second term only
    with ``template_features``), computed as one K×M product.

    Args:
        img_features (Tensor[K * num_example, d]): raw image embeddings of the example images, neuron k's
            rows ``k * num_example ... (k + 1) * num_example - 1`` (numpy accepted, as the released
            pickles hold).
        word_features (Tensor[M, d]): raw text embeddings of the concepts (with the template applied).
        template_features (Tensor[d] or Tensor[1, d], optional): the template's own embedding ("A photo
            of a"); None gives plain cosine sums (the released ``adaptive=False``).
        num_example: example images per neuron (released default 40).

    Returns:
        Tensor[K, M]: float64 if an input is float64, else float32, on the inputs' device.

    Raises:
        NeurocoreError: a row count that is not a multiple of ``num_example``, mismatched widths.

    Example:
        >>> images = torch.tensor([[1.0, 0.0], [2.0, 0.0]])        # one neuron, two images
        >>> concept_similarity(images, torch.tensor([[1.0, 0.0], [0.0, 3.0]]), num_example=2).tolist()
        [[2.0, 0.0]]
    """
    img = _as_tensor(img_features, "img_features")
    words = _as_tensor(word_features, "word_features")
    n = int(num_example)
    if img.dim() != 2 or n < 1 or img.shape[0] % n:
        raise NeurocoreError(
            f"img_features must be a Tensor[K * num_example, d] (num_example={n} rows per neuron); got shape "
            f"{tuple(img.shape)}: pass every neuron's num_example example images, neuron after neuron"
        )
    template = None
    if template_features is not None:
        template = _as_tensor(template_features, "template_features").reshape(-1)
    return adaptive_cosine_similarity(img.view(img.shape[0] // n, n, img.shape[1]), words, template)


def concept_discovery(img_weights, words: Sequence, alpha: float = 95) -> tuple[list[list], list[np.ndarray]]:
    """The released adaptive threshold: per neuron, the words whose weight exceeds ``alpha``% of the maximum.

    Word m is kept for neuron k when ``img_weights[k, m] > max_m img_weights[k, m] * alpha / 100``
    (strict), best first; the first is the neuron's concept. A neuron whose maximum is ``<= 0`` keeps
    nothing (an empty list).

    Args:
        img_weights (Tensor[K, M]): :func:`concept_similarity`'s output (or the released ``img_weights``).
        words: the M concept names (the released ``all_words_wotem``: without the template), any objects.
        alpha: the threshold in percent (released: 95 for major concepts, 90 for minor ones).

    Returns:
        ``(concept, concept_weight)`` as the released pickle holds them: ``concept[k]`` the kept words,
        ``concept_weight[k]`` their weights (numpy, descending).

    Raises:
        NeurocoreError: ``len(words) != M``, ``alpha`` outside [0, 100].

    Example:
        >>> concept_discovery(torch.tensor([[1.0, 0.96, 0.9], [-1.0, -0.5, -2.0]], dtype=torch.float64), ["a", "b", "c"])
        ([['a', 'b'], []], [array([1.  , 0.96]), array([], dtype=float64)])
    """
    weights = _as_tensor(img_weights, "img_weights")
    if weights.dim() != 2 or len(words) != weights.shape[1]:
        raise NeurocoreError(
            f"img_weights must be a Tensor[K, M] with M = len(words) = {len(words)}; got shape {tuple(weights.shape)}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 100:
        raise NeurocoreError(f"alpha is a percentage in [0, 100] (95: major concepts, 90: minor); got {alpha!r}")
    kept = adaptive_threshold(weights.to(torch.float64), alpha / 100)
    values = weights.detach().to("cpu", torch.float64).numpy()
    concept = [[words[m] for m in idx] for idx in kept]
    concept_weight = [values[k, idx] if idx else np.zeros(0) for k, idx in enumerate(kept)]
    return concept, concept_weight
