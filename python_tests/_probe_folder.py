"""A small probe folder for the Ray tests: random images in class sub-folders, one of them unreadable."""

from __future__ import annotations

from pathlib import Path


def write_probe_folder(root: Path) -> Path:
    """Write 9 random 12×12 RGB PNGs (seed 3) into each of ``root/a`` and ``root/b``, then overwrite
    ``b/4.png`` (dataset index 13 in sorted order) with bytes no decoder reads; returns ``root``."""
    import PIL.Image
    import torch

    g = torch.Generator().manual_seed(3)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(9):
            px = (torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
            PIL.Image.fromarray(px).save(root / c / f"{i}.png")
    (root / "b" / "4.png").write_bytes(b"\x89PNG broken")
    return root
