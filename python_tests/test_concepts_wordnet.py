"""The WordNet 3.0 noun hierarchy: the build script, the shipped table, and WordNetHierarchy's queries."""

from __future__ import annotations

import functools
import importlib.util
import json
import random
from collections import defaultdict
from pathlib import Path

import pytest

from neurocore._errors import NeurocoreError
from neurocore.concepts import WordNetHierarchy, imagenet_wnids, wordnet_hierarchy
from neurocore.concepts._sets import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORDNET_DIR = Path("/usr/share/wordnet")
ENTITY = "n00001740"
DOG = "n02084071"


def _script():
    spec = importlib.util.spec_from_file_location("build_wordnet_data", ROOT / "scripts" / "build_wordnet_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wn():
    return wordnet_hierarchy()


# --- the build script ----------------------------------------------------------------------------

SYNTHETIC = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.
00001740 03 n 01 entity 0 001 ~ 00000002 n 0000 | that which is perceived
00000002 03 n 02 living_thing 0 animate_thing 0 002 @ 00001740 n 0000 + 01234567 a 0101 | a being
00000003 18 n 01 Einstein 0 001 @i 00000004 n 0000 | a physicist
00000004 18 n 0b a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 k_l 0 002 @ 00000002 n 0000 @ 00001740 n 0000 | eleven words (hex count)
"""


def test_parse_data_noun_reads_words_pointers_and_licence():
    synsets, licence = _script().parse_data_noun(SYNTHETIC)
    assert licence[1] == "WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved."
    by_id = {s[0]: s[1:] for s in synsets}
    assert by_id["n00001740"] == (["entity"], [], [])  # "~" (hyponym) pointers are not hypernyms
    assert by_id["n00000002"] == (["living thing", "animate thing"], ["n00001740"], [])  # "+ ... a" ignored
    assert by_id["n00000003"] == (["Einstein"], [], ["n00000004"])  # instance hypernym kept apart
    assert by_id["n00000004"][0] == list("abcdefghij") + ["k l"]  # w_cnt is hexadecimal
    assert by_id["n00000004"][1] == ["n00000002", "n00001740"]
    _script().check(synsets)  # all pointers resolve, all reach entity


def test_check_rejects_cut_off_synsets():
    synsets, _ = _script().parse_data_noun(SYNTHETIC.replace("001 @i 00000004 n 0000", "000"))
    with pytest.raises(SystemExit, match="do not reach entity"):
        _script().check(synsets)


@pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(), reason="WordNet 3.0 database not installed (apt-get install wordnet-base)")
def test_build_script_reproduces_the_shipped_table(tmp_path, capsys):
    assert _script().main(["--wordnet-dir", str(WORDNET_DIR), "--out", str(tmp_path)]) == 0
    assert "82115 noun synsets" in capsys.readouterr().out
    for name in ("wordnet_nouns.tsv.gz", "WORDNET_LICENSE.txt"):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


# --- the shipped hierarchy -----------------------------------------------------------------------


def test_known_synsets(wn):
    assert len(wn) == 82115 and DOG in wn and "n99999999" not in wn and 5 not in wn
    assert wn.name(DOG) == "dog" and wn.lemmas(DOG) == ("dog", "domestic dog", "Canis familiaris")
    assert [wn.name(h) for h in wn.hypernyms(DOG)] == ["canine", "domestic animal"]
    assert wn.hypernyms(ENTITY) == () and wn.ancestors(ENTITY) == () and wn.paths_to_root(ENTITY) == [(ENTITY,)]
    names = [[wn.name(w) for w in p] for p in wn.paths_to_root(DOG)]
    assert names == [
        ["dog", "canine", "carnivore", "placental", "mammal", "vertebrate", "chordate", "animal", "organism",
         "living thing", "whole", "object", "physical entity", "entity"],
        ["dog", "domestic animal", "animal", "organism", "living thing", "whole", "object", "physical entity", "entity"],
    ]
    assert wn.find("Domestic_Dog") == (DOG,) and DOG in wn.find("dog") and wn.find("no such lemma") == ()


def test_instances_are_linked_by_instance_hypernyms(wn):
    einstein = "n10954498"
    assert wn.lemmas(einstein) == ("Einstein", "Albert Einstein") and wn.is_instance(einstein)
    assert [wn.name(h) for h in wn.hypernyms(einstein)] == ["physicist"]
    assert ENTITY in wn.ancestors(einstein)
    assert not wn.is_instance(DOG)
    assert not any(wn.is_instance(w) for w in imagenet_wnids())


def _naive_ancestors(wn, wnid):
    @functools.cache
    def up(w):
        out = set()
        for h in wn.hypernyms(w):
            out |= {h} | up(h)
        return frozenset(out)

    return up(wnid)


def _naive_path_count(wn, wnid):
    hs = wn.hypernyms(wnid)
    return 1 if not hs else sum(_naive_path_count(wn, h) for h in hs)


def test_ancestors_and_paths_against_naive_closure(wn):
    rng = random.Random(0)
    sample = rng.sample(wn.wnids, 400) + list(imagenet_wnids()[::10])
    for w in sample:
        anc = wn.ancestors(w)
        assert len(anc) == len(set(anc)) and w not in anc
        assert set(anc) == _naive_ancestors(wn, w)
        paths = wn.paths_to_root(w)
        assert len(paths) == _naive_path_count(wn, w) == len(set(paths))
        for p in paths:
            assert p[0] == w and p[-1] == ENTITY
            assert all(b in wn.hypernyms(a) for a, b in zip(p, p[1:]))
        assert set().union(*paths) - {w} == set(anc)
        # breadth-first: an ancestor is listed no earlier than its shortest distance requires
        dist = {w: 0}
        frontier = [w]
        while frontier:
            nxt = []
            for x in frontier:
                for h in wn.hypernyms(x):
                    if h not in dist:
                        dist[h] = dist[x] + 1
                        nxt.append(h)
            frontier = nxt
        assert [dist[a] for a in anc] == sorted(dist[a] for a in anc)


def test_every_synset_reaches_entity_and_every_imagenet_wnid_resolves(wn):
    assert all(ENTITY in wn.ancestors(w) for w in wn.wnids if w != ENTITY)
    assert all(w in wn for w in imagenet_wnids())


def test_errors_and_read_only(wn):
    with pytest.raises(NeurocoreError, match="'n' followed by the 8-digit synset offset.*got 'dog.n.01'"):
        wn.name("dog.n.01")
    with pytest.raises(NeurocoreError, match="'n99999999' is not a WordNet 3.0 noun synset"):
        wn.ancestors("n99999999")
    with pytest.raises(NeurocoreError, match="got 2084071"):
        wn.hypernyms(2084071)
    with pytest.raises(AttributeError, match="read-only"):
        wn._lemmas = {}
    assert wordnet_hierarchy() is wn  # cached


# --- superclasses --------------------------------------------------------------------------------


def _tiny():
    # root - a - b - c ; root - d ; e under b and d (two parents)
    hyper = {"n00001740": [], "n00000001": ["n00001740"], "n00000002": ["n00000001"], "n00000003": ["n00000002"],
             "n00000004": ["n00001740"], "n00000005": ["n00000002", "n00000004"]}
    return WordNetHierarchy({w: [w[-1]] for w in hyper}, hyper)


def test_superclasses_on_a_known_tree():
    h = _tiny()
    # classes: c (3), e (5), d (4)
    assert h.superclasses(["n00000003", "n00000005", "n00000004"]) == {
        "n00000001": [0, 1], "n00000002": [0, 1], "n00000004": [1, 2],  # d is a class and an ancestor of e
    }
    full = h.superclasses(["n00000003", "n00000005", "n00000004"], drop_universal=False)
    assert list(full) == ["n00001740", "n00000001", "n00000002", "n00000004"]  # root first, then path order
    assert full["n00001740"] == [0, 1, 2]
    assert h.superclasses(["n00000003", "n00000005"]) == {"n00000004": [1]}  # a and b cover both: universal
    assert h.superclasses(["n00000003", "n00000005"], drop_universal=False, min_classes=2) == {
        "n00001740": [0, 1], "n00000001": [0, 1], "n00000002": [0, 1],
    }
    assert h.superclasses(["n00000003", "n00000004"], min_classes=2) == {}
    assert h.superclasses(["n00000003", "n00000004"]) == {"n00000001": [0], "n00000002": [0]}


def test_superclasses_errors(wn):
    with pytest.raises(NeurocoreError, match="class_wnids is empty"):
        wn.superclasses([])
    with pytest.raises(NeurocoreError, match="not a WordNet 3.0 noun synset"):
        wn.superclasses([DOG, "n99999999"])
    with pytest.raises(NeurocoreError, match="min_classes must be >= 1"):
        wn.superclasses([DOG], min_classes=0)


def test_imagenet_superclasses_against_naive(wn):
    wnids = imagenet_wnids()
    sup = wn.superclasses(wnids)
    naive = defaultdict(list)
    for i, w in enumerate(wnids):
        for a in _naive_ancestors(wn, w):
            naive[a].append(i)
    assert set(wnids).isdisjoint(naive)  # no ImageNet class is an ancestor of another
    expected = {a: m for a, m in naive.items() if len(m) < 1000}
    assert sup == expected
    assert ENTITY not in sup and list(sup)[:3] == ["n00001930", "n00002684", "n00003553"]  # physical entity, object, whole
    assert wn.superclasses(wnids, drop_universal=False)[ENTITY] == list(range(1000))
    two = wn.superclasses(wnids, min_classes=2)
    assert two == {a: m for a, m in sup.items() if len(m) >= 2}


JSON = SHARED / "concepts" / "imagenet_superclass_to_ids.json"


@pytest.mark.skipif(not JSON.is_file() or JSON.stat().st_size == 0, reason=f"{JSON} absent or empty")
def test_imagenet_superclasses_match_le_authors_list(wn):
    # The file (LE's released list) is keyed by lower-case name, not by wnid, and merges homonymous
    # synsets ("vessel" = ship-like vessel + container vessel); it keeps 400 of the superclasses. Every
    # one of its member sets must be the union of our superclasses of that name.
    published = json.loads(JSON.read_text())
    assert len(published) == 400
    ours = wn.superclasses(imagenet_wnids(), drop_universal=False)
    by_name = defaultdict(set)
    for a, members in ours.items():
        by_name[wn.name(a).lower()] |= set(members)
    mismatched = [k for k, v in published.items() if by_name.get(k) != set(v)]
    assert mismatched == []


WORDS = SHARED / "tiny-imagenet-200" / "words.txt"


@pytest.mark.skipif(not WORDS.is_file(), reason=f"{WORDS} not found")
def test_lemmas_match_tiny_imagenet_words(wn):
    # words.txt (Tiny-ImageNet) lists every WordNet noun id with its lemmas: an independent source
    words = {}
    for line in WORDS.read_text(encoding="utf-8").splitlines():
        wnid, text = line.split("\t")
        words[wnid] = tuple(t.strip() for t in text.split(","))
    assert set(words) == set(wn.wnids)
    assert [w for w in wn.wnids if words[w] != wn.lemmas(w)] == []

