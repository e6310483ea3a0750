"""The one hooked forward pass: outputs taken as they left the module (whatever in-place op follows),
layouts found from evidence (channels-last maps, sequence-first tokens, 1-D maps) or refused, spatial
maps and crops, the neuron-replacement runner on the same capture, hooks always removed."""

import warnings

import pytest
import torch
from torch import nn

from neurocore import NeurocoreError
from neurocore.evaluate import Head, head_after, top_impact
from neurocore.probe import (
    crop_boxes,
    crops,
    hooked_forward,
    record,
    resolve_layers,
    spatial_maps,
    to_canonical,
    token_grid,
)
from neurocore.probe._layers import check_device_available


def manual(model, name, x):
    """The reference: a hook that copies the output the moment it leaves the module."""
    got = []
    h = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: got.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return got[-1]


class Residual(nn.Module):
    """``out = conv(x); out += x`` after the hooked conv: an in-place add on the captured tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))

    def forward(self, x):
        out = self.conv(x)
        out += x
        return self.head(out)


class TokenNet(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.proj = nn.Linear(3, 16)
        self.act = act
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        t = self.proj(x.flatten(2).transpose(1, 2))  # [B, T, 16]
        return self.fc(self.act(t).mean(1))


def _inplace_models():
    conv = lambda act: nn.Sequential(nn.Conv2d(3, 8, 3), act, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # noqa: E731
    lin = lambda act: nn.Sequential(nn.Flatten(), nn.Linear(3 * 144, 32), act, nn.Linear(32, 4))  # noqa: E731
    return [
        ("conv-relu", conv(nn.ReLU(inplace=True)), "0"),
        ("conv-hardswish", conv(nn.Hardswish(inplace=True)), "0"),
        ("conv-silu", conv(nn.SiLU(inplace=True)), "0"),
        ("linear-relu", lin(nn.ReLU(inplace=True)), "1"),
        ("linear-relu6", lin(nn.ReLU6(inplace=True)), "1"),
        ("residual +=", Residual(), "conv"),
        ("tokens-relu", TokenNet(nn.ReLU(inplace=True)), "proj"),
    ]


@pytest.mark.parametrize("label,model,layer", _inplace_models(), ids=[m[0] for m in _inplace_models()])
@pytest.mark.parametrize("summary", ["mean", "max", "first"])
def test_record_takes_outputs_before_later_inplace_ops(label, model, layer, summary):
    torch.manual_seed(0)
    model.eval()
    probe = [torch.randn(3, 12, 12) for _ in range(10)]
    want = manual(model, layer, torch.stack(probe))
    if summary == "first" and want.dim() != 3:
        return  # "first" applies to tokens only
    reduce = {
        4: {"mean": lambda t: t.mean((2, 3)), "max": lambda t: t.amax((2, 3))},
        3: {"mean": lambda t: t.mean(1), "max": lambda t: t.amax(1), "first": lambda t: t[:, 0]},
        2: {"mean": lambda t: t, "max": lambda t: t},
    }[want.dim()][summary]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = record(model, [layer], probe, summary=summary, top_k=3, batch_size=4, progress=False)
    torch.testing.assert_close(store[layer].summaries, reduce(want), rtol=0, atol=1e-6)
    maps = spatial_maps(model, layer, probe, [3, 1, 7])
    torch.testing.assert_close(maps, want[[3, 1, 7]], rtol=0, atol=1e-6)


def test_alexnet_classifier_linear_is_recorded_before_its_inplace_relu():
    import torchvision

    alex = torchvision.models.alexnet(weights=None).eval()
    probe = [torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    want = manual(alex, "classifier.1", torch.stack(probe))
    assert (want < 0).any()  # the pre-ReLU values have negatives: the test can see a post-ReLU capture
    store = record(alex, "classifier.1", probe, top_k=2, progress=False)
    torch.testing.assert_close(store["classifier.1"].summaries, want, rtol=0, atol=1e-5)


def test_replacement_runner_and_top_impact_see_pre_inplace_outputs():
    # A "map" head over a Linear followed by ReLU(inplace): the runner's activations (ordering, dead flags,
    # base loss) must be the Linear's outputs, so they must have negatives and equal the manual capture.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)).eval()
    probe = [(torch.randn(3, 2, 2), i % 3) for i in range(24)]
    x = torch.stack([p for p, _ in probe])
    want = manual(model, "1", x)
    head = Head("1", forward=lambda z: model[3](torch.relu(z)))
    res = top_impact(None, model=model, probe=probe, layer="1", head=head, return_impacts=True, progress=False,
                     betas=(0.5, 1.0))
    # Top impact orders images by the neuron's activation: with post-ReLU values the ties at 0 would reorder.
    assert res.impacts.shape[0] == 24
    from neurocore.probe._replace import _Runner

    runner = _Runner(head, model, None, probe, None, None, None, 8, 1.0)
    split = runner.prepare(torch.arange(24))
    torch.testing.assert_close(split.acts, want, rtol=0, atol=1e-6)
    assert (split.acts < 0).any()


# ----------------------------------------------------------------------------------------------
# Layouts


class NHWCNet(nn.Module):
    """A Swin-like stage: Linear over the last axis of a [B, H, W, C] map."""

    def __init__(self, c=6):
        super().__init__()
        self.embed = nn.Conv2d(3, c, 2, stride=2)
        self.mix = nn.Linear(c, c)
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        z = self.mix(self.embed(x).permute(0, 2, 3, 1))  # [B, H, W, C]
        return self.fc(z.mean((1, 2)))


class SeqFirstNet(nn.Module):
    """A sequence-first transformer layer ([T, B, C], nn.TransformerEncoderLayer's default)."""

    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Linear(3, d)
        self.layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=False)
        self.fc = nn.Linear(d, 2)

    def forward(self, x):
        t = self.embed(x.flatten(2).permute(2, 0, 1))  # [T, B, d]
        return self.fc(self.layer(t)[0])


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.conv(x.flatten(2)).mean(2))


def test_channels_last_maps_are_recorded_per_channel():
    torch.manual_seed(0)
    model = NHWCNet().eval()
    probe = [torch.randn(3, 8, 8) for _ in range(6)]
    raw = manual(model, "mix", torch.stack(probe))  # [6, 4, 4, 6]
    store = record(model, "mix", probe, summary="max", top_k=2, progress=False)
    assert store["mix"].num_neurons == 6 and store.key["layouts"]["mix"] == "NHWC"
    torch.testing.assert_close(store["mix"].summaries, raw.amax((1, 2)), rtol=0, atol=1e-6)
    maps = spatial_maps(model, "mix", probe, [0, 2])
    torch.testing.assert_close(maps, raw[[0, 2]].permute(0, 3, 1, 2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer", ["features.7", "features.5"])
def test_torchvision_swin_stages(layer):
    import torchvision

    model = torchvision.models.swin_t(weights=None).eval()
    probe = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    raw = manual(model, layer, torch.stack(probe))
    store = record(model, layer, probe, top_k=2, progress=False)
    assert store[layer].num_neurons == raw.shape[-1]
    torch.testing.assert_close(store[layer].summaries, raw.mean((1, 2)), rtol=1e-5, atol=1e-5)


def test_convnext_block_permuted_back_stays_channels_first():
    # torchvision's CNBlock: Linear layers on a permuted [B, H, W, C] map, permuted back at the end.
    import torchvision

    model = torchvision.models.convnext_tiny(weights=None).eval()
    probe = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    raw = manual(model, "features.1", torch.stack(probe))
    store = record(model, "features.1", probe, top_k=1, progress=False)
    assert store.key["layouts"]["features.1"] == "NCHW"
    torch.testing.assert_close(store["features.1"].summaries, raw.mean((2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_images,batch_size", [(6, 4), (4, 4), (16, 16)])  # T = 16 tokens: 16 == batch size is ambiguous
def test_sequence_first_tokens(num_images, batch_size):
    torch.manual_seed(0)
    model = SeqFirstNet().eval()
    probe = [torch.randn(3, 4, 4) for _ in range(num_images)]
    raw = manual(model, "layer", torch.stack(probe))  # [T=16, B, 8]
    store = record(model, "layer", probe, summary="first", top_k=2, batch_size=batch_size, progress=False)
    assert store.key["layouts"]["layer"] == "LNC"
    torch.testing.assert_close(store["layer"].summaries, raw[0], rtol=0, atol=1e-5)
    mean = record(model, "layer", probe, summary="mean", top_k=2, batch_size=batch_size, progress=False)
    torch.testing.assert_close(mean["layer"].summaries, raw.mean(0), rtol=0, atol=1e-5)


def test_conv1d_maps_are_channels_first():
    torch.manual_seed(0)
    model = Conv1dNet().eval()
    probe = [torch.randn(3, 4, 4) for _ in range(5)]
    raw = manual(model, "conv", torch.stack(probe))  # [B, 5, 14]
    store = record(model, "conv", probe, summary="max", top_k=2, progress=False)
    assert store["conv"].num_neurons == 5
    torch.testing.assert_close(store["conv"].summaries, raw.amax(2), rtol=0, atol=1e-6)


def test_explicit_layout_and_its_errors():
    torch.manual_seed(0)
    model = NHWCNet().eval()
    probe = [torch.randn(3, 8, 8) for _ in range(4)]
    raw = manual(model, "mix", torch.stack(probe))
    got = record(model, "mix", probe, layout={"mix": "NHWC"}, top_k=1, progress=False)
    torch.testing.assert_close(got["mix"].summaries, raw.mean((1, 2)), rtol=0, atol=1e-6)
    with pytest.raises(NeurocoreError, match="layout for layer 'mix' must be one of"):
        record(model, "mix", probe, layout="BHWC", progress=False)
    with pytest.raises(NeurocoreError, match="not recorded"):
        record(model, "mix", probe, layout={"other": "NHWC"}, progress=False)
    with pytest.raises(NeurocoreError, match="layout 'NLC'.*4-D tensor"):
        record(model, "mix", probe, layout="NLC", progress=False)


class Merged(nn.Module):
    """A module whose output merges the batch with the tokens: [B*T, C]."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(x.flatten(2).transpose(1, 2).reshape(-1, 3))


class Square(nn.Module):
    """A Linear's [B, H, W, C] output permuted to [B, C, H, W] with H == W == C: after the permute the
    sizes cannot tell channels first from last (the Linear's own output is channels-last by definition;
    without the permute, the identical shape and strides show that nothing moved the channels)."""

    def __init__(self, permute=True):
        super().__init__()
        self.permute = permute
        self.lin = nn.Linear(4, 4)
        self.out = nn.Identity()

    def forward(self, x):
        z = self.lin(x[:, :, :, :4].repeat(1, 2, 1, 1)[:, :4])
        return self.out(z.permute(0, 3, 1, 2) if self.permute else z)


def test_layouts_that_cannot_be_known_are_refused():
    probe = [torch.randn(3, 4, 4) for _ in range(3)]
    with pytest.raises(NeurocoreError, match=r"shape \(48, 4\) for a batch of 3 images: its first axis is not the batch"):
        record(Merged(), "lin", probe, progress=False)
    with pytest.raises(NeurocoreError, match="cannot be told apart.*layout="):
        record(Square(), "out", probe, progress=False)
    assert record(Square(), "out", probe, layout="NHWC", top_k=1, progress=False)["out"].num_neurons == 4
    assert record(Square(), "lin", probe, top_k=1, progress=False).key["layouts"]["lin"] == "NHWC"
    assert record(Square(permute=False), "out", probe, top_k=1, progress=False).key["layouts"]["out"] == "NHWC"


@pytest.mark.parametrize("size", [8, 16])
def test_as_many_channels_as_map_cells_per_side_stay_channels_first(size):
    # A conv block with C == H == W (16 channels on a 16x16 map): common, and not ambiguous.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, size, 3, padding=1), nn.BatchNorm2d(size), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()
    probe = [torch.randn(3, size, size) for _ in range(4)]
    raw = manual(model, "2", torch.stack(probe))
    store = record(model, ["0", "2"], probe, top_k=1, progress=False)
    assert store.key["layouts"] == {"0": "NCHW", "2": "NCHW"}
    torch.testing.assert_close(store["2"].summaries, raw.mean((2, 3)), rtol=0, atol=1e-6)


def test_to_canonical_round_trips():
    from neurocore.probe import from_canonical

    for layout, shape in (("NHWC", (2, 3, 4, 5)), ("LNC", (7, 2, 5)), ("NCL", (2, 5, 9)), ("NCHW", (2, 5, 3, 3))):
        x = torch.randn(shape)
        c = to_canonical(x, layout)
        assert c.shape[0] == 2 and (c.shape[1] == 5 or c.dim() == 3 and c.shape[2] == 5)
        assert torch.equal(from_canonical(c, layout), x)


def test_hook_head_replacement_on_channels_last_layer():
    # Setting channel k of an NHWC layer must equal setting [..., k] of the raw output, and the runner's
    # activations are per channel.
    from neurocore.probe._replace import _Runner

    torch.manual_seed(3)
    model = NHWCNet().eval()
    probe = [(torch.randn(3, 8, 8), i % 3) for i in range(12)]
    x = torch.stack([p for p, _ in probe])
    runner = _Runner(Head("mix"), model, None, probe, None, None, None, 5, 1.0)
    split = runner.prepare(torch.arange(12))
    torch.testing.assert_close(split.acts, manual(model, "mix", x).mean((1, 2)), rtol=0, atol=1e-6)

    def replaced_logits(k, v):
        def hook(m, i, o):
            o = o.clone()
            o[..., k] = v[:, None, None]
            return o

        h = model.mix.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return model(x)
        finally:
            h.remove()

    units = torch.tensor([0, 4, 5])
    values = torch.randn(3, 12)
    got = []
    with torch.no_grad():
        for pos, images in runner.chunks(split):
            got.append(runner.logits(images, units, values[:, pos]))
    got = torch.cat(got, dim=1)
    for j, k in enumerate(units.tolist()):
        torch.testing.assert_close(got[j], replaced_logits(k, values[j]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Hooks, errors, devices


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_hooked_forward_removes_every_hook_when_the_model_raises(error):
    class Raiser(nn.Module):
        def forward(self, x):
            raise error("midway")

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(2, 2), Raiser())
    modules = resolve_layers(model, ["0", "1"])
    with pytest.raises(error):
        hooked_forward(model, modules, torch.rand(2, 3, 4, 4))  # "auto" layouts also hook the leaves
    assert _hooks(model) == 0


def test_head_after_says_why_the_check_input_failed():
    import torchvision

    net = torchvision.models.resnet18(num_classes=5)
    with pytest.warns(UserWarning, match=r"could not run on a \(1, 2, 8, 8\) check input.*RuntimeError"):
        head = head_after(net, "layer4", example=torch.rand(1, 2, 8, 8))
    assert head.kind == "hook"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(NeurocoreError, match=r"no CUDA device is available \(torch.cuda.is_available\(\) is False"):
        check_device_available("cuda")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(NeurocoreError, match="no CUDA device is available"):
        record(net, "1", [torch.rand(3, 8, 8)], device="cuda", progress=False)
    with pytest.raises(NeurocoreError, match="no CUDA device is available"):
        spatial_maps(net, "1", [torch.rand(3, 8, 8)], [0], device="cuda:1")


# ----------------------------------------------------------------------------------------------
# Crops


def test_crop_boxes_known_answers():
    cells = torch.tensor([[0, 0], [1, 2], [0, 0]])
    assert crop_boxes(cells[:2], (2, 4), (20, 40), 0.5).tolist() == [[0, 0, 20, 10], [15, 10, 35, 20]]
    assert crop_boxes(cells[:1], (1, 1), (10, 10), 0.4).tolist() == [[3, 3, 7, 7]]  # 1x1 map: centre crop
    with pytest.raises(NeurocoreError, match=r"fraction must be a number in \(0, 1\]"):
        crop_boxes(cells, (2, 2), (8, 8), 0)


@pytest.mark.parametrize("map_size", [(4, 4), (7, 5), (1, 1)])
def test_crops_contain_the_planted_spot(map_size):
    # A neuron that is the image's brightness, pooled to any map size: its highest cell holds the spot.
    H = W = 35
    model = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.AdaptiveMaxPool2d(map_size))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    spots = [(3, 30), (20, 5), (33, 33)]
    probe = []
    for y, x in spots:
        img = torch.zeros(3, H, W)
        img[:, y, x] = 1.0
        probe.append(img)
    c = crops(model, "1", probe, [2, 0, 1], 0, fraction=0.5)
    for j, i in enumerate([2, 0, 1]):
        y, x = spots[i]
        x0, y0, x1, y1 = c.boxes[j].tolist()
        if map_size != (1, 1):
            assert x0 <= x < x1 and y0 <= y < y1, (map_size, spots[i], c.boxes[j])
        assert (x1 - x0, y1 - y0) == (18, 18)
    assert c.images.shape == (3, 3, H, W) and c.values.tolist() == [3.0, 3.0, 3.0]  # three channels of 1.0 summed by the 1x1 conv


def test_crops_on_vit_tokens_and_errors():
    assert token_grid(197) == (1, 14, 14) and token_grid(196) == (0, 14, 14) and token_grid(201) == (5, 14, 14)
    with pytest.raises(NeurocoreError, match="pass grid="):
        token_grid(1000)  # 992..1000: no square
    model = TokenNet(nn.ReLU())  # proj: [B, 16 tokens, 16]: a 4x4 grid
    probe = [torch.rand(3, 4, 4) for _ in range(2)]
    c = crops(model, "proj", probe, [0, 1], [3, 5])
    assert c.cells.shape == (2, 2) and int(c.cells.max()) < 4
    with pytest.raises(NeurocoreError, match=r"a \[B, C\] layer has no highest cell"):
        crops(model, "fc", probe, [0], [0])
    with pytest.raises(NeurocoreError, match="one unit per image"):
        crops(model, "proj", probe, [0, 1], [1, 2, 3])


def _tv(name, **kw):
    import torchvision

    return getattr(torchvision.models, name)(weights=None, **kw).eval()


# Layers whose last channel-setting module is one branch's conv (concatenation), PixelShuffle or a gate, at
# sizes where the spatial width equals that branch's channel count: channels are still first.
CHANNELS_FIRST_CASES = [
    ("googlenet inception3a @256", lambda: _tv("googlenet", aux_logits=False, init_weights=False), "inception3a", 256),
    ("densenet121 denseblock1 @128", lambda: _tv("densenet121"), "features.denseblock1", 128),
    ("squeezenet1_1 fire @260", lambda: _tv("squeezenet1_1"), "features.3", 260),
    ("shufflenet stage2 @224", lambda: _tv("shufflenet_v2_x0_5"), "stage2", 224),
    ("mobilenet_v3_small SE @64", lambda: _tv("mobilenet_v3_small"), "features.1.block.1", 64),
    ("pixelshuffle @8", lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.PixelShuffle(2)).eval(), "1", 8),
]


@pytest.mark.parametrize("label,build,layer,size", CHANNELS_FIRST_CASES, ids=[c[0] for c in CHANNELS_FIRST_CASES])
def test_concatenated_and_shuffled_channels_stay_channels_first(label, build, layer, size):
    torch.manual_seed(0)
    model = build()
    probe = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    raw = manual(model, layer, torch.stack(probe))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = record(model, layer, probe, top_k=1, progress=False)
    assert store.key["layouts"][layer] == "NCHW", label
    torch.testing.assert_close(store[layer].summaries, raw.mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_conv_output_permuted_to_channels_last_is_nhwc():
    class ConvThenPermute(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3)
            self.out = nn.Identity()

        def forward(self, x):
            return self.out(self.conv(x).permute(0, 2, 3, 1))

    model = ConvThenPermute().eval()
    probe = [torch.randn(3, 9, 9) for _ in range(3)]
    raw = manual(model, "out", torch.stack(probe))
    store = record(model, "out", probe, top_k=1, progress=False)
    assert store.key["layouts"]["out"] == "NHWC"
    torch.testing.assert_close(store["out"].summaries, raw.mean((1, 2)), rtol=0, atol=1e-6)


def test_indices_as_masks_and_refused_floats():
    net = nn.Sequential(nn.Conv2d(3, 2, 1))
    probe = [torch.rand(3, 4, 4) for _ in range(4)]
    ref = spatial_maps(net, "0", probe, [0, 2])
    torch.testing.assert_close(spatial_maps(net, "0", probe, torch.tensor([True, False, True, False])), ref)
    torch.testing.assert_close(spatial_maps(net, "0", probe, [True, False, True, False]), ref)
    with pytest.raises(NeurocoreError, match="bool sequence of the probe's length 4"):
        spatial_maps(net, "0", probe, [True, False])
    with pytest.raises(NeurocoreError, match="integer dataset indices.*float32"):
        spatial_maps(net, "0", probe, torch.tensor([0.7, 2.9]))
    with pytest.raises(NeurocoreError, match="integer dataset indices"):
        crops(net, "0", probe, [0.5], 0)
    with pytest.raises(NeurocoreError, match=r"grid=\(3, 3\) does not fit 17 tokens"):
        token_grid(17, grid=(3, 3))


def test_crops_use_the_models_prefix_tokens():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, reg_tokens=4, num_classes=3).eval()
    assert vit.num_prefix_tokens == 5  # CLS + 4 registers, then a 4x4 patch grid
    probe = [torch.rand(3, 64, 64) for _ in range(2)]
    c = crops(vit, "blocks.0", probe, [0, 1], [0, 1])
    raw = manual(vit, "blocks.0", torch.stack(probe))[:, 5:, :]  # [2, 16, 192]
    want = raw[torch.arange(2), :, torch.tensor([0, 1])].argmax(dim=1)
    assert (c.cells[:, 0] * 4 + c.cells[:, 1]).tolist() == want.tolist()
    with pytest.raises(NeurocoreError, match="model has 5 leading tokens"):
        crops(vit, "blocks.0", probe, [0], [0], grid=(3, 3))
