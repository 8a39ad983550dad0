"""The embedded default corpus: English -> German sentence pairs of the Ding dictionary.

The Ding German-English dictionary (Frank Richter, TU Chemnitz; GPL-2+) is one line per
entry, ``de1 | de2 ... :: en1 | en2 ...``: ``|`` aligns sub-entries, ``;`` separates
synonyms, ``{m}`` / ``[coll.]`` are tags. We take the first synonym of every aligned slot,
strip the tags, and keep the pairs whose both sides end in ``.`` / ``!`` / ``?`` with at least
four German words and no ``sth.`` / ``sb.`` / ``etw.`` / ``jdn.`` placeholders: real example
sentences such as "It looks like rain." -> "Es sieht nach Regen aus." (18,899 unique pairs in
Debian's trans-de-en 1.9-6).

The split is deterministic and independent of the file's line order: source sentences are
ordered by the md5 of their text; the first ``valid_size`` go to valid, the next
``test_size`` to test, the rest to train (pairs sharing a source stay together).

The file comes from Debian's ``trans-de-en`` (``/usr/share/trans/de-en``) or, where that is
absent, from a download URL with a checksum in params. Derived files are GPL-2+ like the
dictionary: they are built by the workflow, never committed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Iterable, Optional

from moebench.errors import DataError
from moebench.io import atomic_write_json, atomic_write_text
from moebench.fetch import download, sha256_file as sha256_of

log = logging.getLogger(__name__)

DEBIAN_PATH = "/usr/share/trans/de-en"
TAG = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
PLACEHOLDER = re.compile(r"\b(sth|sb|etw|jdn|jdm|jds|jd)\.", re.IGNORECASE)
SPLITS = ("train", "valid", "test")
LANGS = ("en", "de")


def _clean(text: str) -> str:
    first = text.split("; ")[0]
    return " ".join(TAG.sub("", first).split())


def _sentence_pair(de: str, en: str) -> Optional[tuple[str, str]]:
    d, e = _clean(de), _clean(en)
    if not d or not e or d[-1] not in ".!?" or e[-1] not in ".!?":
        return None
    if len(d.split()) < 4 or PLACEHOLDER.search(d) or PLACEHOLDER.search(e):
        return None
    return e, d


def parse_ding(lines: Iterable[str], where: str = "ding") -> list[tuple[str, str]]:
    """The unique (english, german) sentence pairs of Ding lines, sorted."""
    pairs: set[tuple[str, str]] = set()
    entries = 0
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        entries += 1
        de, en = line.rstrip("\n").split(" :: ", 1)
        ds, es = de.split(" | "), en.split(" | ")
        if len(ds) != len(es):
            continue
        for d, e in zip(ds, es):
            pair = _sentence_pair(d, e)
            if pair is not None:
                pairs.add(pair)
    if not entries:
        raise DataError(f"{where}: no dictionary entries ('de :: en' lines) found")
    return sorted(pairs)


def split_pairs(pairs: list[tuple[str, str]], valid_size: int,
                test_size: int) -> dict[str, list[tuple[str, str]]]:
    """{train, valid, test}: sources ordered by md5, valid first, then test, then train."""
    sources = sorted({e for e, _ in pairs},
                     key=lambda s: (hashlib.md5(s.encode("utf-8")).hexdigest(), s))
    if valid_size + test_size >= len(sources):
        raise DataError(f"the corpus has {len(sources)} distinct sources, too few for "
                        f"valid_size {valid_size} + test_size {test_size} and a train split")
    where = {s: ("valid" if i < valid_size else "test" if i < valid_size + test_size
                 else "train") for i, s in enumerate(sources)}
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for e, d in sorted(pairs):
        out[where[e]].append((e, d))
    return out


def locate_ding(path: Optional[str], url: Optional[str], sha256: Optional[str],
                cache: Path) -> tuple[Path, str]:
    """(file, sha256): ``path`` when it exists (Debian's), else the download of ``url``
    into ``cache`` (checked against ``sha256`` when set)."""
    if path and Path(path).is_file():
        return Path(path), sha256_of(path)
    if not url:
        raise DataError(f"the Ding dictionary is not at {path!r} (install Debian's trans-de-en) "
                        f"and no download url is configured (supernet.data.ding.url)")
    log.info("%s not found; downloading %s", path, url)
    name = url.rstrip("/").split("/")[-1].split("?")[0] or "de-en"
    target = cache / name
    digest = download(url, target, sha256=sha256)
    if name.endswith(".gz"):
        import gzip

        text = gzip.decompress(target.read_bytes()).decode("utf-8")
        plain = cache / name[:-3]
        atomic_write_text(plain, text)
        return plain, digest
    return target, digest


def build_ding(out_dir: str | Path, path: Optional[str], url: Optional[str],
               sha256: Optional[str], valid_size: int, test_size: int) -> dict:
    """Write ``{split}.en`` / ``{split}.de`` (one sentence a line) and ``corpus.json`` (sizes,
    source file and its sha256) under ``out_dir``; returns the manifest."""
    out = Path(out_dir)
    src, digest = locate_ding(path, url, sha256, out / ".download")
    with open(src, encoding="utf-8") as fh:
        pairs = parse_ding(fh, str(src))
    splits = split_pairs(pairs, valid_size, test_size)
    for split, rows in splits.items():
        for k, lang in enumerate(LANGS):
            atomic_write_text(out / f"{split}.{lang}", "".join(r[k] + "\n" for r in rows))
    manifest = {"corpus": "ding", "source": str(src), "sha256": digest, "pairs": len(pairs),
                "sizes": {s: len(r) for s, r in splits.items()}, "src_lang": "en",
                "tgt_lang": "de", "license": "GPL-2+ (Ding, Frank Richter, TU Chemnitz)"}
    atomic_write_json(out / "corpus.json", manifest)
    log.info("Ding corpus: %d pairs (%s)", len(pairs), json.dumps(manifest["sizes"]))
    return manifest


def read_split(data_dir: str | Path, split: str) -> tuple[list[str], list[str]]:
    """(english lines, german lines) of one split written by :func:`build_ding`."""
    d = Path(data_dir)
    try:
        en = (d / f"{split}.en").read_text(encoding="utf-8").splitlines()
        de = (d / f"{split}.de").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: missing (run the supernet data rule)") from None
    if len(en) != len(de):
        raise DataError(f"{d}: {split}.en has {len(en)} lines but {split}.de has {len(de)}")
    return en, de
