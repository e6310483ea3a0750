"""LE's concept matrices: the label matrix (classes + WordNet superclasses) and the calibrated
vision–language probabilities ``sigmoid(a·(S + b))`` with their calibration (ALGORITHMS.md §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neurocore._errors import NeurocoreError
from neurocore.concepts import (
    CALIBRATION_PRESETS,
    ConceptScores,
    calibrate,
    calibrated_matrix,
    calibration_preset,
    label_concept_matrix,
)
from neurocore.concepts import _calibrate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class HandHierarchy:
    """A hand-built hierarchy with the WordNetHierarchy interface used by label_concept_matrix.

    classes: 0 tabby, 1 persian, 2 beagle, 3 crane (bird), 4 crane (machine)
    tree:    entity > animal > {cat > domestic cat > {tabby, persian}, dog > hound > beagle, bird > crane_b}
             entity > device > crane_m
    """

    parents = {
        "n_tabby": ["n_domcat"], "n_persian": ["n_domcat"], "n_domcat": ["n_cat"], "n_cat": ["n_animal"],
        "n_beagle": ["n_hound"], "n_hound": ["n_dog"], "n_dog": ["n_animal"], "n_crane_b": ["n_bird"],
        "n_bird": ["n_animal"], "n_animal": ["n_entity"], "n_crane_m": ["n_device"], "n_device": ["n_entity"],
        "n_entity": [],
    }
    names = {
        "n_tabby": "tabby", "n_persian": "persian", "n_domcat": "domestic cat", "n_cat": "cat",
        "n_beagle": "beagle", "n_hound": "hound", "n_dog": "dog", "n_crane_b": "crane", "n_bird": "bird",
        "n_animal": "animal", "n_crane_m": "crane", "n_device": "device", "n_entity": "entity",
    }

    def ancestors(self, w):
        out, todo = [], list(self.parents[w])
        while todo:
            a = todo.pop(0)
            if a not in out:
                out.append(a)
                todo += self.parents[a]
        return tuple(out)

    def superclasses(self, class_wnids, drop_universal=True):
        groups = {}
        for i, w in enumerate(class_wnids):
            for a in reversed(self.ancestors(w)):
                groups.setdefault(a, []).append(i)
        return {a: m for a, m in groups.items() if not (drop_universal and len(m) == len(class_wnids))}

    def name(self, w):
        return self.names[w]


CLASSES = ["n_tabby", "n_persian", "n_beagle", "n_crane_b", "n_crane_m"]


def test_label_matrix_matches_hand_computation():
    labels = torch.tensor([0, 1, 2, 3, 4, 2, 0])
    P = label_concept_matrix(labels, CLASSES, hierarchy=HandHierarchy())
    # Superclasses: animal {0,1,2,3}, domestic cat = cat {0,1} (identical members: the most specific,
    # "domestic cat", is kept), dog, hound, bird, device each cover one class (dropped), entity all (dropped).
    expected_names = ("tabby", "persian", "beagle", "crane (n_crane_b)", "crane (n_crane_m)")
    assert P.concepts[:5] == expected_names
    assert set(P.concepts[5:]) == {"animal", "domestic cat"}
    col = {c: j for j, c in enumerate(P.concepts)}
    expected = torch.zeros(7, 7)
    members = {"animal": [0, 1, 2, 3], "domestic cat": [0, 1]}
    for i, y in enumerate(labels.tolist()):
        expected[i, y] = 1
        for name, m in members.items():
            expected[i, col[name]] = float(y in m)
    assert torch.equal(P.scores, expected)
    assert P.source == "labels"
    assert P.key["column_wnids"][:5] == CLASSES
    assert P.key["column_wnids"][col["domestic cat"]] == "n_domcat"


def test_label_matrix_superclass_is_sum_of_member_one_hots():
    labels = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(0))
    P = label_concept_matrix(labels, CLASSES, hierarchy=HandHierarchy(), drop_redundant=False)
    h = HandHierarchy()
    onehot = torch.nn.functional.one_hot(labels, 5).float()
    for j, w in enumerate(P.key["column_wnids"][5:], start=5):
        under = [i for i, c in enumerate(CLASSES) if w in h.ancestors(c)]
        assert torch.equal(P.scores[:, j], onehot[:, under].sum(1))
    # Without dropping: every ancestor but the universal "entity" is a column.
    assert set(P.key["column_wnids"][5:]) == set(h.parents) - set(CLASSES) - {"n_entity"}


def test_label_matrix_names_superclass_colliding_with_class():
    class H(HandHierarchy):
        names = {**HandHierarchy.names, "n_domcat": "tabby"}  # a superclass named like a class

    P = label_concept_matrix(torch.tensor([0, 1]), ["n_tabby", "n_persian", "n_beagle"], hierarchy=H())
    assert "tabby" in P.concepts and "tabby (superclass)" in P.concepts


def test_label_matrix_given_class_names_and_no_ancestors_method():
    class NoAncestors:
        def superclasses(self, wnids, drop_universal=True):
            return {"n_x": [0, 1], "n_y": [0, 1], "n_all": [0, 1, 2]}

        def name(self, w):
            return {"n_x": "x", "n_y": "y", "n_all": "all"}[w]

    P = label_concept_matrix(torch.tensor([0, 2]), ["a", "b", "c"], hierarchy=NoAncestors(), class_names=["A", "B", "C"])
    # Identical member sets: the first in the hierarchy's order; a universal group is dropped even when
    # the hierarchy does not drop it itself.
    assert P.concepts == ("A", "B", "C", "x")
    assert P.scores.tolist() == [[1, 0, 0, 1], [0, 0, 1, 0]]


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([0, 5]), r"labels must lie in \[0, 5\)"),
        (torch.tensor([0, -1]), "Unlabelled"),
        (torch.tensor([0.0, 1.0]), "integer class indices"),
        (torch.tensor([[0, 1]]), r"Tensor\[N\]"),
    ],
)
def test_label_matrix_bad_labels(labels, match):
    with pytest.raises(NeurocoreError, match=match):
        label_concept_matrix(labels, CLASSES, hierarchy=HandHierarchy())


def test_label_matrix_bad_classes():
    with pytest.raises(NeurocoreError, match="unique"):
        label_concept_matrix(torch.tensor([0]), ["n_tabby", "n_tabby"], hierarchy=HandHierarchy())
    with pytest.raises(NeurocoreError, match="empty"):
        label_concept_matrix(torch.tensor([0]), [], hierarchy=HandHierarchy())
    with pytest.raises(NeurocoreError, match="one name per class"):
        label_concept_matrix(torch.tensor([0]), CLASSES, hierarchy=HandHierarchy(), class_names=["a"])


def test_label_matrix_input_not_mutated():
    labels = torch.tensor([3, 1, 0])
    before = labels.clone()
    label_concept_matrix(labels, CLASSES, hierarchy=HandHierarchy())
    assert torch.equal(labels, before)


@pytest.mark.skipif(not (DATA / "tiny-imagenet-200" / "wnids.txt").is_file(), reason="shared/data/tiny-imagenet-200 is absent")
def test_label_matrix_real_tiny_imagenet_wnids():
    from neurocore.concepts import wordnet_hierarchy

    wn = wordnet_hierarchy()
    wnids = (DATA / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert len(wnids) == 200
    labels = torch.arange(200)  # one image per class: row c is class c's concept row
    P = label_concept_matrix(labels, wnids)
    S = P.num_concepts - 200
    assert 50 < S < 400
    assert len(set(P.concepts)) == P.num_concepts
    assert torch.equal(P.scores[:, :200], torch.eye(200))
    for j in range(200, P.num_concepts):
        w = P.key["column_wnids"][j]
        under = torch.tensor([float(w in wn.ancestors(c) or w == c) for c in wnids])
        assert torch.equal(P.scores[:, j], under), w
        assert 2 <= under.sum() < 200  # neither a copy of one class nor universal
    cols = {tuple(P.scores[:, j].tolist()) for j in range(P.num_concepts)}
    assert len(cols) == P.num_concepts  # no two identical columns
    assert "dog" in P.concepts  # WordNet's dog.n.01 groups the tiny-imagenet dog breeds


@pytest.mark.skipif(not (DATA / "concepts" / "imagenet_superclass_to_ids.json").is_file(), reason="shared/data/concepts is absent")
def test_label_matrix_imagenet_matches_authors_superclasses():
    # The authors' released ImageNet superclass list (400 groups, 'entity' covering everything): most of
    # its member sets are columns of ours (their exact rule of which ancestors to list is not published).
    from neurocore.concepts import imagenet_wnids

    authors = json.loads((DATA / "concepts" / "imagenet_superclass_to_ids.json").read_text())
    P = label_concept_matrix(torch.arange(1000), imagenet_wnids())
    ours = {tuple(P.scores[:, j].nonzero().flatten().tolist()) for j in range(1000, P.num_concepts)}
    theirs = [tuple(sorted(v)) for v in authors.values() if len(v) < 1000]
    found = sum(t in ours for t in theirs)
    assert found / len(theirs) >= 0.93, f"{found} of {len(theirs)}"  # measured 0.937 (374 of 399)


# ----------------------------------------------------------------------------------------------
# Calibration


def test_calibrated_matrix_formula_and_provenance():
    S = torch.rand(7, 5) * 0.4 - 0.1
    cs = ConceptScores.from_tensor(S, list("abcde"), source="open_clip:ViT-L-16-SigLIP-384:webli")
    before = cs.scores.clone()
    out = calibrated_matrix(cs, 60.0, -0.09)
    assert (out.scores - torch.sigmoid(60.0 * (S + -0.09))).abs().max() < 1e-6
    assert out.concepts == cs.concepts and out.source == cs.source
    assert out.key["calibration"] == {"a": 60.0, "b": -0.09}
    assert torch.equal(cs.scores, before) and "calibration" not in cs.key
    t = calibrated_matrix(S.double(), 58, -0.13)
    assert t.dtype == torch.float32
    assert (t - torch.sigmoid(58 * (S + -0.13))).abs().max() < 1e-6


def test_calibrated_matrix_chunked_equals_one_shot(monkeypatch):
    S = torch.rand(103, 7)
    whole = calibrated_matrix(S, 20.0, -0.3)
    monkeypatch.setattr(_calibrate, "_CHUNK_ELEMENTS", 30)  # 4 rows per chunk
    assert (calibrated_matrix(S, 20.0, -0.3) - whole).abs().max() < 1e-6  # SIMD tails round by an ulp or two


def test_calibrated_matrix_bad_scalars():
    with pytest.raises(NeurocoreError, match="a must be finite"):
        calibrated_matrix(torch.rand(2, 2), float("nan"), 0.0)
    with pytest.raises(NeurocoreError, match="b must be a real number"):
        calibrated_matrix(torch.rand(2, 2), 1.0, "x")


def test_calibrate_recovers_known_parameters_exactly_from_probabilities():
    # With soft targets equal to the true probabilities, the BCE minimiser is exactly (a, b).
    S = torch.rand(500, 40, generator=torch.Generator().manual_seed(0)) * 0.35 - 0.05
    for a, b in [(60.0, -0.09), (58.0, -0.13), (12.0, 0.2)]:
        Y = torch.sigmoid(a * (S.double() + b)).float()
        fit = calibrate(S, Y)
        assert abs(fit.a - a) < 1e-3 * a and abs(fit.b - b) < 1e-4, (fit, a, b)


def test_calibrate_recovers_from_sampled_labels_at_the_bce_optimum():
    g = torch.Generator().manual_seed(1)
    S = torch.rand(2000, 20, generator=g) * 0.35 - 0.05
    Y = torch.bernoulli(torch.sigmoid(60.0 * (S - 0.09)), generator=torch.Generator().manual_seed(2))
    a, b = calibrate(S, Y)
    assert abs(a - 60) < 4 and abs(b + 0.09) < 0.004
    # First-order optimality checked independently: autograd of the paper's loss, written directly.
    ab = torch.tensor([a, b], dtype=torch.float64, requires_grad=True)

    def bce(p):
        return torch.nn.functional.binary_cross_entropy(torch.sigmoid(p[0] * (S.double() + p[1])), Y.double())

    (grad,) = torch.autograd.grad(bce(ab), ab)
    assert grad.abs().max() < 1e-5  # d/db = a·d/dc: 60× the intercept gradient Newton drove to ~0
    with torch.no_grad():
        for d in ([0.5, 0], [-0.5, 0], [0, 1e-3], [0, -1e-3]):
            assert bce(ab + torch.tensor(d, dtype=torch.float64)) > bce(ab)
    assert calibrate(S, Y) == (a, b)  # deterministic, bit for bit


def test_calibrate_aligns_concept_scores_by_name():
    g = torch.Generator().manual_seed(3)
    S = torch.rand(300, 6, generator=g) * 0.4 - 0.1
    Y = torch.bernoulli(torch.sigmoid(30 * (S - 0.1)), generator=g)
    targets = ConceptScores.from_tensor(Y, ["a", "b", "c", "d", "e", "f"], source="labels")
    perm = [4, 2, 0, 5, 1, 3]
    extra = torch.rand(300, 2, generator=g)
    cos = ConceptScores.from_tensor(torch.cat([S[:, perm], extra], 1), [["a", "b", "c", "d", "e", "f"][p] for p in perm] + ["x", "y"])
    assert calibrate(cos, targets) == calibrate(S, Y)


def test_calibrate_errors_and_warning():
    S = torch.rand(10, 3)
    with pytest.raises(NeurocoreError, match="same shape"):
        calibrate(S, torch.zeros(10, 2))
    with pytest.raises(NeurocoreError, match=r"\[0, 1\]"):
        calibrate(S, torch.full((10, 3), 2.0))
    with pytest.raises(NeurocoreError, match="both positive and negative"):
        calibrate(S, torch.zeros(10, 3))
    with pytest.raises(NeurocoreError, match="finite"):
        calibrate(torch.full((10, 3), float("nan")), torch.zeros(10, 3))
    with pytest.raises(NeurocoreError, match="no column for 1 target"):
        calibrate(ConceptScores.from_tensor(S, ["a", "b", "c"]), ConceptScores.from_tensor(S.round(), ["a", "b", "z"]))
    # Perfectly separated targets: the optimum is at a -> infinity.
    with pytest.warns(UserWarning, match="no convergence"):
        calibrate(S, (S > 0.5).float(), max_iter=5)


def test_calibration_presets():
    assert dict(CALIBRATION_PRESETS) == {
        "ViT-L-16-SigLIP-384": (60.0, -0.09),
        "ViT-SO400M-14-SigLIP-384": (58.0, -0.13),
        "ViT-L-14-336": (58.0, -0.25),
    }
    assert calibration_preset("ViT-L-16-SigLIP-384") == (60.0, -0.09)
    assert calibration_preset("vit-so400m-14-siglip-384") == (58.0, -0.13)
    assert calibration_preset("open_clip:ViT-L-14-336:openai") == (58.0, -0.25)
    assert calibration_preset("hf-hub:timm/ViT-SO400M-14-SigLIP-384") == (58.0, -0.13)
    with pytest.raises(NeurocoreError, match=r"(?s)ViT-B-16.*ViT-L-16-SigLIP-384.*calibrate\("):
        calibration_preset("ViT-B-16")
    with pytest.raises(TypeError):
        CALIBRATION_PRESETS["x"] = (1.0, 0.0)  # read-only
