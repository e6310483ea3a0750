"""A synthetic "concept world": procedural images whose concepts are known exactly, per image.

Every image shows one shape, in one colour, filled with one texture, on one background. The
classes are ``"<colour> <shape>"`` (e.g. ``"red circle"``), so the ground truth of a classifier's
final-layer neuron is a concept name, and the exact image–concept matrix (multi-hot: an image has
its shape, colour, texture, background and class) replaces a vision–language model. Dissecting a
network trained on this world therefore has an answer key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from neurocore._errors import NeurocoreError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
COLOURS = ("red", "green", "blue", "yellow")
TEXTURES = ("plain", "stripes", "dots", "checker")
BACKGROUNDS = ("dark background", "light background")

_RGB = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.12, 0.78, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
_BACKGROUND_LEVEL = {"dark background": 0.08, "light background": 0.72}
_DARK_SHADE = 0.3  # the "off" parts of a texture keep 30% of the colour: the colour stays readable
_NOISE = 0.03  # per-pixel Gaussian noise, so that no two images are exactly alike


@dataclass(frozen=True)
class ConceptWorld:
    """The rules of the synthetic world: which concepts exist and how large images are.

    Attributes:
        shapes, colours, textures, backgrounds: the concept families (subsets of
            :data:`SHAPES`, :data:`COLOURS`, :data:`TEXTURES`, :data:`BACKGROUNDS`).
        image_size: images are ``3 × image_size × image_size`` (at least 24 pixels, so that a
            texture's period of 4 pixels fits into a shape several times).

    Example:
        >>> world = ConceptWorld()
        >>> len(world.classes), world.classes[0], len(world.concepts)
        (24, 'red circle', 40)
        >>> data = world.sample(2, seed=0)
        >>> data.images.shape, data.concept_scores().scores.shape
        (torch.Size([48, 3, 32, 32]), torch.Size([48, 40]))
    """

    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = COLOURS
    textures: tuple[str, ...] = TEXTURES
    backgrounds: tuple[str, ...] = BACKGROUNDS
    image_size: int = 32

    def __post_init__(self):
        for name, given, known in (
            ("shapes", self.shapes, SHAPES),
            ("colours", self.colours, COLOURS),
            ("textures", self.textures, TEXTURES),
            ("backgrounds", self.backgrounds, BACKGROUNDS),
        ):
            if not given:
                raise NeurocoreError(f"ConceptWorld: {name} is empty; give at least one of {known}")
            unknown = [g for g in given if g not in known]
            if unknown or len(set(given)) != len(given):
                raise NeurocoreError(
                    f"ConceptWorld: {name} must be distinct names from {known}; got {tuple(given)}"
                )
        if self.image_size < 24:
            raise NeurocoreError(f"ConceptWorld: image_size must be >= 24 pixels; got {self.image_size}")

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names ``"<colour> <shape>"``, shape-major (class = shape index × colours + colour index)."""
        return tuple(f"{c} {s}" for s in self.shapes for c in self.colours)

    @property
    def families(self) -> dict[str, str]:
        """Concept name -> family (``"shape"``, ``"colour"``, ``"texture"``, ``"background"``, ``"object"``)."""
        out = {}
        for family, names in (
            ("shape", self.shapes),
            ("colour", self.colours),
            ("texture", self.textures),
            ("background", self.backgrounds),
            ("object", self.classes),
        ):
            out.update(dict.fromkeys(names, family))
        return out

    @property
    def concepts(self) -> tuple[str, ...]:
        """Every concept: shapes, colours, textures, backgrounds, then the classes (objects)."""
        return tuple(self.families)

    def sample(self, n_per_class: int, seed: int = 0) -> WorldImages:
        """Draw ``n_per_class`` images of every class (shape and colour fixed by the class; texture,
        background, position, size and stripe phase drawn at random), in class order.

        Args:
            n_per_class: images per class (>= 1).
            seed: the images are a function of the world and the seed only.

        Returns:
            :class:`WorldImages` with ``n_per_class × len(classes)`` images.
        """
        if n_per_class < 1:
            raise NeurocoreError(f"n_per_class must be >= 1; got {n_per_class}")
        g = torch.Generator().manual_seed(int(seed))
        n_col = len(self.colours)
        labels = torch.arange(len(self.classes)).repeat_interleave(n_per_class)
        n = labels.numel()
        attributes = torch.stack(
            [
                labels // n_col,
                labels % n_col,
                torch.randint(len(self.textures), (n,), generator=g),
                torch.randint(len(self.backgrounds), (n,), generator=g),
            ],
            dim=1,
        )
        images, masks = _draw(self, attributes, g)
        return WorldImages(self, images, labels, attributes, seed, masks=masks)

    @property
    def hierarchy(self) -> dict[str, tuple[str, ...]]:
        """The class hierarchy above the ``"<colour> <shape>"`` classes: node name -> its leaf classes.

        Three levels above the leaves: ``"object"`` (every class), the shape families ``"round"``
        (circle, ring), ``"angular"`` (square, triangle, diamond) and ``"cross"``, then one node per
        shape (``"circle"``: its classes of every colour). A family without any of the world's shapes
        is left out. It is HINT's concept hierarchy with exact answers: the object mask of an image
        is the region of every node on its class's path to the root
        (:class:`~neurocore.methods.hint.ConceptHierarchy.from_groups`).

        Example:
            >>> ConceptWorld().hierarchy["round"][:3]
            ('red circle', 'green circle', 'blue circle')
        """
        out: dict[str, tuple[str, ...]] = {"object": self.classes}
        for family, members in _SHAPE_FAMILIES.items():
            leaves = tuple(f"{c} {s}" for s in self.shapes if s in members for c in self.colours)
            if leaves and family not in self.shapes:
                out[family] = leaves
        for s in self.shapes:
            out[s] = tuple(f"{c} {s}" for c in self.colours)
        return out


# Shape families (the level between "object" and the shapes in ConceptWorld.hierarchy).
_SHAPE_FAMILIES = {"round": ("circle", "ring"), "angular": ("square", "triangle", "diamond"), "cross": ("cross",)}


def _draw(world: ConceptWorld, attributes: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``attributes (Tensor[N, 4])`` (shape, colour, texture, background indices) to
    ``Tensor[N, 3, S, S]`` in [0, 1], vectorised over images, and the object masks ``Bool[N, S, S]``
    (the pixels of the shape)."""
    n, size = attributes.shape[0], world.image_size
    shape_i, colour_i, texture_i, background_i = attributes.unbind(1)
    # Radius 28-40% of the image: big enough for a texture to show, small enough to move around.
    radius = size * (0.28 + 0.12 * torch.rand(n, generator=g))
    margin = radius + 1
    cx = margin + torch.rand(n, generator=g) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=g) * (size - 2 * margin)
    phase_x = torch.randint(4, (n,), generator=g).float()
    phase_y = torch.randint(4, (n,), generator=g).float()
    vertical = torch.rand(n, generator=g) < 0.5  # stripes run either way
    brightness = 0.9 + 0.2 * torch.rand(n, generator=g)
    noise = torch.randn(n, 3, size, size, generator=g) * _NOISE

    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    u = (x - cx.view(n, 1, 1)) / radius.view(n, 1, 1)
    v = (y - cy.view(n, 1, 1)) / radius.view(n, 1, 1)

    masks = {
        "circle": u.square() + v.square() <= 1.0,
        "ring": ((u.square() + v.square()) <= 1.0) & ((u.square() + v.square()) >= 0.55**2),
        "square": torch.maximum(u.abs(), v.abs()) <= 0.8,
        "diamond": u.abs() + v.abs() <= 1.0,
        "triangle": (v <= 0.8) & (u.abs() <= (v + 1.0) / 1.8),
        "cross": ((u.abs() <= 0.3) & (v.abs() <= 1.0)) | ((v.abs() <= 0.3) & (u.abs() <= 1.0)),
    }
    shape_mask = torch.zeros(n, size, size, dtype=torch.bool)
    for k, name in enumerate(world.shapes):
        sel = shape_i == k
        shape_mask[sel] = masks[name][sel]

    xs, ys = x + phase_x.view(n, 1, 1), y + phase_y.view(n, 1, 1)
    along = torch.where(vertical.view(n, 1, 1), xs, ys)
    dark = {
        "plain": torch.zeros(n, size, size, dtype=torch.bool),
        "stripes": (along.div(2).floor() % 2) == 1,
        "dots": ((xs % 4) < 2) & ((ys % 4) < 2),
        "checker": ((xs.div(3).floor() + ys.div(3).floor()) % 2) == 1,
    }
    dark_mask = torch.zeros(n, size, size, dtype=torch.bool)
    for k, name in enumerate(world.textures):
        sel = texture_i == k
        dark_mask[sel] = dark[name].expand(n, size, size)[sel]

    rgb = torch.tensor([_RGB[c] for c in world.colours])[colour_i] * brightness.view(n, 1)  # [N, 3]
    level = torch.tensor([_BACKGROUND_LEVEL[b] for b in world.backgrounds])[background_i]  # [N]
    fill = rgb.view(n, 3, 1, 1) * torch.where(dark_mask, _DARK_SHADE, 1.0).unsqueeze(1)
    image = torch.where(shape_mask.unsqueeze(1), fill, level.view(n, 1, 1, 1))
    return (image + noise).clamp_(0.0, 1.0), shape_mask


class WorldImages(Dataset):
    """Images of a :class:`ConceptWorld` with their exact concepts; a map-style dataset.

    Items are ``(image, label)``: ``image (Tensor[3, S, S])`` in [0, 1] and the class index.

    Attributes:
        world: the world they come from.
        images (Tensor[N, 3, S, S]): the images.
        labels (Tensor[N], int64): class indices into ``world.classes``.
        attributes (Tensor[N, 4], int64): shape, colour, texture and background index of each image.
        seed: the seed they were drawn with.
        masks (Bool[N, S, S] or None): the object's pixels in each image (the planted truth of
            localisation); None for images made without them.
    """

    def __init__(self, world: ConceptWorld, images, labels, attributes, seed: int, masks=None):
        self.world = world
        self.images = images
        self.labels = labels
        self.attributes = attributes
        self.seed = seed
        self.masks = masks

    @property
    def boxes(self) -> torch.Tensor:
        """``Tensor[N, 4]`` int64: each object's bounding box ``(x0, y0, x1, y1)`` in inclusive pixel
        coordinates (as Tiny-ImageNet's and ImageNet's box files), from :attr:`masks`.

        Raises:
            NeurocoreError: the images have no masks.

        Example:
            >>> data = ConceptWorld().sample(1, seed=0)
            >>> box = data.boxes[0].tolist()
            >>> bool(data.masks[0, box[1]:box[3] + 1, box[0]:box[2] + 1].sum() == data.masks[0].sum())
            True
        """
        if self.masks is None:
            raise NeurocoreError("these WorldImages have no object masks; draw them with ConceptWorld.sample")
        rows, cols = self.masks.any(2), self.masks.any(1)  # [N, S]: a row / column holds object pixels
        idx = torch.arange(self.masks.shape[-1])
        big = self.masks.shape[-1]
        x0 = torch.where(cols, idx, big).min(1).values
        x1 = torch.where(cols, idx, -1).max(1).values
        y0 = torch.where(rows, idx, big).min(1).values
        y1 = torch.where(rows, idx, -1).max(1).values
        return torch.stack([x0, y0, x1, y1], dim=1)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.world.classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])

    def image_id(self, index: int) -> str:
        """``"<index>: <colour> <shape>, <texture>, <background>"``."""
        s, c, t, b = self.attributes[index].tolist()
        w = self.world
        return f"{index}: {w.colours[c]} {w.shapes[s]}, {w.textures[t]}, {w.backgrounds[b]}"

    def fingerprint(self) -> str:
        """Digest of the images and labels (the cache key's dataset identity)."""
        h = hashlib.sha256()
        h.update(repr(self.world).encode())
        h.update(self.images.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()

    def concept_matrix(self) -> torch.Tensor:
        """``Tensor[N, M]`` float32, 1 where image i has concept j (columns: ``world.concepts``)."""
        w = self.world
        offsets = torch.tensor([0, len(w.shapes), len(w.colours), len(w.textures), len(w.backgrounds)]).cumsum(0)
        n = len(self)
        out = torch.zeros(n, len(w.concepts))
        rows = torch.arange(n)
        for f in range(4):
            out[rows, offsets[f] + self.attributes[:, f]] = 1.0
        out[rows, offsets[4] + self.labels] = 1.0
        return out

    def concept_scores(self):
        """The exact :class:`~neurocore.concepts.ConceptScores` (multi-hot, source ``"concept-world"``)."""
        from neurocore.concepts import ConceptScores

        return ConceptScores.from_tensor(self.concept_matrix(), self.world.concepts, source="concept-world")

    def subset(self, indices: Sequence[int] | torch.Tensor) -> WorldImages:
        """The images at ``indices`` (a new dataset; this one is unchanged)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        masks = None if self.masks is None else self.masks[idx]
        return WorldImages(self.world, self.images[idx], self.labels[idx], self.attributes[idx], self.seed, masks=masks)

    def __repr__(self) -> str:
        return f"WorldImages(images={len(self)}, classes={len(self.classes)}, seed={self.seed})"
