"""A standalone, ordinary encoder-decoder Transformer: what a subnet is after export.

It holds plain ``nn.Embedding`` / ``nn.Linear`` / ``nn.LayerNorm`` modules at the subnet's
shapes (per-layer FFN widths and heads, arbitrary encoder-decoder attention) and computes
exactly what the SuperTransformer computes for that architecture (same functions of
:mod:`moebench.supernet.model_layers`). Besides ``forward(src, prev) -> logits`` it decodes
incrementally, as beam search and latency measurement need::

    enc = model.encode(src)                          # once per source batch
    cache = {}
    lp = model.decode_step(tokens[:, -1:], enc, cache)   # [B, V] log-probs; cache updated
    enc, cache = enc.index_select(idx), model.reorder_cache(cache, idx)   # beams in batch
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.supernet import model_layers as L
from moebench.supernet.model_layers import EncoderOut


@dataclass(frozen=True)
class PlainConfig:
    """The shapes of one concrete Transformer (per-layer tuples have exactly one entry per
    layer)."""

    vocab_size: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: tuple[int, ...]
    encoder_self_attention_heads: tuple[int, ...]
    decoder_embed_dim: int
    decoder_ffn_embed_dim: tuple[int, ...]
    decoder_self_attention_heads: tuple[int, ...]
    decoder_ende_attention_heads: tuple[int, ...]
    decoder_arbitrary_ende_attn: tuple[int, ...]
    qkv_dim: int
    pad: int = 1
    eos: int = 2
    dropout: float = 0.3
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0

    @classmethod
    def from_arch(cls, arch: Mapping[str, Any], **kw: Any) -> "PlainConfig":
        """The concrete shapes of a space architecture (entries past *_layer_num dropped)."""
        le, ld = int(arch["encoder_layer_num"]), int(arch["decoder_layer_num"])
        enc = {k: tuple(int(v) for v in arch[k][:le])
               for k in ("encoder_ffn_embed_dim", "encoder_self_attention_heads")}
        dec = {k: tuple(int(v) for v in arch[k][:ld])
               for k in ("decoder_ffn_embed_dim", "decoder_self_attention_heads",
                         "decoder_ende_attention_heads", "decoder_arbitrary_ende_attn")}
        return cls(encoder_embed_dim=int(arch["encoder_embed_dim"]),
                   decoder_embed_dim=int(arch["decoder_embed_dim"]), **enc, **dec, **kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class SelfAttention(nn.Module):
    def __init__(self, dim: int, qkv: int, heads: int) -> None:
        super().__init__()
        self.in_proj, self.out_proj, self.heads = nn.Linear(dim, 3 * qkv), nn.Linear(qkv, dim), heads


class CrossAttention(nn.Module):
    def __init__(self, dim: int, enc_dim: int, qkv: int, heads: int) -> None:
        super().__init__()
        self.q_proj, self.kv_proj = nn.Linear(dim, qkv), nn.Linear(enc_dim, 2 * qkv)
        self.out_proj, self.heads = nn.Linear(qkv, dim), heads


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)


def _w(m: nn.Linear) -> tuple[Tensor, Tensor]:
    return m.weight, m.bias


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, hidden: int, qkv: int, heads: int, cfg: PlainConfig) -> None:
        super().__init__()
        self.self_attn, self.norm1 = SelfAttention(dim, qkv, heads), nn.LayerNorm(dim)
        self.ffn, self.norm2, self.cfg = FFN(dim, hidden), nn.LayerNorm(dim), cfg

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        c, tr, sa = self.cfg, self.training, self.self_attn
        a = L.self_attention(x, *_w(sa.in_proj), *_w(sa.out_proj), sa.heads, mask, False,
                             c.attention_dropout, tr)
        x = L.residual_norm(x, a, *_w(self.norm1), c.dropout, tr)
        f = L.ffn(x, *_w(self.ffn.fc1), *_w(self.ffn.fc2), c.activation_dropout, tr)
        return L.residual_norm(x, f, *_w(self.norm2), c.dropout, tr)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, enc_dim: int, hidden: int, qkv: int, heads: int,
                 cross_heads: int, arbitrary: int, cfg: PlainConfig) -> None:
        super().__init__()
        self.self_attn, self.norm1 = SelfAttention(dim, qkv, heads), nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, enc_dim, qkv, cross_heads)
        self.norm2, self.ffn, self.norm3 = nn.LayerNorm(dim), FFN(dim, hidden), nn.LayerNorm(dim)
        self.arbitrary, self.cfg = arbitrary, cfg

    def forward(self, x: Tensor, enc: EncoderOut) -> Tensor:
        """Teacher-forced: x [B, T, d] -> [B, T, d]."""
        c, tr, sa, ca = self.cfg, self.training, self.self_attn, self.cross_attn
        a = L.self_attention(x, *_w(sa.in_proj), *_w(sa.out_proj), sa.heads, None, True,
                             c.attention_dropout, tr)
        x = L.residual_norm(x, a, *_w(self.norm1), c.dropout, tr)
        mem, mem_mask = enc.memory(self.arbitrary)
        a = L.cross_attention(x, mem, mem_mask, *_w(ca.q_proj), *_w(ca.kv_proj),
                              *_w(ca.out_proj), ca.heads, c.attention_dropout, tr)
        x = L.residual_norm(x, a, *_w(self.norm2), c.dropout, tr)
        f = L.ffn(x, *_w(self.ffn.fc1), *_w(self.ffn.fc2), c.activation_dropout, tr)
        return L.residual_norm(x, f, *_w(self.norm3), c.dropout, tr)

    def step(self, x: Tensor, enc: EncoderOut, cache: dict, i: int) -> Tensor:
        """One new position: x [B, 1, d]; cache[("self", i)] holds past keys / values
        [B, H, t, hd], cache[("cross", i)] the encoder memory's (computed on first use)."""
        c, sa, ca = self.cfg, self.self_attn, self.cross_attn
        q, k, v = (L.split_heads(t, sa.heads) for t in
                   F.linear(x, *_w(sa.in_proj)).chunk(3, dim=-1))
        if ("self", i) in cache:
            pk, pv = cache[("self", i)]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        cache[("self", i)] = (k, v)
        a = F.linear(L.merge_heads(L.attend(q, k, v, None, False, 0.0, False)),
                     *_w(sa.out_proj))
        x = L.residual_norm(x, a, *_w(self.norm1), c.dropout, False)
        if ("cross", i) not in cache:
            mem, mem_mask = enc.memory(self.arbitrary)
            mk, mv = F.linear(mem, *_w(ca.kv_proj)).chunk(2, dim=-1)
            cache[("cross", i)] = (L.split_heads(mk, ca.heads), L.split_heads(mv, ca.heads),
                                   mem_mask)
        mk, mv, mem_mask = cache[("cross", i)]
        q = L.split_heads(F.linear(x, *_w(ca.q_proj)), ca.heads)
        a = F.linear(L.merge_heads(L.attend(q, mk, mv, mem_mask, False, 0.0, False)),
                     *_w(ca.out_proj))
        x = L.residual_norm(x, a, *_w(self.norm2), c.dropout, False)
        f = L.ffn(x, *_w(self.ffn.fc1), *_w(self.ffn.fc2), 0.0, False)
        return L.residual_norm(x, f, *_w(self.norm3), c.dropout, False)


class Transformer(nn.Module):
    """An ordinary post-norm encoder-decoder Transformer with one embedding table shared by
    source, target and output (width max(d_enc, d_dec); each side uses its leading
    columns)."""

    def __init__(self, cfg: PlainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        de, dd = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        self.embed = nn.Embedding(cfg.vocab_size, max(de, dd), padding_idx=cfg.pad)
        self.encoder = nn.ModuleList(
            EncoderLayer(de, h, cfg.qkv_dim, n, cfg)
            for h, n in zip(cfg.encoder_ffn_embed_dim, cfg.encoder_self_attention_heads))
        self.decoder = nn.ModuleList(
            DecoderLayer(dd, de, h, cfg.qkv_dim, n, m, a, cfg)
            for h, n, m, a in zip(cfg.decoder_ffn_embed_dim, cfg.decoder_self_attention_heads,
                                  cfg.decoder_ende_attention_heads,
                                  cfg.decoder_arbitrary_ende_attn))

    def _table(self, d: int) -> Tensor:
        w = self.embed.weight
        return w if w.shape[1] == d else w[:, :d]

    def encode(self, src: Tensor) -> EncoderOut:
        """src [B, S] -> every layer's states [B, S, d_enc] and the key mask [B, S]."""
        c = self.cfg
        mask = src.ne(c.pad)
        x = L.embed(src, self._table(c.encoder_embed_dim), c.pad, c.dropout, self.training)
        layers = []
        for layer in self.encoder:
            x = layer(x, mask)
            layers.append(x)
        return EncoderOut(layers, mask)

    def decode(self, prev: Tensor, enc: EncoderOut) -> Tensor:
        """prev [B, T] (teacher forcing) -> logits [B, T, V]."""
        c = self.cfg
        table = self._table(c.decoder_embed_dim)
        x = L.embed(prev, table, c.pad, c.dropout, self.training)
        for layer in self.decoder:
            x = layer(x, enc)
        return F.linear(x, table)

    def forward(self, src: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Logits [B, T, V]."""
        return self.decode(prev_output_tokens, self.encode(src))

    def decode_step(self, tokens: Tensor, enc: EncoderOut, cache: dict) -> Tensor:
        """Log-probabilities [B, V] of the next token after ``tokens`` [B, 1] (the last
        emitted token); ``cache`` (a dict, empty at the first step) is updated in place.
        Always in inference form (no dropout)."""
        c = self.cfg
        step = cache.get("step", 0)
        table = self._table(c.decoder_embed_dim)
        x = L.embed(tokens, table, c.pad, 0.0, False, offset=step)
        for i, layer in enumerate(self.decoder):
            x = layer.step(x, enc, cache, i)
        cache["step"] = step + 1
        return F.log_softmax(F.linear(x[:, 0], table).float(), dim=-1)

    @staticmethod
    def reorder_cache(cache: dict, index: Tensor) -> dict:
        """The cache with batch rows ``index`` (beam selection / sentence removal)."""
        out: dict = {}
        for key, value in cache.items():
            out[key] = value if key == "step" else tuple(t.index_select(0, index) for t in value)
        return out
