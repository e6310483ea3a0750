"""Vision–language model adapters (a small protocol; open_clip built in) and cached embeddings."""

from neurocore.vlm._embed import ImageEmbeddings, apply_template, embed_images, embed_texts, record_and_embed
from neurocore.probe._cache import weights_digest
from neurocore.vlm._open_clip import OpenClip, load_vlm
from neurocore.vlm._protocol import VisionLanguageModel

__all__ = [
    "VisionLanguageModel",
    "OpenClip",
    "load_vlm",
    "weights_digest",
    "ImageEmbeddings",
    "embed_images",
    "embed_texts",
    "record_and_embed",
    "apply_template",
]
