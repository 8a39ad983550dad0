"""Batched FFN experts stored as plain stacked tensors.

Layout (nn.Linear convention, one slice per expert, so ``fc1_weight[e]`` is exactly a
timm ``Mlp.fc1.weight``):
  fc1_weight [E, H, D], fc1_bias [E, H] | None, fc2_weight [E, D_out, H], fc2_bias [E, D_out] | None
Expert e computes ``fc2(norm_e(drop(act(fc1(x)))))``. To duplicate an expert (MASS
expansion) call :meth:`copy_expert` under ``torch.no_grad()``; parameters never change
shape, so optimizers need no surgery.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe import backend
from moebench.moe.fused_ffn import act_kind, fused_ffn
from moebench.moe.grad_cache import GradBufferCache
from moebench.moe.grouped import gather_linear, linear_scatter


class _Fn(nn.Module):
    """Wrap a plain callable (Tutel's ``activation_fn``) as a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def as_module(act: Union[nn.Module, type, Callable[[Tensor], Tensor]]) -> nn.Module:
    """An activation given as a module, a module class (timm ``act_layer``) or a callable."""
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act()
    if callable(act):
        return _Fn(act)
    raise ValueError(f"activation must be a module, module class or callable, got {act!r}")


class BatchedExperts(nn.Module):
    """E independent FFN experts D -> H -> D_out with stacked parameters.

    Each expert computes ``fc2(drop(act(fc1 x)))`` (timm's Mlp), or with ``drop_first``
    ``fc2(act(drop(fc1 x)))`` (the MASS authors' BERT experts drop before GELU)."""

    def __init__(self, num_experts: int, in_features: int, hidden_features: int,
                 out_features: int, act: Union[nn.Module, type, Callable] = nn.GELU,
                 norm_layer: Optional[type] = None, bias: tuple[bool, bool] = (True, True),
                 drop: float = 0.0, device=None, dtype=None, drop_first: bool = False) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_experts = num_experts
        self.in_features, self.hidden_features = in_features, hidden_features
        self.out_features = out_features
        E, D, H, O = num_experts, in_features, hidden_features, out_features
        self.fc1_weight = nn.Parameter(torch.empty(E, H, D, **dd))
        self.fc1_bias = nn.Parameter(torch.empty(E, H, **dd)) if bias[0] else None
        self.fc2_weight = nn.Parameter(torch.empty(E, O, H, **dd))
        self.fc2_bias = nn.Parameter(torch.empty(E, O, **dd)) if bias[1] else None
        self.act = as_module(act)
        self.drop = nn.Dropout(drop)
        self.drop_first = bool(drop_first)
        self.norms = nn.ModuleList([norm_layer(H, **dd) for _ in range(E)]) \
            if norm_layer is not None else None
        self.grad_cache = GradBufferCache()   # CPU weight-gradient buffers, see grad_cache.py
        self.reset_parameters()

    def train(self, mode: bool = True) -> "BatchedExperts":
        """As ``nn.Module.train``; switching to eval releases the cached gradient buffers."""
        if not mode:
            self.grad_cache.clear()
        return super().train(mode)

    def reset_parameters(self) -> None:
        """nn.Linear's default init, per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        for w, b, fan_in in ((self.fc1_weight, self.fc1_bias, self.in_features),
                             (self.fc2_weight, self.fc2_bias, self.hidden_features)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            if b is not None:
                nn.init.uniform_(b, -bound, bound)

    def per_expert_params(self) -> list[tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]]:
        """[(fc1_w, fc1_b, fc2_w, fc2_b)] per expert via ``unbind`` (one backward node that
        stacks the gradients, instead of a full-size zero gradient per indexed slice)."""
        def split(p: Optional[Tensor]) -> list:
            return [None] * self.num_experts if p is None else list(p.unbind(0))
        return list(zip(split(self.fc1_weight), split(self.fc1_bias),
                        split(self.fc2_weight), split(self.fc2_bias)))

    def _hidden(self, h: Tensor) -> Tensor:
        """The activation and dropout on fc1's output, in the configured order."""
        return self.act(self.drop(h)) if self.drop_first else self.drop(self.act(h))

    def expert_forward(self, e: int, x: Tensor, params: Optional[tuple] = None) -> Tensor:
        """Expert e on rows x [n, D] -> [n, D_out] (``params``: its entry of
        :meth:`per_expert_params`, else the stacked tensors are indexed)."""
        if params is None:
            params = tuple(None if p is None else p[e] for p in
                           (self.fc1_weight, self.fc1_bias, self.fc2_weight, self.fc2_bias))
        w1, b1, w2, b2 = params
        h = self._hidden(F.linear(x, w1, b1))
        if self.norms is not None:
            h = self.norms[e](h)
        return F.linear(h, w2, b2)

    def forward_grouped(self, x: Tensor, counts: list[int]) -> Tensor:
        """x [N, D] grouped by expert (``counts[e]`` contiguous rows each) -> [N, D_out],
        plain autograd ops (used with per-expert hidden norms)."""
        if x.shape[0] == 0:
            return x.new_zeros(0, self.out_features)
        params = self.per_expert_params()
        backend.note("torch", sum(1 for c in counts if c > 0))
        outs = [self.expert_forward(e, seg, params[e])
                for e, seg in enumerate(torch.split(x, counts)) if counts[e] > 0]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    def forward_routed(self, x: Tensor, counts: list[int], index: Optional[Tensor] = None,
                       slot: Optional[Tensor] = None, weight: Optional[Tensor] = None) -> Tensor:
        """Gather rows ``x[index]`` (grouped by expert, ``counts[e]`` each), run the experts,
        scale by ``weight`` [N] and sum back per token through ``slot`` [T, k] (see
        ``DispatchPlan``) into [T, D_out]; with index/slot None x is already grouped and
        [N, D_out] is returned. Paths: fused per-expert FFN (``fused_ffn.py``) for known
        activations; grouped linears + autograd activation (``grouped.py``) for any other
        activation; plain autograd ops with per-expert hidden norms.
        """
        kind = act_kind(self.act)
        if self.norms is None:
            # custom autograd kernels see one dtype: under autocast, cast once and run as is
            dev = x.device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
            cast = (lambda t: t if t is None or dtype is None else t.to(dtype))  # noqa: E731
            w1, b1, w2, b2 = map(cast, (self.fc1_weight, self.fc1_bias, self.fc2_weight,
                                        self.fc2_bias))
            x, weight = cast(x), cast(weight)
            # CPU has no caching allocator: reuse weight-gradient buffers (grad_cache.py)
            cache = self.grad_cache if dev == "cpu" else None
            with torch.autocast(dev, enabled=False):
                if kind is not None:
                    return fused_ffn(x, counts, w1, b1, w2, b2, kind, self.drop.p, self.training,
                                     index=index, slot=slot, weight=weight, cache=cache,
                                     drop_first=self.drop_first)
                h = gather_linear(x, counts, w1, b1, index=index, slot=slot, cache=cache)
                a = self._hidden(h)
                return linear_scatter(a, counts, w2, b2, weight=weight, index=index, slot=slot,
                                      cache=cache)
        xs = x if index is None else x.index_select(0, index)
        ys = self.forward_grouped(xs, counts)
        if weight is not None:
            ys = ys * weight.unsqueeze(1)
        if index is None:
            return ys
        return ys.new_zeros(x.shape[0], self.out_features).index_add(0, index, ys)

    @torch.no_grad()
    def copy_expert(self, src: int, dst: int) -> None:
        """Copy expert ``src``'s parameters (and norm) into slot ``dst``."""
        for p in (self.fc1_weight, self.fc1_bias, self.fc2_weight, self.fc2_bias):
            if p is not None:
                p[dst].copy_(p[src])
        if self.norms is not None:
            self.norms[dst].load_state_dict(self.norms[src].state_dict())

    @torch.no_grad()
    def load_dense(self, fc1: nn.Linear, fc2: nn.Linear, norm: Optional[nn.Module] = None) -> None:
        """Copy a dense FFN (fc1, fc2, optional hidden norm) into every expert."""
        pairs = ((self.fc1_weight, fc1.weight), (self.fc1_bias, fc1.bias),
                 (self.fc2_weight, fc2.weight), (self.fc2_bias, fc2.bias))
        for mine, theirs in pairs:
            if (mine is None) != (theirs is None):
                raise ValueError("dense MLP bias layout differs from the experts' (bias=...)")
            if mine is None:
                continue
            if tuple(mine.shape[1:]) != tuple(theirs.shape):
                raise ValueError(f"dense MLP shape {tuple(theirs.shape)} does not match "
                                 f"expert shape {tuple(mine.shape[1:])}")
            mine.copy_(theirs.detach().unsqueeze(0).expand_as(mine))
        if self.norms is not None and norm is not None:
            for n in self.norms:
                n.load_state_dict(norm.state_dict())
