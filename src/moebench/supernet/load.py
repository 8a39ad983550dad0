"""Load a corpus of either kind: the Ding text splits with their SentencePiece model, or
HAT's preprocessed binary WMT data (kept apart from ``data``, which ``wmt`` builds on)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from moebench.errors import DataError
from moebench.supernet.data import Corpus, encode_texts
from moebench.supernet.spm import SpmVocab


def load_corpus(kind: str, data_dir: str | Path, spm_model: Optional[str] = None,
                src_lang: str = "en", tgt_lang: str = "de") -> Corpus:
    """``kind`` "ding" (text splits + SentencePiece model) or "fairseq" (HAT's preprocessed
    binary WMT data)."""
    if kind == "ding":
        from moebench.supernet.corpus import SPLITS, read_split

        if spm_model is None:
            raise DataError("the ding corpus needs a SentencePiece model (--spm-model)")
        vocab = SpmVocab(spm_model)
        splits, refs = {}, {}
        for split in SPLITS:
            en, de = read_split(data_dir, split)
            splits[split] = encode_texts(vocab, en, de)
            refs[split] = de
        return Corpus(vocab, splits, refs, kind)
    if kind == "fairseq":
        from moebench.supernet.wmt import load_fairseq

        return load_fairseq(data_dir, src_lang, tgt_lang)
    raise DataError(f"unknown corpus kind {kind!r}; valid: ding, fairseq")
