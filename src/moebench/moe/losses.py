"""Auxiliary MoE losses as pure functions (unweighted; the caller applies weights).

All take fp32 tensors of ``T`` tokens and ``E`` experts and return a 0-d tensor.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation ``Var(v) / (Mean(v)^2 + 1e-10)`` of v [E]
    (unbiased variance, as torch's default; 0 for a single expert)."""
    v = v.float()
    if v.numel() < 2:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + 1e-10)


def importance_load_loss(clean_logits: Tensor, topk_noisy_logits: Tensor,
                         gate_noise: float, num_experts: int) -> Tensor:
    """Shazeer-2017 importance + load loss exactly as Tutel's ``load_importance_loss``.

    clean_logits [T, E]; topk_noisy_logits [T, k] (noisy logits of the chosen experts, in
    rank order). importance = sum_t softmax(clean); load_e = sum_t Phi((softmax(clean)_te
    - kth_noisy_logit_t) / (gate_noise / E)) (Tutel's quirk: probabilities compared with
    a logit). Returns (CV²(importance) + CV²(load)) / 2, or 0 when ``gate_noise <= 0``.
    """
    if gate_noise <= 0:
        return clean_logits.new_zeros(())
    probs = F.softmax(clean_logits.float(), dim=1)
    l_imp = cv_squared(probs.sum(0))
    threshold = topk_noisy_logits[:, -1:].float()
    std = gate_noise / num_experts
    prob = 0.5 * (1.0 + torch.erf((probs - threshold) / (std * math.sqrt(2.0))))
    l_load = cv_squared(prob.sum(0))
    return (l_imp + l_load) / 2.0


def gshard_loss(scores: Tensor, top1: Tensor) -> Tensor:
    """GShard load-balancing loss as Tutel: ``E / T^2 * sum_e (sum_t p_te) * count_e``.

    scores [T, E] softmax of the (noisy) logits; top1 [T] the rank-0 expert per token.
    Equals 1.0 for a perfectly balanced router.
    """
    num_tokens, num_experts = scores.shape
    counts = torch.bincount(top1, minlength=num_experts).to(scores.dtype)
    return (scores.sum(0) * counts).sum() * num_experts / float(num_tokens * num_tokens)


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss ``mean_t logsumexp(logits_t)^2`` for logits [T, E]."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
