"""MoELayer: a drop-in for ``timm.layers.Mlp`` with routed experts, and model-wide helpers."""
from __future__ import annotations

import logging
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from moebench.moe.dispatch import DispatchPlan, plan_dispatch
from moebench.moe.experts import BatchedExperts
from moebench.moe.routers.base import Router, RouterResult
from moebench.registry import ROUTERS

log = logging.getLogger(__name__)

KNOWN_AUX_LOSSES = ("importance_load", "gshard", "z_loss")


def _pair(v: Union[Any, tuple]) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class MoELayer(nn.Module):
    """Mixture-of-experts FFN with timm ``Mlp``'s constructor keywords.

    forward(x [..., D]) -> [..., D_out]. Token-choice routers ("topk", "cosine_topk",
    "mintau") flatten every leading dim batch-wide (capacity is computed over all tokens);
    the Soft-MoE router ("soft") needs x [B, m, D] and mixes tokens per sequence.
    ``drop`` is timm's (hidden, output) dropout; ``expert_drop`` (if not None) replaces the
    hidden dropout inside the experts. After each forward ``aux_losses`` holds the router's
    unweighted losses; training forwards accumulate routing stats (see
    :func:`collect_routing_stats`). ``router.weight`` [E, ·] and the ``experts`` tensors are
    plain parameters (see ``experts.py``).
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Any = nn.GELU,
                 norm_layer: Optional[type] = None, bias: Union[bool, tuple] = True,
                 drop: Union[float, tuple] = 0.0, device=None, dtype=None, *,
                 num_experts: int = 6, router: str = "cosine_topk", k: int = 1,
                 capacity_factor: float = 1.5, gate_noise: float = 1.0,
                 batch_prioritized: bool = True, expert_drop: Optional[float] = None,
                 router_kwargs: Optional[dict] = None, postscore: bool = True) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        drop_hidden, drop_out = _pair(drop)
        router_cls = ROUTERS.get(router)
        self.router: Router = router_cls(in_features, num_experts, k=k, gate_noise=gate_noise,
                                         device=device, dtype=dtype, **(router_kwargs or {}))
        self.experts = BatchedExperts(
            num_experts, in_features, hidden_features, out_features, act=act_layer,
            norm_layer=norm_layer, bias=_pair(bias),
            drop=drop_hidden if expert_drop is None else expert_drop, device=device, dtype=dtype)
        self.drop = nn.Dropout(drop_out)
        self.router_name = router
        self.in_features, self.out_features = in_features, out_features
        self.num_experts = num_experts
        self.k = k
        self.capacity_factor = float(capacity_factor)
        self.gate_noise = float(gate_noise)
        self.batch_prioritized = batch_prioritized
        self.postscore = postscore
        self.aux_losses: dict[str, Tensor] = {}
        self.reset_routing_stats()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, capacity_factor: Optional[float] = None) -> Tensor:
        """x [..., D] (soft router: [B, m, D]) -> [..., D_out]."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MoELayer expects last dim {self.in_features}, got {tuple(x.shape)}")
        if self.router.token_choice:
            y = self._forward_tokens(x.reshape(-1, self.in_features), capacity_factor)
        else:
            if x.dim() != 3:
                raise ValueError(f"router {self.router_name!r} needs x [B, m, D], "
                                 f"got {tuple(x.shape)}")
            y = self._forward_soft(x)
        return self.drop(y).reshape(*x.shape[:-1], self.out_features)

    def route(self, x: Tensor, capacity_factor: Optional[float] = None
              ) -> tuple[RouterResult, DispatchPlan]:
        """Token-choice routing of x [T, D]: the router's result and the dispatch plan
        (capacity: ``capacity_factor`` if given, else the layer's; 0 for dropless routers)."""
        res = self.router(x)
        cf = self.capacity_factor if capacity_factor is None else float(capacity_factor)
        plan = plan_dispatch(res.indices, res.valid, res.priority, self.num_experts,
                             0.0 if self.router.dropless else cf, self.batch_prioritized)
        return res, plan

    def _forward_tokens(self, x: Tensor, capacity_factor: Optional[float]) -> Tensor:
        """x [T, D] -> [T, D_out]: one sort, contiguous per-expert FFN blocks, gather combine."""
        res, plan = self.route(x, capacity_factor)
        w = res.weights.reshape(-1).index_select(0, plan.choice_index).to(x.dtype)
        if self.postscore:
            out = self.experts.forward_routed(x, plan.counts, index=plan.token_index,
                                              slot=plan.slot, weight=w)
        else:   # Tutel is_postscore=False: scale the expert input instead of its output
            xs = x.index_select(0, plan.token_index) * w.unsqueeze(1)
            ys = self.experts.forward_routed(xs, plan.counts)
            out = ys.new_zeros(x.shape[0], self.out_features).index_add(0, plan.token_index, ys)
        self.aux_losses = dict(res.aux_losses)
        if self.training:
            self._record(plan.routed.detach(), plan.num_choices - plan.num_kept,
                         plan.num_choices, x.shape[0])
        return out

    def _forward_soft(self, x: Tensor) -> Tensor:
        """x [B, m, D] -> [B, m, D_out]: slots = Dᵀx, per-expert GEMMs, y = C·slots_out."""
        res = self.router(x)
        b, m, d = x.shape
        n_slots = res.dispatch.shape[-1]
        per = n_slots // self.num_experts
        slots = torch.bmm(res.dispatch.transpose(1, 2).to(x.dtype), x)          # [B, S, D]
        xs = slots.view(b, self.num_experts, per, d).transpose(0, 1).reshape(-1, d)
        ys = self.experts.forward_routed(xs, [b * per] * self.num_experts)
        ys = ys.view(self.num_experts, b, per, self.out_features).transpose(0, 1)
        y = torch.bmm(res.combine.to(ys.dtype), ys.reshape(b, n_slots, self.out_features))
        self.aux_losses = dict(res.aux_losses)
        if self.training:
            mass = res.combine.detach().sum(dim=(0, 1)).view(self.num_experts, per).sum(1)
            self._record(mass.double(), 0, b * m, b * m)
        return y

    def __getstate__(self) -> dict:
        """Copies and pickles leave out the last forward's aux losses (graph tensors)."""
        state = self.__dict__.copy()
        state["aux_losses"] = {}
        return state

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def load_dense_mlp(self, mlp: nn.Module) -> None:
        """Copy a timm ``Mlp``'s fc1/fc2 weights and biases (and hidden norm) into every expert."""
        norm = getattr(mlp, "norm", None)
        norm = None if isinstance(norm, nn.Identity) else norm
        self.experts.load_dense(mlp.fc1, mlp.fc2, norm)

    @torch.no_grad()
    def duplicate_expert(self, src: int, dst: int, activate: bool = True) -> None:
        """Copy expert ``src`` (FFN tensors + router row) into slot ``dst``; with a router
        that has an ``active_mask`` (mintau), also mark ``dst`` active (MASS expansion)."""
        for e in (src, dst):
            if not 0 <= e < self.num_experts:
                raise ValueError(f"expert index {e} out of range [0, {self.num_experts})")
        self.experts.copy_expert(src, dst)
        self.router.copy_expert_row(src, dst)
        mask = getattr(self.router, "active_mask", None)
        if activate and mask is not None:
            mask[dst] = True

    def reset_routing_stats(self) -> None:
        """Forget the routing stats accumulated so far."""
        self._stat_load: Optional[Tensor] = None
        self._stat_dropped = 0
        self._stat_choices = 0
        self._stat_tokens = 0

    def _record(self, load: Tensor, dropped: int, choices: int, tokens: int) -> None:
        load = load.double()
        self._stat_load = load if self._stat_load is None else self._stat_load + load
        self._stat_dropped += int(dropped)
        self._stat_choices += int(choices)
        self._stat_tokens += int(tokens)

    def routing_stats(self, reset: bool = True) -> dict[str, Any]:
        """{"load": [E floats summing to 1], "dropped": float, "tokens": int, "mean_k": float}.

        load = fraction of the (token, expert) choices the router assigned to each expert
        (before capacity; Soft-MoE: share of combine mass); dropped = fraction of choices
        dropped by capacity; mean_k = choices per token. Zeros when nothing was recorded.
        """
        total = float(self._stat_load.sum()) if self._stat_load is not None else 0.0
        load = [float(v) / total for v in self._stat_load.tolist()] if total > 0 \
            else [0.0] * self.num_experts
        stats = {"load": load,
                 "dropped": self._stat_dropped / self._stat_choices if self._stat_choices else 0.0,
                 "tokens": int(self._stat_tokens),
                 "mean_k": self._stat_choices / self._stat_tokens if self._stat_tokens else 0.0}
        if reset:
            self.reset_routing_stats()
        return stats

    def extra_repr(self) -> str:
        return (f"router={self.router_name!r}, num_experts={self.num_experts}, k={self.k}, "
                f"capacity_factor={self.capacity_factor}, gate_noise={self.gate_noise}, "
                f"batch_prioritized={self.batch_prioritized}")


def aux_loss_sum(model: nn.Module, weights: dict[str, float]) -> Tensor:
    """sum over every MoELayer in ``model`` of sum_name weights[name] * layer.aux_losses[name].

    Unknown loss names raise ValueError; layers whose router lacks a loss contribute 0.
    """
    for name in weights:
        if name not in KNOWN_AUX_LOSSES:
            raise ValueError(f"unknown aux loss {name!r}; valid: {', '.join(KNOWN_AUX_LOSSES)}")
    total: Optional[Tensor] = None
    for module in model.modules():
        if isinstance(module, MoELayer):
            for name, w in weights.items():
                loss = module.aux_losses.get(name)
                if loss is not None and w != 0:
                    total = w * loss if total is None else total + w * loss
    if total is None:
        param = next(model.parameters(), None)
        return torch.zeros((), device=None if param is None else param.device)
    return total


def collect_routing_stats(model: nn.Module, reset: bool = True) -> dict[str, dict]:
    """{module_name: layer.routing_stats(reset)} for every MoELayer in ``model``."""
    return {name: m.routing_stats(reset) for name, m in model.named_modules()
            if isinstance(m, MoELayer)}
