"""Replacing neurons (heads), Top Impact (Linear Explanations §2) and the activation area chart."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.evaluate import (
    Head,
    activation_area_chart,
    head_after,
    replace_units,
    top_impact,
    top_impact_from_impacts,
)
from neurocore.probe import ActivationStore

# ----------------------------------------------------------------------------------------------
# replace_units


def test_replace_units_maps_tokens_features_against_loops():
    # Expected values come from copies taken before each call, and the inputs are compared with those
    # copies after it: an in-place write into the layer output would fail both checks.
    z4 = torch.randn(3, 4, 2, 5)
    z4_before = z4.clone()
    units = torch.tensor([2, 0])
    values = torch.randn(2, 3)
    out = replace_units(z4, units, values)
    for j in range(2):
        for b in range(3):
            expected = z4_before[b].clone()
            expected[units[j]] = values[j, b]
            assert torch.equal(out[j, b], expected)
    z3 = torch.randn(3, 6, 4)  # [B, T, C]
    z3_before = z3.clone()
    first, every = replace_units(z3, units, values, "first"), replace_units(z3, units, values, "mean")
    for j in range(2):
        for b in range(3):
            e1, e2 = z3_before[b].clone(), z3_before[b].clone()
            e1[0, units[j]] = values[j, b]
            e2[:, units[j]] = values[j, b]
            assert torch.equal(first[j, b], e1) and torch.equal(every[j, b], e2)
    z2 = torch.randn(3, 4)
    z2_before = z2.clone()
    out2 = replace_units(z2, units, values)
    assert out2[1, 2, 0] == values[1, 2] and torch.equal(out2[1, 2, 1:], z2_before[2, 1:])
    for z, before in ((z4, z4_before), (z3, z3_before), (z2, z2_before)):
        assert torch.equal(z, before)  # input untouched (no in-place write)
    with pytest.raises(NeurocoreError, match="layer outputs must be"):
        replace_units(torch.rand(2, 3, 4, 5, 6), units, torch.rand(2, 2))


# ----------------------------------------------------------------------------------------------
# head_after


def test_head_after_torchvision_resnet():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(num_classes=7).train()
    head = head_after(net, "layer4")
    assert head.kind == "pooled" and head.pooled is net.fc and head.summary == "mean"
    assert net.training and all(m.training for m in net.modules())  # the check ran in eval mode, restored
    z = torch.randn(2, 512, 2, 2)
    assert torch.allclose(head.forward(z), net.fc(z.mean((2, 3))))
    assert head_after(net, "layer3").kind == "hook"
    with pytest.raises(NeurocoreError, match="layer4"):
        head_after(net, "layer5")


def test_head_after_custom_model_is_generic_hook():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = head_after(net, "1")
    assert head.kind == "hook" and head.layer == "1"


@pytest.mark.parametrize(
    "name, layer, kind, summary",
    [
        ("tf_efficientnet_lite0", "bn2", "pooled", "mean"),
        ("tf_efficientnet_lite0", "conv_head", "map", "mean"),
        ("tf_efficientnet_lite0", "blocks.6", "hook", "mean"),
        ("vit_tiny_patch16_224", "norm", "pooled", "first"),
    ],
)
def test_head_after_timm(name, layer, kind, summary):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    kwargs = dict(img_size=32, patch_size=8) if name.startswith("vit") else {}
    net = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    head = head_after(net, layer)
    assert (head.kind, head.summary) == (kind, summary)
    if kind == "pooled":
        assert isinstance(head.pooled, nn.Linear)  # the linear classifier is used directly
    if kind != "hook":
        x = torch.randn(2, 3, 32, 32)
        out = {}
        handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: out.update(z=o))
        try:
            with torch.no_grad():
                logits = net(x)
        finally:
            handle.remove()
        with torch.no_grad():
            assert torch.allclose(head.forward(out["z"]), logits, atol=1e-5)
            if kind == "pooled":
                p = out["z"].mean((2, 3)) if summary == "mean" else out["z"][:, 0]
                assert torch.allclose(head.pooled(p), logits, atol=1e-5)


def test_head_validation():
    with pytest.raises(NeurocoreError, match="summary"):
        Head("x", summary="median")
    with pytest.raises(NeurocoreError, match="callable"):
        Head("x", forward=3)
    assert Head("x").kind == "hook"


# ----------------------------------------------------------------------------------------------
# Top Impact


def test_top_impact_from_impacts_hand_example():
    impacts = torch.tensor([[0.1, 0.0], [-0.3, 0.0], [0.2, 0.0], [0.4, 0.0]])
    acts = torch.tensor([[1.0, 1.0], [3.0, 2.0], [1.0, 3.0], [2.0, 4.0]])
    ti = top_impact_from_impacts(impacts, acts, [0.0, 0.25, 0.5, 0.75, 1.0])
    # unit 0: order by activation 3, 2, 1, 1 -> rows 1, 3, 0, 2 (tie: lower row first); |I| = .3 .4 .1 .2
    np.testing.assert_allclose(ti[0].numpy(), [0.0, 0.3, 0.7, 0.8, 1.0])
    assert torch.isnan(ti[1]).all()  # no impact at all
    assert top_impact_from_impacts(impacts[:, :1], acts[:, :1], [0.3])[0, 0] == pytest.approx(0.3)  # floor(1.2) = 1
    with pytest.raises(NeurocoreError, match="betas"):
        top_impact_from_impacts(impacts, acts, [1.5])


def ce(logits, y):
    return math.log(sum(math.exp(v) for v in logits)) - logits[y]


def test_top_impact_tiny_linear_model_by_hand():
    # logits = pooled features (W = I, b = 0), temperature 1
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(2))
        fc.bias.zero_()
    feats = torch.tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 1.0], [1.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 0])  # images 0, 1 right; 2, 3 wrong
    ti = top_impact(feats, head=Head("f", pooled=fc), labels=labels, betas=(0.25, 0.5, 0.75, 1.0),
                    temperature=1.0, return_impacts=True, progress=False)
    L = [ce([3, 1], 0), ce([1, 2], 1), ce([2, 1], 1), ce([1, 3], 0)]
    total_acc, total_loss = 2.0, sum(L)
    # unit 0 zeroed: logits (0,1) (0,2) (0,1) (0,3): image 0 turns wrong, image 2 turns right
    L0 = [ce([0, 1], 0), ce([0, 2], 1), ce([0, 1], 1), ce([0, 3], 0)]
    acc0 = [1 - 0, 1 - 1, 0 - 1, 0 - 0]
    I0 = [(acc0[i] / total_acc - (L[i] - L0[i]) / total_loss) / 2 for i in range(4)]
    # unit 1 zeroed: logits (3,0) (1,0) (2,0) (1,0): image 1 turns wrong, image 3 turns right
    L1 = [ce([3, 0], 0), ce([1, 0], 1), ce([2, 0], 1), ce([1, 0], 0)]
    acc1 = [0, 1, 0, -1]
    I1 = [(acc1[i] / total_acc - (L[i] - L1[i]) / total_loss) / 2 for i in range(4)]
    np.testing.assert_allclose(ti.impacts.numpy(), np.array([I0, I1]).T, rtol=1e-5, atol=1e-7)
    # unit 0 activations 3, 1, 2, 1 -> images 0, 2, 1, 3; unit 1: 1, 2, 1, 3 -> images 3, 1, 0, 2
    a0 = [abs(I0[i]) for i in (0, 2, 1, 3)]
    a1 = [abs(I1[i]) for i in (3, 1, 0, 2)]
    np.testing.assert_allclose(ti.top_impact[0].numpy(), np.cumsum(a0) / sum(a0), rtol=1e-5)
    np.testing.assert_allclose(ti.top_impact[1].numpy(), np.cumsum(a1) / sum(a1), rtol=1e-5)
    np.testing.assert_allclose(ti.total_impact.numpy(), [sum(I0), sum(I1)], rtol=1e-5)
    assert ti.status == ("ok", "ok") and ti.units == (0, 1)
    assert set(ti.to_pandas().columns) >= {"unit", "total_impact", "top_impact:0.25", "top_impact:1"}


def naive_impacts(fc, feats, labels, T):
    """Eqs. 1–3, one image and one neuron at a time (float64)."""
    W, b = fc.weight.detach().double(), fc.bias.detach().double()
    f = feats.double()

    def stats(x, y):
        logits = W @ x + b
        return float(torch.logsumexp(logits / T, 0) - logits[y] / T), float(logits.argmax() == y)

    base = [stats(f[i], int(labels[i])) for i in range(len(f))]
    tl, ta = sum(v[0] for v in base), sum(v[1] for v in base)
    out = np.zeros((len(f), f.shape[1]))
    for k in range(f.shape[1]):
        for i in range(len(f)):
            x = f[i].clone()
            x[k] = 0.0
            l1, a1 = stats(x, int(labels[i]))
            out[i, k] = ((base[i][1] - a1) / ta - (base[i][0] - l1) / tl) / 2
    return out


def test_top_impact_against_loop_dead_and_units():
    torch.manual_seed(2)
    fc = nn.Linear(5, 4)
    feats = torch.rand(40, 5) * 2
    feats[:, 3] = 0.0  # dead
    labels = torch.randint(0, 4, (40,))
    labels[:10] = fc(feats[:10]).argmax(1)
    store = ActivationStore.from_tensor(feats, "f", labels=labels)
    ti = top_impact(store, head=Head("f", pooled=fc), return_impacts=True, neuron_batch=2, batch_size=7, progress=False)
    expected = naive_impacts(fc, feats, labels, 1.1)
    live = [0, 1, 2, 4]
    np.testing.assert_allclose(ti.impacts[:, live].numpy(), expected[:, live], rtol=1e-4, atol=1e-7)
    assert ti.status[3] == "dead" and bool(ti.dead[3]) and torch.isnan(ti.top_impact[3]).all()
    assert torch.isnan(ti.impacts[:, 3]).all()
    assert not math.isnan(ti.mean()[0.5])
    sub = top_impact(store, head=Head("f", pooled=fc), units=[4, 1], rows=torch.arange(40), return_impacts=True, progress=False)
    assert sub.units == (4, 1)
    assert torch.allclose(sub.impacts, ti.impacts[:, [4, 1]])


def test_top_impact_errors():
    fc = nn.Linear(3, 2)
    feats = torch.rand(10, 3)
    wrong = 1 - fc(feats).argmax(1)
    with pytest.raises(NeurocoreError, match="none of the 10 images"):
        top_impact(feats, head=Head("f", pooled=fc), labels=wrong, progress=False)
    with pytest.raises(NeurocoreError, match="labels"):
        top_impact(feats, head=Head("f", pooled=fc), progress=False)
    with pytest.raises(NeurocoreError, match="units must be"):
        top_impact(feats, head=Head("f", pooled=fc), labels=wrong, units=[3], progress=False)
    with pytest.raises(NeurocoreError, match="probe="):
        top_impact(feats, head=Head("f"), labels=wrong, progress=False)
    with pytest.raises(NeurocoreError, match=r"class indices in \[0, 2\)"):
        top_impact(feats, head=Head("f", pooled=fc), labels=torch.full((10,), 5), progress=False)


def test_top_impact_fast_map_and_hook_paths_agree_on_resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        labels = net(images).argmax(1)
    labels[3:] = (labels[3:] + 1) % 5
    probe = [(images[i], int(labels[i])) for i in range(6)]
    kw = dict(model=net, probe=probe, units=[5, 77, 300], return_impacts=True, batch_size=4, neuron_batch=2, progress=False)
    fast = top_impact(layer="layer4", **kw)
    maps = top_impact(head=Head("layer4", forward=lambda z: net.fc(z.mean((2, 3)))), **kw)
    hooked = top_impact(head=Head("layer4"), **kw)
    assert torch.allclose(fast.impacts, maps.impacts, atol=1e-6)
    assert torch.allclose(fast.impacts, hooked.impacts, atol=1e-6)
    # a store of the pooled features (summary "mean") stands in for the images
    with torch.no_grad():
        pooled = net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(images))))))))).flatten(1)
    store = ActivationStore.from_tensor(pooled, "layer4", labels=labels)
    from_store = top_impact(store, model=net, units=[5, 77, 300], return_impacts=True, progress=False)
    assert torch.allclose(from_store.impacts, fast.impacts, atol=1e-6)
    # a non-pooled layer needs the images
    with pytest.raises(NeurocoreError, match="probe="):
        top_impact(ActivationStore.from_tensor(pooled, "layer3", labels=labels), model=net, progress=False)


# ----------------------------------------------------------------------------------------------
# area chart


def test_area_chart_hand_example():
    acts = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.9, 4.0, -1.0])
    labels = torch.tensor([0, 1, 0, 0, 1, 1, 2, 2])
    t = activation_area_chart(acts, labels, ["a", "b", "c"], buckets=4)
    assert t["lower"].tolist() == [0.0, 1.0, 2.0, 3.0] and t["upper"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert t["count"].tolist() == [2, 2, 1, 2]  # [0,1) [1,2) [2,3) [3,4]; the negative image is left out
    assert t.attrs["negative"] == 1
    assert t["a"].tolist() == [0.5, 1.0, 0.0, 0.0]
    assert t["b"].tolist() == [0.5, 0.0, 1.0, 0.5]
    assert t["c"].tolist() == [0.0, 0.0, 0.0, 0.5]
    assert t["other"].tolist() == [0.0, 0.0, 0.0, 0.0]
    # chosen columns: "other" is what they leave out; an empty bucket is NaN
    t8 = activation_area_chart(acts, labels, ["a", "b", "c"], buckets=8, columns=["a"])
    assert list(t8.columns) == ["lower", "upper", "count", "a", "other"]
    assert t8["count"].tolist() == [1, 1, 1, 1, 1, 0, 0, 2]
    assert math.isnan(t8["a"][5]) and t8["other"].tolist()[7] == 1.0
    # default columns: the `top` with the highest peak fraction
    assert list(activation_area_chart(acts, labels, ["a", "b", "c"], buckets=4, top=2).columns)[3:] == ["a", "b", "other"]


def test_area_chart_multilabel_and_errors(tmp_path):
    acts = torch.tensor([1.0, 2.0, 3.0, 4.0])
    matrix = ConceptScores.from_tensor(
        torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), ["hound", "tabby", "animal"], source="labels"
    )
    t = activation_area_chart(acts, matrix, buckets=2, columns=["hound", "animal"])
    # buckets [0, 2): image 0; [2, 4]: images 1, 2, 3. Columns overlap (a hound is an animal)
    assert t["count"].tolist() == [1, 3]
    np.testing.assert_allclose(t["hound"], [1.0, 1 / 3])
    np.testing.assert_allclose(t["animal"], [1.0, 2 / 3])
    np.testing.assert_allclose(t["other"], [0.0, 1 / 3])
    with pytest.raises(NeurocoreError, match="no positive activation"):
        activation_area_chart(-acts, matrix)
    with pytest.raises(NeurocoreError, match="not among the label names"):
        activation_area_chart(acts, matrix, columns=["cat"])
    with pytest.raises(NeurocoreError, match="rows"):
        activation_area_chart(acts[:3], matrix)
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    activation_area_chart(acts, matrix, buckets=2, columns=["hound", "tabby"], path=path)
    assert path.is_file() and path.stat().st_size > 1000


# ----------------------------------------------------------------------------------------------
# real weights (optional): EfficientNet-Lite0 on a few ImageNet images


def test_efficientnet_lite0_real_images():
    from _models import efficientnet_lite0, imagenet_samples

    samples = imagenet_samples(every=200)  # 5 images of 5 classes
    net, transform = efficientnet_lite0()
    import PIL.Image

    images = torch.stack([transform(PIL.Image.open(f).convert("RGB")) for f, _ in samples])
    labels = torch.tensor([c for _, c in samples])
    head = head_after(net, "bn2")
    assert head.kind == "pooled" and isinstance(head.pooled, nn.Linear) and head.pooled is net.classifier
    probe = [(images[i], int(labels[i])) for i in range(len(samples))]
    units = list(range(0, 1280, 160))
    fast = top_impact(model=net, layer="bn2", probe=probe, units=units, return_impacts=True, batch_size=5, progress=False)
    # on 5 images some neurons never fire (max < 0.01): reported dead and skipped
    assert set(fast.status) <= {"ok", "dead"} and fast.status.count("ok") >= 4
    assert [s == "dead" for s in fast.status] == fast.dead.tolist()
    ok = ~fast.dead
    assert ((fast.top_impact[ok] >= 0) & (fast.top_impact[ok] <= 1)).all()  # shares of the total impact
    first = units[int(ok.nonzero()[0])]
    hooked = top_impact(model=net, head=Head("bn2"), probe=probe, units=[first], return_impacts=True, batch_size=5, progress=False)
    assert torch.allclose(hooked.impacts[:, 0], fast.impacts[:, units.index(first)], atol=1e-5)


def test_dead_threshold_minus_inf_keeps_signed_neurons():
    # One definition of "dead" everywhere (max activation < 0.01, the published rule); on a signed layer
    # an always-negative neuron that does change the loss is evaluated with dead_threshold=-inf.
    import math

    from neurocore.probe import dead_neurons

    torch.manual_seed(0)
    feats = torch.randn(40, 3)
    feats[:, 1] = -1.0 - feats[:, 1].abs()  # always negative, varying
    feats[:, 2] = 0.001 * torch.rand(40)
    assert dead_neurons(feats).tolist() == [False, True, True]
    assert dead_neurons(feats, -math.inf).tolist() == [False, False, False]
    fc = nn.Linear(3, 2)
    labels = (feats[:, 1] < -1.5).long()
    ti = top_impact(feats, head=Head("f", pooled=fc), labels=labels, return_impacts=True, progress=False)
    assert ti.status[1] == "dead"
    kept = top_impact(feats, head=Head("f", pooled=fc), labels=labels, return_impacts=True, progress=False,
                      dead_threshold=-math.inf)
    assert kept.status[1] != "dead" and not torch.isnan(kept.top_impact[1]).any()
