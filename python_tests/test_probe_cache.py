"""neurocore.probe: the on-disk cache of record() (keys, chunks, resumption) and ActivationStore.save/load."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.probe import ActivationStore, ImageFolder, record, weights_digest

pytestmark = pytest.mark.filterwarnings("ignore:.*neurons are dead:UserWarning")


class CountingCNN(nn.Module):
    def __init__(self, k=5):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(k, 3)
        self.calls = 0
        self.images = 0
        self.fail_at_call = None

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        if self.calls == self.fail_at_call:
            raise RuntimeError("model failed midway")
        h = self.act(self.conv(x))
        return self.fc(h.mean(dim=(2, 3)))

    def reset(self):
        self.calls = self.images = 0


class Probe(torch.utils.data.Dataset):
    """In-memory images with labels; a fingerprint when given one; can raise at one index once."""

    def __init__(self, x, fingerprint=None, interrupt_at=None, error=KeyboardInterrupt):
        self.x = x
        self._fp = fingerprint
        self.interrupt_at = interrupt_at
        self.error = error

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.interrupt_at:
            self.interrupt_at = None
            raise self.error("interrupted")
        return self.x[i], i % 4


class FingerprintedProbe(Probe):
    def fingerprint(self):
        return self._fp


class AddConst:
    def __init__(self, c):
        self.c = c

    def __call__(self, x):
        return x + self.c

    def __repr__(self):
        return f"AddConst({self.c})"


def images(n=30, seed=0):
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def assert_same_store(a: ActivationStore, b: ActivationStore):
    assert list(a.layers) == list(b.layers) and a.num_images == b.num_images
    for name in a.layers:
        torch.testing.assert_close(a[name].summaries, b[name].summaries)
        torch.testing.assert_close(a[name].top_values, b[name].top_values)
        assert torch.equal(a[name].top_indices, b[name].top_indices)
        assert a[name].summary == b[name].summary
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert torch.equal(a.labels, b.labels)
    assert a.image_ids == b.image_ids and torch.equal(a.dataset_indices, b.dataset_indices)
    assert a.skipped == b.skipped


KW = dict(batch_size=4, chunk_size=8, top_k=3, progress=False)


# ----------------------------------------------------------------------------------------------
# ActivationStore.save / load


def test_store_save_load_roundtrip(tmp_path):
    model = CountingCNN()
    store = record(model, ["act", "fc"], Probe(images(10)), **KW)
    store.save(tmp_path / "s")
    back = ActivationStore.load(tmp_path / "s")
    assert_same_store(store, back)
    assert back.key == json.loads(json.dumps(store.key))
    assert not list((tmp_path / "s").glob("*.tmp"))
    plain = ActivationStore.from_tensor(torch.rand(5, 2), "x", top_k=2)
    assert plain.labels is None
    assert_same_store(plain, ActivationStore.load(plain.save(tmp_path / "p")))
    with pytest.raises(NeurocoreError, match="holds no saved ActivationStore"):
        ActivationStore.load(tmp_path / "nothing")
    with pytest.raises(NeurocoreError, match=r"dataset_indices must be a Tensor\[5\]"):
        ActivationStore(plain.layers, 5, dataset_indices=torch.arange(4))


# ----------------------------------------------------------------------------------------------
# hits and keys


def test_cache_hit_runs_no_model_and_matches(tmp_path):
    model = CountingCNN()
    data = FingerprintedProbe(images(), "fp-1")
    fresh = record(model, ["act", "fc"], data, **KW)
    model.reset()
    first = record(model, ["act", "fc"], data, cache_dir=tmp_path, **KW)
    assert model.calls == 8  # 30 images in batches of 4
    model.reset()
    second = record(model, ["act", "fc"], data, cache_dir=tmp_path, **KW)
    assert model.calls == 0
    assert_same_store(first, fresh)
    assert_same_store(second, fresh)
    assert second.key == fresh.key
    folders = sorted((tmp_path / "activations").iterdir())
    assert len(folders) == 2  # one per layer
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["key"]["weights"] == weights_digest(model) and manifest["key"]["probe_fingerprint"] == "fp-1"
    assert len(list(folders[0].glob("chunk-*.pt"))) == 4  # ceil(30 / 8)
    assert not list(tmp_path.rglob("*.tmp"))
    # a layer cached alone is reused when recorded with a new one; only the new one needs the model
    model.reset()
    third = record(model, ["fc"], data, cache_dir=tmp_path, **KW)
    assert model.calls == 0
    assert_same_store(third, record(model, ["fc"], data, **KW))


def _change(component, model, data):
    """The arguments of a second call that differs from the base call in one key component."""
    kwargs = dict(layers=["act"], summary="mean", transform=AddConst(0.0), probe=data)
    if component == "weights":
        with torch.no_grad():
            model.conv.weight[0, 0, 0, 0] += 1.0
    elif component == "layer":
        kwargs["layers"] = ["conv"]
    elif component == "summary":
        kwargs["summary"] = "max"
    elif component == "transform":
        kwargs["transform"] = AddConst(0.5)
    elif component == "dataset order":
        kwargs["probe"] = FingerprintedProbe(data.x.flip(0), "fp-reversed")
    elif component == "dataset content, same length":
        kwargs["probe"] = FingerprintedProbe(data.x + 1, "fp-changed")
    return kwargs


@pytest.mark.parametrize(
    "component", ["weights", "layer", "summary", "transform", "dataset order", "dataset content, same length"]
)
def test_changed_key_component_recomputes(tmp_path, component):
    model = CountingCNN()
    data = FingerprintedProbe(images(12), "fp-1")
    base = record(model, ["act"], data, transform=AddConst(0.0), cache_dir=tmp_path, **KW)
    kwargs = _change(component, model, data)
    layers, changed_probe = kwargs.pop("layers"), kwargs.pop("probe")
    model.reset()
    changed = record(model, layers, changed_probe, cache_dir=tmp_path, **kwargs, **KW)
    assert model.calls == 3  # everything recomputed: 12 images in batches of 4
    assert_same_store(changed, record(model, layers, changed_probe, **kwargs, **KW))
    assert changed.key != base.key
    if component != "weights":  # the base entry is still there, untouched
        model.reset()
        again = record(model, ["act"], data, transform=AddConst(0.0), cache_dir=tmp_path, **KW)
        assert model.calls == 0
        assert_same_store(again, base)


def test_top_k_change_recomputes_selection_from_cached_summaries(tmp_path):
    model = CountingCNN()
    data = FingerprintedProbe(images(20), "fp")
    record(model, "act", data, cache_dir=tmp_path, **KW)
    model.reset()
    store = record(model, "act", data, cache_dir=tmp_path, **(KW | {"top_k": 7}))
    assert model.calls == 0 and store.key["top_k"] == 7
    values, indices = ops.topk(store["act"].summaries, 7)
    assert torch.equal(store["act"].top_indices, indices) and torch.equal(store["act"].top_values, values)


def test_weights_digest_covers_buffers_and_class():
    a = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    d = weights_digest(a)
    with torch.no_grad():
        a[1].running_mean += 1  # a buffer, not a parameter: it still changes the outputs
    assert weights_digest(a) != d

    class Other(nn.Sequential):
        pass

    b = Other(*a)
    assert weights_digest(b) != weights_digest(a)
    assert weights_digest(a.half()) != weights_digest(a.float())


# ----------------------------------------------------------------------------------------------
# probes without a fingerprint: rows verified by digests


def test_fingerprintless_probe_rows_verified_by_digest(tmp_path):
    model = CountingCNN()
    x = images(20)
    record(model, "act", Probe(x), cache_dir=tmp_path, **KW)
    model.reset()
    hit = record(model, "act", Probe(x), cache_dir=tmp_path, **KW)
    assert model.calls == 0
    # one image changed: only that image runs again
    y = x.clone()
    y[13] += 1
    model.reset()
    one = record(model, "act", Probe(y), cache_dir=tmp_path, **KW)
    assert model.images == 1
    assert_same_store(one, record(model, "act", Probe(y), **KW))
    assert not torch.equal(one["act"].summaries[13], hit["act"].summaries[13])
    # order changed (a rotation: no image keeps its index): everything runs again
    z = y.roll(1, dims=0)
    model.reset()
    rolled = record(model, "act", Probe(z), cache_dir=tmp_path, **KW)
    assert model.images == 20
    assert_same_store(rolled, record(model, "act", Probe(z), **KW))


# ----------------------------------------------------------------------------------------------
# interruption and resumption


@pytest.mark.parametrize("fingerprint", ["fp", None])
@pytest.mark.parametrize("where", ["dataset", "model"])
def test_interrupted_run_resumes_from_written_chunks(tmp_path, fingerprint, where):
    model = CountingCNN()
    x = images(30)
    cls = FingerprintedProbe if fingerprint else Probe
    expected = record(model, ["act", "fc"], cls(x, fingerprint), **KW)
    model.reset()
    if where == "dataset":
        data = cls(x, fingerprint, interrupt_at=23)  # in batch 20..23 of chunk 16..23
        with pytest.raises(KeyboardInterrupt):
            record(model, ["act", "fc"], data, cache_dir=tmp_path, **KW)
        assert model.calls == 5  # batches 0..19 ran
    else:
        model.fail_at_call = 6  # batch 20..23
        with pytest.raises(RuntimeError, match="model failed midway"):
            record(model, ["act", "fc"], cls(x, fingerprint), cache_dir=tmp_path, **KW)
        model.fail_at_call = None
    folders = sorted((tmp_path / "activations").iterdir())
    assert [len(list(f.glob("chunk-*.pt"))) for f in folders] == [2, 2]  # chunks 0..7 and 8..15
    assert not list(tmp_path.rglob("*.tmp"))
    model.reset()
    resumed = record(model, ["act", "fc"], cls(x, fingerprint), cache_dir=tmp_path, **KW)
    assert model.images == 14  # images 16..29 only
    assert_same_store(resumed, expected)


def test_chunk_size_change_and_damaged_chunk_recompute(tmp_path):
    model = CountingCNN()
    data = FingerprintedProbe(images(24), "fp")
    expected = record(model, "act", data, **KW)
    record(model, "act", data, cache_dir=tmp_path, **KW)
    model.reset()
    other = record(model, "act", data, cache_dir=tmp_path, **(KW | {"chunk_size": 5}))
    assert model.images == 24
    assert_same_store(other, expected)
    record(model, "act", data, cache_dir=tmp_path, **KW)  # back to chunks of 8
    folder = next((tmp_path / "activations").iterdir())
    (folder / "chunk-000001.pt").write_bytes(b"not a torch file")
    model.reset()
    with pytest.warns(UserWarning, match="chunk-000001.pt could not be read"):
        repaired = record(model, "act", data, cache_dir=tmp_path, **KW)
    assert model.images == 8  # the damaged chunk only: the later one is reused
    assert_same_store(repaired, expected)
    model.reset()
    record(model, "act", data, cache_dir=tmp_path, **KW)
    assert model.calls == 0


def test_cache_keeps_unreadable_images_skipped(tmp_path):
    import PIL.Image
    import torchvision.transforms as T

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            PIL.Image.new("RGB", (6, 6), (40 * i, 20, 200)).save(root / c / f"{i}.jpg")
    (root / "b" / "2.jpg").write_bytes(b"\xff\xd8 broken")
    folder = ImageFolder(root)
    model = CountingCNN()
    kw = dict(transform=T.ToTensor(), cache_dir=tmp_path / "cache", batch_size=3, chunk_size=4, progress=False)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        first = record(model, "act", folder, **kw)
    model.reset()
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        second = record(model, "act", folder, **kw)
    assert model.calls == 0
    assert_same_store(first, second)
    assert second.num_images == 7 and [i for i, _ in second.skipped] == [6]
    # a file added to the folder changes its fingerprint: recomputed, not reused
    PIL.Image.new("RGB", (6, 6)).save(root / "a" / "9.jpg")
    model.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = record(model, "act", ImageFolder(root), **kw)
    assert model.images == 8 and third.num_images == 8
