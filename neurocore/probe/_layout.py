"""Where the batch and the channels sit in a layer's output, so that no axis is guessed from the rank.

A layer's output reaches neurocore in one of these layouts (timm's ``output_fmt`` names):

======== ==================== =====================================================================
layout   shape                 typical modules
======== ==================== =====================================================================
``NCHW`` ``[B, C, H, W]``     convolutions, CNN stages (channels first, PyTorch's default)
``NHWC`` ``[B, H, W, C]``     Swin stages (torchvision ``swin_t.features.*``, timm ``layers.*``)
``NLC``  ``[B, T, C]``        ViT blocks, batch-first transformers (tokens)
``LNC``  ``[T, B, C]``        sequence-first transformers (``nn.MultiheadAttention`` default)
``NCL``  ``[B, C, L]``        1-D convolutions
``NC``   ``[B, C]``           features, logits
======== ==================== =====================================================================

Everything downstream (summaries, spatial maps, neuron replacement) works on the *canonical* form:
``[B, C, H, W]`` maps (``NHWC`` permuted, ``NCL`` as ``[B, C, L, 1]``), ``[B, T, C]`` tokens
(``LNC`` permuted), ``[B, C]`` features. :func:`to_canonical` and :func:`from_canonical` convert.

``layout="auto"`` (the default everywhere) decides from evidence, never from the rank alone:

* the batch axis is the one whose size is the input's batch size B (a 3-D output whose first two sizes
  both equal B is resolved by one extra forward pass of a single image; a shape without an axis of
  size B is refused);
* the channel axis of a 3-D/4-D output follows the last *informative* module that ran before the layer
  returned: ``Conv*``/``BatchNorm*``/``GroupNorm``/``InstanceNorm*`` write channels first, and a 4-D
  output after them is ``NCHW`` (concatenations, PixelShuffle and gating change the channel count but
  not where the channels are) unless it is that module's own output permuted to ``[B, H, W, C]``;
  after ``Linear``/``LayerNorm`` (channels last) the axis whose size equals their channel count is the
  channel axis, so a permute back after a ``Linear`` (ConvNeXt blocks) is still read correctly. For
  3-D outputs the same size comparison tells ``[B, T, C]`` tokens from ``[B, C, L]`` maps. When both candidate axes have that size (16 channels on a 16×16 map), the
  informative module's own orientation decides if its output had exactly the layer's shape and strides
  (no permute in between); otherwise the layout cannot be known and the caller is told to pass ``layout=``. With no informative module at all, a 4-D output is taken as
  ``NCHW`` and a 3-D one as tokens, PyTorch's conventions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from neurocore._errors import NeurocoreError

LAYOUTS = ("auto", "NCHW", "NHWC", "NLC", "LNC", "NCL", "NC")

_RANK = {"NCHW": 4, "NHWC": 4, "NLC": 3, "LNC": 3, "NCL": 3, "NC": 2}

# Modules whose own output has its channels at dim 1 (and their channel count), or last.
_CHANNELS_DIM1 = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.BatchNorm1d,
                  nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)


def layer_layouts(layout: str | Mapping[str, str], layers: Sequence[str]) -> dict[str, str]:
    """Validate ``layout`` (one name for every layer, or layer -> name) and spell it out per layer.

    Raises:
        NeurocoreError: an unknown layout name, or a dict that does not name exactly ``layers``.

    Example:
        >>> layer_layouts("auto", ["a", "b"])
        {'a': 'auto', 'b': 'auto'}
    """
    if isinstance(layout, str):
        per_layer = dict.fromkeys(layers, layout)
    elif isinstance(layout, Mapping):
        unknown = [k for k in layout if k not in layers]
        if unknown:
            raise NeurocoreError(
                f"layout names layers that are not recorded: {unknown}; recorded layers: {list(layers)}"
            )
        per_layer = {name: layout.get(name, "auto") for name in layers}
    else:
        raise NeurocoreError(f"layout must be one of {LAYOUTS} or a dict layer -> layout; got {layout!r}")
    for name, value in per_layer.items():
        if value not in LAYOUTS:
            raise NeurocoreError(
                f"layout for layer {name!r} must be one of {LAYOUTS} (NCHW: [B, C, H, W] maps, NHWC: "
                f"[B, H, W, C] maps as Swin gives them, NLC: [B, T, C] tokens, LNC: [T, B, C] sequence-first "
                f"tokens, NCL: [B, C, L], NC: [B, C]); got {value!r}"
            )
    return per_layer


def channel_evidence(module: nn.Module, output) -> tuple[str, int, tuple[int, ...]] | None:
    """``("dim1" | "last", channels, (output shape, output strides))`` when ``module`` tells where its
    output's channels are, else None."""
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        return None
    shape = (tuple(output.shape), tuple(output.stride()))
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
        return "dim1", module.out_channels, shape
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d)) and output.dim() > 2:
        return "dim1", module.num_features, shape
    if isinstance(module, nn.GroupNorm):
        return "dim1", module.num_channels, shape
    if isinstance(module, nn.Linear):
        return "last", module.out_features, shape
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return "last", module.normalized_shape[0], shape
    return None


def resolve_layout(
    layer: str, shape: Sequence[int], batch: int, evidence: tuple | None, own: bool = False, strides=None
) -> str | None:
    """The layout of an output of ``shape`` for an input batch of ``batch`` images.

    ``own``: the evidence comes from the layer itself (its own output's channel axis is then certain, a
    ``Conv2d`` is ``NCHW`` and a ``Linear`` on a 4-D input ``NHWC``, whatever the sizes).

    Returns None when a 3-D output's first two sizes both equal ``batch`` (the caller re-runs one image).

    Raises:
        NeurocoreError: no axis of size ``batch`` where a batch axis can be, or channels that cannot be
            told apart (the message says which ``layout=`` to pass).
    """
    shape = tuple(int(s) for s in shape)
    rank = len(shape)
    fix = f"pass layout={{{layer!r}: ...}} with one of {LAYOUTS[1:]} (on the command line: --layout {layer}=...)"
    if rank == 2:
        if shape[0] != batch:
            raise NeurocoreError(
                f"layer {layer!r} outputs shape {shape} for a batch of {batch} images: its first axis is not the "
                "batch (a module that merges the batch with another axis); record a layer that keeps the batch axis"
            )
        return "NC"
    if rank == 3:
        first, second = shape[0] == batch, shape[1] == batch
        if first and second and batch > 1:
            return None
        if not first and not second:
            raise NeurocoreError(
                f"layer {layer!r} outputs shape {shape} for a batch of {batch} images: no axis 0 or 1 of size "
                f"{batch}, so the batch axis is unknown; record a layer that keeps the batch axis"
            )
        if second and not first:
            return "LNC"
        # Batch first: tokens [B, T, C] or a 1-D map [B, C, L].
        if evidence is not None:
            where, c, _ = evidence
            at1, at2 = shape[1] == c, shape[2] == c
            if at1 != at2:
                return "NCL" if at1 else "NLC"
            if where == "dim1" and not at2:  # a Conv1d's channels, concatenated: still first
                return "NCL"
        return "NLC"
    if rank == 4:
        if shape[0] != batch:
            raise NeurocoreError(
                f"layer {layer!r} outputs shape {shape} for a batch of {batch} images: axis 0 is not the batch; "
                "record a layer that keeps the batch axis first"
            )
        if evidence is None or shape[1:] == (1, 1, 1):
            return "NCHW"
        where, c, seen = evidence
        if own:
            return "NCHW" if where == "dim1" else "NHWC"
        if where == "dim1":
            # A convolution or norm writes channels first; later concatenations (Inception, DenseNet),
            # PixelShuffle or gating (squeeze-excitation) change the count but keep them first. Only its
            # own output permuted to [B, H, W, C] is channels last.
            s_shape = seen[0]
            permuted = len(s_shape) == 4 and shape == (s_shape[0], s_shape[2], s_shape[3], s_shape[1])
            return "NHWC" if permuted and shape[1] != c else "NCHW"
        at1, at3 = shape[1] == c, shape[3] == c
        if at3 and not at1:
            return "NHWC"
        if at1 and not at3:
            return "NCHW"
        if at1 and at3 and seen == (shape, tuple(strides) if strides is not None else None):
            # [B, C, H, C]-like sizes: the Linear/LayerNorm that set the channels gave this very shape and
            # memory layout, so no permute came between (one changes the strides even when H == W == C).
            return "NHWC"
        if at1 and at3:
            raise NeurocoreError(
                f"layer {layer!r} outputs shape {shape}: both axis 1 and axis 3 have the size of its {c} channels, "
                f"so channels first [B, C, H, W] and channels last [B, H, W, C] cannot be told apart; {fix} "
                "('NCHW' or 'NHWC')"
            )
        raise NeurocoreError(
            f"layer {layer!r} outputs shape {shape} but the last Linear/LayerNorm before it has {c} channels; "
            f"neurocore cannot tell whether channels are first or last; {fix} ('NCHW' or 'NHWC')"
        )
    raise NeurocoreError(
        f"layer {layer!r} outputs a {rank}-D tensor of shape {shape}; neurocore records [B, C] features, [B, T, C] "
        "tokens and [B, C, H, W] maps (and their channels-last or sequence-first forms): choose another layer"
    )


def check_layout(layer: str, layout: str, shape: Sequence[int], batch: int) -> None:
    """Raise when an output of ``shape`` cannot be in the (given or earlier resolved) ``layout``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != _RANK[layout]:
        raise NeurocoreError(
            f"layer {layer!r} has layout {layout!r} ({_RANK[layout]}-D) but output a {len(shape)}-D tensor of shape "
            f"{shape}; pass the layout that matches the layer's output"
        )
    axis = 1 if layout == "LNC" else 0
    if shape[axis] != batch:
        raise NeurocoreError(
            f"layer {layer!r} with layout {layout!r} should have the batch ({batch} images) on axis {axis}, but its "
            f"output has shape {shape}; pass the layout that matches the layer's output"
        )


def to_canonical(output: torch.Tensor, layout: str) -> torch.Tensor:
    """A view of ``output`` in canonical form: ``[B, C, H, W]``, ``[B, T, C]`` or ``[B, C]``.

    Example:
        >>> to_canonical(torch.zeros(2, 7, 7, 96), "NHWC").shape
        torch.Size([2, 96, 7, 7])
    """
    if layout == "NHWC":
        return output.permute(0, 3, 1, 2)
    if layout == "LNC":
        return output.permute(1, 0, 2)
    if layout == "NCL":
        return output.unsqueeze(-1)
    return output


def from_canonical(canonical: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of :func:`to_canonical` (a view).

    Example:
        >>> x = torch.rand(5, 2, 8)
        >>> torch.equal(from_canonical(to_canonical(x, "LNC"), "LNC"), x)
        True
    """
    if layout == "NHWC":
        return canonical.permute(0, 2, 3, 1)
    if layout == "LNC":
        return canonical.permute(1, 0, 2)
    if layout == "NCL":
        return canonical.squeeze(-1)
    return canonical
