"""neurocore's dissect(): record a model, score the probe, label every neuron — end to end on tiny
models and images whose right answers are known."""

from __future__ import annotations

import warnings

import PIL.Image
import pytest
import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.methods import dissect
from neurocore.methods import clip_dissect as cd


class Channels(nn.Module):
    """Colour detectors: red, green, blue, and "yellow" (red and green, not blue)."""

    def forward(self, x):
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        return torch.stack([r, g, b, torch.minimum(r, g) - b], 1)


class ColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = Channels()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class ToTensor:
    """PIL -> Tensor[3, H, W] in [0, 1] (a named callable: its repr is stable, for cache keys)."""

    def __call__(self, image):
        return torch.from_numpy(__import__("numpy").asarray(image, dtype="float32") / 255.0).permute(2, 0, 1).contiguous()

    def __repr__(self):
        return "ToTensor()"


class ColourImages(torch.utils.data.Dataset):
    """Small PIL images of one random colour each (with pixel noise), labelled by dominant channel."""

    def __init__(self, n=200, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.colours = torch.rand(n, 3, generator=g)
        self.noise = 0.03 * torch.randn(n, 8, 8, 3, generator=g)

    def __len__(self):
        return len(self.colours)

    def __getitem__(self, i):
        pixels = (self.colours[i].view(1, 1, 3) + self.noise[i]).clamp(0, 1)
        image = PIL.Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), "RGB")
        return image, int(self.colours[i].argmax())

    def fingerprint(self):
        return f"colours-{len(self)}"


BASIS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "grey": (1.0, 1.0, 1.0)}


class ColourVLM:
    """A transparent vision–language model: an image's embedding is its mean colour, a text's the
    sum of its colour words' RGB directions ("red green" = yellow). Implements neurocore's protocol."""

    identity = "test:colour-vlm"
    device = torch.device("cpu")
    preprocess = ToTensor()

    def __init__(self):
        self.texts = []

    def encode_images(self, images):
        return images.mean(dim=(2, 3))

    def encode_texts(self, texts):
        self.texts.append(list(texts))
        out = []
        for t in texts:
            v = torch.zeros(3)
            for word in t.split():
                v += torch.tensor(BASIS[word])
            out.append(v)
        return torch.stack(out)


def channel_means(model, probe):
    x = torch.stack([ToTensor()(probe[i][0]) for i in range(len(probe))])
    return model.features(x).mean(dim=(2, 3))


def test_dissect_with_given_scores_planted():
    # concept j's scores follow conv channel j's mean activation (+ noise); 6 distractor concepts.
    # All columns are put on one CLIP-like scale (0.2 + 0.05 z): the softmax over concepts compares
    # columns on each image, so a planted column must not be dwarfed by others' offsets.
    torch.manual_seed(0)
    model, probe = ColourNet(), ColourImages()
    acts = channel_means(model, probe)
    g = torch.Generator().manual_seed(1)
    z = (acts - acts.mean(0)) / acts.std(0)
    planted = z + 0.05 * torch.randn(acts.shape, generator=g)
    sims = 0.2 + 0.05 * torch.cat([planted, torch.randn(len(probe), 6, generator=g)], 1)
    names = ["c0", "c1", "c2", "c3"] + [f"distractor{i}" for i in range(6)]
    for method in cd.SIMILARITIES:
        params = {"top_k": 20} if method in ("soft_wpmi", "wpmi") else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the yellow channel is negative on most images: "dead"
            ex = dissect(model, "features", probe, names, scores=sims, similarity=method, transform=ToTensor(), progress=False, **params)
        assert ex.descriptions == ["c0", "c1", "c2", "c3"], method
        assert ex.layers == ("features",) and ex.params["num_images"] == 200
    # a ConceptScores needs no concepts argument
    ex = dissect(model, "features", probe, scores=ConceptScores.from_tensor(sims, names), transform=ToTensor(), progress=False, top_k=20)
    assert ex.descriptions == ["c0", "c1", "c2", "c3"]


@pytest.mark.filterwarnings("ignore:layer .fc.. 1 of 3 neurons are dead")
def test_dissect_with_a_vision_language_model(tmp_path):
    model, probe, vlm = ColourNet(), ColourImages(), ColourVLM()
    concepts = ["red", "green", "blue", "grey"]
    ex = dissect(model, ["features", "fc"], probe, concepts, vlm=vlm, transform=ToTensor(), progress=False, top_k=20, cache_dir=tmp_path)
    assert ex.layers == ("features", "fc")
    assert [n.description for n in ex.layer("features")][:3] == ["red", "green", "blue"]
    assert ex.layer("features")[3].description != "blue"  # yellow has no single word
    assert ex.params["concept_source"] == "test:colour-vlm"
    # compositional: "red green" (= yellow) describes the yellow channel
    ex = dissect(
        model, "features", probe, concepts, vlm=vlm, transform=ToTensor(), progress=False, top_k=20,
        compositional=True, composite_top_n=3, cache_dir=tmp_path,
    )
    assert ex[3].description in ("red green", "green red")
    assert [n.description for n in ex][:3] == ["red", "green", "blue"]


def test_dissect_compositional_without_cache_encodes_the_probe_once():
    model, probe, vlm = ColourNet(), ColourImages(n=100), ColourVLM()
    calls = []
    original = vlm.encode_images
    vlm.encode_images = lambda images: calls.append(len(images)) or original(images)
    ex = dissect(model, "features", probe, ["red", "green", "blue"], vlm=vlm, transform=ToTensor(), progress=False,
                 top_k=10, compositional=True, composite_top_n=2, batch_size=50)
    assert len(ex) == 4 and sum(calls) == 100  # the concept scores and the composites share one encoding


def test_dissect_needs_exactly_one_source():
    model, probe = ColourNet(), ColourImages(n=50)
    with pytest.raises(NeurocoreError, match="exactly one of scores=.*and vlm=.*got neither"):
        dissect(model, "features", probe, ["red"], transform=ToTensor())
    with pytest.raises(NeurocoreError, match="got both"):
        dissect(model, "features", probe, ["red"], scores=torch.rand(50, 1), vlm=ColourVLM(), transform=ToTensor())


def test_dissect_bad_input_fails_before_recording():
    class Exploding(ColourNet):
        def forward(self, x):
            raise AssertionError("the model must not run")

    model, probe = Exploding(), ColourImages(n=50)
    sims = torch.rand(50, 3)
    with pytest.raises(NeurocoreError, match=r"no setting 'topk' \(did you mean 'top_k'\?\)"):
        dissect(model, "features", probe, ["a", "b", "c"], scores=sims, topk=5)
    with pytest.raises(NeurocoreError, match="unknown similarity.*'wpmi2'"):
        dissect(model, "features", probe, ["a", "b", "c"], scores=sims, similarity="wpmi2")
    with pytest.raises(NeurocoreError, match="give similarity= only"):
        dissect(model, "features", probe, ["a", "b", "c"], scores=sims, similarity="cos", method="cos")
    with pytest.raises(NeurocoreError, match=r"scores must be a Tensor\[N, M=2\]"):
        dissect(model, "features", probe, ["a", "b"], scores=sims)
    with pytest.raises(NeurocoreError, match="scores is a tensor: pass concepts="):
        dissect(model, "features", probe, scores=sims)
    with pytest.raises(NeurocoreError, match="compositional=True needs vlm="):
        dissect(model, "features", probe, ["a", "b", "c"], scores=sims, compositional=True)
    with pytest.raises(NeurocoreError, match="template= applies to concepts encoded by vlm="):
        dissect(model, "features", probe, ["a", "b", "c"], scores=sims, template="a photo of {}")
    with pytest.raises(NeurocoreError, match="concepts differ from the given ConceptScores"):
        dissect(model, "features", probe, ["x", "y", "z"], scores=ConceptScores.from_tensor(sims, ["a", "b", "c"]))
    with pytest.raises(NeurocoreError, match="scores have 60 rows but the probe has 50 images"):
        dissect(model, "features", probe, ["a", "b", "c"], scores=torch.rand(60, 3))


def test_dissect_rows_must_match_the_recording():
    model, probe = ColourNet(), ColourImages(n=50)
    with pytest.raises(NeurocoreError, match="the recording kept 50 probe images but the scores have 40 rows"):
        dissect(model, "features", probe, ["a", "b", "c"], scores=torch.rand(40, 3), transform=ToTensor(), progress=False)


def test_dissect_results_save_and_load(tmp_path):
    from neurocore.methods import Explanations

    model, probe = ColourNet(), ColourImages(n=60)
    ex = dissect(model, "features", probe, ["a", "b", "c"], scores=torch.rand(60, 3), transform=ToTensor(), progress=False, top_k=5)
    loaded = Explanations.load(ex.save(tmp_path / "ex"))
    assert loaded.descriptions == ex.descriptions and loaded.params["concepts"] == ["a", "b", "c"]
    assert loaded.params["store_key"]["top_k"] == 10  # max(top_k, the 10 top images kept)


def test_method_keyword_is_a_deprecated_alias_of_similarity():
    model, probe = ColourNet(), ColourImages(n=40)
    sims = torch.rand(40, 3, generator=torch.Generator().manual_seed(0))
    kwargs = dict(transform=ToTensor(), progress=False)
    new = dissect(model, "features", probe, ["a", "b", "c"], scores=sims, similarity="cos", **kwargs)
    with pytest.warns(DeprecationWarning, match="method= is deprecated: use similarity="):
        old = dissect(model, "features", probe, ["a", "b", "c"], scores=sims, method="cos", **kwargs)
    assert old.descriptions == new.descriptions and old.params["similarity_params"] == new.params["similarity_params"]


class WithUnreadable(ColourImages):
    """ColourImages whose listed items cannot be decoded (as a truncated file)."""

    def __init__(self, bad, n=60):
        super().__init__(n=n)
        self.bad = set(bad)

    def __getitem__(self, i):
        if i in self.bad:
            raise OSError(f"image file is truncated (item {i})")
        return super().__getitem__(i)


@pytest.mark.parametrize("bad", [[0], [7, 8], [59]])
def test_scores_for_every_probe_image_follow_the_skipped_rows(bad):
    # one score row per probe image: rows of unreadable images go with them, the rest stay aligned
    model, probe = ColourNet(), WithUnreadable(bad)
    colours = probe.colours  # the score of concept c = the image's colour channel c
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = dissect(model, "features", probe, ["r", "g", "b"], scores=colours, similarity="cos", transform=ToTensor(),
                     progress=False)
    assert ex.descriptions[:3] == ["r", "g", "b"]
    assert ex.params["num_images"] == 60 - len(bad)


class CountingImages(ColourImages):
    """ColourImages that count how often each image is decoded, with one unreadable image."""

    def __init__(self, n=60, bad=7):
        super().__init__(n=n)
        self.reads = [0] * n
        self.bad = bad

    def __getitem__(self, i):
        self.reads[i] += 1
        if i == self.bad:
            raise OSError("image file is truncated")
        return super().__getitem__(i)

    def fingerprint(self):
        return f"counting-{len(self)}"


@pytest.mark.filterwarnings("ignore:layer .* neurons are dead", "ignore:skipped 1 unreadable")
@pytest.mark.parametrize("cached", [False, True])
def test_dissect_with_a_vlm_decodes_each_image_once(tmp_path, cached):
    # Recording and image encoding read the same probe: one decode feeds both, with the same embeddings
    # (rows, order, skipped image) as a separate embed_images pass.
    from neurocore.vlm import embed_images

    model, vlm = ColourNet(), ColourVLM()
    probe = CountingImages()
    cache = tmp_path if cached else None
    ex = dissect(model, "features", probe, ["red", "green", "blue"], vlm=vlm, transform=ToTensor(), progress=False,
                 top_k=10, batch_size=16, cache_dir=cache)
    assert len(ex) == 4
    # one decode per image; a run with a cache also re-reads the two rows it spot-checks on reuse only
    assert probe.reads == [1] * 60
    fresh = CountingImages()
    alone = embed_images(vlm, fresh, batch_size=16, progress=False)
    from neurocore._pipeline import run_dissection

    run = run_dissection(model, "features", CountingImages(), cd.ClipDissect(top_k=10), concepts=["red", "green", "blue"],
                         vlm=vlm, transform=ToTensor(), progress=False, batch_size=16)
    torch.testing.assert_close(run.concept_scores.scores, ConceptScores.from_image_embeddings(
        vlm, alone, ["red", "green", "blue"]).scores)
    if cached:  # the embeddings written alongside the recording serve the next run from the cache
        again = CountingImages()
        dissect(model, "features", again, ["red", "green", "blue"], vlm=vlm, transform=ToTensor(), progress=False,
                top_k=10, batch_size=16, cache_dir=cache)
        assert sum(again.reads) <= 4  # the recording cache's spot check only
