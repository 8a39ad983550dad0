"""Functional pieces shared by the SuperTransformer and the standalone Transformer.

Both models call the same functions with different weights: the supernet passes slices (and
MoS mixtures) of its super weights, the standalone model the tensors of its own
``nn.Linear`` / ``nn.LayerNorm`` / ``nn.Embedding`` modules. The layout follows fairseq's
post-norm Transformer as HAT uses it (Wang et al., ACL 2020): sinusoidal positions,
embeddings scaled by sqrt(d), residual -> dropout -> LayerNorm after every sublayer, no final
LayerNorm, a fixed q/k/v width ``qkv_dim`` split into the sampled number of heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def sinusoid(length: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """fairseq's sinusoidal positions (sines in the first half, cosines in the second) for
    positions 0..length-1. Shape [length, dim]."""
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)
    ang = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(length, 1, device=device)], dim=1)
    return emb.to(dtype)


def embed(tokens: Tensor, weight: Tensor, pad: int, dropout: float, training: bool,
          offset: int = 0) -> Tensor:
    """sqrt(d) * E[tokens] + positions, then dropout; ``weight`` [V, d], tokens [B, T] ->
    [B, T, d]. ``offset`` is the position of the first token (incremental decoding)."""
    d = weight.shape[1]
    x = F.embedding(tokens, weight, padding_idx=pad) * math.sqrt(d)
    x = x + sinusoid(offset + tokens.shape[1], d, x.device, x.dtype)[offset:]
    return F.dropout(x, dropout, training)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, T, qkv] -> [B, heads, T, qkv / heads]."""
    b, t, q = x.shape
    return x.view(b, t, heads, q // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, heads, T, hd] -> [B, T, heads * hd]."""
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


def attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Optional[Tensor], causal: bool,
           dropout: float, training: bool) -> Tensor:
    """Scaled dot-product attention on split heads: q [B, H, Tq, hd], k/v [B, H, Tk, hd];
    ``key_mask`` [B, Tk] True where a key may be attended (None: all). Returns
    [B, H, Tq, hd]."""
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                          dropout_p=dropout if training else 0.0,
                                          is_causal=causal and mask is None)


@dataclass
class EncoderOut:
    """The encoder's output: every layer's states (HAT's arbitrary encoder-decoder attention
    reads the last 1-3) and the source key mask.

    ``layers``: list of [B, S, d] (first = embeddings are not included; last = top layer);
    ``key_mask``: [B, S], True at real (non-pad) tokens.
    """

    layers: list[Tensor]
    key_mask: Tensor

    def memory(self, arbitrary: int) -> tuple[Tensor, Tensor]:
        """(keys [B, k*S, d], key mask [B, k*S]) for arbitrary attention -1 / 1 / 2: the last
        1 / 2 / 3 layers concatenated along time (HAT's convention)."""
        n = 1 if arbitrary == -1 else arbitrary + 1
        if n == 1:
            return self.layers[-1], self.key_mask
        return torch.cat(self.layers[-n:], dim=1), self.key_mask.repeat(1, n)

    def index_select(self, index: Tensor) -> "EncoderOut":
        """Rows ``index`` of the batch (beam expansion / reordering)."""
        return EncoderOut([x.index_select(0, index) for x in self.layers],
                          self.key_mask.index_select(0, index))


def self_attention(x: Tensor, w_in: Tensor, b_in: Tensor, w_out: Tensor, b_out: Tensor,
                   heads: int, key_mask: Optional[Tensor], causal: bool, dropout: float,
                   training: bool) -> Tensor:
    """Multi-head self-attention: x [B, T, d]; ``w_in`` [3 qkv, d] (q, k, v stacked),
    ``w_out`` [d, qkv]. Returns [B, T, d]."""
    q, k, v = F.linear(x, w_in, b_in).chunk(3, dim=-1)
    out = attend(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                 key_mask, causal, dropout, training)
    return F.linear(merge_heads(out), w_out, b_out)


def cross_attention(x: Tensor, mem: Tensor, mem_mask: Tensor, w_q: Tensor, b_q: Tensor,
                    w_kv: Tensor, b_kv: Tensor, w_out: Tensor, b_out: Tensor, heads: int,
                    dropout: float, training: bool) -> Tensor:
    """Encoder-decoder attention: x [B, T, d_dec], mem [B, S', d_enc]; ``w_q`` [qkv, d_dec],
    ``w_kv`` [2 qkv, d_enc], ``w_out`` [d_dec, qkv]. Returns [B, T, d_dec]."""
    k, v = F.linear(mem, w_kv, b_kv).chunk(2, dim=-1)
    out = attend(split_heads(F.linear(x, w_q, b_q), heads), split_heads(k, heads),
                 split_heads(v, heads), mem_mask, False, dropout, training)
    return F.linear(merge_heads(out), w_out, b_out)


def ffn(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act_dropout: float,
        training: bool) -> Tensor:
    """fc2(dropout(relu(fc1(x)))): x [B, T, d], w1 [h, d], w2 [d, h]."""
    return F.linear(F.dropout(F.relu(F.linear(x, w1, b1)), act_dropout, training), w2, b2)


def residual_norm(x: Tensor, sub: Tensor, weight: Tensor, bias: Tensor, dropout: float,
                  training: bool) -> Tensor:
    """Post-norm residual: LayerNorm(x + dropout(sub)) over the last dim d (weight [d])."""
    return F.layer_norm(x + F.dropout(sub, dropout, training), (x.shape[-1],), weight, bias)


def label_smoothed_nll(logits: Tensor, target: Tensor, pad: int,
                       epsilon: float) -> tuple[Tensor, Tensor, int]:
    """fairseq's label-smoothed cross-entropy, summed over non-pad target tokens.

    loss = (1 - eps) * nll + eps / V * sum_v(-log p_v). logits [B, T, V], target [B, T].
    Returns (loss sum, nll sum, number of target tokens).
    """
    lp = F.log_softmax(logits.float(), dim=-1)
    keep = target.ne(pad)
    lp, tgt = lp[keep], target[keep]
    nll = -lp.gather(1, tgt[:, None]).squeeze(1)
    smooth = -lp.sum(dim=-1)
    loss = (1.0 - epsilon) * nll + (epsilon / lp.shape[-1]) * smooth
    return loss.sum(), nll.sum(), int(tgt.numel())
