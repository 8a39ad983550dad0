"""MoDE: closed-form mutual distillation == explicit pairwise sums, the head computes each
expert once, the KD gradient reaches every expert, the algorithm's loss is additive."""
from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers_hparams import tiny_hparams

import moebench.dg.algorithms.mode_distill as distill
from moebench.dg.algorithms import algorithm_class, HparamsError
from moebench.dg.algorithms.mode_distill import (
    MoDEHead,
    all_expert_outputs,
    mutual_distillation_loss,
    pairwise_kl,
    pairwise_sq_dist,
)

SHAPE, N_CLASSES = (1, 16, 16), 10


def explicit_kl(logits: torch.Tensor, temperature: float, detach: bool) -> torch.Tensor:
    """Python double loop: sum_{i != j} KL(t_j || p_i) per sample, [N]."""
    logp = F.log_softmax(logits.double() / temperature, dim=-1)
    total = torch.zeros(logits.shape[1], dtype=torch.float64)
    for i, j in itertools.permutations(range(logits.shape[0]), 2):
        log_t = logp[j].detach() if detach else logp[j]
        total = total + (log_t.exp() * (log_t - logp[i])).sum(-1)
    return total


def explicit_sq(h: torch.Tensor, detach: bool) -> torch.Tensor:
    total = torch.zeros(h.shape[1], dtype=torch.float64)
    for i, j in itertools.permutations(range(h.shape[0]), 2):
        t = h[j].detach() if detach else h[j]
        total = total + (h[i].double() - t.double()).pow(2).sum(-1)
    return total


def _grad(fn: Any, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x)
    if not value.requires_grad:                           # E = 1: no pairs, constant 0
        return value.detach().double(), torch.zeros_like(x, dtype=torch.float64)
    (value * w).sum().backward()
    return value.detach().double(), x.grad.double()


@pytest.mark.parametrize("n_exp", [1, 2, 3, 6, 16])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("detach", [False, True])
def test_pairwise_kl_closed_form_equals_double_loop(n_exp: int, temperature: float,
                                                    detach: bool) -> None:
    g = torch.Generator().manual_seed(n_exp * 10 + int(temperature * 4))
    logits = 3 * torch.randn(n_exp, 7, 5, generator=g, dtype=torch.float64)
    w = torch.rand(7, generator=g, dtype=torch.float64)  # per-sample weights: checks grads
    v_fast, g_fast = _grad(lambda z: pairwise_kl(z, temperature, detach), logits, w)
    v_ref, g_ref = _grad(lambda z: explicit_kl(z, temperature, detach), logits, w)
    assert torch.allclose(v_fast, v_ref, rtol=1e-9, atol=1e-9)
    assert torch.allclose(g_fast, g_ref, rtol=1e-9, atol=1e-9)
    assert torch.all(v_fast >= -1e-5) and (n_exp == 1 or v_fast.max() > 0)


@pytest.mark.parametrize("n_exp", [2, 4, 9])
@pytest.mark.parametrize("detach", [False, True])
def test_pairwise_sq_dist_closed_form_equals_double_loop(n_exp: int, detach: bool) -> None:
    g = torch.Generator().manual_seed(n_exp)
    h = torch.randn(n_exp, 6, 11, generator=g, dtype=torch.float64)
    w = torch.rand(6, generator=g, dtype=torch.float64)
    v_fast, g_fast = _grad(lambda z: pairwise_sq_dist(z, detach), h, w)
    v_ref, g_ref = _grad(lambda z: explicit_sq(z, detach), h, w)
    assert torch.allclose(v_fast, v_ref, rtol=1e-6) and torch.allclose(g_fast, g_ref, rtol=1e-6)
    mean, second = h.mean(0), h.pow(2).sum(-1).mean(0)      # 2E^2 * (E||h||^2 - ||E h||^2)
    assert torch.allclose(v_fast, 2 * n_exp**2 * (second - mean.pow(2).sum(-1)), rtol=1e-6)


def test_mutual_distillation_loss_normalisation() -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 8, 3, generator=g)
    kl = mutual_distillation_loss(out, "kl", temperature=2.0)
    assert kl == pytest.approx(float(explicit_kl(out, 2.0, True).mean()) * 4 / 20, rel=1e-5)
    mse = mutual_distillation_loss(out, "mse")
    assert mse == pytest.approx(float(explicit_sq(out, False).mean()) / 3 / 20, rel=1e-5)
    same = out[:1].expand(4, -1, -1)
    assert float(mutual_distillation_loss(same, "kl")) == pytest.approx(0.0, abs=1e-6)
    assert float(mutual_distillation_loss(out[:1], "kl")) == 0.0
    with pytest.raises(ValueError, match="unknown distillation kind 'l1'"):
        mutual_distillation_loss(out, "l1")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pairwise_kl(out, 0.0)


def test_head_computes_every_expert_once_and_mixes_with_softmax_gate() -> None:
    torch.manual_seed(0)
    head = MoDEHead(12, 5, num_experts=4, hidden_features=8)
    feats = torch.randn(9, 12)
    outs = all_expert_outputs(head.experts, feats)
    for e in range(4):                                    # == the core's per-expert path
        assert torch.allclose(outs[e], head.experts.expert_forward(e, feats), atol=1e-6)
    logits = head(feats)
    gate = F.softmax(head.gate(feats), dim=-1)
    assert torch.allclose(head.gate_probs.sum(-1), torch.ones(9))
    assert torch.allclose(logits, sum(gate[:, e:e + 1] * outs[e] for e in range(4)), atol=1e-6)
    stats = head.routing_stats()
    assert stats["tokens"] == 9 and math.isclose(sum(stats["load"]), 1.0)
    assert stats["load"] == pytest.approx(gate.mean(0).tolist(), rel=1e-5)
    with torch.no_grad():
        head(feats)
    assert head.expert_logits is None                     # nothing kept for inference


def make(seed: int = 0, **overrides: Any):
    torch.manual_seed(seed)
    return algorithm_class("mode")(SHAPE, N_CLASSES, 3, tiny_hparams("mode", **overrides),
                                  n_steps=10)


def batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(4, *SHAPE, generator=g), torch.randint(0, N_CLASSES, (4,), generator=g))
            for _ in range(3)]


def test_kd_gradient_reaches_every_expert_even_when_gate_picks_one() -> None:
    alg = make()
    head = alg.head
    with torch.no_grad():                                 # gate sends every sample to expert 0
        head.gate.weight.zero_()
        head.gate.bias.copy_(torch.tensor([60.0, 0.0, 0.0, 0.0]))
    x = torch.cat([x for x, _ in batches()])
    y = torch.cat([y for _, y in batches()])
    grads = {}
    for name in ("task", "kd"):
        alg.zero_grad(set_to_none=True)
        logits = alg.predict(x)
        loss = F.cross_entropy(logits, y) if name == "task" else alg.aux_loss()
        loss.backward()
        grads[name] = [head.experts.fc1_weight.grad.abs().sum((1, 2)),
                       head.experts.fc2_weight.grad.abs().sum((1, 2))]
    for g in grads["task"]:                               # narrow vision: only expert 0 learns
        assert g[0] > 1e-3 and torch.all(g[1:] < 1e-12)
    for g in grads["kd"]:                                 # distillation reaches all experts
        assert torch.all(g > 1e-6)


def test_update_loss_is_task_plus_alpha_kd_with_one_expert_pass(monkeypatch) -> None:
    alg = make(distill_alpha=0.5)
    data = batches()
    x, y = torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])
    ce = float(F.cross_entropy(alg.predict(x), y).detach())
    kd = float(mutual_distillation_loss(alg.head.expert_logits.detach(), "kl", 2.0))
    calls = []
    real = distill.all_expert_outputs
    monkeypatch.setattr(distill, "all_expert_outputs",
                        lambda *a: calls.append(1) or real(*a))
    alg.routing_stats()
    out = alg.update(data)
    assert len(calls) == 1                                # experts run once per step
    assert out["loss_aux"] == pytest.approx(0.5 * kd, rel=1e-5) and out["loss_aux"] > 0
    assert out["loss"] == pytest.approx(ce + 0.5 * kd, rel=1e-5)
    stats = alg.routing_stats()
    assert list(stats) == ["head"] and stats["head"]["tokens"] == 12
    assert math.isclose(sum(stats["head"]["load"]), 1.0) and len(stats["head"]["load"]) == 4
    assert make(distill_alpha=0.0).update(data)["loss_aux"] == 0.0


@pytest.mark.parametrize("overrides, match", [
    ({"distill_alpha": -0.1}, "distill_alpha: -0.1 is below the minimum 0"),
    ({"distill_temperature": 0}, "distill_temperature: 0 must be above 0"),
    ({"num_experts": 0}, "num_experts: 0 is below the minimum 1"),
    ({"expert_hidden": 0}, "expert_hidden: 0 is below the minimum 1"),
    ({"expert_drop": 1.0}, "expert_drop: 1.0 must be below 1"),
])
def test_bad_mode_hparams_one_line(overrides: dict, match: str) -> None:
    with pytest.raises(HparamsError, match=match) as err:
        make(**overrides)
    assert "\n" not in str(err.value)
