"""Benchmark LE's learning step (neurocore.methods._linear_learn) for a whole layer.

* greedy_search for all K neurons of a layer (one lstsq_gram call per round, Gram statistics once)
  against the released code's procedure: a per-neuron Python loop that fits every candidate model
  with 100 full-batch Adam steps (torch.nn.Linear + MSELoss, lr 3e-1 as in the released
  ``train_linear_model``; the paper gives no learning rate) and scores it with np.corrcoef on val.
  Same inputs, same process, same thread count, same ranking (from our elastic net). The loop runs
  on a few neurons and is extrapolated per neuron; we report time per neuron for both and the ratio.
* elastic_net for the whole layer (no baseline: the released GLM-SAGA needs a GPU and minutes).

Data are synthetic with the sizes of a tiny-ImageNet probe split (7,000 train / 1,000 val images)
and ResNet-50 layer4's width (K = 2,048): a label-mode concept matrix (200 one-hot classes plus
400 superclass columns, M = 600) and a SigLIP-like one (sigmoid of cosine similarities of
clustered embeddings, M = 8,438 as the released 20k-word set after filtering).
``--write`` replaces the ``bench_linear`` section of benchmarks/RESULTS.md.

    python benchmarks/bench_linear.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import time

import numpy as np
import torch

import neurocore
from neurocore.methods._linear_learn import elastic_net, greedy_search, rank_concepts

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import machine, write_section  # noqa: E402

ADAM_STEPS, ADAM_LR = 100, 3e-1  # the released code's train_linear_model


def label_data(n: int, K: int, classes: int, supers: int, seed: int):
    """Label mode: one-hot classes plus superclass columns (sums of member one-hots); neurons respond
    to a few classes with image-level noise (ReLU, as post-activation channel means are >= 0)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    members = torch.rand(supers, classes, generator=g) < torch.rand(supers, 1, generator=g) * 0.25
    members[members.sum(1) == 0, 0] = True
    members[members.all(1), 0] = False  # no superclass covers everything (ALGORITHMS.md §2)
    P = torch.cat([onehot, onehot @ members.float().T], 1)
    Wc = torch.randn(classes, K, generator=g) * (torch.rand(classes, K, generator=g) < 0.05)
    acts = torch.relu(onehot @ Wc + 0.5 * torch.randn(n, K, generator=g) + 0.3)
    return P, acts


def siglip_data(n: int, K: int, M: int, seed: int, d: int = 64, classes: int = 200):
    """SigLIP-like: P = sigmoid(a (cos(image, concept) + b)) with clustered image and concept
    embeddings (strongly correlated columns); neurons are ReLU of sparse linear read-outs."""
    g = torch.Generator().manual_seed(seed)
    cent = torch.nn.functional.normalize(torch.randn(classes, d, generator=g), dim=1)
    images = cent[torch.randint(classes, (n,), generator=g)] + 0.7 * torch.randn(n, d, generator=g)
    concepts = cent[torch.randint(classes, (M,), generator=g)] + 0.8 * torch.randn(M, d, generator=g)
    cos = torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(concepts, dim=1).T
    P = torch.sigmoid(8.0 * (cos - 0.3))
    Wn = torch.randn(d, K, generator=g) * (torch.rand(d, K, generator=g) < 0.2)
    acts = torch.relu(torch.nn.functional.normalize(images, dim=1) @ Wn + 0.3 * torch.randn(n, K, generator=g))
    return P, acts


def adam_fit(train_x, val_x, train_y, val_y):
    """The released train_linear_model: nn.Linear, MSE, 100 full-batch Adam steps, np.corrcoef."""
    model = torch.nn.Linear(train_x.shape[1], 1)
    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch.nn.MSELoss()
    for _ in range(ADAM_STEPS):
        loss = loss_fn(model(train_x), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(val_x)
    corr = np.corrcoef(val_y[:, 0].numpy(), pred[:, 0].numpy())[0, 1]
    return (0.0 if np.isnan(corr) else float(corr)), model


def adam_greedy(train_P, val_P, train_y, val_y, ranking, max_length=10, width=10, tolerance=0.02):
    """One neuron, the released greedy_search's loop (candidates gathered from the data each time)."""
    selected, banned, best = [], set(), 0.0
    order = ranking.tolist()
    while len(selected) < max_length:
        candidates = [c for c in order if c not in selected and c not in banned][:width]
        choice, round_best = None, best
        for c in candidates:
            cols = torch.tensor(selected + [c])
            rho, _ = adam_fit(train_P[:, cols], val_P[:, cols], train_y, val_y)
            if rho - best < tolerance and selected:
                banned.add(c)
            elif rho > round_best:
                round_best, choice = rho, c
        if choice is None:
            break
        selected.append(choice)
        best = round_best
    return tuple(selected)


def bench(name: str, P, acts, n_train: int, K: int, adam_neurons: int, rows: list, notes: list) -> None:
    tr_P, va_P = P[:n_train], P[n_train:]
    tr_a, va_a = acts[:n_train, :K], acts[n_train:, :K]
    M = P.shape[1]
    sizes = f"{name}: K={K:,}, n={n_train:,}/{P.shape[0] - n_train:,}, M={M:,}"
    start = time.perf_counter()
    weights = elastic_net(tr_P, tr_a)
    t_enet = time.perf_counter() - start
    ranking = rank_concepts(weights)
    print(f"{sizes}: elastic_net {t_enet:.1f} s (mean support {(weights != 0).sum(1).float().mean():.1f})", flush=True)
    start = time.perf_counter()
    ours = greedy_search(tr_P, va_P, tr_a, va_a, ranking)
    t_ours = time.perf_counter() - start
    lengths = [len(r.concepts) for r in ours]
    print(f"{sizes}: greedy_search {t_ours:.1f} s, mean length {np.mean(lengths):.2f}", flush=True)
    picked = torch.linspace(0, K - 1, adam_neurons).round().long().tolist()
    start = time.perf_counter()
    adam = [adam_greedy(tr_P, va_P, tr_a[:, [k]], va_a[:, [k]], ranking[k]) for k in picked]
    t_adam = time.perf_counter() - start
    same = sum(a == ours[k].concepts for a, k in zip(adam, picked))
    per_ours, per_adam = t_ours / K, t_adam / adam_neurons
    print(f"{sizes}: Adam loop {t_adam:.1f} s for {adam_neurons} neurons; per neuron ours {per_ours * 1e3:.2f} ms, "
          f"Adam {per_adam * 1e3:.0f} ms, x{per_adam / per_ours:.0f}; same selection {same}/{adam_neurons}", flush=True)
    rows.append((sizes, t_enet, t_ours, per_ours, adam_neurons, per_adam, np.mean(lengths), same))
    note = f"{name}: the Adam loop chose the same concepts as the closed form for {same} of its {adam_neurons} neurons"
    if same < adam_neurons:
        note += " (100 Adam steps do not always reach the least-squares optimum)"
    notes.append(note + ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--adam-neurons", type=int, default=None,
                        help="neurons timed with the Adam loop (default 5; 2 with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the whole run (default 1: on a shared 2-vCPU machine the "
                             "Adam loop's tiny ops run fastest on one thread; our code is not favoured)")
    parser.add_argument("--write", action="store_true", help="update the bench_linear section of benchmarks/RESULTS.md")
    parser.add_argument("--layer4", action="store_true",
                        help="instead: explain_linear end to end at ResNet-50 layer4's published sizes (K=2,048, "
                             "50,000 images, M=8,438 SigLIP-like concepts), with time and peak memory")
    args = parser.parse_args()
    if args.layer4:
        return layer4_scale(args.write)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the Adam loop's nn.Linear initialisations
    q = args.quick
    K = 256 if q else 2_048
    n_train, n_val = (2_000, 400) if q else (7_000, 1_000)
    adam_neurons = args.adam_neurons or (2 if q else 5)
    rows, notes = [], []
    P, acts = label_data(n_train + n_val, K, 200, 400, seed=0)
    bench("label", P, acts, n_train, K, adam_neurons, rows, notes)
    P, acts = siglip_data(n_train + n_val, K, 2_000 if q else 8_438, seed=1)
    bench("SigLIP-like", P, acts, n_train, K, adam_neurons, rows, notes)
    if args.write and not q:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        lines = [
            f"## Linear Explanations learning (CPU): {machine('cpu')}",
            "",
            f"{datetime.date.today().isoformat()}, torch {torch.__version__}, neurocore {neurocore.__version__}, "
            f"`python benchmarks/bench_linear.py --write`, {args.threads} torch thread(s) "
            f"(load average at the end: {load})",
            "",
            "greedy_search: v=10, r=10, ε=0.02, ranking from elastic_net; float32 inputs. Ours = the whole "
            "layer in one call (Gram statistics included) divided by K; Adam = the released per-neuron loop "
            f"(100 full-batch Adam steps per candidate, lr {ADAM_LR:g}) on {adam_neurons} neurons spread over "
            "the layer, divided by their number.",
            "",
            "| data | elastic_net (layer) | greedy_search (layer) | ours per neuron | Adam loop per neuron "
            "| speed-up | mean length |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for sizes, t_enet, t_ours, per_ours, n_adam, per_adam, length, _ in rows:
            lines.append(f"| {sizes} | {t_enet:.1f} s | {t_ours:.1f} s | {per_ours * 1e3:.2f} ms | "
                         f"{per_adam * 1e3:.0f} ms | {per_adam / per_ours:.0f}× | {length:.2f} |")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        notes.append(f"Peak resident memory of the whole run: {peak:.1f} GiB.")
        lines += [""] + notes
        write_section("bench_linear", "\n".join(lines))


def layer4_scale(write: bool) -> None:
    """explain_linear on synthetic data of ResNet-50 layer4's size: the issue's memory/time claim."""
    from neurocore.concepts import ConceptScores
    from neurocore.methods.linear import explain_linear

    n, K, M = 50_000, 2_048, 8_438
    P, acts = siglip_data(n, K, M, seed=2)
    scores = ConceptScores.from_tensor(P, [f"c{j}" for j in range(M)])
    del P
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    explanations = explain_linear(acts, scores, progress=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lengths = [len(e.concepts) for e in explanations]
    line = (f"explain_linear, ResNet-50 layer4 sizes (synthetic SigLIP-like P): K={K:,}, n={n:,} (70/10/20 split), "
            f"M={M:,}: {elapsed:.0f} s on {torch.get_num_threads()} threads, peak resident memory {peak:.1f} GiB "
            f"(inputs P and activations alone: {base:.1f} GiB peak before the call), mean explanation length "
            f"{np.mean(lengths):.2f}. {datetime.date.today().isoformat()}, {machine('cpu')}.")
    print(line)
    if write:
        write_section("bench_linear_layer4", line)


if __name__ == "__main__":
    main()
