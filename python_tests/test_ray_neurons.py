"""Per-neuron method work on Ray (neurocore.scale.map_neuron_ranges): Linear Explanations (elastic net by
blocks of neurons, greedy search by neuron ranges) and HINT's Φ (by concept ranges) on a local Ray
cluster must equal the one-process run bit for bit, for 1, 2, 3 and more shards than units, on the
demo's concept world."""

import sys

import pytest
import torch

from neurocore import NeurocoreError
from neurocore.concepts import ConceptScores
from neurocore.demo import ConceptWorld, ConceptWorldCNN, PlantedConceptNet
from neurocore.methods.hint import ConceptHierarchy, Hint, fit_concept_classifiers, shapley_contributions
from neurocore.methods.linear import LinearExplanations, elastic_net, explain_linear, greedy_search, rank_concepts
from neurocore.probe import ActivationStore
from neurocore.scale import map_neuron_ranges, neuron_ranges

SHARDS = [1, 2, 3, 100]  # 100: more shards than neurons (or concepts); fewer ranges are cut


# ---- the generic engine ------------------------------------------------------------------------


def test_neuron_ranges_cover_every_unit_once_in_whole_blocks():
    for num in (1, 2, 7, 24):
        for shards in (1, 2, 3, 100):
            for block in (1, 4, 50):
                ranges = neuron_ranges(num, shards, block)
                assert [u for r in ranges for u in r] == list(range(num))
                assert all(r.start % block == 0 for r in ranges) and all(len(r) for r in ranges)
                assert len(ranges) == min(shards, -(-num // block))
    assert neuron_ranges(0, 3) == []
    with pytest.raises(NeurocoreError, match="shards must be an integer >= 1"):
        neuron_ranges(5, 0)
    with pytest.raises(NeurocoreError, match="block must be an integer >= 1"):
        neuron_ranges(5, 2, block=0)


def _squares(units, offset):
    return [u * u + offset for u in units]


def _fails_at_seven(units, _):
    if 7 in units:
        raise NeurocoreError("unit 7 is broken")
    return list(units)


def test_map_neuron_ranges_gathers_in_order_and_surfaces_worker_errors(cluster):
    local = map_neuron_ranges(_squares, 10, 1, engine="local")
    assert local == [(range(0, 10), [u * u + 1 for u in range(10)])]
    for shards in SHARDS:
        parts = map_neuron_ranges(_squares, 10, 1, shards=shards)
        assert [r for r, _ in parts] == neuron_ranges(10, shards)
        assert [v for _, vals in parts for v in vals] == local[0][1]
    with pytest.raises(NeurocoreError, match="unit 7 is broken") as err:
        map_neuron_ranges(_fails_at_seven, 10, None, shards=3)
    assert "_fails_at_seven" in str(err.value)  # the worker's traceback comes along
    assert map_neuron_ranges(_squares, 0, 1) == []


def test_engine_settings_are_checked(monkeypatch):
    with pytest.raises(NeurocoreError, match="engine must be 'local' or 'ray'; got 'dask'"):
        map_neuron_ranges(_squares, 3, 0, engine="dask")
    with pytest.raises(NeurocoreError, match="apply to engine='ray' only"):
        LinearExplanations(shards=2).explain(*_le_inputs()[:2])
    with pytest.raises(NeurocoreError, match="shards must be an integer >= 1 or None"):
        LinearExplanations(engine="ray", shards=0).explain(*_le_inputs()[:2])
    with pytest.raises(NeurocoreError, match="neuron_block must be an int >= 1"):
        LinearExplanations(neuron_block=0).explain(*_le_inputs()[:2])
    with pytest.raises(NeurocoreError, match="Hint: engine must be 'local' or 'ray'"):
        Hint(engine="spark")._engine()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(NeurocoreError, match=r"pip install neurocore\[ray\]"):
        map_neuron_ranges(_squares, 3, 0, address="auto")


# ---- Linear Explanations -----------------------------------------------------------------------


def _le_inputs():
    """A 24-neuron layer over the concept world: neuron k = shape k // 4 plus (weaker) texture k % 4, plus
    noise (each of the 24 pairs once; shape and texture are drawn independently); one dead neuron (all zeros)."""
    world = ConceptWorld()
    probe = world.sample(10, seed=5)
    P = probe.concept_matrix()  # [240, 40]: shapes, colours, textures, backgrounds, then the classes
    g = torch.Generator().manual_seed(0)
    K = 24
    acts = torch.zeros(len(probe), K)
    for k in range(K):
        acts[:, k] = P[:, k // 4] + 0.5 * P[:, 10 + k % 4] + 0.05 * torch.rand(len(probe), generator=g)
    acts[:, 5] = 0.0  # dead
    ids = [probe.image_id(i) for i in range(len(probe))]
    store = ActivationStore.from_tensor(acts, top_k=10, image_ids=ids)
    scores = ConceptScores.from_tensor(P, list(world.concepts), image_ids=ids)
    return store, scores, world


def _same_explanations(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.layer, x.unit, x.concepts, x.scores, x.dead) == (y.layer, y.unit, y.concepts, y.scores, y.dead)
        assert x.bias == y.bias or (x.bias != x.bias and y.bias != y.bias)  # bit for bit (NaN for dead)
        assert x.metrics == y.metrics or x.dead
    assert a.params == b.params


@pytest.mark.parametrize("shards", SHARDS)
def test_linear_explanations_on_ray_equal_the_local_run(cluster, shards):
    store, scores, world = _le_inputs()
    # neuron_block=4: the elastic nets of 23 live neurons in 6 blocks, so that the step is sharded too
    local = LinearExplanations(neuron_block=4).explain(store, scores)
    dist = LinearExplanations(neuron_block=4, engine="ray", shards=shards).explain(store, scores)
    _same_explanations(dist, local)
    # the planted answer: each live neuron's explanation starts with its shape and its texture
    assert local[5].dead
    for n in local:
        if not n.dead:
            assert set(n.concepts[:2]) == {world.concepts[n.unit // 4], world.concepts[10 + n.unit % 4]}, n


def test_linear_explanations_default_block_and_functions_on_ray(cluster):
    store, scores, _ = _le_inputs()
    _same_explanations(explain_linear(store, scores, engine="ray", shards=3), explain_linear(store, scores))
    # the pure functions: elastic net with chunks of 5 neurons, greedy search over 7 neuron ranges
    acts = store["layer"].summaries
    P = scores.scores
    w_local = elastic_net(P[:170], acts[:170], chunk_size=5)
    w_ray = elastic_net(P[:170], acts[:170], chunk_size=5, engine="ray", shards=4)
    assert torch.equal(w_ray, w_local)
    live = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    ranking = rank_concepts(w_local[live])
    args = (P[:170], P[170:200], acts[:170, live], acts[170:200, live], ranking)
    assert greedy_search(*args, engine="ray", shards=7) == greedy_search(*args)


# ---- HINT's Φ ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hint_cells():
    """Cells of a seeded demo CNN's 24-channel layer over the world's class hierarchy (9 concepts)."""
    world = ConceptWorld()
    probe = world.sample(2, seed=2)
    torch.manual_seed(0)
    net = ConceptWorldCNN(len(world.classes), widths=(16, 24, 24, 24)).eval()
    h = ConceptHierarchy.from_groups(world.classes, world.hierarchy)
    method = Hint(saliency="gradient_x_input", target="label")
    _, _, cells, labels = method.layer_cells(net, "block2", probe, range(len(probe)), h.membership(probe.labels))
    clf = fit_concept_classifiers(cells, labels, h.names, max_cells=300, seed=0)
    return cells, labels, clf


@pytest.mark.parametrize("shards", SHARDS)
def test_hint_phi_on_ray_equals_the_local_phi(cluster, hint_cells, shards):
    cells, labels, clf = hint_cells
    assert cells.shape[1] == 24 and labels.shape[1] == 9
    kw = dict(permutations=16, max_cells=120, seed=3)
    local = shapley_contributions(clf, cells, labels, **kw)
    dist = shapley_contributions(clf, cells, labels, engine="ray", shards=shards, **kw)
    assert torch.equal(dist, local)
    assert (local > 0).any(0).all()  # every concept has cells and a non-zero column


def test_hint_phi_on_ray_meets_the_identity_closed_form(cluster, hint_cells):
    """With the identity link Φ has a closed form, mean_r |α_d (r_d − b_d)|, over the seeded draws."""
    from neurocore.methods.hint import _concept_rows

    cells, labels, clf = hint_cells
    phi = shapley_contributions(clf, cells, labels, link="identity", permutations=2, max_cells=60, seed=7,
                                engine="ray", shards=3)
    g = torch.Generator().manual_seed(7)
    torch.randint(2**31 - 1, (1,), generator=g)  # the permutations' seed
    by = labels.T.contiguous()
    rows = [_concept_rows(by, e, 60, g) for e in range(labels.shape[1])]
    r_total = cells.shape[0]
    backs = [(r + torch.randint(1, r_total, r.shape, generator=g)) % r_total for r in rows]
    for e in range(labels.shape[1]):
        expected = (clf.weight[e] * (cells[rows[e]] - cells[backs[e]])).abs().mean(0)
        torch.testing.assert_close(phi[:, e], expected, atol=1e-5, rtol=1e-5)


def test_hint_method_on_ray_equals_local_and_labels_the_planted_colours(cluster):
    world = ConceptWorld()
    data = world.sample(4, seed=4)
    net = PlantedConceptNet(world).eval()
    from neurocore.probe import record

    store = record(net, ["colours"], data, batch_size=256, progress=False)
    full = data.concept_scores()
    keep = [full.concepts.index(c) for c in (*world.colours, *world.backgrounds)]  # six classifiers, not 40
    scores = ConceptScores.from_tensor(full.scores[:, keep], [full.concepts[j] for j in keep],
                                       image_ids=list(full.image_ids))
    settings = dict(saliency="gradient_x_input", target="logit_sum", images_per_concept=6, permutations=8, max_cells=200)
    one = Hint(**settings)
    local = one.explain(store, scores, model=net, probe=data)
    method = Hint(**settings, engine="ray", shards=3)
    dist = method.explain(store, scores, model=net, probe=data)
    assert [(n.concepts, n.scores, n.label) for n in dist] == [(n.concepts, n.scores, n.label) for n in local]
    assert dist.params == local.params and torch.equal(method.phi_["colours"], one.phi_["colours"])
    assert [n.label for n in dist] == list(world.colours)


# ---- the tasks compute with the driver's torch threads ----------------------------------------------


def _matmul_rows(units, shared):
    a, b = shared
    return a[units.start : units.stop] @ b  # a long inner dimension: the sum splits by the thread count


def test_ray_tasks_use_the_driver_thread_count_so_matmuls_equal_local(cluster):
    g = torch.Generator().manual_seed(0)
    shared = (torch.randn(16, 4096, generator=g), torch.randn(4096, 64, generator=g))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = map_neuron_ranges(_matmul_rows, 16, shared, engine="local")[0][1]
        torch.set_num_threads(4)
        local = map_neuron_ranges(_matmul_rows, 16, shared, engine="local")[0][1]
        assert not torch.equal(one, local)  # the thread count changes the last bits: the check below can fail
        for shards in (1, 2):
            dist = torch.cat([r for _, r in map_neuron_ranges(_matmul_rows, 16, shared, shards=shards)])
            assert torch.equal(dist, local)
    finally:
        torch.set_num_threads(before)
