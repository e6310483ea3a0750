"""``run_demo``: train a small CNN on the concept world, dissect it with the exact concept scores,
compare with the ground truth and write the report. Offline, CPU, a few seconds to a minute."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurocore._errors import NeurocoreError
from neurocore.demo._model import TrainingResult, train_cnn
from neurocore.demo._world import ConceptWorld, WorldImages

DEMO_LAYERS = ("block1", "block2", "block3", "block4", "fc")
DEFAULT_OUT = "neurocore-demo-out"


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did and found.

    Attributes:
        world: the concept world.
        probe: the probe images (drawn with another seed than the training images).
        training: the trained CNN and its training record.
        probe_accuracy: the CNN's classification accuracy on the probe images.
        store: the recorded activations of :data:`DEMO_LAYERS` over the probe.
        concept_scores: the exact (multi-hot) image–concept scores of the probe.
        explanations: one explanation per neuron of every recorded layer.
        final_layer_accuracy: share of ``fc`` neurons whose label is their own class name.
        label_precision: per layer, the mean over neurons with a label of the share of their top
            images (``n_top_images`` of the method, default 10) that truly show the label's concept:
            the ground-truth check of hidden-layer labels.
        summary: ``pandas.DataFrame``, one row per layer (:func:`neurocore.report.layer_summary`
            with concept families, plus ``label_precision``).
        seconds: wall-clock seconds of each stage (``data``, ``training``, ``recording``,
            ``dissection``, ``report``).
        out_dir: where the files went (None when nothing was written).
        report: the HTML page (None when nothing was written).
        hint: :class:`HintDemo`: HINT on ``block3`` over the world's class hierarchy and its
            localisation of ``"object"`` against the planted boxes (None with fewer than 2 probe
            images per class).
        where: the "where" benchmark on the planted objects (:func:`run_where_demo`; None with fewer
            than 4 probe images per class).
    """

    world: ConceptWorld
    probe: WorldImages
    training: TrainingResult
    probe_accuracy: float
    store: Any
    concept_scores: Any
    explanations: Any
    final_layer_accuracy: float
    label_precision: dict[str, float]
    summary: Any
    seconds: dict[str, float]
    out_dir: Path | None
    report: Path | None
    hint: Any = None
    where: Any = None


def derive_seed(seed: int, purpose: str) -> int:
    """An independent seed for one use (``"train"``, ``"probe"``, ``"model"``) of the demo's seed.

    Example:
        >>> derive_seed(0, "train") != derive_seed(0, "probe")
        True
    """
    digest = hashlib.sha256(f"neurocore-demo:{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def run_demo(
    out_dir: str | os.PathLike | None = DEFAULT_OUT,
    *,
    seed: int = 0,
    image_size: int = 32,
    train_per_class: int = 150,
    probe_per_class: int = 150,
    epochs: int = 8,
    method: str | None = None,
    threads: int | None = 1,
    n_images: int = 5,
    progress: bool = True,
    similarity: str | None = None,
) -> DemoResult:
    """Dissect a CNN whose answer key is known.

    1. Draw training and probe images of a :class:`ConceptWorld` (24 classes ``"<colour> <shape>"``,
       40 concepts: 6 shapes, 4 colours, 4 textures, 2 backgrounds and the 24 classes).
    2. Train :class:`ConceptWorldCNN` on the training images, deterministically (:func:`train_cnn`).
    3. Record its layers :data:`DEMO_LAYERS` over the probe and label every neuron with CLIP-Dissect
       (:class:`neurocore.methods.ClipDissect`), using the probe's **exact** concept scores in place
       of a vision–language model: the pipeline of :func:`neurocore.dissect` and ``neurocore
       dissect``.
    5. Score the labels against the ground truth: final-layer accuracy (neuron c of ``fc`` should be
       labelled with class c's name) and, for every layer, how often a neuron's top images truly
       show its label's concept.
    6. With ``out_dir``: write ``explanations.csv``/``.json``, ``skipped.csv``, ``summary.csv``, ``demo.json``
       (settings, timings, weights digest, results), ``demo_cnn.pt`` (the CNN's state dict) and the
       HTML report ``index.html``.

    The same seed gives the same images, weights and explanations on the same machine and torch
    build; everything runs on the CPU.

    Args:
        out_dir: folder for the results (created); None writes nothing.
        seed: the one seed everything derives from (:func:`derive_seed`).
        image_size: image edge in pixels.
        train_per_class, probe_per_class: images per class for training and probing. CLIP-Dissect
            looks at each neuron's top 100 images, so ``probe_per_class`` >= 100 lets a final-layer
            neuron's top images all be of its class.
        epochs: training epochs.
        similarity: CLIP-Dissect's similarity function (``"wpmi"``, ``"soft_wpmi"``, ``"rank_reorder"``,
            ``"cos"``, ``"cos_cubed"``), with its published defaults. The demo uses WPMI: on exact
            0/1 concept scores SoftWPMI's marginal (λ = 1) saturates, because one neuron's
            conditional log-likelihood of a concept exceeds every other neuron's by tens of nats, so
            every concept that a neuron "owns" scores exactly ``log K`` and several concepts tie for
            its label (which one wins is then decided by rounding). WPMI's λ = 0.6 keeps a share of
            the conditional term and ranks them. With vision–language scores, whose per-image
            softmax is far flatter, SoftWPMI is the better choice (the paper's default).
        method: deprecated name of ``similarity``.
        threads: torch CPU threads while training (fixed for bit-identical weights; None: leave).
        n_images: top images per neuron shown in the report.
        progress: progress bars.

    Returns:
        :class:`DemoResult`.

    Raises:
        NeurocoreError: invalid settings.

    Example:
        >>> r = run_demo(None, train_per_class=8, probe_per_class=4, epochs=1, progress=False)
        >>> len(r.explanations.layer("fc")), 0.0 <= r.final_layer_accuracy <= 1.0
        (24, True)
    """
    from neurocore._pipeline import run_dissection
    from neurocore.evaluate import final_layer_accuracy
    from neurocore.methods import ClipDissect
    from neurocore.methods.clip_dissect import _similarity_keyword
    from neurocore.report import layer_summary

    for name, value in (("train_per_class", train_per_class), ("probe_per_class", probe_per_class), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NeurocoreError(f"{name} must be an integer >= 1; got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NeurocoreError(f"seed must be an integer >= 0; got {seed!r}")
    similarity = _similarity_keyword("wpmi" if similarity is None and method is None else similarity, method)
    explainer = ClipDissect(similarity=similarity)
    explainer.check_settings()  # bad settings fail here, before the training

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    world = ConceptWorld(image_size=image_size)
    train = world.sample(train_per_class, seed=derive_seed(seed, "train"))
    probe = world.sample(probe_per_class, seed=derive_seed(seed, "probe"))
    lap("data")
    training = train_cnn(
        train.images, train.labels, len(world.classes), epochs=epochs, seed=derive_seed(seed, "model"),
        threads=threads, progress=progress,
    )
    model = training.model
    with torch.no_grad():
        logits = torch.cat([model(probe.images[s : s + 1024]) for s in range(0, len(probe), 1024)])
    probe_accuracy = float((logits.argmax(1) == probe.labels).float().mean())
    lap("training")

    run = run_dissection(
        model, list(DEMO_LAYERS), probe, explainer, scores=probe.concept_scores(), batch_size=256, progress=progress
    )
    store, concept_scores, explanations = run.store, run.concept_scores, run.explanations
    final = final_layer_accuracy(explanations, world.classes, k=1, layer="fc")["top1"]
    precision = label_precision(explanations, concept_scores)
    summary = layer_summary(explanations, world.families)
    summary["label_precision"] = [round(precision[layer], 4) for layer in summary.index]
    lap("dissection")  # the pipeline's scores and explanation stages, and the ground-truth checks
    seconds["recording"] = run.seconds["recording"]
    seconds["dissection"] -= seconds["recording"]
    hint_demo = None
    if probe_per_class >= 2:
        hint_demo = run_hint_demo(model, world, probe, per_class=min(8, probe_per_class // 2), seed=seed)
    lap("hint")
    where = run_where_demo(model, probe, seed=seed) if probe_per_class >= 4 else None
    lap("where")

    report = None
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        report = run.write(
            out,
            n_images=n_images,
            thumbnail_size=64,
            title="neurocore demo: dissecting a CNN with a known answer",
            families=world.families,
            intro=(
                f"A CNN trained on {len(train)} synthetic images of {len(world.classes)} classes "
                f"('<colour> <shape>'), dissected with CLIP-Dissect ({similarity}) using the exact concept "
                f"scores of {len(probe)} probe images ({len(world.concepts)} concepts: shapes, colours, "
                f"textures, backgrounds, classes). Probe accuracy of the CNN: {probe_accuracy:.3f}. "
                f"Final-layer accuracy (neurons labelled with their own class): {final:.3f}."
            ),
        )
        summary.to_csv(out / "summary.csv")
        torch.save(model.state_dict(), out / "demo_cnn.pt")
        lap("report")
        info = {
            "seed": seed,
            "settings": dict(image_size=image_size, train_per_class=train_per_class, probe_per_class=probe_per_class,
                             epochs=epochs, similarity=similarity, threads=threads),
            "weights_digest": training.digest,
            "training_losses": list(training.losses),
            "train_accuracy": training.train_accuracy,
            "probe_accuracy": probe_accuracy,
            "final_layer_accuracy": final,
            "label_precision": precision,
            "hint_localization": None if hint_demo is None else {
                "layer": hint_demo.layer, "concept": "object", "test_images": hint_demo.num_test,
                "table": {str(p): row for p, row in hint_demo.localization.to_dict("index").items()},
            },
            "where": None if where is None else {
                "scored_images": int(where["images"].iloc[0]),
                "table": {name: {k: (None if v != v else v) for k, v in row.items()}
                          for name, row in where.drop(columns="images").round(4).to_dict("index").items()},
            },
            "seconds": seconds,
            "torch": torch.__version__,
        }
        (out / "demo.json").write_text(json.dumps(info, indent=1))
    return DemoResult(
        world, probe, training, probe_accuracy, store, concept_scores, explanations, final, precision, summary,
        seconds, out, report, hint_demo, where,
    )


def label_precision(explanations, concept_scores, n_images: int | None = None) -> dict[str, float]:
    """Per layer: the mean, over neurons with a label in the concept set, of the share of their top
    images whose 0/1 concept score for that label is 1.

    A label that its neuron's most activating images do not show is wrong whatever its score; with
    exact concept scores this is the ground-truth check of hidden-layer labels.

    Args:
        explanations: :class:`~neurocore.methods.Explanations` whose ``top_images`` are rows of
            ``concept_scores``.
        concept_scores: :class:`~neurocore.concepts.ConceptScores` with 0/1 scores.
        n_images: top images per neuron to check (default: all it lists).

    Returns:
        layer -> mean precision (NaN for a layer with no labelled neuron).

    Example:
        >>> from neurocore.concepts import ConceptScores
        >>> from neurocore.methods import Explanations, NeuronExplanation
        >>> cs = ConceptScores.from_tensor(torch.tensor([[1., 0.], [1., 1.], [0., 1.]]), ["a", "b"])
        >>> ex = Explanations("x", (NeuronExplanation("l", 0, "a", 1.0, top_images=(0, 1)),
        ...                         NeuronExplanation("l", 1, "a", 1.0, top_images=(1, 2))))
        >>> label_precision(ex, cs)
        {'l': 0.75}
    """
    column = {c: j for j, c in enumerate(concept_scores.concepts)}
    scores = concept_scores.scores
    out = {}
    for layer in explanations.layers:
        shares = []
        for n in explanations:
            if n.layer != layer or n.description not in column or not n.top_images:
                continue
            rows = torch.tensor(n.top_images[:n_images], dtype=torch.int64)
            shares.append(float((scores[rows, column[n.description]] > 0.5).float().mean()))
        out[layer] = sum(shares) / len(shares) if shares else float("nan")
    return out


@dataclass(frozen=True)
class HintDemo:
    """HINT on the demo's CNN, scored against the planted object boxes.

    Attributes:
        layer: the explained layer.
        explanations: :class:`~neurocore.methods.Explanations` of HINT over the world's hierarchy.
        localization: ``pandas.DataFrame`` of :func:`neurocore.evaluate.localization_accuracy` for the
            root concept ``"object"`` (rows: percent of neurons by Φ).
        num_test: test images (with planted boxes) the localisation was scored on.
    """

    layer: str
    explanations: Any
    localization: Any
    num_test: int


def run_hint_demo(model, world: ConceptWorld, probe: WorldImages, *, layer: str = "block3", per_class: int = 8,
                  concept: str = "object", percents=(10, 20, 40, 80, 100), seed: int = 0,
                  progress: bool = False) -> HintDemo:
    """HINT on a trained demo CNN: concepts = the world's class hierarchy (:attr:`ConceptWorld.hierarchy`),
    classifiers and Φ from the first ``per_class`` probe images of every class, localisation of ``concept``
    on the next ``per_class`` images against their planted object boxes.

    Args:
        model: the trained :class:`~neurocore.demo.ConceptWorldCNN`.
        world, probe: the world and its probe images (class-major, as :meth:`ConceptWorld.sample` draws them).
        layer: the layer explained. per_class: images per class for fitting and for testing.
        concept: the concept localised. percents: shares of neurons by Φ. seed: HINT's seed.
        progress: progress bars.

    Returns:
        :class:`HintDemo`.

    Example:
        >>> from neurocore.demo import train_cnn
        >>> world = ConceptWorld(); probe = world.sample(2, seed=1)
        >>> cnn = train_cnn(probe.images, probe.labels, 24, epochs=1, progress=False).model
        >>> run_hint_demo(cnn, world, probe, per_class=1, percents=(100,)).localization.index.tolist()
        [100]
    """
    from neurocore.evaluate import localization_accuracy
    from neurocore.methods.hint import ConceptHierarchy, Hint, contribution_matrix
    from neurocore.probe import record

    per = len(probe) // len(world.classes)
    if per < 2 * per_class or probe.masks is None:
        raise NeurocoreError(
            f"run_hint_demo needs {2 * per_class} probe images per class with object masks; got {per} per class"
        )
    starts = torch.arange(len(world.classes)) * per
    fit_idx = (starts[:, None] + torch.arange(per_class)).reshape(-1)
    test_idx = (starts[:, None] + per_class + torch.arange(per_class)).reshape(-1)
    fit, test = probe.subset(fit_idx), probe.subset(test_idx)
    hierarchy = ConceptHierarchy.from_groups(world.classes, world.hierarchy)
    ids = [fit.image_id(i) for i in range(len(fit))]
    scores = hierarchy.concept_scores(fit.labels, image_ids=ids)
    store = record(model, [layer], fit, batch_size=256, progress=False)
    method = Hint(seed=seed)
    explanations = method.explain(store, scores, model=model, probe=fit, progress=progress)
    member = scores.scores
    _, _, cells, labels = method.layer_cells(model, layer, fit, range(len(fit)), member)
    test_member = hierarchy.concept_scores(test.labels).scores
    test_maps, _, _, _ = method.layer_cells(model, layer, test, range(len(test)), test_member)
    e = hierarchy.names.index(concept)
    phi = torch.tensor(contribution_matrix(explanations, layer)[concept].to_numpy())
    table = localization_accuracy(cells, labels[:, e], phi, test_maps, test.boxes, (world.image_size,) * 2,
                                  percents=percents, seed=seed)
    return HintDemo(layer, explanations, table, len(test))


def run_where_demo(model, probe: WorldImages, *, layer: str = "block4", hint_layer: str = "block3", per_class: int = 2,
                   hint_per_class: int = 8, lime_samples: int = 100, seed: int = 0):
    """The "where" benchmark on the concept world's planted objects (exact boxes and masks): WWW class
    and sample heatmaps of ``layer`` (class importance from the next ``per_class`` probe images of every
    class), HINT's concept regions and concept scores at ``hint_layer`` (classifiers and Φ on the next
    ``hint_per_class`` images of every class, or as many as there are, over the world's class hierarchy,
    :attr:`ConceptWorld.hierarchy`; the top 80 % neurons
    by Φ; each scored image's most specific concept, its shape:
    :func:`neurocore.evaluate.hint_concept_maps`), Grad-CAM, Score-CAM, Ablation-CAM on ``layer`` and
    LIME (``lime_samples`` perturbations), the attributions for each image's true class, beside the
    whole-image box (:func:`neurocore.evaluate.where_benchmark`; thresholds chosen on the even-numbered
    images, scored on the others). Seconds per image include each method's fitting on the other
    images (WWW's class importance, HINT's classifiers and Φ), spread over the scored images.

    Without the ``attribution`` extra the four baselines are left out (WWW and the whole image remain).

    Args:
        model: the trained :class:`~neurocore.demo.ConceptWorldCNN`. probe: class-major probe images with masks.
        layer: the layer of the heatmaps and CAMs. hint_layer: HINT's layer (``block3``, as
            :func:`run_hint_demo`: at ``block4``, which the global average pool follows, the gradient of a
            logit is the same at every cell, so HINT finds no responsible region).
        per_class: images per class scored (and as many for WWW's class importance).
        hint_per_class: images per class for HINT's classifiers (they need more cells than WWW's means).
        lime_samples: LIME's perturbed samples per image. seed: LIME's and HINT's seed.

    Returns:
        ``pandas.DataFrame`` as :func:`~neurocore.evaluate.where_benchmark` (with ``seconds_per_image``).

    Example:
        >>> from neurocore.demo import train_cnn
        >>> world = ConceptWorld(); probe = world.sample(4, seed=1)
        >>> cnn = train_cnn(probe.images, probe.labels, 24, epochs=1, progress=False).model
        >>> table = run_where_demo(cnn, probe, per_class=1, lime_samples=20)
        >>> "whole image" in table.index and "www class" in table.index and "hint regions" in table.index
        True
    """
    from neurocore.evaluate import hint_concept_maps, most_specific_concepts, where_benchmark
    from neurocore.methods.hint import ConceptHierarchy, Hint
    from neurocore.methods.www import class_importance, image_heatmaps

    n_classes = len(probe.world.classes)
    per = len(probe) // n_classes
    if per < 2 * per_class or probe.masks is None:
        raise NeurocoreError(f"run_where_demo needs {2 * per_class} probe images per class with object masks; got {per}")
    starts = torch.arange(n_classes) * per
    test = probe.subset((starts[:, None] + torch.arange(per_class)).reshape(-1))
    fit = probe.subset((starts[:, None] + per_class + torch.arange(per_class)).reshape(-1))
    x, labels, maps, seconds = test.images, test.labels, {}, {}
    clock = time.perf_counter()
    importance = class_importance(model, layer, fit)
    heat = image_heatmaps(model, layer, test, importance, keep_heatmaps=True)
    seconds["www class"] = seconds["www sample"] = (time.perf_counter() - clock) / len(test)
    maps["www class"], maps["www sample"] = heat.class_heatmaps, heat.sample_heatmaps
    hierarchy = ConceptHierarchy.from_groups(probe.world.classes, probe.world.hierarchy)
    hint_fit = probe.subset((starts[:, None] + per_class + torch.arange(min(hint_per_class, per - per_class))).reshape(-1))
    hint = hint_concept_maps(model, hint_layer, hint_fit.images, hint_fit.labels, hierarchy.membership(hint_fit.labels),
                             hierarchy.names, x, most_specific_concepts(hierarchy, labels), method=Hint(seed=seed))
    seconds["hint regions"] = seconds["hint scores"] = (hint.fit_seconds + hint.map_seconds) / len(test)
    maps["hint regions"], maps["hint scores"] = hint.regions, hint.scores
    try:
        import lime  # noqa: F401
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        pass
    else:
        from neurocore.methods.attribution import attribute

        for method in ("gradcam", "scorecam", "ablationcam", "lime"):
            clock = time.perf_counter()
            maps[method] = attribute(model, x, labels, method=method, layer=layer, num_samples=lime_samples, seed=seed)
            seconds[method] = (time.perf_counter() - clock) / len(test)
    heldout = torch.arange(len(test)) % 2 == 0
    return where_benchmark(maps, test.boxes, x.shape[-2:], heldout=heldout, truth_masks=test.masks, seconds=seconds)
