"""``soft``: Soft-MoE router (Puigcerver et al. 2023, §2; spec vision_dg §4.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe.routers.base import Router, SoftRouterResult
from moebench.registry import ROUTERS

_EPS = 1e-6  # the paper's l2-normalisation epsilon


def _l2_normalize(x: Tensor, dim: int) -> Tensor:
    return x / (x.norm(dim=dim, keepdim=True) + _EPS)


class _RowNormalizedLogits(torch.autograd.Function):
    """logits = (x @ phi) / (|x| + eps) for rows x [N, D], phi [D, S], with a hand-written
    backward: one [N, S] pass for the row scale and one fused [N, D] pass for the norm,
    instead of autograd's division and norm backward chains over both tensors."""

    @staticmethod
    def forward(ctx, x, phi):
        norm = x.norm(dim=1)
        inv = 1.0 / (norm + _EPS)
        logits = torch.mm(x, phi).mul_(inv.unsqueeze(1))
        ctx.save_for_backward(x, phi, norm, inv, logits)
        return logits

    @staticmethod
    def backward(ctx, grad):
        x, phi, norm, inv, logits = ctx.saved_tensors
        g_mm = grad * inv.unsqueeze(1)                         # d/d(x @ phi)
        gx = gphi = None
        if ctx.needs_input_grad[0]:
            # d/d|x| of mm * inv = -(grad . logits) * inv; d|x|/dx = x / |x| (0 at x = 0)
            g_norm = -(grad * logits).sum(1) * inv
            coef = torch.where(norm > 0, g_norm / norm, torch.zeros_like(norm))
            gx = torch.mm(g_mm, phi.t()).addcmul_(x, coef.unsqueeze(1))
        if ctx.needs_input_grad[1]:
            gphi = torch.mm(x.t(), g_mm)
        return gx, gphi


@ROUTERS.register("soft")
class SoftRouter(Router):
    """Per sequence X [m, D]: logits = X Φ with Φ [D, S], S = E * slots_per_expert.
    Dispatch = softmax over tokens (each slot's column sums to 1); combine = softmax over
    slots (each token's row sums to 1). With ``normalize`` (paper §2.3) the logits use
    l2_normalize(X) and scale * l2_normalize(Φ) (over D, eps 1e-6, learnable scalar
    ``scale`` init 1); the slots still mix the unnormalised X. Slot s belongs to expert
    s // slots_per_expert. Input must be [B, m, D]. ``k`` and ``gate_noise`` are ignored.
    """

    token_choice = False
    dropless = True

    def __init__(self, model_dim: int, num_experts: int, *, k: int = 1,
                 gate_noise: float = 0.0, slots_per_expert: int = 1, normalize: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(model_dim, num_experts)
        if slots_per_expert < 1:
            raise ValueError(f"slots_per_expert must be >= 1, got {slots_per_expert}")
        dd = {"device": device, "dtype": dtype}
        self.slots_per_expert = slots_per_expert
        self.num_slots = num_experts * slots_per_expert
        self.normalize = normalize
        self.phi = nn.Parameter(torch.empty(model_dim, self.num_slots, **dd))
        nn.init.normal_(self.phi, 0.0, model_dim ** -0.5)
        self.scale = nn.Parameter(torch.ones(1, **dd)) if normalize else None

    @property
    def weight(self) -> Tensor:
        """Slot embeddings as rows [S, D] (a view of phi.T)."""
        return self.phi.t()

    def copy_expert_row(self, src: int, dst: int) -> None:
        """Copy expert ``src``'s slot embeddings into expert ``dst``'s slots."""
        p = self.slots_per_expert
        with torch.no_grad():
            self.phi[:, dst * p:(dst + 1) * p].copy_(self.phi[:, src * p:(src + 1) * p])

    def forward(self, x: Tensor) -> SoftRouterResult:
        """x [B, m, D] -> dispatch, combine, logits [B, m, S]."""
        if x.dim() != 3:
            raise ValueError(f"soft router needs x [B, m, D], got {tuple(x.shape)}")
        xf, phi = x.float(), self.phi.float()
        if not self.normalize:
            logits = xf @ phi
        else:   # l2_normalize(x) @ Φ' == (x @ Φ') / (|x| + eps): scale the [B, m, S] logits
            phi = self.scale.float() * _l2_normalize(phi, dim=0)   # rather than the [B, m, D] x
            b, m, d = xf.shape
            logits = _RowNormalizedLogits.apply(xf.reshape(b * m, d), phi).view(b, m, -1)
        return SoftRouterResult(dispatch=F.softmax(logits, dim=1),
                                combine=F.softmax(logits, dim=2), logits=logits)
