"""The WWW metrics (ALGORITHMS.md §4, as released) on hand-computed cases, for WWW and single-label methods."""

import math

import pytest
import torch

from neurocore import NeurocoreError
from neurocore.evaluate import www_metrics
from neurocore.methods import Explanations, NeuronExplanation


class OneHot:
    """Text encoder with known cosines: each word its own axis, except "pup" = "puppy"."""

    words = ["dog", "puppy", "cat", "none", "kitten", "domestic dog"]

    def encode_texts(self, texts):
        out = torch.zeros(len(texts), len(self.words))
        for i, t in enumerate(texts):
            out[i, self.words.index("puppy" if t == "pup" else t)] = 1.0
        return out * 1.0000001  # cosines a hair above 1 are clipped for CLIP


def test_metrics_hand_computed():
    ex = Explanations("www", (
        NeuronExplanation("fc", 0, "dog", 1.0, ("dog", "puppy", "dog"), (1.0, 0.9, 0.9)),  # duplicate counts
        NeuronExplanation("fc", 1, "none", math.nan, label="none"),
    ))
    synonyms = [["dog", "Domestic_Dog"], ["cat", "kitten"]]
    m = www_metrics(ex, synonyms, clip_encoder=OneHot(), mpnet_encoder=OneHot())
    row0, row1 = m.table.iloc[0], m.table.iloc[1]
    # |{dog}| / len([dog, puppy, dog]): the duplicate counts in the denominator only (as released)
    assert row0.precision == pytest.approx(1 / 3) and row0.recall == pytest.approx(1 / 2)
    assert row0.f1 == pytest.approx(0.4) and row0.hit == 1.0
    assert row1.predictions == ["none"] and row1.hit == 0.0 and row1.f1 == 0.0
    # CLIP cos over all 3×2 pairs: dog·dog twice = 1 each, clipped at 1
    assert row0.clip_cos == pytest.approx(2 / 6) and row0.clip_cos <= 1
    assert row0.mpnet_cos == pytest.approx(2 / 6, rel=1e-5)
    assert m.hit_rate == 0.5 and m.num_neurons == 2


def test_single_label_methods_use_the_label():
    ex = Explanations("clip_dissect", (NeuronExplanation("fc", 0, "pup", 0.3, ("pup", "dog"), (0.3, 0.2)),))
    m = www_metrics(ex, {0: ["dog"]}, clip_encoder=OneHot())
    assert m.precision == 0.0 and m.clip_cos == 0.0 and math.isnan(m.mpnet_cos)
    assert www_metrics(ex, {0: ["dog"]}, use="concepts").precision == 0.5
    with pytest.raises(NeurocoreError, match="no synonym list for unit 0"):
        www_metrics(ex, {1: ["dog"]})
