"""neurocore.compat.www returns what WWW's released concept matching returns: a transcription of its
per-image loop (F.cosine_similarity of each example image with every word and the template, sums of
num_example rows per neuron, threshold at alpha percent of the maximum, descending order), float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.functional import cosine_similarity

from neurocore._errors import NeurocoreError
from neurocore.compat import www


def released_img_weights(img_features, word_features, template_features, num_example):
    rows = []
    for i in range(len(img_features)):
        img = img_features[i].reshape(1, -1)
        sim = cosine_similarity(img, word_features)
        if template_features is not None:
            sim = sim - cosine_similarity(img, template_features)
        rows.append(sim.numpy())
    concept_sim = np.stack(rows)
    weights, acc = [], np.zeros(concept_sim.shape[1])
    for i in range(len(concept_sim)):
        if i != 0 and i % num_example == 0:
            weights.append(acc)
            acc = np.zeros(concept_sim.shape[1])
        acc += concept_sim[i]
    weights.append(acc)
    return np.stack(weights)


def released_discovery(img_weights, words, alpha):
    concept, concept_weight = [], []
    for w in img_weights:
        threshold = np.max(w) * (alpha / 100)
        idx = np.where(w > threshold)[0]
        order = np.argsort(w[idx])[::-1]
        concept_weight.append(w[idx][order])
        concept.append([words[idx[j]] for j in order])
    return concept, concept_weight


@pytest.mark.parametrize("template", [True, False])
@pytest.mark.parametrize("alpha", [95, 90, 50])
def test_equals_the_released_matching(template, alpha):
    g = torch.Generator().manual_seed(0)
    K, n, d, M = 7, 6, 16, 120
    concepts = torch.randn(K, d, generator=g, dtype=torch.float64)
    # each neuron's examples share a direction, so several concepts come close to its maximum
    images = (concepts.repeat_interleave(n, 0) + 0.7 * torch.randn(K * n, d, generator=g, dtype=torch.float64)) * 3
    words = torch.randn(M, d, generator=g, dtype=torch.float64)
    words[:K] += 2 * concepts
    tmpl = torch.randn(d, generator=g, dtype=torch.float64) if template else None
    names = [f"word{m}" for m in range(M)]
    weights = www.concept_similarity(images, words, template_features=tmpl, num_example=n)
    expected = released_img_weights(images, words, tmpl, n)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-12, atol=1e-12)
    concept, concept_weight = www.concept_discovery(weights, names, alpha=alpha)
    r_concept, r_weight = released_discovery(expected, names, alpha)
    assert concept == r_concept
    for a, b in zip(concept_weight, r_weight):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert [c[0] for c in concept] == [f"word{k}" for k in range(K)]  # the planted concept leads


def test_non_positive_maximum_keeps_nothing_and_errors():
    concept, weight = www.concept_discovery(torch.tensor([[-1.0, -0.2], [0.0, 0.0]], dtype=torch.float64), ["a", "b"])
    assert concept == [[], []] and all(w.size == 0 for w in weight)
    with pytest.raises(NeurocoreError, match="num_example=4 rows per neuron"):
        www.concept_similarity(torch.randn(10, 3), torch.randn(5, 3), num_example=4)
    with pytest.raises(NeurocoreError, match="percentage"):
        www.concept_discovery(torch.zeros(1, 2), ["a", "b"], alpha=0.95 * 200)
