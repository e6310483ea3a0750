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
from neurocore.probe._cache import LayerCache, recording_key, row_digests
from neurocore.probe._data import iter_batches, probe_length
from neurocore.probe._layers import (
    capture,
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
    top_k: int = 100,
    batch_size: int = 64,
    transform: Callable | None = None,
    device=None,
    cache_dir=None,
    num_workers: int = 0,
    progress: bool = True,
    chunk_size: int = 1024,
) -> ActivationStore:
    """Record the activations of several layers of ``model`` over a probe set in one pass.

    Each layer's output is reduced to one number per neuron and image (``summary``, ALGORITHMS.md §0);
    the N×K summaries (float32, CPU) and each neuron's ``top_k`` images are kept, never the full maps
    (re-run :func:`spatial_maps` on the few images that need them). The model runs in ``eval()`` mode
    under ``torch.inference_mode()``; every module's training flag is restored afterwards and every
    hook is removed, also when the model or the data raises.

    Rows of the result are the readable images in dataset order: unreadable images are skipped with
    one warning counting them (``store.skipped`` lists them), and ``store.dataset_indices`` maps rows
    back to dataset indices. A layer returning a tuple or list is recorded from its first element; a
    module called several times in one forward pass (a shared ReLU) from its last call, with a warning.
    Dead neurons (max summary < 0.01) are reported with a warning per layer and by ``store.dead()``.

    Caching (``cache_dir``): each layer's summaries are written chunk by chunk (``chunk_size`` dataset
    indices per file, atomically) into a folder keyed by the model's class and weights digest, the
    layer, the summary, ``transform`` and the probe's own transform, the probe's type, length and
    fingerprint (:func:`probe_fingerprint`: identity and order), and neurocore's version. An
    interrupted run resumes after its last whole chunk; another key never reads these files. A probe
    without a fingerprint is read again on every run and each row is reused only if a digest of its
    index, id, label and input tensor matches the stored one (else it is recomputed). Layers already
    cached are not run again when recorded with new ones. The top-k is always recomputed from the
    summaries, so ``top_k`` changes never reuse a stale selection. A transform whose ``repr`` holds a
    memory address (a lambda) changes the key on every run: use a named callable to benefit.

    Args:
        model: any ``torch.nn.Module``.
        layers: module names as ``model.named_modules()`` spells them; one string or several.
        probe: a map-style dataset yielding images or ``(image, label)`` (e.g. :class:`ImageFolder`).
        summary: ``"mean"`` (default), ``"max"`` or ``"first"`` (CLS token of [B, T, C] outputs), or a
            dict layer -> summary.
        top_k: images kept per neuron (100: CLIP-Dissect's default).
        batch_size: images per forward pass.
        transform: applied to each probe image (the model's preprocessing), e.g. PIL -> tensor.
        device: where the inputs go; default: the device of the model's parameters. The model is never
            moved: a device other than the one holding its weights is an error.
        cache_dir: a folder for the on-disk cache (created if needed); None: no cache.
        num_workers: DataLoader worker processes.
        progress: show a tqdm bar over the probe's images.
        chunk_size: dataset indices per cache chunk (the unit of resumption).

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
    modules = resolve_layers(model, layers)
    names = list(modules)
    summaries = layer_summaries(summary, names)
    recorder = ActivationRecorder(names, summaries, top_k)
    for value, what in ((batch_size, "batch_size"), (chunk_size, "chunk_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeurocoreError(f"{what} must be an integer >= 1; got {value!r}")
    n = _probe_length(probe)
    base_key = recording_key(model, probe, transform)
    caches = None
    if cache_dir is not None:
        caches = {
            name: LayerCache(cache_dir, {**base_key, "layer": name, "summary": summaries[name]}, chunk_size)
            for name in names
        }
    run = _Recording(
        model, modules, summaries, probe, recorder, caches, chunk_size, model_device(model, device),
        verify_rows=caches is not None and base_key["probe_fingerprint"] is None,
    )
    with eval_mode(model):
        run.run(batch_size, transform, num_workers, progress)
    if recorder.num_images == 0:
        first = "; ".join(f"{i}: {why}" for i, why in run.skipped[:3])
        raise NeurocoreError(f"none of the {n} probe images could be read (e.g. {first})")
    store = recorder.compute()
    key = {**base_key, "layers": dict(summaries), "top_k": top_k}
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
                f"over the probe set); store[{name!r}].dead() marks them",
                stacklevel=2,
            )
    return store


def spatial_maps(
    model: nn.Module,
    layer: str,
    probe,
    indices,
    *,
    transform: Callable | None = None,
    device=None,
    batch_size: int = 32,
) -> torch.Tensor:
    """Re-run ``model`` on a few probe images and return ``layer``'s full, un-summarised output.

    ``indices`` are **dataset indices** of ``probe``. A store's rows map to them through
    ``store.dataset_indices``: the maps of neuron k's top images are
    ``spatial_maps(model, layer, probe, store.dataset_indices[store[layer].top_indices[:, k]])``.

    Args:
        model: the recorded model (eval mode and inference mode during the call, flags restored).
        layer: one module name.
        probe: the probe dataset (as given to :func:`record`).
        indices (Tensor[n] int64 or a sequence of ints): dataset indices, in the order wanted (repeats allowed).
        transform: the preprocessing given to :func:`record`.
        device: where the model runs; default: the device of its parameters.
        batch_size: images per forward pass.

    Returns:
        Tensor[n, C, H, W] for conv maps, Tensor[n, T, C] for tokens, Tensor[n, C] for 2-D outputs;
        float32, CPU, in the order of ``indices``.

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
    n = _probe_length(probe)
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).tolist()
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
        # A copy: later in-place ops of the model (ReLU(inplace=True), `out += identity`) would change it.
        return out.detach().to("cpu", torch.float32, copy=True)

    with eval_mode(model):
        for b, batch in enumerate(iter_batches(view, batch_size, transform, skipped=skipped)):
            where = f"dataset indices {[idx[i] for i in batch.indices.tolist()][:8]}"
            outs, _ = _forward(model, modules, batch.images, device, dtype, keep, where)
            maps.append(outs[layer])
    if skipped:
        pos, why = skipped[0]
        raise NeurocoreError(f"probe image {idx[pos]} could not be read ({why}); maps need readable images")
    return torch.cat(maps)  # outside inference mode: a normal tensor, usable with autograd


# ----------------------------------------------------------------------------------------------


def _probe_length(probe) -> int:
    n = probe_length(probe)
    if n == 0:
        raise NeurocoreError("the probe set is empty: give a dataset with at least one image")
    return n


class _Selection(torch.utils.data.Dataset):
    """Some items of a dataset, in a given order (ids stay the dataset's own)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset = dataset
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def _forward(model, modules, images, device, dtype, keep, where):
    """One forward pass with hooks on ``modules``; returns ({name: keep(name, output)}, {name: calls})."""
    x = images.to(device)
    if dtype is not None and x.is_floating_point():
        x = x.to(dtype)
    with capture(modules, keep) as state:
        try:
            with torch.inference_mode():
                model(x)
        except Exception as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11; keeps the exception's type
                exc.add_note(f"neurocore: while running the model on probe {where}, input shape {tuple(x.shape)}")
            raise
    never = [name for name, calls in state["calls"].items() if calls == 0]
    if never:
        raise NeurocoreError(
            f"layer(s) {never} never ran during the forward pass of {type(model).__name__} (defined but unused, "
            "or skipped by the model's forward); choose modules that run"
        )
    return state["outputs"], state["calls"]


class _Recording:
    """One call of :func:`record`: walks the probe chunk by chunk, reusing cached rows and computing
    the rest, writing finished chunks and feeding them to the recorder in dataset order."""

    def __init__(self, model, modules, summaries, probe, recorder, caches, chunk_size, device, verify_rows):
        self.model, self.modules, self.summaries, self.probe = model, modules, summaries, probe
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
        for c in range(c0):
            first = self.cached[next(iter(self.modules))][c]
            self._emit(c, {name: self.cached[name][c] for name in self.modules}, first)
            for name in self.modules:
                self.cached[name][c] = None  # the recorder keeps what it needs
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
            computed, calls = _forward(self.model, hooked, inputs, self.device, self.dtype, self._summarise, where)
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
                "layer": name, "start": start, "stop": stop, "summaries": rows[name], "dataset_indices": indices,
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
