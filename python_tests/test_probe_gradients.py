"""The layer-gradient runner: gradients at a layer's output as it left the module, against hook-free
autograd references (in-place ops re-implemented out of place), batched = per image, guided backprop
against nets whose ReLUs are hand-written autograd functions, hooks and flags restored on error."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe import LayerGradients, layer_gradients

# ---- reference nets: the same computation, written so that the layer's output is an explicit tensor ----


class _GuidedReLU(torch.autograd.Function):
    """Hand-written guided ReLU: forward relu, backward 1[out > 0] · max(g, 0)."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return (out > 0).to(g.dtype) * g.clamp(min=0)


class _GuidedReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.clamp(0, 6)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return ((out > 0) & (out < 6)).to(g.dtype) * g.clamp(min=0)


def _act(kind, guided):
    if kind == "relu":
        return _GuidedReLU.apply if guided else torch.relu
    return _GuidedReLU6.apply if guided else (lambda t: t.clamp(0, 6))


class ConvNet(nn.Module):
    """conv -> act(inplace) -> conv -> (+= skip) -> act(inplace) -> pool -> linear; the layer studied is conv2."""

    def __init__(self, act="relu", inplace=True):
        super().__init__()
        make = nn.ReLU if act == "relu" else nn.ReLU6
        self.kind = act
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = make(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act2 = make(inplace=inplace)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        h = self.act1(self.conv1(x))
        out = self.bn(self.conv2(h))
        out += h
        out = self.act2(out)
        return self.fc(out.mean(dim=(2, 3)))

    def reference(self, x, guided=False):
        """(conv2's output z, logits) with no in-place op and no hook; z is a graph leaf."""
        a = _act(self.kind, guided)
        h = a(self.conv1(x))
        z = self.conv2(h).detach().requires_grad_(True)
        out = a(self.bn(z) + h)
        return z, self.fc(out.mean(dim=(2, 3)))


class TokenNet(nn.Module):
    """[B, T, C] tokens: linear -> GELU -> linear (layer "proj") -> SiLU(inplace) -> mean token -> head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(8, 8)
        self.silu = nn.SiLU(inplace=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.silu(self.proj(self.gelu(self.embed(x)))).mean(dim=1))

    def reference(self, x):
        z = self.proj(self.gelu(self.embed(x))).detach().requires_grad_(True)
        return z, self.head(nn.functional.silu(z).mean(dim=1))


class LinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(7, 4)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))

    def reference(self, x, guided=False):
        z = self.fc1(x).detach().requires_grad_(True)
        return z, self.fc2(_act("relu", guided)(z))


def _reference(net, x, targets, guided=False):
    """Per image, one backward each: the plain definition of the gradient."""
    acts, grads = [], []
    for i in range(x.shape[0]):
        z, logits = net.reference(x[i : i + 1], guided) if guided else net.reference(x[i : i + 1])
        (g,) = torch.autograd.grad(logits[0, int(targets[i])], z)
        acts.append(z.detach())
        grads.append(g)
    return torch.cat(acts), torch.cat(grads)


def _net(cls, seed=0, **kw):
    torch.manual_seed(seed)
    net = cls(**kw)
    for m in net.modules():  # non-trivial BatchNorm statistics, so eval mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.double().eval()


def _hooks_clean(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, type(m).__name__
        assert not m._backward_hooks and not getattr(m, "_backward_pre_hooks", {}), type(m).__name__
        assert "forward" not in vars(m), f"{type(m).__name__}.forward patched"
    assert nn.ReLU.forward is _RELU_FORWARD and nn.ReLU6.forward is _RELU6_FORWARD


_RELU_FORWARD, _RELU6_FORWARD = nn.ReLU.forward, nn.ReLU6.forward

# ---- plain gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "layer", "shape"),
    [(ConvNet, "conv2", (6, 3, 7, 7)), (TokenNet, "proj", (6, 5, 4)), (LinearNet, "fc1", (6, 5))],
)
def test_plain_gradient_equals_hook_free_reference(cls, layer, shape):
    net = _net(cls)
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    classes = net(x).shape[1]
    targets = torch.arange(shape[0]) % classes
    res = layer_gradients(net, layer, x, targets, batch_size=4)
    ref_z, ref_g = _reference(net, x, targets)
    assert isinstance(res, LayerGradients) and res.layer == layer and res.rule is None
    assert res.activations.shape == ref_z.shape and res.gradients.shape == ref_g.shape
    torch.testing.assert_close(res.activations, ref_z)
    torch.testing.assert_close(res.gradients, ref_g)
    torch.testing.assert_close(res.logits, net(x).detach())
    # The value as it left the module: the following in-place activation has negative values to clip.
    assert (res.activations < 0).any()


def test_float32_cpu_results_and_batched_equals_per_image():
    net = _net(ConvNet).float()
    x = torch.randn(7, 3, 6, 6)
    t = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    whole = layer_gradients(net, "conv2", x, t, batch_size=7)
    assert whole.gradients.dtype == torch.float32 and whole.gradients.device.type == "cpu"
    for bs in (1, 3):
        part = layer_gradients(net, "conv2", x, t, batch_size=bs)
        torch.testing.assert_close(part.gradients, whole.gradients)
        torch.testing.assert_close(part.activations, whole.activations)
    one = layer_gradients(net, "conv2", x[4:5], t[4:5])
    torch.testing.assert_close(one.gradients[0], whole.gradients[4])


def test_weights_and_callable_targets():
    net = _net(LinearNet)
    x = torch.randn(5, 5, dtype=torch.float64)
    w = torch.randn(5, 4, dtype=torch.float64)
    by_weights = layer_gradients(net, "fc1", x, w)
    expected = sum(w[:, c : c + 1] * layer_gradients(net, "fc1", x, c).gradients for c in range(4))
    torch.testing.assert_close(by_weights.gradients, expected)
    by_callable = layer_gradients(net, "fc1", x, lambda logits: (logits * w).sum(dim=1))
    torch.testing.assert_close(by_callable.gradients, expected)
    # Activation x gradient at a linear head's input is a_k · W[c, k] (WWW's importance).
    res = layer_gradients(net, "relu", x, torch.tensor([3, 1, 0, 2, 3]))
    head = net.fc2.weight.detach()[[3, 1, 0, 2, 3]]
    torch.testing.assert_close(res.activations * res.gradients, res.activations * head)


def test_frozen_model_parameters_and_grad_untouched():
    net = _net(ConvNet)
    net.conv1.weight.requires_grad_(False)
    net.fc.weight.grad = torch.ones_like(net.fc.weight)
    before = {n: p.requires_grad for n, p in net.named_parameters()}
    x = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    layer_gradients(net, "conv2", x, torch.tensor([0, 1, 2]))
    assert {n: p.requires_grad for n, p in net.named_parameters()} == before
    assert torch.equal(net.fc.weight.grad, torch.ones_like(net.fc.weight))
    assert all(p.grad is None for n, p in net.named_parameters() if n != "fc.weight")
    # All parameters frozen: the gradient still exists.
    frozen = copy.deepcopy(net).requires_grad_(False)
    a = layer_gradients(frozen, "conv2", x, torch.tensor([0, 1, 2]))
    b = layer_gradients(net, "conv2", x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(a.gradients, b.gradients)


def test_no_grad_and_inference_mode_callers():
    net = _net(LinearNet)
    x = torch.randn(4, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    expected = layer_gradients(net, "fc1", x, t).gradients
    with torch.no_grad():
        torch.testing.assert_close(layer_gradients(net, "fc1", x, t).gradients, expected)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        xi = x.clone()
        torch.testing.assert_close(layer_gradients(net, "fc1", xi, t).gradients, expected)


def test_create_graph_keeps_the_graph():
    net = _net(LinearNet)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    res = layer_gradients(net, "fc1", x, torch.tensor([0, 1, 2]), create_graph=True)
    assert res.gradients.requires_grad
    # d/dx of Σ z·g (gradient x activation) exists and matches the reference's second derivative.
    (gx,) = torch.autograd.grad((res.activations * res.gradients).sum(), x)
    z = net.fc1(x)
    logits = net.fc2(torch.relu(z))
    (g,) = torch.autograd.grad(logits.gather(1, torch.tensor([[0], [1], [2]])).sum(), z, create_graph=True)
    (ref,) = torch.autograd.grad((z * g).sum(), x)
    torch.testing.assert_close(gx, ref)


def test_model_outputs_and_training_flags_unchanged():
    net = _net(ConvNet)
    net.train()
    net.bn.eval()  # a mixed state, restored exactly
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    state = copy.deepcopy(net.state_dict())
    flags = [m.training for m in net.modules()]
    net.eval()
    before = net(x)
    for m, f in zip(net.modules(), flags):
        m.training = f
    layer_gradients(net, "conv2", x, torch.tensor([0, 1, 2, 3]), rule="guided")
    assert [m.training for m in net.modules()] == flags
    for k, v in net.state_dict().items():  # BatchNorm running statistics included
        assert torch.equal(v, state[k]), k
    net.eval()
    assert torch.equal(net(x), before)
    _hooks_clean(net)


# ---- guided backprop -------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "relu6"])
@pytest.mark.parametrize("inplace", [True, False])
def test_guided_equals_hand_written_reference(act, inplace):
    net = _net(ConvNet, act=act, inplace=inplace)
    with torch.no_grad():  # scale up so that ReLU6 saturates somewhere (the upper mask matters)
        net.conv1.weight.mul_(6)
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 4])
    res = layer_gradients(net, "conv2", x, t, rule="guided", batch_size=2)
    ref_z, ref_g = _reference(net, x, t, guided=True)
    torch.testing.assert_close(res.activations, ref_z)
    torch.testing.assert_close(res.gradients, ref_g)
    plain = layer_gradients(net, "conv2", x, t)
    assert not torch.allclose(plain.gradients, res.gradients)  # the rule changed something
    if act == "relu6":
        h = net.act1(net.conv1(x).clone())
        assert (h == 6).any()
    _hooks_clean(net)


def test_guided_on_linear_net_and_layer_that_is_a_relu():
    net = _net(LinearNet)
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    res = layer_gradients(net, "fc1", x, t, rule="guided")
    torch.testing.assert_close(res.gradients, _reference(net, x, t, guided=True)[1])
    # At the ReLU's own output, its rule (which acts on what it passes down) does not apply.
    at_relu = layer_gradients(net, "relu", x, t, rule="guided")
    torch.testing.assert_close(at_relu.gradients, net.fc2.weight.detach()[t])


def test_guided_warns_about_other_activation_modules_and_functional_relu():
    net = _net(TokenNet)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"GELU \(x1\).*SiLU \(x1\)"):
        layer_gradients(net, "embed", x, torch.tensor([0, 1]), rule="guided")

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.relu, self.fc2 = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(self.relu(nn.functional.relu(self.fc1(x))))

    with pytest.warns(UserWarning, match=r"functional activations called in forward relu"):
        layer_gradients(Functional(), "fc1", torch.randn(2, 3), torch.tensor([0, 1]), rule="guided")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer_gradients(_net(LinearNet), "fc1", torch.randn(2, 5, dtype=torch.float64), 0, rule="guided")
        layer_gradients(net, "embed", x, torch.tensor([0, 1]))  # no rule: nothing to warn about


def test_custom_rules_extension_point():
    net = _net(TokenNet)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rules alone are targeted: no warning about the SiLU they leave
        zero = layer_gradients(net, "embed", x, t, rules={nn.GELU: lambda out, g: torch.zeros_like(g)})
    assert torch.count_nonzero(zero.gradients) == 0
    same = layer_gradients(net, "embed", x, t, rules={nn.GELU: lambda out, g: g})
    torch.testing.assert_close(same.gradients, layer_gradients(net, "embed", x, t).gradients)
    with pytest.raises(NeurocoreError, match="rules must map nn.Module subclasses"):
        layer_gradients(net, "embed", x, t, rules={"GELU": lambda out, g: g})
    with pytest.raises(NeurocoreError, match=r"rule must be None .* got 'guidedd'"):
        layer_gradients(net, "embed", x, t, rule="guidedd")


# ---- cleanup on errors ------------------------------------------------------------------------------


class _Raises(nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def forward(self, x):
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("rule", [None, "guided"])
def test_hooks_removed_and_flags_restored_when_model_raises(exc, rule):
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), _Raises(exc), nn.Linear(4, 2))
    net.train()
    with pytest.raises(type(exc)):
        layer_gradients(net, "0", torch.randn(2, 3), torch.tensor([0, 1]), rule=rule)
    assert all(m.training for m in net.modules())
    _hooks_clean(net)
    assert torch.is_grad_enabled()


def test_hooks_removed_after_neurocore_errors():
    net = _net(ConvNet)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(NeurocoreError, match=r"class indices in \[0, 5\) \(the model outputs 5 logits\); got \[7\]"):
        layer_gradients(net, "conv2", x, torch.tensor([0, 7]), rule="guided")
    _hooks_clean(net)


# ---- errors -----------------------------------------------------------------------------------------


def test_errors_name_the_problem():
    net = _net(LinearNet)
    x = torch.randn(3, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    with pytest.raises(NeurocoreError, match=r"layer 'fc3' not found in LinearNet; close matches: .*fc1"):
        layer_gradients(net, "fc3", x, t)
    with pytest.raises(NeurocoreError, match="one module name"):
        layer_gradients(net, ["fc1"], x, t)
    with pytest.raises(NeurocoreError, match=r"images must be floating point.*torch.int64"):
        layer_gradients(net, "fc1", torch.ones(3, 5, dtype=torch.int64), t)
    with pytest.raises(NeurocoreError, match="images is empty"):
        layer_gradients(net, "fc1", torch.ones(0, 5), t[:0])
    with pytest.raises(NeurocoreError, match="targets has 2 rows but images has 3"):
        layer_gradients(net, "fc1", x, t[:2])
    with pytest.raises(NeurocoreError, match=r"\[0, 4\) \(the model outputs 4 logits\); got \[4\] at images \[2\]"):
        layer_gradients(net, "fc1", x, torch.tensor([0, 1, 4]))
    with pytest.raises(NeurocoreError, match="class indices >= 0"):
        layer_gradients(net, "fc1", x, torch.tensor([0, -1, 2]))
    with pytest.raises(NeurocoreError, match=r"must be integers; got torch.float32"):
        layer_gradients(net, "fc1", x, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(NeurocoreError, match="the model outputs 4 logits; got 3 columns"):
        layer_gradients(net, "fc1", x, torch.ones(3, 3, dtype=torch.float64))
    wrong_rank = r"Tensor\[N\] class indices or Tensor\[N, classes\] logit weights; got shape \(3, 4, 1\)"
    with pytest.raises(NeurocoreError, match=wrong_rank):
        layer_gradients(net, "fc1", x, torch.ones(3, 4, 1))
    with pytest.raises(NeurocoreError, match=r"Tensor\[3\] \(one score per image\); got \(3, 4\)"):
        layer_gradients(net, "fc1", x, lambda logits: logits)
    with pytest.raises(NeurocoreError, match="batch_size must be an integer >= 1"):
        layer_gradients(net, "fc1", x, t, batch_size=0)


def test_layer_that_never_runs_or_runs_twice():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.unused = nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(3, 3)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.fc2(self.act(self.fc1(self.act(x))))

    net = Shared()
    x = torch.randn(2, 3)
    with pytest.raises(NeurocoreError, match=r"layer 'act' ran 2 times in one forward pass"):
        layer_gradients(net, "act", x, torch.tensor([0, 1]))
    with pytest.raises(NeurocoreError, match=r"'unused'\]? never ran"):
        layer_gradients(net, "unused", x, torch.tensor([0, 1]))
    _hooks_clean(net)


def test_sequence_first_layer_is_found_and_transposed():
    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):  # x: [B, T, C] -> tokens [T, B, C] inside
            return self.head(self.proj(x.transpose(0, 1)).mean(dim=0))

    torch.manual_seed(0)
    model = SeqFirst()
    x = torch.randn(2, 5, 4)
    res = layer_gradients(model, "proj", x, torch.tensor([0, 1]))
    z = model.proj(x.transpose(0, 1)).detach().requires_grad_(True)  # [T, B, C]
    (g,) = torch.autograd.grad(model.head(z.mean(0)).gather(1, torch.tensor([[0], [1]])).sum(), z)
    torch.testing.assert_close(res.activations, z.detach().transpose(0, 1))
    torch.testing.assert_close(res.gradients, g.transpose(0, 1))
    # T == B: the batch axis is found from one image, as in the recording
    x = torch.randn(2, 2, 4)
    res = layer_gradients(model, "proj", x, torch.tensor([0, 1]))
    torch.testing.assert_close(res.activations, model.proj(x.transpose(0, 1)).detach().transpose(0, 1))


def test_resnet18_layer3_equals_manual_computation():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(3, 3, 64, 64)
    t = torch.tensor([1, 5, 9])
    res = layer_gradients(net, "layer3", x, t, batch_size=2)
    # Manual: the same forward with no hook, layer3's output made a leaf.
    with torch.no_grad():
        h = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))
        z = net.layer3(h)
    z = z.clone().requires_grad_(True)
    logits = net.fc(torch.flatten(net.avgpool(net.layer4(z)), 1))
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), z)
    torch.testing.assert_close(res.activations, z.detach())
    torch.testing.assert_close(res.gradients, g, rtol=1e-4, atol=1e-5 * g.abs().max().item())
    # The last block's bn2 is followed by `out += identity` and an in-place ReLU.
    bn = layer_gradients(net, "layer3.1.bn2", x, t, rule="guided")
    assert (bn.activations < 0).any()
    _hooks_clean(net)


class _GuidedModule(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Leaf(nn.Module):
    """Wraps the studied layer in the reference copy: its output becomes a graph leaf, kept."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        self.z = self.inner(x).detach().requires_grad_(True)
        return self.z


@pytest.mark.parametrize(("arch", "layer"), [("resnet18", "layer2"), ("mobilenet_v2", "features.6")])
def test_guided_on_torchvision_models_equals_swapped_copy(arch, layer):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([3, 6])
    res = layer_gradients(net, layer, x, t, rule="guided")
    # Reference: a copy whose ReLU/ReLU6 modules are hand-written guided functions (out of place).
    ref = copy.deepcopy(net)
    for name, m in list(ref.named_modules()):
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            parent, _, child = name.rpartition(".")
            fn = _GuidedReLU.apply if type(m) is nn.ReLU else _GuidedReLU6.apply
            setattr(ref.get_submodule(parent), child, _GuidedModule(fn))
    parent, _, child = layer.rpartition(".")
    leaf = _Leaf(ref.get_submodule(layer))
    setattr(ref.get_submodule(parent) if parent else ref, child, leaf)
    logits = ref(x)
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), leaf.z)
    torch.testing.assert_close(res.activations, leaf.z.detach())
    # Random-weight MobileNet gradients are ~1e-7: tolerances relative to the gradient's scale.
    tol = {"rtol": 1e-4, "atol": 1e-5 * g.abs().max().item()}
    torch.testing.assert_close(res.gradients, g, **tol)
    plain = layer_gradients(net, layer, x, t)
    assert not torch.allclose(plain.gradients, g, **tol)
    _hooks_clean(net)


def test_layer_returning_a_tuple_attention():
    class AttnNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.embed(x)
            a, _ = self.attn(h, h, h)
            return self.head(a.relu_().mean(dim=1))

    torch.manual_seed(0)
    net = AttnNet().double().eval()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    t = torch.tensor([2, 0, 1])
    res = layer_gradients(net, "attn", x, t, batch_size=2)
    h = net.embed(x)
    z = net.attn(h, h, h)[0].detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.head(z.relu().mean(dim=1)).gather(1, t[:, None]).sum(), z)
    torch.testing.assert_close(res.activations, z.detach())
    torch.testing.assert_close(res.gradients, g)
    _hooks_clean(net)


def test_device_follows_the_model(device):
    net = _net(ConvNet).float()
    x = torch.randn(3, 3, 6, 6)
    t = torch.tensor([4, 0, 2])
    on_cpu = layer_gradients(net, "conv2", x, t, rule="guided")
    res = layer_gradients(net.to(device), "conv2", x, t, rule="guided")  # images on the CPU: moved
    assert res.gradients.device.type == "cpu" and res.activations.dtype == torch.float32
    torch.testing.assert_close(res.gradients, on_cpu.gradients, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(res.activations, on_cpu.activations, rtol=1e-3, atol=1e-5)
    kept = layer_gradients(net, "conv2", x, t, create_graph=True)
    assert kept.gradients.device.type == torch.device(device).type


@pytest.mark.parametrize("create_graph", [False, True])
def test_layer_off_the_path_to_the_logits(create_graph):
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.side, self.fc = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            self.side(x)  # computed and thrown away (as an auxiliary head in eval mode)
            return self.fc(x)

    net = Branch()
    with pytest.raises(NeurocoreError, match="do not depend differentiably on layer 'side'.*not used"):
        layer_gradients(net, "side", torch.randn(2, 3), torch.tensor([0, 1]), create_graph=create_graph)
    _hooks_clean(net)


def test_channels_last_and_sequence_first_layers_come_back_canonical():
    # The gradient runner shares the recording's layouts: an NHWC Linear and a sequence-first encoder
    # layer give [N, C, H, W] and [N, T, C], equal to permuted hook-free references.
    from neurocore.probe import layer_gradients as lg

    class NHWC(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 6, 2, stride=2)
            self.mix = nn.Linear(6, 6)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.mix(self.embed(x).permute(0, 2, 3, 1)).mean((1, 2)))

    torch.manual_seed(0)
    model = NHWC().eval()
    x = torch.randn(4, 3, 8, 8)
    targets = torch.tensor([0, 1, 2, 0])
    res = lg(model, "mix", x, targets)
    z = model.mix(model.embed(x).permute(0, 2, 3, 1)).detach().requires_grad_(True)
    score = model.fc(z.mean((1, 2))).gather(1, targets[:, None]).sum()
    (g,) = torch.autograd.grad(score, z)
    torch.testing.assert_close(res.activations, z.detach().permute(0, 3, 1, 2))
    torch.testing.assert_close(res.gradients, g.permute(0, 3, 1, 2))

    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)
            self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.enc(self.embed(x.flatten(2).permute(2, 0, 1))).mean(0))

    model = SeqFirst().eval()
    x = torch.randn(3, 3, 2, 2)  # T = 4 tokens, B = 3
    res = lg(model, "enc", x, torch.tensor([0, 1, 0]), layout="LNC")
    assert res.activations.shape == (3, 4, 8)
    with pytest.raises(NeurocoreError, match="layout 'NLC'"):
        lg(model, "enc", x, torch.tensor([0, 1, 0]), layout="NLC")
