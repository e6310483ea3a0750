"""What neurocore needs from a vision–language model: a small structural protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class VisionLanguageModel(Protocol):
    """A vision–language model as neurocore uses it (CLIP, SigLIP, ...): images and texts to one
    embedding space. Any object with these members works (no subclassing needed); :class:`OpenClip`
    adapts open_clip's models.

    Attributes:
        preprocess: a callable from one RGB ``PIL.Image`` to a ``Tensor[3, H, W]`` (the model's own
            resizing, cropping and normalisation). Its ``repr`` is part of cache keys, so it must
            name every setting that changes the output.
        identity: a stable text naming the model and its weights, including a digest of the
            weights (``"open_clip:ViT-B-16:openai:weights=…"``): cached embeddings are keyed by it.
        device: where the model runs (``torch.device``).

    Methods:
        encode_images(images: Tensor[B, 3, H, W]) -> Tensor[B, d]: image embeddings (not
            necessarily normalised; callers L2-normalise).
        encode_texts(texts: Sequence[str]) -> Tensor[M, d]: text embeddings in the same space.

    Example:
        >>> class Toy:  # any object with these members is one
        ...     identity, device, preprocess = "toy:v1", torch.device("cpu"), staticmethod(lambda image: torch.zeros(3, 2, 2))
        ...     def encode_images(self, images): return images.flatten(1)[:, :4]
        ...     def encode_texts(self, texts): return torch.ones(len(texts), 4)
        >>> isinstance(Toy(), VisionLanguageModel), isinstance(object(), VisionLanguageModel)
        (True, False)
    """

    preprocess: Callable[[Any], torch.Tensor]

    @property
    def identity(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...
