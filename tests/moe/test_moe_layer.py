"""MoELayer: timm Mlp equivalences, naive-loop equivalence (outputs + grads), stats, aux sum."""
from __future__ import annotations

import json

import pytest
import torch
from timm.layers import Mlp
from torch import nn

from moebench.moe import MoELayer, aux_loss_sum, collect_routing_stats
from moebench.moe.reference import naive_moe_forward, naive_soft_forward

TOKEN_ROUTERS = ["topk", "cosine_topk", "mintau"]


def _mlp(d: int = 16, h: int = 32) -> Mlp:
    torch.manual_seed(0)
    mlp = Mlp(d, h)
    with torch.no_grad():                       # non-trivial biases
        mlp.fc1.bias.normal_()
        mlp.fc2.bias.normal_()
    return mlp


@pytest.mark.parametrize("router", TOKEN_ROUTERS)
def test_one_expert_equals_dense_mlp(router):
    mlp = _mlp()
    layer = MoELayer(16, 32, num_experts=1, router=router, k=1, gate_noise=0.0,
                     capacity_factor=0.0)
    layer.load_dense_mlp(mlp)
    x = torch.randn(4, 7, 16)
    torch.testing.assert_close(layer(x), mlp(x), rtol=1e-5, atol=1e-5)
    layer.train()
    torch.testing.assert_close(layer(x), mlp(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("router,k,kwargs", [
    ("topk", 2, {}), ("cosine_topk", 2, {}), ("topk", 1, {"normalize_gate": True}),
    ("cosine_topk", 1, {"normalize_gate": True}), ("cosine_topk", 3, {}),
    ("mintau", 1, {"tau": 0.7})])
def test_identical_upcycled_experts_equal_dense_mlp(router, k, kwargs):
    mlp = _mlp()
    layer = MoELayer(16, 32, num_experts=5, router=router, k=k, gate_noise=1.0,
                     capacity_factor=0.0, router_kwargs=kwargs).train()
    layer.load_dense_mlp(mlp)
    x = torch.randn(3, 11, 16)
    torch.testing.assert_close(layer(x), mlp(x), rtol=1e-5, atol=1e-5)


def test_identical_experts_k1_tutel_scales_by_gate_prob():
    """Tutel k=1 keeps the raw softmax probability: y = p_top(x) * mlp(x)."""
    mlp = _mlp()
    layer = MoELayer(16, 32, num_experts=4, router="cosine_topk", k=1, gate_noise=0.0,
                     capacity_factor=0.0).eval()
    layer.load_dense_mlp(mlp)
    x = torch.randn(20, 16)
    p = torch.softmax(layer.router.compute_logits(x), dim=1).max(1).values.unsqueeze(1)
    torch.testing.assert_close(layer(x), p * mlp(x), rtol=1e-5, atol=1e-5)


def test_identical_experts_soft_router_mixes_slots():
    mlp = _mlp()
    layer = MoELayer(16, 32, num_experts=3, router="soft", router_kwargs={"slots_per_expert": 2})
    layer.load_dense_mlp(mlp)
    x = torch.randn(2, 9, 16)
    res = layer.router(x)
    slots = res.dispatch.transpose(1, 2) @ x
    torch.testing.assert_close(layer(x), res.combine @ mlp(slots), rtol=1e-5, atol=1e-5)


CASES = [(r, k, cf, bpr) for r in ("topk", "cosine_topk") for k in (1, 2)
         for cf in (1.25, 0.0, -0.5, 0.3) for bpr in (True, False)] + \
        [("mintau", 1, 1.0, True), ("mintau", 1, 1.0, False)]


@pytest.mark.parametrize("router,k,cf,bpr", CASES)
def test_layer_matches_naive_loop_outputs_and_grads(router, k, cf, bpr):
    torch.manual_seed(1)
    layer = MoELayer(16, 24, num_experts=4, router=router, k=k, capacity_factor=cf,
                     gate_noise=1.0, batch_prioritized=bpr,
                     router_kwargs={"tau": 0.6} if router == "mintau" else None).train()
    x = torch.randn(5, 13, 16, requires_grad=True)
    g = torch.randn(5, 13, 16)
    outs, grads = [], []
    for fn in (layer, lambda t: naive_moe_forward(layer, t)):
        torch.manual_seed(7)
        y = fn(x)
        (gx, *gp) = torch.autograd.grad((y * g).sum(), [x, *layer.parameters()],
                                         allow_unused=True)
        outs.append(y)
        grads.append([gx, *gp])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        if a is None or b is None:
            assert a is None and b is None or float((a if a is not None else b).abs().sum()) == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_soft_layer_matches_naive_loop_outputs_and_grads():
    torch.manual_seed(2)
    layer = MoELayer(16, 24, num_experts=3, router="soft", router_kwargs={"slots_per_expert": 2})
    x = torch.randn(2, 7, 16, requires_grad=True)
    ys = [layer(x), naive_soft_forward(layer, x)]
    grads = [torch.autograd.grad(y.square().sum(), [x, *layer.parameters()]) for y in ys]
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_soft_layer_rejects_flat_input():
    layer = MoELayer(16, 24, num_experts=2, router="soft")
    with pytest.raises(ValueError, match="B, m, D"):
        layer(torch.randn(10, 16))


def test_drop_in_for_timm_block():
    from timm.models.vision_transformer import Block
    blk = Block(16, 2, mlp_layer=lambda **kw: MoELayer(**kw, num_experts=3, k=1))
    assert isinstance(blk.mlp, MoELayer)
    assert blk(torch.randn(2, 5, 16)).shape == (2, 5, 16)


def test_routing_stats_accumulate_only_in_training_and_reset():
    torch.manual_seed(0)
    model = nn.Sequential(MoELayer(8, 16, num_experts=4, k=2, capacity_factor=0.5),
                          MoELayer(8, 16, num_experts=3, router="topk", capacity_factor=0.0))
    model.train()
    model(torch.randn(6, 8))
    model(torch.randn(4, 8))
    model.eval()
    model(torch.randn(50, 8))
    stats = collect_routing_stats(model)
    json.dumps(stats)
    assert set(stats) == {"0", "1"}
    assert stats["0"]["tokens"] == 10 and stats["1"]["tokens"] == 10
    assert abs(sum(stats["0"]["load"]) - 1) < 1e-9 and len(stats["0"]["load"]) == 4
    # capacity 2*int(0.5*ceil(6/4)) = 2 then 2*int(0.5*1) = 0 -> most choices dropped
    assert 0.5 < stats["0"]["dropped"] <= 1.0
    assert stats["1"]["dropped"] == 0.0
    assert collect_routing_stats(model)["0"]["tokens"] == 0


def test_aux_loss_sum_weights_every_layer():
    model = nn.Sequential(MoELayer(8, 16, num_experts=4), MoELayer(8, 16, num_experts=4))
    model.train()
    model(torch.randn(12, 8))
    total = aux_loss_sum(model, {"importance_load": 0.01, "z_loss": 0.5})
    want = sum(0.01 * m.aux_losses["importance_load"] + 0.5 * m.aux_losses["z_loss"]
               for m in model)
    torch.testing.assert_close(total, want)
    total.backward()
    assert model[0].router.sim_matrix.grad is not None
    with pytest.raises(ValueError, match="bogus"):
        aux_loss_sum(model, {"bogus": 1.0})
    assert float(aux_loss_sum(nn.Linear(2, 2), {"gshard": 1.0})) == 0.0


def test_expert_drop_and_drop_are_applied():
    layer = MoELayer(8, 16, num_experts=2, expert_drop=0.1, drop=(0.0, 0.2))
    assert layer.experts.drop.p == 0.1 and layer.drop.p == 0.2
    layer = MoELayer(8, 16, num_experts=2, drop=0.3)
    assert layer.experts.drop.p == 0.3 and layer.drop.p == 0.3


def test_bad_router_name_lists_valid():
    with pytest.raises(KeyError, match="cosine_topk"):
        MoELayer(8, 16, router="nope")
