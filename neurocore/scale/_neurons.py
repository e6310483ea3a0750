"""Per-neuron method work sharded by contiguous unit ranges on Ray, equal to the one-process run.

The methods' work after recording is parallel over neurons (LE's elastic net and greedy search) or
over concepts (HINT's Φ). :func:`map_neuron_ranges` is the one engine for it:

1. ``range(num)`` (neurons, blocks of neurons, or concepts: whatever unit the method's job takes) is cut
   into at most ``shards`` contiguous, near-equal ranges, whole ``block``\\ s kept together
   (:func:`neuron_ranges`);
2. the state every range shares (Gram matrices, the cells, seeded draws) is computed once by the caller
   on the driver and put into Ray's object store once (``ray.put``);
3. one Ray task per range runs ``job(units, shared)``, a picklable module-level function; the results
   come back in range order, with a progress bar over ranges; a task's error is raised on the driver
   with the worker's traceback (Ray's ``RayTaskError`` is also an instance of the original error's
   class, so ``except NeurocoreError`` still catches it) and the other tasks are cancelled.

Results equal the one-process run bit for bit when the job's output for a unit depends only on that
unit and ``shared`` (never on which other units share its range): the local engine runs the same job
over the single range ``range(num)``. Each method documents how it meets this; see
:class:`~neurocore.methods.LinearExplanations` and :func:`~neurocore.methods.hint.shapley_contributions`.
Every task computes with the driver's torch thread count
(:func:`~neurocore.scale._ray.driver_threads`; the kernels' sums split by it) and reserves as many
Ray CPUs (at most a node's).
Equality assumes the same CPU type on the driver and the workers: the kernels pick an instruction-set
variant (AVX2, AVX-512) per CPU, and a multi-node cluster of mixed CPUs may differ in the last bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from neurocore._errors import NeurocoreError
from neurocore.scale._ray import _ensure_ray, _task_cpus, driver_threads, shard_chunks, task_threads

ENGINES = ("local", "ray")


def check_engine(engine, shards, address, owner: str) -> None:
    """Validate the ``engine`` / ``shards`` / ``address`` settings of a method or function.

    Args:
        engine: ``"local"`` (one process) or ``"ray"`` (Ray tasks).
        shards: None (one range per CPU of the Ray cluster) or an integer >= 1; Ray only.
        address: None (a local Ray cluster, or the one already initialised), ``"auto"`` or
            ``"host:port"`` of a running cluster (``ray start --head``); Ray only.
        owner: what the settings belong to, named in the messages (e.g. ``"LinearExplanations"``).

    Raises:
        NeurocoreError: an unknown engine, a bad ``shards``, or ``shards``/``address`` given with
            ``engine="local"``.

    Example:
        >>> check_engine("ray", 2, None, "LinearExplanations")
        >>> check_engine("dask", None, None, "LinearExplanations")
        Traceback (most recent call last):
        ...
        neurocore._errors.NeurocoreError: LinearExplanations: engine must be 'local' or 'ray'; got 'dask'
    """
    if engine not in ENGINES:
        raise NeurocoreError(f"{owner}: engine must be 'local' or 'ray'; got {engine!r}")
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise NeurocoreError(f"{owner}: shards must be an integer >= 1 or None (one per Ray CPU); got {shards!r}")
    if engine == "local" and (shards is not None or address is not None):
        raise NeurocoreError(
            f"{owner}: shards= and address= apply to engine='ray' only; got shards={shards!r}, "
            f"address={address!r} with engine='local' (pass engine='ray', or drop them)"
        )


def neuron_ranges(num: int, shards: int, block: int = 1) -> list[range]:
    """Cut ``range(num)`` into at most ``shards`` contiguous, near-equal ranges of whole blocks.

    Units are grouped into blocks of ``block`` (the last may be shorter); the blocks are cut into runs
    as :func:`~neurocore.scale.shard_chunks` cuts chunks (the first runs get one block more; fewer runs
    when there are fewer blocks than ``shards``; none empty). Every range starts at a multiple of
    ``block``.

    Args:
        num: number of units (neurons, neuron blocks or concepts), >= 0; 0 gives ``[]``.
        shards: wanted number of ranges, >= 1.
        block: units that must stay in one range, >= 1.

    Returns:
        list of ``range``, in order, covering ``range(num)`` once.

    Raises:
        NeurocoreError: a negative ``num`` or a count below 1.

    Example:
        >>> neuron_ranges(10, 3)
        [range(0, 4), range(4, 7), range(7, 10)]
        >>> neuron_ranges(10, 3, block=4)
        [range(0, 4), range(4, 8), range(8, 10)]
        >>> neuron_ranges(2, 5)
        [range(0, 1), range(1, 2)]
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise NeurocoreError(f"num must be an integer >= 0; got {num!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise NeurocoreError(f"block must be an integer >= 1; got {block!r}")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise NeurocoreError(f"shards must be an integer >= 1; got {shards!r}")
    if num == 0:
        return []
    runs = shard_chunks(math.ceil(num / block), shards)
    return [range(r.start * block, min(r.stop * block, num)) for r in runs]


def _range_task(job, units, shared, threads):
    with task_threads(threads):  # the driver's torch threads: the kernels' sums split as locally
        return job(units, shared)


def map_neuron_ranges(
    job: Callable[[range, Any], Any],
    num: int,
    shared: Any = None,
    *,
    engine: str = "ray",
    shards: int | None = None,
    address: str | None = None,
    block: int = 1,
    progress: bool = False,
    desc: str = "neurons",
) -> list[tuple[range, Any]]:
    """Run ``job(units, shared)`` over contiguous ranges of ``range(num)``; results in range order.

    ``engine="ray"``: one Ray task (the driver's torch threads, as many Ray CPUs) per range of
    :func:`neuron_ranges`, ``shared`` sent once through Ray's object store; a bar (``progress``) counts finished ranges. ``engine="local"``: one call
    ``job(range(0, num), shared)`` in this process (no Ray needed). See the module docstring for when the
    two are equal bit for bit.

    Args:
        job: a module-level function (Ray pickles it by reference) ``job(units: range, shared) -> result``.
        num: number of units, >= 0 (0 runs nothing and returns ``[]``).
        shared: whatever every range needs (tensors, settings); computed once by the caller.
        engine: ``"ray"`` or ``"local"``.
        shards: ranges to cut; None = one per CPU of the Ray cluster (``ray.cluster_resources()``).
        address: Ray cluster to join when Ray is not initialised yet: None starts a local one,
            ``"auto"`` or ``"host:port"`` joins a running one (``ray start --head``).
        block: units kept in one range (e.g. the method's own batch of neurons).
        progress: show a tqdm bar over ranges (Ray only).
        desc: the bar's label.

    Returns:
        list of ``(units, job's result)`` pairs, in the order of the units.

    Raises:
        NeurocoreError: bad settings; ``engine="ray"`` without ray installed (naming
            ``pip install neurocore[ray]``).
        Exception: a job's own error, re-raised on the driver with the worker's traceback.

    Example:
        >>> def squares(units, offset):
        ...     return [u * u + offset for u in units]
        >>> map_neuron_ranges(squares, 3, 1, engine="local")
        [(range(0, 3), [1, 2, 5])]
    """
    check_engine(engine, shards, address, "map_neuron_ranges")
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise NeurocoreError(f"map_neuron_ranges: num must be an integer >= 0; got {num!r}")
    if num == 0:
        return []
    if engine == "local":
        units = range(0, num)
        return [(units, job(units, shared))]
    ray = _ensure_ray(address)
    if shards is None:
        shards = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ranges = neuron_ranges(num, shards, block)
    task = ray.remote(num_cpus=_task_cpus(ray), max_retries=0)(_range_task)
    shared_ref = ray.put(shared)  # sent once, read by every task
    threads = driver_threads()
    refs = [task.remote(job, units, shared_ref, threads) for units in ranges]
    position = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    from tqdm.auto import tqdm

    pending = list(refs)
    with tqdm(total=len(refs), unit="range", desc=f"{desc} (ray)", disable=not progress) as bar:
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[position[ref]] = ray.get(ref)  # a worker's error surfaces here, with its traceback
                bar.update(len(done))
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
    return list(zip(ranges, results))
