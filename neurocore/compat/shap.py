"""shap's permutation explainer for linear, logistic and softmax heads, on :func:`neurocore.ops.shapley_permutation`.

``shap.PermutationExplainer`` treats the model as a black box and calls it ``2 D + 1`` times per
permutation and sample; for a head ``f(z) = link(W z + b)`` the walk over a permutation is a cumulative
sum of per-feature logit changes, which the kernel evaluates for all samples, permutations and outputs
at once. The result is a ``shap.Explanation`` with shap's layout (``values [R, D]`` for one output,
``[R, D, C]`` for several; ``base_values``; ``data``; names), so ``shap.plots.*`` work unchanged::

    # explainer = shap.PermutationExplainer(clf.predict_proba, background)
    from neurocore.compat.shap import PermutationExplainer
    explainer = PermutationExplainer(clf, background)
    shap.plots.beeswarm(explainer(X)[..., 1])

Same estimator as shap's (Štrumbelj & Kononenko 2014; Lundberg & Lee 2017): the value of a coalition is
the mean over the background rows of f with the missing features taken from that row (interventional
Shapley values), each permutation is walked forward and backward (antithetic sampling), and
``max_evals`` buys ``max_evals // (2 D + 1)`` permutations. The background mean is taken outside the
walk: Shapley values are linear in the value function, so they are the mean over background rows of the
single-baseline values that the kernel computes. The identity link needs no sampling (exact).

``shap`` is an optional dependency (``pip install neurocore[shap]``); only building the
``Explanation`` needs it: :meth:`PermutationExplainer.shapley_values` returns the tensor without it.

Example:
    >>> head = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1))
    >>> explainer = PermutationExplainer(head, torch.randn(20, 4), seed=0)
    >>> phi, base = explainer.shapley_values(torch.randn(5, 4), max_evals=90)
    >>> phi.shape, base.shape
    (torch.Size([5, 4, 3]), torch.Size([3]))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from neurocore import ops
from neurocore._errors import NeurocoreError

__all__ = ["PermutationExplainer", "head_parameters"]

# elements of one [samples x background rows, outputs, features] block of the kernel's output
_BLOCK_ELEMENTS = 1 << 24


def _import_shap():
    try:
        import shap
    except ImportError as exc:  # the one optional dependency of this module
        raise ImportError(
            "neurocore.compat.shap returns shap.Explanation objects and needs the shap package: "
            "`pip install neurocore[shap]` (or `pip install shap`); "
            "PermutationExplainer.shapley_values works without it"
        ) from exc
    return shap


def _tensor(value, name: str) -> torch.Tensor:
    if hasattr(value, "to_numpy"):  # pandas
        value = value.to_numpy()
    if hasattr(value, "data") and not isinstance(value, (torch.Tensor, np.ndarray)):  # shap.maskers.Independent
        value = value.data
    try:
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as exc:
        raise NeurocoreError(f"{name} must be an array or tensor of shape [rows, D]; got {type(value).__name__}") from exc
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise NeurocoreError(f"{name} must be a 2-D real array [rows, D]; got shape {tuple(t.shape)}, dtype {t.dtype}")
    return t.detach().to(torch.float64)


def head_parameters(model) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(weight [C, D], bias [C], link)`` of a linear, logistic or softmax head.

    Accepted: ``torch.nn.Linear`` (identity); ``torch.nn.Sequential(Linear, Sigmoid())`` (sigmoid) or
    ``(Linear, Softmax(dim=-1))`` (softmax); a scikit-learn linear regressor with ``coef_`` and
    ``intercept_`` (identity: ``predict``); a scikit-learn ``LogisticRegression`` (its ``predict_proba``:
    a binary one as a softmax over the logits ``[0, z]``, i.e. ``[1 - sigmoid(z), sigmoid(z)]``, a
    multinomial one as a softmax); or a tuple ``(weight, bias, link)`` with ``link`` in
    :data:`neurocore.ops.SHAPLEY_LINKS`.

    Raises:
        NeurocoreError: any other model (the message lists the accepted ones).

    Example:
        >>> w, b, link = head_parameters(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid()))
        >>> w.shape, b.shape, link
        (torch.Size([1, 3]), torch.Size([1]), 'sigmoid')
    """
    accepted = (
        "torch.nn.Linear, nn.Sequential(Linear, Sigmoid()/Softmax(dim=-1)), a scikit-learn linear "
        "regressor or LogisticRegression, or (weight [C, D], bias [C], link)"
    )
    if isinstance(model, tuple) and len(model) == 3:
        weight, bias, link = model
        weight = torch.as_tensor(weight, dtype=torch.float64)
        weight = weight.unsqueeze(0) if weight.dim() == 1 else weight
        bias = torch.as_tensor(bias, dtype=torch.float64).reshape(-1)
        if link not in ops.SHAPLEY_LINKS:
            raise NeurocoreError(f"link must be one of {ops.SHAPLEY_LINKS}; got {link!r}")
        if weight.dim() != 2 or bias.shape != (weight.shape[0],):
            raise NeurocoreError(f"weight must be [C, D] and bias [C]; got {tuple(weight.shape)} and {tuple(bias.shape)}")
        return weight, bias, link
    if isinstance(model, torch.nn.Linear):
        return _linear(model) + ("identity",)
    if isinstance(model, torch.nn.Sequential) and len(model) == 2 and isinstance(model[0], torch.nn.Linear):
        if isinstance(model[1], torch.nn.Sigmoid):
            return _linear(model[0]) + ("sigmoid",)
        if isinstance(model[1], torch.nn.Softmax) and model[1].dim in (-1, 1):
            return _linear(model[0]) + ("softmax",)
    if hasattr(model, "coef_") and hasattr(model, "intercept_"):
        coef = torch.as_tensor(np.atleast_2d(model.coef_), dtype=torch.float64)
        intercept = torch.as_tensor(np.atleast_1d(model.intercept_), dtype=torch.float64).expand(coef.shape[0])
        if not hasattr(model, "predict_proba"):
            return coef, intercept.clone(), "identity"
        if getattr(model, "multi_class", "auto") == "ovr" and coef.shape[0] > 1:
            raise NeurocoreError("a one-vs-rest LogisticRegression is not a softmax head; fit it with the multinomial loss")
        if coef.shape[0] == 1:  # binary: predict_proba = softmax([0, z])
            return torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1, dtype=torch.float64), intercept]), "softmax"
        return coef, intercept.clone(), "softmax"
    raise NeurocoreError(f"model must be one of: {accepted}; got {type(model).__name__}")


def _linear(layer: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    weight = layer.weight.detach().to(torch.float64)
    bias = layer.bias.detach().to(torch.float64) if layer.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    return weight, bias


def _apply_link(logits: torch.Tensor, link: str) -> torch.Tensor:
    if link == "sigmoid":
        return torch.sigmoid(logits)
    if link == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits


class PermutationExplainer:
    """Permutation Shapley values of a linear/logistic/softmax head, returned as ``shap.Explanation``.

    Args:
        model: the head (:func:`head_parameters` lists the accepted kinds).
        masker (array [B, D]): background rows (numpy, torch, pandas, or a ``shap.maskers.Independent``):
            a missing feature takes each row's value in turn and the results are averaged.
        feature_names: D names (default: those of a pandas background, else none).
        seed: seed of the permutations (default 0; the same seed gives the same values).

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> X = torch.randn(100, 4).numpy(); y = (X[:, 0] > 0).astype(int)
        >>> explainer = PermutationExplainer(LogisticRegression().fit(X, y), X[:20])
        >>> explainer(X[:5]).values.shape
        (5, 4, 2)
        >>> phi, base = explainer.shapley_values(X[:5])
        >>> phi.shape
        torch.Size([5, 4, 2])
    """

    def __init__(self, model, masker, feature_names: Sequence[str] | None = None, seed: int = 0):
        self.model = model
        self.masker = masker
        self.feature_names = feature_names
        self.seed = seed

    def _parts(self):
        weight, bias, link = head_parameters(self.model)
        background = _tensor(self.masker, "masker")
        if background.shape[1] != weight.shape[1]:
            raise NeurocoreError(
                f"masker has {background.shape[1]} features but the model takes {weight.shape[1]}: pass "
                "background rows of the model's input"
            )
        return weight, bias, link, background

    def shapley_values(self, X, max_evals: int | str = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """The Shapley values and the base value, as tensors (no shap needed).

        Args:
            X (array [R, D]): samples to explain.
            max_evals: model evaluations per sample as shap counts them; ``max_evals // (2 D + 1)``
                permutations, each walked forward and backward; ``"auto"`` = 10 permutations (shap's
                default). Ignored (exact) for an identity link.

        Returns:
            ``(phi, base)``: ``phi (Tensor[R, D, C], float64)``, feature d's contribution to output c,
            and ``base (Tensor[C])``, the mean output over the background. ``phi.sum(1) + base`` equals
            the model's output on X (efficiency).

        Raises:
            NeurocoreError: an unsupported model, mismatched widths, ``max_evals < 2 D + 1``.

        Example:
            >>> explainer = PermutationExplainer(torch.nn.Linear(3, 2), torch.zeros(1, 3))
            >>> phi, base = explainer.shapley_values(torch.ones(4, 3))
            >>> phi.shape, torch.allclose(phi[0].T, explainer.model.weight.double())
            (torch.Size([4, 3, 2]), True)
        """
        weight, bias, link, background = self._parts()
        x = _tensor(X, "X")
        R, D = x.shape
        if D != weight.shape[1]:
            raise NeurocoreError(f"X has {D} features but the model takes {weight.shape[1]}")
        C, B = weight.shape[0], background.shape[0]
        if max_evals == "auto":
            npermutations = 10
        else:
            npermutations = int(max_evals) // (2 * D + 1)
            if npermutations < 1 and link != "identity":
                raise NeurocoreError(f"max_evals={max_evals} is too low: it must be at least 2 * D + 1 = {2 * D + 1}")
        perms = ops.sample_permutations(max(npermutations, 1), D, seed=self.seed)
        perms = torch.cat([perms, perms.flip(1)])  # antithetic: forward and backward, as shap walks them
        base = _apply_link(background @ weight.T + bias, link).mean(0)
        phi = torch.empty(R, D, C, dtype=torch.float64)
        rows = max(1, _BLOCK_ELEMENTS // max(1, B * C * D))
        for r0 in range(0, R, rows):
            xs = x[r0 : r0 + rows]
            r = xs.shape[0]
            out = ops.shapley_permutation(
                xs.repeat_interleave(B, 0), weight, bias, background.repeat(r, 1), perms, link
            )  # [r * B, C, D]
            phi[r0 : r0 + r] = out.view(r, B, C, D).mean(1).transpose(1, 2)
        return phi, base

    def __call__(self, X, max_evals: int | str = 500):
        """Explain the rows of X like ``shap.PermutationExplainer.__call__``.

        Args:
            X (array [R, D]): samples (numpy, torch or pandas).
            max_evals: as :meth:`shapley_values`.

        Returns:
            ``shap.Explanation`` with ``values [R, D]`` (one output) or ``[R, D, C]``, ``base_values
            [R]`` or ``[R, C]``, ``data`` (X as numpy) and ``feature_names``.

        Raises:
            ImportError: shap is not installed (the message names the extra to install).

        Example:
            >>> explainer = PermutationExplainer(torch.nn.Linear(3, 1), torch.zeros(1, 3))
            >>> explainer(torch.ones(4, 3)).values.shape
            (4, 3)
        """
        shap = _import_shap()
        phi, base = self.shapley_values(X, max_evals=max_evals)
        names = self.feature_names
        if names is None and hasattr(X, "columns"):
            names = list(X.columns)
        elif names is None and hasattr(self.masker, "columns"):
            names = list(self.masker.columns)
        values = phi.numpy()
        base_values = np.broadcast_to(base.numpy(), (phi.shape[0], phi.shape[2])).copy()
        if phi.shape[2] == 1:
            values, base_values = values[..., 0], base_values[:, 0]
        return shap.Explanation(values=values, base_values=base_values, data=_tensor(X, "X").numpy(), feature_names=names)
