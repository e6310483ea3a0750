"""WWW's planted ground truth in the concept world: a vision–language stand-in whose cosines are the
exact concept scores, the objects' boxes, planted distractors, and a network that a distractor fools.

* :class:`ConceptWorldVLM` implements :class:`neurocore.vlm.VisionLanguageModel`. Texts: one-hot
  over ``world.concepts`` (a text names the longest concept it ends with, so ``"A photo of a red
  circle"`` is ``"red circle"``); a text naming none (the template ``"A photo of a"``) is one extra
  axis. Images: the normalised indicator of their concepts, so ``cos(image, concept) = score / √5``
  (each world image has five concepts: the exact scores up to one constant). Images of the world it
  was built with are recognised exactly (8-bit pixel match: the PIL round trip); any other image (a
  crop) gets the concepts its pixels show under the world's rendering constants: a background when 5%
  of its pixels are that grey, a colour when 5% are that colour at a brightness of 0.25–1.15.
* :func:`object_boxes`: each image's object box, recomputed from the generator's own draws.
* :func:`add_distractor`: paste a white square (the distractor) in the image corner farthest from
  the object.
* :class:`DistractorNet`: per-pixel colour, background and white detectors (layer ``units``), global
  average pooling and a fixed linear head over colours; the white detector votes strongly for one
  colour, so a distractor makes images of other colours mispredicted, by construction.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.demo._model import _Prototypes
from neurocore.demo._world import _BACKGROUND_LEVEL, _RGB, WorldImages

_PRESENT = 0.05  # share of pixels that makes a colour or background visible in a crop
_WHITE = (1.0, 1.0, 1.0)


class ConceptWorldVLM:
    """A vision–language stand-in for the concept world with exact cosines (see the module doc).

    Args:
        images: the world images whose exact concepts it knows (e.g. the probe).

    Example:
        >>> from neurocore.demo import ConceptWorld
        >>> probe = ConceptWorld().sample(1, seed=0)
        >>> vlm = ConceptWorldVLM(probe)
        >>> import torchvision.transforms.functional as TF
        >>> img = vlm.preprocess(TF.to_pil_image(probe.images[0]))[None]
        >>> sims = F.normalize(vlm.encode_images(img), dim=1) @ F.normalize(vlm.encode_texts(["A photo of a red"]), dim=1).T
        >>> round(float(sims), 4), round(5 ** -0.5, 4)
        (0.4472, 0.4472)
    """

    def __init__(self, images: WorldImages):
        import torchvision.transforms as T

        if not isinstance(images, WorldImages):
            raise NeurocoreError(f"images must be WorldImages (ConceptWorld.sample); got {type(images).__name__}")
        self.world = images.world
        self.concepts = self.world.concepts
        self.preprocess = T.ToTensor()
        self._device = torch.device("cpu")
        self._matrix = images.concept_matrix()
        q = images.images.mul(255).byte()  # what to_pil_image keeps
        self._known = {q[i].numpy().tobytes(): i for i in range(q.shape[0])}
        self._identity = f"concept-world-vlm:{hashlib.sha256(images.fingerprint().encode()).hexdigest()[:16]}"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dim(self) -> int:
        return len(self.concepts) + 1

    def encode_texts(self, texts) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        by_length = sorted(range(len(self.concepts)), key=lambda j: -len(self.concepts[j]))
        for i, t in enumerate(texts):
            t = " ".join(str(t).split())
            hit = next((j for j in by_length if t == self.concepts[j] or t.endswith(" " + self.concepts[j])), None)
            out[i, len(self.concepts) if hit is None else hit] = 1.0
        return out

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to("cpu", torch.float32)
        out = torch.zeros(x.shape[0], self.dim)
        q = x.mul(255).round().clamp(0, 255).byte()
        for i in range(x.shape[0]):
            row = self._known.get(q[i].numpy().tobytes())
            out[i, : len(self.concepts)] = self._matrix[row] if row is not None else self._pixel_concepts(x[i])
        return out

    def _pixel_concepts(self, image: torch.Tensor) -> torch.Tensor:
        w, offsets = self.world, _offsets(self.world)
        px = image.reshape(3, -1).T  # [P, 3]
        v = torch.zeros(len(self.concepts))
        for j, b in enumerate(w.backgrounds):
            near = (px - _BACKGROUND_LEVEL[b]).abs().amax(dim=1) < 0.1
            if near.float().mean() >= _PRESENT:
                v[offsets["background"] + j] = 1.0
        for j, c in enumerate(w.colours):
            rgb = torch.tensor(_RGB[c])
            t = px @ rgb / rgb.dot(rgb)  # the brightness that best explains the pixel
            near = ((px - t[:, None] * rgb).norm(dim=1) < 0.12) & (t >= 0.25) & (t <= 1.15)
            if near.float().mean() >= _PRESENT:
                v[offsets["colour"] + j] = 1.0
        return v


def _offsets(world) -> dict[str, int]:
    fams = list(world.families.values())
    return {f: fams.index(f) for f in ("shape", "colour", "texture", "background", "object")}


def object_boxes(images: WorldImages) -> torch.Tensor:
    """Each image's object box ``Tensor[N, 4]`` int64 ``(x0, y0, x1, y1)`` (x1, y1 exclusive), from the
    generator's own draws (centre ± radius; every shape lies inside its circle's box).

    Only for images exactly as :meth:`ConceptWorld.sample` drew them (not subsets): the draws are
    replayed from the seed and checked against the images' textures and backgrounds.

    Raises:
        NeurocoreError: images that are not one whole sample.

    Example:
        >>> from neurocore.demo import ConceptWorld
        >>> object_boxes(ConceptWorld().sample(1, seed=0)).shape
        torch.Size([24, 4])
    """
    world, n = images.world, len(images)
    size = world.image_size
    g = torch.Generator().manual_seed(int(images.seed))
    textures = torch.randint(len(world.textures), (n,), generator=g)
    backgrounds = torch.randint(len(world.backgrounds), (n,), generator=g)
    if not (torch.equal(textures, images.attributes[:, 2]) and torch.equal(backgrounds, images.attributes[:, 3])):
        raise NeurocoreError("object_boxes needs the images exactly as ConceptWorld.sample(n, seed) drew them (not a subset)")
    radius = size * (0.28 + 0.12 * torch.rand(n, generator=g))
    margin = radius + 1
    cx = margin + torch.rand(n, generator=g) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=g) * (size - 2 * margin)
    x0 = (cx - radius).floor().clamp(0, size).long()
    y0 = (cy - radius).floor().clamp(0, size).long()
    x1 = (cx + radius).ceil().clamp(0, size).long()
    y1 = (cy + radius).ceil().clamp(0, size).long()
    return torch.stack([x0, y0, x1, y1], dim=1)


def add_distractor(images: WorldImages, indices, *, side: float = 0.35) -> tuple[WorldImages, torch.Tensor]:
    """Paste a white square (the distractor) into the images at ``indices``, in the image corner
    farthest from each object's centre.

    Args:
        images: a whole :meth:`ConceptWorld.sample` (for :func:`object_boxes`).
        indices: which images get a distractor.
        side: the square's side as a fraction of the image's.

    Returns:
        ``(new images, boxes)``: a new :class:`WorldImages` (labels and attributes unchanged; the input is
        not modified) and ``Tensor[N, 4]`` int64 distractor boxes (``-1`` rows for images without one).

    Example:
        >>> from neurocore.demo import ConceptWorld
        >>> data = ConceptWorld().sample(1, seed=0)
        >>> new, boxes = add_distractor(data, [0])
        >>> bool((new.images[0] == 1).any()), boxes[1].tolist()
        (True, [-1, -1, -1, -1])
    """
    obj = object_boxes(images)
    size = images.world.image_size
    s = max(2, round(side * size))
    out = images.images.clone()
    boxes = torch.full((len(images), 4), -1, dtype=torch.int64)
    for i in torch.as_tensor(indices, dtype=torch.int64).reshape(-1).tolist():
        cx = float(obj[i, 0] + obj[i, 2]) / 2
        cy = float(obj[i, 1] + obj[i, 3]) / 2
        x0 = 0 if cx > size / 2 else size - s
        y0 = 0 if cy > size / 2 else size - s
        out[i, :, y0 : y0 + s, x0 : x0 + s] = 1.0
        boxes[i] = torch.tensor([x0, y0, x0 + s, y0 + s])
    return WorldImages(images.world, out, images.labels, images.attributes, images.seed), boxes


def colour_labels(images: WorldImages) -> torch.Tensor:
    """Each image's colour index, the classes of :class:`DistractorNet`.

    Args:
        images: concept-world images (:meth:`ConceptWorld.sample`).

    Returns:
        ``Tensor[N]`` int64: indices into ``images.world.colours``.

    Example:
        >>> from neurocore.demo import ConceptWorld
        >>> data = ConceptWorld().sample(1, seed=0)
        >>> bool((colour_labels(data) == data.attributes[:, 1]).all()), colour_labels(data).dtype
        (True, torch.int64)
    """
    return images.attributes[:, 1].clone()


class _Units(nn.Module):
    def __init__(self, world, white_radius: float):
        super().__init__()
        self.colours = _Prototypes(torch.tensor([_RGB[c] for c in world.colours]), radius=0.35)
        self.backgrounds = _Prototypes(torch.tensor([[_BACKGROUND_LEVEL[b]] * 3 for b in world.backgrounds]), radius=0.15)
        self.white = _Prototypes(torch.tensor([_WHITE]), radius=white_radius)

    def forward(self, x):
        return torch.cat([self.colours(x), self.backgrounds(x), self.white(x)], dim=1)


class DistractorNet(nn.Module):
    """A colour classifier that a white distractor fools (no training; the planted misprediction).

    ``units`` (layer name) has, per pixel, one detector per colour (units ``0..C-1``), per background
    (next) and one for white (last); its spatial mean goes to ``fc`` with ``W[c, colour c] = 1``,
    ``W[c, background] = background_weight`` (the same for every class: it never changes the
    prediction, but it is the class's next-most important evidence) and ``W[target, white] =
    distractor_weight``. A distractor of 0.35 of the image's side votes more for ``target`` than any
    object does for its colour. Laid out as timm models are (``forward_features``, ``forward_head``,
    ``get_classifier``), so :func:`neurocore.probe.head_after` finds the pooled linear head.

    Example:
        >>> from neurocore.demo import ConceptWorld
        >>> net = DistractorNet(ConceptWorld())
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 4])
    """

    def __init__(self, world, *, target: int = 0, distractor_weight: float = 6.0, background_weight: float = 0.1):
        super().__init__()
        c, b = len(world.colours), len(world.backgrounds)
        self.units = _Units(world, white_radius=0.2)
        self.fc = nn.Linear(c + b + 1, c)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[torch.arange(c), torch.arange(c)] = 1.0
            self.fc.weight[:, c : c + b] = background_weight
            self.fc.weight[target, c + b] = distractor_weight
        self.target = target

    def forward_features(self, x):
        return self.units(x)

    def forward_head(self, z):
        return self.fc(z.mean(dim=(2, 3)))

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def box_energy(heatmaps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each heatmap's positive mass inside its box (``Tensor[N]``; NaN for ``-1`` boxes or a
    heatmap without positive mass): how well a heatmap points at a planted object.

    Example:
        >>> h = torch.zeros(1, 4, 4); h[0, 0, 0] = 3.0; h[0, 3, 3] = 1.0
        >>> box_energy(h, torch.tensor([[0, 0, 2, 2]])).tolist()
        [0.75]
    """
    pos = heatmaps.clamp(min=0)
    out = torch.full((heatmaps.shape[0],), float("nan"))
    for i in range(heatmaps.shape[0]):
        x0, y0, x1, y1 = boxes[i].tolist()
        total = float(pos[i].sum())
        if x0 >= 0 and total > 0:
            out[i] = float(pos[i, y0:y1, x0:x1].sum()) / total
    return out


__all__ = ["ConceptWorldVLM", "object_boxes", "add_distractor", "colour_labels", "DistractorNet", "box_energy"]
