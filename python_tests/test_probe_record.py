"""neurocore.probe: layer names, summaries, hooks, the streaming recorder, record() and spatial_maps()."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from neurocore import ops
from neurocore._errors import NeurocoreError
from neurocore.probe import (
    ActivationRecorder,
    ImageFolder,
    record,
    resolve_layers,
    spatial_maps,
    summarise,
)

# Random small models have dead neurons; the warning is tested on its own below.
pytestmark = pytest.mark.filterwarnings("ignore:.*neurons are dead:UserWarning")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class TinyCNN(nn.Module):
    def __init__(self, k=6, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(k, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.act(self.conv(x))
        return self.fc(self.pool(h).flatten(1))


class TokenNet(nn.Module):
    """Patches -> [B, T, C] tokens with a CLS token first, batch-first like torchvision's and timm's ViTs."""

    def __init__(self, dim=5):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.block = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)
        t = self.block(t)
        return self.head(t[:, 0])


def probe(n=13, size=8, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    return [(x[i], i % 3) for i in range(n)] if labels else [x[i] for i in range(n)]


def stack(p):
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in p])


def hooks_left(model):
    return sum(len(m._forward_hooks) for m in model.modules())


# ----------------------------------------------------------------------------------------------
# layer names


def test_resolve_layers_real_architectures():
    import timm
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    assert list(resolve_layers(resnet, ["layer4", "fc", "layer4.1.conv2"])) == ["layer4", "fc", "layer4.1.conv2"]
    assert resolve_layers(resnet, "layer4")["layer4"] is resnet.layer4
    with torch.device("meta"):  # names only: no memory for VGG's 138M weights
        vgg = torchvision.models.vgg16()
        vit = torchvision.models.vit_b_16()
    assert isinstance(resolve_layers(vgg, "features.30")["features.30"], nn.MaxPool2d)
    assert isinstance(resolve_layers(vgg, "classifier")["classifier"], nn.Sequential)
    assert isinstance(resolve_layers(vit, "encoder.layers.encoder_layer_11.mlp.1")["encoder.layers.encoder_layer_11.mlp.1"], nn.GELU)
    tvit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=16, embed_dim=8, depth=12, num_heads=2)
    assert isinstance(resolve_layers(tvit, "blocks.11.mlp.act")["blocks.11.mlp.act"], nn.GELU)
    # repeated names are kept once, in order
    assert list(resolve_layers(resnet, ["fc", "layer4", "fc"])) == ["fc", "layer4"]


def test_resolve_layers_errors():
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    with pytest.raises(NeurocoreError, match=r"layer 'layer5' not found in ResNet; close matches: layer4"):
        resolve_layers(resnet, ["layer4", "layer5"])
    # a long list is cut to what lies under the longest existing prefix
    with pytest.raises(NeurocoreError, match=r"under 'layer4': layer4\.0, layer4\.1\. List them all") as info:
        resolve_layers(resnet, "layer4.7")
    assert "layer1.0.conv1" not in str(info.value)
    with pytest.raises(NeurocoreError, match=r"at the top level: conv1, bn1, relu, maxpool, layer1"):
        resolve_layers(resnet, "nothing_like_it")
    small = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(NeurocoreError, match=r"Valid names \(2\): 0, 1"):
        resolve_layers(small, "2")
    with pytest.raises(NeurocoreError, match="layers is empty"):
        resolve_layers(small, [])
    with pytest.raises(NeurocoreError, match="whole model"):
        resolve_layers(small, "")
    with pytest.raises(NeurocoreError, match="must be strings"):
        resolve_layers(small, [0])
    with pytest.raises(NeurocoreError, match="must be a torch.nn.Module"):
        resolve_layers(lambda x: x, "0")


# ----------------------------------------------------------------------------------------------
# summaries


def test_summarise_against_direct_computation():
    x = torch.randn(3, 4, 5, 6)
    torch.testing.assert_close(summarise(x, "mean"), torch.stack([x[b, c].mean() for b in range(3) for c in range(4)]).reshape(3, 4))
    torch.testing.assert_close(summarise(x, "max"), torch.stack([x[b, c].max() for b in range(3) for c in range(4)]).reshape(3, 4))
    t = torch.randn(3, 7, 4)  # [B, T, C]
    assert torch.equal(summarise(t, "first"), t[:, 0, :])
    torch.testing.assert_close(summarise(t, "mean"), t.sum(1) / 7)
    assert torch.equal(summarise(t, "max"), t.max(1).values)
    f = torch.randn(3, 4)
    for s in ("mean", "max", "first"):
        assert torch.equal(summarise(f, s), f)
    # float16 maps are reduced in float32
    assert summarise(x.half(), "mean").dtype == torch.float32


def test_summarise_errors():
    with pytest.raises(NeurocoreError, match=r"summary 'first' does not apply to layer 'conv'.*4-D.*\('mean', 'max'\)"):
        summarise(torch.randn(2, 3, 4, 4), "first", "conv")
    with pytest.raises(NeurocoreError, match=r"5-D tensor of shape \(1, 2, 3, 4, 5\)"):
        summarise(torch.randn(1, 2, 3, 4, 5), "mean")
    with pytest.raises(NeurocoreError, match="summary must be one of"):
        summarise(torch.randn(2, 3), "median")


# ----------------------------------------------------------------------------------------------
# the streaming recorder


@pytest.mark.parametrize("top_k", [1, 5, 40])
def test_recorder_streamed_equals_one_shot(top_k):
    g = torch.Generator().manual_seed(1)
    # integer values: many ties, which must go to the lower row as in ops.topk
    maps = [torch.randint(0, 4, (b, 6, 3, 3), generator=g).float() for b in (4, 1, 7, 5, 2)]
    rec = ActivationRecorder(["conv"], summary="max", top_k=top_k)
    for m in maps:
        rec.update({"conv": m})
    store = rec.compute()
    full = torch.cat([m.amax(dim=(2, 3)) for m in maps])
    values, indices = ops.topk(full, top_k)
    assert torch.equal(store["conv"].summaries, full)
    assert torch.equal(store["conv"].top_values, values)
    assert torch.equal(store["conv"].top_indices, indices)
    assert store.num_images == 19 and store.image_ids[:3] == ("0", "1", "2")
    assert torch.equal(store.dataset_indices, torch.arange(19))
    rec.reset()
    assert rec.num_images == 0


def test_recorder_errors():
    rec = ActivationRecorder(["a", "b"], summary={"a": "mean", "b": "first"}, top_k=3)
    with pytest.raises(NeurocoreError, match=r"missing: \['b'\]"):
        rec.update({"a": torch.rand(2, 3)})
    with pytest.raises(NeurocoreError, match="disagree on the batch size"):
        rec.update({"a": torch.rand(2, 3), "b": torch.rand(3, 4, 3)})
    rec.update({"a": torch.rand(2, 3), "b": torch.rand(2, 4, 3)}, labels=torch.tensor([0, 1]))
    with pytest.raises(NeurocoreError, match="layer 'a' has 5 neurons in batch 1 but 3 before"):
        rec.update({"a": torch.rand(2, 5), "b": torch.rand(2, 4, 3)}, labels=torch.tensor([0, 1]))
    bad = torch.rand(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(NeurocoreError, match=r"layer 'a' gave NaN activations in batch 1 \(rows 2\.\.3\).*row 1 of the batch, neuron 2"):
        rec.update({"a": bad, "b": torch.rand(2, 4, 3)}, labels=torch.tensor([0, 1]))
    with pytest.raises(NeurocoreError, match="labels were given for some batches"):
        rec.update({"a": torch.rand(2, 3), "b": torch.rand(2, 4, 3)})
    with pytest.raises(NeurocoreError, match="summary 'first' does not apply to layer 'b'"):
        rec.update({"a": torch.rand(2, 3), "b": torch.rand(2, 3, 4, 4)}, labels=torch.tensor([0, 1]))
    with pytest.raises(NeurocoreError, match="top_k must be an integer >= 1"):
        ActivationRecorder(["a"], top_k=0)
    with pytest.raises(NeurocoreError, match=r"missing: \['b'\], not recorded: \['c'\]"):
        ActivationRecorder(["a", "b"], summary={"a": "mean", "c": "max"})
    with pytest.raises(NeurocoreError, match="no images were recorded"):
        ActivationRecorder(["a"]).compute()


# ----------------------------------------------------------------------------------------------
# record()


def test_record_cnn_matches_direct_computation():
    torch.manual_seed(0)
    model = TinyCNN()
    data = probe(13)
    x = stack(data)
    with torch.no_grad():
        conv = model.act(model.conv(x))
        logits = model(x)
    store = record(model, ["act", "fc"], data, summary="mean", top_k=4, batch_size=5, progress=False)
    torch.testing.assert_close(store["act"].summaries, conv.mean(dim=(2, 3)))
    torch.testing.assert_close(store["fc"].summaries, logits)
    values, indices = ops.topk(store["act"].summaries, 4)
    assert torch.equal(store["act"].top_indices, indices) and torch.equal(store["act"].top_values, values)
    assert store.labels.tolist() == [i % 3 for i in range(13)]
    assert store.image_ids == tuple(str(i) for i in range(13))
    assert store.key["layers"] == {"act": "mean", "fc": "mean"} and store.key["top_k"] == 4
    assert len(store.key["weights"]) == 40
    # summaries are plain tensors (not inference tensors), usable with autograd downstream
    w = torch.ones(6, requires_grad=True)
    (store["act"].summaries @ w).sum().backward()
    assert w.grad is not None
    # max summary
    store_max = record(model, "act", data, summary="max", top_k=2, progress=False)
    torch.testing.assert_close(store_max["act"].summaries, conv.amax(dim=(2, 3)))


def test_record_token_model_summaries():
    torch.manual_seed(0)
    model = TokenNet()
    data = probe(9, size=8, labels=False)
    x = stack(data)
    with torch.no_grad():
        t = model.embed(x).flatten(2).transpose(1, 2)
        tokens = model.block(torch.cat([model.cls.expand(9, -1, -1), t], dim=1))  # [B, T, C]
    for summary, expected in (("first", tokens[:, 0]), ("mean", tokens.mean(1)), ("max", tokens.amax(1))):
        store = record(model, "block", data, summary=summary, top_k=3, batch_size=4, progress=False)
        torch.testing.assert_close(store["block"].summaries, expected)
        assert store.labels is None
    # one summary per layer: "first" for tokens, "mean" for the conv map
    store = record(model, ["embed", "block"], data, summary={"embed": "mean", "block": "first"}, progress=False)
    torch.testing.assert_close(store["embed"].summaries, model.embed(x).mean(dim=(2, 3)).detach())
    with pytest.raises(NeurocoreError, match="summary 'first' does not apply to layer 'embed'"):
        record(model, ["embed", "block"], data, summary="first", progress=False)
    assert hooks_left(model) == 0


def test_record_sets_eval_and_inference_mode_and_restores_flags():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((self.training, torch.is_inference_mode_enabled()))
            return x

    model = nn.Sequential(nn.Conv2d(3, 2, 1), Probe(), nn.Dropout(0.5))
    model.train()
    model[0].eval()  # mixed flags must come back exactly
    record(model, "1", probe(4), progress=False)
    assert seen and all(flag == (False, True) for flag in seen)
    assert [m.training for m in model.modules()] == [True, False, True, True]


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_hooks_removed_when_the_model_raises_midway(error):
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.after = nn.ReLU()
            self.n = 0

        def forward(self, x):
            h = self.conv(x)  # the hooked layer has run
            self.n += 1
            if self.n == 2:
                raise error("midway")
            return self.after(h)

    model = Failing()
    model.train()
    with pytest.raises(error, match="midway"):
        record(model, ["conv", "after"], probe(8), batch_size=2, progress=False)
    assert hooks_left(model) == 0
    assert model.training and model.conv.training
    model.n = 0
    with pytest.raises(error):
        spatial_maps(model, "conv", probe(8), [0, 1, 2, 3], batch_size=2)
    assert hooks_left(model) == 0


def test_record_adds_context_to_model_errors():
    model = TinyCNN()
    data = [torch.randn(1, 8, 8) for _ in range(3)]  # one channel for a three-channel conv
    with pytest.raises(RuntimeError) as info:
        record(model, "act", data, progress=False)
    assert "while running the model on probe batch 0 (dataset indices 0..2), input shape (3, 1, 8, 8)" in "".join(
        getattr(info.value, "__notes__", [])
    ) or not hasattr(info.value, "add_note")
    assert hooks_left(model) == 0


def test_record_nan_activations_name_layer_and_batch():
    model = TinyCNN()
    data = probe(10, labels=False)
    data[7] = torch.full((3, 8, 8), float("nan"))
    with pytest.raises(NeurocoreError, match=r"layer 'act' gave NaN activations in batch 1 \(dataset indices 4\.\.7\)"):
        record(model, ["act"], data, batch_size=4, progress=False)
    assert hooks_left(model) == 0


def test_record_tuple_outputs_use_first_tensor_and_dict_outputs_fail():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(3, 1, batch_first=True)
            self.d = DictOut()

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)  # [B, T, 3]
            out, _ = self.mha(t, t, t)
            self.d(out)
            return out

    class DictOut(nn.Module):
        def forward(self, x):
            return {"x": x}

    model = Attn().eval()
    data = probe(5, size=4, labels=False)
    t = stack(data).flatten(2).transpose(1, 2)
    store = record(model, "mha", data, summary="first", progress=False)
    with torch.no_grad():
        expected = model.mha(t, t, t)[0][:, 0]
    torch.testing.assert_close(store["mha"].summaries, expected)
    with pytest.raises(NeurocoreError, match=r"layer 'd' returned a dict, not a tensor"):
        record(model, "d", data, progress=False)
    assert hooks_left(model) == 0


def test_record_layer_that_never_runs():
    class Unused(TinyCNN):
        def __init__(self):
            super().__init__()
            self.spare = nn.Linear(6, 6)

    model = Unused()
    with pytest.raises(NeurocoreError, match=r"layer\(s\) \['spare'\] never ran during the forward pass of Unused"):
        record(model, ["act", "spare"], probe(4), progress=False)
    assert hooks_left(model) == 0


def test_record_shared_module_keeps_last_call_and_warns():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(x)) - 0.1)

    model = Shared()
    data = probe(4, labels=False)
    with pytest.warns(UserWarning, match=r"layer 'relu' ran 2 times in each forward pass"):
        store = record(model, "relu", data, progress=False)
    with torch.no_grad():
        expected = model(stack(data)).mean(dim=(2, 3))
    torch.testing.assert_close(store["relu"].summaries, expected)


def test_record_dead_neurons_are_reported():
    model = TinyCNN(k=4)
    with torch.no_grad():
        model.conv.bias[:] = torch.tensor([0.0, -100.0, 0.0, -100.0])  # neurons 1 and 3 never fire
    with pytest.warns(UserWarning, match=r"layer 'act': 2 of 4 neurons are dead"):
        store = record(model, ["act", "fc"], probe(6), progress=False)
    assert store.dead()["act"].tolist() == [False, True, False, True]
    assert store["act"].dead().tolist() == [False, True, False, True]


def test_record_bad_inputs():
    model = TinyCNN()
    with pytest.raises(NeurocoreError, match="the probe set is empty"):
        record(model, "act", [], progress=False)
    with pytest.raises(NeurocoreError, match="map-style dataset"):
        record(model, "act", (x for x in probe(3)), progress=False)
    with pytest.raises(NeurocoreError, match=r"layer 'act2' not found in TinyCNN; close matches: act"):
        record(model, "act2", probe(3), progress=False)
    with pytest.raises(NeurocoreError, match="batch_size must be an integer >= 1"):
        record(model, "act", probe(3), batch_size=0, progress=False)
    with pytest.raises(NeurocoreError, match="top_k must be an integer >= 1"):
        record(model, "act", probe(3), top_k=0, progress=False)
    import PIL.Image

    pil = [PIL.Image.new("RGB", (8, 8)) for _ in range(3)]
    with pytest.raises(NeurocoreError, match=r"probe item 0 is a Image, not a tensor: pass `transform=`"):
        record(model, "act", pil, progress=False)
    import torchvision.transforms as T

    store = record(model, "act", pil, transform=T.ToTensor(), progress=False)
    assert store.num_images == 3 and "ToTensor" in store.key["transform"]
    mixed = [torch.rand(3, 8, 8), torch.rand(3, 6, 6)]
    with pytest.raises(NeurocoreError, match=r"different shapes.*pass a `transform` that resizes"):
        record(model, "act", mixed, progress=False)
    assert hooks_left(model) == 0


def test_record_follows_model_dtype():
    model = TinyCNN().double()
    data = probe(5, labels=False)
    store = record(model, "act", data, progress=False)
    with torch.no_grad():
        expected = model.act(model.conv(stack(data).double())).mean(dim=(2, 3))
    assert store["act"].summaries.dtype == torch.float32
    torch.testing.assert_close(store["act"].summaries, expected.float())


def test_record_progress_bar_switch(capsys):
    model = TinyCNN()
    record(model, "act", probe(6), batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
    record(model, "act", probe(6), batch_size=2, progress=True)
    assert "record" in capsys.readouterr().err


def _image_folder(root: Path, n_per_class=3, corrupt=True):
    import PIL.Image

    g = torch.Generator().manual_seed(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            arr = (torch.rand(10, 10, 3, generator=g) * 255).to(torch.uint8).numpy()
            PIL.Image.fromarray(arr).save(root / c / f"{i}.jpg")
    if corrupt:
        (root / "a" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_record_skips_unreadable_images_and_counts_them(tmp_path):
    import torchvision.transforms as T

    folder = ImageFolder(_image_folder(tmp_path / "imgs"))
    model = TinyCNN()
    transform = T.Compose([T.Resize((8, 8)), T.ToTensor()])
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable probe image\(s\) of 6, e.g. 1 \("):
        store = record(model, "act", folder, transform=transform, batch_size=4, progress=False)
    assert store.num_images == 5
    assert store.image_ids == ("a/0.jpg", "a/2.jpg", "b/0.jpg", "b/1.jpg", "b/2.jpg")
    assert store.dataset_indices.tolist() == [0, 2, 3, 4, 5]
    assert store.labels.tolist() == [0, 0, 1, 1, 1]
    assert [i for i, _ in store.skipped] == [1]
    # rows match a direct run over the readable images
    x = torch.stack([transform(folder[i][0]) for i in (0, 2, 3, 4, 5)])
    with torch.no_grad():
        torch.testing.assert_close(store["act"].summaries, model.act(model.conv(x)).mean(dim=(2, 3)))
    # spatial maps by dataset index, mapped from store rows
    rows = store["act"].top_indices[:, 0]
    maps = spatial_maps(model, "act", folder, store.dataset_indices[rows], transform=transform)
    torch.testing.assert_close(maps.mean(dim=(2, 3))[:, 0], store["act"].top_values[:, 0])
    with pytest.raises(NeurocoreError, match=r"probe image 1 could not be read"):
        spatial_maps(model, "act", folder, [0, 1], transform=transform)


def test_record_all_images_unreadable(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(2):
        (root / f"{i}.jpg").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NeurocoreError, match="none of the 2 probe images could be read"):
            record(TinyCNN(), "act", ImageFolder(root), progress=False)


# ----------------------------------------------------------------------------------------------
# spatial maps


def test_spatial_maps_match_direct_forward():
    torch.manual_seed(0)
    model = TinyCNN()
    data = probe(9)
    x = stack(data)
    with torch.no_grad():
        conv = model.act(model.conv(x))
    maps = spatial_maps(model, "act", data, [8, 2, 2, 0], batch_size=3)
    assert maps.shape == (4, 6, 8, 8) and maps.dtype == torch.float32 and not maps.is_inference()
    torch.testing.assert_close(maps, conv[[8, 2, 2, 0]])
    token = TokenNet()
    tmaps = spatial_maps(token, "block", data, torch.tensor([1, 3]))
    assert tmaps.shape == (2, 5, 5)  # [n, T, C]: CLS + 4 patches
    store = record(token, "block", data, summary="first", progress=False)
    torch.testing.assert_close(tmaps[:, 0], store["block"].summaries[[1, 3]])
    assert hooks_left(model) == 0 and hooks_left(token) == 0


def test_spatial_maps_are_copies_unaffected_by_inplace_ops():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(inplace=True))
    data = probe(3, labels=False)
    with torch.no_grad():
        pre = model[0](stack(data))
    torch.testing.assert_close(spatial_maps(model, "0", data, [0, 1, 2]), pre)  # not the ReLU'd tensor
    assert (pre < 0).any()


def test_spatial_maps_errors():
    model = TinyCNN()
    with pytest.raises(NeurocoreError, match="indices is empty"):
        spatial_maps(model, "act", probe(3), [])
    with pytest.raises(NeurocoreError, match=r"dataset indices in \[0, 3\); got \[3, -1\]"):
        spatial_maps(model, "act", probe(3), [0, 3, -1])
    with pytest.raises(NeurocoreError, match="one module name"):
        spatial_maps(model, ["act"], probe(3), [0])
    with pytest.raises(NeurocoreError, match="not found"):
        spatial_maps(model, "conv9", probe(3), [0])


# ----------------------------------------------------------------------------------------------
# real data


def test_record_real_images_resnet18():
    root = DATA / "tiny-imagenet-200" / "val" / "images"
    if not root.is_dir():
        pytest.skip(f"real data absent: {root}")
    import torchvision
    import torchvision.transforms as T

    files = sorted(root.iterdir())[:12]

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            import PIL.Image

            with PIL.Image.open(files[i]) as img:
                return img.convert("RGB")

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    transform = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    store = record(model, ["layer3", "layer4.1.conv2"], Files(), transform=transform, top_k=5, batch_size=6, progress=False)
    x = torch.stack([transform(Files()[i]) for i in range(len(files))])
    feats = {}
    handle = model.layer3.register_forward_hook(lambda m, i, o: feats.update(layer3=o.clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    torch.testing.assert_close(store["layer3"].summaries, feats["layer3"].mean(dim=(2, 3)), atol=1e-5, rtol=1e-4)
    assert store["layer4.1.conv2"].summaries.shape == (12, 512)
    assert hooks_left(model) == 0


def test_record_on_device_matches_cpu(device):
    torch.manual_seed(0)
    model = TinyCNN()
    data = probe(10)
    cpu = record(model, ["act", "fc"], data, top_k=3, batch_size=4, progress=False)
    on_device = record(model.to(device), ["act", "fc"], data, top_k=3, batch_size=4, progress=False)
    for name in ("act", "fc"):
        assert on_device[name].summaries.device.type == "cpu"
        torch.testing.assert_close(on_device[name].summaries, cpu[name].summaries, atol=1e-5, rtol=1e-4)
    maps = spatial_maps(model, "act", data, [3, 1])
    assert maps.device.type == "cpu" and maps.shape == (2, 6, 8, 8)


def test_record_device_other_than_the_models_is_an_error():
    with pytest.raises(NeurocoreError, match=r"device='meta' but the model's weights are on 'cpu'; move the model first"):
        record(TinyCNN(), "act", probe(3), device="meta", progress=False)


# ----------------------------------------------------------------------------------------------
# streaming boundaries: the recorder's top-k merged across batches (batches of top_k - 1, top_k,
# top_k + 1 rows over more neurons than one CPU top-k block) and record()'s cache chunks (probe
# sizes around a chunk, batches straddling chunks), against the float64-capable reference

from _constants import TOPK_BLOCK_COLS, around  # noqa: E402

from neurocore import reference  # noqa: E402


@pytest.mark.parametrize("neurons", around(TOPK_BLOCK_COLS), ids=lambda k: f"K{k}")
@pytest.mark.parametrize("batch_delta", [-1, 0, 1], ids=["batch=k-1", "batch=k", "batch=k+1"])
def test_recorder_merge_across_batch_and_block_boundaries(neurons, batch_delta):
    top_k = 4
    g = torch.Generator().manual_seed(neurons + batch_delta)
    full = torch.randint(0, 3, (5 * top_k + 2, neurons), generator=g).float()  # many ties
    rec = ActivationRecorder(["fc"], top_k=top_k)
    size = top_k + batch_delta
    for start in range(0, full.shape[0], size):
        rec.update({"fc": full[start : start + size]})
    store = rec.compute()
    values, indices = reference.topk(full, top_k)
    assert torch.equal(store["fc"].top_values, values) and torch.equal(store["fc"].top_indices, indices)


class FingerprintedProbe(torch.utils.data.Dataset):
    """A list of (image, label) with a fingerprint, so a second record() reads its cache."""

    def __init__(self, items, tag="boundary"):
        self.items, self.tag = items, tag

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def fingerprint(self):
        return f"{self.tag}-{len(self.items)}"


@pytest.mark.parametrize("n", around(8) + [3 * 8 + 5], ids=lambda n: f"n{n}")
def test_record_cache_chunk_boundaries(tmp_path, n):
    chunk = 8
    torch.manual_seed(n)
    model = TinyCNN()
    data = FingerprintedProbe(probe(n, seed=n))
    with torch.no_grad():
        direct = model.act(model.conv(stack(data.items))).mean(dim=(2, 3))
    kw = dict(summary="mean", top_k=3, batch_size=3, chunk_size=chunk, progress=False, cache_dir=tmp_path)
    first = record(model, "act", data, **kw)
    files = sorted(p.name for p in tmp_path.rglob("chunk-*.pt"))
    assert len(files) == -(-n // chunk), files  # one file per chunk, the last one partial
    calls = model.calls
    second = record(model, "act", data, **kw)
    assert model.calls - calls <= 1  # only the content check ran the model
    for store in (first, second):
        torch.testing.assert_close(store["act"].summaries, direct, rtol=1e-5, atol=1e-6)
        assert torch.equal(store.dataset_indices, torch.arange(n))
        assert store.labels.tolist() == [i % 3 for i in range(n)]
        values, indices = reference.topk(store["act"].summaries, 3)
        assert torch.equal(store["act"].top_values, values) and torch.equal(store["act"].top_indices, indices)
    assert torch.equal(first["act"].summaries, second["act"].summaries)
