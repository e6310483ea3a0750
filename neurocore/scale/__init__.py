"""Past one machine: the probe recorded by Ray workers into the chunked on-disk store, merged exactly.

The engines are reached through ``record(..., engine="ray")`` (:func:`neurocore.probe.record`) and
``embed_images``/``embed_texts(..., engine="ray")`` (:mod:`neurocore.vlm`, engine in ``_ray_embed``); this
package holds them so that the local path stays free of Ray. Ray is an optional extra
(``pip install neurocore[ray]``).
"""

from neurocore.scale._ray import ray_available, shard_chunks
from neurocore.scale._neurons import map_neuron_ranges, neuron_ranges
from neurocore.scale._sweep import (
    SweepConfig, SweepModel, SweepResult, add_sweep_parser, cell_stats, cmd_sweep, load_sweep_config, run_sweep,
    similarity_figure, sweep_config, write_sweep_report,
)

__all__ = ["ray_available", "shard_chunks", "map_neuron_ranges", "neuron_ranges", "SweepConfig", "SweepModel", "SweepResult", "add_sweep_parser", "cell_stats", "cmd_sweep",
           "load_sweep_config", "run_sweep", "similarity_figure", "sweep_config", "write_sweep_report"]
