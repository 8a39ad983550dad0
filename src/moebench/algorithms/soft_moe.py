"""Soft-MoE (Puigcerver et al., 2023; spec vision_dg §4; docs/soft_moe.md) on the DomainBed
protocol: the dense ViT backbone (``hparams['backbone']``, pretrained weights when asked)
whose MLPs in the ``moe_layer_index`` blocks become Soft-MoE layers with ``num_experts`` x
``slots_per_expert`` slots; experts upcycled from the dense MLP (``moe_init: upcycle``) or
freshly initialised as timm does. Trained with plain cross-entropy: Soft-MoE drops no
tokens and needs no load-balancing loss.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from torch import nn

from moebench.algorithms.base import HparamsError
from moebench.algorithms.erm import ERM
from moebench.algorithms.gmoe import upcycle_flag
from moebench.backbones import build_backbone
from moebench.backbones.soft_moe_vit import apply_soft_moe, soft_moe_block_indices
from moebench.registry import ALGORITHMS

SOFT_MOE_HPARAMS: tuple[str, ...] = (
    "moe_init", "num_experts", "slots_per_expert", "moe_layer_index", "soft_normalize",
    "expert_drop")


def soft_moe_kwargs(hparams: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """``apply_soft_moe`` keywords from the flat hparams, validated (one-line HparamsError)."""
    for key in ("num_experts", "slots_per_expert"):
        if int(hparams[key]) < 1:
            raise HparamsError(f"hparam {key} must be >= 1, got {hparams[key]!r}")
    drop = hparams["expert_drop"]
    if drop is not None and not 0.0 <= float(drop) < 1.0:
        raise HparamsError(f"hparam expert_drop must be in [0, 1), got {drop!r}")
    if not isinstance(hparams["soft_normalize"], bool):
        raise HparamsError(f"hparam soft_normalize must be true or false, "
                           f"got {hparams['soft_normalize']!r}")
    index = hparams["moe_layer_index"]
    try:
        soft_moe_block_indices(depth, index)
    except ValueError as exc:
        raise HparamsError(f"hparam moe_layer_index: {exc}") from None
    return {"moe_layer_index": index, "num_experts": int(hparams["num_experts"]),
            "slots_per_expert": int(hparams["slots_per_expert"]),
            "normalize": hparams["soft_normalize"], "upcycle": upcycle_flag(hparams),
            "expert_drop": None if drop is None else float(drop)}


def build_soft_moe_network(hparams: Mapping[str, Any], input_shape: tuple[int, ...],
                           num_classes: int) -> nn.Module:
    """Dense backbone (+ pretrained weights) then Soft-MoE surgery:
    x [B, C, H, W] -> logits [B, num_classes]."""
    upcycle_flag(hparams)                      # validate before the (possibly costly) build
    model = build_backbone(hparams, input_shape, num_classes)
    apply_soft_moe(model, **soft_moe_kwargs(hparams, len(model.blocks)))
    return model


@ALGORITHMS.register("soft_moe")
class SoftMoE(ERM):
    """ERM objective on a Soft-MoE ViT; routing stats = combine mass per expert."""

    NAME: ClassVar[str] = "soft_moe"
    REQUIRED_HPARAMS: ClassVar[tuple[str, ...]] = ERM.REQUIRED_HPARAMS + SOFT_MOE_HPARAMS

    def build_network(self) -> nn.Module:
        """The backbone with Soft-MoE layers in the chosen blocks."""
        return build_soft_moe_network(self.hparams, self.input_shape, self.num_classes)
