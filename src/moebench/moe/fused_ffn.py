"""Fused expert FFN: gather -> fc1 -> act -> dropout -> fc2 -> weighted combine, per expert.

One autograd Function processes the grouped rows block by block (one expert's rows, or
several consecutive small experts' rows, >= ``MIN_BLOCK_ROWS``), forward and backward, so
each block stays cache-resident between its GEMMs and its activation, and backward
temporaries are block-sized. GEMMs run per expert on its contiguous rows. Measured on CPU
this is what makes a sorted per-expert loop as fast as (or faster than) the dense FFN on
the same rows; a whole-tensor activation between two grouped GEMMs streams [N, H] through
DRAM twice more.
Only elementwise activations with a known derivative are fused (:func:`act_kind`);
``grouped.py`` handles any other activation.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe.grad_cache import GradBufferCache
from moebench.moe.grouped import (expert_grad_buffers, gather_sum, linear_block,
                                  linear_block_backward, padded_buffer, segments)

_FN_KINDS = {F.gelu: "gelu", F.relu: "relu", F.silu: "silu", torch.relu: "relu"}


def act_kind(act: nn.Module) -> Optional[str]:
    """Name of a fusable activation ("gelu", "gelu_tanh", "relu", "silu", "identity") or None."""
    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    if isinstance(act, (nn.ReLU, nn.SiLU, nn.Identity)):
        return {nn.ReLU: "relu", nn.SiLU: "silu", nn.Identity: "identity"}[type(act)]
    fn = getattr(act, "fn", None)             # experts._Fn wrapping a plain function
    return _FN_KINDS.get(fn) if fn is not None else None


def _act(h: Tensor, kind: str) -> Tensor:
    if kind in ("gelu", "gelu_tanh"):
        return F.gelu(h, approximate="tanh" if kind == "gelu_tanh" else "none")
    if kind == "relu":
        return F.relu(h)
    return F.silu(h) if kind == "silu" else h.clone()


def _act_backward_(grad: Tensor, h: Tensor, kind: str) -> Tensor:
    """grad * act'(h), written over ``grad`` (a buffer of the caller's own): no fresh
    [rows, H] block per call, whose first touch costs page faults."""
    if kind in ("gelu", "gelu_tanh"):
        approx = "tanh" if kind == "gelu_tanh" else "none"
        torch.ops.aten.gelu_backward.grad_input(grad, h, approximate=approx, grad_input=grad)
    elif kind == "relu":
        torch.ops.aten.threshold_backward.grad_input(grad, h, 0, grad_input=grad)
    elif kind == "silu":
        torch.ops.aten.silu_backward.grad_input(grad, h, grad_input=grad)
    return grad


MIN_BLOCK_ROWS = 1024  # consecutive small experts are grouped into blocks of >= this many rows
# an expert whose [rows, H] activation would exceed this is split into row pieces: blocks
# above 32 MB are mmap'ed afresh by glibc each step (page faults), smaller ones reuse heap
# memory; 12 MB (2048 rows of a ViT-S FFN) measured best for time and backward peak memory
MAX_PIECE_BYTES = 12 << 20


def max_piece_rows(hidden: int, element_size: int) -> int:
    """Most rows of one piece: its [rows, hidden] activation stays within MAX_PIECE_BYTES."""
    return max(MIN_BLOCK_ROWS, MAX_PIECE_BYTES // (hidden * element_size))


def row_blocks(counts: tuple[int, ...], min_rows: Optional[int] = None,
               max_rows: Optional[int] = None) -> list[tuple]:
    """Group consecutive non-empty experts into row blocks of >= ``min_rows`` rows:
    [(start, end, ((expert, block_start, block_end, accumulate), ...))] with member offsets
    relative to the block start. An expert with more than ``max_rows`` rows is split into
    near-equal pieces (``accumulate`` True on all but its first: its weight gradient adds
    to the first's), so every block's temporaries stay small (cache-friendly, and below
    the allocator's mmap threshold). One GEMM per member; elementwise ops once per block."""
    min_rows = MIN_BLOCK_ROWS if min_rows is None else min_rows
    max_rows = max(1, sum(counts)) if max_rows is None else max_rows   # None: never split
    blocks, members, b0 = [], [], 0
    for e, s, t in segments(counts):
        pieces = -(-(t - s) // max_rows)
        bounds = [s + (t - s) * i // pieces for i in range(pieces + 1)]
        for i in range(pieces):
            if not members:
                b0 = bounds[i]
            members.append((e, bounds[i] - b0, bounds[i + 1] - b0, i > 0))
            if bounds[i + 1] - b0 >= min_rows:
                blocks.append((b0, bounds[i + 1], tuple(members)))
                members = []
    if members:
        blocks.append((b0, b0 + members[-1][2], tuple(members)))
    return blocks


class _FusedFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, slot, weight, counts, w1, b1, w2, b2, kind, p, training, cache,
                drop_first):
        combine = slot is not None
        out = padded_buffer(sum(counts), w2.shape[1], x, pad=combine)
        blocks = row_blocks(counts, max_rows=max_piece_rows(w1.shape[1], x.element_size()))
        saved = []
        for s, t, members in blocks:
            xs = x[s:t] if index is None else x.index_select(0, index[s:t])
            h = linear_block(xs, members, w1, b1)
            mask = None
            if training and p > 0:
                mask = torch.empty_like(h, dtype=torch.bool).bernoulli_(1.0 - p)
            if mask is not None and drop_first:      # act(drop(h)): h keeps the dropped value
                h.mul_(mask).div_(1.0 - p)
            a = _act(h, kind)
            if mask is not None and not drop_first:  # drop(act(h))
                a.mul_(mask).div_(1.0 - p)
            if weight is None:
                y = linear_block(a, members, w2, b2, out=out[s:t])
            else:
                y = linear_block(a, members, w2, b2)
                torch.mul(y, weight[s:t].unsqueeze(1), out=out[s:t])
            saved.append((h, a, mask, y if weight is not None else None))
        ctx.save_for_backward(x, index, slot, weight, w1, b1, w2, b2)
        ctx.blocks, ctx.saved, ctx.cache = blocks, saved, cache
        ctx.meta = (counts, kind, p, drop_first)
        return gather_sum(out, slot) if combine else out

    @staticmethod
    def backward(ctx, gout):
        x, index, slot, weight, w1, b1, w2, b2 = ctx.saved_tensors
        counts, kind, p, drop_first = ctx.meta
        need_x, need_wt = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        named = zip(("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"), (w1, b1, w2, b2))
        gw1, gb1, gw2, gb2 = expert_grad_buffers(tuple(named), ctx.needs_input_grad[5:9],
                                                 counts, ctx.cache)
        gxs = padded_buffer(sum(counts), x.shape[1], x, pad=index is not None) if need_x else None
        gweight = torch.empty_like(weight) if (need_wt and weight is not None) else None
        gout = gout.contiguous()
        # one activation-gradient buffer for all blocks (each block's is dead after it)
        ga_buf = gout.new_empty(max((t - s for s, t, _ in ctx.blocks), default=0), w2.shape[2])
        for (s, t, members), (h, a, mask, y) in zip(ctx.blocks, ctx.saved):
            gy = gout[s:t] if index is None else gout.index_select(0, index[s:t])
            if weight is not None:
                if gweight is not None:
                    torch.sum(gy * y, dim=1, out=gweight[s:t])
                w = weight[s:t].unsqueeze(1)
                gy = gy * w if index is None else gy.mul_(w)   # a gathered gy is our own
            ga = ga_buf[:t - s]
            linear_block_backward(gy, a, members, w2, gw2, gb2, ga)
            if mask is not None and not drop_first:
                ga.mul_(mask).div_(1.0 - p)
            gh = _act_backward_(ga, h, kind)
            if mask is not None and drop_first:
                gh.mul_(mask).div_(1.0 - p)
            xs = x[s:t] if index is None else x.index_select(0, index[s:t])
            linear_block_backward(gh, xs, members, w1, gw1, gb1,
                                   None if gxs is None else gxs[s:t])
        gx = gxs if gxs is None or index is None else gather_sum(gxs, slot)
        return gx, None, None, gweight, None, gw1, gb1, gw2, gb2, None, None, None, None, None


def fused_ffn(x: Tensor, counts: list[int], w1: Tensor, b1: Optional[Tensor], w2: Tensor,
              b2: Optional[Tensor], kind: str, p: float = 0.0, training: bool = False,
              index: Optional[Tensor] = None, slot: Optional[Tensor] = None,
              weight: Optional[Tensor] = None,
              cache: Optional[GradBufferCache] = None, drop_first: bool = False) -> Tensor:
    """Expert FFNs on grouped rows with fused gather/combine.

    x [T, D]; index [N] source token per grouped row and slot [T, k] its inverse (row of
    choice (t, r), N if none) — both or neither (then x is the grouped [N, D] input);
    counts rows per expert; weight [N] | None; w1 [E, H, D], b1 [E, H], w2 [E, O, H],
    b2 [E, O]; ``kind`` from :func:`act_kind`; dropout ``p`` after the activation when
    ``training`` (before it with ``drop_first``: act(drop(fc1 x)), MASS's BERT experts);
    ``cache`` reuses the weight-gradient buffers across steps. Returns
    [T, O] = Σ_r weight * expert(x_t) (or [N, O] without index).
    """
    if (index is None) != (slot is None):
        raise ValueError("fused_ffn needs both index and slot, or neither")
    return _FusedFFN.apply(x, index, slot, weight, tuple(counts), w1, b1, w2, b2, kind,
                           float(p), bool(training), cache, bool(drop_first))
