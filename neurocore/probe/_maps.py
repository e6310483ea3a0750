"""Spatial maps and crops: the un-summarised output of a layer for a few chosen images, and the image
region around a neuron's highest cell (HINT's and WWW's inputs)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._data import iter_batches, probe_length
from neurocore.probe._forward import hooked_forward
from neurocore.probe._layers import eval_mode, model_device, model_float_dtype, resolve_layers
from neurocore.probe._layout import layer_layouts


def spatial_maps(
    model: nn.Module,
    layer: str,
    probe,
    indices,
    *,
    transform: Callable | None = None,
    device=None,
    batch_size: int = 32,
    layout: str = "auto",
) -> torch.Tensor:
    """Re-run ``model`` on a few probe images and return ``layer``'s full, un-summarised output.

    ``indices`` are **dataset indices** of ``probe``. A store's rows map to them through
    ``store.dataset_indices``: the maps of neuron k's top images are
    ``spatial_maps(model, layer, probe, store.dataset_indices[store[layer].top_indices[:, k]])``.

    Args:
        model: the recorded model (eval mode and inference mode during the call, flags restored).
        layer: one module name.
        probe: the probe dataset (as given to :func:`record`).
        indices (Tensor[n] int64 or a sequence of ints, or a bool mask over the probe): dataset indices, in
            the order wanted (repeats allowed); floats are refused.
        transform: the preprocessing given to :func:`record`.
        device: where the model runs; default: the device of its parameters.
        batch_size: images per forward pass.
        layout: the layer's output layout (see :func:`~neurocore.probe.record`); ``"auto"`` by default.

    Returns:
        Tensor[n, C, H, W] for maps (channels-last outputs are permuted to channels first, 1-D maps
        are [n, C, L, 1]), Tensor[n, T, C] for tokens (sequence-first ones transposed), Tensor[n, C]
        for 2-D outputs; float32, CPU, in the order of ``indices``. Each is the layer's output as it
        left the module (later in-place ops of the model do not change it).

    Raises:
        NeurocoreError: a wrong layer name, empty or out-of-range indices, an unreadable image among
            them, a layer that never runs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> probe = [torch.rand(3, 8, 8) for _ in range(5)]
        >>> spatial_maps(net, "0", probe, [4, 1]).shape
        torch.Size([2, 4, 6, 6])
    """
    if not isinstance(layer, str):
        raise NeurocoreError(f"layer must be one module name (a string); got {layer!r}")
    modules = resolve_layers(model, layer)
    layouts = layer_layouts(layout, [layer])
    n = _probe_length(probe)
    idx = dataset_indices(indices, n).tolist()
    if not idx:
        raise NeurocoreError("indices is empty: give the dataset indices of the images whose maps you need")
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise NeurocoreError(
            f"indices must be dataset indices in [0, {n}); got {bad[:5]}. Map store rows with store.dataset_indices[rows]"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurocoreError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    device = model_device(model, device)
    dtype = model_float_dtype(model)
    view = _Selection(probe, idx)
    skipped: list = []
    maps = []

    def keep(name, out):
        return out.detach().to("cpu", torch.float32)

    with eval_mode(model):
        for b, batch in enumerate(iter_batches(view, batch_size, transform, skipped=skipped)):
            where = f"dataset indices {[idx[i] for i in batch.indices.tolist()][:8]}"
            outs, _, _ = hooked_forward(
                model, modules, batch.images, keep=keep, layouts=layouts, device=device, dtype=dtype, where=where
            )
            maps.append(outs[layer])
    if skipped:
        pos, why = skipped[0]
        raise NeurocoreError(f"probe image {idx[pos]} could not be read ({why}); maps need readable images")
    return torch.cat(maps)  # outside inference mode: a normal tensor, usable with autograd




def dataset_indices(indices, n: int) -> torch.Tensor:
    """``indices`` as a Tensor[k] int64 of dataset indices: integers (a sequence or tensor), or a bool
    mask of length ``n`` (its True positions). Floats are refused rather than truncated.

    Example:
        >>> dataset_indices(torch.tensor([True, False, True]), 3).tolist(), dataset_indices([2, 0], 3).tolist()
        ([0, 2], [2, 0])
    """
    t = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(list(indices) if not isinstance(indices, int) else [indices])
    if t.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    if t.dtype == torch.bool:
        if t.dim() != 1 or t.shape[0] != n:
            raise NeurocoreError(
                f"indices as a mask must be a bool sequence of the probe's length {n}; got shape {tuple(t.shape)}"
            )
        return t.nonzero().flatten()
    if t.is_floating_point() or t.is_complex():
        raise NeurocoreError(
            f"indices must be integer dataset indices (or a bool mask); got {t.dtype} values such as "
            f"{t.reshape(-1)[:3].tolist()}: convert them with .long() only if they really are indices"
        )
    return t.reshape(-1).to(torch.int64)


def _probe_length(probe) -> int:
    n = probe_length(probe)
    if n == 0:
        raise NeurocoreError("the probe set is empty: give a dataset with at least one image")
    return n


class Selection(torch.utils.data.Dataset):
    """Some items of a dataset, in a given order (ids stay the dataset's own: ``image_id`` is forwarded)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]

    def image_id(self, i) -> str:
        own = getattr(self.dataset, "image_id", None)
        return own(self.indices[i]) if callable(own) else str(self.indices[i])


_Selection = Selection


# ----------------------------------------------------------------------------------------------
# Crops


@dataclass(frozen=True)
class Crops:
    """Image regions around neurons' highest cells (see :func:`crops`).

    Attributes:
        images (Tensor[n, 3, S, S'] float32): each crop of the model's input, resized back to the input's size.
        boxes (Tensor[n, 4] int64): ``(x0, y0, x1, y1)`` of each crop in input pixels (x1, y1 exclusive).
        cells (Tensor[n, 2] int64): ``(row, column)`` of the highest cell in the layer's map.
        values (Tensor[n] float32): the neuron's activation at that cell.
        indices (Tensor[n] int64): the dataset index of each crop's image.
        units (Tensor[n] int64): the neuron of each crop.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    cells: torch.Tensor
    values: torch.Tensor
    indices: torch.Tensor
    units: torch.Tensor


# Leading tokens a ViT may carry before its patches when the model does not say: CLS (1), CLS and
# distillation (DeiT, 2), CLS and 4 registers (DINOv2-reg, 5).
_MAX_PREFIX = 5


def token_grid(num_tokens: int, grid: tuple[int, int] | None = None, prefix: int | None = None) -> tuple[int, int, int]:
    """``(prefix, h, w)``: how ``num_tokens`` tokens lay out as ``prefix`` leading tokens (CLS,
    distillation, register tokens) and an ``h × w`` patch grid (row-major, as ViTs flatten it).

    Args:
        num_tokens: T.
        grid: ``(h, w)`` when known; default: the square grid left after ``prefix`` leading tokens.
        prefix: the number of leading tokens when the model says (timm's ``num_prefix_tokens``); default:
            the fewest (0..5) that leave a square grid.

    Raises:
        NeurocoreError: no such grid (pass ``grid=``).

    Example:
        >>> token_grid(197), token_grid(50, grid=(7, 7))
        ((1, 14, 14), (1, 7, 7))
    """
    if grid is not None:
        h, w = int(grid[0]), int(grid[1])
        if prefix is not None and num_tokens - h * w != prefix:
            raise NeurocoreError(
                f"grid={grid!r} leaves {num_tokens - h * w} of {num_tokens} tokens before the patches, but the model "
                f"has {prefix} leading tokens; give the patch grid the layer really has"
            )
        prefix = num_tokens - h * w
        if h < 1 or w < 1 or prefix < 0 or prefix > _MAX_PREFIX:
            raise NeurocoreError(
                f"grid={grid!r} does not fit {num_tokens} tokens: h·w must leave 0..{_MAX_PREFIX} leading tokens "
                f"(CLS, distillation, registers); got {prefix}. Give the patch grid the layer really has"
            )
        return prefix, h, w
    if prefix is not None:
        side = math.isqrt(max(num_tokens - prefix, 0))
        if side * side != num_tokens - prefix or side == 0:
            raise NeurocoreError(
                f"{num_tokens} tokens minus the model's {prefix} leading tokens do not form a square grid; pass grid=(h, w)"
            )
        return prefix, side, side
    for prefix in range(0, min(_MAX_PREFIX + 1, num_tokens)):
        side = math.isqrt(num_tokens - prefix)
        if side * side == num_tokens - prefix and side > 0:
            return prefix, side, side
    raise NeurocoreError(
        f"{num_tokens} tokens do not form a square patch grid after 0..5 leading tokens; pass grid=(h, w)"
    )


def cell_maps(maps: torch.Tensor, grid: tuple[int, int] | None = None, prefix: int | None = None) -> torch.Tensor:
    """Layer outputs as per-neuron 2-D maps: ``[n, C, h, w]`` maps unchanged, ``[n, T, C]`` tokens as the
    patch grid (leading tokens dropped, see :func:`token_grid`).

    Example:
        >>> cell_maps(torch.rand(2, 1 + 16, 8)).shape
        torch.Size([2, 8, 4, 4])
    """
    if maps.dim() == 4:
        return maps
    if maps.dim() == 3:
        prefix, h, w = token_grid(maps.shape[1], grid, prefix)
        return maps[:, prefix:, :].transpose(1, 2).reshape(maps.shape[0], maps.shape[2], h, w)
    raise NeurocoreError(
        f"crops need a spatial layer ([n, C, H, W] maps or [n, T, C] tokens); got a {maps.dim()}-D output of shape "
        f"{tuple(maps.shape)}: a [B, C] layer has no highest cell"
    )


def crop_boxes(cells: torch.Tensor, map_size: tuple[int, int], image_size: tuple[int, int], fraction: float = 0.5) -> torch.Tensor:
    """The crop around each cell: a box of ``fraction`` of the image's height and width, centred on the
    cell's centre mapped to image coordinates (``((row + 0.5)·H/h, (col + 0.5)·W/w)``), shifted to lie
    inside the image.

    This is neurocore's definition of a WWW crop (ALGORITHMS.md §4 leaves it open): a fixed fraction of
    the image around the highest cell, which needs no receptive-field arithmetic and works for any map
    size (a 1×1 map gives the centre crop).

    Args:
        cells (Tensor[n, 2] int64): ``(row, col)`` in an ``h × w`` map.
        map_size: ``(h, w)``.
        image_size: ``(H, W)`` in pixels.
        fraction: the crop's side as a fraction of the image's, in (0, 1].

    Returns:
        Tensor[n, 4] int64: ``(x0, y0, x1, y1)``, x1 and y1 exclusive.

    Example:
        >>> crop_boxes(torch.tensor([[0, 0], [3, 3]]), (4, 4), (64, 64)).tolist()
        [[0, 0, 32, 32], [32, 32, 64, 64]]
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise NeurocoreError(f"fraction must be a number in (0, 1]; got {fraction!r}")
    h, w = map_size
    H, W = image_size
    ch, cw = max(1, round(fraction * H)), max(1, round(fraction * W))
    cy = (cells[:, 0].double() + 0.5) * H / h
    cx = (cells[:, 1].double() + 0.5) * W / w
    y0 = (cy - ch / 2).round().long().clamp(0, H - ch)
    x0 = (cx - cw / 2).round().long().clamp(0, W - cw)
    return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)


def crops(
    model: nn.Module,
    layer: str,
    probe,
    indices,
    units,
    *,
    transform: Callable | None = None,
    fraction: float = 0.5,
    grid: tuple[int, int] | None = None,
    device=None,
    batch_size: int = 32,
    layout: str = "auto",
) -> Crops:
    """The region of each image around a neuron's highest cell (WWW's "crops", ALGORITHMS.md §4).

    For each pair ``(indices[j], units[j])`` the model is re-run on that image (only the selected images
    run), the neuron's map is taken from :func:`spatial_maps`, its highest cell (first in row-major order
    on ties) located, and the box of :func:`crop_boxes` cut from the model's input and resized back to
    the input's size (bilinear).

    Args:
        model, layer, probe, transform, device, batch_size, layout: as :func:`spatial_maps`.
        indices (Tensor[n] int64 or ints): dataset indices (repeats allowed).
        units (Tensor[n] int64 or ints, or one int): the neuron of each crop.
        fraction: the crop's side as a fraction of the input's (default 0.5: a quarter of the image).
        grid: ``(h, w)`` of a token layer's patch grid (default: found from the token count).

    Returns:
        :class:`Crops`.

    Raises:
        NeurocoreError: a layer without spatial cells ([B, C]), units out of range, lengths that differ,
            and everything :func:`spatial_maps` raises.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        >>> probe = [torch.rand(3, 16, 16) for _ in range(3)]
        >>> c = crops(net, "0", probe, [2, 0], [1, 3])
        >>> c.images.shape, c.boxes.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 4]))
    """
    idx = dataset_indices(indices, probe_length(probe))
    units_t = torch.as_tensor(units, dtype=torch.int64).reshape(-1)
    if units_t.numel() == 1 and idx.numel() > 1:
        units_t = units_t.expand(idx.numel())
    if units_t.numel() != idx.numel():
        raise NeurocoreError(f"units has {units_t.numel()} entries but indices has {idx.numel()}; give one unit per image")
    order = idx.unique(sorted=True)
    maps = cell_maps(
        spatial_maps(model, layer, probe, order, transform=transform, device=device, batch_size=batch_size, layout=layout),
        grid,
        _prefix_tokens(model),
    )
    C, h, w = maps.shape[1:]
    if units_t.numel() and (int(units_t.min()) < 0 or int(units_t.max()) >= C):
        raise NeurocoreError(f"units must be in [0, {C}) for layer {layer!r}; got values up to {int(units_t.max())}")
    pos = torch.searchsorted(order, idx)
    chosen = maps[pos, units_t].reshape(idx.numel(), h * w)
    values, flat = chosen.max(dim=1)
    cells = torch.stack([flat // w, flat % w], dim=1)
    images = torch.stack([_input_tensor(probe, int(i), transform) for i in order.tolist()])
    H, W = images.shape[-2:]
    boxes = crop_boxes(cells, (h, w), (H, W), fraction)
    out = []
    for j in range(idx.numel()):
        x0, y0, x1, y1 = boxes[j].tolist()
        region = images[pos[j], :, y0:y1, x0:x1].float()
        out.append(F.interpolate(region[None], size=(H, W), mode="bilinear", align_corners=False)[0])
    return Crops(torch.stack(out), boxes, cells, values, idx, units_t)


def _prefix_tokens(model) -> int | None:
    """Leading (non-patch) tokens the model declares: timm's ``num_prefix_tokens``, torchvision's ViT CLS."""
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    if hasattr(model, "class_token") and hasattr(model, "encoder"):  # torchvision VisionTransformer
        return 1
    return None


def _input_tensor(probe, index: int, transform) -> torch.Tensor:
    item = probe[index]
    image = item[0] if isinstance(item, (tuple, list)) else item
    if transform is not None:
        image = transform(image)
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise NeurocoreError(
            f"crops need the model's input as a Tensor[3, H, W] per image; probe item {index} gives "
            f"{type(image).__name__}: pass transform= (the model's preprocessing)"
        )
    return image
