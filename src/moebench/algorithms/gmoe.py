"""GMoE (Li et al., ICLR 2023; spec vision_dg §1): a ViT whose MLPs in the "last two even"
blocks are sparse MoE layers (cosine top-1 router, 6 experts, capacity 1.5 with batch-
prioritised routing, overflow dropped, experts upcycled from the dense MLP) trained with
CE + aux_weight * sum over MoE layers of the importance+load CV^2 loss.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

from torch import Tensor, nn

from moebench.algorithms.base import HparamsError
from moebench.algorithms.erm import ERM
from moebench.backbones import apply_moe, build_backbone, moe_block_indices
from moebench.registry import ALGORITHMS

MOE_HPARAMS: tuple[str, ...] = (
    "moe_init", "num_experts", "router", "top_k", "capacity_factor", "gate_noise",
    "batch_prioritized", "moe_blocks", "expert_drop")
AUX_LOSS_NAME = "importance_load"  # Tutel load_importance_loss (is_gshard_loss=False)


def moe_layer_kwargs(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """MoELayer keywords from the flat hparams, validated (one-line HparamsError)."""
    num_experts, k = int(hparams["num_experts"]), int(hparams["top_k"])
    if num_experts < 1:
        raise HparamsError(f"hparam num_experts must be >= 1, got {hparams['num_experts']!r}")
    if not 1 <= k <= num_experts:
        raise HparamsError(f"hparam top_k must be in [1, num_experts={num_experts}], got {k}")
    drop = hparams["expert_drop"]
    if drop is not None and not 0.0 <= float(drop) < 1.0:
        raise HparamsError(f"hparam expert_drop must be in [0, 1), got {drop!r}")
    if float(hparams["gate_noise"]) < 0:
        raise HparamsError(f"hparam gate_noise must be >= 0, got {hparams['gate_noise']!r}")
    return {"num_experts": num_experts, "router": str(hparams["router"]), "k": k,
            "capacity_factor": float(hparams["capacity_factor"]),
            "gate_noise": float(hparams["gate_noise"]),
            "batch_prioritized": bool(hparams["batch_prioritized"]),
            "expert_drop": None if drop is None else float(drop)}


def upcycle_flag(hparams: Mapping[str, Any]) -> bool:
    """``moe_init``: "upcycle" (experts copy the dense MLP) or "random" (fresh experts)."""
    value = hparams["moe_init"]
    if value not in ("upcycle", "random"):
        raise HparamsError(f"hparam moe_init must be 'upcycle' or 'random', got {value!r}")
    return value == "upcycle"


def build_moe_network(hparams: Mapping[str, Any], input_shape: tuple[int, ...],
                      num_classes: int) -> nn.Module:
    """Dense backbone (+ pretrained weights) then MoE surgery on ``hparams['moe_blocks']``."""
    kwargs = moe_layer_kwargs(hparams)
    upcycle = upcycle_flag(hparams)
    model = build_backbone(hparams, input_shape, num_classes)
    try:
        blocks = moe_block_indices(len(model.blocks), hparams["moe_blocks"])
    except ValueError as exc:
        raise HparamsError(f"hparam moe_blocks: {exc}") from None
    apply_moe(model, blocks, upcycle=upcycle, **kwargs)
    return model


@ALGORITHMS.register("gmoe")
class GMoE(ERM):
    """ERM objective on a sparse-MoE ViT plus the weighted router auxiliary loss."""

    NAME: ClassVar[str] = "gmoe"
    REQUIRED_HPARAMS: ClassVar[tuple[str, ...]] = (
        ERM.REQUIRED_HPARAMS + MOE_HPARAMS + ("aux_weight",))

    def build_network(self) -> nn.Module:
        """The backbone with MoE layers in the chosen blocks."""
        aux_weight = self.hparams["aux_weight"]
        if float(aux_weight) < 0:
            raise HparamsError(f"hparam aux_weight must be >= 0, got {aux_weight!r}")
        return build_moe_network(self.hparams, self.input_shape, self.num_classes)

    def aux_loss(self) -> Optional[Tensor]:
        """aux_weight * sum over MoE layers of the last forward's importance+load loss."""
        from moebench.moe import aux_loss_sum

        return aux_loss_sum(self.network, {AUX_LOSS_NAME: float(self.hparams["aux_weight"])})
