"""WWW at the paper's scale (synthetic embeddings) and class importance batched vs one image at a time.

    python benchmarks/bench_www.py            # writes the "www-scale" section of benchmarks/RESULTS.md

ACS: K = 2,048 neurons × n = 40 images, M = 82,115 concepts (WordNet nouns), d = 512 (CLIP ViT-B/32),
float32, on the CPU (and CUDA when present). Peak memory is measured in a fresh subprocess from the
process's peak RSS (``ru_maxrss``) before and after the call; "extra" = peak growth − the K×M output.
The released code materialises the (K·n)×M similarity matrix: 81,920 × 82,115 × 4 B = 26.9 GB.

Class importance: EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``, random weights: timing only) at
224 px, layer ``bn2``: neurocore's batched closed form (one forward pass per batch, no backward) vs the
released procedure (one image at a time, forward and backward), on the same images, same numbers.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

K, N_IMG, M, D = 2048, 40, 82115, 512


def _child_acs(device: str) -> dict:
    from neurocore.methods.www import adaptive_cosine_similarity

    g = torch.Generator().manual_seed(0)
    images = torch.randn(K, N_IMG, D, generator=g).to(device)
    concepts = torch.randn(M, D, generator=g).to(device)
    template = torch.randn(D, generator=g).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    out = adaptive_cosine_similarity(images, concepts, template)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    out_bytes = out.numel() * out.element_size()
    if device == "cuda":
        extra = torch.cuda.max_memory_allocated() - base - out_bytes
    else:
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before - out_bytes
    # a spot check against the per-image definition for a few neurons and concepts
    import torch.nn.functional as F

    ref = (F.normalize(images[:3].double(), dim=2) @ F.normalize(concepts[:50].double(), dim=1).T).sum(1) - (
        F.normalize(images[:3].double(), dim=2) @ F.normalize(template.double(), dim=0)).sum(1)[:, None]
    err = float((out[:3, :50].double() - ref).abs().max())
    return {"device": device, "seconds": seconds, "extra_gb": max(extra, 0) / 1e9, "output_gb": out_bytes / 1e9,
            "inputs_gb": (images.numel() + concepts.numel()) * 4 / 1e9, "max_abs_err": err}


def _child_importance(n_images: int) -> dict:
    import timm

    from neurocore.methods.www import class_importance

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n_images, 3, 224, 224, generator=g)
    labels = torch.randint(1000, (n_images,), generator=g)
    probe = [(images[i], int(labels[i])) for i in range(n_images)]
    t = time.perf_counter()
    batched = class_importance(model, "bn2", probe, batch_size=32)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = class_importance(model, "bn2", probe, batch_size=1, method="autograd")
    t_single = time.perf_counter() - t
    err = float((batched - single).abs().max() / batched.abs().max())
    return {"images": n_images, "batched_s": t_batched, "one_at_a_time_s": t_single, "ratio": t_single / t_batched,
            "max_rel_diff": err, "threads": torch.get_num_threads()}


def _run_child(kind: str, arg: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, arg], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from _results import write_section

    rows = [_run_child("acs", "cpu")]
    if torch.cuda.is_available():
        rows.append(_run_child("acs", "cuda"))
    imp = _run_child("importance", os.environ.get("WWW_BENCH_IMAGES", "64"))
    lines = [
        "## WWW at the paper's scale",
        "",
        f"`python benchmarks/bench_www.py`. ACS of K={K:,} neurons × {N_IMG} images against M={M:,} concepts, d={D}, "
        "float32, with the template term. The released code builds the (K·n)×M matrix: 26.9 GB.",
        "",
        "| device | seconds | inputs (GB) | output K×M (GB) | peak beyond inputs + output (GB) | max abs error vs definition |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['device']} | {r['seconds']:.2f} | {r['inputs_gb']:.2f} | {r['output_gb']:.2f} | {r['extra_gb']:.3f} | {r['max_abs_err']:.1e} |")
    lines += [
        "",
        f"Class importance, EfficientNet-Lite0 (random weights, timing only), layer `bn2` (1280×7×7), {imp['images']} images "
        f"at 224 px, {imp['threads']} CPU threads: batched closed form {imp['batched_s']:.1f} s, one image at a time with "
        f"autograd (the released procedure) {imp['one_at_a_time_s']:.1f} s: **{imp['ratio']:.1f}×**; largest difference "
        f"{imp['max_rel_diff']:.1e} of the largest importance.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("www-scale", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        result = _child_acs(sys.argv[3]) if sys.argv[2] == "acs" else _child_importance(int(sys.argv[3]))
        print(json.dumps(result))
    else:
        main()
