"""What the command-line tests share (``neurocore hint``, ``www`` and ``explain``): running the entry point
with captured output, and small class folders of coloured-square images with a network whose units know
the colours."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from neurocore.cli import main


def run(*argv):
    """``main(argv)`` -> ``(status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def coloured_squares(folder, classes, per_class: int = 4, *, noise: int = 60, seed: int = 0) -> None:
    """``folder/<class>/<i>.png``: 24×24 noise (0..``noise``) with a 12×12 square at a random place whose
    colour channel is the class's index (class c: channel c at 230)."""
    import PIL.Image

    gen = torch.Generator().manual_seed(seed)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            img = (torch.rand(24, 24, 3, generator=gen) * noise).to(torch.uint8)
            y, x = torch.randint(0, 12, (2,), generator=gen).tolist()
            img[y : y + 12, x : x + 12, c] = 230  # an object of the class's colour
            PIL.Image.fromarray(img.numpy()).save(folder / name / f"{i}.png")


def colour_net() -> nn.Module:
    """Channel c of layer ``"1"`` is colour channel c (1×1 identity conv, ReLU); the logits are the pooled
    channels (``"4"``, identity)."""
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3)[:, :, None, None])
        net[0].bias.zero_()
        net[4].weight.copy_(torch.eye(3))
        net[4].bias.zero_()
    return net


def truth_scores(classes, per_class: int) -> torch.Tensor:
    """The 0/1 image–class matrix of :func:`coloured_squares`' folder in ImageFolder's order (class folders
    sorted, files sorted inside), one column per class in ``classes``' order."""
    return torch.tensor([[1.0 if c == name else 0.0 for c in classes] for name in sorted(classes) for _ in range(per_class)])
