"""The three FFN variants of the SuperTransformer, chosen by params (``ffn``).

* ``hat`` (HAT, Wang et al. ACL 2020): one shared FFN; a subnet uses the leading rows /
  columns, ``W1[:h, :d]``, ``W2[:d, :h]``.
* ``mos_layer`` (Mixture-of-Supernets, Jawahar et al. ACL 2024 Findings, layer-wise
  ``archrouting_jack_drop_2L``): E expert copies of fc1/fc2 at the super shape; a router
  ``Linear(10 -> r) -> ReLU -> Dropout(0.1) -> Linear(r -> E) -> softmax`` of the normalised
  architecture features gives one weight per expert, and the layer uses
  ``W = sum_e alpha_e W_e[:out, :in]`` (biases likewise) for fc1 and fc2.
* ``mos_neuron`` (neuron-wise ``neuronrouting_jack_drop_2L``): separate routers for fc1 and
  fc2, ``Linear(10 -> r) -> ReLU -> Dropout(0.1) -> Linear(r -> E * d_out_super)``, of which
  the first ``E * d_out`` outputs are used; output row ``i`` mixes with
  ``softmax(z[i E:(i + 1) E])``: ``W[i, :] = sum_e alpha_ie W_e[i, :in]``. d_out is the
  sampled FFN width for fc1 and the sampled embed dim for fc2.

Every variant returns the materialised ``(w1 [h, d], b1 [h], w2 [d, h], b2 [d])`` from
:meth:`SuperFFN.weights`, which the forward pass and the export both use. There is no token
routing: for a given architecture a MoS FFN is an ordinary dense FFN.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from moebench.supernet.model_layers import ffn

VARIANTS = ("hat", "mos_layer", "mos_neuron")
N_FEATURES = 10


def _xavier(shape: tuple[int, ...]) -> Tensor:
    """Xavier-uniform init of a [.., out, in] weight (HAT's LinearSuper)."""
    fan_out, fan_in = shape[-2], shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(shape).uniform_(-bound, bound)


class SuperFFN(nn.Module):
    """Base: ``weights(d, h, feats)`` materialises the FFN of one architecture."""

    def __init__(self, dim: int, hidden: int, act_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.hidden, self.act_dropout = dim, hidden, act_dropout

    def weights(self, d: int, h: int, feats: Optional[Tensor]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def forward(self, x: Tensor, h: int, feats: Optional[Tensor]) -> Tensor:
        """x [B, T, d] -> [B, T, d] with FFN width ``h`` (feats [10]: router input)."""
        w1, b1, w2, b2 = self.weights(x.shape[-1], h, feats)
        return ffn(x, w1, b1, w2, b2, self.act_dropout, self.training)

    def routing_stats(self, feats: Tensor, d: int, h: int) -> dict:
        """Per-layer mixing statistics for the records ({} for the shared FFN)."""
        return {}


class HatFFN(SuperFFN):
    """One shared FFN, sliced."""

    def __init__(self, dim: int, hidden: int, act_dropout: float = 0.0) -> None:
        super().__init__(dim, hidden, act_dropout)
        self.fc1_weight = nn.Parameter(_xavier((hidden, dim)))
        self.fc1_bias = nn.Parameter(torch.zeros(hidden))
        self.fc2_weight = nn.Parameter(_xavier((dim, hidden)))
        self.fc2_bias = nn.Parameter(torch.zeros(dim))

    def weights(self, d: int, h: int, feats: Optional[Tensor]) -> tuple[Tensor, ...]:
        return (self.fc1_weight[:h, :d], self.fc1_bias[:h], self.fc2_weight[:d, :h],
                self.fc2_bias[:d])


class _Experts(SuperFFN):
    """E independent copies of fc1 / fc2 at the super shape (stacked)."""

    def __init__(self, dim: int, hidden: int, num_experts: int, router_hidden: int,
                 router_dropout: float, act_dropout: float = 0.0) -> None:
        super().__init__(dim, hidden, act_dropout)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts, self.router_hidden = num_experts, router_hidden
        self.router_dropout = router_dropout
        e = num_experts
        self.fc1_weight = nn.Parameter(torch.stack([_xavier((hidden, dim)) for _ in range(e)]))
        self.fc1_bias = nn.Parameter(torch.zeros(e, hidden))
        self.fc2_weight = nn.Parameter(torch.stack([_xavier((dim, hidden)) for _ in range(e)]))
        self.fc2_bias = nn.Parameter(torch.zeros(e, dim))

    def _router(self, out: int) -> nn.Sequential:
        """Linear(10 -> r) -> ReLU -> Dropout -> Linear(r -> out) (xavier, zero bias)."""
        last = nn.Linear(self.router_hidden, out)
        with torch.no_grad():
            last.weight.copy_(_xavier((out, self.router_hidden)))
            last.bias.zero_()
        return nn.Sequential(nn.Linear(N_FEATURES, self.router_hidden), nn.ReLU(),
                             nn.Dropout(self.router_dropout), last)


class MosLayerFFN(_Experts):
    """Layer-wise MoS: one router per layer, one weight per expert for fc1 and fc2."""

    def __init__(self, dim: int, hidden: int, num_experts: int, router_hidden: int,
                 router_dropout: float = 0.1, act_dropout: float = 0.0) -> None:
        super().__init__(dim, hidden, num_experts, router_hidden, router_dropout, act_dropout)
        self.router = self._router(num_experts)

    def alpha(self, feats: Tensor) -> Tensor:
        """Expert weights softmax(router(feats)): feats [10] -> [E]."""
        return torch.softmax(self.router(feats), dim=-1)

    def weights(self, d: int, h: int, feats: Optional[Tensor]) -> tuple[Tensor, ...]:
        a = self.alpha(feats)
        mix = lambda w: torch.tensordot(a, w, dims=1)  # noqa: E731  [E, ...] -> [...]
        return (mix(self.fc1_weight[:, :h, :d]), mix(self.fc1_bias[:, :h]),
                mix(self.fc2_weight[:, :d, :h]), mix(self.fc2_bias[:, :d]))

    def routing_stats(self, feats: Tensor, d: int, h: int) -> dict:
        return {"alpha": [round(float(v), 4) for v in self.alpha(feats)]}


class MosNeuronFFN(_Experts):
    """Neuron-wise MoS: per output row its own expert mixture; routers for fc1 and fc2."""

    def __init__(self, dim: int, hidden: int, num_experts: int, router_hidden: int,
                 router_dropout: float = 0.1, act_dropout: float = 0.0) -> None:
        super().__init__(dim, hidden, num_experts, router_hidden, router_dropout, act_dropout)
        self.router1 = self._router(num_experts * hidden)
        self.router2 = self._router(num_experts * dim)

    def alpha(self, router: nn.Module, feats: Tensor, rows: int) -> Tensor:
        """Row-wise expert weights: the first ``rows * E`` router outputs as [rows, E],
        softmax over E. feats [10] -> [rows, E]."""
        z = router(feats)[: rows * self.num_experts]
        return torch.softmax(z.view(rows, self.num_experts), dim=-1)

    def weights(self, d: int, h: int, feats: Optional[Tensor]) -> tuple[Tensor, ...]:
        a1, a2 = self.alpha(self.router1, feats, h), self.alpha(self.router2, feats, d)
        w1 = torch.einsum("re,erc->rc", a1, self.fc1_weight[:, :h, :d])
        b1 = (a1 * self.fc1_bias[:, :h].t()).sum(dim=1)
        w2 = torch.einsum("re,erc->rc", a2, self.fc2_weight[:, :d, :h])
        b2 = (a2 * self.fc2_bias[:, :d].t()).sum(dim=1)
        return w1, b1, w2, b2

    def routing_stats(self, feats: Tensor, d: int, h: int) -> dict:
        a1, a2 = self.alpha(self.router1, feats, h), self.alpha(self.router2, feats, d)
        return {"alpha_fc1_mean": [round(float(v), 4) for v in a1.mean(0)],
                "alpha_fc2_mean": [round(float(v), 4) for v in a2.mean(0)]}


def build_ffn(variant: str, dim: int, hidden: int, num_experts: int = 2,
              router_hidden: int = 128, router_dropout: float = 0.1,
              act_dropout: float = 0.0) -> SuperFFN:
    """The FFN of one super layer: ``variant`` in :data:`VARIANTS`."""
    if variant == "hat":
        return HatFFN(dim, hidden, act_dropout)
    if variant == "mos_layer":
        return MosLayerFFN(dim, hidden, num_experts, router_hidden, router_dropout, act_dropout)
    if variant == "mos_neuron":
        return MosNeuronFFN(dim, hidden, num_experts, router_hidden, router_dropout, act_dropout)
    raise ValueError(f"unknown ffn variant {variant!r}; valid: {', '.join(VARIANTS)}")
