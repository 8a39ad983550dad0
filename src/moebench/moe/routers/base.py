"""Router results and the shared top-k routing logic (Tutel semantics).

A *token-choice* router maps flattened tokens ``x [T, D]`` to a :class:`RouterResult`:
per token up to ``k`` expert indices with combine weights, a priority score for
batch-prioritised capacity assignment, the clean logits, and its aux losses as a dict
(unweighted: loss weights are applied by the algorithm, never here).
The Soft-MoE router returns a :class:`SoftRouterResult` instead (see ``soft.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe import losses


@dataclass(frozen=True)
class RouterResult:
    """Routing decision of a token-choice router for ``T`` tokens and ``E`` experts.

    indices:  [T, k] int64, chosen expert per rank (rank 0 = best). Entries where
              ``valid`` is False are meaningless (set to 0).
    weights:  [T, k] combine weights (fp32, differentiable w.r.t. the router), 0 where invalid.
    valid:    [T, k] bool, or None when every entry is a real choice (fixed k).
    priority: [T] score used to order tokens under batch-prioritised routing (higher first).
    logits:   [T, E] clean router logits (fp32).
    aux_losses: unweighted losses, e.g. {"importance_load", "gshard", "z_loss"}; {} if none.
    stats:    extra detached statistics (e.g. {"mean_k": Tensor}).
    """

    indices: Tensor
    weights: Tensor
    valid: Optional[Tensor]
    priority: Tensor
    logits: Tensor
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class SoftRouterResult:
    """Soft-MoE routing for ``B`` sequences of ``m`` tokens and ``S = E * p`` slots.

    dispatch: [B, m, S], softmax over tokens (dim 1): each slot's column sums to 1.
    combine:  [B, m, S], softmax over slots (dim 2): each token's row sums to 1.
    logits:   [B, m, S] (fp32).
    """

    dispatch: Tensor
    combine: Tensor
    logits: Tensor
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


class Router(nn.Module):
    """Base class. Subclasses set ``token_choice`` and ``dropless``.

    Constructor convention (what :class:`~moebench.moe.MoELayer` calls):
    ``Router(model_dim, num_experts, *, k=1, gate_noise=0.0, device=None, dtype=None,
    **router_kwargs)``.
    """

    token_choice: bool = True   # False: Soft-MoE (expects [B, m, D])
    dropless: bool = False      # True: capacity factor is forced to 0 (dropless)

    def __init__(self, model_dim: int, num_experts: int) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.model_dim = model_dim
        self.num_experts = num_experts

    @property
    def weight(self) -> Tensor:
        """Per-expert router rows [E, ·] (writable view; see each router)."""
        raise NotImplementedError

    @torch.no_grad()
    def copy_expert_row(self, src: int, dst: int) -> None:
        """Copy expert ``src``'s router row into ``dst`` (``weight[dst] <- weight[src]``)."""
        w = self.weight
        w[dst].copy_(w[src])


class TopKRouterBase(Router):
    """Noisy softmax top-k routing on logits given by :meth:`compute_logits` (Tutel
    ``extract_critical``): training noise ``gate_noise * N(0,1) / E`` added to the logits,
    scores = softmax(noisy logits), top-k; the k gate values are renormalised to sum to 1
    when ``normalize_gate`` is None and k > 1 (Tutel), always when True, never when False.
    """

    def __init__(self, model_dim: int, num_experts: int, *, k: int = 1,
                 gate_noise: float = 0.0, normalize_gate: Optional[bool] = None) -> None:
        super().__init__(model_dim, num_experts)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if gate_noise < 0:
            raise ValueError(f"gate_noise must be >= 0, got {gate_noise}")
        self.k = min(k, num_experts)
        self.gate_noise = float(gate_noise)
        self.normalize_gate = normalize_gate

    def compute_logits(self, x: Tensor) -> Tensor:
        """x [T, D] -> clean logits [T, E] in fp32."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> RouterResult:
        """x [T, D] -> RouterResult with indices/weights [T, k]."""
        logits = self.compute_logits(x)
        use_noise = self.training and self.gate_noise > 0
        noisy = logits + self.gate_noise * torch.randn_like(logits) / self.num_experts \
            if use_noise else logits
        scores = F.softmax(noisy, dim=1)
        top_scores, indices = torch.topk(scores, self.k, dim=1)
        normalize = self.normalize_gate if self.normalize_gate is not None else self.k > 1
        weights = top_scores
        if normalize:
            denom = top_scores.sum(dim=1, keepdim=True)
            weights = top_scores / denom.clamp(min=torch.finfo(denom.dtype).eps)
        aux = {
            "importance_load": losses.importance_load_loss(
                logits, noisy.gather(1, indices), self.gate_noise, self.num_experts),
            "gshard": losses.gshard_loss(scores, indices[:, 0]),
            "z_loss": losses.router_z_loss(logits),
        }
        return RouterResult(indices=indices, weights=weights, valid=None,
                            priority=top_scores[:, 0].detach(), logits=logits, aux_losses=aux)
