"""A tiny open_clip architecture for the tests: one small transformer block per tower (embedding 16,
image 32 px, patches of 16), so that building and encoding take well under a second. open_clip builds it
with random weights (no model hub here)."""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_open_clip(folder: Path, name: str) -> str:
    """Write ``folder/name.json`` (:data:`TINY_CONFIG`) and register it with open_clip; returns ``name``."""
    import open_clip

    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return name
