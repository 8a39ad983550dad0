"""``SoftMoELayerWrapper``: turn any ``[batch, length, dim]`` layer into a Soft-MoE layer
(Puigcerver et al., "From Sparse to Soft Mixtures of Experts", arXiv 2308.00951 §2; spec
vision_dg §4). API of bwconrad/soft-moe; routing math shared with the core's ``soft``
router (:class:`moebench.moe.routers.soft.SoftRouter`), so both give identical weights.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from moebench.moe.routers.base import SoftRouterResult
from moebench.moe.routers.soft import SoftRouter


class SoftMoELayerWrapper(nn.Module):
    """Soft-MoE over ``num_experts`` instances of ``layer(**layer_kwargs)``.

    Per sequence X [m, dim], with S = num_experts * slots_per_expert slots:

    * logits L = X Φ [m, S] with Φ = ``phi`` [dim, num_experts, slots_per_expert]
      (init N(0, dim^-0.5)). With ``normalize`` (paper §2.3) the logits use
      l2_normalize(X) and ``scale`` * l2_normalize(Φ) (over dim, eps 1e-6, learnable scalar
      ``scale`` init 1) — in the logits only.
    * dispatch D = softmax over the m tokens (each slot's column sums to 1); slot inputs
      X̃ = Dᵀ X [S, dim] built from the *unnormalised* X.
    * expert i maps its slots X̃[i*p:(i+1)*p] as a [batch, p, dim] input to [batch, p, d_out].
    * combine C = softmax over all S slots (each token's row sums to 1); Y = C Ỹ [m, d_out].

    Deviation of bwconrad/soft-moe (not followed here): it also builds the slots from the
    l2-normalised X and normalises with eps 1e-12 instead of the paper's 1e-6.

    ``layer_kwargs`` may hold ``device``/``dtype``; they also place Φ and ``scale``.
    forward(x [batch, m, dim]) -> [batch, m, d_out]. Every expert must return a tensor of
    shape [batch, p, d_out] (e.g. ``nn.Linear``, timm ``Mlp``,
    ``nn.TransformerEncoderLayer(batch_first=True)``). No token dropping, no aux loss.
    """

    def __init__(self, dim: int, num_experts: int, slots_per_expert: int,
                 layer: Callable[..., nn.Module], normalize: bool = True,
                 **layer_kwargs: Any) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if slots_per_expert < 1:
            raise ValueError(f"slots_per_expert must be >= 1, got {slots_per_expert}")
        dd = {k: layer_kwargs[k] for k in ("device", "dtype") if k in layer_kwargs}
        self.dim, self.num_experts, self.slots_per_expert = dim, num_experts, slots_per_expert
        self.num_slots = num_experts * slots_per_expert
        self.normalize = normalize
        self.router = SoftRouter(dim, num_experts, slots_per_expert=slots_per_expert,
                                 normalize=normalize, **dd)
        self.experts = nn.ModuleList([layer(**layer_kwargs) for _ in range(num_experts)])

    @property
    def phi(self) -> Tensor:
        """Slot parameters Φ [dim, num_experts, slots_per_expert] (a view of ``router.phi``)."""
        return self.router.phi.view(self.dim, self.num_experts, self.slots_per_expert)

    @property
    def scale(self) -> Optional[Tensor]:
        """Learnable logit scale [1] (None without ``normalize``)."""
        return self.router.scale

    def routing(self, x: Tensor) -> SoftRouterResult:
        """x [batch, m, dim] -> dispatch / combine / logits, each [batch, m, S]."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"SoftMoELayerWrapper expects x [batch, length, {self.dim}], "
                             f"got {tuple(x.shape)}")
        return self.router(x)

    def forward(self, x: Tensor) -> Tensor:
        """x [batch, m, dim] -> [batch, m, d_out]."""
        res = self.routing(x)
        b, p = x.shape[0], self.slots_per_expert
        slots = torch.bmm(res.dispatch.transpose(1, 2).to(x.dtype), x)          # [b, S, dim]
        ys = torch.cat([expert(slots[:, i * p:(i + 1) * p])
                        for i, expert in enumerate(self.experts)], dim=1)     # [b, S, d_out]
        if ys.shape[:2] != (b, self.num_slots):
            raise ValueError(f"experts must map [batch, {p}, dim] to [batch, {p}, d_out], "
                             f"got {tuple(ys.shape)} for all slots")
        return torch.bmm(res.combine.to(ys.dtype), ys)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_experts={self.num_experts}, "
                f"slots_per_expert={self.slots_per_expert}, normalize={self.normalize}")
