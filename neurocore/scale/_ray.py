"""The Ray engine of :func:`neurocore.probe.record`: shards of whole cache chunks, recorded by Ray tasks
into the chunked on-disk store (``neurocore/probe/_cache.py``), then read back by one reader.

How it works (``record(..., engine="ray")``):

1. The probe's dataset indices are cut into ``chunk_size`` chunks (the cache's unit) and the chunks into
   ``shards`` contiguous runs (:func:`shard_chunks`).
2. The model and the probe are put into Ray's object store once (``ray.put``; their plain CPU tensors
   out of band, see :func:`_pack`), with the cache key the driver computed; one Ray task per shard
   records its chunks with the same code as the local path and writes them, atomically, into the same
   cache folders (same keys) a local ``record`` would use. A shard whose chunks are all on disk already
   (a finished shard of an interrupted run) is not launched again.
3. The driver then runs the local ``record`` over the full probe with that ``cache_dir`` as the single
   reader: it reads the chunks in dataset order and feeds them to one
   :class:`~neurocore.probe._recorder.ActivationRecorder`, which appends the summaries row by row and
   selects each neuron's top-k with ``ops.topk``/``ops.topk_merge`` (ties by the lower row; consecutive
   chunks joined into one update, so many shards cost little more than few). The result is therefore the
   local result: the same rows in the same order, the same top-k, the same ``skipped``. The cache
   content check (two reused rows recomputed) runs once, on the chunks found before the workers start;
   the chunks written by this run's workers come from the model and probe sent to them, so the reader
   reads chunk files only: no image is decoded and no forward pass runs in the merge.

Costs against one process (``benchmarks/bench_ray.py``): the driver hashes the weights once (the cache
key, sent to the tasks), pickles the model and probe once into the object store (``ray.put``; the
tensors' bytes go in as they are, which is several times faster than torch's own pickling), each task
unpacks them (one copy of each tensor) and runs its shard with the driver's torch thread count
(:func:`driver_threads`: the kernels' sums then split as in the local run), and the reader loads the
chunk files. A CPU task reserves as many Ray CPUs as it runs threads, so the tasks on a node of C
cores run C // threads at a time (no oversubscription). Starting the workers (a Python process
importing torch and neurocore each) is a one-off cost of a new cluster: Ray keeps its worker processes
and reuses them for later tasks.

Each forward pass sees the images it would see in one process when ``chunk_size`` is a multiple of
``batch_size`` (batches are cut at multiples of ``batch_size`` from the shard's first index, unreadable
images dropped from their batch, exactly as locally); the stores are then equal bit for bit. Otherwise
batches differ at shard edges and the rows agree up to the batch-size dependence of the kernels.

A probe without a fingerprint (a plain list) has no finished shards to skip: every task reads its
images and reuses a cached row only when its digest matches (the local cache rule), so every chunk the
reader finds was checked in this run.
"""

from __future__ import annotations

import contextlib
import math
import tempfile

import torch

from neurocore._errors import NeurocoreError
from neurocore.probe._data import iter_batches
from neurocore.probe._record import _Recording


def ray_available() -> bool:
    """Whether the optional ``ray`` package can be imported (``pip install neurocore[ray]``).

    Example:
        >>> isinstance(ray_available(), bool)
        True
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def shard_chunks(num_chunks: int, shards: int) -> list[range]:
    """Cut chunk numbers ``0..num_chunks-1`` into at most ``shards`` contiguous, near-equal runs.

    The first ``num_chunks % shards`` runs get one chunk more; no run is empty (fewer runs when there are
    fewer chunks than ``shards``).

    Args:
        num_chunks: chunks of the probe (``ceil(len(probe) / chunk_size)``), >= 1.
        shards: wanted number of runs, >= 1.

    Returns:
        list of ``range`` of chunk numbers, in order, covering every chunk once.

    Raises:
        NeurocoreError: a count below 1 or not an integer.

    Example:
        >>> shard_chunks(5, 2)
        [range(0, 3), range(3, 5)]
        >>> shard_chunks(2, 4)
        [range(0, 1), range(1, 2)]
    """
    for value, what in ((num_chunks, "num_chunks"), (shards, "shards")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeurocoreError(f"{what} must be an integer >= 1; got {value!r}")
    shards = min(shards, num_chunks)
    base, extra = divmod(num_chunks, shards)
    out, start = [], 0
    for s in range(shards):
        stop = start + base + (1 if s < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def _import_ray():
    try:
        import ray
    except ImportError:
        raise NeurocoreError(
            "engine='ray' needs the optional package ray; install it with `pip install neurocore[ray]` "
            "(or use engine='local')"
        ) from None
    return ray


def _ensure_ray(address):
    ray = _import_ray()
    if not ray.is_initialized():
        # An existing cluster (`ray start --head` then address="auto" or "host:6379"), or a local one.
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def _check_shards(shards) -> None:
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise NeurocoreError(f"shards must be an integer >= 1 or None (one per Ray CPU or GPU); got {shards!r}")


def driver_threads() -> int:
    """The torch intra-op thread count every Ray task of this process computes with: the driver's own
    (``torch.get_num_threads()``), sent in the task's settings and applied by :func:`task_threads`.

    CPU kernels (matmul, convolution, reductions) split their work by the thread count, and the sum order
    follows the split: one thread and N threads may differ in the last bits. Ray starts its workers with
    ``OMP_NUM_THREADS`` set to the task's CPU reservation (1), so without this a task would compute with
    one thread and differ from the local run. A CPU task reserves as many Ray CPUs as it runs threads
    (at most a node's CPUs), so tasks sharing a node never run more threads than it has cores; on a
    node of C CPUs, C // threads tasks run at once. For more, smaller tasks lower the driver's count
    with ``torch.set_num_threads`` (the results then equal a local run with that count).

    Returns:
        int >= 1, the driver's ``torch.get_num_threads()``.

    Example:
        >>> driver_threads() == torch.get_num_threads()
        True
    """
    return torch.get_num_threads()


@contextlib.contextmanager
def task_threads(threads: int):
    """Inside a Ray task: compute with ``threads`` torch intra-op threads (the driver's,
    :func:`driver_threads`), restoring the worker's own count afterwards (Ray reuses its workers).
    Shared by the three Ray engines: recording, VLM encoding and per-neuron method work.

    Args:
        threads: int >= 1, the driver's thread count sent in the task's settings.

    Raises:
        NeurocoreError: ``threads`` not an integer >= 1.

    Example:
        >>> before = torch.get_num_threads()
        >>> with task_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise NeurocoreError(f"threads must be an integer >= 1 (the driver's torch.get_num_threads()); got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _placement(ray, gpu: bool, shards: int | None) -> tuple[int, dict]:
    """``(shards, Ray task options)``: None shards -> one per GPU (work on CUDA) or CPU of the cluster;
    a task takes one GPU (and no CPU slot) or the CPUs its threads use (:func:`_task_cpus`). Shared by
    the recording and the VLM encoding."""
    if shards is None:
        shards = max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
    return shards, {"num_gpus": 1 if gpu else 0, "num_cpus": 0 if gpu else _task_cpus(ray), "max_retries": 2}


def _task_cpus(ray) -> int:
    """Ray CPUs a CPU task reserves: its torch threads (:func:`driver_threads`), at most the CPUs of the
    largest node (a task asking for more could never be placed). Reserving them keeps tasks that share a
    node from running more threads than it has cores (OpenMP threads that wait on a busy core spin)."""
    largest = max((int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive", True)),
                  default=1)
    return max(1, min(driver_threads(), largest))


# -- shipping the model and the probe -----------------------------------------------------------------
# Pickling an nn.Module the default way writes every tensor through torch's own reducer into the pickle
# stream (a copy in the driver, another into Ray's object store, another when a task unpickles it). A
# plain CPU tensor that owns its whole storage is sent instead as a uint8 NumPy view, which pickle
# protocol 5 and Ray's object store pass out of band: written once into shared memory, read in place by
# the tasks, which copy it into a fresh tensor of the same dtype, shape and strides. Everything else
# (views into a larger storage, CUDA, sparse or quantized tensors, subclasses, tensors
# with Python attributes) keeps torch's reducer. Shared tensors stay shared (pickle's memo).

_PACKABLE = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
             torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128}


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _packable(t) -> bool:
    return (
        type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" and t.layout == torch.strided
        and t.dtype in _PACKABLE and not t.__dict__ and not t.is_conj() and not t.is_neg()
        and (type(t) is torch.nn.Parameter or not t.requires_grad)
        and t.storage_offset() == 0 and t.stride() == _contiguous_strides(t.shape)
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    )


def _unpack_tensor(data, dtype, shape, requires_grad, parameter):
    import numpy as np

    t = torch.from_numpy(np.array(data, copy=True)).view(dtype).reshape(shape)  # owned, writable memory
    return torch.nn.Parameter(t, requires_grad=requires_grad) if parameter else t


def _pack(obj) -> tuple[bytes, list]:
    """``obj`` pickled (cloudpickle, protocol 5) with its plain CPU tensors as out-of-band buffers:
    ``(stream, buffers)``; :func:`_unpack` inverts it. Put the pair in Ray's object store."""
    import io
    import pickle

    import numpy as np
    from ray import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, o):
            if isinstance(o, torch.Tensor) and _packable(o):
                data = o.detach().reshape(-1).view(torch.uint8).numpy()
                return _unpack_tensor, (data, o.dtype, tuple(o.shape), o.requires_grad, type(o) is torch.nn.Parameter)
            return super().reducer_override(o)

    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(obj)
    # NumPy views of the buffers (no copy): Ray's object store takes them out of band in turn
    return stream.getvalue(), [np.frombuffer(b.raw(), dtype=np.uint8) for b in buffers]


def _unpack(packed):
    import pickle

    stream, buffers = packed
    return pickle.loads(stream, buffers=buffers)


class _Prefix(torch.utils.data.Dataset):
    """The first ``stop`` items of a probe, keeping its image ids (a shard reads up to its last index)."""

    def __init__(self, probe, stop: int):
        self.probe, self.stop = probe, stop

    def __len__(self):
        return self.stop

    def __getitem__(self, i):
        return self.probe[i]

    def image_id(self, i):
        image_id = getattr(self.probe, "image_id", None)
        return image_id(i) if image_id is not None else str(i)


def _shard_job(model, layers, probe, chunks, settings):
    """Record chunks ``chunks`` (a range) of the probe into the cache; returns the number of chunks written.
    ``model`` and ``probe`` arrive packed (:func:`_pack`)."""
    model, probe = _unpack(model), _unpack(probe)
    with task_threads(settings["threads"]):
        return _record_shard(model, layers, probe, chunks, settings)


def _record_shard(model, layers, probe, chunks, settings):
    from neurocore.probe._cache import LayerCache
    from neurocore.probe._layers import eval_mode, layer_summaries, model_device, resolve_layers
    from neurocore.probe._layout import layer_layouts

    modules = resolve_layers(model, layers)
    names = list(modules)
    summaries = layer_summaries(settings["summary"], names)
    layouts = layer_layouts(settings["layout"], names)
    base_key = settings["base_key"]  # the driver's: hashing every weight again in each task would cost as much
    chunk_size = settings["chunk_size"]
    caches = {
        name: LayerCache(settings["cache_dir"], {**base_key, "layer": name, "summary": summaries[name], "layout": layouts[name]}, chunk_size)
        for name in names
    }
    n = len(probe)
    stop = min(chunks.stop * chunk_size, n)
    run = _ShardRecording(
        model, modules, summaries, _Prefix(probe, stop), None, None, chunk_size, model_device(model, None),
        verify_rows=base_key["probe_fingerprint"] is None, layouts=layouts,
    )
    run.attach(caches, chunks)
    with eval_mode(model):
        run.run(settings["batch_size"], settings["transform"], settings["num_workers"], False)
    return run.written


class _ShardRecording(_Recording):
    """The local recording loop restricted to a run of chunks; finished chunks go to disk only."""

    def attach(self, caches, chunks):
        self.caches, self.chunks = caches, chunks
        self.written = 0
        for name, cache in caches.items():
            for c in chunks:
                self.cached[name][c] = cache.load(c, *self._range(c))

    def _first_to_run(self):
        if self.verify_rows:
            return self.chunks.start  # rows are reused by digest, so every image is read again
        for c in self.chunks:
            chunks = [self.cached[name][c] for name in self.modules]
            if any(d is None for d in chunks):
                return c
            if any(not torch.equal(d["dataset_indices"], chunks[0]["dataset_indices"]) for d in chunks):
                return c
        return self.chunks.stop

    def run(self, batch_size, transform, num_workers, progress):
        c0 = self._first_to_run()
        self._next = c0
        if c0 == self.chunks.stop:
            return
        batches = iter_batches(self.probe, batch_size, transform, num_workers, start=c0 * self.chunk_size,
                               skipped=self._raw_skipped)
        for b, batch in enumerate(batches):
            self._batch(b, batch)
        self._finish_until(self.num_chunks)

    def _emit(self, c, chunks, first):
        self.written += 1  # on disk now; the driver's reader feeds the recorder


def record_ray(model, layers, probe, *, shards, address, record_kwargs):
    """``record(..., engine="ray")``: see the module docstring. ``record_kwargs`` are record's own
    keywords (summary, layout, top_k, batch_size, transform, transform_key, device, cache_dir,
    num_workers, progress, chunk_size)."""
    from neurocore.probe._cache import LayerCache, cacheable_preprocessing, check_cached_rows, recording_key
    from neurocore.probe._data import probe_length
    from neurocore.probe._layers import layer_summaries, model_device, resolve_layers
    from neurocore.probe._layout import layer_layouts
    from neurocore.probe._record import _record_local

    _check_shards(shards)
    kw = dict(record_kwargs)
    chunk_size, batch_size = kw["chunk_size"], kw["batch_size"]
    for value, what in ((batch_size, "batch_size"), (chunk_size, "chunk_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeurocoreError(f"{what} must be an integer >= 1; got {value!r}")
    transform, transform_key = kw["transform"], kw["transform_key"]
    if not cacheable_preprocessing(transform, probe, transform_key):
        raise NeurocoreError(
            "engine='ray' passes the shards through the on-disk cache, which cannot be keyed by this "
            "preprocessing (see the warning above): give the transform a __repr__ stating its parameters, "
            "or name it with transform_key='...', or use engine='local'"
        )
    n = probe_length(probe)
    if n == 0:
        raise NeurocoreError("the probe set is empty: give a dataset with at least one image")
    if kw["cache_dir"] is None:
        if address not in (None, "local"):
            raise NeurocoreError(
                f"engine='ray' with address={address!r} needs cache_dir=... on storage every node can read "
                "and write (the shards meet there); received cache_dir=None"
            )
        with tempfile.TemporaryDirectory(prefix="neurocore-ray-") as tmp:
            return record_ray(model, layers, probe, shards=shards, address=address,
                              record_kwargs={**kw, "cache_dir": tmp})
    ray = _ensure_ray(address)
    modules = resolve_layers(model, layers)
    names = list(modules)
    summaries = layer_summaries(kw["summary"], names)
    layouts = layer_layouts(kw["layout"], names)
    device = model_device(model, kw["device"])
    base_key = recording_key(model, probe, transform, transform_key)
    caches = {
        name: LayerCache(kw["cache_dir"], {**base_key, "layer": name, "summary": summaries[name], "layout": layouts[name]}, chunk_size)
        for name in names
    }
    # A reused cache that no longer matches the model is cleared before the workers run (the local rule).
    check_cached_rows(caches, model, modules, summaries, probe, transform, device,
                      verify_rows=base_key["probe_fingerprint"] is None, layouts=layouts)
    num_chunks = math.ceil(n / chunk_size)
    gpu = device.type == "cuda"
    shards, options = _placement(ray, gpu, shards)
    runs = shard_chunks(num_chunks, shards)
    if base_key["probe_fingerprint"] is not None:
        # Finished shards of an interrupted run: every chunk of every layer on disk.
        runs = [r for r in runs if not all(cache.load(c, c * chunk_size, min((c + 1) * chunk_size, n), warn=False)
                                           for c in r for cache in caches.values())]
    if runs:
        settings = {
            "summary": kw["summary"], "layout": kw["layout"], "transform": transform, "transform_key": transform_key,
            "chunk_size": chunk_size, "batch_size": batch_size, "cache_dir": str(kw["cache_dir"]),
            "num_workers": kw["num_workers"], "threads": driver_threads(),
            "base_key": base_key,
        }
        task = ray.remote(**options)(_shard_job)
        model_ref, probe_ref = ray.put(_pack(model)), ray.put(_pack(probe))  # sent once, shared by every task
        pending = [task.remote(model_ref, names, probe_ref, r, settings) for r in runs]
        from tqdm.auto import tqdm

        with tqdm(total=len(pending), unit="shard", desc="record (ray)", disable=not kw["progress"]) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # a worker's error surfaces here, with its traceback
                bar.update(len(done))
    # The single reader: the local path over the full probe, every chunk now on disk and checked (the
    # reused ones by check_cached_rows above, the others written by this run's workers from this model):
    # it reads the chunk files only, no image and no forward pass.
    return _record_local(model, layers, probe, **{**kw, "progress": False}, base_key=base_key, merge=True)
