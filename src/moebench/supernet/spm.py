"""Vocabularies: a joint SentencePiece model (the embedded default) and fairseq dictionaries
(HAT's preprocessed WMT data), behind one small interface.

Both use fairseq's special ids, so models and batches do not care which one is in use:
``bos = 0, pad = 1, eos = 2, unk = 3``. A sentence is its ids followed by ``eos``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from moebench.errors import DataError

log = logging.getLogger(__name__)
BOS, PAD, EOS, UNK = 0, 1, 2, 3


class Vocab(Protocol):
    """What batching, decoding and scoring need from a vocabulary."""

    pad: int
    eos: int
    bos: int
    unk: int

    def __len__(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def _strip(ids: Sequence[int]) -> list[int]:
    """Ids up to the first eos, specials (bos / pad / eos) removed."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i not in (BOS, PAD):
            out.append(i)
    return out


class SpmVocab:
    """A SentencePiece model with fairseq's special ids."""

    bos, pad, eos, unk = BOS, PAD, EOS, UNK

    def __init__(self, model_file: str | os.PathLike[str]) -> None:
        import sentencepiece as spm

        if not Path(model_file).is_file():
            raise DataError(f"{model_file}: SentencePiece model missing (run the spm rule)")
        self.model_file = str(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_file)
        if (self.sp.bos_id(), self.sp.pad_id(), self.sp.eos_id(), self.sp.unk_id()) != (
                BOS, PAD, EOS, UNK):
            raise DataError(f"{model_file}: special ids must be bos 0, pad 1, eos 2, unk 3 "
                            f"(train it with moebench.supernet.spm.train_spm)")

    def __len__(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        """Piece ids of ``text`` followed by eos."""
        return list(self.sp.encode(text)) + [EOS]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids + [EOS] for ids in self.sp.encode(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenised text of ``ids`` (stops at the first eos)."""
        return self.sp.decode(_strip(ids))


def train_spm(texts: Iterable[str], model_prefix: str | os.PathLike[str], vocab_size: int,
              model_type: str = "unigram", character_coverage: float = 1.0,
              seed_sentences: int = 1_000_000) -> Path:
    """Train a joint SentencePiece model on ``texts``; writes ``<prefix>.model`` / ``.vocab``
    atomically and returns the model path. Deterministic for the same input (one thread)."""
    import sentencepiece as spm

    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=prefix.parent, prefix=".spm-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(Path(tmp) / "m"), vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage,
                bos_id=BOS, pad_id=PAD, eos_id=EOS, unk_id=UNK, num_threads=1,
                input_sentence_size=seed_sentences, shuffle_input_sentence=False,
                minloglevel=2)
        except RuntimeError as exc:
            raise DataError(f"SentencePiece training failed: {' '.join(str(exc).split())}") from None
        for ext in ("model", "vocab"):
            os.replace(Path(tmp) / f"m.{ext}", f"{prefix}.{ext}")
    log.info("SentencePiece model %s.model (%d pieces)", prefix, vocab_size)
    return Path(f"{prefix}.model")
