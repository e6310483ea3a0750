"""Calibrated concept probabilities from vision–language cosines: ``P = sigmoid(a·(S + b))``.

Linear Explanations (Oikarinen et al., ICML 2024, §3.1 eq. 5 and §4; ALGORITHMS.md §2) turns the N×M
cosine matrix ``S`` of a vision–language model into concept probabilities ``P[i, j] ≈ P(c_j | x_i)``
with two scalars per model, ``a`` (a temperature) and ``b`` (a shift), fitted by minimising binary
cross-entropy against labelled data (ImageNet classes plus their WordNet superclasses as a multi-label
task). The explainer's concept matrix of LE(SigLIP) and the simulator of the simulation scores use the
same formula; this module is its one implementation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import NamedTuple

import torch

from neurocore._errors import NeurocoreError, close_matches
from neurocore.concepts._scores import ConceptScores

# Published (a, b) of the paper's models (open_clip names). Explainer of LE(SigLIP): ViT-L-16-SigLIP-384;
# simulator: ViT-SO400M-14-SigLIP-384; the CLIP simulator of the paper's appendix B.1: ViT-L-14-336.
CALIBRATION_PRESETS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "ViT-L-16-SigLIP-384": (60.0, -0.09),
        "ViT-SO400M-14-SigLIP-384": (58.0, -0.13),
        "ViT-L-14-336": (58.0, -0.25),
    }
)

_CHUNK_ELEMENTS = 1 << 22  # elements per streamed chunk (32 MiB in float64)


class Calibration(NamedTuple):
    """The two calibration scalars: ``P = sigmoid(a·(S + b))``."""

    a: float
    b: float


def calibration_preset(model_name: str) -> Calibration:
    """The published ``(a, b)`` of a vision–language model, by name.

    ``model_name`` is an open_clip model name (``"ViT-L-16-SigLIP-384"``), case-insensitive, or a
    string containing one as a ``:``- or ``/``-separated part, such as a :class:`ConceptScores`
    source ``"open_clip:ViT-L-16-SigLIP-384:webli"`` or ``"hf-hub:timm/ViT-L-16-SigLIP-384"``.

    Presets (:data:`CALIBRATION_PRESETS`, from the paper): the LE(SigLIP) explainer
    ViT-L-16-SigLIP-384 ``a=60, b=-0.09``; the simulator ViT-SO400M-14-SigLIP-384 ``a=58, b=-0.13``;
    CLIP ViT-L-14-336 ``a=58, b=-0.25``.

    Raises:
        NeurocoreError: no preset for that model (the message lists the presets; fit your own with
            :func:`calibrate`).

    Example:
        >>> calibration_preset("open_clip:ViT-L-16-SigLIP-384:webli")
        Calibration(a=60.0, b=-0.09)
    """
    text = str(model_name).strip()
    parts = {text}
    for piece in text.split(":"):
        parts.add(piece)
        parts.add(piece.rsplit("/", 1)[-1])
    lowered = {p.lower() for p in parts if p}
    for name, (a, b) in CALIBRATION_PRESETS.items():
        if name.lower() in lowered:
            return Calibration(a, b)
    hint = close_matches(text, CALIBRATION_PRESETS)
    raise NeurocoreError(
        f"no calibration preset for model {model_name!r}"
        + (f" (close: {', '.join(hint)})" if hint else "")
        + f"; presets exist for: {', '.join(CALIBRATION_PRESETS)}. For another model fit (a, b) on "
        "labelled images with neurocore.concepts.calibrate(cosines, targets), e.g. targets from "
        "label_concept_matrix(labels, class_wnids)"
    )


def calibrated_matrix(concept_scores, a: float, b: float):
    """``P = sigmoid(a·(S + b))``: concept probabilities from cosine scores.

    The LE(SigLIP) concept matrix (paper eq. 5's ``σ(a·E_T(c)·E_I(x) + a·b)``) and the simulator's
    ``P_sim``. Computed in row chunks into one float32 output, so the only N×M allocation is the result.

    Args:
        concept_scores: :class:`ConceptScores` of cosines, or a ``Tensor[N, M]`` of them.
        a: the temperature (see :func:`calibrate`, :func:`calibration_preset`).
        b: the shift added to the cosine.

    Returns:
        For :class:`ConceptScores`, a new one with the probabilities, the same concepts and source, and
        ``key["calibration"] = {"a": a, "b": b}`` added; for a tensor, a float32 tensor on the same device.

    Raises:
        NeurocoreError: ``a`` or ``b`` not finite, or a tensor that is not 2-D.

    Example:
        >>> S = ConceptScores.from_tensor(torch.tensor([[0.1, 0.2]]), ["dog", "cat"], source="open_clip:m")
        >>> calibrated_matrix(S, 60.0, -0.15).scores
        tensor([[0.0474, 0.9526]])
    """
    a, b = _scalar(a, "a"), _scalar(b, "b")
    if isinstance(concept_scores, ConceptScores):
        probs = _sigmoid_affine(concept_scores.scores, a, b)
        key = dict(concept_scores.key)
        key["calibration"] = {"a": a, "b": b}
        return replace(concept_scores, scores=probs, key=key)
    S = torch.as_tensor(concept_scores)
    if S.dim() != 2:
        raise NeurocoreError(f"concept_scores must be ConceptScores or a Tensor[N, M]; got shape {tuple(S.shape)}")
    return _sigmoid_affine(S, a, b)


def _sigmoid_affine(S: torch.Tensor, a: float, b: float) -> torch.Tensor:
    out = torch.empty(S.shape, dtype=torch.float32, device=S.device)
    rows = max(1, _CHUNK_ELEMENTS // max(1, S.shape[1]))
    for start in range(0, S.shape[0], rows):
        chunk = S[start : start + rows].to(torch.float32)
        torch.sigmoid((chunk + b) * a, out=out[start : start + rows])
    return out


def calibrate(
    cos,
    targets,
    max_iter: int = 100,
    tol: float = 1e-12,
) -> Calibration:
    """Fit ``(a, b)`` of ``P = sigmoid(a·(S + b))`` by minimising binary cross-entropy (paper eq. 5).

    The loss is the mean over all image–concept pairs of ``BCE(sigmoid(a·s + a·b), y)``. With ``c = a·b``
    it is a one-feature logistic regression of ``y`` on ``s`` (slope ``a``, intercept ``c``), which is
    convex in ``(a, c)``; it is solved by Newton's method with a backtracking line search, from
    ``a = 0`` and the intercept of the targets' mean, streaming row chunks in float64. The result is
    deterministic (no random initialisation or sampling, hence no seed) and ``b = c / a``.

    Args:
        cos: cosine scores, :class:`ConceptScores` or ``Tensor[N, M]`` (of the class and superclass
            names, encoded by the model to calibrate).
        targets: ``Tensor[N, M]`` in [0, 1], 1 where image i belongs to [super]class j (the matrix of
            :func:`label_concept_matrix`), or :class:`ConceptScores`. When both are ConceptScores the
            columns of ``cos`` are matched to the target concepts by name (``cos`` may have more).
        max_iter: Newton iterations at most.
        tol: stop when half the squared Newton decrement (the predicted loss decrease) is below this.

    Returns:
        :class:`Calibration` ``(a, b)``.

    Raises:
        NeurocoreError: mismatched shapes or concept names, targets outside [0, 1], non-finite input,
            targets of one value only, or a fitted slope of 0 (no ``b`` exists: the cosines carry no
            signal about the targets).

    Warns:
        UserWarning: no convergence within ``max_iter`` (e.g. the targets are perfectly separated by a
            cosine threshold, so ``a`` grows without bound).

    Example:
        >>> S = torch.rand(2000, 5) * 0.4 - 0.1  # cosines; targets drawn from a=30, b=-0.1
        >>> y = torch.bernoulli(torch.sigmoid(30 * (S - 0.1)))
        >>> a, b = calibrate(S, y)
        >>> abs(a - 30) < 2, abs(b + 0.1) < 0.005
        (True, True)
    """
    S, Y = _aligned(cos, targets)
    n = S.numel()
    mean_y = float(Y.double().mean())
    if mean_y <= 0.0 or mean_y >= 1.0:
        raise NeurocoreError(
            f"targets are all {int(round(mean_y))}: calibration needs both positive and negative pairs "
            "(images inside and outside each [super]class)"
        )
    theta = torch.tensor([0.0, math.log(mean_y / (1.0 - mean_y))], dtype=torch.float64)
    loss, grad, hess = _loss_grad_hess(S, Y, theta, n)
    converged = False
    for _ in range(max_iter):
        step = _newton_step(hess, grad)
        decrement = float(-(grad @ step))  # λ² = gᵀH⁻¹g
        if decrement / 2.0 <= tol:
            converged = True
            break
        t = 1.0
        while True:  # Armijo backtracking: Newton's full step can overshoot far from the optimum
            new_theta = theta + t * step
            new_loss, new_grad, new_hess = _loss_grad_hess(S, Y, new_theta, n)
            if new_loss <= loss - 0.25 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        if t < 1e-10:  # no decrease is possible within float64: we are at the optimum
            converged = True
            break
        theta, loss, grad, hess = new_theta, new_loss, new_grad, new_hess
    if not converged:
        warnings.warn(
            f"calibrate: no convergence in {max_iter} Newton steps (a={float(theta[0]):.4g}); the targets may "
            "be perfectly separated by a cosine threshold, so the BCE optimum lies at a -> infinity",
            stacklevel=2,
        )
    a, c = float(theta[0]), float(theta[1])
    if a == 0.0:
        raise NeurocoreError("calibrate: the fitted slope a is 0, so b = c/a is undefined: the cosines do not predict the targets")
    return Calibration(a, c / a)


def _newton_step(hess: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``-H⁻¹ g`` for the 2×2 Hessian, in closed form (a LAPACK call costs seconds of first-use setup)."""
    (haa, hac), (_, hcc) = hess.tolist()
    ga, gc = grad.tolist()
    det = haa * hcc - hac * hac
    if not det > 1e-300:  # singular: all cosines equal where the weights live; fall back to gradient descent
        return -grad
    return torch.tensor([-(hcc * ga - hac * gc) / det, -(haa * gc - hac * ga) / det], dtype=torch.float64)


def _loss_grad_hess(S: torch.Tensor, Y: torch.Tensor, theta: torch.Tensor, n: int):
    a, c = float(theta[0]), float(theta[1])
    loss = 0.0
    g = torch.zeros(2, dtype=torch.float64)
    h = torch.zeros(3, dtype=torch.float64)  # (Σ w s², Σ w s, Σ w)
    rows = max(1, _CHUNK_ELEMENTS // max(1, S.shape[1]))
    for start in range(0, S.shape[0], rows):
        s = S[start : start + rows].to("cpu", torch.float64)
        y = Y[start : start + rows].to("cpu", torch.float64)
        z = s * a + c
        # softplus(z) - y·z is BCE-with-logits, stable for large |z| unlike log(sigmoid(z))
        loss += float((torch.nn.functional.softplus(z) - y * z).sum())
        p = torch.sigmoid(z)
        r = p - y
        w = p * (1.0 - p)
        g += torch.stack([(r * s).sum(), r.sum()])
        h += torch.stack([(w * s * s).sum(), (w * s).sum(), w.sum()])
    hess = torch.stack([torch.stack([h[0], h[1]]), torch.stack([h[1], h[2]])]) / n
    return loss / n, g / n, hess


def _aligned(cos, targets) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(cos, ConceptScores) and isinstance(targets, ConceptScores):
        index = {c: j for j, c in enumerate(cos.concepts)}
        missing = [c for c in targets.concepts if c not in index]
        if missing:
            raise NeurocoreError(
                f"cos has no column for {len(missing)} target concept(s), e.g. {missing[:5]}: encode the "
                "target [super]class names with the model to calibrate"
            )
        cols = torch.tensor([index[c] for c in targets.concepts], dtype=torch.int64)
        S = cos.scores if cols.tolist() == list(range(cos.num_concepts)) else cos.scores.index_select(1, cols)
        Y = targets.scores
    else:
        S = cos.scores if isinstance(cos, ConceptScores) else torch.as_tensor(cos)
        Y = targets.scores if isinstance(targets, ConceptScores) else torch.as_tensor(targets)
    if S.dim() != 2 or S.shape != Y.shape:
        raise NeurocoreError(
            f"cos and targets must be Tensor[N, M] of the same shape (one target per image–concept pair); "
            f"got cos {tuple(S.shape)}, targets {tuple(Y.shape)}"
        )
    if S.numel() == 0:
        raise NeurocoreError("cos and targets are empty: calibration needs labelled images")
    if not torch.isfinite(S).all():
        raise NeurocoreError("cos contains NaN or inf; cosine scores must be finite")
    if Y.dtype == torch.bool:
        Y = Y.to(torch.float32)
    if not torch.isfinite(Y).all() or Y.min() < 0 or Y.max() > 1:
        raise NeurocoreError("targets must lie in [0, 1] (1 = the image belongs to the [super]class)")
    return S, Y


def _scalar(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise NeurocoreError(f"{name} must be a real number; got {value!r}") from None
    if not math.isfinite(value):
        raise NeurocoreError(f"{name} must be finite; got {value}")
    return value
