#!/usr/bin/env python
"""Build neurocore's compact WordNet 3.0 noun table from the WordNet database files.

Reads ``data.noun`` (the WordNet 3.0 noun database, format in ``wndb(5WN)``) and writes
``neurocore/concepts/data/wordnet_nouns.tsv.gz``: one line per noun synset, tab-separated::

    wnid        lemmas (|-separated, underscores as spaces)    hypernyms    instance_hypernyms
    n02084071   dog|domestic dog|Canis familiaris              n02083346 n01317541

``wnid`` is ``"n"`` + the 8-digit synset offset (the ImageNet id convention). ``hypernyms`` are the
``@`` pointers, ``instance_hypernyms`` the ``@i`` pointers (space-separated wnids, file order; either
may be empty). Both are kept because an instance ("Einstein") has only an instance hypernym
("physicist"): without them ~7,700 synsets would be cut off from ``entity``. Lines starting with
``#`` are comments (the source and its digest). The gzip header carries no time stamp, so re-running
the script on the same database gives the same bytes.

The WordNet licence notice (which must accompany every copy) is copied from the database's header
into ``WORDNET_LICENSE.txt`` next to the table.

Usage::

    python scripts/build_wordnet_data.py [--wordnet-dir /usr/share/wordnet] [--out neurocore/concepts/data]

Debian/Ubuntu: ``apt-get install wordnet-base`` puts the database in ``/usr/share/wordnet``. Any
WordNet 3.0 ``dict/`` folder works (the Princeton tarball's ``WordNet-3.0/dict``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "neurocore" / "concepts" / "data"
ENTITY = "n00001740"  # entity.n.01, the root of the noun hierarchy


def parse_data_noun(text: str) -> tuple[list[tuple[str, list[str], list[str], list[str]]], list[str]]:
    """Parse ``data.noun``: returns ``(synsets, licence_lines)``.

    Each synset is ``(wnid, lemmas, hypernyms, instance_hypernyms)``. Format (wndb(5WN)):
    ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [ptr ...] | gloss`` with
    ``w_cnt`` two hex digits, ``p_cnt`` three decimal digits and each pointer
    ``symbol offset pos source/target``. Header lines start with two spaces and a line number.
    """
    synsets = []
    licence = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.startswith("  "):
            # "  1 This software and database ..." -> drop the line number, keep the text
            parts = line.strip().split(" ", 1)
            licence.append(parts[1].rstrip() if len(parts) > 1 else "")
            continue
        if not line.strip():
            continue
        fields = line.split(" | ", 1)[0].split()
        try:
            offset, _lex_filenum, ss_type, w_cnt = fields[0], fields[1], fields[2], int(fields[3], 16)
            if ss_type != "n" or len(offset) != 8 or not offset.isdigit():
                raise ValueError(f"not a noun synset line (ss_type {ss_type!r}, offset {offset!r})")
            words = fields[4 : 4 + 2 * w_cnt : 2]
            pos = 4 + 2 * w_cnt
            p_cnt = int(fields[pos])
            pointers = fields[pos + 1 : pos + 1 + 4 * p_cnt]
            if len(words) != w_cnt or len(pointers) != 4 * p_cnt:
                raise ValueError("line shorter than its word/pointer counts")
        except (IndexError, ValueError) as exc:
            raise SystemExit(f"data.noun line {line_no}: cannot parse ({exc}): {line[:120]!r}") from None
        hyper, inst = [], []
        for i in range(0, len(pointers), 4):
            symbol, target, target_pos = pointers[i], pointers[i + 1], pointers[i + 2]
            if target_pos != "n":
                continue
            if symbol == "@":
                hyper.append("n" + target)
            elif symbol == "@i":
                inst.append("n" + target)
        lemmas = [w.replace("_", " ") for w in words]
        synsets.append(("n" + offset, lemmas, hyper, inst))
    return synsets, licence


def check(synsets) -> None:
    """Consistency checks: unique ids, every pointer resolves, every synset reaches entity.n.01."""
    ids = {s[0] for s in synsets}
    if len(ids) != len(synsets):
        raise SystemExit("duplicate synset offsets in data.noun")
    parents = {}
    for wnid, lemmas, hyper, inst in synsets:
        for p in hyper + inst:
            if p not in ids:
                raise SystemExit(f"{wnid} points to missing synset {p}")
        if any("|" in lem or "\t" in lem for lem in lemmas):
            raise SystemExit(f"{wnid}: a lemma contains the separator '|' or a tab: {lemmas}")
        parents[wnid] = hyper + inst
    reaches: dict[str, bool] = {ENTITY: True}

    def reaches_root(w: str) -> bool:
        stack, seen = [w], set()
        while stack:
            x = stack.pop()
            if reaches.get(x) or x == ENTITY:
                return True
            if x in seen:
                continue
            seen.add(x)
            stack.extend(parents[x])
        return False

    cut_off = [w for w in parents if not reaches_root(w)]
    if cut_off:
        raise SystemExit(f"{len(cut_off)} synsets do not reach entity.n.01, e.g. {cut_off[:5]}")


def write_table(synsets, digest: str, out: Path) -> bytes:
    buf = io.StringIO()
    buf.write("# WordNet 3.0 noun synsets: generated by scripts/build_wordnet_data.py\n")
    buf.write(f"# source: data.noun, sha256 {digest}; licence: WORDNET_LICENSE.txt\n")
    buf.write("# wnid\tlemmas\thypernyms\tinstance_hypernyms\n")
    for wnid, lemmas, hyper, inst in synsets:
        buf.write(f"{wnid}\t{'|'.join(lemmas)}\t{' '.join(hyper)}\t{' '.join(inst)}\n")
    raw = buf.getvalue().encode("utf-8")
    # mtime=0 and no file name in the header: the same input gives the same bytes
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"),
                        help="folder holding WordNet 3.0's data.noun (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    source = args.wordnet_dir / "data.noun"
    if not source.is_file():
        raise SystemExit(f"{source} not found: install WordNet 3.0 (Debian: apt-get install wordnet-base) "
                         "or pass --wordnet-dir")
    blob = source.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    # CRLF copies exist (e.g. some PyPI redistributions); offsets are byte positions in the LF file,
    # but we only read the offsets written in each line, so normalising line ends is safe here.
    synsets, licence = parse_data_noun(blob.decode("utf-8").replace("\r\n", "\n"))
    if not licence or "WordNet 3.0 Copyright" not in "\n".join(licence):
        raise SystemExit(f"{source} has no WordNet 3.0 licence header; is it WordNet 3.0?")
    check(synsets)
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_table(synsets, digest, args.out / "wordnet_nouns.tsv.gz")
    notice = (
        "The file wordnet_nouns.tsv.gz is derived from WordNet 3.0 (noun synsets, lemmas and hypernym\n"
        "pointers of data.noun) by scripts/build_wordnet_data.py. WordNet's licence follows.\n\n"
        + "\n".join(licence).strip() + "\n"
    )
    (args.out / "WORDNET_LICENSE.txt").write_text(notice, encoding="utf-8")
    n_inst = sum(1 for s in synsets if s[3])
    print(f"wrote {args.out / 'wordnet_nouns.tsv.gz'}: {len(synsets)} noun synsets "
          f"({n_inst} with instance hypernyms), {len(data) / 1e6:.2f} MB; source sha256 {digest[:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
