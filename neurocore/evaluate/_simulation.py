"""Evaluating any method's explanations by simulation (Oikarinen & Weng, ICML 2024, §4 and App. B.5).

A simulator, a *different* vision–language model than the explainer, predicts each concept's
probability on every image, ``P_sim(c|x) = sigmoid(a·(S_sim + b))`` (eq. 8; :func:`simulator_matrix`),
and an explanation ``E = {(w_j, c_j)}`` predicts the neuron's activation ``s(x) = Σ_j w_j·P_sim(c_j|x)``
(eq. 9; :func:`simulate`). A single-label explanation (CLIP-Dissect, WWW's major concept) is ``{(1, c)}``.
Two scores (ALGORITHMS.md §2):

* :func:`correlation_score`: Pearson correlation of ``s`` and the neuron's activation on the test split (eq. 10);
* :func:`ablation_score`: replace the neuron by ``c·s(x) + d`` inside the network and compare the
  change in cross-entropy with that of replacing it by its mean (eqs. 11–14).

The explainer's concept source is read from ``explanations.params["concept_source"]`` (the ``source``
of the :class:`~neurocore.concepts.ConceptScores` the method was given); when it equals the simulator's
``source`` a warning says that the scores are inflated (the paper's requirement 2 of a simulator).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neurocore._alignment import check_same_images
from neurocore._errors import NeurocoreError, close_matches
from neurocore._io import read_result, write_result
from neurocore._split import Split
from neurocore.concepts._calibrate import calibrated_matrix
from neurocore.concepts._scores import ConceptScores
from neurocore.evaluate._inputs import (
    TEMPERATURE,
    _choose_inputs,
    _evaluating,
    _positive_float,
    _positive_int,
    _progress,
    _resolve_inputs,
    _rows,
)
from neurocore.probe._replace import Head, _Runner, _Split, head_after
from neurocore.methods._base import Explanations, NeuronExplanation
from neurocore.probe._store import DEAD_THRESHOLD, ActivationStore, LayerActivations, dead_neurons

# The key of Explanations.params naming the ConceptScores.source the explainer used.
CONCEPT_SOURCE_KEY = "concept_source"

_MISSING = ("raise", "nan")
_SCALINGS = ("optim", "norm")
_CHUNK_ELEMENTS = 1 << 22  # gathered elements per row chunk in simulate()


def simulator_matrix(concept_scores: ConceptScores, a: float, b: float) -> ConceptScores:
    """The simulator's concept probabilities ``P_sim = sigmoid(a·(S + b))`` (paper eq. 8).

    ``concept_scores`` holds the simulator model's cosines between the probe images and the concepts
    of the explanations (:func:`explanation_concepts` lists them). Published ``(a, b)``:
    :data:`neurocore.concepts._calibrate.CALIBRATION_PRESETS` (the paper's simulator
    ViT-SO400M-14-SigLIP-384 has ``a=58, b=-0.13``). A label matrix (0/1 labels plus superclasses) is
    already a probability matrix: pass it to :func:`simulate` as it is, without this function.

    Args:
        concept_scores: the simulator's cosines, :class:`ConceptScores` ``[N, M]``.
        a, b: the calibration.

    Returns:
        :class:`ConceptScores` of probabilities: same concepts and ``source`` (the simulator model), and
        ``key["calibration"] = {"a": a, "b": b}``.

    Raises:
        NeurocoreError: not ConceptScores, or ``a``/``b`` not finite.

    Example:
        >>> S = ConceptScores.from_tensor(torch.tensor([[0.10, 0.20]]), ["dog", "snow"], source="open_clip:sim")
        >>> simulator_matrix(S, 58.0, -0.13).scores
        tensor([[0.1493, 0.9830]])
    """
    if not isinstance(concept_scores, ConceptScores):
        raise NeurocoreError(f"concept_scores must be ConceptScores (the simulator's cosines); got {type(concept_scores).__name__}")
    return calibrated_matrix(concept_scores, a, b)


def explanation_concepts(explanations: Explanations, layer: str | None = None) -> tuple[str, ...]:
    """The distinct concepts the explanations use (in first-use order): what the simulator must score.

    Example:
        >>> e = Explanations("x", (NeuronExplanation("l", 0, "dog", 1.0), NeuronExplanation("l", 1, "cat", 1.0)))
        >>> explanation_concepts(e)
        ('dog', 'cat')
    """
    if layer is None:
        neurons = explanations.neurons
    else:
        neurons = explanations.layer(layer).neurons
    return tuple(dict.fromkeys(c for n in neurons for c, _ in n.linear_terms()))


def _layer_neurons(explanations: Explanations, layer: str | None) -> tuple[str, tuple[NeuronExplanation, ...]]:
    if not isinstance(explanations, Explanations):
        raise NeurocoreError(f"explanations must be Explanations; got {type(explanations).__name__}")
    layers = explanations.layers
    if not layers:
        raise NeurocoreError("explanations is empty: there is no neuron to score")
    if layer is None:
        if len(layers) != 1:
            raise NeurocoreError(f"the explanations cover layers {list(layers)}: pass layer= to pick one")
        layer = layers[0]
    neurons = explanations.layer(layer).neurons
    units = [n.unit for n in neurons]
    if len(set(units)) != len(units):
        raise NeurocoreError(f"the explanations of layer {layer!r} repeat units; give one explanation per neuron")
    return layer, neurons


def _simulate(neurons, sim_scores: ConceptScores, missing: str):
    """(s Tensor[N, K] float32, missing mask [K], empty mask [K])."""
    if not isinstance(sim_scores, ConceptScores):
        raise NeurocoreError(f"sim_scores must be ConceptScores (the simulator's probabilities); got {type(sim_scores).__name__}")
    if missing not in _MISSING:
        raise NeurocoreError(f"missing must be one of {_MISSING}; got {missing!r}")
    P = sim_scores.scores
    if P.numel() and (float(P.min()) < 0 or float(P.max()) > 1):
        warnings.warn(
            "sim_scores hold values outside [0, 1], so they are not concept probabilities; raw cosines of a "
            "vision–language model go through simulator_matrix(scores, a, b) first (paper eq. 8)",
            stacklevel=3,
        )
    index = {c: j for j, c in enumerate(sim_scores.concepts)}
    terms = [n.linear_terms() for n in neurons]
    absent = [[c for c, _ in t if c not in index] for t in terms]
    missing_mask = torch.tensor([bool(a) for a in absent], dtype=torch.bool)
    if missing_mask.any() and missing == "raise":
        names = list(dict.fromkeys(c for a in absent for c in a))
        hints = []
        for c in names[:3]:
            close = close_matches(c, sim_scores.concepts, n=3)
            if close:
                hints.append(f"{c!r} ~ {close}")
        raise NeurocoreError(
            f"{len(names)} concept(s) of the explanations of {int(missing_mask.sum())} neuron(s) are not scored by the "
            f"simulator: {names[:10]}{' ...' if len(names) > 10 else ''}"
            + (f" (close: {'; '.join(hints)})" if hints else "")
            + ". Score them with the simulator model (explanation_concepts(explanations) lists every concept needed), "
            "or pass missing='nan' to skip those neurons"
        )
    if missing_mask.any():
        warnings.warn(
            f"{int(missing_mask.sum())} neuron(s) use concepts the simulator does not score; they get NaN and are skipped",
            stacklevel=3,
        )
    empty_mask = torch.tensor([len(t) == 0 for t in terms], dtype=torch.bool)
    K, N = len(neurons), P.shape[0]
    L = max([len(t) for t in terms] + [1])
    idx = torch.zeros(K, L, dtype=torch.int64)
    w = torch.zeros(K, L, dtype=torch.float64)
    for k, t in enumerate(terms):
        if missing_mask[k]:
            continue
        for j, (c, weight) in enumerate(t):
            weight = float(weight)
            if not math.isfinite(weight):
                raise NeurocoreError(f"the explanation of unit {neurons[k].unit} has a non-finite weight for {c!r}")
            idx[k, j], w[k, j] = index[c], weight
    out = torch.empty(N, K, dtype=torch.float32)
    rows = max(1, _CHUNK_ELEMENTS // max(1, K * L))
    for start in range(0, N, rows):
        gathered = P[start : start + rows][:, idx].double()  # [n, K, L]
        out[start : start + rows] = (gathered * w).sum(-1).float()
    out[:, missing_mask] = math.nan
    return out, missing_mask, empty_mask


def simulate(
    explanations: Explanations,
    sim_scores: ConceptScores,
    layer: str | None = None,
    *,
    missing: str = "raise",
) -> torch.Tensor:
    """Simulated activations ``s(x) = Σ_j w_j·P_sim(c_j|x)`` (paper eq. 9) of every neuron on every image.

    Each neuron's terms come from :meth:`NeuronExplanation.linear_terms`: a linear explanation's weighted
    concepts (its bias is left out, as in eq. 9: it shifts ``s`` by a constant that neither score sees),
    a single label as weight 1, nothing for an empty explanation (``s = 0``).

    Args:
        explanations: any method's :class:`Explanations`.
        sim_scores: the simulator's concept probabilities ``[N, M]`` (:func:`simulator_matrix`, or a
            0/1 label matrix); concepts are matched by exact name.
        layer: which layer's neurons; default: the explanations' only layer.
        missing: ``"raise"`` (default) when an explanation uses a concept the simulator lacks, or ``"nan"``
            to give such neurons NaN columns (with a warning).

    Returns:
        Tensor[N, K] float32: column k is the k-th neuron of ``explanations.layer(layer)`` (its ``unit``).

    Raises:
        NeurocoreError: several layers and no ``layer``, concepts missing from the simulator (listed,
            with close matches), non-finite weights.

    Example:
        >>> P = ConceptScores.from_tensor(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), ["dog", "snow"])
        >>> e = Explanations("linear", (
        ...     NeuronExplanation("layer4", 0, "dog", 1.0, concepts=("dog", "snow"), scores=(2.0, -1.0), is_linear=True),
        ...     NeuronExplanation("layer4", 1, "snow", 0.3)))
        >>> simulate(e, P)
        tensor([[ 1.7000,  0.1000],
                [-0.4000,  0.8000]])
    """
    _, neurons = _layer_neurons(explanations, layer)
    return _simulate(neurons, sim_scores, missing)[0]


@dataclass(frozen=True)
class SimulationScores:
    """Per-neuron simulation scores of one layer's explanations.

    Attributes:
        metric: ``"correlation"``, ``"ablation(optim)"`` or ``"ablation(norm)"``.
        layer: the layer.
        units: the neurons, in the explanations' order.
        scores (Tensor[K], float64): the score; NaN for neurons that are skipped (see ``status``).
        status: per neuron: ``"ok"``; ``"empty"`` (no explanation: correlation 0, ablation 0, counted);
            ``"constant_simulation"`` (``s`` constant on the split: correlation 0, counted);
            ``"dead"`` (max activation < 0.01: NaN, skipped); ``"missing_concepts"`` (NaN, skipped);
            ``"constant_activation"`` (the activation is constant on the test split: NaN, skipped);
            ``"no_effect"`` (replacing the neuron by its mean changes no loss beyond float32 rounding:
            ablation NaN, skipped).
        c, d (Tensor[K], float64) or None: the ablation's scaling ``c·s + d`` (None for correlation).
    """

    metric: str
    layer: str
    units: tuple[int, ...]
    scores: torch.Tensor
    status: tuple[str, ...]
    c: torch.Tensor | None = None
    d: torch.Tensor | None = None

    @property
    def scored(self) -> torch.Tensor:
        """Tensor[K] bool: the neurons that have a score (not NaN)."""
        return torch.isfinite(self.scores)

    @property
    def mean(self) -> float:
        """The average score over the scored neurons (NaN when none is scored)."""
        ok = self.scored
        return float(self.scores[ok].mean()) if ok.any() else math.nan

    @property
    def sem(self) -> float:
        """Standard error of :attr:`mean` (the paper's ± figures)."""
        ok = self.scored
        n = int(ok.sum())
        return float(self.scores[ok].std(correction=1) / math.sqrt(n)) if n > 1 else math.nan

    def to_pandas(self):
        """One row per neuron: ``layer, unit, <metric>, status`` (and ``c, d`` for ablation)."""
        import pandas as pd

        data = {"layer": [self.layer] * len(self.units), "unit": list(self.units), self.metric: self.scores.tolist(), "status": list(self.status)}
        if self.c is not None:
            data["c"], data["d"] = self.c.tolist(), self.d.tolist()
        return pd.DataFrame(data)

    def save(self, directory) -> Path:
        """Write ``simulation_scores.json`` and ``simulation_scores.pt`` into ``directory`` (created),
        tied by a digest (:func:`neurocore._io.write_result`); :meth:`load` reads them. Returns the folder.

        Example:
            >>> import tempfile
            >>> r = SimulationScores("correlation", "l", (0, 1), torch.tensor([0.5, math.nan], dtype=torch.float64), ("ok", "dead"))
            >>> back = SimulationScores.load(r.save(tempfile.mkdtemp()))
            >>> back.units, back.status, back.scores[0].item()
            ((0, 1), ('ok', 'dead'), 0.5)
        """
        directory = Path(directory)
        tensors = {"scores": self.scores}
        if self.c is not None:
            tensors["c"], tensors["d"] = self.c, self.d
        meta = {"metric": self.metric, "layer": self.layer, "units": list(self.units), "status": list(self.status)}
        return write_result(directory / "simulation_scores.json", "simulation_scores", 1, meta, tensors,
                            directory / "simulation_scores.pt")

    @classmethod
    def load(cls, directory) -> SimulationScores:
        """Read what :meth:`save` wrote.

        Raises:
            NeurocoreError: missing files, another format version, or files of different saves.
        """
        directory = Path(directory)
        meta, t = read_result(directory / "simulation_scores.json", "simulation_scores", (1,),
                              directory / "simulation_scores.pt", what="SimulationScores")
        return cls(meta["metric"], meta["layer"], tuple(int(u) for u in meta["units"]), t["scores"],
                   tuple(meta["status"]), t.get("c"), t.get("d"))


# The start of _warn_same_source's message (a regex for warnings filters).
SAME_SOURCE_WARNING = "the simulator's concept scores come from the explainer's own source"


def explainer_source(explanations: Explanations) -> str | None:
    """The source of the concept scores the explainer used (``params["concept_source"]``), or None.

    Example:
        >>> explainer_source(Explanations("x", (), {"concept_source": "open_clip:ViT-B-16:openai"}))
        'open_clip:ViT-B-16:openai'
    """
    params = explanations.params
    source = params.get(CONCEPT_SOURCE_KEY) if hasattr(params, "get") else None
    return None if source is None else str(source)


def _warn_same_source(explanations: Explanations, sim_scores: ConceptScores) -> None:
    source = explainer_source(explanations)
    if source is not None and source == sim_scores.source and sim_scores.source != "tensor":
        warnings.warn(
            f"{SAME_SOURCE_WARNING} {source!r}; an explainer simulated by "
            "itself scores too high (the paper requires a different simulator model). Encode the concepts with "
            "another model (the paper's simulator: ViT-SO400M-14-SigLIP-384)",
            stacklevel=3,
        )


def _layer_acts(acts, layer: str, dead_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(acts, ActivationStore):
        la = acts[layer]
        return la.summaries, la.dead(dead_threshold)
    if isinstance(acts, LayerActivations):
        if acts.layer != layer:
            raise NeurocoreError(f"the activations are of layer {acts.layer!r}, the explanations of {layer!r}")
        return acts.summaries, acts.dead(dead_threshold)
    if isinstance(acts, torch.Tensor):
        if acts.dim() != 2:
            raise NeurocoreError(f"acts must be a Tensor[N, K] of summarised activations; got shape {tuple(acts.shape)}")
        a = acts.detach().cpu()
        if not torch.isfinite(a).all():
            raise NeurocoreError("acts contain NaN or inf")
        return a, dead_neurons(a, dead_threshold)
    raise NeurocoreError(f"acts must be an ActivationStore, LayerActivations or Tensor[N, K]; got {type(acts).__name__}")


def _check_same_rows(acts, n: int, sim_scores: ConceptScores) -> None:
    """The simulator's rows must be the activations' images, in order (ids compared when both have them)."""
    if not isinstance(sim_scores, ConceptScores):
        raise NeurocoreError(f"sim_scores must be ConceptScores (the simulator's probabilities); got {type(sim_scores).__name__}")
    rows = acts if isinstance(acts, ActivationStore) else _Rows(n)
    check_same_images(
        rows, sim_scores, "acts", "sim_scores",
        "score the same probe images, in the store's order, with the simulator (skipped images left out of both)",
    )


@dataclass(frozen=True)
class _Rows:
    num_images: int
    image_ids: tuple[str, ...] = ()


def _check_units(units: Sequence[int], K: int, layer: str) -> torch.Tensor:
    u = torch.tensor(list(units), dtype=torch.int64)
    if u.numel() and (int(u.min()) < 0 or int(u.max()) >= K):
        raise NeurocoreError(f"the explanations of layer {layer!r} name units up to {int(u.max())} but the layer has {K} neurons")
    return u


def _constant(x: torch.Tensor) -> torch.Tensor:
    """Per column: True where the values are constant up to float64 rounding of their mean."""
    centred = x - x.mean(0, keepdim=True)
    return centred.abs().amax(0) <= 1e-9 * (1.0 + x.abs().amax(0))


def correlation_score(
    explanations: Explanations,
    acts,
    sim_scores: ConceptScores,
    split=None,
    *,
    layer: str | None = None,
    missing: str = "raise",
    dead_threshold: float = DEAD_THRESHOLD,
) -> SimulationScores:
    """Correlation scoring (paper eq. 10): Pearson correlation of the simulated and the real activation.

    ``ρ(k, E) = mean over the test split of ŝ(x)·ĝ(A_k(x))``, both standardised on that split.

    Args:
        explanations: any method's :class:`Explanations` (one layer, or pass ``layer``).
        acts: the neurons' summarised activations on the same N probe images: an
            :class:`ActivationStore`, :class:`LayerActivations` or ``Tensor[N, K]`` (column = unit).
        sim_scores: the **simulator's** concept probabilities ``[N, M]`` (a different model than the
            explainer: :func:`simulator_matrix` of its cosines, or a 0/1 label matrix).
        split: the test rows (indices or a bool mask), or a :class:`~neurocore.Split` (its ``test``
            part; it must have been drawn for these images: checked by number and, when known, by
            the digest of their ids); None: all N rows.
        layer: which layer of the explanations.
        missing: ``"raise"`` or ``"nan"`` for concepts the simulator lacks (see :func:`simulate`).
        dead_threshold: neurons whose max activation over all N images is below this are dead: skipped.

    Returns:
        :class:`SimulationScores` with ``metric="correlation"``; :attr:`SimulationScores.mean` averages
        over scored neurons (empty explanations count as 0; dead neurons are skipped).

    Raises:
        NeurocoreError: activations and ``sim_scores`` of different images (another number, or other
            ids: the first differing row is named), a split drawn for other images, mismatched
            numbers of neurons, bad ``split``, missing concepts.

    Warns:
        UserWarning: the simulator's ``source`` equals ``explanations.params["concept_source"]``.

    Example:
        >>> P = torch.rand(100, 3)
        >>> acts = 2 * P[:, [2, 0]] + 1  # unit 0 is concept "c", unit 1 is concept "a"
        >>> e = Explanations("x", (NeuronExplanation("l", 0, "c", 1.0), NeuronExplanation("l", 1, "b", 1.0)))
        >>> r = correlation_score(e, acts, ConceptScores.from_tensor(P, ["a", "b", "c"]))
        >>> round(float(r.scores[0]), 6), r.status
        (1.0, ('ok', 'ok'))
    """
    layer, neurons = _layer_neurons(explanations, layer)
    _warn_same_source(explanations, sim_scores)
    A, dead_all = _layer_acts(acts, layer, dead_threshold)
    N = A.shape[0]
    _check_same_rows(acts, N, sim_scores)
    units = _check_units([n.unit for n in neurons], A.shape[1], layer)
    if isinstance(split, Split):
        split.check_images(acts if isinstance(acts, ActivationStore) and acts.image_ids else sim_scores, "acts")
        split = split.test
    elif hasattr(split, "test") and not isinstance(split, torch.Tensor):  # another train/val/test split object
        split = split.test
    rows = _rows(split, N, "split")
    s, missing_mask, empty_mask = _simulate(neurons, sim_scores, missing)
    s = s[rows].double()
    a = A[rows][:, units].double()
    sc = s - s.mean(0, keepdim=True)
    ac = a - a.mean(0, keepdim=True)
    with torch.no_grad():
        corr = (sc * ac).sum(0) / torch.sqrt((sc * sc).sum(0) * (ac * ac).sum(0))
    const_s = _constant(s) if len(rows) else torch.ones(len(neurons), dtype=torch.bool)
    const_a = _constant(a) if len(rows) else torch.ones(len(neurons), dtype=torch.bool)
    dead = dead_all[units]
    status, scores = [], torch.empty(len(neurons), dtype=torch.float64)
    for k in range(len(neurons)):
        if dead[k]:
            st, v = "dead", math.nan
        elif missing_mask[k]:
            st, v = "missing_concepts", math.nan
        elif const_a[k]:
            st, v = "constant_activation", math.nan
        elif empty_mask[k]:
            st, v = "empty", 0.0
        elif const_s[k]:
            st, v = "constant_simulation", 0.0
        else:
            st, v = "ok", float(corr[k])
        status.append(st)
        scores[k] = v
    if const_a.any() and any(st == "constant_activation" for st in status):
        warnings.warn(
            f"{status.count('constant_activation')} neuron(s) have a constant activation on the split; their correlation is undefined (NaN)",
            stacklevel=2,
        )
    return SimulationScores("correlation", layer, tuple(int(u) for u in units), scores, tuple(status))


# ----------------------------------------------------------------------------------------------
# Ablation scoring


def norm_scaling(s_val: torch.Tensor, acts_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ablation scaling "Norm" (paper App. B.5, eqs. 16–20; Bills et al. 2023).

    ``c = ρ_val·σ_act/σ_s``, ``d = μ_act − c·μ_s`` with population standard deviations on the
    validation split. A constant ``s`` or activation has ``ρ = 0``: ``c = 0, d = μ_act``.

    Args:
        s_val (Tensor[n, K]): simulated activations on the validation split.
        acts_val (Tensor[n, K]): real activations on the validation split.

    Returns:
        ``(c, d)``, each Tensor[K] float64.

    Example:
        >>> s = torch.tensor([[0.0], [1.0], [2.0]])
        >>> c, d = norm_scaling(s, 3 * s + 1)
        >>> round(float(c), 6), round(float(d), 6)
        (3.0, 1.0)
    """
    s, a = s_val.double(), acts_val.double()
    if s.shape != a.shape or s.dim() != 2 or s.shape[0] == 0:
        raise NeurocoreError(f"s_val and acts_val must both be Tensor[n, K] with n >= 1; got {tuple(s.shape)} and {tuple(a.shape)}")
    mu_s, mu_a = s.mean(0), a.mean(0)
    sd_s = (s - mu_s).pow(2).mean(0).sqrt()
    sd_a = (a - mu_a).pow(2).mean(0).sqrt()
    degenerate = _constant(s) | _constant(a)
    rho = ((s - mu_s) * (a - mu_a)).mean(0) / (sd_s * sd_a)
    c = torch.where(degenerate, torch.zeros_like(mu_s), rho * sd_a / sd_s)
    d = mu_a - c * mu_s
    return c, d


def _abs_ce_change(runner: _Runner, split: _Split, units, c, d, s) -> torch.Tensor:
    """Σ over the split's images of |CE(f with unit_j := c_j·s_j + d_j) − CE(f)|, per j (float64)."""
    J = len(units)
    total = torch.zeros(J, dtype=torch.float64)
    dev = runner.device
    c, d = c.to(dev, torch.float32), d.to(dev, torch.float32)
    with torch.no_grad():
        for pos, x in runner.chunks(split):
            sv = s[pos].to(dev, torch.float32).T if s is not None else torch.zeros(J, len(pos), device=dev)
            values = c[:, None] * sv + d[:, None]
            logits = runner.logits(x, units, values)
            ce, _ = runner._ce_correct(logits, split.labels[pos].to(logits.device))
            total += (ce.double() - split.base_ce[pos].to(ce.device).double()[None]).abs().sum(1).cpu()
    return total


def _optimise(runner: _Runner, split: _Split, units, s, steps: int, lr: float):
    """Adam on ``(c, d)`` minimising Σ_val |CE(f_{k←c·s+d}) − CE(f)| (paper eq. 13), full batch.

    One optimiser for all J neurons: Adam is elementwise and each neuron's loss depends on its own
    (c_j, d_j) only, so this equals J separate optimisations. Starts from c = 1, d = 0 (released code).
    Gradients are taken with autograd.grad, so the model's parameters never receive a ``.grad``.
    """
    J = len(units)
    dev = runner.device
    c = torch.ones(J, device=dev, requires_grad=True)
    d = torch.zeros(J, device=dev, requires_grad=True)
    opt = torch.optim.Adam([c, d], lr=lr)
    for _ in range(steps):
        gc, gd = torch.zeros_like(c), torch.zeros_like(d)
        for pos, x in runner.chunks(split):
            with torch.enable_grad():
                values = c[:, None] * s[pos].to(dev, torch.float32).T + d[:, None]
                logits = runner.logits(x, units, values)
                ce, _ = runner._ce_correct(logits, split.labels[pos].to(logits.device))
                loss = (ce - split.base_ce[pos].to(ce.device)[None]).abs().sum()
                g1, g2 = torch.autograd.grad(loss, (c, d))
            gc += g1
            gd += g2
        c.grad, d.grad = gc, gd
        opt.step()
    return c.detach().double().cpu(), d.detach().double().cpu()


def ablation_score(
    explanations: Explanations,
    acts,
    sim_scores: ConceptScores,
    *,
    val,
    test,
    model: nn.Module | None = None,
    labels=None,
    probe=None,
    transform=None,
    head: Head | None = None,
    layer: str | None = None,
    scaling: str = "optim",
    temperature: float = TEMPERATURE,
    steps: int = 100,
    lr: float = 1e-2,
    neuron_batch: int = 64,
    batch_size: int = 256,
    missing: str = "raise",
    dead_threshold: float = DEAD_THRESHOLD,
    progress: bool = True,
) -> SimulationScores:
    """Ablation scoring (paper eqs. 11–14): how well ``c·s(x) + d`` can stand in for the neuron.

    ``α(k, E) = 1 − Σ_test |CE(f_{k←c·s+d}(x)) − CE(f(x))| / Σ_test |CE(f_{k←μ}(x)) − CE(f(x))|``, with
    μ the neuron's mean activation on the validation split and CE the cross-entropy of
    ``logits / temperature``. A perfect simulation scores 1, predicting the mean scores 0. Replacing a
    neuron sets its whole map to the value (:func:`~neurocore.evaluate.replace_units`), so its pooled
    feature (or CLS feature) equals it. ``(c, d)``:

    * ``"optim"`` (paper default): 100 full-batch Adam steps (lr 1e-2) from ``c=1, d=0`` minimising the
      numerator on the validation split (eq. 13);
    * ``"norm"``: the closed form of :func:`norm_scaling` on the validation split.

    Scope: the paper scores the penultimate layer (ResNet ``layer4``, whose head is global average
    pooling and ``fc``); :func:`head_after` gives the fast pooled head there, and the generic hook head
    anywhere else (correct, but one forward pass per neuron, per step for ``"optim"``).

    Args:
        explanations: any method's :class:`Explanations` (one layer, or pass ``layer``).
        acts: the layer's output: an :class:`ActivationStore` / :class:`LayerActivations` (its summaries
            are the pooled features when the head pools with the same summary, e.g. ``layer4`` recorded
            with ``"mean"``), a ``Tensor[N, ...]`` of layer outputs or pooled features, or None with
            ``probe`` (the model is run on the images).
        sim_scores: the simulator's concept probabilities ``[N, M]`` (rows = the same N images).
        val, test: row indices (or bool masks) of the validation and test splits; disjoint.
        model: the network (to find the head, or to run the probe).
        labels (Tensor[N]): class labels; default: the store's, or the probe's.
        probe: dataset of images (rows map through ``store.dataset_indices`` when a store is given); not
            run when the store's summaries already are the head's pooled features.
        transform: applied to each probe image.
        head: the rest of the network; default :func:`head_after` ``(model, layer)``.
        layer: which layer of the explanations.
        scaling: ``"optim"`` or ``"norm"``.
        temperature: CE temperature (1.1).
        steps, lr: Adam steps and learning rate of ``"optim"`` (100, 1e-2). Full batch: deterministic.
        neuron_batch: neurons scored together (each copies the image batch's features once).
        batch_size: images per batch.
        missing: ``"raise"`` or ``"nan"`` for concepts the simulator lacks.
        dead_threshold: dead neurons (max activation below it; over the store's rows, else over val and
            test) are skipped.
        progress: a tqdm bar over neuron batches.

    Returns:
        :class:`SimulationScores` with ``metric="ablation(optim)"`` or ``"ablation(norm)"`` and ``c, d``.
        Empty explanations score 0 (``c = 0, d = μ``).

    Raises:
        NeurocoreError: missing inputs, mismatched rows, overlapping or empty splits, missing concepts,
            a head that does not reproduce the model's logits.

    Example:
        >>> fc = nn.Linear(3, 4)
        >>> P = torch.rand(60, 3)
        >>> feats = P.clone()  # each neuron's activation equals one concept: a perfect simulation
        >>> labels = fc(feats).argmax(1)
        >>> e = Explanations("x", tuple(NeuronExplanation("f", k, "abc"[k], 1.0) for k in range(3)))
        >>> r = ablation_score(e, feats, ConceptScores.from_tensor(P, list("abc")), head=Head("f", pooled=fc),
        ...                    labels=labels, val=range(0, 20), test=range(20, 60), scaling="norm", progress=False)
        >>> [round(v, 4) for v in r.scores.tolist()]
        [1.0, 1.0, 1.0]
    """
    layer, neurons = _layer_neurons(explanations, layer)
    if scaling not in _SCALINGS:
        raise NeurocoreError(f"scaling must be one of {_SCALINGS}; got {scaling!r}")
    temperature = _positive_float(temperature, "temperature")
    lr = _positive_float(lr, "lr")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise NeurocoreError(f"steps must be an integer >= 0; got {steps!r}")
    _positive_int(neuron_batch, "neuron_batch")
    _positive_int(batch_size, "batch_size")
    _warn_same_source(explanations, sim_scores)
    if head is not None and head.layer != layer:
        raise NeurocoreError(f"head is for layer {head.layer!r} but the explanations are of layer {layer!r}")
    spec = _resolve_inputs(acts, layer, labels, probe)
    if spec.layer != layer:
        raise NeurocoreError(f"the activations are of layer {spec.layer!r}, the explanations of {layer!r}")
    N = spec.num_rows
    if N is None:
        raise NeurocoreError("give the layer's outputs (acts=) or the images (probe=)")
    if not isinstance(sim_scores, ConceptScores):
        raise NeurocoreError(f"sim_scores must be ConceptScores (the simulator's probabilities); got {type(sim_scores).__name__}")
    _check_same_rows(acts, N, sim_scores)
    for name, part in (("val", val), ("test", test)):
        if isinstance(part, Split):
            raise NeurocoreError(
                f"{name} must be row indices or a bool mask, not a Split: pass val=split.val, test=split.test "
                "(after split.check_images(store))"
            )
    val_rows, test_rows = _rows(val, N, "val"), _rows(test, N, "test")
    if len(set(val_rows.tolist()) & set(test_rows.tolist())):
        raise NeurocoreError("val and test share rows; the ablation fits (c, d) on val and scores on test: give disjoint splits")
    if head is None:
        if model is None:
            raise NeurocoreError("pass model= (to find the head after the layer) or head=")
        head = head_after(model, layer)
    inputs = _choose_inputs(spec, head, probe)
    s_all, missing_mask, empty_mask = _simulate(neurons, sim_scores, missing)
    K = len(neurons)
    scores = torch.full((K,), math.nan, dtype=torch.float64)
    c_all = torch.full((K,), math.nan, dtype=torch.float64)
    d_all = torch.full((K,), math.nan, dtype=torch.float64)
    with _evaluating(model, head):
        runner = _Runner(head, model, inputs, probe, transform, spec.dataset_indices, spec.labels, batch_size, temperature)
        with torch.no_grad():
            prep_val, prep_test = runner.prepare(val_rows), runner.prepare(test_rows)
        C = prep_val.acts.shape[1]
        units = _check_units([n.unit for n in neurons], C, layer)
        if spec.summaries is not None:
            dead = dead_neurons(spec.summaries, dead_threshold)[units]
        else:
            dead = dead_neurons(torch.cat([prep_val.acts, prep_test.acts]), dead_threshold)[units]
        mu = prep_val.acts[:, units].double().mean(0)
        status = []
        for k in range(K):
            if dead[k]:
                status.append("dead")
            elif missing_mask[k]:
                status.append("missing_concepts")
            elif empty_mask[k]:
                status.append("empty")
                scores[k], c_all[k], d_all[k] = 0.0, 0.0, float(mu[k])
            else:
                status.append("ok")
        todo = [k for k in range(K) if status[k] == "ok"]
        # A mean ablation whose loss change is within float32 rounding of the test losses has no effect:
        # the ratio of two rounding residues would be a meaningless score (e.g. a unit that shifts every
        # logit alike, which cross-entropy cannot see).
        no_effect = 8 * torch.finfo(torch.float32).eps * float((prep_test.base_ce.double().abs() + 1).sum())
        s_val, s_test = s_all[val_rows], s_all[test_rows]
        batches = [todo[i : i + neuron_batch] for i in range(0, len(todo), neuron_batch)]
        for ks in _progress(batches, progress, f"ablation {layer}"):
            kt = torch.tensor(ks)
            ub = units[kt]
            sv, st = s_val[:, kt], s_test[:, kt]
            if scaling == "norm":
                c, d = norm_scaling(sv, prep_val.acts[:, ub])
            else:
                c, d = _optimise(runner, prep_val, ub, sv, steps, lr)
            num = _abs_ce_change(runner, prep_test, ub, c, d, st)
            den = _abs_ce_change(runner, prep_test, ub, torch.zeros(len(ks)), mu[kt], None)
            for j, k in enumerate(ks):
                c_all[k], d_all[k] = float(c[j]), float(d[j])
                if float(den[j]) > no_effect:
                    scores[k] = 1.0 - float(num[j]) / float(den[j])
                else:
                    status[k] = "no_effect"
    return SimulationScores(
        f"ablation({scaling})", layer, tuple(int(n.unit) for n in neurons), scores, tuple(status), c_all, d_all
    )
