"""``mintau``: MASS MinTau gate — per token the smallest set of experts, in descending
probability, whose cumulative softmax mass reaches ``tau`` (spec mass_mode_mos_tutel §1.2)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe.routers.base import Router, RouterResult
from moebench.registry import ROUTERS


@ROUTERS.register("mintau")
class MinTauRouter(Router):
    """logits = x @ weight.T (fp32, no noise, no temperature); inactive experts are masked
    to probability 0; per token k(x) = min{k : sum_{j<=k} p_(j) >= tau}, clamped to
    [1, #active]; the selected probabilities are renormalised to sum to 1. Dropless, no
    aux loss (MASS: none). ``k`` and ``gate_noise`` are accepted and ignored (MASS
    overrides them).

    MASS expansion: all ``num_experts`` slots exist from the start; ``active_mask`` [E]
    (bool buffer, first ``num_active`` True) selects the live ones. To add an expert copy
    its weights with ``MoELayer.duplicate_expert(src, dst)`` (expert tensors + router row
    ``weight[dst] <- weight[src]`` + ``active_mask[dst] = True``).
    """

    dropless = True

    def __init__(self, model_dim: int, num_experts: int, *, k: int = 1,
                 gate_noise: float = 0.0, tau: float = 0.9, num_active: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__(model_dim, num_experts)
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        num_active = num_experts if num_active is None else num_active
        if not 1 <= num_active <= num_experts:
            raise ValueError(f"num_active must be in [1, {num_experts}], got {num_active}")
        self.tau = float(tau)
        self.wg = nn.Linear(model_dim, num_experts, bias=False, device=device, dtype=dtype)
        mask = torch.arange(num_experts, device=device) < num_active
        self.register_buffer("active_mask", mask)

    @property
    def weight(self) -> nn.Parameter:
        """Router matrix [E, D] (row e scores expert slot e)."""
        return self.wg.weight

    @property
    def num_active(self) -> int:
        return int(self.active_mask.sum())

    def compute_logits(self, x: Tensor) -> Tensor:
        """x [T, D] -> logits [T, E] (fp32, inactive experts included)."""
        return F.linear(x.float(), self.wg.weight.float())

    def forward(self, x: Tensor) -> RouterResult:
        """x [T, D] -> RouterResult with variable k: indices/weights/valid [T, k_max]."""
        logits = self.compute_logits(x)
        if not bool(self.active_mask.any()):
            raise ValueError("mintau router has no active expert (active_mask all False)")
        probs = F.softmax(logits.masked_fill(~self.active_mask, float("-inf")), dim=1)
        sorted_p, order = torch.sort(probs, dim=1, descending=True)
        mass_before = torch.cumsum(sorted_p, dim=1) - sorted_p      # mass of higher ranks
        rank = torch.arange(self.num_experts, device=x.device)
        select = (mass_before < self.tau) & (rank < self.active_mask.sum())
        select[:, 0] = True
        k_max = int(select.sum(1).max())
        valid = select[:, :k_max]
        chosen = sorted_p[:, :k_max] * valid
        weights = chosen / chosen.sum(1, keepdim=True)
        return RouterResult(indices=order[:, :k_max], weights=weights, valid=valid,
                            priority=sorted_p[:, 0].detach(), logits=logits,
                            stats={"mean_k": valid.sum(1).float().mean().detach()})
