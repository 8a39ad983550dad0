"""GMoE (Li et al., ICLR 2023; spec vision_dg §1): a ViT whose MLPs in the "last two even"
blocks are sparse MoE layers (cosine top-1 router, 6 experts, capacity 1.5 with batch-
prioritised routing, overflow dropped, experts upcycled from the dense MLP) trained with
CE + aux_weight * sum over MoE layers of the importance+load CV^2 loss.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

from torch import Tensor, nn

from moebench.declare import Hp, declare
from moebench.dg.algorithms.erm import ERM
from moebench.dg.backbones import apply_moe, build_backbone, moe_block_indices

DECLARATION = declare(
    "gmoe", study="dg", cls="GMoE",
    help="GMoE: sparse MoE MLPs in chosen ViT blocks, top-k router, capacity, aux loss",
    hparams=[
        Hp("num_experts", int, "experts per MoE layer", min=1),
        Hp("router", str, "router: cosine_topk (GMoE) or topk", choices=("cosine_topk", "topk")),
        Hp("top_k", int, "experts per token", min=1, max="num_experts"),
        Hp("capacity_factor", float,
           "Tutel capacity: > 0 = k * cf * T / E slots, 0 = dropless, < 0 = min(needed, bound)"),
        Hp("gate_noise", float, "router training noise std gate_noise / E", min=0),
        Hp("batch_prioritized", bool, "capacity slots to the most confident tokens first"),
        Hp("moe_blocks", (str, list),
           "MoE blocks: 'last_two_even', 'every_two', 'none' or a list of block indices",
           choices=("last_two_even", "every_two", "none"), unique=True,
           items=Hp("block", int, min=0, max="depth", max_open=True)),
        Hp("aux_weight", float, "weight of the importance+load loss", min=0),
        Hp("expert_drop", float, "dropout inside each expert (null = none)", min=0, max=1,
           max_open=True, nullable=True),
    ])
AUX_LOSS_NAME = "importance_load"  # Tutel load_importance_loss (is_gshard_loss=False)


def moe_layer_kwargs(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """MoELayer keywords from the flat (declared, checked) hparams."""
    drop = hparams["expert_drop"]
    return {"num_experts": int(hparams["num_experts"]), "router": str(hparams["router"]),
            "k": int(hparams["top_k"]), "capacity_factor": float(hparams["capacity_factor"]),
            "gate_noise": float(hparams["gate_noise"]),
            "batch_prioritized": bool(hparams["batch_prioritized"]),
            "expert_drop": None if drop is None else float(drop)}


def upcycle_flag(hparams: Mapping[str, Any]) -> bool:
    """``moe_init``: "upcycle" (experts copy the dense MLP) or "random" (fresh experts)."""
    return hparams["moe_init"] == "upcycle"


def build_moe_network(hparams: Mapping[str, Any], input_shape: tuple[int, ...],
                      num_classes: int) -> nn.Module:
    """Dense backbone (+ pretrained weights) then MoE surgery on ``hparams['moe_blocks']``."""
    model = build_backbone(hparams, input_shape, num_classes)
    blocks = moe_block_indices(len(model.blocks), hparams["moe_blocks"])
    apply_moe(model, blocks, upcycle=upcycle_flag(hparams), **moe_layer_kwargs(hparams))
    return model


class GMoE(ERM):
    """ERM objective on a sparse-MoE ViT plus the weighted router auxiliary loss."""

    NAME: ClassVar[str] = "gmoe"

    def build_network(self) -> nn.Module:
        """The backbone with MoE layers in the chosen blocks."""
        return build_moe_network(self.hparams, self.input_shape, self.num_classes)

    def aux_loss(self) -> Optional[Tensor]:
        """aux_weight * sum over MoE layers of the last forward's importance+load loss."""
        from moebench.moe import aux_loss_sum

        return aux_loss_sum(self.network, {AUX_LOSS_NAME: float(self.hparams["aux_weight"])})
