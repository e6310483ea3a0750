"""The demo's small CNN and its deterministic training on the concept world."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._cache import weights_digest


class ConceptWorldCNN(nn.Module):
    """Four conv blocks, global average pooling and a linear classifier.

    Module names (what ``record`` and ``dissect`` take as layers): ``block1`` (16 channels at
    S/2), ``block2`` (32 channels at S/4), ``block3`` (64 channels at S/4), ``block4`` (64
    channels at S/4: its spatial mean *is* the penultimate feature vector), ``fc`` (one logit per
    class). Each block is convolution, batch norm, ReLU.

    Args:
        num_classes: outputs of ``fc``.
        widths: channels of the four blocks.

    Example:
        >>> net = ConceptWorldCNN(24)
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 24])
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = (16, 32, 64, 64)):
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise NeurocoreError(f"widths must be 4 positive channel counts; got {tuple(widths)}")
        w1, w2, w3, w4 = widths
        self.block1 = _block(3, w1, stride=2)
        self.block2 = _block(w1, w2, stride=2)
        self.block3 = _block(w2, w3, stride=1)
        self.block4 = _block(w3, w4, stride=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.fc(self.pool(x).flatten(1))


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # Strided convolutions rather than max pooling: on the CPU max pooling took a quarter of the
    # training time; four blocks with strides reach higher accuracy in less time than three with pooling.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


@dataclass(frozen=True)
class TrainingResult:
    """A trained demo model and what training saw.

    Attributes:
        model: the trained network, in eval mode, on the CPU.
        losses: mean training loss of every epoch.
        train_accuracy: accuracy on the training images after the last epoch (eval mode).
        digest: SHA-256 of the weights (the determinism check: same seed, same digest).
    """

    model: ConceptWorldCNN
    losses: tuple[float, ...]
    train_accuracy: float
    digest: str


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None = 1) -> Iterator[None]:
    """Seed torch, force deterministic algorithms and (optionally) a fixed thread count; restore all
    of it afterwards, so the caller's random state and settings are untouched.

    The thread count is fixed because CPU kernels may split reductions by thread, and a different
    split sums in a different order.
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            torch.use_deterministic_algorithms(True)
            if threads is not None:
                torch.set_num_threads(threads)
            yield
        finally:
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
            torch.set_num_threads(old_threads)


def train_cnn(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-2,
    label_smoothing: float = 0.1,
    seed: int = 0,
    widths: Sequence[int] = (16, 32, 64, 64),
    threads: int | None = 1,
    progress: bool = True,
) -> TrainingResult:
    """Train :class:`ConceptWorldCNN` with Adam and a cosine learning-rate schedule, deterministically.

    Same inputs and seed give bit-identical weights on the same machine and torch build
    (initialisation and shuffling come from the seed, deterministic algorithms are enforced, the
    thread count is fixed; see :func:`deterministic`). Runs on the CPU.

    Args:
        images (Tensor[N, 3, S, S]): training images in [0, 1].
        labels (Tensor[N], int64): class indices in ``[0, num_classes)``.
        num_classes: outputs of the classifier.
        epochs, batch_size, lr: the optimisation settings (Adam, one-cycle schedule peaking at lr).
        label_smoothing: of the cross-entropy loss. Without it some logits grow on images of other
            classes (a ring's features are large everywhere), so a final-layer neuron's most
            activating images can be of another class although every prediction is right; 0.1
            keeps each logit's top images within its class.
        seed: initialisation and shuffling seed.
        widths: channels of the four conv blocks.
        threads: torch CPU threads during training (None: leave as is, which may change the
            weights' last bits from one machine's thread count to another's).
        progress: show a progress bar over the epochs.

    Returns:
        :class:`TrainingResult`.

    Raises:
        NeurocoreError: empty or mismatched inputs, labels out of range, bad settings.

    Example:
        >>> images, labels = torch.rand(8, 3, 24, 24), torch.tensor([0, 1] * 4)
        >>> run = lambda: train_cnn(images, labels, 2, epochs=1, widths=(4, 4, 4, 4), progress=False)
        >>> first = run()
        >>> len(first.losses), first.model.training, first.digest == run().digest  # same seed, same weights
        (1, False, True)
    """
    from tqdm.auto import tqdm

    if images.dim() != 4 or images.shape[0] == 0 or images.shape[0] != labels.shape[0]:
        raise NeurocoreError(
            f"train_cnn needs images Tensor[N, 3, S, S] and labels Tensor[N] with N >= 1; got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise NeurocoreError(f"labels must lie in [0, {num_classes}); got {int(labels.min())}..{int(labels.max())}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or not 0 <= label_smoothing < 1:
        raise NeurocoreError(
            f"epochs and batch_size must be >= 1, lr > 0 and 0 <= label_smoothing < 1; got {epochs}, "
            f"{batch_size}, {lr}, {label_smoothing}"
        )
    images = images.detach().to("cpu", torch.float32)
    labels = labels.detach().to("cpu", torch.int64)
    n = images.shape[0]
    steps_per_epoch = -(-n // batch_size)
    with deterministic(seed, threads):
        model = ConceptWorldCNN(num_classes, widths)
        g = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        losses = []
        bar = tqdm(range(epochs), desc="training the demo CNN", unit="epoch", disable=not progress, leave=False)
        for _ in bar:
            model.train()
            order = torch.randperm(n, generator=g)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(images[idx]), labels[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * idx.numel()
            losses.append(total / n)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(images[s : s + 512]).argmax(1) for s in range(0, n, 512)])
        accuracy = float((pred == labels).float().mean())
    return TrainingResult(model, tuple(losses), accuracy, weights_digest(model))


class _Prototypes(nn.Module):
    """Per pixel, ``relu(1 - ||pixel - prototype_j|| / radius)`` for every prototype colour j."""

    def __init__(self, prototypes: torch.Tensor, radius: float):
        super().__init__()
        self.register_buffer("prototypes", prototypes.view(-1, 3, 1, 1).float())
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x.unsqueeze(1) - self.prototypes.unsqueeze(0)).square().sum(2).sqrt()  # [B, P, H, W]
        return torch.relu(1.0 - dist / self.radius)


class PlantedConceptNet(nn.Module):
    """A network whose neurons mean what they were built to mean (no training): the test bed's
    planted truth.

    ``colours`` has one unit per colour of the world: the share of pixels (soft, within a radius)
    of that colour's exact RGB. ``backgrounds`` has one unit per background: the share of pixels of
    that background's grey. Dissected with the world's exact concept scores, unit j of ``colours``
    must be labelled ``world.colours[j]`` and unit j of ``backgrounds`` ``world.backgrounds[j]``.
    The output is both layers' spatial means, concatenated.

    Example:
        >>> from neurocore.demo import ConceptWorld
        >>> world = ConceptWorld()
        >>> net = PlantedConceptNet(world)
        >>> net(world.sample(1, seed=0).images).shape
        torch.Size([24, 6])
    """

    def __init__(self, world):
        from neurocore.demo._world import _BACKGROUND_LEVEL, _RGB

        super().__init__()
        self.colours = _Prototypes(torch.tensor([_RGB[c] for c in world.colours]), radius=0.35)
        self.backgrounds = _Prototypes(torch.tensor([[_BACKGROUND_LEVEL[b]] * 3 for b in world.backgrounds]), radius=0.15)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.colours(x).mean((2, 3)), self.backgrounds(x).mean((2, 3))], dim=1)
