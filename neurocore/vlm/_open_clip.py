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

    def encode_texts(self, texts: Sequence[str], *, warn_truncation: bool = True) -> torch.Tensor:
        """Embed texts, :attr:`batch_size` at a time.

        The text encoder reads a fixed number of tokens (CLIP: 77); longer texts are cut, with one
        warning per call (:meth:`truncation_warning`).

        Args:
            texts: M strings (used as given: apply any prompt template before).
            warn_truncation: check for texts longer than the context (False: the caller checked).

        Returns:
            Tensor[M, d] float32 on :attr:`device`: text embeddings (not normalised).
        """
        texts = _check_texts(texts)
        message = self.truncation_warning(texts) if warn_truncation else None
        if message:
            warnings.warn(message, stacklevel=2)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(texts[i : i + self.batch_size]).to(self._device)
                out.append(self._encode_tokens(tokens).float())
        return torch.cat(out)

    @property
    def context_length(self) -> int | None:
        """Tokens the text encoder reads (CLIP: 77); None when the tokenizer does not say."""
        length = getattr(self._tokenizer, "context_length", None) or getattr(self.model, "context_length", None)
        return int(length) if length else None

    def truncated_texts(self, texts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """Which texts do not fit the text encoder's context, and which become identical once cut.

        Args:
            texts: M strings.

        Returns:
            ``(cut, same)``: the indices of the texts longer than :attr:`context_length` tokens (the
            encoder reads their first tokens only), and groups of indices of distinct texts, at least
            one of them cut, whose tokens (so whose embeddings) are identical after the cut.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     vlm = OpenClip("ViT-S-32")
            >>> vlm.truncated_texts(["a dog", "a " * 80 + "cat", "a " * 80 + "dog"])
            ([1, 2], [[1, 2]])
        """
        texts = _check_texts(texts)
        length = self.context_length
        if length is None:
            return [], []
        tok = self._tokenizer
        try:
            # One more position than the encoder reads: a text fits when that position holds padding
            # (what the empty text has there), whatever the tokenizer does when it cuts.
            longer = tok(texts, context_length=length + 1)
            pad = tok([""], context_length=length + 1)[0, -1]
        except TypeError:  # a tokenizer without a context_length argument: nothing to compare with
            return [], []
        cut_mask = longer[:, length] != pad
        cut = cut_mask.nonzero().flatten().tolist()
        if not cut:
            return [], []
        # Only texts that fill the whole context (cut ones, or ones that fit exactly) can share tokens
        # with a cut text: compare their tokens as the encoder sees them.
        full = (longer[:, length - 1] != pad).nonzero().flatten().tolist()
        groups: dict[bytes, list[int]] = {}
        for i, row in zip(full, tok([texts[i] for i in full], context_length=length)):
            groups.setdefault(row.numpy().tobytes(), []).append(i)
        same = []
        for members in groups.values():
            distinct = list({texts[i]: i for i in members}.values())
            if len(distinct) > 1 and any(cut_mask[i] for i in distinct):
                same.append(sorted(distinct))
        return cut, sorted(same)

    def truncation_warning(self, texts: Sequence[str]) -> str | None:
        """The warning for texts longer than the text encoder's context (None when all fit): how many,
        a few of them by name, and, explicitly, the distinct texts that the cut makes identical (they
        get the same embedding). :meth:`encode_texts` issues it."""
        texts = _check_texts(texts)
        cut, same = self.truncated_texts(texts)
        if not cut:
            return None
        examples = ", ".join(_show(texts[i]) for i in cut[:3]) + (", ..." if len(cut) > 3 else "")
        message = (
            f"{len(cut)} of {len(texts)} texts are longer than the text encoder's context of {self.context_length} "
            f"tokens ({self.model_name}) and were cut: the words past the cut do not count in their embeddings "
            f"(e.g. {examples})"
        )
        if same:
            groups = "; ".join(" = ".join(_show(texts[i]) for i in group[:3]) for group in same[:3])
            message += (
                f". After the cut, {sum(len(g) for g in same)} distinct texts ({len(same)} group(s)) have the same "
                f"tokens and so the same embedding: {groups}"
            )
        return message + ". Shorten them (put what tells them apart first), or use a model with a longer context"

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


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise NeurocoreError("texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise NeurocoreError("texts is empty; give at least one text to encode")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise NeurocoreError(f"texts must be strings; item {bad[0]} is a {type(texts[bad[0]]).__name__}")
    return texts


def _show(text: str, limit: int = 60) -> str:
    """A long text by its two ends (texts cut at the context differ at the end)."""
    text = " ".join(text.split())
    return repr(text) if len(text) <= limit else repr(f"{text[:limit // 2 - 2]} … {text[-(limit // 2 - 2):]}")


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
