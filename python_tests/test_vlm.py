"""The open_clip adapter (random weights: no model hub here), load_vlm, and from_vlm through a real model.

The tests use a tiny architecture registered from a config file (one small transformer block per
tower), so that building and encoding take well under a second; the docstring examples of
neurocore.vlm build a stock architecture (ViT-S-32).
"""

from __future__ import annotations

import json
import re
import warnings

import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from _tiny_clip import register_tiny_open_clip

from neurocore._errors import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.probe import ImageFolder
from neurocore.vlm import OpenClip, VisionLanguageModel, load_vlm, weights_digest

open_clip = pytest.importorskip("open_clip")

TINY = "neurocore-test-tiny"


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    register_tiny_open_clip(tmp_path_factory.mktemp("open_clip_cfg"), TINY)
    assert TINY in open_clip.list_models()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # No hub here: make any download attempt fail at once instead of retrying for a minute.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def tiny(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OpenClip(TINY, **kw)


@pytest.fixture(scope="module")
def vlm():
    return tiny()


def test_random_weights_warn_and_say_so_in_identity():
    with pytest.warns(UserWarning, match="random weights.*meaningless"):
        m = OpenClip(TINY)
    assert m.identity.startswith(f"open_clip:{TINY}:random(seed=0):weights=")
    assert m.identity.endswith(m.weights_digest[:16]) and m.weights_digest == weights_digest(m.model)
    assert isinstance(m, VisionLanguageModel)
    assert m.device == torch.device("cpu") and not m.model.training


def test_seeded_random_weights_are_reproducible_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = tiny(seed=0)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the build did not consume the caller's random stream
    b, c = tiny(seed=0), tiny(seed=1)
    assert a.identity == b.identity and a.identity != c.identity


def test_encode_shapes_and_batching(vlm):
    images = torch.stack([vlm.preprocess(PIL.Image.new("RGB", (40, 30), (i * 60, 20, 200))) for i in range(3)])
    assert images.shape == (3, 3, 32, 32)
    img = vlm.encode_images(images)
    assert img.shape == (3, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
    texts = [f"concept {i}" for i in range(5)]
    whole = vlm.encode_texts(texts)
    small = tiny(batch_size=2)  # same seed: same weights
    torch.testing.assert_close(small.encode_texts(texts), whole, rtol=1e-5, atol=1e-5)
    assert whole.shape == (5, 16)
    # one image alone = the same image in a batch
    torch.testing.assert_close(vlm.encode_images(images[1:2]), img[1:2], rtol=1e-4, atol=1e-5)
    with pytest.raises(NeurocoreError, match="not one string"):
        vlm.encode_texts("dog")
    with pytest.raises(NeurocoreError, match="texts is empty"):
        vlm.encode_texts([])
    with pytest.raises(NeurocoreError, match=r"Tensor\[B, 3, H, W\]"):
        vlm.encode_images(images[0])


def test_local_checkpoint_file(tmp_path, vlm):
    ckpt = tmp_path / "weights.pt"
    torch.save(vlm.model.state_dict(), ckpt)
    loaded = OpenClip(TINY, pretrained=str(ckpt), seed=5)  # the seed must not matter: the file sets the weights
    assert loaded.weights_digest == vlm.weights_digest
    assert loaded.identity == f"open_clip:{TINY}:file=weights.pt:weights={vlm.weights_digest[:16]}"
    texts = ["a", "b"]
    torch.testing.assert_close(loaded.encode_texts(texts), vlm.encode_texts(texts))
    assert load_vlm(f"open_clip:{TINY}:{ckpt}").identity == loaded.identity

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(NeurocoreError, match="cannot load checkpoint file .*garbage.bin"):
        OpenClip(TINY, pretrained=garbage)
    other = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3)}, other)
    with pytest.raises(NeurocoreError, match="cannot load checkpoint file"):
        OpenClip(TINY, pretrained=other)
    with pytest.raises(NeurocoreError, match="does not exist"):
        OpenClip(TINY, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(NeurocoreError, match="is a folder"):
        OpenClip(TINY, pretrained=tmp_path)


def test_unknown_names_and_tags():
    with pytest.raises(NeurocoreError, match="unknown open_clip architecture 'ViT-B-61'.*close matches: .*ViT-B-16"):
        OpenClip("ViT-B-61")
    with pytest.raises(NeurocoreError, match="neither an open_clip tag of 'ViT-B-32'.*tags of this model: openai"):
        OpenClip("ViT-B-32", pretrained="openia")
    with pytest.raises(NeurocoreError, match="batch_size must be an int >= 1"):
        OpenClip(TINY, batch_size=0)


def test_tag_without_hub_says_how_to_use_a_local_file():
    # "openai" is a real tag of ViT-B-32; its download fails here (no network, offline mode) before
    # the model is built, so this is fast.
    with pytest.raises(NeurocoreError, match="could not get the weights 'openai'.*pretrained='/path/to/open_clip_pytorch_model.bin'.*open_clip:ViT-B-32:/path/to"):
        OpenClip("ViT-B-32", pretrained="openai")


def test_load_vlm_parsing(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for spec in (f"open_clip:{TINY}", f"open_clip:{TINY}:none", f"open_clip:{TINY}:None", f"open_clip:{TINY}:"):
            assert load_vlm(spec).identity.startswith(f"open_clip:{TINY}:random(seed=0):"), spec
        assert load_vlm(f"open_clip:{TINY}", batch_size=7).batch_size == 7
    with pytest.raises(NeurocoreError, match="unknown vision–language backend 'clip'"):
        load_vlm("clip:ViT-B-16:openai")
    with pytest.raises(NeurocoreError, match="no model name"):
        load_vlm("open_clip:")
    with pytest.raises(NeurocoreError, match="must be a string"):
        load_vlm(None)


def _probe(root, n=5):
    for i in range(n):
        (root / "x").mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", (20 + i, 24), (40 * i, 255 - 40 * i, 90)).save(root / "x" / f"{i}.jpg")
    (root / "x" / "bad.jpg").write_bytes(b"broken")
    return ImageFolder(root)


def test_from_vlm_with_open_clip(tmp_path, vlm):
    probe = _probe(tmp_path / "p")
    cache = tmp_path / "cache"
    concepts = ["dog", "cat", "red car"]
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        cs = ConceptScores.from_vlm(vlm, probe, concepts, template="a photo of a {}", batch_size=2,
                                    cache_dir=cache, progress=False)
    assert cs.scores.shape == (5, 3) and cs.image_ids == tuple(f"x/{i}.jpg" for i in range(5))
    # direct computation: preprocess each image, encode, normalise
    assert probe.image_id(5) == "x/bad.jpg"
    imgs = torch.stack([vlm.preprocess(PIL.Image.open(probe.files[i]).convert("RGB")) for i in range(5)])
    I = F.normalize(vlm.encode_images(imgs), dim=1)
    T = F.normalize(vlm.encode_texts([f"a photo of a {c}" for c in concepts]), dim=1)
    torch.testing.assert_close(cs.scores, I @ T.T, rtol=1e-4, atol=1e-5)
    assert cs.source == vlm.identity

    # cached: no model call on the second run
    calls = []
    again_vlm = tiny()
    again_vlm.encode_images = lambda x: calls.append(x) or vlm.encode_images(x)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        again = ConceptScores.from_vlm(again_vlm, probe, concepts, template="a photo of a {}", cache_dir=cache, progress=False)
    assert calls == [] and torch.equal(again.scores, cs.scores)
    # other weights: not reused
    other = tiny(seed=3)
    other_calls = []
    orig = other.encode_images
    other.encode_images = lambda x: other_calls.append(x) or orig(x)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ConceptScores.from_vlm(other, probe, concepts, cache_dir=cache, progress=False)
    assert other_calls


def test_spec_string_is_accepted_by_from_vlm(tmp_path):
    probe = _probe(tmp_path / "p", n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = ConceptScores.from_vlm(f"open_clip:{TINY}:none", probe, ["a", "b"], progress=False)
    assert cs.scores.shape == (2, 2) and cs.source.startswith(f"open_clip:{TINY}:random(seed=0)")


def test_local_dir_schema(tmp_path, vlm):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config(TINY)}))
    with pytest.warns(UserWarning, match="random weights"):  # a folder without a checkpoint
        assert ":random(seed=0):" in OpenClip(f"local-dir:{folder}").identity
    torch.save(vlm.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no warning
        m = load_vlm(f"open_clip:local-dir:{folder}")
    assert m.identity == f"open_clip:local-dir:{folder}:bundled:weights={vlm.weights_digest[:16]}"
    with pytest.raises(NeurocoreError, match="names its own weights"):
        OpenClip(f"local-dir:{folder}", pretrained="openai")


def test_short_context_text_path_equals_full_encode_text(vlm):
    # The truncated causal path must give open_clip's own embedding (attention mixes positions, so
    # a wrong mask or pooling position would show), and must actually be taken (the context is cut).
    model = tiny()
    texts = ["dog", "a striped red traffic light", "x", "polka dots on a very long tablecloth at noon"]
    tokens = model._tokenizer(texts)
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]
    with torch.inference_mode():
        full = model.model.encode_text(tokens)
    fast = model.encode_texts(texts)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    calls = []
    handle = model.model.transformer.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[1]))
    try:
        model.encode_texts(texts)
    finally:
        handle.remove()
    assert calls and max(calls) < tokens.shape[1]


# ----------------------------------------------------------------------------------------------
# texts longer than the text encoder's context (CLIP: 77 tokens) are cut: say so (issue 8, fault 8)

LONG_CAT = "a striped " + "word " * 80 + "cat"
LONG_DOG = "a striped " + "word " * 80 + "dog"  # differs from LONG_CAT only after the cut


def test_texts_that_fit_do_not_warn(vlm):
    assert vlm.context_length == 77
    exactly = "a " * 75  # 75 tokens + start and end tokens = 77
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vlm.encode_texts(["dog", exactly, "a photo of a red traffic light"])
    assert vlm.truncated_texts([exactly, exactly + "a"]) == ([1], [[0, 1]])


def test_cut_texts_warn_once_naming_them_and_the_identical_ones(vlm):
    with pytest.warns(UserWarning) as caught:
        emb = vlm.encode_texts([LONG_CAT, "dog", LONG_DOG])
    messages = [str(w.message) for w in caught if "context" in str(w.message)]
    assert len(messages) == 1
    assert re.search(r"2 of 3 texts are longer than the text encoder's context of 77 tokens", messages[0])
    assert re.search(r"same embedding: '.*cat' = '.*dog'", messages[0])
    torch.testing.assert_close(emb[0], emb[2])  # what the warning is about
    # cut but still distinct: named, no claim of identical embeddings
    with pytest.warns(UserWarning, match=r"1 of 2 texts .*context of 77") as caught:
        vlm.encode_texts(["cat " + "word " * 80, "dog"])
    assert not [w for w in caught if "same embedding" in str(w.message)]


def test_embed_texts_warns_once_over_all_chunks_and_on_cache_hits(tmp_path):
    from neurocore.vlm import embed_texts

    small = tiny(batch_size=2)  # five prompts: three encode_texts calls
    for _ in range(2):  # computed, then read from the cache
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            embed_texts(small, ["dog", "striped " + "word " * 80 + "cat", "car", "striped " + "word " * 80 + "dog", "x"],
                        template="a photo of a {}", cache_dir=tmp_path, progress=False)
        cut = [str(w.message) for w in caught if "context of 77" in str(w.message)]
        assert len(cut) == 1 and "2 of 5 texts" in cut[0] and "same embedding" in cut[0]


def test_image_embeddings_are_not_cached_with_an_undescribed_preprocess(tmp_path):
    from torchvision import transforms as T

    probe = _probe(tmp_path / "p", n=3)
    model = tiny()
    model.preprocess = T.Compose([model.preprocess, T.Lambda(lambda x: x * 2)])
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"not caching: the repr of vlm\.preprocess\.transforms\[1\]: Lambda\(\)"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="skipped 1 unreadable")
            ConceptScores.from_vlm(model, probe, ["dog", "cat"], cache_dir=cache, progress=False)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["text_embeddings"]
