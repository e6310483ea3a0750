"""neurocore.probe: the on-disk cache of record() (keys, chunks, resumption) and ActivationStore.save/load."""

from __future__ import annotations

import contextlib
import json
import warnings

import pytest
import torch
from torch import nn

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.probe import ActivationStore, ImageFolder, record, weights_digest
from neurocore.probe._cache import structure_digest, undescribed_transforms

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
CHECKED = 2  # images a reused cache costs: its first and last reused rows, recomputed and compared


@contextlib.contextmanager
def no_content_mismatch():
    """Fails when the content check of a reused cache finds a mismatch (the key should have seen it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [str(w.message) for w in caught if "does not match the model's current outputs" in str(w.message)]


def assert_only_content_check(model):
    """The model ran once, on the two rows of the content check: everything else came from the cache."""
    assert (model.calls, model.images) == (1, CHECKED)


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
    assert_only_content_check(model)
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
    assert_only_content_check(model)
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
        assert_only_content_check(model)
        assert_same_store(again, base)


def test_top_k_change_recomputes_selection_from_cached_summaries(tmp_path):
    model = CountingCNN()
    data = FingerprintedProbe(images(20), "fp")
    record(model, "act", data, cache_dir=tmp_path, **KW)
    model.reset()
    store = record(model, "act", data, cache_dir=tmp_path, **(KW | {"top_k": 7}))
    assert_only_content_check(model)
    assert store.key["top_k"] == 7
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
    assert_only_content_check(model)
    # one image changed: only that image runs again
    y = x.clone()
    y[13] += 1
    model.reset()
    one = record(model, "act", Probe(y), cache_dir=tmp_path, **KW)
    assert model.images == CHECKED + 1
    assert_same_store(one, record(model, "act", Probe(y), **KW))
    assert not torch.equal(one["act"].summaries[13], hit["act"].summaries[13])
    # order changed (a rotation: no image keeps its index): everything runs again
    z = y.roll(1, dims=0)
    model.reset()
    rolled = record(model, "act", Probe(z), cache_dir=tmp_path, **KW)
    assert model.images == 20  # no cached row's digest matches: nothing to check, all recomputed
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
    assert model.images == CHECKED + 14  # images 16..29 only
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
    assert model.images == CHECKED + 8  # the damaged chunk only: the later one is reused
    assert_same_store(repaired, expected)
    model.reset()
    record(model, "act", data, cache_dir=tmp_path, **KW)
    assert_only_content_check(model)


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
    assert_only_content_check(model)
    assert_same_store(first, second)
    assert second.num_images == 7 and [i for i, _ in second.skipped] == [6]
    # a file added to the folder changes its fingerprint: recomputed, not reused
    PIL.Image.new("RGB", (6, 6)).save(root / "a" / "9.jpg")
    model.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = record(model, "act", ImageFolder(root), **kw)
    assert model.images == 8 and third.num_images == 8


# ----------------------------------------------------------------------------------------------
# the key sees the model's structure, code and every tensor (issue 8, fault 6)


class Net(nn.Module):
    """Parameterised and parameter-free modules, a non-persistent buffer; counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2, stride=2)
        self.leaky = nn.LeakyReLU(0.01)
        self.out = nn.Identity()
        self.register_buffer("shift", torch.zeros(4, 1, 1), persistent=False)
        self.calls = self.images = 0

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        x = self.pool(self.act(self.bn(self.conv(x))))
        return self.out(self.leaky(x - 0.5) + self.shift)

    def reset(self):
        self.calls = self.images = 0


def _load_other_weights(m):
    torch.manual_seed(1)
    m.load_state_dict(Net().state_dict())  # in place: the same module objects, other values


def _set(attr, value):
    def change(m):
        obj, _, name = attr.rpartition(".")
        setattr(m.get_submodule(obj) if obj else m, name, value)

    return change


def _add_(attr, delta):
    def change(m):
        with torch.no_grad():
            getattr(m.get_submodule(attr.rpartition(".")[0]), attr.rpartition(".")[2]).add_(delta)

    return change


MODEL_CHANGES = {
    "load_state_dict of other weights": _load_other_weights,
    "BatchNorm running_var": _add_("bn.running_var", 1.0),
    "non-persistent buffer": lambda m: m.shift.add_(0.25),
    "model.double()": lambda m: m.double(),
    "BatchNorm eps": _set("bn.eps", 0.5),
    "conv stride": _set("conv.stride", (2, 2)),
    "max-pool stride (parameter-free)": _set("pool.stride", 1),
    "LeakyReLU slope (parameter-free)": _set("leaky.negative_slope", 0.3),
    "ReLU inplace (parameter-free)": _set("act.inplace", True),
    "ReLU swapped for GELU": _set("act", nn.GELU()),
}


@pytest.mark.parametrize("change", list(MODEL_CHANGES))
def test_each_model_change_changes_the_key(tmp_path, change):
    torch.manual_seed(0)
    model = Net()
    data = FingerprintedProbe(images(12), "fp")
    base = record(model, "out", data, cache_dir=tmp_path, **KW)
    MODEL_CHANGES[change](model)
    model.reset()
    with no_content_mismatch():  # the key must see it, not the content check
        changed = record(model, "out", data, cache_dir=tmp_path, **KW)
    assert (model.calls, model.images) == (3, 12)  # all recomputed, no content check (nothing cached)
    assert changed.key != base.key
    assert_same_store(changed, record(model, "out", data, **KW))
    if change not in ("ReLU inplace (parameter-free)", "model.double()"):  # these keep the outputs (to rounding)
        assert not torch.allclose(changed["out"].summaries, base["out"].summaries)


def test_unchanged_model_reuses_the_cache(tmp_path):
    import copy

    torch.manual_seed(0)
    model = Net()
    data = FingerprintedProbe(images(12), "fp")
    first = record(model, ["conv", "out"], data, cache_dir=tmp_path, **KW)
    for same in (model, copy.deepcopy(model), _rebuilt(model)):
        same.reset()
        with no_content_mismatch():
            again = record(same, ["conv", "out"], data, cache_dir=tmp_path, **KW)
        assert_only_content_check(same)
        assert_same_store(again, first)


def _rebuilt(model):
    other = Net()
    other.load_state_dict(model.state_dict())
    return other


def _class_with_forward(body: str):
    # exec: a class of the same name and module whose forward was edited (as notebook autoreload gives)
    ns = {"nn": nn, "__name__": __name__}
    exec(f"class Scaler(nn.Module):\n    def forward(self, x):\n        return {body}\n", ns)
    return ns["Scaler"]


def test_edited_forward_code_changes_the_key(tmp_path):
    data = FingerprintedProbe(images(8), "fp")
    a = nn.Sequential(nn.Conv2d(3, 2, 1), _class_with_forward("x * 2.0")())
    b = nn.Sequential(nn.Conv2d(3, 2, 1), _class_with_forward("x * 3.0")())
    b.load_state_dict(a.state_dict())
    assert repr(a) == repr(b) and weights_digest(a) == weights_digest(b)
    assert structure_digest(a) != structure_digest(b)
    first = record(a, "1", data, cache_dir=tmp_path, **KW)
    with no_content_mismatch():
        second = record(b, "1", data, cache_dir=tmp_path, **KW)
    torch.testing.assert_close(second["1"].summaries, 1.5 * first["1"].summaries)


def test_structure_digest_sees_hooks_and_class_attributes():
    m = nn.Sequential(nn.Linear(3, 2))
    d = structure_digest(m)
    handle = m[0].register_forward_hook(lambda mod, i, o: o * 2)
    try:
        assert structure_digest(m) != d
    finally:
        handle.remove()
    assert structure_digest(m) == d

    class Scaled(nn.Linear):
        factor = 2.0

    class Scaled3(Scaled):
        pass

    Scaled3.__qualname__ = Scaled.__qualname__
    Scaled3.factor = 3.0
    assert structure_digest(Scaled(3, 2)) != structure_digest(Scaled3(3, 2))


def test_weights_digest_covers_non_persistent_buffers():
    m = Net()
    d = weights_digest(m)
    m.shift += 1
    assert weights_digest(m) != d and "shift" not in m.state_dict()


# ----------------------------------------------------------------------------------------------
# transforms whose repr does not describe them are not cached; transform_key names them


def _double(x):
    return 2 * x


class NoRepr:
    def __call__(self, x):
        return x + 1


def _undescribed_cases():
    import functools

    from torchvision import transforms as T
    from torchvision.transforms import v2

    return {
        "T.Lambda in Compose": (T.Compose([AddConst(0.0), T.Lambda(lambda x: 2 * x)]), r"transform\.transforms\[1\]: Lambda\(\)"),
        "v2.Lambda": (v2.Lambda(lambda x: 2 * x), r"transform: Lambda\(<lambda>"),
        "nested Compose": (T.Compose([T.Compose([T.Lambda(_double)])]), r"transform\.transforms\[0\]\.transforms\[0\]"),
        "plain function": (_double, r"transform: <function _double>"),
        "lambda": (lambda x: 2 * x, r"transform: <function .*<lambda>>"),
        "functools.partial": (functools.partial(torch.mul, other=2.0), r"transform: functools\.partial"),
        "object with a memory address": (NoRepr(), r"transform: <test_probe_cache\.NoRepr object at 0x"),
    }


@pytest.mark.parametrize("case", ["T.Lambda in Compose", "v2.Lambda", "nested Compose", "plain function", "lambda",
                                  "functools.partial", "object with a memory address"])
def test_undescribed_transform_is_not_cached(tmp_path, case):
    transform, where = _undescribed_cases()[case]
    model = CountingCNN()
    data = FingerprintedProbe(images(8), "fp")
    with pytest.warns(UserWarning, match=where + r".*does not describe what it does.*transform_key="):
        got = record(model, "act", data, transform=transform, cache_dir=tmp_path, **KW)
    assert not (tmp_path / "activations").exists()
    assert_same_store(got, record(model, "act", data, transform=transform, **KW))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record(model, "act", data, transform=transform, **KW)
    assert not [w for w in caught if "caching" in str(w.message)]  # without cache_dir nothing is said


def test_two_lambdas_need_transform_keys(tmp_path):
    from torchvision import transforms as T

    model = CountingCNN()
    data = FingerprintedProbe(images(12), "fp")
    t1 = T.Compose([T.Lambda(lambda x: x * 1.0)])
    t2 = T.Compose([T.Lambda(lambda x: x * 2.0 - 1.0)])
    assert repr(t1) == repr(t2)
    for t in (t1, t2):
        with pytest.warns(UserWarning, match="not caching"):
            record(model, "act", data, transform=t, cache_dir=tmp_path, **KW)
    one = record(model, "act", data, transform=t1, transform_key="x", cache_dir=tmp_path, **KW)
    model.reset()
    two = record(model, "act", data, transform=t2, transform_key="2x-1", cache_dir=tmp_path, **KW)
    assert model.images == 12 and two.key["transform_key"] == "2x-1"
    assert_same_store(two, record(model, "act", data, transform=t2, **KW))
    model.reset()
    again = record(model, "act", data, transform=t1, transform_key="x", cache_dir=tmp_path, **KW)
    assert_only_content_check(model)
    assert_same_store(again, one)
    with pytest.raises(NeurocoreError, match="transform_key must be a non-empty string"):
        record(model, "act", data, transform=t1, transform_key="", cache_dir=tmp_path, **KW)


def test_probe_own_lambda_transform_is_not_cached(tmp_path):
    import PIL.Image
    from torchvision import transforms as T

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(4):
        PIL.Image.new("RGB", (6, 6), (40 * i, 20, 200)).save(root / f"{i}.png")
    folder = ImageFolder(root, transform=T.Lambda(lambda im: im.rotate(90)))
    with pytest.warns(UserWarning, match=r"probe\.transform: Lambda\(\)"):
        record(CountingCNN(), "act", folder, transform=T.ToTensor(), cache_dir=tmp_path / "c", **KW)
    assert not (tmp_path / "c").exists()
    record(CountingCNN(), "act", folder, transform=T.ToTensor(), transform_key="rot90", cache_dir=tmp_path / "c", **KW)
    assert (tmp_path / "c" / "activations").is_dir()


def test_undescribed_transforms_walks_compose_and_modules():
    from torchvision import transforms as T

    ok = T.Compose([T.Resize(8), T.ToTensor(), T.Normalize((0.5,), (0.2,)), AddConst(1.0)])
    assert undescribed_transforms(ok) == [] and undescribed_transforms(None) == []
    seq = nn.Sequential(nn.Identity(), T.RandomApply([T.Lambda(_double)]))
    assert undescribed_transforms(seq, "t") == ["t.1.transforms[0]: Lambda()"]


# ----------------------------------------------------------------------------------------------
# the content check of a reused cache


class Gain(nn.Module):
    """A plain attribute read by forward: no key can see it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.out = nn.Identity()
        self.gain = 1.0
        self.calls = self.images = 0

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        return self.out(self.gain * self.conv(x))

    def reset(self):
        self.calls = self.images = 0


@pytest.mark.parametrize("fingerprint", ["fp", None])
def test_content_check_catches_a_plain_attribute(tmp_path, fingerprint):
    torch.manual_seed(0)
    model = Gain()
    cls = FingerprintedProbe if fingerprint else Probe
    data = cls(images(20), fingerprint)
    base = record(model, ["conv", "out"], data, cache_dir=tmp_path, **KW)
    model.gain = 3.0
    model.reset()
    with pytest.warns(UserWarning, match=r"out-mean-.*does not match the model's current outputs; recomputing") as rec:
        got = record(model, ["conv", "out"], data, cache_dir=tmp_path, **KW)
    assert len([w for w in rec if "does not match" in str(w.message)]) == 1
    assert "conv-mean" not in str(rec[0].message)  # the unaffected layer keeps its cache
    assert model.images == CHECKED + 20  # the check, then one pass over the probe with "out" alone
    assert_same_store(got, record(model, ["conv", "out"], data, **KW))
    torch.testing.assert_close(got["out"].summaries, 3 * base["out"].summaries)
    # the chunks were overwritten: the next run reuses them
    model.reset()
    with no_content_mismatch():
        again = record(model, ["conv", "out"], data, cache_dir=tmp_path, **KW)
    assert_only_content_check(model)
    assert_same_store(again, got)


def test_content_check_tolerates_batch_composition(tmp_path):
    # the cached rows were computed in batches of 4, the check runs 2 images: same values to rounding
    model = CountingCNN(k=64)
    data = FingerprintedProbe(images(40, seed=3) * 100, "fp")
    record(model, ["conv", "fc"], data, cache_dir=tmp_path, **(KW | {"batch_size": 16}))
    model.reset()
    with no_content_mismatch():
        record(model, ["conv", "fc"], data, cache_dir=tmp_path, **(KW | {"batch_size": 16}))
    assert_only_content_check(model)
