"""Past one machine: the probe recorded by Ray workers into the chunked on-disk store, merged exactly.

Everything here is reached through ``record(..., engine="ray")`` (:func:`neurocore.probe.record`); this
package holds the engine so that the local path stays free of Ray. Ray is an optional extra
(``pip install neurocore[ray]``).
"""

from neurocore.scale._ray import ray_available, shard_chunks

__all__ = ["ray_available", "shard_chunks"]
