"""open_clip models (CLIP, SigLIP, ...) as :class:`~neurocore.vlm.VisionLanguageModel` adapters."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from neurocore._errors import NeurocoreError, close_matches
from neurocore.probe._cache import weights_digest

_SCHEMAS = ("hf-hub:", "local-dir:")
_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz", ".ckpt")


def _resolve_pretrained(model_name: str, pretrained) -> tuple[str | None, str]:
    """``(value for open_clip, kind)`` with kind ``"random"``, ``"file"``, ``"tag"`` or ``"schema"``
    (a ``local-dir:``/``hf-hub:`` model name, which brings its own weights)."""
    import open_clip

    if model_name.startswith(_SCHEMAS):
        if pretrained is not None:
            raise NeurocoreError(
                f"model_name {model_name!r} names its own weights; pretrained must be None, not {pretrained!r}"
            )
        folder = Path(model_name[len("local-dir:"):]) if model_name.startswith("local-dir:") else None
        if folder is not None and folder.is_dir() and not any(any(folder.glob(f"*{ext}")) for ext in (".safetensors", ".bin", ".pth")):
            # open_clip then builds the folder's architecture with random weights (it only logs this)
            return None, "random"
        return None, "schema"
    if pretrained is None:
        return None, "random"
    try:
        value = os.fspath(pretrained)
    except TypeError:
        value = None
    if not isinstance(value, str) or not value:
        raise NeurocoreError(f"pretrained must be an open_clip tag, a checkpoint file path or None; got {pretrained!r}")
    path = Path(value).expanduser()
    if path.is_file():
        return str(path), "file"
    if path.is_dir():
        raise NeurocoreError(
            f"pretrained={value!r} is a folder; give the checkpoint file inside it (e.g. "
            f"open_clip_pytorch_model.bin), or model_name='local-dir:{value}' for a folder with an "
            "open_clip_config.json"
        )
    if open_clip.get_pretrained_cfg(model_name, value):
        return value, "tag"
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if isinstance(pretrained, os.PathLike) or os.sep in value or value.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise NeurocoreError(f"checkpoint file {value!r} does not exist; give the path of an open_clip checkpoint")
    raise NeurocoreError(
        f"pretrained={value!r} is neither an open_clip tag of {model_name!r} nor an existing file; "
        f"tags of this model: {', '.join(tags) if tags else 'none (use a checkpoint file or None)'}"
    )


class OpenClip:
    """An open_clip model (CLIP, OpenCLIP, SigLIP, MobileCLIP, ...) as a vision–language model.

    Args:
        model_name: an open_clip architecture (``open_clip.list_models()``: ``"ViT-B-16"``,
            ``"ViT-L-16-SigLIP-384"``...), or ``"local-dir:/folder"`` / ``"hf-hub:org/repo"``
            (open_clip's own schemas, which carry their config and weights).
        pretrained: the weights: an open_clip tag of that architecture (``"openai"``,
            ``"laion2b_s34b_b88k"``, ``"webli"``; downloaded from the model hub once, then read from
            its cache), a path to a local checkpoint file (``open_clip_pytorch_model.bin``,
            ``.safetensors``, a CLIP ``.pt``...), or None for **random weights** (reproducible from
            ``seed``; their embeddings carry no meaning, so a warning says so; useful for tests).
            Must be None for ``local-dir:``/``hf-hub:`` names. Where the hub cannot be reached, set
            ``HF_HUB_OFFLINE=1`` so that a tag that is not cached fails at once rather than after
            the hub client's retries.
        device: where the model runs (default: CPU; give ``"cuda"`` explicitly).
        batch_size: texts per forward pass in :meth:`encode_texts`.
        seed: seed of the random initialisation when ``pretrained`` is None (the global RNG is left
            untouched).

    Attributes:
        identity: ``"open_clip:<model_name>:<weights>:weights=<digest>"`` with ``<weights>`` the tag,
            ``file=<name>``, ``random(seed=<seed>)`` or ``bundled`` (``local-dir:``/``hf-hub:``), and ``<digest>`` the first 16 hex digits of
            :func:`weights_digest` of the loaded weights.
        preprocess: the model's evaluation transform (PIL image -> ``Tensor[3, H, W]``).
        model: the ``torch.nn.Module`` (eval mode, gradients off).

    Raises:
        NeurocoreError: unknown architecture (with close matches), a tag this architecture does not
            have, a missing or unreadable checkpoint file, or weights/tokenizer that could not be
            downloaded (the message says how to use a local checkpoint file instead).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vlm = OpenClip("ViT-S-32")  # random weights: no download
        >>> vlm.encode_texts(["a dog", "a cat"]).shape
        torch.Size([2, 384])
    """

    def __init__(self, model_name: str, pretrained: str | os.PathLike | None = None, *, device=None,
                 batch_size: int = 256, seed: int = 0):
        import open_clip

        if not isinstance(model_name, str) or not model_name:
            raise NeurocoreError(f"model_name must be an open_clip architecture name; got {model_name!r}")
        if not model_name.startswith(_SCHEMAS) and model_name not in open_clip.list_models():
            near = close_matches(model_name, open_clip.list_models())
            raise NeurocoreError(
                f"unknown open_clip architecture {model_name!r}"
                + (f"; close matches: {', '.join(near)}" if near else "")
                + " (all: open_clip.list_models())"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise NeurocoreError(f"batch_size must be an int >= 1; got {batch_size!r}")
        value, kind = _resolve_pretrained(model_name, pretrained)
        self.model_name = model_name
        self.pretrained = value
        self.batch_size = batch_size
        self.seed = seed
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        try:
            # The initialisation draws from torch's global RNG: seed it for reproducible random
            # weights, inside fork_rng so the caller's RNG state is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=value, device="cpu")
        except NeurocoreError:
            raise
        except Exception as exc:
            raise self._load_error(kind, value, exc) from exc
        try:
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            raise NeurocoreError(
                f"could not load the tokenizer of open_clip model {model_name!r} ({type(exc).__name__}: {exc}). "
                "Some tokenizers (SigLIP's, for instance) come from the Hugging Face hub: run once where the hub "
                "can be reached so that they are cached, then set HF_HUB_OFFLINE=1 here"
            ) from exc
        model.eval().requires_grad_(False)
        self._digest = weights_digest(model)
        self.model = model.to(self._device)
        self.preprocess = preprocess
        self._tokenizer = tokenizer
        label = {"random": f"random(seed={seed})", "file": f"file={Path(value or '').name}", "tag": value,
                 "schema": "bundled"}[kind]
        self._identity = f"open_clip:{model_name}:{label}:weights={self._digest[:16]}"
        if kind == "random":
            warnings.warn(
                f"open_clip model {model_name!r} has random weights (pretrained=None): its image–text "
                "similarities are meaningless; pass a tag or a checkpoint file for real explanations",
                stacklevel=2,
            )

    def _load_error(self, kind: str, value, exc: Exception) -> NeurocoreError:
        name = self.model_name
        if kind == "tag":
            return NeurocoreError(
                f"could not get the weights '{value}' of open_clip model {name!r} ({type(exc).__name__}: {exc}). "
                "Tags are downloaded from the model hub, which is not reachable here. Download the checkpoint "
                "where there is a network (open_clip.create_model_and_transforms(name, pretrained=tag) caches it, "
                "e.g. under ~/.cache/huggingface) and pass the file: "
                f"OpenClip({name!r}, pretrained='/path/to/open_clip_pytorch_model.bin'), "
                f"or on the command line 'open_clip:{name}:/path/to/open_clip_pytorch_model.bin'"
            )
        if kind == "file":
            return NeurocoreError(
                f"cannot load checkpoint file {value!r} into open_clip model {name!r} ({type(exc).__name__}: {exc}); "
                "give an open_clip/CLIP checkpoint of this architecture (a state dict saved by torch.save, "
                ".safetensors, or OpenAI's CLIP .pt)"
            )
        if kind == "schema" and name.startswith("hf-hub:"):
            return NeurocoreError(
                f"could not get open_clip model {name!r} from the model hub ({type(exc).__name__}: {exc}); "
                "without a network, download its folder elsewhere and use 'local-dir:/path/to/folder'"
            )
        return NeurocoreError(f"cannot build open_clip model {name!r} ({type(exc).__name__}: {exc})")

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def weights_digest(self) -> str:
        """Digest of the loaded weights (:func:`neurocore.probe.weights_digest`)."""
        return self._digest

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embed preprocessed images.

        Args:
            images (Tensor[B, 3, H, W]): outputs of :attr:`preprocess`, stacked (any device).

        Returns:
            Tensor[B, d] float32 on :attr:`device`: image embeddings (not normalised).
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise NeurocoreError(f"images must be a Tensor[B, 3, H, W] of preprocessed images; got {shape}")
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            return self.model.encode_image(images.to(self._device, dtype)).float()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts, :attr:`batch_size` at a time.

        Args:
            texts: M strings (used as given: apply any prompt template before).

        Returns:
            Tensor[M, d] float32 on :attr:`device`: text embeddings (not normalised).
        """
        if isinstance(texts, str):
            raise NeurocoreError("texts must be a sequence of strings, not one string; wrap it in a list")
        texts = list(texts)
        if not texts:
            raise NeurocoreError("texts is empty; give at least one text to encode")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise NeurocoreError(f"texts must be strings; item {bad[0]} is a {type(texts[bad[0]]).__name__}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(texts[i : i + self.batch_size]).to(self._device)
                out.append(self._encode_tokens(tokens).float())
        return torch.cat(out)

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``model.encode_text(tokens)``, on the shortest context that holds every end-of-text token.

        Concepts are a few tokens long, but CLIP pads them to 77. In a CLIP text tower with a causal
        mask that pools at the end-of-text token (the highest token id), no position attends to a
        later one, so the pooled feature does not depend on the padding after it: cutting the
        context to the batch's longest text gives the same embedding for ~10x less work. Other
        towers (SigLIP's, Hugging Face's, non-causal) take the full path.
        """
        import open_clip

        m = self.model
        causal_argmax = (
            type(m) is open_clip.CLIP
            and getattr(m, "text_pool_type", None) == "argmax"
            and isinstance(getattr(m, "attn_mask", None), torch.Tensor)
        )
        length = int(tokens.argmax(dim=-1).max()) + 1
        if not causal_argmax or length >= tokens.shape[1]:
            return m.encode_text(tokens)
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens[:, :length]).to(cast_dtype)
        x = x + m.positional_embedding[:length].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens[:, :length].argmax(dim=-1)]
        if m.text_projection is None:
            return x
        return m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection

    def __repr__(self) -> str:
        return f"OpenClip({self._identity!r}, device={str(self._device)!r})"


def load_vlm(spec: str, *, device=None, batch_size: int = 256) -> OpenClip:
    """Build a vision–language model from a text spec (the command line's format).

    Args:
        spec: ``"open_clip:NAME"``, ``"open_clip:NAME:TAG"`` or ``"open_clip:NAME:/path/to/checkpoint"``;
            ``TAG`` ``"none"`` (or left out) means random weights. ``NAME`` may be open_clip's
            ``local-dir:/folder`` or ``hf-hub:org/repo`` (then with no weights part).
        device, batch_size: passed to :class:`OpenClip`.

    Raises:
        NeurocoreError: a malformed spec or unknown backend, and whatever :class:`OpenClip` raises.

    Example:
        >>> load_vlm("open_clip:ViT-B-61:openai")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        neurocore._errors.NeurocoreError: unknown open_clip architecture 'ViT-B-61'; close matches: ViT-B-16, ...

        ``load_vlm("open_clip:ViT-B-16:openai")`` = ``OpenClip("ViT-B-16", "openai")``;
        ``load_vlm("open_clip:ViT-S-32")`` = ``OpenClip("ViT-S-32")`` (random weights).
    """
    if not isinstance(spec, str):
        raise NeurocoreError(f"vlm spec must be a string like 'open_clip:ViT-B-16:openai'; got {type(spec).__name__}")
    backend, _, rest = spec.partition(":")
    if backend != "open_clip":
        raise NeurocoreError(
            f"unknown vision–language backend {backend!r} in {spec!r}; supported: 'open_clip' "
            "(format open_clip:NAME[:TAG_OR_CHECKPOINT_FILE])"
        )
    if rest.startswith(_SCHEMAS):
        name, weights = rest, None  # "local-dir:/x" and "hf-hub:org/repo" carry their own weights
    else:
        # a checkpoint path may itself contain ':' (C:\...), so split once
        name, _, weights = rest.partition(":")
        weights = None if weights.strip().lower() in ("", "none") else weights
    if not name:
        raise NeurocoreError(f"vlm spec {spec!r} has no model name; format open_clip:NAME[:TAG_OR_CHECKPOINT_FILE]")
    return OpenClip(name, weights, device=device, batch_size=batch_size)
