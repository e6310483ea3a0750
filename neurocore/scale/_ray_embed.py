"""The Ray engine of :func:`neurocore.vlm.embed_images` and :func:`neurocore.vlm.embed_texts`: contiguous
shards encoded by Ray tasks into the embedding cache, merged in order by the driver.

How it works (``embed_images(..., engine="ray")``):

1. The probe's dataset indices are cut into ``chunk_size`` chunks (the unit written to disk and of
   resumption) and the chunks into ``shards`` contiguous runs (:func:`~neurocore.scale.shard_chunks`).
2. The vision–language model and the probe go into Ray's object store once; one Ray task per run
   (one GPU each when the model is on CUDA, else as many CPUs as the driver's torch threads, as
   ``record(..., engine="ray")`` places them; every task computes with the driver's thread count,
   :func:`~neurocore.scale._ray.driver_threads`) reads its images with
   :func:`neurocore.probe.iter_batches` (the local loop: batches cut at multiples of ``batch_size`` from the run's first index, unreadable images dropped from their
   batch and listed), encodes them and writes each finished chunk atomically to
   ``cache_dir/image_embeddings-<key digest>.chunks/chunk-<c>.pt``, keyed (inside the file) by the
   embeddings' cache key, the chunk and the batch and chunk sizes.
3. The driver reads the chunks in order and concatenates them: rows, dataset indices, image ids and
   unreadable images are those of the local run. It then writes the one cache file a local
   ``embed_images`` writes (so a later local call hits it) and removes the chunk folder.

Chunks already on disk (an interrupted run) are not encoded again: a run whose chunks are all there
is not launched, and a launched run starts at its first missing chunk. Texts go the same way, with
the model's own text batch (``vlm.batch_size``, 256 when it has none) as the chunk.

Bit for bit: every batch holds the images it holds in one process when ``chunk_size`` is a multiple
of ``batch_size`` (then every run starts on a batch edge), and the embeddings are then equal bit for
bit to the local ones on the same kind of device (and CPU type). Otherwise the batches around run edges are cut
differently, and rows agree only up to the batch-size dependence of the model's kernels (a few ulp
on CPU). Texts are always cut at the local batches.

A probe without ``fingerprint()`` (a plain list) cannot key a cache: its chunks go to a folder of
this call only (no resumption), removed after the merge.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F

from neurocore._errors import NeurocoreError
from neurocore.scale._ray import (
    _check_shards, _ensure_ray, _placement, _Prefix, driver_threads, shard_chunks, task_threads,
)


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:06d}.pt"


def _load_chunk(folder: Path, c: int, key: dict) -> dict | None:
    """The chunk's payload when its file exists and was written for ``key``; else None (with the
    cache's warning for a foreign or unreadable file)."""
    from neurocore.vlm._embed import _read_cache

    return _read_cache(_chunk_path(folder, c), key)


def _chunk_key(key: dict, c: int, settings: dict) -> dict:
    return {**key, "chunk": c, **{k: settings[k] for k in ("chunk_size", "batch_size")}}


def _threaded_job(job, vlm, data, chunks: range, settings: dict) -> int:
    """A Ray task: ``job`` with the driver's torch threads (``settings["threads"]``)."""
    with task_threads(settings["threads"]):
        return job(vlm, data, chunks, settings)


def _run_shards(ray, job, runs, shared, settings, options, progress: bool, what: str) -> None:
    """Launch ``job(*shared, run, settings)`` for every run and wait; a worker's error surfaces here."""
    from tqdm.auto import tqdm

    task = ray.remote(**options)(_threaded_job)
    refs = [ray.put(x) for x in shared]  # sent once, shared by every task
    pending = [task.remote(job, *refs, r, settings) for r in runs]
    with tqdm(total=len(pending), unit="shard", desc=f"{what} (ray)", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            bar.update(len(done))


def _encode_chunks(job, vlm, data, folder: Path, key: dict, num_chunks: int, settings: dict, *, shards, address,
                   progress: bool, what: str, desc: str) -> list[dict]:
    """Every chunk's payload in order, encoding on Ray the shards that hold a chunk not yet in ``folder``
    (finished chunks of an earlier run are kept): ``job(vlm, data, run, settings)`` per shard, with
    ``settings`` completed by the folder, the key and the torch threads of a task (this process's,
    :func:`~neurocore.scale._ray.driver_threads`). Shared by the images and the texts."""
    ray = _ensure_ray(address)
    gpu = torch.device(vlm.device).type == "cuda"
    shards, options = _placement(ray, gpu, shards)
    settings = {"folder": str(folder), "key": key, **settings, "threads": driver_threads()}
    loaded = {c: _load_chunk(folder, c, _chunk_key(key, c, settings)) for c in range(num_chunks)}
    runs = [r for r in shard_chunks(num_chunks, shards) if any(loaded[c] is None for c in r)]
    if runs:
        _run_shards(ray, job, runs, (vlm, data), settings, options, progress, desc)
    out = []
    for c in range(num_chunks):
        chunk = loaded[c] if loaded[c] is not None else _load_chunk(folder, c, _chunk_key(key, c, settings))
        if chunk is None:
            raise NeurocoreError(f"chunk {c} of the {what} is missing from {str(folder)!r} after the Ray tasks "
                                 "finished; is cache_dir shared by every node?")
        out.append(chunk)
    return out


def _workspace(cache_dir, address):
    """The folder the shards meet in: ``cache_dir``, or a temporary folder on a local cluster."""
    if cache_dir is not None:
        return Path(cache_dir), None
    if address not in (None, "local"):
        raise NeurocoreError(
            f"engine='ray' with address={address!r} needs cache_dir=... on storage every node can read and "
            "write (the shards meet there); received cache_dir=None"
        )
    tmp = tempfile.TemporaryDirectory(prefix="neurocore-ray-embed-")
    return Path(tmp.name), tmp


def _check_sizes(**values) -> None:
    for what, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeurocoreError(f"{what} must be an integer >= 1; got {value!r}")


# ---------------------------------------------------------------------------------------------- images


def _image_shard_job(vlm, probe, chunks: range, settings: dict) -> int:
    """Encode chunks ``chunks`` of the probe into their chunk files; returns the chunks written."""
    from neurocore.probe import iter_batches
    from neurocore.vlm._embed import _check_embeddings, _PILOnly, _write_cache

    folder, key, cs = Path(settings["folder"]), settings["key"], settings["chunk_size"]
    n = len(probe)
    first = next((c for c in chunks if _load_chunk(folder, c, _chunk_key(key, c, settings)) is None), None)
    if first is None:
        return 0
    stop = min(chunks.stop * cs, n)
    parts: dict[int, dict] = {}
    skipped: list = []
    written = 0

    def part(c):
        return parts.setdefault(c, {"embeddings": [], "indices": [], "image_ids": [], "skipped": []})

    def flush(until: int) -> None:  # every chunk that ends at or before dataset index ``until``
        nonlocal written
        for c in range(first, chunks.stop):
            if min((c + 1) * cs, n) > until or c in done:
                continue
            p = part(c)
            emb = torch.cat(p["embeddings"]) if p["embeddings"] else torch.zeros(0, 0)  # every image unreadable
            _write_cache(_chunk_path(folder, c), {
                "key": _chunk_key(key, c, settings),
                "embeddings": emb,
                "indices": torch.cat(p["indices"]) if p["indices"] else torch.zeros(0, dtype=torch.int64),
                "image_ids": p["image_ids"],
                "skipped": p["skipped"],
            })
            done.add(c)
            written += 1

    done: set[int] = set()
    batches = iter_batches(_Prefix(probe, stop), settings["batch_size"], transform=_PILOnly(vlm.preprocess),
                           num_workers=settings["num_workers"], start=first * cs, skipped=skipped)
    seen = 0
    for batch in batches:
        for i, why in skipped[seen:]:
            part(int(i) // cs)["skipped"].append([int(i), str(why)])
        seen = len(skipped)
        emb = vlm.encode_images(batch.images)
        _check_embeddings(emb, len(batch.ids), "encode_images")
        emb = F.normalize(emb.detach().to("cpu", torch.float32), dim=1)
        owner = batch.indices // cs  # a batch spans two chunks only when chunk_size is no multiple of batch_size
        for c in owner.unique().tolist():
            rows = (owner == c).nonzero().flatten()
            p = part(c)
            p["embeddings"].append(emb[rows])
            p["indices"].append(batch.indices[rows].to(torch.int64))
            p["image_ids"] += [batch.ids[j] for j in rows.tolist()]
        last = max([int(batch.indices[-1])] + [int(i) for i, _ in skipped])
        flush(last + 1)
    for i, why in skipped[seen:]:
        part(int(i) // cs)["skipped"].append([int(i), str(why)])
    flush(stop)
    return written


def embed_images_ray(vlm, probe, key, *, batch_size, num_workers, cache_dir, chunk_size, shards, address, progress):
    """``embed_images(..., engine="ray")`` after the cache lookup (see the module docstring): returns
    ``(embeddings Tensor[N, d], indices Tensor[N], image_ids list, skipped list)``, in probe order."""
    from neurocore.probe._data import probe_length
    from neurocore.vlm._embed import _digest, _undescribed_preprocessing

    _check_shards(shards)
    _check_sizes(batch_size=batch_size, chunk_size=chunk_size)
    parts = _undescribed_preprocessing(vlm, probe)
    if parts:
        from neurocore.probe._cache import uncacheable_message

        raise NeurocoreError(
            "engine='ray' passes the shards through the on-disk cache, which cannot be keyed by this "
            "preprocessing: " + uncacheable_message(parts, "use engine='local'")
        )
    n = probe_length(probe)
    if n == 0:
        raise NeurocoreError("the probe set is empty: give a dataset with at least one image")
    root, tmp = _workspace(cache_dir, address)
    run_only = key is None  # no identity: a folder of this call only, never read by another one
    if run_only:
        key = {"kind": "image_embeddings", "run": uuid.uuid4().hex, "dataset_size": n}
        folder = root / f".image_embeddings-run-{key['run']}.chunks"
    else:
        folder = root / f"image_embeddings-{_digest(key)[:32]}.chunks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        chunks = _encode_chunks(
            _image_shard_job, vlm, probe, folder, key, math.ceil(n / chunk_size),
            {"chunk_size": chunk_size, "batch_size": batch_size, "num_workers": num_workers},
            shards=shards, address=address, progress=progress, what="image embeddings", desc="encoding images",
        )
        embs, indices, ids, skipped = [], [], [], []
        for chunk in chunks:
            if chunk["embeddings"].shape[0]:
                embs.append(chunk["embeddings"])
            indices.append(chunk["indices"])
            ids += list(chunk["image_ids"])
            skipped += [(int(i), str(why)) for i, why in chunk["skipped"]]
        shutil.rmtree(folder, ignore_errors=True)  # the caller writes the merged cache file
    finally:
        if run_only:  # nothing could resume from it
            shutil.rmtree(folder, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()
    if not embs:
        raise NeurocoreError(f"no readable image in the probe ({len(skipped)} unreadable of {n}); nothing to encode")
    return torch.cat(embs), torch.cat(indices), ids, skipped


# ---------------------------------------------------------------------------------------------- texts


def _text_shard_job(vlm, prompts, chunks: range, settings: dict) -> int:
    """Encode text batches ``chunks`` into their chunk files; returns the chunks written."""
    from neurocore.vlm._embed import _encode_text_batch, _write_cache

    folder, key, cs = Path(settings["folder"]), settings["key"], settings["chunk_size"]
    written = 0
    for c in chunks:
        ckey = _chunk_key(key, c, settings)
        if _load_chunk(folder, c, ckey) is not None:
            continue
        emb = _encode_text_batch(vlm, prompts[c * cs : (c + 1) * cs], settings["checks_truncation"])
        _write_cache(_chunk_path(folder, c), {"key": ckey, "embeddings": emb})
        written += 1
    return written


def embed_texts_ray(vlm, prompts, key, *, checks_truncation, cache_dir, shards, address, progress) -> torch.Tensor:
    """``embed_texts(..., engine="ray")`` after the cache lookup: Tensor[M, d] float32, unit rows, in
    order; every batch is the local one (``vlm.batch_size`` texts), so the result is the local one."""
    from neurocore.vlm._embed import _digest

    _check_shards(shards)
    chunk = max(1, int(getattr(vlm, "batch_size", 256)))
    root, tmp = _workspace(cache_dir, address)
    try:
        folder = root / f"text_embeddings-{_digest(key)[:32]}.chunks"
        folder.mkdir(parents=True, exist_ok=True)
        chunks = _encode_chunks(
            _text_shard_job, vlm, list(prompts), folder, key, math.ceil(len(prompts) / chunk),
            {"chunk_size": chunk, "batch_size": chunk, "checks_truncation": checks_truncation},
            shards=shards, address=address, progress=progress, what="text embeddings",
            desc=f"encoding {len(prompts)} texts",
        )
        out = [part["embeddings"] for part in chunks]
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return torch.cat(out)
