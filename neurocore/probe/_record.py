"""``record``: run a model over a probe set and keep per-layer summaries and top-k (cached, resumable);
``spatial_maps``: the un-summarised maps of a few chosen images."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from neurocore._errors import NeurocoreError
from neurocore.probe._cache import LayerCache, cacheable_preprocessing, check_cached_rows, recording_key, row_digests
from neurocore.probe._data import iter_batches
from neurocore.probe._forward import hooked_forward
from neurocore.probe._layout import layer_layouts
from neurocore.probe._maps import _probe_length
from neurocore.probe._maps import spatial_maps  # noqa: F401  (its home before the probe/ split)
from neurocore.probe._layers import (
    eval_mode,
    layer_summaries,
    model_device,
    model_float_dtype,
    resolve_layers,
    summarise,
)
from neurocore.probe._recorder import ActivationRecorder, check_finite
from neurocore.probe._store import ActivationStore


def record(
    model: nn.Module,
    layers: str | Sequence[str],
    probe,
    *,
    summary: str | Mapping[str, str] = "mean",
    layout: str | Mapping[str, str] = "auto",
    top_k: int = 100,
    batch_size: int = 64,
    transform: Callable | None = None,
    transform_key: str | None = None,
    device=None,
    cache_dir=None,
    num_workers: int = 0,
    progress: bool = True,
    chunk_size: int = 1024,
    engine: str = "local",
    address: str | None = None,
    shards: int | None = None,
) -> ActivationStore:
    """Record the activations of several layers of ``model`` over a probe set in one pass.

    Each layer's output is reduced to one number per neuron and image (``summary``, ALGORITHMS.md §0);
    the N×K summaries (float32, CPU) and each neuron's ``top_k`` images are kept, never the full maps
    (re-run :func:`spatial_maps` on the few images that need them). The model runs in ``eval()`` mode
    under ``torch.inference_mode()``; every module's training flag is restored afterwards and every
    hook is removed, also when the model or the data raises.

    Each output is taken as it left the module: a later in-place op of the model (``ReLU(inplace=True)``
    after a ``Linear``, ``out += identity``) does not change what is recorded. Channels-last maps and
    sequence-first tokens are recognised (``layout``), so neurons are always channels.

    Rows of the result are the readable images in dataset order: unreadable images are skipped with
    one warning counting them (``store.skipped`` lists them), and ``store.dataset_indices`` maps rows
    back to dataset indices. A layer returning a tuple or list is recorded from its first element; a
    module called several times in one forward pass (a shared ReLU) from its last call, with a warning.
    Dead neurons (max summary < 0.01) are reported with a warning per layer and by ``store.dead()``.

    Caching (``cache_dir``): each layer's summaries are written chunk by chunk (``chunk_size`` dataset
    indices per file, atomically) into a folder keyed by the model's class, every tensor its forward
    reads (parameters, buffers including non-persistent ones, their dtypes: :func:`weights_digest`),
    its structure and code (``repr(model)``, so each module's settings such as ``inplace``, ``eps`` or
    ``stride``, parameter-free modules included; the bytecode of every module class's methods; its
    forward hooks), the layer, summary and layout, ``transform`` and the probe's own transform (their
    reprs, or ``transform_key``), the probe's type, length and fingerprint (:func:`probe_fingerprint`:
    identity and order), and neurocore's version. An interrupted run resumes after its last whole
    chunk; another key never reads these files. A probe without a fingerprint is read again on every
    run and each row is reused only if a digest of its index, id, label and input tensor matches the
    stored one (else it is recomputed). Layers already cached are not run again when recorded with new
    ones. The top-k is always recomputed from the summaries, so ``top_k`` changes never reuse a stale
    selection.

    The key cannot see a plain Python attribute read by ``forward`` (``self.gain = 3.0``) unless the
    module's ``extra_repr`` prints it, nor functions outside the module classes that ``forward`` calls,
    nor global settings. So whenever a cache is reused, the first and last reused rows are recomputed
    (one forward pass of two images) and compared with the cached summaries (to 1e-4 of the layer's
    scale; 1e-2 under TF32, 2e-2 in half precision); a layer that differs is recomputed entirely, with a
    warning, and its chunks are overwritten. A change that leaves those rows equal but not others
    goes unseen: use one ``cache_dir`` per experiment (or delete it) when changing such things.

    A transform whose ``repr`` does not describe it (torchvision's ``Lambda`` prints ``Lambda()``; a
    function, lambda or ``functools.partial`` prints a name or a memory address), in ``transform`` or
    in ``probe.transform``, at any depth of a ``Compose``, cannot key the cache: the recording then
    runs without the cache, with a warning. Give it a ``__repr__`` that states its parameters, or name
    the preprocessing with ``transform_key``.

    Args:
        model: any ``torch.nn.Module``.
        layers: module names as ``model.named_modules()`` spells them; one string or several.
        probe: a map-style dataset yielding images or ``(image, label)`` (e.g. :class:`ImageFolder`).
        summary: ``"mean"`` (default), ``"max"`` or ``"first"`` (CLS token of [B, T, C] outputs), or a
            dict layer -> summary.
        layout: where the batch and channels sit in each layer's output: ``"auto"`` (default: decided from
            the batch size and the modules that set the channels, refused when it cannot be told),
            ``"NCHW"``, ``"NHWC"`` (Swin stages), ``"NLC"`` (tokens), ``"LNC"`` (sequence-first tokens),
            ``"NCL"``, ``"NC"``; or a dict layer -> layout (:mod:`neurocore.probe._layout`).
        top_k: images kept per neuron (100: CLIP-Dissect's default).
        batch_size: images per forward pass.
        transform: applied to each probe image (the model's preprocessing), e.g. PIL -> tensor.
        transform_key: a name for the preprocessing (``transform`` and the probe's own) that the cache
            key uses besides the reprs, so that transforms whose repr does not describe them
            (``T.Lambda``, functions) can be cached; give each distinct preprocessing its own name.
            None (default): the reprs alone, which must then describe the transforms.
        device: where the inputs go; default: the device of the model's parameters. The model is never
            moved: a device other than the one holding its weights is an error.
        cache_dir: a folder for the on-disk cache (created if needed); None: no cache.
        num_workers: DataLoader worker processes.
        progress: show a tqdm bar over the probe's images.
        chunk_size: dataset indices per cache chunk (the unit of resumption, and of the Ray shards).
        engine: ``"local"`` (default: this process) or ``"ray"``: the chunks are cut into ``shards``
            contiguous runs that Ray tasks (one CPU each, or one GPU each when the model is on a GPU)
            record into the cache (``cache_dir``, or a temporary folder on a local cluster), then this
            process reads them back in dataset order (:mod:`neurocore.scale._ray`). The store equals the
            local one bit for bit when ``chunk_size`` is a multiple of ``batch_size``; an interrupted run
            resumes, finished shards are not recomputed. Needs ``pip install neurocore[ray]``.
        address: the Ray cluster for ``engine="ray"``: None (default: the running one, else a new local
            one), ``"auto"`` or ``"HOST:6379"`` (after ``ray start --head``); then ``cache_dir`` must be
            on storage every node shares.
        shards: runs of chunks for ``engine="ray"``; None (default): one per CPU (GPU) of the cluster.

    Returns:
        :class:`ActivationStore` with ``labels`` (when the probe has them), ``image_ids``,
        ``dataset_indices``, ``skipped`` and ``key`` filled.

    Raises:
        NeurocoreError: wrong layer names (with close matches), an empty probe or one where no image
            can be read, a summary that does not fit a layer's output, a layer that never runs during
            the forward pass, NaN or infinite activations (naming the layer and the batch), images of
            different shapes, bad argument values.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> probe = [(torch.rand(3, 8, 8), i % 2) for i in range(10)]
        >>> store = record(net, ["1", "4"], probe, top_k=3, batch_size=4, progress=False)
        >>> store["1"].summaries.shape, store["4"].top_indices.shape, store.labels.tolist()[:4]
        (torch.Size([10, 4]), torch.Size([3, 2]), [0, 1, 0, 1])
    """
    if engine not in ("local", "ray"):
        raise NeurocoreError(f"engine must be 'local' or 'ray'; got {engine!r}")
    if engine == "ray":
        from neurocore.scale._ray import record_ray

        return record_ray(model, layers, probe, shards=shards, address=address, record_kwargs=dict(
            summary=summary, layout=layout, top_k=top_k, batch_size=batch_size, transform=transform,
            transform_key=transform_key, device=device, cache_dir=cache_dir, num_workers=num_workers,
            progress=progress, chunk_size=chunk_size))
    if address is not None or shards is not None:
        raise NeurocoreError("address= and shards= apply to engine='ray' only; pass engine='ray' or drop them")
    return _record_local(
        model, layers, probe, summary=summary, layout=layout, top_k=top_k, batch_size=batch_size,
        transform=transform, transform_key=transform_key, device=device, cache_dir=cache_dir,
        num_workers=num_workers, progress=progress, chunk_size=chunk_size,
    )


def _record_local(
    model, layers, probe, *, summary, layout, top_k, batch_size, transform, transform_key, device, cache_dir,
    num_workers, progress, chunk_size, base_key=None, merge=False,
) -> ActivationStore:
    """``record``'s local path. ``base_key``: the :func:`recording_key` when the caller computed it
    already (it hashes every weight). ``merge``: the single reader of a Ray run
    (:mod:`neurocore.scale._ray`), whose chunks were all checked or written in this run: the content
    check of reused rows already ran (before the workers) and every row was read or digest-checked by a
    worker, so the reader neither re-checks rows nor reads the probe while the chunks are all on disk."""
    modules = resolve_layers(model, layers)
    names = list(modules)
    summaries = layer_summaries(summary, names)
    layouts = layer_layouts(layout, names)
    recorder = ActivationRecorder(names, summaries, top_k)
    for value, what in ((batch_size, "batch_size"), (chunk_size, "chunk_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeurocoreError(f"{what} must be an integer >= 1; got {value!r}")
    n = _probe_length(probe)
    if base_key is None:
        base_key = recording_key(model, probe, transform, transform_key)
    caches = None
    if cache_dir is not None and (merge or cacheable_preprocessing(transform, probe, transform_key)):
        caches = {
            name: LayerCache(cache_dir, {**base_key, "layer": name, "summary": summaries[name], "layout": layouts[name]}, chunk_size)
            for name in names
        }
        if not merge:
            # what the key cannot see: recompute a few reused rows, clear layers that no longer match
            check_cached_rows(caches, model, modules, summaries, probe, transform, model_device(model, device),
                              verify_rows=base_key["probe_fingerprint"] is None, layouts=layouts)
    run = _Recording(
        model, modules, summaries, probe, recorder, caches, chunk_size, model_device(model, device),
        verify_rows=caches is not None and not merge and base_key["probe_fingerprint"] is None, layouts=layouts,
    )
    with eval_mode(model):
        run.run(batch_size, transform, num_workers, progress)
    if recorder.num_images == 0:
        first = "; ".join(f"{i}: {why}" for i, why in run.skipped[:3])
        raise NeurocoreError(f"none of the {n} probe images could be read (e.g. {first})")
    store = recorder.compute()
    # A layer served wholly from the cache ran no forward pass: its layout is the one the cache recorded.
    layouts = {n: run.cached_layouts.get(n, "auto") if lay == "auto" else lay for n, lay in run.layouts.items()}
    key = {**base_key, "layers": dict(summaries), "layouts": layouts, "top_k": top_k}
    store = replace(store, key=key, skipped=tuple(run.skipped))
    if run.skipped:
        first = ", ".join(f"{i} ({why})" for i, why in run.skipped[:3])
        warnings.warn(
            f"skipped {len(run.skipped)} unreadable probe image(s) of {n}, e.g. {first}; they are not rows "
            "of the store (store.skipped lists them)",
            stacklevel=2,
        )
    for name, dead in store.dead().items():
        if dead.any():
            warnings.warn(
                f"layer {name!r}: {int(dead.sum())} of {dead.numel()} neurons are dead (max activation < 0.01 "
                f"over the probe set; on a signed layer, negative neurons count too); store[{name!r}].dead() marks them",
                stacklevel=2,
            )
    return store


# ----------------------------------------------------------------------------------------------


# Rows of cached chunks joined into one recorder update when a recording reads its cache back: large
# enough that few top-k merges run, small enough that the joined copy stays a small part of the store.
_CACHED_ROWS = 8192


class _Recording:
    """One call of :func:`record`: walks the probe chunk by chunk, reusing cached rows and computing
    the rest, writing finished chunks and feeding them to the recorder in dataset order."""

    def __init__(self, model, modules, summaries, probe, recorder, caches, chunk_size, device, verify_rows, layouts=None):
        self.model, self.modules, self.summaries, self.probe = model, modules, summaries, probe
        self.layouts = dict(layouts) if layouts is not None else dict.fromkeys(modules, "auto")
        self.cached_layouts: dict[str, str] = {}
        self.recorder, self.caches, self.chunk_size, self.device = recorder, caches, chunk_size, device
        self.verify_rows = verify_rows
        self.dtype = model_float_dtype(model)
        self.n = len(probe)
        self.num_chunks = math.ceil(self.n / chunk_size)
        self.skipped: list[tuple[int, str]] = []
        self._raw_skipped: list[tuple[int, str]] = []
        self._warned_calls: set[str] = set()
        self._buffers: dict[int, dict] = {}
        self._lookup: dict[tuple[str, int], dict[int, int]] = {}
        self.cached: dict[str, list[dict | None]] = {name: [None] * self.num_chunks for name in modules}
        if caches is not None:
            for name, cache in caches.items():
                for c in range(self.num_chunks):
                    self.cached[name][c] = cache.load(c, *self._range(c))
                    found = (self.cached[name][c] or {}).get("layout")
                    if found and self.layouts[name] == "auto":
                        self.cached_layouts[name] = found

    def _range(self, c: int) -> tuple[int, int]:
        return c * self.chunk_size, min((c + 1) * self.chunk_size, self.n)

    def _first_to_run(self) -> int:
        """The first chunk that must be read from the probe (all earlier ones come from the cache)."""
        if self.caches is None or self.verify_rows:
            return 0
        for c in range(self.num_chunks):
            chunks = [self.cached[name][c] for name in self.modules]
            if any(d is None for d in chunks):
                return c
            if any(not torch.equal(d["dataset_indices"], chunks[0]["dataset_indices"]) for d in chunks):
                return c  # the layers' files disagree on the readable images: recompute from here
        return self.num_chunks

    def run(self, batch_size, transform, num_workers, progress):
        from tqdm.auto import tqdm

        c0 = self._first_to_run()
        self._emit_cached(c0)
        self._next = c0
        if c0 == self.num_chunks:
            return
        start = c0 * self.chunk_size
        bar = tqdm(total=self.n - start, unit="img", desc="record", disable=not progress)
        try:
            batches = iter_batches(self.probe, batch_size, transform, num_workers, start=start, skipped=self._raw_skipped)
            for b, batch in enumerate(batches):
                self._batch(b, batch)
                bar.update(int(batch.indices[-1]) + 1 - start - bar.n)
            self._finish_until(self.num_chunks)
            bar.update(bar.total - bar.n)
        finally:
            bar.close()

    # -- one batch -------------------------------------------------------------------------------

    def _batch(self, b, batch):
        idx = batch.indices
        chunk_of = idx // self.chunk_size
        self._finish_until(int(chunk_of[0]))
        digests = row_digests(batch.images, idx, batch.ids, batch.labels) if self.verify_rows else None
        positions = {name: self._reusable(name, idx, chunk_of, digests) for name in self.modules}
        need = {name: pos < 0 for name, pos in positions.items()}
        any_need = torch.stack(list(need.values())).any(dim=0)
        computed = {}
        if any_need.any():
            hooked = {name: m for name, m in self.modules.items() if need[name].any()}
            sel = idx[any_need].tolist()
            where = f"batch {b} (dataset indices {sel[0]}..{sel[-1]})"
            inputs = batch.images if bool(any_need.all()) else batch.images[any_need]
            computed, calls, _ = hooked_forward(
                self.model, hooked, inputs, keep=self._summarise, layouts=self.layouts, device=self.device,
                dtype=self.dtype, where=where,
            )
            for name, s in computed.items():
                check_finite(s, name, where)
                if calls[name] > 1 and name not in self._warned_calls:
                    self._warned_calls.add(name)
                    warnings.warn(
                        f"layer {name!r} ran {calls[name]} times in each forward pass (a shared module); "
                        "its last output is recorded",
                        stacklevel=4,
                    )
        rows = {}
        for name in self.modules:
            rows[name] = self._assemble(name, need[name], any_need, computed.get(name), positions[name], chunk_of)
        for c in chunk_of.unique().tolist():
            mask = chunk_of == c
            buf = self._buffers.setdefault(
                c, {"indices": [], "ids": [], "labels": [], "digests": [], "rows": {n: [] for n in self.modules},
                    "changed": dict.fromkeys(self.modules, False)},
            )
            buf["indices"].append(idx[mask])
            buf["ids"] += [i for i, m in zip(batch.ids, mask.tolist()) if m]
            buf["labels"].append(None if batch.labels is None else batch.labels[mask])
            if digests is not None:
                buf["digests"].append(digests[mask])
            for name in self.modules:
                buf["rows"][name].append(rows[name][mask])
                buf["changed"][name] |= bool(need[name][mask].any())

    def _summarise(self, name, out):
        return summarise(out, self.summaries[name], name)

    def _reusable(self, name, idx, chunk_of, digests) -> torch.Tensor:
        """Per row, its position in the cached chunk of ``name`` (-1: compute it)."""
        pos = torch.full((idx.shape[0],), -1, dtype=torch.int64)
        for c in chunk_of.unique().tolist():
            data = self.cached[name][c]
            if data is None:
                continue
            lookup = self._lookup.get((name, c))
            if lookup is None:
                lookup = {int(i): r for r, i in enumerate(data["dataset_indices"].tolist())}
                self._lookup[(name, c)] = lookup
            for r in (chunk_of == c).nonzero().flatten().tolist():
                p = lookup.get(int(idx[r]), -1)
                if p >= 0 and digests is not None and (data.get("digests") is None or not torch.equal(data["digests"][p], digests[r])):
                    p = -1
                pos[r] = p
        return pos

    def _assemble(self, name, need, any_need, computed, positions, chunk_of) -> torch.Tensor:
        """The batch's [B, K] summaries of one layer: computed rows where needed, cached ones elsewhere."""
        parts = []
        if computed is not None:
            computed = computed.to("cpu", torch.float32)
            parts.append(computed.shape[1])
        for c in chunk_of[~need].unique().tolist():
            parts.append(self.cached[name][c]["summaries"].shape[1])
        if len(set(parts)) != 1:
            raise NeurocoreError(
                f"layer {name!r}: cached chunks hold {parts[1:]} neurons but the model gives {parts[:1]}; "
                "delete the cache folder and record again"
            )
        out = torch.empty(need.shape[0], parts[0], dtype=torch.float32)
        if computed is not None:
            out[need] = computed[need[any_need]]
        for c in chunk_of[~need].unique().tolist():
            mask = (chunk_of == c) & ~need
            out[mask] = self.cached[name][c]["summaries"][positions[mask]]
        return out

    # -- finished chunks ---------------------------------------------------------------------------

    def _finish_until(self, stop_chunk: int):
        """Chunks before ``stop_chunk`` are complete (rows arrive in dataset order): write and emit them."""
        while self._next < stop_chunk:
            self._finish(self._next)
            self._next += 1

    def _finish(self, c):
        start, stop = self._range(c)
        buf = self._buffers.pop(c, None)
        skipped = [(int(i), str(why)) for i, why in self._raw_skipped if start <= i < stop]
        if buf is None:
            indices, ids, labels, digests = torch.empty(0, dtype=torch.int64), [], None, None
            rows = {name: torch.empty(0, 0) for name in self.modules}
            changed = dict.fromkeys(self.modules, False)
        else:
            indices, ids = torch.cat(buf["indices"]), buf["ids"]
            has = [lab is not None for lab in buf["labels"]]
            if any(has) and not all(has):
                raise NeurocoreError(f"probe items {start}..{stop - 1}: some batches have labels and others not")
            labels = torch.cat(buf["labels"]) if all(has) else None
            digests = torch.cat(buf["digests"]) if buf["digests"] else None
            rows = {name: torch.cat(parts) for name, parts in buf["rows"].items()}
            changed = buf["changed"]
        chunks = {}
        for name in self.modules:
            data = {
                "layer": name, "layout": self.layouts[name], "start": start, "stop": stop, "summaries": rows[name],
                "dataset_indices": indices,
                "ids": list(ids), "labels": labels, "digests": digests, "skipped": [list(s) for s in skipped],
            }
            old = self.cached[name][c]
            same = (
                old is not None and not changed[name] and torch.equal(old["dataset_indices"], indices)
                and [tuple(s) for s in old["skipped"]] == skipped and old["ids"] == data["ids"]
            )
            if self.caches is not None and not same:
                self.caches[name].write(c, data)
            chunks[name] = data
            self.cached[name][c] = None  # free it: the recorder keeps what it needs
            self._lookup.pop((name, c), None)
        self._emit(c, chunks, chunks[next(iter(self.modules))])

    def _emit_cached(self, stop: int) -> None:
        """Feed chunks ``0..stop-1``, all from the cache, to the recorder: consecutive chunks joined into
        updates of about ``_CACHED_ROWS`` rows. One ``ops.topk`` per update instead of a ``topk_merge``
        of the running top-k per chunk (which re-sorts all k rows of every neuron): reading a cache of many
        small chunks (a store merged from many shards) then costs little more than one of few large
        chunks. The store is the same bit for bit (the streamed top-k equals the one-shot top-k)."""
        group: list[tuple[int, dict]] = []
        rows = 0
        for c in range(stop):
            chunks = {name: self.cached[name][c] for name in self.modules}
            for name in self.modules:
                self.cached[name][c] = None  # the recorder keeps what it needs
            group.append((c, chunks))
            rows += chunks[next(iter(self.modules))]["dataset_indices"].numel()
            if rows >= _CACHED_ROWS or c == stop - 1:
                self._emit_group(group)
                group, rows = [], 0

    def _emit_group(self, group: list[tuple[int, dict]]) -> None:
        firsts = [chunks[next(iter(self.modules))] for _, chunks in group]
        has = {first["labels"] is not None for first in firsts if first["dataset_indices"].numel()}
        ragged = any(
            len({chunks[name]["summaries"].shape[1:] for _, chunks in group if chunks[name]["dataset_indices"].numel()}) > 1
            for name in self.modules
        )
        if len(group) == 1 or len(has) > 1 or ragged:
            # mixed labels or neuron counts: chunk by chunk, so that the recorder names the problem
            for (c, chunks), first in zip(group, firsts):
                self._emit(c, chunks, first)
            return
        joined = {
            name: {"summaries": torch.cat([chunks[name]["summaries"] for _, chunks in group if chunks[name]["dataset_indices"].numel()] or [torch.empty(0, 0)])}
            for name in self.modules
        }
        kept = [first for first in firsts if first["dataset_indices"].numel()]
        first = {
            "skipped": [s for f in firsts for s in f["skipped"]],
            "dataset_indices": torch.cat([f["dataset_indices"] for f in firsts]),
            "ids": [i for f in kept for i in f["ids"]],
            "labels": torch.cat([f["labels"] for f in kept]) if has == {True} else None,
        }
        self._emit(group[0][0], joined, first)

    def _emit(self, c, chunks, first):
        self.skipped += [(int(i), str(why)) for i, why in first["skipped"]]
        if first["dataset_indices"].numel() == 0:
            return
        self.recorder.update(
            {name: d["summaries"] for name, d in chunks.items()},
            labels=first["labels"],
            ids=first["ids"],
            dataset_indices=first["dataset_indices"],
        )
