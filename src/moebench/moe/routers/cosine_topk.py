"""``cosine_topk``: GMoE / Tutel ``cosine_top`` router (spec vision_dg §1.2 item 2)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe.routers.base import TopKRouterBase
from moebench.registry import ROUTERS

_MAX_LOG_SCALE = math.log(1.0 / 0.01)  # logit scale capped at 100, as Tutel


@ROUTERS.register("cosine_topk")
class CosineTopKRouter(TopKRouterBase):
    """logits = cos(proj(x), sim_matrix[:, e]) * exp(min(temperature, log 100)).

    proj = Linear(D, proj_dim) with bias; ``sim_matrix`` [proj_dim, E] ~ N(0, 0.01);
    ``temperature`` (log scale) initialised to log(1 / init_t). Computed in fp32.
    """

    def __init__(self, model_dim: int, num_experts: int, *, k: int = 1,
                 gate_noise: float = 0.0, normalize_gate: Optional[bool] = None,
                 proj_dim: int = 256, init_t: float = 0.5, device=None, dtype=None) -> None:
        super().__init__(model_dim, num_experts, k=k, gate_noise=gate_noise,
                         normalize_gate=normalize_gate)
        if init_t <= 0:
            raise ValueError(f"init_t must be > 0, got {init_t}")
        dd = {"device": device, "dtype": dtype}
        self.cosine_projector = nn.Linear(model_dim, proj_dim, **dd)
        self.sim_matrix = nn.Parameter(torch.empty(proj_dim, num_experts, **dd))
        nn.init.normal_(self.sim_matrix, 0.0, 0.01)
        self.temperature = nn.Parameter(torch.full((1,), math.log(1.0 / init_t), **dd))

    @property
    def weight(self) -> Tensor:
        """Per-expert routing embeddings as rows [E, proj_dim] (a view of sim_matrix.T)."""
        return self.sim_matrix.t()

    def compute_logits(self, x: Tensor) -> Tensor:
        """x [T, D] -> logits [T, E] (fp32)."""
        w = self.cosine_projector.weight.float()
        b = self.cosine_projector.bias
        h = F.linear(x.float(), w, None if b is None else b.float())
        sim = F.normalize(h, dim=1) @ F.normalize(self.sim_matrix.float(), dim=0)
        scale = torch.clamp(self.temperature.float(), max=_MAX_LOG_SCALE).exp()
        return sim * scale
