"""Every Python example of the README runs: each ```python block is executed on its own, with its
placeholders (paths, the vision–language checkpoint, the 20k concept set) replaced by small local
stand-ins. A placeholder that disappears from the README fails the test, so that it is kept in step."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import PIL.Image
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = "neurocore-readme-tiny"
WNIDS = ("n01443537", "n02124075", "n02084071")  # goldfish, Egyptian cat, dog


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)


def _images(root: Path, classes, n=5, size=40):
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = (torch.rand(size, size, 3, generator=g) * 80).byte()
            pixels[..., c % 3] += 150
            PIL.Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    import open_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "images", ["red", "green", "blue"])
    _images(tmp_path / "train", WNIDS)
    config = tmp_path / f"{TINY_CLIP}.json"
    config.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny-clip.bin"
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), checkpoint)
    other = tmp_path / "tiny-clip-simulator.bin"  # the simulator: the same architecture, other weights
    torch.manual_seed(1)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), other)
    return {
        '"path/to/images"': repr(str(tmp_path / "images")),
        '"path/to/train"': repr(str(tmp_path / "train")),
        '"open_clip:ViT-B-16:path/to/checkpoint.bin"': repr(f"open_clip:{TINY_CLIP}:{checkpoint}"),
        '"open_clip:ViT-L-14:path/to/other.bin"': repr(f"open_clip:{TINY_CLIP}:{other}"),
        'concepts="20k"': 'concepts=["red", "green", "blue", "dog"]',
    }


def test_readme_has_the_examples_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) == 4
    assert "write_html_report" in blocks[0]  # how to write the HTML report from Python
    assert "run_methods" in blocks[2] and "simulation_table" in blocks[2]  # several methods, one report


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_readme_python_example_runs(stand_ins, index, tmp_path):
    code = python_blocks()[index]
    used = [k for k in stand_ins if k in code]
    assert used, "this example has no placeholder: update the stand-ins"
    for placeholder in used:
        code = code.replace(placeholder, stand_ins[placeholder])
    namespace: dict = {"__name__": "readme"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: dead neurons and the like
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    if index == 0:
        assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "explanations.csv").is_file()
        assert "red" in (tmp_path / "out" / "index.html").read_text()
    elif index == 1:
        assert len(namespace["le"]) == 2048
    elif index == 2:
        run, table = namespace["run"], namespace["table"]
        assert list(run.explanations) == ["clip_dissect", "www"] and set(table["method"]) == {"clip_dissect", "www"}
        page = (tmp_path / "run" / "index.html").read_text()
        assert page.count('class="neuron-card"') + page.count("class='neuron-card'") == 64  # the cap per layer
        assert (tmp_path / "run" / "run.json").is_file() and (tmp_path / "run" / "www" / "explanations.csv").is_file()
    else:
        assert namespace["store"].key["layouts"] == {"features.5": "NHWC", "head": "NC"}
        assert namespace["maps"].shape == (5, 384, 4, 4) and namespace["grads"].gradients.shape == (5, 384, 4, 4)
        assert namespace["regions"].images.shape == (5, 3, 64, 64)
