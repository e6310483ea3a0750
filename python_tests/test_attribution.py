"""The attribution baselines against grad-cam and lime called directly (ALGORITHMS.md §5)."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pytorch_grad_cam", reason="needs the attribution extra (grad-cam)")
pytest.importorskip("lime", reason="needs the attribution extra (lime)")

from neurocore import NeurocoreError  # noqa: E402
from neurocore.methods.attribution import METHODS, attribute  # noqa: E402


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))


@pytest.mark.parametrize("method,cls", [("gradcam", "GradCAM"), ("scorecam", "ScoreCAM"), ("ablationcam", "AblationCAM")])
def test_cams_equal_the_library(method, cls):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x, t = _net(), torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 1])
    net.train()
    ours = attribute(net, x, t, method=method, layer="2", batch_size=2)
    assert net.training  # mode restored
    with getattr(pytorch_grad_cam, cls)(model=net, target_layers=[net[2]]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    assert ours.shape == (3, 12, 12) and ours.dtype == torch.float32
    assert float(ours.min()) >= 0 and float(ours.max()) <= 1
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


def test_lime_equals_the_library_and_is_seeded():
    from lime import lime_image

    net, x = _net(), torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    seg = lambda img: (np.arange(144).reshape(12, 12) // 3 % 4) + 4 * (np.arange(144).reshape(12, 12) // 72)
    ours = attribute(net, x, torch.tensor([1, 2]), method="lime", num_samples=60, batch_size=20, seed=3, segmentation_fn=seg)
    again = attribute(net, x, torch.tensor([1, 2]), method="lime", num_samples=60, batch_size=20, seed=3, segmentation_fn=seg)
    assert torch.equal(ours, again)
    assert ours.shape == (2, 12, 12) and float(ours.min()) >= 0 and float(ours.max()) <= 1

    def classify(b):
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(b, dtype=torch.float32).permute(0, 3, 1, 2)), 1).numpy()

    exp = lime_image.LimeImageExplainer(random_state=3).explain_instance(
        x[1].permute(1, 2, 0).double().numpy(), classify, labels=(2,), top_labels=None, hide_color=0, num_samples=60,
        batch_size=20, segmentation_fn=seg, random_seed=3)
    w = dict(exp.local_exp[2])
    expected = np.clip(np.vectorize(lambda s: w.get(s, 0.0))(exp.segments), 0, None)
    expected = expected / expected.max() if expected.max() > 0 else expected
    np.testing.assert_allclose(ours[1].numpy(), expected, atol=1e-6)


def test_lime_default_segmentation_runs():
    maps = attribute(_net(), torch.rand(1, 3, 16, 16), 0, method="lime", num_samples=30, seed=0)
    assert maps.shape == (1, 16, 16) and float(maps.max()) <= 1


def test_cam_points_at_the_planted_object():
    # one detector of "red" pixels feeding class 0: Grad-CAM of class 0 lies on the red square
    net = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1)); net[0].bias.zero_()
        net[4].weight.copy_(torch.tensor([[1.0], [-1.0]])); net[4].bias.zero_()
    x = torch.zeros(1, 3, 8, 8); x[0, 0, 2:5, 3:6] = 1.0
    maps = attribute(net, x, 0, method="gradcam", layer="1")
    assert bool((maps[0] > 0.5).equal(x[0, 0] > 0.5))


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam"])
def test_cams_of_a_model_without_parameters(method):
    # grad-cam reads the device from the model's first parameter (StopIteration before the fix): the same
    # maps as the same computation with one parameter
    class Layer(nn.Module):
        def forward(self, x):
            return torch.relu(x[:, :1] - x[:, 1:2] - x[:, 2:3])

    class Net(nn.Module):
        def __init__(self, with_parameter):
            super().__init__()
            self.detector = Layer()
            if with_parameter:
                self.unused = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            m = self.detector(x).mean((2, 3))
            return torch.cat([m, -m], 1)

    x = torch.zeros(2, 3, 8, 8); x[0, 0, 2:5, 3:6] = 1.0; x[1, 0, 0:3, 0:2] = 1.0
    bare, marked = Net(False), Net(True)
    assert next(bare.parameters(), None) is None
    maps = attribute(bare, x, 0, method=method, layer="detector", batch_size=2)
    assert torch.equal(maps, attribute(marked, x, 0, method=method, layer="detector", batch_size=2))
    assert bool((maps > 0.5).equal(x[:, 0] > 0.5))  # on the red squares


def test_errors():
    net = _net()
    with pytest.raises(NeurocoreError, match="method must name methods among"):
        attribute(net, torch.rand(1, 3, 8, 8), 0, method="gradcam++")
    with pytest.raises(NeurocoreError, match="needs layer="):
        attribute(net, torch.rand(1, 3, 8, 8), 0, method="gradcam")
    with pytest.raises(NeurocoreError, match="close matches"):
        attribute(net, torch.rand(1, 3, 8, 8), 0, method="gradcam", layer="3x")
    with pytest.raises(NeurocoreError, match="one class index per image"):
        attribute(net, torch.rand(2, 3, 8, 8), [0, 1, 2], method="gradcam", layer="2")
    assert METHODS == ("gradcam", "scorecam", "ablationcam", "lime")


def test_targets_outside_the_outputs_are_refused_naming_the_range():
    # before the fix: 99 gave grad-cam's "need at least one array to concatenate", -1 the last class silently
    net, x = _net(), torch.rand(2, 3, 8, 8)
    for method, layer in [("gradcam", "2"), ("scorecam", "2"), ("lime", None)]:
        with pytest.raises(NeurocoreError, match=r"targets must be class indices in \[0, 3\).*\[99\]"):
            attribute(net, x, [0, 99], method=method, layer=layer, num_samples=10)
        with pytest.raises(NeurocoreError, match=r"targets .*\[0, 3\).*\[-1\]"):
            attribute(net, x, -1, method=method, layer=layer, num_samples=10)
    net.train()
    with pytest.raises(NeurocoreError):
        attribute(net, x, 5, method="gradcam", layer="2")
    assert net.training  # mode restored after the check's forward pass


def test_layer_without_spatial_maps_is_refused_naming_its_shape():
    # before the fix: grad-cam's raw "ValueError: Invalid grads shape" for the [B, 3] logits layer
    net = _net()
    with pytest.raises(NeurocoreError, match=r"layer '6'.*\(1, 3\).*convolutional"):
        attribute(net, torch.rand(2, 3, 8, 8), 0, method="gradcam", layer="6")

    class Tokens(nn.Module):  # a ViT-like block: [B, T, C] tokens, no reshape in attribute
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            t = self.embed(x.flatten(2).transpose(1, 2))  # [B, H*W, 4]
            return self.head(t.mean(1))

    with pytest.raises(NeurocoreError, match=r"layer 'embed'.*\(1, 64, 4\)"):
        attribute(Tokens(), torch.rand(2, 3, 8, 8), 0, method="scorecam", layer="embed")


def test_method_spellings_are_one_normalisation():
    from neurocore.methods.attribution import method_name
    from neurocore.report._run import BASELINES, _baseline_name

    net, x = _net(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    plain = attribute(net, x, 1, method="gradcam", layer="2")
    for spelling in ("grad-cam", "Grad-CAM", "GRADCAM"):
        assert torch.equal(attribute(net, x, 1, method=spelling, layer="2"), plain)
    assert [method_name(m) for m in ("score-cam", "ablation-cam", "LIME")] == ["scorecam", "ablationcam", "lime"]
    for shown, own in BASELINES.items():
        assert _baseline_name(shown) == _baseline_name(own) == shown
    with pytest.raises(NeurocoreError, match=r"baselines must name .*got 'gradcam\+\+'"):
        _baseline_name("gradcam++")


def test_image_maps_targets_outside_the_outputs_are_refused():
    from neurocore.report import image_maps

    net = _net()
    probe = [(torch.rand(3, 8, 8), i % 3) for i in range(3)]
    with pytest.raises(NeurocoreError, match=r"targets .*\[0, 3\).*\[99\]"):
        image_maps(net, "2", probe, [0, 1], targets=99, baselines=("grad-cam",), www=False)
