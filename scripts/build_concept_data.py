#!/usr/bin/env python
"""Copy the built-in concept lists into ``neurocore/concepts/data/`` and check them.

Sources (a folder laid out as ``shared/data/concepts`` of this project, see PROVENANCE.md there):

=============================  ===================================  ==========================================
source file                    shipped as                           check
=============================  ===================================  ==========================================
``20k.txt``                    ``20k.txt`` (verbatim)               20,000 non-blank lines
``LICENSE-20k.md``             quoted in ``PROVENANCE.md``          —
``imagenet_labels.txt``        ``imagenet_classes.txt`` (verbatim)  1000 lines; line i's first synonym is a
                                                                    lemma of WordNet synset ``wnid[i]``
``broden_labels_clean.txt``    ``broden.txt`` (verbatim)            non-empty
``categories_places365.txt``   ``categories_places365.txt``         365 lines ``/x/path index``, index = line
(verbatim)
ImageNet image file names      ``imagenet_wnids.txt``               1000 distinct ``nXXXXXXXX`` ids, sorted
=============================  ===================================  ==========================================

The 1000 ImageNet wnids are the sorted distinct ``nXXXXXXXX`` prefixes of the file names in an
ImageNet folder with one image (or more) per class (``shared/data/imagenet-samples``); the standard
class index of a wnid is its position in that sorted list. Only the ids are written, never an image.

Run ``scripts/build_wordnet_data.py`` first: the ImageNet check reads the WordNet table.

Usage::

    python scripts/build_concept_data.py [--concepts ../shared/data/concepts]
                                         [--imagenet-samples ../shared/data/imagenet-samples]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "neurocore" / "concepts" / "data"
SHARED = ROOT.parent / "shared" / "data"

COPIES = {
    "20k.txt": "20k.txt",
    "imagenet_labels.txt": "imagenet_classes.txt",
    "broden_labels_clean.txt": "broden.txt",
    "categories_places365.txt": "categories_places365.txt",
}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def imagenet_wnids_from_folder(folder: Path) -> list[str]:
    ids = sorted({m.group(0) for p in folder.iterdir() if (m := re.match(r"n\d{8}", p.name))})
    if len(ids) != 1000:
        raise SystemExit(f"{folder}: expected file names of 1000 ImageNet classes (nXXXXXXXX_...); found {len(ids)}")
    return ids


def check_imagenet(wnids: list[str], classes: list[str]) -> None:
    table = OUT / "wordnet_nouns.tsv.gz"
    if not table.is_file():
        raise SystemExit(f"{table} is missing: run scripts/build_wordnet_data.py first")
    lemmas = {}
    with gzip.open(table, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                wnid, names = line.split("\t", 2)[:2]
                lemmas[wnid] = {n.lower() for n in names.split("|")}
    missing = [w for w in wnids if w not in lemmas]
    if missing:
        raise SystemExit(f"ImageNet wnids missing from WordNet: {missing[:5]}")
    # The class strings and the sorted wnids are independent sources: agreeing on all 1000 first
    # synonyms shows that line i of the labels file is the class of the i-th sorted wnid.
    off = [(i, w, c) for i, (w, c) in enumerate(zip(wnids, classes)) if c.split(",")[0].strip().lower() not in lemmas[w]]
    if off:
        raise SystemExit(f"{len(off)} ImageNet class strings are not lemmas of their wnid, e.g. {off[:3]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", type=Path, default=SHARED / "concepts")
    parser.add_argument("--imagenet-samples", type=Path, default=SHARED / "imagenet-samples")
    args = parser.parse_args(argv)
    for src in COPIES:
        if not (args.concepts / src).is_file():
            raise SystemExit(f"{args.concepts / src} not found (pass --concepts)")
    words = _lines(args.concepts / "20k.txt")
    if len(words) != 20000 or any(not w.strip() for w in words):
        raise SystemExit("20k.txt: expected 20,000 non-blank lines")
    classes = _lines(args.concepts / "imagenet_labels.txt")
    if len(classes) != 1000:
        raise SystemExit(f"imagenet_labels.txt: expected 1000 lines, found {len(classes)}")
    places = _lines(args.concepts / "categories_places365.txt")
    for i, line in enumerate(places):
        if not re.fullmatch(rf"/[a-z]/[a-z0-9_/\-]+ {i}", line):
            raise SystemExit(f"categories_places365.txt line {i + 1}: expected '/x/name {i}', got {line!r}")
    if len(places) != 365:
        raise SystemExit(f"categories_places365.txt: expected 365 lines, found {len(places)}")
    if not _lines(args.concepts / "broden_labels_clean.txt"):
        raise SystemExit("broden_labels_clean.txt is empty")
    wnids = imagenet_wnids_from_folder(args.imagenet_samples)
    check_imagenet(wnids, classes)

    OUT.mkdir(parents=True, exist_ok=True)
    for src, dst in COPIES.items():
        shutil.copyfile(args.concepts / src, OUT / dst)
    (OUT / "imagenet_wnids.txt").write_text("\n".join(wnids) + "\n", encoding="utf-8")
    for name in [*COPIES.values(), "imagenet_wnids.txt"]:
        digest = hashlib.sha256((OUT / name).read_bytes()).hexdigest()
        print(f"{name:28s} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
