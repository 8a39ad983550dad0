"""BLEU and chrF with sacrebleu, signatures included.

``tokenize`` is sacrebleu's tokenizer: ``13a`` (its default) for detokenised text such as
SentencePiece output; ``none`` for HAT's "normal" tokenised BLEU on fairseq output, after
HAT's compound splitting (``a-b`` -> ``a ##AT##-##AT## b``, :func:`split_compounds`).
"""
from __future__ import annotations

import re
from typing import Sequence

from moebench.errors import DataError

COMPOUND = re.compile(r"(\S)-(\S)")


def split_compounds(line: str) -> str:
    """HAT's test.sh: ``perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'``."""
    return COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def score(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a",
          compound_split: bool = False) -> dict:
    """Corpus BLEU and chrF of ``hypotheses`` against one reference each.

    Returns ``{"bleu", "chrf", "bleu_signature", "chrf_signature", "sentences"}``.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise DataError("no sentences to score")
    hyps, refs = list(hypotheses), list(references)
    if compound_split:
        hyps, refs = [split_compounds(h) for h in hyps], [split_compounds(r) for r in refs]
    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {"bleu": round(float(b.score), 4), "chrf": round(float(c.score), 4),
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "sentences": len(refs)}
