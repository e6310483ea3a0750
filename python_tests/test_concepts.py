"""Concept sets: load_concepts on built-ins, files and sequences; ImageNet names and wnids; shipped data."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import pytest

from neurocore._errors import NeurocoreError
from neurocore.concepts import (
    builtin_concept_sets,
    imagenet_class_names,
    imagenet_wnids,
    load_concepts,
    wordnet_hierarchy,
)
from neurocore.concepts._sets import DATA_DIR

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONCEPTS = SHARED / "concepts"


# --- user sources --------------------------------------------------------------------------------


def test_sequence_strips_drops_blanks_and_keeps_order():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no repeats here: no warning
        assert load_concepts(["  dog", "cat ", "", "   ", "sky"]) == ["dog", "cat", "sky"]
    assert load_concepts(("a",)) == ["a"]


def test_duplicates_keep_first_occurrence_and_warn_with_count():
    with pytest.warns(UserWarning, match="repeats 3 name"):
        out = load_concepts(["b", "a", "b", " a", "c", "b"])
    assert out == ["b", "a", "c"]


def test_file_blank_lines_do_not_shift_concepts(tmp_path):
    # The authors' loader kept blank lines as concepts, shifting every later index; ours drops them.
    f = tmp_path / "c.txt"
    f.write_text("dog\n\ncat\n  \nbird\n", encoding="utf-8")
    assert load_concepts(str(f)) == ["dog", "cat", "bird"]
    assert load_concepts(f) == ["dog", "cat", "bird"]  # os.PathLike


def test_file_with_bom_and_crlf(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes("\ufeffdog\r\ncat\r\n".encode("utf-8"))
    assert load_concepts(f) == ["dog", "cat"]


def test_file_duplicates_warn(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("x\ny\nx\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="in file .* repeats 1 name"):
        assert load_concepts(f) == ["x", "y"]


@pytest.mark.parametrize("source", [[], ["", "  "], ("\n",)])
def test_empty_sequence_errors(source):
    with pytest.raises(NeurocoreError, match="the concept set .* is empty"):
        load_concepts(source)


def test_empty_file_errors(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(NeurocoreError, match="the concept set in file .* is empty"):
        load_concepts(f)


def test_unknown_name_lists_builtins_and_mentions_files():
    with pytest.raises(NeurocoreError, match=r"unknown concept set '20K'.*did you mean '20k'.*20k, imagenet, broden, places365, wordnet_nouns.*path to a text file"):
        load_concepts("20K")


def test_bad_inputs(tmp_path):
    with pytest.raises(NeurocoreError, match="concept 1 is a int"):
        load_concepts(["a", 3])
    with pytest.raises(NeurocoreError, match="is a folder"):
        load_concepts(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(NeurocoreError, match="cannot read concept file"):
        load_concepts(bad)
    with pytest.raises(NeurocoreError, match="got int"):
        load_concepts(5)
    with pytest.raises(NeurocoreError, match="got bytes"):
        load_concepts(b"dog")


def test_builtin_name_wins_over_file_of_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "20k").write_text("only\n", encoding="utf-8")
    assert len(load_concepts("20k")) == 20000
    assert load_concepts("./20k") == ["only"]


def test_result_is_a_fresh_list():
    a = load_concepts("imagenet")
    a[0] = "changed"
    assert load_concepts("imagenet")[0] == "tench"


# --- built-in sets -------------------------------------------------------------------------------


def test_builtin_sets_load_without_warnings_and_are_clean():
    assert builtin_concept_sets() == ["20k", "imagenet", "broden", "places365", "wordnet_nouns"]
    sizes = {"20k": 20000, "imagenet": 1000, "broden": 1153, "places365": 365, "wordnet_nouns": 67893}
    for name in builtin_concept_sets():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            concepts = load_concepts(name)
        assert len(concepts) == sizes[name], name
        assert len(set(concepts)) == len(concepts), name
        assert all(c == c.strip() and c for c in concepts), name


def test_imagenet_names_and_wnids():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and list(wnids) == sorted(set(wnids))
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    full = imagenet_class_names(full=True)
    short = imagenet_class_names()
    assert len(full) == len(short) == 1000 and len(set(short)) == 1000
    assert load_concepts("imagenet") == list(short)
    assert short[:3] == ("tench", "goldfish", "great white shark")
    assert full[0] == "tench, Tinca tinca"
    # short name = first synonym, or the full string where the first synonym is shared
    firsts = [s.split(",")[0].strip() for s in full]
    for f, s, fu in zip(firsts, short, full):
        assert s == (f if firsts.count(f) == 1 else fu)
    assert (short[134], short[517], short[638], short[639]) == ("crane, bird", "crane, machine", "maillot", "maillot, tank suit")
    # two independent sources agree: class i's first synonym is a lemma of wnid i
    wn = wordnet_hierarchy()
    assert all(f.lower() in {lem.lower() for lem in wn.lemmas(w)} for f, w in zip(firsts, wnids))


def test_places365_names():
    names = load_concepts("places365")
    raw = (DATA_DIR / "categories_places365.txt").read_text(encoding="utf-8").splitlines()
    assert names[0] == "airfield" and raw[0] == "/a/airfield 0"
    assert names[8] == "apartment building outdoor" and raw[8] == "/a/apartment_building/outdoor 8"
    assert names[-1] == "zen garden"
    for i, (line, name) in enumerate(zip(raw, names)):
        path, index = line.split(" ")
        assert int(index) == i
        assert name == " ".join(path.split("/")[2:]).replace("_", " ")


def test_wordnet_nouns_are_distinct_first_lemmas_in_offset_order():
    wn = wordnet_hierarchy()
    firsts = [wn.name(w) for w in wn.wnids]
    assert len(firsts) == 82115
    assert load_concepts("wordnet_nouns") == list(dict.fromkeys(firsts))
    assert all("_" not in n for n in firsts)


def test_provenance_digests_match_shipped_files():
    text = (DATA_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M))
    assert set(listed) == {"20k.txt", "imagenet_classes.txt", "imagenet_wnids.txt", "broden.txt",
                           "categories_places365.txt", "wordnet_nouns.tsv.gz"}
    for name, digest in listed.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name
    assert "Educational and personal/research use" in text  # the 20k terms travel with the data
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in (DATA_DIR / "WORDNET_LICENSE.txt").read_text()


def test_shipped_data_is_compact():
    assert sum(p.stat().st_size for p in DATA_DIR.iterdir()) < 3_000_000


# --- real data -----------------------------------------------------------------------------------


@pytest.mark.skipif(not CONCEPTS.is_dir(), reason=f"shared concept lists not found at {CONCEPTS}")
def test_shipped_lists_are_the_shared_sources():
    pairs = {"20k.txt": "20k.txt", "imagenet_labels.txt": "imagenet_classes.txt",
             "broden_labels_clean.txt": "broden.txt", "categories_places365.txt": "categories_places365.txt"}
    for src, dst in pairs.items():
        assert (CONCEPTS / src).read_bytes() == (DATA_DIR / dst).read_bytes(), src


@pytest.mark.skipif(not (SHARED / "imagenet-samples").is_dir(), reason="shared/data/imagenet-samples not found")
def test_imagenet_wnids_match_sample_file_names():
    files = [p.name for p in (SHARED / "imagenet-samples").iterdir()]
    assert imagenet_wnids() == tuple(sorted({f.split("_")[0] for f in files}))
    # and the class names line up with the file names' own names ("n01440764_tench.JPEG")
    by_wnid = {f.split("_")[0]: f.split("_", 1)[1].rsplit(".", 1)[0].replace("_", " ") for f in files}
    agree = sum(by_wnid[w].lower() == n.split(",")[0].lower() for w, n in zip(imagenet_wnids(), imagenet_class_names()))
    assert agree >= 995, agree  # measured 1000
