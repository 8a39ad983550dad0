"""Embedded GLUE-like tasks built from real offline text (Debian corpora, see corpora.py).

``fortunes_topic`` (single sentence, like SST/CoLA in form): short fortune-cookie texts,
labelled by the topic file they are filed in (computers, love, politics, ...). The labels
are real: the fortune-mod curators filed each text under its topic.

``ding_paraphrase`` (sentence pairs, like MRPC): the Ding dictionary gives, for one German
entry, several English alternatives separated by ``;`` ("It looks like rain.; It looks as if
it's going to rain."): two sentence alternatives of the same slot form a real paraphrase
pair (label 1). Negatives are built: sentence a paired with the most TF-IDF-similar sentence
of another entry of the same split (label 0), so that word overlap alone does not separate
the classes (random negatives are solved at ~0.95 by sentence embeddings). Entries, not
pairs, are split between train and validation.
"""
from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from moebench.errors import DataError
from moebench.fetch import sha256_file
from moebench.glue.taskdata import Example

log = logging.getLogger(__name__)
_ATTRIBUTION = re.compile(r"^\s*(--|—)\s")
_TAGS = re.compile(r"\{[^}]*\}|\[[^\]]*\]|/[^/]*/")
_PLACEHOLDER = re.compile(r"\b(sth|sb|sbd|etw|jdm|jdn)\b\.?", re.IGNORECASE)


def files_digest(paths: Sequence[Path]) -> str:
    """sha256 over the (name, sha256) lines of the files read."""
    import hashlib

    lines = "".join(f"{p.name} {sha256_file(p)}\n" for p in sorted(paths))
    return hashlib.sha256(lines.encode()).hexdigest()


def fortune_texts(path: Path) -> list[str]:
    """Records of a fortune file (separated by lines of ``%``), attribution lines dropped,
    whitespace collapsed."""
    records, current = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() == "%":
            records.append(current)
            current = []
        elif not _ATTRIBUTION.match(line):
            current.append(line)
    records.append(current)
    return [t for t in (" ".join(" ".join(r).split()) for r in records) if t]


def _stratified(labels: np.ndarray, fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """Boolean [N]: validation membership, ``fraction`` of every class (at least one)."""
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val[idx[:max(1, int(round(fraction * len(idx))))]] = True
    return val


def fortunes_topic(root: Path, topics: Sequence[str], min_words: int, max_words: int,
                   per_topic: int, validation_fraction: float, seed: int
                   ) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """(splits, meta) of the topic task: texts of ``min_words``-``max_words`` words, at most
    ``per_topic`` per topic (seeded sample), texts filed under two topics dropped."""
    if len(topics) < 2:
        raise DataError("fortunes_topic needs at least two topics")
    paths = [root / t for t in topics]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"fortune topic file {missing[0]} not found")
    texts = {t: [x for x in dict.fromkeys(fortune_texts(p))
                 if min_words <= len(x.split()) <= max_words] for t, p in zip(topics, paths)}
    counts = Counter(x for xs in texts.values() for x in xs)
    twice = {x for x, n in counts.items() if n > 1}
    rng = np.random.RandomState(seed)
    rows: list[Example] = []
    for label, topic in enumerate(topics):
        pool = [x for x in texts[topic] if x not in twice]
        if not pool:
            raise DataError(f"fortune topic {topic!r} has no text of {min_words}-{max_words} words")
        pick = rng.permutation(len(pool))[:per_topic]
        rows += [{"sentence": pool[i], "label": label} for i in sorted(pick)]
    val = _stratified(np.array([r["label"] for r in rows]), validation_fraction, rng)
    splits = {"train": [r for r, v in zip(rows, val) if not v],
              "validation": [r for r, v in zip(rows, val) if v]}
    meta = {"num_labels": len(topics), "label_names": list(topics),
            "corpus_digest": files_digest(paths)}
    return splits, meta


def ding_alternatives(line: str, min_words: int, max_words: int) -> list[list[str]]:
    """The English sentence alternatives of each slot of one Ding line (slots with >= 2)."""
    if "::" not in line or line.startswith("#"):
        return []
    out = []
    for slot in line.split("::", 1)[1].split("|"):
        alts = []
        for alt in slot.split(";"):
            alt = " ".join(_TAGS.sub(" ", alt).split())
            n = len(alt.split())
            if (alt[-1:] in ".!?" and min_words <= n <= max_words and "(" not in alt
                    and not _PLACEHOLDER.search(alt) and alt.lower() not in
                    {a.lower() for a in alts}):
                alts.append(alt)
        if len(alts) >= 2:
            out.append(alts)
    return out


def _hard_negatives(groups: list[list[str]], pairs: list[tuple[int, str, str]]
                    ) -> list[tuple[str, str]]:
    """For each positive (g, a, b): (a, c) with c the sentence of another group most
    TF-IDF-similar to a (identical texts excluded)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    pool = [(g, s) for g, alts in enumerate(groups) for s in alts]
    owner = np.array([g for g, _ in pool])
    vec = TfidfVectorizer(ngram_range=(1, 2), lowercase=True, sublinear_tf=True)
    pool_x = vec.fit_transform([s for _, s in pool])
    query_x = vec.transform([a for _, a, _ in pairs])
    sims = (query_x @ pool_x.T).toarray()
    out = []
    for i, (g, a, _) in enumerate(pairs):
        row = sims[i]
        row[owner == g] = -1.0
        for j in np.argsort(-row):
            if pool[j][1].lower() != a.lower():
                out.append((a, pool[j][1]))
                break
    return out


def ding_paraphrase(path: Path, min_words: int, max_words: int, max_pairs_per_entry: int,
                    max_entries: int, validation_fraction: float, seed: int
                    ) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """(splits, meta) of the paraphrase task (see the module docstring)."""
    groups = [alts for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
              for alts in ding_alternatives(line, min_words, max_words)]
    if len(groups) < 10:
        raise DataError(f"{path}: only {len(groups)} entries with sentence alternatives "
                        f"(is it the Ding de-en dictionary?)")
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(groups))[:max_entries]
    n_val = max(1, int(round(validation_fraction * len(order))))
    splits = {}
    for split, idx in (("validation", order[:n_val]), ("train", order[n_val:])):
        chosen = [groups[i] for i in sorted(idx)]
        pairs = [(g, a, b) for g, alts in enumerate(chosen)
                 for a, b in list(itertools.combinations(alts, 2))[:max_pairs_per_entry]]
        negatives = _hard_negatives(chosen, pairs)
        rows = [{"sentence1": a, "sentence2": b, "label": 1} for _, a, b in pairs]
        rows += [{"sentence1": a, "sentence2": c, "label": 0} for a, c in negatives]
        splits[split] = [rows[i] for i in rng.permutation(len(rows))]
    meta = {"num_labels": 2, "label_names": ["not_paraphrase", "paraphrase"],
            "corpus_digest": sha256_file(path), "entries": len(groups)}
    return splits, meta


def build_embedded(task: str, corpus: Path, build: Mapping[str, Any]
                   ) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """Dispatch on the task name with its ``build`` params."""
    builders = {"fortunes_topic": fortunes_topic, "ding_paraphrase": ding_paraphrase}
    if task not in builders:
        raise DataError(f"no embedded builder for task {task!r}")
    try:
        return builders[task](corpus, **build)
    except TypeError as exc:
        raise DataError(f"glue.data.{task}.build: {exc}") from None
