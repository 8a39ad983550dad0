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

from moebench.declare import Hp, declare
from moebench.dg.algorithms.erm import ERM
from moebench.dg.algorithms.gmoe import upcycle_flag
from moebench.dg.algorithms.soft_moe_vit import apply_soft_moe
from moebench.dg.backbones import build_backbone

DECLARATION = declare(
    "soft_moe", study="dg", cls="SoftMoE",
    help="Soft-MoE ViT: soft slot routing in the chosen blocks",
    shares={"gmoe": ["num_experts", "expert_drop"]},
    hparams=[
        Hp("slots_per_expert", int, "slots per expert", min=1),
        Hp("moe_layer_index", (int, list),
           "Soft-MoE blocks: k = blocks k..depth-1, or a list of block indices",
           min=0, max="depth", max_open=True, unique=True, min_items=1,
           items=Hp("block", int, min=0, max="depth", max_open=True)),
        Hp("soft_normalize", bool, "l2-normalise tokens and slot parameters (Soft-MoE paper)"),
    ])


def soft_moe_kwargs(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``apply_soft_moe`` keywords from the flat (declared, checked) hparams."""
    drop = hparams["expert_drop"]
    return {"moe_layer_index": hparams["moe_layer_index"],
            "num_experts": int(hparams["num_experts"]),
            "slots_per_expert": int(hparams["slots_per_expert"]),
            "normalize": hparams["soft_normalize"], "upcycle": upcycle_flag(hparams),
            "expert_drop": None if drop is None else float(drop)}


def build_soft_moe_network(hparams: Mapping[str, Any], input_shape: tuple[int, ...],
                           num_classes: int) -> nn.Module:
    """Dense backbone (+ pretrained weights) then Soft-MoE surgery:
    x [B, C, H, W] -> logits [B, num_classes]."""
    model = build_backbone(hparams, input_shape, num_classes)
    apply_soft_moe(model, **soft_moe_kwargs(hparams))
    return model


class SoftMoE(ERM):
    """ERM objective on a Soft-MoE ViT; routing stats = combine mass per expert."""

    NAME: ClassVar[str] = "soft_moe"

    def build_network(self) -> nn.Module:
        """The backbone with Soft-MoE layers in the chosen blocks."""
        return build_soft_moe_network(self.hparams, self.input_shape, self.num_classes)
