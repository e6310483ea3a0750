"""embed_images/embed_texts(..., engine="ray"): shards encoded by Ray tasks on a local cluster into the
embedding cache and merged in order; the result must equal the single-process one bit for bit, unreadable
images skipped the same way, and an interrupted run must resume without encoding finished chunks again.

Vision–language models: a tiny open_clip architecture with random weights (one transformer block per
tower, as test_vlm.py registers it) and the concept world's stand-in (neurocore/demo/_www.py), whose
image embeddings are known exactly (the image's concept indicator over √5).
"""

import warnings

import pytest
import torch
from _probe_folder import write_probe_folder
from _tiny_clip import register_tiny_open_clip
from conftest import RAY_MISSING

from neurocore import NeurocoreError
from neurocore.probe import ImageFolder, record
from neurocore.vlm import embed_images, embed_texts, record_and_embed

pytest.importorskip("ray", reason=RAY_MISSING)
pytest.importorskip("open_clip")

TINY = "neurocore-test-tiny-ray"


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    from neurocore.vlm import OpenClip

    register_tiny_open_clip(tmp_path_factory.mktemp("open_clip_cfg"), TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: meaningless embeddings, fine for equality
        return OpenClip(TINY, batch_size=3)  # 3 texts per forward pass: several text batches below


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_probe_folder(tmp_path_factory.mktemp("imgs"))  # b/4.png unreadable: dataset index 13, in chunk 3


class LoggedProbe(torch.utils.data.Dataset):
    """Random PIL images with a fingerprint; appends every index read to a log file; raises at
    ``fail_at`` (a worker that dies mid-run)."""

    def __init__(self, n, log, fail_at=None):
        g = torch.Generator().manual_seed(1)
        self.px = (torch.rand(n, 10, 10, 3, generator=g) * 255).to(torch.uint8)
        self.log, self.fail_at = str(log), fail_at

    def __len__(self):
        return len(self.px)

    def __getitem__(self, i):
        import PIL.Image

        if i == self.fail_at:
            raise RuntimeError("worker died")
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return PIL.Image.fromarray(self.px[i].numpy()), i % 3

    def fingerprint(self):
        return "logged-pil-probe-v1"

    def reads(self):
        with open(self.log) as f:
            return sorted(int(line) for line in f)


class WorldPIL(torch.utils.data.Dataset):
    """Concept-world images as PIL images (what the stand-in VLM preprocesses), with labels."""

    def __init__(self, world_images):
        self.world_images = world_images

    def __len__(self):
        return len(self.world_images)

    def __getitem__(self, i):
        import torchvision.transforms.functional as TF

        image, label = self.world_images[i]
        return TF.to_pil_image(image), label

    def fingerprint(self):
        return "pil:" + self.world_images.fingerprint()


def assert_same(a, b):
    assert torch.equal(a.embeddings, b.embeddings)  # bit for bit
    assert torch.equal(a.indices, b.indices) and a.image_ids == b.image_ids
    assert a.key == b.key


@pytest.mark.parametrize("shards", [1, 2, 3, 20])  # 20: more shards than the 5 chunks
def test_ray_image_embeddings_equal_single_process_bit_for_bit(cluster, vlm, folder, tmp_path, shards):
    probe = ImageFolder(folder)
    kw = dict(batch_size=2, progress=False)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable probe image\(s\), e.g. 13 \(b/4.png"):
        local = embed_images(vlm, probe, **kw)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable probe image\(s\), e.g. 13 \(b/4.png"):
        dist = embed_images(vlm, probe, engine="ray", shards=shards, chunk_size=4, cache_dir=cache, **kw)
    assert_same(dist, local)
    assert 13 not in dist.indices.tolist() and len(dist.indices) == 17
    # the merged file is the local cache file (a local call reads it), and the chunks are gone
    assert [p.suffix for p in cache.iterdir()] == [".pt"]

    def no_forward(images):
        raise AssertionError("the cache should have been used")

    class Spy:
        identity, device, preprocess, encode_texts = vlm.identity, vlm.device, vlm.preprocess, vlm.encode_texts
        encode_images = staticmethod(no_forward)

    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert_same(embed_images(Spy(), probe, cache_dir=cache, **kw), local)


def test_ray_embeddings_of_the_concept_world_are_its_exact_concepts(cluster):
    from neurocore.demo import ConceptWorld
    from neurocore.demo._www import ConceptWorldVLM

    world = ConceptWorld().sample(1, seed=0)
    vlm = ConceptWorldVLM(world)
    probe = WorldPIL(world)
    dist = embed_images(vlm, probe, engine="ray", shards=2, batch_size=4, chunk_size=8, progress=False)
    local = embed_images(vlm, probe, batch_size=4, progress=False)
    assert torch.equal(dist.embeddings, local.embeddings)
    m = world.concept_matrix()  # five concepts per image: the unit embedding is the indicator over √5
    assert torch.allclose(dist.embeddings[:, : m.shape[1]], m / 5 ** 0.5, atol=1e-6)
    texts = list(world.world.concepts)
    t = embed_texts(vlm, texts, template="A photo of a {}", engine="ray", shards=3, progress=False)
    assert torch.equal(t, embed_texts(vlm, texts, template="A photo of a {}", progress=False))
    assert torch.equal(t[:, : len(texts)], torch.eye(len(texts)))  # each text is its own concept


@pytest.mark.parametrize("shards", [1, 2, 3, 9])  # 10 texts in batches of 3: 4 batches
def test_ray_text_embeddings_equal_single_process_bit_for_bit(cluster, vlm, tmp_path, shards):
    texts = [f"concept number {i}" for i in range(10)]
    local = embed_texts(vlm, texts, template="a photo of a {}", progress=False)
    dist = embed_texts(vlm, texts, template="a photo of a {}", engine="ray", shards=shards,
                       cache_dir=tmp_path, progress=False)
    assert torch.equal(dist, local)
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"]  # the merged cache file only
    assert torch.equal(embed_texts(vlm, texts, template="a photo of a {}", cache_dir=tmp_path, progress=False), local)


def test_interrupted_ray_encoding_resumes_without_encoding_finished_chunks(cluster, vlm, tmp_path):
    kw = dict(batch_size=2, chunk_size=4, progress=False, cache_dir=tmp_path / "cache")
    # 22 images, chunks of 4: one task over all 6 chunks dies at index 9, after chunks 0 and 1 are on disk
    with pytest.raises(Exception, match="worker died"):
        embed_images(vlm, LoggedProbe(22, tmp_path / "log1", fail_at=9), engine="ray", shards=1, **kw)
    (folder,) = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["chunk-000000.pt", "chunk-000001.pt"]
    probe = LoggedProbe(22, tmp_path / "log2")
    resumed = embed_images(vlm, probe, engine="ray", shards=3, **kw)  # runs [0, 1] [2, 3] [4, 5]
    assert probe.reads() == list(range(8, 22))  # the finished run is not launched, nor chunks 0, 1 read
    local = embed_images(vlm, LoggedProbe(22, tmp_path / "log3"), batch_size=2, progress=False)
    assert_same(resumed, local)


def test_ray_without_fingerprint_or_cache_dir_and_uneven_chunks(cluster, vlm, folder):
    import PIL.Image

    g = torch.Generator().manual_seed(5)
    probe = [PIL.Image.fromarray((torch.rand(8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(11)]
    local = embed_images(vlm, probe, batch_size=3, progress=False)
    assert_same(embed_images(vlm, probe, batch_size=3, chunk_size=6, engine="ray", shards=2, progress=False), local)
    # chunks of 4 with batches of 3: runs start off the batch edges; the rows are the same images
    uneven = embed_images(vlm, probe, batch_size=3, chunk_size=4, engine="ray", shards=3, progress=False)
    assert torch.equal(uneven.indices, local.indices) and uneven.image_ids == local.image_ids
    torch.testing.assert_close(uneven.embeddings, local.embeddings, rtol=1e-5, atol=1e-6)


def test_ray_record_and_embed_equals_local(cluster, vlm, folder, tmp_path):
    import torchvision.transforms as T
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    probe = ImageFolder(folder)
    kw = dict(transform=T.ToTensor(), batch_size=2, chunk_size=4, top_k=3, progress=False)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        store, images = record_and_embed(
            lambda p: record(model, ["1"], p, engine="ray", shards=2, cache_dir=tmp_path, **kw),
            vlm, probe, batch_size=2, cache_dir=tmp_path, engine="ray", shards=2, progress=False,
        )
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        local_store, local_images = record_and_embed(lambda p: record(model, ["1"], p, **kw), vlm, probe,
                                                     batch_size=2, progress=False)
    assert torch.equal(store["1"].summaries, local_store["1"].summaries)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        alone = embed_images(vlm, probe, batch_size=2, progress=False)
    # the shards, the decode-once path (batches of the readable images of each block of 2 indices) and
    # embed_images alone: one result, bit for bit, with the unreadable image 13 skipped
    assert_same(images, alone)
    assert_same(local_images, alone)
    assert torch.equal(images.indices, store.dataset_indices)


def test_ray_embedding_errors(cluster, vlm, tmp_path):
    import PIL.Image
    import torchvision.transforms as T

    from neurocore.demo import ConceptWorld

    probe = [PIL.Image.new("RGB", (8, 8), "red")] * 3
    with pytest.raises(NeurocoreError, match="engine must be 'local' or 'ray'; got 'dask'"):
        embed_images(vlm, probe, engine="dask", progress=False)
    with pytest.raises(NeurocoreError, match="apply to engine='ray' only"):
        embed_texts(vlm, ["a"], shards=2, progress=False)
    with pytest.raises(NeurocoreError, match="shards must be an integer >= 1"):
        embed_images(vlm, probe, engine="ray", shards=0, progress=False)
    with pytest.raises(NeurocoreError, match="shards must be an integer >= 1"):
        embed_texts(vlm, ["a"], engine="ray", shards=-1, progress=False)
    with pytest.raises(NeurocoreError, match="chunk_size must be an integer >= 1"):
        embed_images(vlm, probe, engine="ray", chunk_size=0, progress=False)
    with pytest.raises(NeurocoreError, match="needs cache_dir"):
        embed_images(vlm, probe, engine="ray", address="10.0.0.1:6379", progress=False)
    with pytest.raises(NeurocoreError, match="needs cache_dir"):
        embed_texts(vlm, ["a"], engine="ray", address="10.0.0.1:6379", progress=False)

    class Opaque:
        identity, device, encode_images, encode_texts = vlm.identity, vlm.device, vlm.encode_images, vlm.encode_texts
        preprocess = T.Compose([T.Lambda(lambda im: im), vlm.preprocess])

    with pytest.warns(UserWarning, match="not caching"), \
            pytest.raises(NeurocoreError, match=r"cannot be keyed by this preprocessing.*Lambda\(\)"):
        embed_images(Opaque(), WorldPIL(ConceptWorld().sample(1, seed=0)), engine="ray", cache_dir=tmp_path,
                     progress=False)


def test_ray_missing_says_how_to_install(monkeypatch, vlm):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(NeurocoreError, match=r"pip install neurocore\[ray\]"):
        embed_texts(vlm, ["a"], engine="ray", progress=False)


def test_run_methods_with_a_vlm_on_ray_equals_local(cluster, tmp_path, monkeypatch):
    import torchvision.transforms as T

    import neurocore.vlm._embed as embed

    from neurocore._pipeline import run_methods
    from neurocore.demo import ConceptWorld, PlantedConceptNet
    from neurocore.demo._www import ConceptWorldVLM
    from neurocore.methods import ClipDissect

    world = ConceptWorld().sample(2, seed=0)
    probe, vlm = WorldPIL(world), ConceptWorldVLM(world)
    kw = dict(vlm=vlm, concepts=list(world.world.concepts), transform=T.ToTensor(), batch_size=8, progress=False)
    methods = {"clip_dissect": ClipDissect(similarity="wpmi")}
    model = PlantedConceptNet(world.world)
    local = run_methods(model, "colours", probe, methods, **kw)
    engines, texts = [], embed.embed_texts

    def spy(*args, **kwargs):
        engines.append(kwargs.get("engine", "local"))
        return texts(*args, **kwargs)

    monkeypatch.setattr(embed, "embed_texts", spy)
    dist = run_methods(model, "colours", probe, methods, engine="ray", cache_dir=tmp_path, **kw)
    assert engines == ["ray"]  # the concept texts are encoded on shards too
    # both the recording and the image encoding ran on shards (their caches hold the merged results)
    assert any((tmp_path / "activations").iterdir()) and any(tmp_path.glob("image_embeddings-*.pt"))
    assert torch.equal(dist.concept_scores.scores, local.concept_scores.scores)
    assert torch.equal(dist.store["colours"].summaries, local.store["colours"].summaries)
    assert dist.explanations["clip_dissect"].labels == local.explanations["clip_dissect"].labels


def test_ray_chunk_without_a_readable_image(cluster, vlm, tmp_path):
    import PIL.Image

    g = torch.Generator().manual_seed(7)
    (tmp_path / "imgs").mkdir()
    for i in range(7):
        path = tmp_path / "imgs" / f"{i}.png"
        if i in (2, 3):  # chunk 1 of chunks of 2: nothing to encode there
            path.write_bytes(b"not an image")
        else:
            PIL.Image.fromarray((torch.rand(8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()).save(path)
    probe = ImageFolder(tmp_path / "imgs")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        local = embed_images(vlm, probe, batch_size=2, progress=False)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        dist = embed_images(vlm, probe, batch_size=2, chunk_size=2, engine="ray", shards=2, progress=False)
    assert_same(dist, local)
    assert dist.indices.tolist() == [0, 1, 4, 5, 6]


def test_cli_engine_ray_with_a_vlm_encodes_on_shards_and_matches_local(cluster, vlm, folder, tmp_path, monkeypatch, capsys):
    import pandas as pd
    from torch import nn

    import neurocore.scale._ray_embed as ray_embed
    from neurocore.cli import main

    calls = []
    original = ray_embed.embed_images_ray
    monkeypatch.setattr(ray_embed, "embed_images_ray", lambda *a, **k: calls.append(k["shards"]) or original(*a, **k))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].bias.fill_(3.0)  # ImageNet normalisation makes inputs negative: keep the ReLU open
    torch.save(model, tmp_path / "model.pt")
    (tmp_path / "concepts.txt").write_text("red\ngreen\nblue\nstripes\n")
    args = ["dissect", "--model", str(tmp_path / "model.pt"), "--layers", "0", "3", "--probe", str(folder),
            "--input-size", "8", "--no-progress", "--batch-size", "4", "--vlm", f"open_clip:{TINY}",
            "--concepts", str(tmp_path / "concepts.txt")]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert calls == []
    assert main(args + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--cache-dir", str(tmp_path / "c")]) == 0
    assert calls == [None]  # the images went through the Ray shards (one per CPU of the cluster)
    capsys.readouterr()
    a = pd.read_csv(tmp_path / "local" / "explanations.csv")
    b = pd.read_csv(tmp_path / "ray" / "explanations.csv")
    pd.testing.assert_frame_equal(a, b)
    assert any(p.name.startswith("image_embeddings-") for p in (tmp_path / "c").iterdir())


def test_ray_text_embeddings_use_the_driver_thread_count(cluster, tmp_path_factory):
    import json

    import open_clip

    from neurocore.vlm import OpenClip

    # wider than TINY (width 128): its text matmuls split their sums by the torch thread count
    config = {"embed_dim": 64,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 1}}
    path = tmp_path_factory.mktemp("open_clip_wide") / "neurocore-test-wide-ray.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        wide = OpenClip("neurocore-test-wide-ray", batch_size=3)
    texts = [f"concept number {i}" for i in range(10)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = embed_texts(wide, texts, progress=False)
        torch.set_num_threads(4)
        local = embed_texts(wide, texts, progress=False)
        assert not torch.equal(one, local)  # the thread count changes the last bits: the check below can fail
        assert torch.equal(embed_texts(wide, texts, engine="ray", shards=2, progress=False), local)
    finally:
        torch.set_num_threads(before)
