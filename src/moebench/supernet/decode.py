"""Greedy and beam-search decoding on a model's incremental interface.

The model needs ``encode(src [B, S]) -> state`` (with ``state.index_select(idx)``),
``decode_step(tokens [B, 1], state, cache) -> log-probs [B, V]`` and
``reorder_cache(cache, idx)``, as :class:`moebench.supernet.model_plain.Transformer` has.

Beam search follows fairseq's ``SequenceGenerator`` as HAT's test script runs it (beam 4,
length penalty 0.6): the beam is folded into the batch; each step keeps the best
``2 x beam`` candidates, an eos candidate among the first ``beam`` finishes a hypothesis
with score ``sum log p / length ** lenpen`` (length counting eos), the best ``beam``
non-eos candidates continue; a sentence is done when it has ``beam`` finished hypotheses
and at ``max_len`` every live hypothesis is closed with eos. pad and bos are never emitted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

NEG = float("-inf")


@dataclass(frozen=True)
class DecodeConfig:
    """``beam`` 1 = greedy; ``max_len = max_len_a * source length + max_len_b``."""

    beam: int = 4
    lenpen: float = 0.6
    max_len_a: float = 0.0
    max_len_b: int = 200


def _max_len(src: Tensor, pad: int, cfg: DecodeConfig) -> int:
    longest = int(src.ne(pad).sum(1).max())
    return max(1, int(cfg.max_len_a * longest + cfg.max_len_b))


def _mask_specials(lp: Tensor, pad: int, bos: int) -> Tensor:
    lp[:, pad] = NEG
    if bos != pad:
        lp[:, bos] = NEG
    return lp


@torch.inference_mode()
def greedy(model, src: Tensor, eos: int, pad: int, bos: int = 0,
           cfg: DecodeConfig = DecodeConfig(beam=1)) -> list[list[int]]:
    """Arg-max decoding; returns per sentence its ids (eos not included)."""
    enc, cache = model.encode(src), {}
    n, max_len = src.shape[0], _max_len(src, pad, cfg)
    tokens = torch.full((n, 1), eos, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(n)]
    alive = torch.arange(n, device=src.device)
    for t in range(max_len + 1):
        lp = _mask_specials(model.decode_step(tokens, enc, cache), pad, bos)
        nxt = lp.argmax(-1) if t < max_len else torch.full_like(lp[:, 0], eos, dtype=torch.long)
        keep = []
        for j, (row, tok) in enumerate(zip(alive.tolist(), nxt.tolist())):
            if tok == eos:
                continue
            out[row].append(tok)
            keep.append(j)
        if not keep:
            break
        idx = torch.tensor(keep, device=src.device)
        alive, tokens = alive[idx], nxt[idx][:, None]
        enc, cache = enc.index_select(idx), model.reorder_cache(cache, idx)
    return out


@torch.inference_mode()
def beam_search(model, src: Tensor, eos: int, pad: int, bos: int = 0,
                cfg: DecodeConfig = DecodeConfig()) -> list[list[int]]:
    """fairseq-style beam search; returns the best finished hypothesis per sentence."""
    k, n, dev = cfg.beam, src.shape[0], src.device
    max_len = _max_len(src, pad, cfg)
    expand = torch.arange(n, device=dev).repeat_interleave(k)
    enc, cache = model.encode(src).index_select(expand), {}
    scores = torch.zeros(n, k, device=dev)
    scores[:, 1:] = NEG  # at the first step only one beam is live
    hyps = torch.full((n, k, 0), eos, dtype=torch.long, device=dev)
    last = torch.full((n * k, 1), eos, dtype=torch.long, device=dev)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    alive = list(range(n))
    for t in range(max_len + 1):
        lp = _mask_specials(model.decode_step(last, enc, cache), pad, bos).view(len(alive), k, -1)
        if t == max_len:  # force eos
            lp = torch.where(torch.arange(lp.shape[-1], device=dev) == eos, lp, NEG)
        cand = (scores[:, :, None] + lp).view(len(alive), -1)
        top, idx = cand.topk(2 * k, dim=1)
        beam_of, tok = idx // lp.shape[-1], idx % lp.shape[-1]
        new_beams, keep_rows = [], []
        for j, row in enumerate(alive):
            nxt = _step_sentence(j, top, beam_of, tok, hyps, eos, k, t, cfg.lenpen,
                                 finished[row])
            if nxt is not None:
                new_beams.append(nxt)
                keep_rows.append(j)
        if not keep_rows:
            break
        sel_beam = torch.stack([b for b, _, _ in new_beams])  # [n', k] source beam
        sel_tok = torch.stack([x for _, x, _ in new_beams])
        scores = torch.stack([s for _, _, s in new_beams])
        rows = torch.tensor(keep_rows, device=dev)
        hyps = torch.cat([hyps[rows[:, None], sel_beam], sel_tok[:, :, None]], dim=2)
        flat = (rows[:, None] * k + sel_beam).reshape(-1)
        enc, cache = enc.index_select(flat), model.reorder_cache(cache, flat)
        last = sel_tok.reshape(-1, 1)
        alive = [alive[j] for j in keep_rows]
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]


def _step_sentence(j: int, top: Tensor, beam_of: Tensor, tok: Tensor, hyps: Tensor, eos: int,
                   k: int, t: int, lenpen: float, done: list) -> "tuple | None":
    """Finish eos candidates of sentence ``j`` ranked < k; return its next (beams, tokens,
    scores) or None when the sentence is complete."""
    live = []
    for r in range(2 * k):
        score = float(top[j, r])
        if score == NEG:
            break
        b, x = int(beam_of[j, r]), int(tok[j, r])
        if x == eos:
            if r < k and len(done) < k:
                done.append((score / (t + 1) ** lenpen, hyps[j, b].tolist()))
        elif len(live) < k:
            live.append(r)
    if len(done) >= k or not live:
        return None
    n_live = len(live)
    live += [live[-1]] * (k - n_live)  # fewer live candidates than beams: dead copies
    r = torch.tensor(live, device=top.device)
    sc = top[j, r].clone()
    sc[n_live:] = NEG
    return beam_of[j, r], tok[j, r], sc


def translate(model, batches: Sequence, eos: int, pad: int, bos: int = 0,
              cfg: DecodeConfig = DecodeConfig()) -> dict[int, list[int]]:
    """{sentence id: hypothesis ids} over ``batches`` (Batch objects; beam 1 = greedy)."""
    out: dict[int, list[int]] = {}
    for b in batches:
        fn = greedy if cfg.beam == 1 else beam_search
        for i, ids in zip(b.index.tolist(), fn(model, b.src, eos, pad, bos, cfg)):
            out[i] = ids
    return out
