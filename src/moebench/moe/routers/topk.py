"""``topk``: linear softmax top-k router (Tutel ``top`` gate)."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe.routers.base import TopKRouterBase
from moebench.registry import ROUTERS


@ROUTERS.register("topk")
class TopKRouter(TopKRouterBase):
    """logits = x @ wg.weight.T in fp32, wg = Linear(D, E, bias=False).

    ``weight`` [E, D] is the router matrix (row e scores expert e).
    """

    def __init__(self, model_dim: int, num_experts: int, *, k: int = 1,
                 gate_noise: float = 0.0, normalize_gate: Optional[bool] = None,
                 device=None, dtype=None) -> None:
        super().__init__(model_dim, num_experts, k=k, gate_noise=gate_noise,
                         normalize_gate=normalize_gate)
        self.wg = nn.Linear(model_dim, num_experts, bias=False, device=device, dtype=dtype)

    @property
    def weight(self) -> nn.Parameter:
        """Router matrix [E, D]."""
        return self.wg.weight

    def compute_logits(self, x: Tensor) -> Tensor:
        """x [T, D] -> logits [T, E] (fp32)."""
        return F.linear(x.float(), self.wg.weight.float())
