"""Parallel data as token ids, and fairseq-style token-based batches.

A :class:`Parallel` split holds one id array per sentence (each ending with eos) for source
and target. :func:`token_batches` orders sentences by length (source, then target, ties
broken by a seeded permutation), packs them so that ``sentences x longest side <=
max_tokens`` (fairseq's ``batch_by_size``) and shuffles the batches with the epoch's seed.
Padding is on the right (positions count from the first token of both sides); the decoder
input is the target shifted right behind eos, as in fairseq.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from moebench.errors import DataError
from moebench.supernet.spm import EOS, PAD, Vocab


@dataclass
class Parallel:
    """One split: ``src[i]`` / ``tgt[i]`` are int64 id arrays ending with eos."""

    src: list[np.ndarray]
    tgt: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.src)

    def target_tokens(self) -> int:
        return int(sum(len(t) for t in self.tgt))

    def filter_length(self, max_len: int) -> "Parallel":
        """Pairs whose both sides have at most ``max_len`` tokens (fairseq drops longer
        training pairs)."""
        keep = [i for i in range(len(self)) if len(self.src[i]) <= max_len
                and len(self.tgt[i]) <= max_len]
        return Parallel([self.src[i] for i in keep], [self.tgt[i] for i in keep])

    def subset(self, n: Optional[int]) -> "Parallel":
        """The first ``n`` pairs (all when n is None)."""
        return self if n is None else Parallel(self.src[:n], self.tgt[:n])


@dataclass
class Batch:
    """src [B, S], prev (decoder input) [B, T], target [B, T]; ``index`` = sentence ids."""

    src: Tensor
    prev: Tensor
    target: Tensor
    index: Tensor
    ntokens: int

    def to(self, device) -> "Batch":
        return Batch(self.src.to(device), self.prev.to(device), self.target.to(device),
                     self.index, self.ntokens)


def _pad(rows: Sequence[np.ndarray], width: int) -> Tensor:
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


def collate(data: Parallel, index: Sequence[int]) -> Batch:
    """The batch of sentences ``index``."""
    src = [data.src[i] for i in index]
    tgt = [data.tgt[i] for i in index]
    prev = [np.concatenate([[EOS], t[:-1]]) for t in tgt]
    width_t = max(len(t) for t in tgt)
    return Batch(_pad(src, max(len(s) for s in src)), _pad(prev, width_t), _pad(tgt, width_t),
                 torch.as_tensor(list(index)), int(sum(len(t) for t in tgt)))


def batch_indices(data: Parallel, max_tokens: int, seed: Optional[int] = None,
                  max_sentences: Optional[int] = None) -> list[list[int]]:
    """Sentence ids grouped so that ``len(group) * longest <= max_tokens``; sorted by
    (source, target) length, ties in the order of a ``seed`` permutation (file order if
    None)."""
    n = len(data)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    tl = np.array([len(t) for t in data.tgt])[order]
    sl = np.array([len(s) for s in data.src])[order]
    order = order[np.lexsort((tl, sl))]
    groups: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        size = max(len(data.src[i]), len(data.tgt[i]))
        if size > max_tokens:
            raise DataError(f"a sentence of {size} tokens does not fit max_tokens {max_tokens}")
        grown = max(longest, size)
        if cur and (grown * (len(cur) + 1) > max_tokens or
                    (max_sentences and len(cur) >= max_sentences)):
            groups.append(cur)
            cur, grown = [], size
        cur.append(int(i))
        longest = grown
    if cur:
        groups.append(cur)
    return groups


def token_batches(data: Parallel, max_tokens: int, seed: Optional[int] = None,
                  max_sentences: Optional[int] = None) -> list[Batch]:
    """Batches of :func:`batch_indices`, shuffled with ``seed`` (kept in length order when
    ``seed`` is None, for evaluation)."""
    groups = batch_indices(data, max_tokens, seed, max_sentences)
    if seed is not None:
        perm = np.random.default_rng(seed + 1).permutation(len(groups))
        groups = [groups[i] for i in perm]
    return [collate(data, g) for g in groups]


def encode_texts(vocab: Vocab, src: Sequence[str], tgt: Sequence[str]) -> Parallel:
    """Token ids of parallel texts (each side ends with eos)."""
    enc = getattr(vocab, "encode_many", None)
    s = enc(src) if enc else [vocab.encode(t) for t in src]
    t = enc(tgt) if enc else [vocab.encode(x) for x in tgt]
    return Parallel([np.asarray(x, dtype=np.int64) for x in s],
                    [np.asarray(x, dtype=np.int64) for x in t])


@dataclass
class Corpus:
    """A corpus ready for training: its vocabulary and the three splits, plus the raw
    reference texts (for BLEU) of valid and test."""

    vocab: Vocab
    splits: dict[str, Parallel]
    references: dict[str, list[str]]
    kind: str
