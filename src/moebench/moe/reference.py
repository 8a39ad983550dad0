"""Naive reference implementations (tests and benchmarks; not the fast path).

``naive_locations`` recomputes capacity locations the way Tutel does (one-hot masks,
cumulative sums per rank) and ``naive_moe_forward`` runs every expert in a Python loop on
the tokens routed to it (boolean masks, no sorting) and accumulates the weighted outputs.
They share nothing with ``dispatch.py`` but the capacity formula.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from moebench.moe.dispatch import compute_capacity
from moebench.moe.routers.base import RouterResult


def naive_locations(res: RouterResult, num_experts: int, batch_prioritized: bool) -> Tensor:
    """[T, k] location of every (token, rank) choice in its expert's buffer (Tutel order);
    -1 for invalid choices."""
    indices = res.indices
    valid = torch.ones_like(indices, dtype=torch.bool) if res.valid is None else res.valid
    order = torch.sort(res.priority, descending=True, stable=True).indices if batch_prioritized \
        else torch.arange(indices.shape[0], device=indices.device)
    locations = torch.full_like(indices, -1)
    offset = torch.zeros(num_experts, dtype=torch.long, device=indices.device)
    for r in range(indices.shape[1]):
        mask = F.one_hot(indices[order, r], num_experts) * valid[order, r].long().unsqueeze(1)
        loc = torch.cumsum(mask, dim=0) - 1 + offset
        loc_r = (loc * mask).sum(1)
        locations[order, r] = torch.where(valid[order, r], loc_r, torch.full_like(loc_r, -1))
        offset = offset + mask.sum(0)
    return locations


def naive_moe_forward(layer, x: Tensor, res: Optional[RouterResult] = None,
                      capacity_factor: Optional[float] = None) -> Tensor:
    """Per-expert masked loop equivalent of ``layer(x)`` for token-choice routers.

    x [..., D] -> [..., D_out]. ``res`` defaults to a fresh router call (re-seed the RNG
    to reproduce the layer's training noise).
    """
    x2 = x.reshape(-1, layer.in_features)
    res = layer.router(x2) if res is None else res
    num_experts = layer.num_experts
    locations = naive_locations(res, num_experts, layer.batch_prioritized)
    cf = 0.0 if layer.router.dropless else (
        layer.capacity_factor if capacity_factor is None else capacity_factor)
    needed = int(locations.max()) + 1
    cap = compute_capacity(x2.shape[0], num_experts, res.indices.shape[1], cf, needed)
    keep = (locations >= 0) & (locations < cap)
    out = x2.new_zeros(x2.shape[0], layer.out_features)
    params = layer.experts.per_expert_params()
    for e in range(num_experts):
        tok, rank = torch.nonzero(keep & (res.indices == e), as_tuple=True)
        if tok.numel() == 0:
            continue
        w = res.weights[tok, rank].to(x2.dtype).unsqueeze(1)
        xin = x2[tok] if layer.postscore else x2[tok] * w
        y = layer.experts.expert_forward(e, xin, params[e])
        out = out.index_add(0, tok, y * w if layer.postscore else y)
    return layer.drop(out).reshape(*x.shape[:-1], layer.out_features)


def naive_soft_forward(layer, x: Tensor) -> Tensor:
    """Soft-MoE reference: per sequence and per slot with einsum, experts in a loop.
    x [B, m, D] -> [B, m, D_out]."""
    res = layer.router(x)
    slots = torch.einsum("bms,bmd->bsd", res.dispatch.to(x.dtype), x)
    per = slots.shape[1] // layer.num_experts
    params = layer.experts.per_expert_params()
    outs = [layer.experts.expert_forward(s // per, slots[:, s], params[s // per])
            for s in range(slots.shape[1])]
    ys = torch.stack(outs, dim=1)                                   # [B, S, D_out]
    return layer.drop(torch.einsum("bms,bsd->bmd", res.combine.to(ys.dtype), ys))
