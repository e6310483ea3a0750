"""ConceptScores constructors (from_labels, from_vlm), save/load, and the embedding caches behind from_vlm.

A small deterministic fake vision–language model stands in for CLIP here, so that every number can be
recomputed directly; test_vlm.py runs the same path with a real (random-weight) open_clip model.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

from neurocore._errors import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.probe import ImageFolder, iter_batches
from neurocore.vlm import VisionLanguageModel, embed_images, embed_texts

# --- from_labels ---------------------------------------------------------------------------------


def test_from_labels_one_hot():
    cs = ConceptScores.from_labels(torch.tensor([2, 0, 2, 1]), ["a", "b", "c"], image_ids=["w", "x", "y", "z"])
    expected = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float32)
    assert torch.equal(cs.scores, expected) and cs.scores.dtype == torch.float32
    assert cs.concepts == ("a", "b", "c") and cs.source == "labels" and cs.image_ids == ("w", "x", "y", "z")


def test_from_labels_multi_hot_bool_and_numbers():
    m = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.equal(ConceptScores.from_labels(m, ["a", "b", "c"]).scores, m.float())
    assert torch.equal(ConceptScores.from_labels(m.long(), ["a", "b", "c"]).scores, m.float())


def test_from_labels_does_not_mutate_input():
    labels = torch.tensor([1, 0])
    ConceptScores.from_labels(labels, ["a", "b"])
    assert labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "labels, names, match",
    [
        (torch.tensor([0, 3]), ["a", "b", "c"], r"must lie in \[0, 3\).*got 3"),
        (torch.tensor([-1, 0]), ["a", "b"], r"must lie in \[0, 2\).*got -1"),
        (torch.tensor([0.0, 1.0]), ["a", "b"], "integer class indices"),
        (torch.ones(2, 3), ["a", "b"], "3 columns but 2 class names"),
        (torch.tensor([[0, 2]]), ["a", "b"], "only 0 and 1"),
        (torch.zeros(2, 2, 2), ["a", "b"], "Tensor\\[N\\] of class indices"),
        (torch.tensor([0]), [], "class_names is empty"),
        (torch.tensor([0, 1]), ["a", "a"], "must be unique"),
    ],
)
def test_from_labels_errors(labels, names, match):
    with pytest.raises(NeurocoreError, match=match):
        ConceptScores.from_labels(labels, names)


def test_image_ids_must_match_rows():
    with pytest.raises(NeurocoreError, match="3 rows but 2 image ids"):
        ConceptScores.from_tensor(torch.rand(3, 2), ["a", "b"], image_ids=["x", "y"])


# --- save / load ---------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    cs = ConceptScores(torch.rand(4, 3), ("a", "b", "c"), "fake:1", {"k": [1, "x"], "t": None}, ("i0", "i1", "i2", "i3"))
    back = ConceptScores.load(cs.save(tmp_path / "out"))
    assert torch.equal(back.scores, cs.scores)
    assert (back.concepts, back.source, dict(back.key), back.image_ids) == (cs.concepts, cs.source, cs.key, cs.image_ids)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["concept_scores.json", "scores.pt"]


def test_load_errors(tmp_path):
    with pytest.raises(NeurocoreError, match="holds no saved ConceptScores"):
        ConceptScores.load(tmp_path)
    ConceptScores.from_tensor(torch.rand(2, 2), ["a", "b"]).save(tmp_path / "one")
    ConceptScores.from_tensor(torch.rand(2, 2), ["a", "b"]).save(tmp_path / "two")
    # scores of another save paired with these names (as an interrupted save could leave them)
    os.replace(tmp_path / "two" / "scores.pt", tmp_path / "one" / "scores.pt")
    with pytest.raises(NeurocoreError, match="different saves"):
        ConceptScores.load(tmp_path / "one")
    (tmp_path / "two" / "concept_scores.json").write_text("{not json")
    torch.save(torch.rand(2, 2), tmp_path / "two" / "scores.pt")
    with pytest.raises(NeurocoreError, match="cannot read saved ConceptScores"):
        ConceptScores.load(tmp_path / "two")


# --- from_vlm with a fake model ------------------------------------------------------------------


class FakeVLM:
    """Deterministic stand-in: images -> flattened 4x4 pixels @ W; texts -> a vector from their hash."""

    def __init__(self, seed=0, d=6, mean=0.5):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(48, d, generator=g)
        self.d = d
        self.preprocess = transforms.Compose([transforms.Resize((4, 4)), transforms.ToTensor(),
                                              transforms.Normalize([mean] * 3, [0.25] * 3)])
        self.identity = f"fake:seed={seed}:d={d}"
        self.device = torch.device("cpu")
        self.batch_size = 3
        self.image_calls = 0
        self.text_calls = []

    def encode_images(self, images):
        self.image_calls += 1
        return images.flatten(1) @ self.W * 3.0  # not unit norm: from_vlm normalises

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            rows.append(torch.randn(self.d, generator=torch.Generator().manual_seed(seed)) * 2.0)
        return torch.stack(rows)


def _make_probe(root, n=7, bad=True):
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (torch.rand(10 + i, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
        PIL.Image.fromarray(pixels).save(folder / f"img{i}.png")
    if bad:
        (root / "dogs" / "broken.png").write_bytes(b"not an image")
    return ImageFolder(root)


def _direct(vlm, probe, concepts, template=None):
    """S computed the plain way: open each readable file, preprocess, embed, normalise, multiply."""
    rows, ids = [], []
    for i in range(len(probe)):
        try:
            with PIL.Image.open(probe.files[i]) as img:
                x = vlm.preprocess(img.convert("RGB"))
        except OSError:
            continue
        rows.append(F.normalize(vlm.encode_images(x[None]), dim=1)[0])
        ids.append(probe.image_id(i))
    texts = [template.replace("{}", c) if template else c for c in concepts]
    T = F.normalize(vlm.encode_texts(texts), dim=1)
    return torch.stack(rows) @ T.T, tuple(ids)


CONCEPTS = ["dog", "cat", "sky", "car"]


def test_fake_is_a_vision_language_model():
    assert isinstance(FakeVLM(), VisionLanguageModel)


def test_from_vlm_scores_are_cosines_in_probe_order(tmp_path):
    probe = _make_probe(tmp_path / "p")
    vlm = FakeVLM()
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        cs = ConceptScores.from_vlm(vlm, probe, CONCEPTS, batch_size=3, progress=False)
    expected, ids = _direct(FakeVLM(), probe, CONCEPTS)
    assert cs.scores.shape == (7, 4) and cs.concepts == tuple(CONCEPTS)
    torch.testing.assert_close(cs.scores, expected, rtol=1e-5, atol=1e-6)
    assert cs.image_ids == ids and "dogs/broken.png" not in ids
    assert cs.scores.abs().max() <= 1 + 1e-6
    # rows line up with what activation recording sees: the same loop, the same skipped image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recorded = [i for b in iter_batches(probe, 2, transform=transforms.Compose([transforms.Resize((5, 5)), transforms.ToTensor()])) for i in b.ids]
    assert tuple(recorded) == cs.image_ids
    assert cs.source == vlm.identity and cs.key["vlm"] == vlm.identity and cs.key["template"] is None


def test_batch_size_does_not_change_scores(tmp_path):
    probe = _make_probe(tmp_path / "p", bad=False)
    a = ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, batch_size=1, progress=False)
    b = ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, batch_size=64, progress=False)
    torch.testing.assert_close(a.scores, b.scores)


def test_template_is_applied(tmp_path):
    probe = _make_probe(tmp_path / "p", bad=False)
    vlm = FakeVLM()
    cs = ConceptScores.from_vlm(vlm, probe, CONCEPTS, template="a photo of a {}.", progress=False)
    assert [t for call in vlm.text_calls for t in call] == [f"a photo of a {c}." for c in CONCEPTS]
    assert cs.concepts == tuple(CONCEPTS)  # names stay the concepts
    expected, _ = _direct(FakeVLM(), probe, CONCEPTS, template="a photo of a {}.")
    torch.testing.assert_close(cs.scores, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(NeurocoreError, match="template must be a string containing"):
        ConceptScores.from_vlm(vlm, probe, CONCEPTS, template="a photo", progress=False)


def test_concepts_accept_builtin_names_and_files(tmp_path):
    probe = _make_probe(tmp_path / "p", n=2, bad=False)
    f = tmp_path / "c.txt"
    f.write_text("dog\n\ncat\n")
    assert ConceptScores.from_vlm(FakeVLM(), probe, f, progress=False).concepts == ("dog", "cat")
    assert ConceptScores.from_vlm(FakeVLM(), probe, "places365", progress=False).scores.shape == (2, 365)


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_cache_reuse_and_separate_image_text_caches(tmp_path):
    probe = _make_probe(tmp_path / "p", bad=False)
    cache = tmp_path / "cache"
    vlm = FakeVLM()
    first = ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
    names = _files(cache)
    assert len(names) == 2 and names[0].startswith("image_embeddings-") and names[1].startswith("text_embeddings-")
    assert vlm.image_calls > 0 and vlm.text_calls

    vlm.image_calls, vlm.text_calls = 0, []
    again = ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls == 0 and vlm.text_calls == []
    assert torch.equal(again.scores, first.scores) and again.image_ids == first.image_ids

    # a new concept set reuses the image embeddings
    other = ConceptScores.from_vlm(vlm, probe, ["tree", "boat"], cache_dir=cache, progress=False)
    assert vlm.image_calls == 0 and vlm.text_calls == [["tree", "boat"]]
    assert len(_files(cache)) == 3
    torch.testing.assert_close(other.scores, _direct(FakeVLM(), probe, ["tree", "boat"])[0], rtol=1e-5, atol=1e-6)

    # a template is part of the text key
    vlm.text_calls = []
    ConceptScores.from_vlm(vlm, probe, CONCEPTS, template="{} photo", cache_dir=cache, progress=False)
    assert vlm.image_calls == 0 and vlm.text_calls == [[f"{c} photo" for c in CONCEPTS[:3]], ["car photo"]]


def test_stale_caches_are_never_reused(tmp_path):
    probe = _make_probe(tmp_path / "p", bad=False)
    cache = tmp_path / "cache"
    ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, cache_dir=cache, progress=False)

    # other weights (identity), other preprocessing (same identity), other images
    for vlm in (FakeVLM(seed=1), FakeVLM(mean=0.4)):
        got = ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
        assert vlm.image_calls > 0
        torch.testing.assert_close(got.scores, _direct(vlm, probe, CONCEPTS)[0], rtol=1e-5, atol=1e-6)

    target = probe.files[3]
    PIL.Image.new("RGB", (9, 9), (250, 10, 10)).save(target)  # same name, new content
    changed = ImageFolder(tmp_path / "p")
    vlm = FakeVLM()
    got = ConceptScores.from_vlm(vlm, changed, CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls > 0
    torch.testing.assert_close(got.scores, _direct(FakeVLM(), changed, CONCEPTS)[0], rtol=1e-5, atol=1e-6)

    # adding an image changes the order/identity too
    PIL.Image.new("RGB", (5, 5)).save(tmp_path / "p" / "cats" / "aaa.png")
    vlm = FakeVLM()
    got = ConceptScores.from_vlm(vlm, ImageFolder(tmp_path / "p"), CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls > 0 and got.scores.shape[0] == 8 and got.image_ids[0] == "cats/aaa.png"


def test_corrupt_or_foreign_cache_files_are_recomputed(tmp_path):
    probe = _make_probe(tmp_path / "p", bad=False)
    cache = tmp_path / "cache"
    ref = ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, cache_dir=cache, progress=False)
    image_file = next(cache.glob("image_embeddings-*.pt"))
    image_file.write_bytes(b"truncated")
    vlm = FakeVLM()
    with pytest.warns(UserWarning, match="unreadable cache file"):
        got = ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls > 0 and torch.equal(got.scores, ref.scores)
    # a readable file whose stored key is not the expected one (e.g. copied over) is not trusted
    payload = torch.load(image_file, weights_only=True)
    payload["key"] = dict(payload["key"], dataset="something else")
    payload["embeddings"] = torch.zeros_like(payload["embeddings"])
    torch.save(payload, image_file)
    vlm = FakeVLM()
    with pytest.warns(UserWarning, match="made for other inputs"):
        got = ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls > 0 and torch.equal(got.scores, ref.scores)


def test_interrupted_cache_write_leaves_no_file(tmp_path, monkeypatch):
    probe = _make_probe(tmp_path / "p", bad=False)
    cache = tmp_path / "cache"
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise KeyboardInterrupt  # killed after the bytes hit the temporary file

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, cache_dir=cache, progress=False)
    assert _files(cache) == []
    monkeypatch.setattr(torch, "save", real_save)
    vlm = FakeVLM()
    ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls > 0 and len(_files(cache)) == 2


def test_cached_skips_still_warn(tmp_path):
    probe = _make_probe(tmp_path / "p")
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, cache_dir=cache, progress=False)
    vlm = FakeVLM()
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        cs = ConceptScores.from_vlm(vlm, probe, CONCEPTS, cache_dir=cache, progress=False)
    assert vlm.image_calls == 0 and cs.num_images == 7


def test_probe_without_fingerprint_is_not_cached(tmp_path):
    images = [PIL.Image.new("RGB", (6, 6), (i * 40, 0, 0)) for i in range(3)]
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="no fingerprint"):
        cs = ConceptScores.from_vlm(FakeVLM(), images, CONCEPTS, cache_dir=cache, progress=False)
    assert cs.image_ids == ("0", "1", "2")
    assert [n.split("-")[0] for n in _files(cache)] == ["text_embeddings"]


def test_progress_bars_switch_off(tmp_path, capsys):
    probe = _make_probe(tmp_path / "p", n=2, bad=False)
    ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, progress=False)
    assert capsys.readouterr().err == ""
    ConceptScores.from_vlm(FakeVLM(), probe, CONCEPTS, progress=True)
    err = capsys.readouterr().err
    assert "encoding images" in err and "encoding 4 texts" in err


def test_from_vlm_errors(tmp_path):
    probe = _make_probe(tmp_path / "p", n=2, bad=False)
    with pytest.raises(NeurocoreError, match="vlm must be a vision–language model.*without encode_images"):
        ConceptScores.from_vlm(object(), probe, CONCEPTS, progress=False)
    with pytest.raises(NeurocoreError, match="the concept set .* is empty"):
        ConceptScores.from_vlm(FakeVLM(), probe, [" "], progress=False)
    tensors = [torch.rand(3, 8, 8) for _ in range(2)]
    with pytest.raises(NeurocoreError, match="probe yields tensors"):
        ConceptScores.from_vlm(FakeVLM(), tensors, CONCEPTS, progress=False)

    class BadDim(FakeVLM):
        def encode_texts(self, texts):
            return torch.ones(len(texts), self.d + 1)

    with pytest.raises(NeurocoreError, match="share one space"):
        ConceptScores.from_vlm(BadDim(), probe, CONCEPTS, progress=False)

    class NaNs(FakeVLM):
        def encode_images(self, images):
            return torch.full((images.shape[0], self.d), float("nan"))

    with pytest.raises(NeurocoreError, match="NaN"):
        ConceptScores.from_vlm(NaNs(), probe, CONCEPTS, progress=False)

    class WrongRows(FakeVLM):
        def encode_texts(self, texts):
            return torch.ones(1, self.d)

    with pytest.raises(NeurocoreError, match=r"encode_texts must return a Tensor\[3, d\]"):
        embed_texts(WrongRows(), ["a", "b", "c"], progress=False)


def test_embed_functions_normalise(tmp_path):
    probe = _make_probe(tmp_path / "p", n=3, bad=False)
    emb = embed_images(FakeVLM(), probe, progress=False)
    torch.testing.assert_close(emb.embeddings.norm(dim=1), torch.ones(3))
    assert emb.indices.tolist() == [0, 1, 2] and emb.embeddings.dtype == torch.float32
    T = embed_texts(FakeVLM(), ["a", "b"], progress=False)
    torch.testing.assert_close(T.norm(dim=1), torch.ones(2))
    with pytest.raises(NeurocoreError, match="not one string"):
        embed_texts(FakeVLM(), "abc", progress=False)
