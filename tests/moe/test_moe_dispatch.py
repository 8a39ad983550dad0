"""Capacity semantics (Tutel), overflow per priority, and the sort-once dispatch plan."""
from __future__ import annotations

import pytest
import torch

from moebench.moe.dispatch import compute_capacity, plan_dispatch
from moebench.moe.reference import naive_locations
from moebench.moe.routers.base import RouterResult


@pytest.mark.parametrize("tokens,experts,k,cf,needed,want", [
    (18912, 6, 1, 1.5, 0, 4728),      # GMoE training step (spec vision_dg §1.2 item 5)
    (31520, 6, 1, 1.5, 0, 7881),      # DomainNet step
    (12608, 6, 1, 1.5, 0, 3153),      # eval batch of 64 images
    (100, 8, 2, 1.25, 0, 2 * int(1.25 * 13)),
    (100, 8, 2, 0.0, 37, 37),         # dropless: capacity = max load
    (100, 8, 2, -1.0, 37, 26),        # min(needed, k * int(1 * 13))
    (100, 8, 2, -1.0, 20, 20),
])
def test_compute_capacity_tutel(tokens, experts, k, cf, needed, want):
    assert compute_capacity(tokens, experts, k, cf, needed) == want


def test_capacity_alignment_rounds_up():
    assert compute_capacity(10, 2, 1, 0.0, 5, alignment=4) == 8


def _kept(plan) -> list[list[int]]:
    groups = torch.split(plan.token_index, plan.counts)
    return [sorted(g.tolist()) for g in groups]


PRIO = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2])


def test_overflow_dropped_by_batch_priority():
    idx = torch.zeros(6, 1, dtype=torch.long)
    plan = plan_dispatch(idx, None, PRIO, 2, 0.7, batch_prioritized=True)   # cap 1*int(2.1)
    assert plan.capacity == 2 and plan.counts == [2, 0]
    assert _kept(plan) == [[1, 4], []]
    assert plan.num_choices == 6 and plan.num_kept == 2
    assert plan.routed.tolist() == [6, 0]


def test_overflow_dropped_by_token_order_without_bpr():
    idx = torch.zeros(6, 1, dtype=torch.long)
    plan = plan_dispatch(idx, None, PRIO, 2, 0.7, batch_prioritized=False)
    assert _kept(plan) == [[0, 1], []]


def test_second_choices_queue_after_first_choices():
    idx = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0]])
    prio = torch.tensor([0.4, 0.3, 0.2, 0.1])
    plan = plan_dispatch(idx, None, prio, 2, -0.75, batch_prioritized=False)  # min(4, 2*1)
    assert plan.capacity == 2
    assert _kept(plan) == [[0, 2], [1, 3]]            # every rank-0 choice wins
    assert plan.choice_index.remainder(2).tolist() == [0, 0, 0, 0]


def test_invalid_choices_are_ignored():
    idx = torch.tensor([[0, 1], [1, 0], [2, 0]])
    valid = torch.tensor([[True, False], [True, True], [True, False]])
    plan = plan_dispatch(idx, valid, torch.rand(3), 3, 0.0, batch_prioritized=True)
    assert plan.num_choices == 4 and plan.counts == [2, 1, 1]
    assert _kept(plan) == [[0, 1], [1], [2]]


@pytest.mark.parametrize("bpr", [True, False])
@pytest.mark.parametrize("cf", [0.5, 1.0, 0.0, -0.3])
def test_plan_matches_tutel_locations(bpr, cf):
    torch.manual_seed(0)
    T, E, k = 97, 5, 2
    logits = torch.randn(T, E)
    top = torch.topk(torch.softmax(logits, 1), k, 1)
    res = RouterResult(indices=top.indices, weights=top.values, valid=None,
                       priority=top.values[:, 0], logits=logits)
    loc = naive_locations(res, E, bpr)
    needed = int(loc.max()) + 1
    cap = compute_capacity(T, E, k, cf, needed)
    plan = plan_dispatch(res.indices, None, res.priority, E, cf, bpr)
    assert plan.capacity == cap
    keep = loc < cap
    want = {(int(t), int(r)) for t, r in torch.nonzero(keep).tolist()}
    got = {(int(c) // k, int(c) % k) for c in plan.choice_index}
    assert got == want
    assert all(c <= cap for c in plan.counts) and sum(plan.counts) == plan.num_kept
    experts = res.indices.reshape(-1)[plan.choice_index]
    assert torch.equal(experts, torch.sort(experts).values)     # contiguous per expert
    # inside each expert the order is the location order
    locs = loc.reshape(-1)[plan.choice_index]
    for g in torch.split(locs, plan.counts):
        assert g.tolist() == list(range(len(g)))
