"""Image and text embeddings of a vision–language model, batched and cached on disk.

Cache files are keyed by everything that determines their content (ALGORITHMS.md §0 "Caching"):
the model's identity (with its weights digest), its preprocessing, the probe set's identity and
order, the texts and the prompt template. The key is stored inside each file and compared on
reading, so a stale or foreign file is never used; writes go to a temporary file first and are
renamed into place, so an interrupted run leaves no half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError
from neurocore.vlm._protocol import VisionLanguageModel

CACHE_FORMAT = 2  # 2: the probe's own transform in the image key


@dataclass(frozen=True)
class ImageEmbeddings:
    """L2-normalised image embeddings of the readable images of a probe set, in probe order.

    Attributes:
        embeddings (Tensor[N, d], float32, CPU): row i = the i-th readable probe image, unit norm.
        indices (Tensor[N], int64): the dataset index of each row (unreadable images are skipped).
        image_ids: one identifier per row (file path relative to the folder for image folders).
        key: what determined them (the cache key).
    """

    embeddings: torch.Tensor
    indices: torch.Tensor
    image_ids: tuple[str, ...]
    key: Mapping[str, Any] = field(default_factory=dict)


class _PILOnly:
    """The model's preprocessing, refusing inputs that are tensors already.

    open_clip's transforms pass tensors through their to-tensor step and normalise them again, so a
    probe that yields preprocessed tensors would be silently normalised twice.
    """

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        if isinstance(image, torch.Tensor):
            raise NeurocoreError(
                "the probe yields tensors, but the vision–language model preprocesses images itself: give a "
                "probe that yields PIL images (e.g. neurocore.probe.ImageFolder(root) without transform=)"
            )
        return self.transform(image)

    def __repr__(self) -> str:
        return repr(self.transform)


def check_vlm(vlm) -> VisionLanguageModel:
    """``vlm`` itself, or the model a spec string names (:func:`load_vlm`); errors for other objects."""
    if isinstance(vlm, str):
        from neurocore.vlm._open_clip import load_vlm

        return load_vlm(vlm)
    if not isinstance(vlm, VisionLanguageModel):
        missing = [a for a in ("encode_images", "encode_texts", "preprocess", "identity", "device") if not hasattr(vlm, a)]
        raise NeurocoreError(
            f"vlm must be a vision–language model (neurocore.vlm.OpenClip, or any object with encode_images, "
            f"encode_texts, preprocess, identity and device) or a spec like 'open_clip:ViT-B-16:openai'; "
            f"got {type(vlm).__name__} without {', '.join(missing)}"
        )
    return vlm


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _cache_file(cache_dir, kind: str, key: Mapping[str, Any]) -> Path:
    return Path(cache_dir) / f"{kind}-{_digest(key)[:32]}.pt"


def _read_cache(path: Path, key: Mapping[str, Any]) -> dict | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or corrupt file: recompute rather than fail or trust it
        warnings.warn(f"ignoring unreadable cache file {str(path)!r} ({type(exc).__name__}); recomputing", stacklevel=3)
        return None
    if not isinstance(payload, dict) or payload.get("key") != dict(key):
        warnings.warn(f"ignoring cache file {str(path)!r}: it was made for other inputs; recomputing", stacklevel=3)
        return None
    return payload


def _write_cache(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    finally:
        if tmp.exists():
            tmp.unlink()


def image_cache_key(vlm: VisionLanguageModel, probe) -> dict | None:
    """The cache key of ``probe``'s image embeddings under ``vlm``; None when the probe has no
    identity (no ``fingerprint()``), which makes its embeddings uncacheable."""
    from neurocore.probe import describe_transform, probe_fingerprint

    fingerprint = probe_fingerprint(probe)
    if fingerprint is None:
        return None
    return {
        "format": CACHE_FORMAT,
        "kind": "image_embeddings",
        "vlm": vlm.identity,
        "preprocess": describe_transform(vlm.preprocess),
        # an ImageFolder's own transform (PIL -> PIL) shapes what the model sees, not the fingerprint
        "probe_transform": describe_transform(getattr(probe, "transform", None)),
        "dataset": fingerprint,
        "dataset_size": len(probe),
    }


def _undescribed_preprocessing(vlm, probe) -> list[str]:
    """Parts of the preprocessing whose repr does not describe them: they cannot key a cache."""
    from neurocore.probe._cache import undescribed_transforms

    return undescribed_transforms(vlm.preprocess, "vlm.preprocess") + undescribed_transforms(
        getattr(probe, "transform", None), "probe.transform"
    )


def embed_images(
    vlm,
    probe,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    shards: int | None = None,
    chunk_size: int = 1024,
) -> ImageEmbeddings:
    """Encode a probe set's images with a vision–language model (batched, optionally cached), in this
    process or on Ray workers.

    The images go through :func:`neurocore.probe.iter_batches` with ``transform=vlm.preprocess``,
    the loop that records activations, so row i here is row i there: same order, same unreadable
    images skipped.

    Args:
        vlm: a :class:`VisionLanguageModel` or a spec string (:func:`load_vlm`).
        probe: a map-style dataset yielding PIL images or ``(image, label)``
            (:class:`neurocore.probe.ImageFolder`).
        batch_size: images per forward pass.
        num_workers: DataLoader workers that read and preprocess images.
        cache_dir: folder for cached embeddings (None: no caching). A probe without a
            ``fingerprint()`` cannot be identified, so its embeddings are not cached (with a warning);
            neither are they when ``vlm.preprocess`` or the probe's own ``transform`` has a part whose
            repr does not describe it (torchvision's ``Lambda``, a function or lambda), since another
            preprocessing would share the key.
        progress: show a progress bar.
        engine: ``"local"`` (default: this process) or ``"ray"``: the probe's chunks (``chunk_size``
            images) are cut into ``shards`` contiguous runs that Ray tasks (one GPU each when
            ``vlm.device`` is CUDA, else one CPU) encode into the cache folder (``cache_dir``, or a
            temporary folder on a local cluster); this process merges them in order
            (:mod:`neurocore.scale._ray_embed`). The result equals the local one bit for bit when
            ``chunk_size`` is a multiple of ``batch_size`` (every forward pass then sees the local
            batch; otherwise batches at run edges differ and rows agree up to the batch-size
            dependence of the kernels). An interrupted run resumes: chunks on disk are not encoded
            again. The vlm and the probe must be picklable. Needs ``pip install neurocore[ray]``.
        address: the Ray cluster for ``engine="ray"``: None (default: the running one, else a new
            local one), ``"auto"`` or ``"HOST:6379"`` (after ``ray start --head``); then ``cache_dir``
            must be on storage every node shares.
        shards: runs of chunks for ``engine="ray"``; None (default): one per CPU (GPU) of the cluster.
        chunk_size: images per chunk for ``engine="ray"`` (the unit written to disk and of
            resumption); default 1024 (``record``'s).

    Returns:
        :class:`ImageEmbeddings` (unit-norm rows; an all-zero embedding stays zero).

    Raises:
        NeurocoreError: not a vision–language model, a probe yielding tensors, no readable image,
            embeddings of the wrong shape or with NaN; an unknown ``engine``; ``address``/``shards``
            without ``engine="ray"``; with ``engine="ray"``: ray not installed, ``shards`` or
            ``chunk_size`` below 1, preprocessing whose repr does not describe it, or a remote
            ``address`` without ``cache_dir``.

    Example:
        >>> import types, PIL.Image, torchvision.transforms as T
        >>> vlm = types.SimpleNamespace(identity="toy", device=torch.device("cpu"), preprocess=T.ToTensor(),
        ...                             encode_images=lambda x: x.mean((2, 3)), encode_texts=print)
        >>> probe = [PIL.Image.new("RGB", (4, 4), c) for c in ("red", "blue")]
        >>> embed_images(vlm, probe, progress=False).embeddings.round(decimals=3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    vlm = check_vlm(vlm)
    from neurocore.probe import iter_batches

    _check_engine(engine, address, shards)
    key, path, hit = _image_cache(vlm, probe, cache_dir)
    if hit is not None:
        return hit
    try:
        n = len(probe)
    except TypeError:
        raise NeurocoreError(f"the probe must be a map-style dataset with a length; got {type(probe).__name__}") from None
    if engine == "ray":
        from neurocore.scale._ray_embed import embed_images_ray

        embs, indices, ids, skipped = embed_images_ray(
            vlm, probe, key, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir,
            chunk_size=chunk_size, shards=shards, address=address, progress=progress,
        )
        encoder = _Encoder(vlm)
        encoder.embs, encoder.indices, encoder.ids = [embs], [indices], list(ids)
        return encoder.result(key, path, skipped, n)
    skipped: list = []
    batches = iter_batches(probe, batch_size, transform=_PILOnly(vlm.preprocess), num_workers=num_workers, skipped=skipped)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(n / batch_size), desc=f"encoding images ({vlm.identity[:40]})", unit="batch")
    encoder = _Encoder(vlm)
    for batch in batches:
        encoder.add(batch.images, batch.indices, batch.ids)
    return encoder.result(key, path, skipped, n)


def _check_engine(engine, address, shards) -> None:
    if engine not in ("local", "ray"):
        raise NeurocoreError(f"engine must be 'local' or 'ray'; got {engine!r}")
    if engine == "local" and (address is not None or shards is not None):
        raise NeurocoreError("address= and shards= apply to engine='ray' only; pass engine='ray' or drop them")


def _image_cache(vlm, probe, cache_dir):
    """``(key, path, hit)``: the embeddings' cache key (None: the probe cannot be identified), the cache
    file to write (None: no caching) and the cached :class:`ImageEmbeddings` when there is one."""
    key = image_cache_key(vlm, probe)
    if cache_dir is None:
        return key, None, None
    if key is None:
        warnings.warn(
            f"the probe ({type(probe).__name__}) has no fingerprint(), so its image embeddings cannot be "
            "keyed and are not cached; use neurocore.probe.ImageFolder to cache them",
            stacklevel=3,
        )
        return key, None, None
    if _undescribed_preprocessing(vlm, probe):
        from neurocore.probe._cache import uncacheable_message

        warnings.warn(
            "embed_images(cache_dir=...) is " + uncacheable_message(
                _undescribed_preprocessing(vlm, probe)
            ) + "; the image embeddings are computed without the cache",
            stacklevel=3,
        )
        return key, None, None
    path = _cache_file(cache_dir, "image_embeddings", key)
    hit = _read_cache(path, key)
    if hit is not None:
        _warn_skipped(hit["skipped"])
        return key, path, ImageEmbeddings(hit["embeddings"], hit["indices"], tuple(hit["image_ids"]), key)
    return key, path, None


class _Encoder:
    """Batches of preprocessed images in, one :class:`ImageEmbeddings` out (rows in arrival order)."""

    def __init__(self, vlm):
        self.vlm = vlm
        self.embs: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []
        self.ids: list[str] = []

    def add(self, images: torch.Tensor, indices: torch.Tensor, ids) -> None:
        emb = self.vlm.encode_images(images)
        _check_embeddings(emb, len(ids), "encode_images")
        self.embs.append(F.normalize(emb.detach().to("cpu", torch.float32), dim=1))
        self.indices.append(torch.as_tensor(indices, dtype=torch.int64))
        self.ids += list(ids)

    def result(self, key, path, skipped, n: int) -> ImageEmbeddings:
        if not self.embs:
            raise NeurocoreError(f"no readable image in the probe ({len(skipped)} unreadable of {n}); nothing to encode")
        result = ImageEmbeddings(torch.cat(self.embs), torch.cat(self.indices), tuple(self.ids), key or {})
        _warn_skipped([(int(i), str(why)) for i, why in skipped])
        if path is not None:
            _write_cache(path, {
                "key": dict(key),
                "embeddings": result.embeddings,
                "indices": result.indices,
                "image_ids": list(result.image_ids),
                "skipped": [[int(i), str(why)] for i, why in skipped],
            })
        return result


class SharedDecode(torch.utils.data.Dataset):
    """A probe whose images are decoded once for two consumers: the model's recording reads items as
    usual, and every item read is also preprocessed for the vision–language model and encoded in
    batches on the side (:func:`record_and_embed`).

    Only for in-process loading (``num_workers=0``): a worker process would keep the side batches.
    Attributes the recording relies on (``fingerprint``, ``image_id``, ``transform``, ``classes``,
    ``labels``...) are the wrapped probe's.
    """

    def __init__(self, probe, vlm, batch_size: int):
        self.probe, self.vlm, self.batch_size = probe, vlm, batch_size
        self.preprocess = _PILOnly(vlm.preprocess)
        self.pending: dict[int, torch.Tensor] = {}
        self.encoded: set[int] = set()
        self.encoder = _Encoder(vlm)
        self._id = getattr(probe, "image_id", None)
        self._neurocore_wrapped = probe  # cache keys describe the wrapped probe, not this wrapper

    def __len__(self):
        return len(self.probe)

    def __getattr__(self, name):
        if name in ("probe", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.probe, name)

    def __getitem__(self, index: int):
        item = self.probe[index]
        if index not in self.encoded and index not in self.pending:
            image = item[0] if isinstance(item, (tuple, list)) else item
            if self.pending and int(index) // self.batch_size != max(self.pending) // self.batch_size:
                # a new block of batch_size indices: the batch embed_images forms (the readable images of
                # one block, as iter_batches cuts them), so that the embeddings equal its bit for bit
                self.flush()
            self.pending[int(index)] = self.preprocess(image)
            if len(self.pending) >= self.batch_size:
                self.flush()
        return item

    def flush(self) -> None:
        if not self.pending:
            return
        order = sorted(self.pending)
        images = torch.stack([self.pending.pop(i) for i in order])
        ids = [self._id(i) if callable(self._id) else str(i) for i in order]
        self.encoder.add(images, torch.tensor(order), ids)
        self.encoded.update(order)


def record_and_embed(record_fn, vlm, probe, *, batch_size: int = 64, num_workers: int = 0, cache_dir=None,
                     progress: bool = True, engine: str = "local", address: str | None = None,
                     shards: int | None = None):
    """``(record_fn(probe), embed_images(vlm, probe, ...))`` with each probe image decoded once.

    ``record_fn`` reads the probe (e.g. ``lambda p: record(model, layers, p, ...)``); while it does,
    every image it reads is also preprocessed for ``vlm`` and encoded in batches. The embeddings equal
    :func:`embed_images`'s (same rows, order, skipped images; bit for bit when ``record_fn`` reads the
    images in order: each batch holds the readable images of one block of ``batch_size`` indices, as
    :func:`embed_images` forms them). The two-pass path is taken when the
    embeddings are cached already, when ``num_workers > 0`` (items are read in worker processes), or
    when the recording did not read every image (rows served from its cache): then the images are
    read again by :func:`embed_images`.

    With ``engine="ray"`` the images are encoded on Ray shards (:func:`embed_images` with
    ``engine="ray"``, ``address``, ``shards``) after ``record_fn`` ran, which should record with
    ``engine="ray"`` itself (``record(..., engine="ray")``): the recording's workers and the encoding's
    workers each decode the images of their shard (two reads of each image, on the workers).

    Returns:
        ``(whatever record_fn returns, ImageEmbeddings)``.

    Raises:
        NeurocoreError: as :func:`embed_images`.

    Example:
        >>> import types, PIL.Image, torchvision.transforms as T
        >>> vlm = types.SimpleNamespace(identity="toy", device=torch.device("cpu"), preprocess=T.ToTensor(),
        ...                             encode_images=lambda x: x.mean((2, 3)), encode_texts=print)
        >>> probe = [PIL.Image.new("RGB", (4, 4), c) for c in ("red", "blue")]
        >>> def record_fn(p):  # reads every image, as record does
        ...     rows = [i for i in range(len(p)) if p[i] is not None]
        ...     return types.SimpleNamespace(dataset_indices=torch.tensor(rows), skipped=[])
        >>> store, images = record_and_embed(record_fn, vlm, probe, progress=False)
        >>> store.dataset_indices.tolist(), images.embeddings.round(decimals=3).tolist()
        ([0, 1], [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    """
    vlm = check_vlm(vlm)
    _check_engine(engine, address, shards)
    key, path, hit = _image_cache(vlm, probe, cache_dir)
    if hit is not None or num_workers > 0 or engine == "ray":
        store = record_fn(probe)
        images = hit if hit is not None else embed_images(
            vlm, probe, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, progress=progress,
            engine=engine, address=address, shards=shards,
        )
        return store, images
    shared = SharedDecode(probe, vlm, batch_size)
    store = record_fn(shared)
    shared.flush()
    rows = set(store.dataset_indices.tolist())
    if not rows <= shared.encoded:  # rows the recording served from its cache were never read
        return store, embed_images(vlm, probe, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    # Rows in dataset order, and only the store's rows (an image read twice, or for a check only, once).
    encoder = shared.encoder
    all_idx = torch.cat(encoder.indices)
    order = [j for j in all_idx.argsort(stable=True).tolist() if int(all_idx[j]) in rows]
    encoder.embs, encoder.indices = [torch.cat(encoder.embs)[order]], [all_idx[order]]
    encoder.ids = [encoder.ids[j] for j in order]
    return store, encoder.result(key, path, list(store.skipped), len(probe))


def _warn_skipped(skipped) -> None:
    if skipped:
        first = ", ".join(f"{i} ({why})" for i, why in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} unreadable probe image(s), e.g. {first}", stacklevel=3)


def _check_embeddings(emb, rows: int, what: str) -> None:
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != rows:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise NeurocoreError(f"vlm.{what} must return a Tensor[{rows}, d]; got {shape}")
    if not torch.isfinite(emb).all():
        raise NeurocoreError(f"vlm.{what} returned NaN or inf embeddings; check the model's weights and inputs")


def apply_template(texts: Sequence[str], template: str | None) -> list[str]:
    """The prompts for ``texts``: ``template`` with ``"{}"`` replaced by each text, or the texts as
    they are when ``template`` is None (CLIP-Dissect's default).

    Example:
        >>> apply_template(["dog", "red"], "a photo of a {}")
        ['a photo of a dog', 'a photo of a red']
    """
    if template is None:
        return list(texts)
    if not isinstance(template, str) or "{}" not in template:
        raise NeurocoreError(f"template must be a string containing '{{}}' (e.g. 'a photo of a {{}}'); got {template!r}")
    return [template.replace("{}", t) for t in texts]


def embed_texts(
    vlm,
    texts: Sequence[str],
    *,
    template: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    shards: int | None = None,
) -> torch.Tensor:
    """Encode texts (concepts) with a vision–language model (batched, optionally cached), in this
    process or on Ray workers.

    Args:
        vlm: a :class:`VisionLanguageModel` or a spec string (:func:`load_vlm`).
        texts: M strings.
        template: a prompt with ``"{}"`` where each text goes (``"a photo of a {}"``); None (default,
            as CLIP-Dissect) encodes the texts as they are.
        cache_dir: folder for cached embeddings (None: no caching).
        progress: show a progress bar.
        engine: ``"local"`` (default: this process) or ``"ray"``: the texts' batches (``vlm.batch_size``
            texts, 256 when it has none: the local batches) are cut into ``shards`` contiguous runs
            that Ray tasks (one GPU each when ``vlm.device`` is CUDA, else one CPU) encode into the
            cache folder (``cache_dir``, or a temporary folder on a local cluster); this process
            merges them in order, so the result equals the local one bit for bit on the same kind of
            device. An interrupted run resumes: batches on disk are not encoded again. Needs
            ``pip install neurocore[ray]``.
        address: the Ray cluster for ``engine="ray"`` (as :func:`embed_images`).
        shards: runs of batches for ``engine="ray"``; None (default): one per CPU (GPU) of the cluster.

    A model with a ``truncation_warning(texts)`` method (:class:`OpenClip`: CLIP reads 77 tokens) is
    asked about all prompts at once; texts longer than its context are named in one warning (also
    when the embeddings come from the cache), distinct texts that the cut makes identical explicitly.

    Returns:
        Tensor[M, d] float32 on the CPU, L2-normalised rows.

    Raises:
        NeurocoreError: not a vision–language model, no texts, a template without ``"{}"``,
            embeddings of the wrong shape or with NaN; an unknown ``engine``, ``address``/``shards``
            without ``engine="ray"``; with ``engine="ray"``: ray not installed, ``shards`` below 1, a
            remote ``address`` without ``cache_dir``.

    Example:
        >>> import types
        >>> vlm = types.SimpleNamespace(identity="toy", device=torch.device("cpu"), preprocess=print, encode_images=print,
        ...                             encode_texts=lambda texts: torch.tensor([[float(len(t)), 0.0] for t in texts]))
        >>> embed_texts(vlm, ["cat", "a dog"], template="{}!", progress=False).tolist()
        [[1.0, 0.0], [1.0, 0.0]]
    """
    vlm = check_vlm(vlm)
    _check_engine(engine, address, shards)
    if isinstance(texts, str):
        raise NeurocoreError("texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise NeurocoreError("texts is empty; give at least one text to encode")
    prompts = apply_template(texts, template)
    # A model that can tell texts longer than its context (OpenClip) is asked once for all prompts
    # (encode_texts sees one chunk at a time); the warning is kept with the cache, so a hit repeats
    # it: a cached embedding of a cut text is as wrong as a fresh one.
    truncation_warning = getattr(vlm, "truncation_warning", None)
    checks_truncation = callable(truncation_warning)
    key = {
        "format": CACHE_FORMAT,
        "kind": "text_embeddings",
        "vlm": vlm.identity,
        "template": template,
        "texts_sha256": _digest(texts),
        "num_texts": len(texts),
    }
    path = None
    if cache_dir is not None:
        path = _cache_file(cache_dir, "text_embeddings", key)
        hit = _read_cache(path, key)
        if hit is not None:
            if hit.get("truncation_warning"):
                warnings.warn(hit["truncation_warning"], stacklevel=2)
            return hit["embeddings"]
    message = truncation_warning(prompts) if checks_truncation else None
    if message:
        warnings.warn(message, stacklevel=2)
    if engine == "ray":
        from neurocore.scale._ray_embed import embed_texts_ray

        result = embed_texts_ray(vlm, prompts, key, checks_truncation=checks_truncation, cache_dir=cache_dir,
                                 shards=shards, address=address, progress=progress)
    else:
        chunk = max(1, int(getattr(vlm, "batch_size", 256)))
        starts = range(0, len(prompts), chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding {len(prompts)} texts", unit="batch")
        result = torch.cat([_encode_text_batch(vlm, prompts[s : s + chunk], checks_truncation) for s in starts])
    if path is not None:
        _write_cache(path, {"key": key, "embeddings": result, "truncation_warning": message})
    return result


def _encode_text_batch(vlm, prompts: list[str], checks_truncation: bool) -> torch.Tensor:
    """One forward pass over ``prompts``: Tensor[len(prompts), d] float32 on the CPU, unit rows."""
    emb = vlm.encode_texts(prompts, warn_truncation=False) if checks_truncation else vlm.encode_texts(prompts)
    _check_embeddings(emb, len(prompts), "encode_texts")
    return F.normalize(emb.detach().to("cpu", torch.float32), dim=1)
