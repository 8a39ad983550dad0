"""Router properties: shapes, k, normalisation, MinTau minimal set, Soft-MoE sums, noise."""
from __future__ import annotations

import math

import pytest
import torch

from moebench.moe import MoELayer
from moebench.moe.routers import CosineTopKRouter, MinTauRouter, SoftRouter, TopKRouter
from moebench.registry import ROUTERS


def test_registry_has_every_router():
    assert {"topk", "cosine_topk", "mintau", "soft"} <= set(ROUTERS.names())


@pytest.mark.parametrize("name", ["topk", "cosine_topk", "mintau", "soft"])
def test_every_registered_router_builds_a_layer(name):
    layer = MoELayer(8, 16, num_experts=4, router=name, k=2)
    x = torch.randn(2, 5, 8)
    assert layer(x).shape == (2, 5, 8)


@pytest.mark.parametrize("cls", [TopKRouter, CosineTopKRouter])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_shapes_choices_and_weights(cls, k):
    torch.manual_seed(0)
    router = cls(8, 5, k=k, gate_noise=0.0).eval()
    x = torch.randn(40, 8)
    res = router(x)
    assert res.indices.shape == res.weights.shape == (40, k) and res.valid is None
    assert res.logits.shape == (40, 5) and res.logits.dtype == torch.float32
    probs = torch.softmax(res.logits, 1)
    want = torch.topk(probs, k, 1)
    assert torch.equal(res.indices, want.indices)
    assert all(len(set(row.tolist())) == k for row in res.indices)
    if k == 1:
        torch.testing.assert_close(res.weights, want.values)   # Tutel: raw prob for k=1
    else:
        torch.testing.assert_close(res.weights.sum(1), torch.ones(40))
        torch.testing.assert_close(res.weights, want.values / want.values.sum(1, keepdim=True))
    torch.testing.assert_close(res.priority, want.values[:, 0])


def test_k_larger_than_experts_is_clamped():
    assert TopKRouter(4, 3, k=5).k == 3


def test_cosine_logits_formula_and_temperature_cap():
    torch.manual_seed(0)
    r = CosineTopKRouter(8, 4, proj_dim=6, init_t=0.5)
    x = torch.randn(10, 8)
    h = r.cosine_projector(x)
    cos = (h / h.norm(dim=1, keepdim=True)) @ (r.sim_matrix / r.sim_matrix.norm(dim=0))
    torch.testing.assert_close(r.compute_logits(x), 2.0 * cos)
    with torch.no_grad():
        r.temperature.fill_(10.0)
    torch.testing.assert_close(r.compute_logits(x), 100.0 * cos, rtol=1e-4, atol=1e-4)
    assert r.weight.shape == (4, 6)


def test_noise_training_only_and_seeded_reproducible():
    router = TopKRouter(8, 6, k=2, gate_noise=1.0)
    x = torch.randn(200, 8)
    router.train()
    torch.manual_seed(3)
    a = router(x)
    torch.manual_seed(3)
    b = router(x)
    torch.manual_seed(4)
    c = router(x)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)
    assert not torch.equal(a.weights, c.weights)
    router.eval()
    d, e = router(x), router(x)
    assert torch.equal(d.weights, e.weights)
    torch.testing.assert_close(d.priority, torch.softmax(d.logits, 1).max(1).values)


def test_noise_has_tutel_scale():
    """noisy - clean logits ~ N(0, (gate_noise / E)^2)."""
    router = TopKRouter(4, 8, k=1, gate_noise=2.0).train()
    torch.manual_seed(0)
    with torch.no_grad():
        router.wg.weight.zero_()          # clean logits 0 -> noisy scores = softmax(noise)
    x = torch.randn(20000, 4)
    torch.manual_seed(1)
    res = router(x)
    torch.manual_seed(1)
    noise = 2.0 * torch.randn(20000, 8) / 8
    torch.testing.assert_close(res.priority, torch.softmax(noise, 1).max(1).values)


def _brute_force_k(p: list[float], tau: float) -> int:
    s = sorted(p, reverse=True)
    for k in range(1, len(s) + 1):
        if sum(s[:k]) >= tau:
            return k
    return len(s)


@pytest.mark.parametrize("tau", [0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("num_active", [1, 3, 6])
def test_mintau_minimal_set_matches_brute_force(tau, num_active):
    torch.manual_seed(int(tau * 10) + num_active)
    router = MinTauRouter(8, 6, tau=tau, num_active=num_active)
    with torch.no_grad():
        router.wg.weight.mul_(torch.rand(6, 1) * 8)      # vary sharpness
    x = torch.randn(300, 8)
    res = router(x)
    probs = torch.softmax(res.logits[:, :num_active], 1)
    k = res.valid.sum(1)
    for t in range(300):
        p = probs[t].tolist()
        want = min(_brute_force_k(p, tau), num_active)
        assert int(k[t]) == want, (t, p, tau)
        chosen = res.indices[t][res.valid[t]]
        assert set(chosen.tolist()) == set(torch.topk(probs[t], want).indices.tolist())
    assert int(res.indices[res.valid].max()) < num_active          # never an inactive slot
    torch.testing.assert_close(res.weights.sum(1), torch.ones(300))
    assert bool((res.weights[~res.valid] == 0).all())
    assert 1 <= int(k.min()) and int(k.max()) <= num_active


def test_mintau_active_mask_and_duplicate_expert():
    torch.manual_seed(0)
    layer = MoELayer(8, 16, num_experts=6, router="mintau",
                     router_kwargs={"tau": 0.95, "num_active": 4})
    assert layer.router.num_active == 4
    x = torch.randn(100, 8)
    layer(x)
    layer.duplicate_expert(1, 4)
    r = layer.router
    assert bool(r.active_mask[4]) and r.num_active == 5
    assert torch.equal(r.weight[4], r.weight[1])
    assert torch.equal(layer.experts.fc1_weight[4], layer.experts.fc1_weight[1])
    assert torch.equal(layer.experts.fc2_bias[4], layer.experts.fc2_bias[1])
    res = r(x)
    assert int(res.indices[res.valid].max()) <= 4
    with torch.no_grad():
        r.active_mask.zero_()
    with pytest.raises(ValueError, match="no active expert"):
        r(x)


def test_mintau_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        MinTauRouter(8, 4, tau=0.0)


def test_mintau_has_no_aux_losses_and_is_dropless():
    layer = MoELayer(8, 16, num_experts=4, router="mintau", capacity_factor=0.1).train()
    layer(torch.randn(64, 8))
    assert layer.aux_losses == {}
    assert layer.routing_stats()["dropped"] == 0.0


def test_cosine_copy_expert_row_writes_sim_matrix():
    r = CosineTopKRouter(8, 4)
    r.copy_expert_row(0, 3)
    assert torch.equal(r.sim_matrix[:, 3], r.sim_matrix[:, 0])


@pytest.mark.parametrize("normalize", [True, False])
def test_soft_router_sums_and_formula(normalize):
    torch.manual_seed(0)
    r = SoftRouter(8, 3, slots_per_expert=2, normalize=normalize)
    x = 5 * torch.randn(4, 7, 8)
    res = r(x)
    assert res.dispatch.shape == res.combine.shape == (4, 7, 6)
    torch.testing.assert_close(res.dispatch.sum(1), torch.ones(4, 6))
    torch.testing.assert_close(res.combine.sum(2), torch.ones(4, 7))
    if normalize:
        xn = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        pn = r.phi / (r.phi.norm(dim=0, keepdim=True) + 1e-6)
        torch.testing.assert_close(res.logits, xn @ pn * r.scale)
        assert bool((res.logits.abs() <= r.scale.abs() + 1e-5).all())  # cosine x scale
    else:
        torch.testing.assert_close(res.logits, x @ r.phi)


def test_soft_scale_is_learnable_and_in_logits_only():
    torch.manual_seed(0)
    layer = MoELayer(8, 16, num_experts=2, router="soft", router_kwargs={"slots_per_expert": 3})
    x = torch.randn(2, 5, 8)
    layer(x).sum().backward()
    assert layer.router.scale.grad is not None and layer.router.phi.grad is not None
    assert math.isclose(float(layer.router.scale.detach()), 1.0)


def test_soft_router_row_normalized_logits_gradcheck():
    """The hand-written backward of the normalised logits passes a double-precision
    gradcheck, and equals autograd's on the reference formula, including an all-zero token
    (where the norm's gradient is taken as 0, as torch does)."""
    from moebench.moe.routers.soft import _RowNormalizedLogits
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    phi = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_RowNormalizedLogits.apply, (x, phi))
    x0 = x.detach().clone()
    x0[2] = 0.0
    x0.requires_grad_()
    g = torch.randn(6, 4, dtype=torch.float64)
    got = torch.autograd.grad(_RowNormalizedLogits.apply(x0, phi), [x0, phi], g)
    want_y = (x0 / (x0.norm(dim=1, keepdim=True) + 1e-6)) @ phi
    want = torch.autograd.grad(want_y, [x0, phi], g)
    torch.testing.assert_close(_RowNormalizedLogits.apply(x0, phi), want_y)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
