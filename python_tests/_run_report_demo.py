"""A small run of several methods on the concept world of ``neurocore demo`` (planted truth), shared by the
run-report tests (test_report_run.py) and the headless-browser check (test_report_browser.py).

:class:`~neurocore.demo.PlantedConceptNet`: unit j of ``colours`` is the share of pixels of colour j,
unit j of ``backgrounds`` the share of background j's grey. CLIP-Dissect (WPMI on the world's exact 0/1
scores, as the demo does), Linear Explanations and WWW run for real; HINT's explanations are planted
(its fit takes tens of seconds on two shared cores: test_hint.py runs it), with known contributions, over
the same store's probe identity.
"""

from __future__ import annotations

import functools

from neurocore.concepts import ConceptScores
from neurocore.demo import ConceptWorld, PlantedConceptNet
from neurocore.methods import Explanations, NeuronExplanation, get_method, probe_identity
from neurocore.probe import record

LAYERS = ("colours", "backgrounds")
REAL = ("clip_dissect", "linear", "www")
SETTINGS = {"clip_dissect": {"similarity": "wpmi"}}


def planted_label(world, layer: str, unit: int) -> str:
    """The concept unit ``unit`` of ``layer`` was built to detect."""
    return world.colours[unit] if layer == "colours" else world.backgrounds[unit]


@functools.lru_cache(maxsize=1)
def demo_run():
    """``dict``: world, probe (96 images), model, store, scores and runs (method -> Explanations)."""
    import neurocore.methods.clip_dissect  # noqa: F401  (registers the methods)
    import neurocore.methods.linear  # noqa: F401
    import neurocore.methods.www  # noqa: F401

    world = ConceptWorld()
    probe = world.sample(4, seed=2)
    model = PlantedConceptNet(world).eval()
    store = record(model, list(LAYERS), probe, top_k=50, batch_size=256, progress=False)
    ids = [probe.image_id(i) for i in range(len(probe))]
    scores = ConceptScores.from_tensor(probe.concept_matrix(), world.concepts, source="concept-world", image_ids=ids)
    runs = {}
    for name in REAL:
        runs[name] = get_method(name)(**SETTINGS.get(name, {})).explain(store, scores, model=model, probe=probe,
                                                                      progress=False)
    # HINT, planted: the true concept first with contribution 0.5, a runner-up with 0.125
    neurons = []
    for layer in LAYERS:
        for unit in range(store[layer].num_neurons):
            truth = planted_label(world, layer, unit)
            other = "circle" if truth != "circle" else "square"
            neurons.append(NeuronExplanation(layer, unit, truth, 0.5, (truth, other), (0.5, 0.125),
                                             top_images=runs["clip_dissect"].unit(layer, unit).top_images))
    runs["hint"] = Explanations("hint", tuple(neurons), {"probe": probe_identity(store), "concepts": list(world.concepts)})
    return {"world": world, "probe": probe, "model": model, "store": store, "scores": scores, "runs": runs}
