"""Evaluation of subnets of a trained supernet with inherited weights: validation loss, and
BLEU / chrF of beam search (beam 4, length penalty 0.6 as HAT's test script) and greedy
decoding on the test split.

The same fixed set of architectures is scored for every variant: the largest, the smallest
and ``n`` sampled with a seeded generator (:func:`standard_archs`), so the table compares HAT,
MoS layer-wise and MoS neuron-wise on identical subnets.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from moebench.supernet.bleu import score
from moebench.supernet.data import Corpus, token_batches
from moebench.supernet.decode import DecodeConfig, translate
from moebench.supernet.export import export
from moebench.supernet.model import SuperTransformer
from moebench.supernet.space import Arch, Space
from moebench.supernet.train import valid_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """What is scored and how (``None`` sentences = the whole split)."""

    valid_sentences: Optional[int] = None
    test_sentences: Optional[int] = None
    max_tokens: int = 4096
    beam: int = 4
    lenpen: float = 0.6
    max_len_a: float = 0.0
    max_len_b: int = 200
    greedy: bool = True
    label_smoothing: float = 0.1

    @classmethod
    def from_params(cls, d: Mapping[str, Any], label_smoothing: float = 0.1) -> "EvalConfig":
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in keys}, label_smoothing=label_smoothing)


def standard_archs(space: Space, sampled: int, seed: int) -> dict[str, Arch]:
    """{"largest", "smallest", "sampled_0", ...}: the table's fixed architectures."""
    rng = np.random.default_rng(seed)
    archs = {"largest": space.largest(), "smallest": space.smallest()}
    archs.update({f"sampled_{i}": space.sample(rng) for i in range(sampled)})
    return archs


def _scoring(corpus: Corpus) -> dict[str, Any]:
    """sacrebleu settings: tokenised BLEU with HAT's compound splitting on fairseq data,
    sacrebleu's 13a on detokenised SentencePiece output."""
    if corpus.kind == "fairseq":
        return {"tokenize": "none", "compound_split": True}
    return {"tokenize": "13a", "compound_split": False}


def bleu_of(model, corpus: Corpus, cfg: EvalConfig, decode: DecodeConfig,
            device: torch.device) -> dict[str, Any]:
    """Decode the test split with ``model`` (an exported Transformer) and score it."""
    test = corpus.splits["test"].subset(cfg.test_sentences)
    batches = [b.to(device) for b in token_batches(test, cfg.max_tokens)]
    v = corpus.vocab
    t0 = time.perf_counter()
    hyp_ids = translate(model, batches, v.eos, v.pad, v.bos, decode)
    seconds = time.perf_counter() - t0
    hyps = [v.decode(hyp_ids[i]) for i in range(len(test))]
    refs = corpus.references["test"][:len(test)]
    out = score(hyps, refs, **_scoring(corpus))
    out["decode_seconds"] = round(seconds, 3)
    out["examples"] = [{"hyp": h, "ref": r} for h, r in list(zip(hyps, refs))[:3]]
    return out


def evaluate_arch(supernet: SuperTransformer, arch: Arch, corpus: Corpus, cfg: EvalConfig,
                  device: torch.device) -> dict[str, Any]:
    """Valid loss / NLL (nats per target token), beam and greedy BLEU / chrF of ``arch``."""
    arch = supernet.space.validate(arch)
    valid = [b.to(device) for b in
             token_batches(corpus.splits["valid"].subset(cfg.valid_sentences), cfg.max_tokens)]
    pad, model = supernet.cfg.pad, export(supernet, arch)
    out: dict[str, Any] = {
        "arch": arch,
        "valid_loss": round(valid_loss(supernet, arch, valid, cfg.label_smoothing, pad), 6),
        "valid_nll": round(valid_loss(supernet, arch, valid, cfg.label_smoothing, pad, True), 6),
        "params": sum(p.numel() for p in model.parameters())}
    beam = DecodeConfig(cfg.beam, cfg.lenpen, cfg.max_len_a, cfg.max_len_b)
    out["beam"] = {**bleu_of(model, corpus, cfg, beam, device), "decode": asdict(beam)}
    if cfg.greedy:
        greedy = DecodeConfig(1, 1.0, cfg.max_len_a, cfg.max_len_b)
        out["greedy"] = {**bleu_of(model, corpus, cfg, greedy, device), "decode": asdict(greedy)}
    log.info("%s: valid loss %.4f, BLEU %.2f (beam), chrF %.2f", supernet.cfg.ffn,
             out["valid_loss"], out["beam"]["bleu"], out["beam"]["chrf"])
    return out
