"""Capacity (Tutel semantics) and the sort-once dispatch plan.

All (token, rank) choices are sorted once by ``(expert, rank, token position)`` where the
position is the token's place in the batch-prioritised order (descending priority) or in
token order. Inside an expert's contiguous segment the index is the Tutel *location*
(rank-r choices come after every rank-<r choice of that expert); choices with
``location >= capacity`` are dropped and contribute 0. Kept choices are a prefix of each
segment, so the experts run on contiguous row blocks with no padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


def compute_capacity(num_tokens: int, num_experts: int, k: int, capacity_factor: float,
                     needed: int, alignment: int = 1) -> int:
    """Slots per expert, as Tutel: ``spe = ceil(T / E)``;
    cf > 0: ``k * int(cf * spe)``; cf == 0: ``needed`` (dropless, = max load);
    cf < 0: ``min(needed, k * int(-cf * spe))``; rounded up to a multiple of ``alignment``.
    """
    spe = math.ceil(num_tokens / num_experts)
    if capacity_factor > 0:
        cap = k * int(capacity_factor * spe)
    elif capacity_factor == 0:
        cap = needed
    else:
        cap = min(needed, k * int(-capacity_factor * spe))
    return int(math.ceil(cap / alignment) * alignment) if alignment > 1 else int(cap)


@dataclass(frozen=True)
class DispatchPlan:
    """Kept (token, rank) choices grouped by expert.

    token_index: [N] int64 source token of each kept choice, grouped by expert, in
                 location order inside each group.
    choice_index: [N] int64 flat index ``t * k + r`` into the router's [T, k] weights.
    slot:        [T, k] int64 row (in the grouped order) of choice (t, r); N for dropped or
                 invalid choices (consumers keep a zero row at N). Lets the combine and
                 the input gradient be gathers instead of scatters.
    counts:      kept choices per expert (python ints, len E; sum N).
    routed:      [E] int64 choices the router assigned per expert (before capacity).
    capacity:    slots per expert; num_choices: valid choices; num_kept: N.
    """

    token_index: Tensor
    choice_index: Tensor
    slot: Tensor
    counts: list[int]
    routed: Tensor
    capacity: int
    num_choices: int
    num_kept: int


def priority_positions(priority: Tensor, batch_prioritized: bool) -> Tensor:
    """[T] position of each token in the assignment order (0 = first served)."""
    num_tokens = priority.shape[0]
    arange = torch.arange(num_tokens, device=priority.device)
    if not batch_prioritized:
        return arange
    order = torch.sort(priority, descending=True, stable=True).indices
    return torch.empty_like(arange).scatter_(0, order, arange)


def plan_dispatch(indices: Tensor, valid: Optional[Tensor], priority: Tensor,
                  num_experts: int, capacity_factor: float,
                  batch_prioritized: bool) -> DispatchPlan:
    """indices [T, k], valid [T, k] | None, priority [T] -> DispatchPlan (one sort)."""
    num_tokens, k = indices.shape
    dev = indices.device
    pos = priority_positions(priority, batch_prioritized)
    expert = indices if valid is None else indices.masked_fill(~valid, num_experts)
    rank = torch.arange(k, device=dev)
    span = k * num_tokens
    key = expert * span + rank.unsqueeze(0) * num_tokens + pos.unsqueeze(1)   # [T, k]
    sorted_key, perm = torch.sort(key.reshape(-1))
    sorted_expert = torch.div(sorted_key, span, rounding_mode="floor")
    routed = torch.bincount(sorted_expert, minlength=num_experts + 1)[:num_experts]
    routed_list = routed.tolist()
    num_choices = sum(routed_list)
    cap = compute_capacity(num_tokens, num_experts, k, capacity_factor,
                           needed=max(routed_list) if routed_list else 0)
    counts = [min(c, cap) for c in routed_list]
    num_kept = sum(counts)
    if num_kept == num_choices:
        kept = perm[:num_choices]
    else:
        starts = torch.cumsum(routed, 0) - routed
        valid_expert = sorted_expert[:num_choices]
        location = torch.arange(num_choices, device=dev) - starts[valid_expert]
        kept = perm[:num_choices][location < cap]
    slot = torch.full((span,), num_kept, dtype=torch.long, device=dev)
    slot[kept] = torch.arange(num_kept, device=dev)
    return DispatchPlan(token_index=torch.div(kept, k, rounding_mode="floor"),
                        choice_index=kept, slot=slot.view(num_tokens, k), counts=counts,
                        routed=routed, capacity=cap,
                        num_choices=num_choices, num_kept=num_kept)
