"""HAT's SuperTransformer: one encoder-decoder whose weights every subnet of the space shares.

A subnet (an architecture ``arch`` of :class:`moebench.supernet.space.Space`) runs by slicing
the leading rows / columns of the super weights (HAT's ``LinearSuper``: ``W[:out, :in]``):
embed dims slice the shared source/target embedding table and every projection, per-layer
FFN widths slice the FFN (or, for MoS, its experts before mixing), heads re-split the fixed
``qkv_dim``, the decoder runs its first ``decoder_layer_num`` layers, and decoder layer i
attends to the concatenation of the last 1 / 2 / 3 encoder layers (arbitrary attention -1 /
1 / 2). The MoS routers read the architecture's 10 normalised features (``Space.features``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from moebench.supernet import model_layers as L
from moebench.supernet.ffn import VARIANTS, SuperFFN, _xavier, build_ffn
from moebench.supernet.space import Arch, Space


@dataclass(frozen=True)
class ModelConfig:
    """Everything of the SuperTransformer that is not the design space."""

    vocab_size: int
    pad: int = 1
    eos: int = 2
    ffn: str = "hat"
    num_experts: int = 2
    router_hidden: int = 128
    router_dropout: float = 0.1
    dropout: float = 0.3
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.ffn not in VARIANTS:
            raise ValueError(f"unknown ffn variant {self.ffn!r}; valid: {', '.join(VARIANTS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _param(*shape: int, zero: bool = False) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape) if zero else _xavier(shape))


class SuperSelfAttention(nn.Module):
    """q/k/v stacked as [3 qkv, D] (sliced on the input side), out [D, qkv]."""

    def __init__(self, dim: int, qkv: int) -> None:
        super().__init__()
        self.in_weight, self.in_bias = _param(3 * qkv, dim), _param(3 * qkv, zero=True)
        self.out_weight, self.out_bias = _param(dim, qkv), _param(dim, zero=True)

    def sliced(self, d: int) -> tuple[Tensor, ...]:
        """(w_in [3 qkv, d], b_in, w_out [d, qkv], b_out [d])."""
        return self.in_weight[:, :d], self.in_bias, self.out_weight[:d], self.out_bias[:d]


class SuperCrossAttention(nn.Module):
    """q [qkv, D_dec], k/v stacked [2 qkv, D_enc], out [D_dec, qkv]."""

    def __init__(self, dim: int, enc_dim: int, qkv: int) -> None:
        super().__init__()
        self.q_weight, self.q_bias = _param(qkv, dim), _param(qkv, zero=True)
        self.kv_weight, self.kv_bias = _param(2 * qkv, enc_dim), _param(2 * qkv, zero=True)
        self.out_weight, self.out_bias = _param(dim, qkv), _param(dim, zero=True)

    def sliced(self, d: int, d_enc: int) -> tuple[Tensor, ...]:
        return (self.q_weight[:, :d], self.q_bias, self.kv_weight[:, :d_enc], self.kv_bias,
                self.out_weight[:d], self.out_bias[:d])


class SuperNorm(nn.Module):
    """LayerNorm over the sampled width: weight[:d], bias[:d]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def sliced(self, d: int) -> tuple[Tensor, Tensor]:
        return self.weight[:d], self.bias[:d]


class SuperEncoderLayer(nn.Module):
    def __init__(self, dim: int, hidden: int, qkv: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn, self.norm1 = SuperSelfAttention(dim, qkv), SuperNorm(dim)
        self.ffn: SuperFFN = build_ffn(cfg.ffn, dim, hidden, cfg.num_experts,
                                       cfg.router_hidden, cfg.router_dropout,
                                       cfg.activation_dropout)
        self.norm2, self.cfg = SuperNorm(dim), cfg

    def forward(self, x: Tensor, mask: Tensor, heads: int, h: int, feats: Tensor) -> Tensor:
        """x [B, S, d] -> [B, S, d]; mask [B, S] (True = token)."""
        c, d, tr = self.cfg, x.shape[-1], self.training
        a = L.self_attention(x, *self.self_attn.sliced(d), heads, mask, False,
                             c.attention_dropout, tr)
        x = L.residual_norm(x, a, *self.norm1.sliced(d), c.dropout, tr)
        return L.residual_norm(x, self.ffn(x, h, feats), *self.norm2.sliced(d), c.dropout, tr)


class SuperDecoderLayer(nn.Module):
    def __init__(self, dim: int, enc_dim: int, hidden: int, qkv: int,
                 cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn, self.norm1 = SuperSelfAttention(dim, qkv), SuperNorm(dim)
        self.cross_attn, self.norm2 = SuperCrossAttention(dim, enc_dim, qkv), SuperNorm(dim)
        self.ffn: SuperFFN = build_ffn(cfg.ffn, dim, hidden, cfg.num_experts,
                                       cfg.router_hidden, cfg.router_dropout,
                                       cfg.activation_dropout)
        self.norm3, self.cfg = SuperNorm(dim), cfg

    def forward(self, x: Tensor, mem: Tensor, mem_mask: Tensor, heads: int, cross_heads: int,
                h: int, feats: Tensor) -> Tensor:
        """x [B, T, d] (causal), mem [B, S', d_enc] -> [B, T, d]."""
        c, d, tr = self.cfg, x.shape[-1], self.training
        a = L.self_attention(x, *self.self_attn.sliced(d), heads, None, True,
                             c.attention_dropout, tr)
        x = L.residual_norm(x, a, *self.norm1.sliced(d), c.dropout, tr)
        a = L.cross_attention(x, mem, mem_mask, *self.cross_attn.sliced(d, mem.shape[-1]),
                              cross_heads, c.attention_dropout, tr)
        x = L.residual_norm(x, a, *self.norm2.sliced(d), c.dropout, tr)
        return L.residual_norm(x, self.ffn(x, h, feats), *self.norm3.sliced(d), c.dropout, tr)


class SuperTransformer(nn.Module):
    """The supernet: ``forward(src [B, S], prev_output_tokens [B, T], arch) -> logits
    [B, T, V]`` for any architecture of ``space``."""

    def __init__(self, space: Space, cfg: ModelConfig) -> None:
        super().__init__()
        self.space, self.cfg = space, cfg
        dims = space.super_dims()
        de, dd, qkv = dims["encoder_embed_dim"], dims["decoder_embed_dim"], dims["qkv_dim"]
        self.embed_dim = max(de, dd)
        self.embed_weight = nn.Parameter(torch.randn(cfg.vocab_size, self.embed_dim)
                                         * self.embed_dim ** -0.5)
        with torch.no_grad():
            self.embed_weight[cfg.pad].zero_()
        self.encoder = nn.ModuleList(
            SuperEncoderLayer(de, dims["encoder_ffn_embed_dim"], qkv, cfg)
            for _ in range(space.max_layers("encoder")))
        self.decoder = nn.ModuleList(
            SuperDecoderLayer(dd, de, dims["decoder_ffn_embed_dim"], qkv, cfg)
            for _ in range(space.max_layers("decoder")))

    def features(self, arch: Arch) -> Tensor:
        """The routers' input: the normalised architecture features [10]."""
        return torch.as_tensor(self.space.features(arch), dtype=self.embed_weight.dtype,
                               device=self.embed_weight.device)

    def encode(self, src: Tensor, arch: Arch, feats: Optional[Tensor] = None) -> L.EncoderOut:
        """src [B, S] -> every encoder layer's states [B, S, d_enc] and the key mask."""
        feats = self.features(arch) if feats is None else feats
        d, c = int(arch["encoder_embed_dim"]), self.cfg
        mask = src.ne(c.pad)
        x = L.embed(src, self.embed_weight[:, :d], c.pad, c.dropout, self.training)
        layers = []
        for i in range(int(arch["encoder_layer_num"])):
            x = self.encoder[i](x, mask, int(arch["encoder_self_attention_heads"][i]),
                                int(arch["encoder_ffn_embed_dim"][i]), feats)
            layers.append(x)
        return L.EncoderOut(layers, mask)

    def decode(self, prev: Tensor, enc: L.EncoderOut, arch: Arch,
               feats: Optional[Tensor] = None) -> Tensor:
        """prev [B, T] (teacher forcing) -> logits [B, T, V]."""
        feats = self.features(arch) if feats is None else feats
        d, c = int(arch["decoder_embed_dim"]), self.cfg
        weight = self.embed_weight[:, :d]
        x = L.embed(prev, weight, c.pad, c.dropout, self.training)
        for i in range(int(arch["decoder_layer_num"])):
            mem, mem_mask = enc.memory(int(arch["decoder_arbitrary_ende_attn"][i]))
            x = self.decoder[i](x, mem, mem_mask, int(arch["decoder_self_attention_heads"][i]),
                                int(arch["decoder_ende_attention_heads"][i]),
                                int(arch["decoder_ffn_embed_dim"][i]), feats)
        return torch.nn.functional.linear(x, weight)

    def forward(self, src: Tensor, prev_output_tokens: Tensor, arch: Arch) -> Tensor:
        """Logits [B, T, V] of subnet ``arch`` (refused with one line when outside the
        space)."""
        arch = self.space.validate(arch)
        feats = self.features(arch)
        return self.decode(prev_output_tokens, self.encode(src, arch, feats), arch, feats)

    def routing_stats(self, archs: Mapping[str, Arch]) -> dict[str, dict]:
        """MoS mixing weights of each named architecture per FFN ({} for ``hat``)."""
        if self.cfg.ffn == "hat":
            return {}
        out: dict[str, dict] = {}
        with torch.no_grad():
            for name, arch in archs.items():
                feats = self.features(arch)
                for side, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
                    d = int(arch[f"{side}_embed_dim"])
                    for i in range(int(arch[f"{side}_layer_num"])):
                        h = int(arch[f"{side}_ffn_embed_dim"][i])
                        stats = layers[i].ffn.routing_stats(feats, d, h)
                        out.setdefault(f"{side}.{i}.ffn", {})[name] = stats
        return out
