"""Grouped expert linears (custom autograd): gradcheck, padding, empty experts, dropout."""
from __future__ import annotations

import pytest
import torch
from timm.layers import Mlp
from torch import nn

from moebench.moe import MoELayer
from moebench.moe.dispatch import plan_dispatch
from moebench.moe.grouped import gather_linear, linear_scatter
from moebench.moe.reference import naive_moe_forward


def _setup(dtype=torch.float64, counts=(3, 0, 4), k=2, tokens=5):
    torch.manual_seed(0)
    E, D, H = len(counts), 4, 6
    n = sum(counts)
    w1 = torch.randn(E, H, D, dtype=dtype, requires_grad=True)
    b1 = torch.randn(E, H, dtype=dtype, requires_grad=True)
    w2 = torch.randn(E, D, H, dtype=dtype, requires_grad=True)
    b2 = torch.randn(E, D, dtype=dtype, requires_grad=True)
    x = torch.randn(tokens, D, dtype=dtype, requires_grad=True)
    choice = torch.randperm(tokens * k)[:n]                 # kept (t, r) choices, grouped
    slot = torch.full((tokens * k,), n, dtype=torch.long)
    slot[choice] = torch.arange(n)
    weight = torch.rand(n, dtype=dtype, requires_grad=True)
    return x, choice // k, slot.view(tokens, k), list(counts), w1, b1, w2, b2, weight


def test_gather_linear_and_linear_scatter_gradcheck():
    x, index, slot, counts, w1, b1, w2, b2, weight = _setup()

    def fn(x, w1, b1, w2, b2, weight):
        h = gather_linear(x, counts, w1, b1, index=index, slot=slot)
        return linear_scatter(torch.tanh(h), counts, w2, b2, weight=weight, index=index,
                              slot=slot)

    assert torch.autograd.gradcheck(fn, (x, w1, b1, w2, b2, weight))


def test_grouped_without_index_gradcheck():
    x, _, _, counts, w1, b1, w2, b2, weight = _setup(counts=(2, 3, 0), tokens=5, k=1)
    fn = lambda x, w1, w2, weight: linear_scatter(  # noqa: E731
        torch.relu(gather_linear(x, counts, w1, None)), counts, w2, None, weight=weight)
    assert torch.autograd.gradcheck(fn, (x, w1, w2, weight))


def test_grouped_matches_explicit_loop():
    x, index, slot, counts, w1, b1, w2, b2, weight = _setup(dtype=torch.float32)
    h = gather_linear(x, counts, w1, b1, index=index, slot=slot)
    out = linear_scatter(h, counts, w2, b2, weight=weight, index=index, slot=slot)
    want = torch.zeros_like(out)
    experts = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    for row, (t, e) in enumerate(zip(index.tolist(), experts.tolist())):
        hid = x[t] @ w1[e].T + b1[e]
        want[t] += weight[row] * (hid @ w2[e].T + b2[e])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_index_without_slot_raises():
    x, index, _, counts, w1, b1, *_ = _setup()
    with pytest.raises(ValueError, match="slot"):
        gather_linear(x, counts, w1, b1, index=index)


def test_everything_dropped_gives_zero_output_and_zero_grads():
    torch.manual_seed(0)
    layer = MoELayer(8, 16, num_experts=4, router="topk", capacity_factor=0.01).train()
    x = torch.randn(6, 8, requires_grad=True)
    y = layer(x)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert float(layer.experts.fc1_weight.grad.abs().sum()) == 0.0
    assert layer.routing_stats()["dropped"] == 1.0


def test_plan_slot_is_inverse_of_choice_index():
    idx = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0]])
    plan = plan_dispatch(idx, None, torch.rand(4), 2, -0.75, batch_prioritized=False)
    flat = plan.slot.reshape(-1)
    assert torch.equal(flat[plan.choice_index], torch.arange(plan.num_kept))
    assert int((flat == plan.num_kept).sum()) == 8 - plan.num_kept


def test_expert_dropout_matches_reference_with_same_rng():
    torch.manual_seed(0)
    layer = MoELayer(8, 16, num_experts=3, router="topk", k=2, capacity_factor=0.0,
                     gate_noise=0.0, expert_drop=0.5).train()
    x = torch.randn(20, 8, requires_grad=True)
    torch.manual_seed(11)
    y = layer(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    # same masks: the fused path draws one [N, H] mask in grouped row order
    torch.manual_seed(11)
    res = layer.router(x)
    plan = plan_dispatch(res.indices, None, res.priority, 3, 0.0, True)
    mask = torch.empty(plan.num_kept, 16).bernoulli_(0.5) * 2.0
    e = layer.experts
    experts = torch.repeat_interleave(torch.arange(3), torch.tensor(plan.counts))
    xs = x[plan.token_index]
    w = res.weights.reshape(-1)[plan.choice_index]
    hid = torch.einsum("nd,nhd->nh", xs, e.fc1_weight[experts]) + e.fc1_bias[experts]
    hid = torch.nn.functional.gelu(hid) * mask
    ys = torch.einsum("nh,noh->no", hid, e.fc2_weight[experts]) + e.fc2_bias[experts]
    want = torch.zeros(20, 8).index_add(0, plan.token_index, ys * w[:, None])
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    (gx_want,) = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(gx, gx_want, rtol=1e-4, atol=1e-5)


def test_norm_layer_fallback_path_matches_naive_and_upcycles():
    torch.manual_seed(0)
    mlp = Mlp(8, 16, norm_layer=nn.LayerNorm)
    layer = MoELayer(8, 16, norm_layer=nn.LayerNorm, num_experts=3, router="topk", k=2,
                     capacity_factor=0.0, gate_noise=0.0)
    layer.load_dense_mlp(mlp)
    x = torch.randn(10, 8)
    torch.testing.assert_close(layer(x), mlp(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), naive_moe_forward(layer, x), rtol=1e-5, atol=1e-5)


def test_custom_activation_callable_and_bf16():
    layer = MoELayer(8, 16, act_layer=lambda t: t * torch.sigmoid(t), num_experts=2,
                     router="topk", k=2, capacity_factor=0.0, gate_noise=0.0)
    x = torch.randn(6, 8)
    torch.testing.assert_close(layer(x), naive_moe_forward(layer, x), rtol=1e-5, atol=1e-5)
    layer = layer.to(torch.bfloat16)
    y = layer(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert layer.experts.fc1_weight.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["gelu", "gelu_tanh", "relu", "silu", "identity"])
@pytest.mark.parametrize("with_index", [True, False])
def test_fused_ffn_gradcheck(kind, with_index):
    from moebench.moe.fused_ffn import fused_ffn
    x, index, slot, counts, w1, b1, w2, b2, weight = _setup()
    if not with_index:
        x = torch.randn(sum(counts), 4, dtype=torch.float64, requires_grad=True)
        index = slot = None

    def fn(x, w1, b1, w2, b2, weight):
        return fused_ffn(x, counts, w1, b1, w2, b2, kind, index=index, slot=slot,
                         weight=weight)

    assert torch.autograd.gradcheck(fn, (x, w1, b1, w2, b2, weight))


def test_fused_and_grouped_paths_agree():
    from moebench.moe.fused_ffn import act_kind
    torch.manual_seed(0)
    a = MoELayer(8, 16, num_experts=3, router="topk", k=2, capacity_factor=0.9, gate_noise=0.0)
    b = MoELayer(8, 16, act_layer=lambda t: torch.nn.functional.gelu(t) * 1.0, num_experts=3,
                 router="topk", k=2, capacity_factor=0.9, gate_noise=0.0)
    b.load_state_dict(a.state_dict())
    assert act_kind(a.experts.act) == "gelu" and act_kind(b.experts.act) is None
    x = torch.randn(30, 8, requires_grad=True)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb)
    ga = torch.autograd.grad(ya.square().sum(), [x, *a.parameters()])
    gb = torch.autograd.grad(yb.square().sum(), [x, *b.parameters()])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_retain_graph_double_backward_pass():
    layer = MoELayer(8, 16, num_experts=3, router="topk", k=2, capacity_factor=0.0)
    y = layer(torch.randn(10, 8)).sum()
    y.backward(retain_graph=True)
    g1 = layer.experts.fc1_weight.grad.clone()
    y.backward()
    torch.testing.assert_close(layer.experts.fc1_weight.grad, 2 * g1)


def test_row_blocks_group_small_experts():
    from moebench.moe.fused_ffn import row_blocks
    blocks = row_blocks((3, 0, 4, 1, 6, 2), min_rows=5)
    assert blocks == [(0, 7, ((0, 0, 3, False), (2, 3, 7, False))),
                      (7, 14, ((3, 0, 1, False), (4, 1, 7, False))),
                      (14, 16, ((5, 0, 2, False),))]
    assert row_blocks((2, 2), min_rows=1) == [(0, 2, ((0, 0, 2, False),)),
                                              (2, 4, ((1, 0, 2, False),))]
    assert row_blocks((0, 0)) == []


def test_row_blocks_split_big_experts_into_accumulating_pieces():
    from moebench.moe.fused_ffn import row_blocks
    # expert 0: 10 rows -> pieces of 3, 3, 4 rows (max 4); expert 1's 2 rows: the last block
    blocks = row_blocks((10, 2), min_rows=4, max_rows=4)
    assert blocks == [(0, 6, ((0, 0, 3, False), (0, 3, 6, True))),
                      (6, 10, ((0, 0, 4, True),)), (10, 12, ((1, 0, 2, False),))]


def test_equal_runs_merge_consecutive_equal_experts_only():
    from moebench.moe.grouped import equal_runs
    members = [(0, 0, 3), (1, 3, 6), (2, 6, 9), (4, 9, 12), (5, 12, 14), (6, 14, 16, True)]
    assert equal_runs(members) == [(0, 3, 0, 3, False), (4, 1, 9, 3, False),
                                   (5, 1, 12, 2, False), (6, 1, 14, 2, True)]


@pytest.mark.parametrize("counts", [(6, 6, 6, 6, 0, 6), (30, 4, 0, 9)])
@pytest.mark.parametrize("max_rows", [4, 10**6])
def test_fused_ffn_bmm_runs_and_pieces_match_per_expert_reference(monkeypatch, counts, max_rows):
    """Equal-sized experts (one bmm per run) and experts split into row pieces (weight
    gradients accumulated over pieces) give the per-expert F.linear results and gradients."""
    import moebench.moe.fused_ffn as fused
    monkeypatch.setattr(fused, "max_piece_rows", lambda hidden, size: max_rows)
    monkeypatch.setattr(fused, "MIN_BLOCK_ROWS", 7)
    torch.manual_seed(5)
    E, D, H = len(counts), 5, 7
    params = [torch.randn(E, H, D), torch.randn(E, H), torch.randn(E, D, H), torch.randn(E, D)]
    params = [p.requires_grad_() for p in params]
    x = torch.randn(sum(counts), D, requires_grad=True)
    y = fused.fused_ffn(x, list(counts), *params, "gelu")
    ref = torch.cat([torch.nn.functional.linear(
        torch.nn.functional.gelu(torch.nn.functional.linear(xe, params[0][e], params[1][e])),
        params[2][e], params[3][e]) for e, xe in enumerate(torch.split(x, list(counts)))])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *params], g)
    want = torch.autograd.grad(ref, [x, *params], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("min_rows", [1, 7, 10**6])
def test_layer_matches_naive_for_any_block_grouping(monkeypatch, min_rows):
    import moebench.moe.fused_ffn as fused
    monkeypatch.setattr(fused, "MIN_BLOCK_ROWS", min_rows)
    torch.manual_seed(3)
    layer = MoELayer(8, 16, num_experts=5, router="topk", k=2, capacity_factor=1.0,
                     gate_noise=0.0, expert_drop=0.0)
    x = torch.randn(40, 8, requires_grad=True)
    ys = [layer(x), naive_moe_forward(layer, x)]
    grads = [torch.autograd.grad(y.square().sum(), [x, *layer.parameters()]) for y in ys]
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
