"""MoDE: mutual distillation among experts (Xie et al., AAAI 2024; spec mass_mode_mos_tutel §2).

Pure losses over the outputs of ``E`` experts for the same ``N`` samples, computed in O(E)
closed form (no Python loop over expert pairs), plus the dense softmax-gated classifier head
``h(x) = sum_i g_i(x) e_i(x)`` that computes every expert's output once per sample.

Closed forms (ordered pairs i != j, per sample; ``sg`` = stop-gradient):

* KL, with p_i = softmax(z_i / T) and teacher t_j = p_j (or sg(p_j) when detached)::

    sum_{i != j} KL(t_j || p_i) = E * sum_j <t_j, log t_j> - <sum_j t_j, sum_i log p_i>

  The diagonal terms KL(t_i || p_i) are 0 in value and in gradient (t_i = p_i numerically;
  d/dz KL(p || softmax(z)) = softmax(z) - p), so the sum over all (i, j) equals the sum over
  ordered pairs, detached or not.
* Squared L2, teacher t_j = h_j (or sg(h_j))::

    sum_{i != j} ||h_i - t_j||^2 = E sum_i ||h_i||^2 + E sum_j ||t_j||^2 - 2 <sum_i h_i, sum_j t_j>

  (= 2E^2 (mean_i ||h_i||^2 - ||mean_i h_i||^2) without detaching: E^2 x twice the variance.)
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe import backend
from moebench.moe.experts import BatchedExperts

DISTILL_KINDS = ("kl", "mse")


def _upcast(x: Tensor) -> Tensor:
    """fp16/bf16 -> fp32; fp32/fp64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_outputs(outputs: Tensor) -> None:
    if outputs.dim() != 3:
        raise ValueError(f"expert outputs must be [E, N, C], got {tuple(outputs.shape)}")


def pairwise_kl(logits: Tensor, temperature: float = 1.0,
                detach_teacher: bool = False) -> Tensor:
    """logits [E, N, C] -> [N]: sum over ordered expert pairs i != j of KL(t_j || p_i).

    p_i = softmax(logits_i / temperature) (at least fp32); t_j = p_j, or sg(p_j) with
    ``detach_teacher`` (deep-mutual-learning: every expert is a student of the others).
    """
    _check_outputs(logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = F.log_softmax(_upcast(logits) / temperature, dim=-1)            # [E, N, C]
    log_t = logp.detach() if detach_teacher else logp
    t = log_t.exp()
    n_exp = logits.shape[0]
    self_term = (t * log_t).sum(dim=(0, 2))                                # [N]
    cross = (t.sum(dim=0) * logp.sum(dim=0)).sum(dim=-1)                   # [N]
    return n_exp * self_term - cross


def pairwise_sq_dist(outputs: Tensor, detach_teacher: bool = False) -> Tensor:
    """outputs [E, N, D] -> [N]: sum over ordered pairs i != j of ||h_i - t_j||^2 (>= fp32)."""
    _check_outputs(outputs)
    h = _upcast(outputs)
    t = h.detach() if detach_teacher else h
    n_exp = h.shape[0]
    sq_h = h.pow(2).sum(dim=(0, 2))
    sq_t = sq_h.detach() if detach_teacher else sq_h
    return n_exp * (sq_h + sq_t) - 2.0 * (h.sum(dim=0) * t.sum(dim=0)).sum(dim=-1)


def mutual_distillation_loss(outputs: Tensor, kind: str = "kl", temperature: float = 1.0,
                             detach_teacher: bool = True) -> Tensor:
    """outputs [E, N, C] -> scalar: the mean over samples and over the E(E-1) ordered pairs.

    ``kind="kl"``: pairwise KL of the tempered softmaxes, times temperature^2 (Hinton's
    scaling keeps gradient magnitudes comparable across T); ``"mse"``: pairwise squared L2
    divided by the feature size D. Zero (still a graph node) when E < 2.
    """
    _check_outputs(outputs)
    n_exp, _, width = outputs.shape
    if kind not in DISTILL_KINDS:
        raise ValueError(f"unknown distillation kind {kind!r}; valid: {', '.join(DISTILL_KINDS)}")
    if n_exp < 2:
        return _upcast(outputs).sum() * 0.0
    if kind == "kl":
        per_sample = pairwise_kl(outputs, temperature, detach_teacher) * float(temperature) ** 2
    else:
        per_sample = pairwise_sq_dist(outputs, detach_teacher) / width
    return per_sample.mean() / (n_exp * (n_exp - 1))


def all_expert_outputs(experts: BatchedExperts, x: Tensor) -> Tensor:
    """Every expert on every row, once: x [N, D] -> [E, N, D_out] (two batched GEMMs)."""
    h = torch.matmul(x, experts.fc1_weight.transpose(1, 2))                 # [E, N, H]
    if experts.fc1_bias is not None:
        h = h + experts.fc1_bias.unsqueeze(1)
    h = experts.drop(experts.act(h))
    if experts.norms is not None:
        h = torch.stack([norm(h[e]) for e, norm in enumerate(experts.norms)])
    y = torch.matmul(h, experts.fc2_weight.transpose(1, 2))                 # [E, N, D_out]
    if experts.fc2_bias is not None:
        y = y + experts.fc2_bias.unsqueeze(1)
    return y


class MoDEHead(nn.Module):
    """Dense softmax-gated mixture of E classifier experts over pooled features (MoDE's
    classic MoE form): g = softmax(gate(f)) [B, E], e_i = expert_i(f) [B, C] (FFN
    D -> H -> C), logits h = sum_i g_i e_i [B, C].

    Forwards with autograd enabled keep ``expert_logits`` [E, B, C] and ``gate_probs``
    [B, E] for the distillation loss (None under no_grad); training-mode forwards accumulate
    the gate mass per expert for :meth:`routing_stats`.
    """

    def __init__(self, in_features: int, num_classes: int, num_experts: int,
                 hidden_features: int, drop: float = 0.0, act_layer: Any = nn.GELU,
                 device=None, dtype=None) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        dd = {"device": device, "dtype": dtype}
        self.num_experts = num_experts
        self.gate = nn.Linear(in_features, num_experts, **dd)
        self.experts = BatchedExperts(num_experts, in_features, hidden_features, num_classes,
                                      act=act_layer, drop=drop, **dd)
        self.expert_logits: Optional[Tensor] = None
        self.gate_probs: Optional[Tensor] = None
        self.reset_routing_stats()

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, D] -> mixture logits [B, C]."""
        gate = F.softmax(self.gate(feats).float(), dim=-1).to(feats.dtype)     # [B, E]
        outs = all_expert_outputs(self.experts, feats)                          # [E, B, C]
        backend.note("torch", self.experts.num_experts)   # dense classifier experts
        logits = torch.einsum("be,ebc->bc", gate, outs)
        keep = torch.is_grad_enabled()
        self.expert_logits, self.gate_probs = (outs, gate) if keep else (None, None)
        if self.training:
            mass = gate.detach().double().sum(0)
            self._load = mass if self._load is None else self._load + mass
            self._samples += feats.shape[0]
        return logits

    def reset_routing_stats(self) -> None:
        """Forget the gate mass accumulated so far."""
        self._load: Optional[Tensor] = None
        self._samples = 0

    def routing_stats(self, reset: bool = True) -> dict[str, Any]:
        """{"load": share of gate mass per expert (sums to 1), "dropped": 0.0 (dense gate),
        "tokens": samples seen, "mean_k": E (every expert is used)} since the last reset."""
        total = float(self._load.sum()) if self._load is not None else 0.0
        load = [float(v) / total for v in self._load.tolist()] if total > 0 \
            else [0.0] * self.num_experts
        stats = {"load": load, "dropped": 0.0, "tokens": int(self._samples),
                 "mean_k": float(self.num_experts) if self._samples else 0.0}
        if reset:
            self.reset_routing_stats()
        return stats
