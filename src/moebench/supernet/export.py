"""Export a subnet of a trained SuperTransformer as a standalone ordinary Transformer.

The exported model carries copies of the subnet's sliced weights; for the MoS variants the
router mixtures are computed once (routers in eval mode, i.e. without their dropout) and
materialised as plain fc1 / fc2 matrices, so the exported model has no routers and costs
exactly what an ordinary Transformer of that shape costs.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from moebench.supernet.model import SuperTransformer
from moebench.supernet.model_plain import PlainConfig, Transformer
from moebench.supernet.space import Arch


def _set(linear: nn.Module, weight: Tensor, bias: Tensor) -> None:
    linear.weight.copy_(weight)
    linear.bias.copy_(bias)


def plain_config(supernet: SuperTransformer, arch: Arch, **overrides: Any) -> PlainConfig:
    """The standalone model's shapes for ``arch`` (dropouts from the supernet unless
    overridden)."""
    c = supernet.cfg
    kw = dict(vocab_size=c.vocab_size, qkv_dim=supernet.space.qkv_dim, pad=c.pad, eos=c.eos,
              dropout=c.dropout, attention_dropout=c.attention_dropout,
              activation_dropout=c.activation_dropout)
    kw.update(overrides)
    return PlainConfig.from_arch(arch, **kw)


@torch.no_grad()
def export(supernet: SuperTransformer, arch: Arch, **overrides: Any) -> Transformer:
    """A :class:`Transformer` computing what ``supernet`` computes for ``arch`` (validated
    against the space first); returned in eval mode on the supernet's device."""
    arch = supernet.space.validate(arch)
    was_training = supernet.training
    supernet.eval()
    try:
        cfg = plain_config(supernet, arch, **overrides)
        model = Transformer(cfg).to(device=supernet.embed_weight.device,
                                    dtype=supernet.embed_weight.dtype)
        model.embed.weight.copy_(supernet.embed_weight[:, :model.embed.weight.shape[1]])
        feats = supernet.features(arch)
        de, dd = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        for i, layer in enumerate(model.encoder):
            _copy_encoder_layer(layer, supernet.encoder[i], de, cfg.encoder_ffn_embed_dim[i],
                                feats)
        for i, layer in enumerate(model.decoder):
            _copy_decoder_layer(layer, supernet.decoder[i], dd, de,
                                cfg.decoder_ffn_embed_dim[i], feats)
    finally:
        supernet.train(was_training)
    return model.eval()


def _copy_ffn(dst: nn.Module, src: nn.Module, d: int, h: int, feats: Tensor) -> None:
    w1, b1, w2, b2 = src.weights(d, h, feats)
    _set(dst.fc1, w1, b1)
    _set(dst.fc2, w2, b2)


def _copy_encoder_layer(dst: nn.Module, src: nn.Module, d: int, h: int, feats: Tensor) -> None:
    w_in, b_in, w_out, b_out = src.self_attn.sliced(d)
    _set(dst.self_attn.in_proj, w_in, b_in)
    _set(dst.self_attn.out_proj, w_out, b_out)
    _set(dst.norm1, *src.norm1.sliced(d))
    _copy_ffn(dst.ffn, src.ffn, d, h, feats)
    _set(dst.norm2, *src.norm2.sliced(d))


def _copy_decoder_layer(dst: nn.Module, src: nn.Module, d: int, d_enc: int, h: int,
                        feats: Tensor) -> None:
    w_in, b_in, w_out, b_out = src.self_attn.sliced(d)
    _set(dst.self_attn.in_proj, w_in, b_in)
    _set(dst.self_attn.out_proj, w_out, b_out)
    _set(dst.norm1, *src.norm1.sliced(d))
    w_q, b_q, w_kv, b_kv, w_o, b_o = src.cross_attn.sliced(d, d_enc)
    _set(dst.cross_attn.q_proj, w_q, b_q)
    _set(dst.cross_attn.kv_proj, w_kv, b_kv)
    _set(dst.cross_attn.out_proj, w_o, b_o)
    _set(dst.norm2, *src.norm2.sliced(d))
    _copy_ffn(dst.ffn, src.ffn, d, h, feats)
    _set(dst.norm3, *src.norm3.sliced(d))
