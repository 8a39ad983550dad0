"""``gmoe``: the MASS paper's MoE baseline in GMoE style (Li et al., ICLR 2023): the FFN of
the chosen encoder layers becomes ``num_experts`` experts upcycled from the pretrained FFN,
a cosine top-k router with noisy gating, capacity ``capacity_factor`` (batch-prioritised,
overflow dropped) and ``aux_weight`` x Tutel's importance + load loss."""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from torch import Tensor, nn

from moebench.declare import Hp, declare
from moebench.glue.methods.dense import Dense
from moebench.glue.surgery import MoESpec, apply_moe
from moebench.moe import aux_loss_sum

DECLARATION = declare(
    "gmoe", study="glue", cls="GMoE",
    help="GMoE-style MoE: cosine top-k router, capacity, importance+load loss",
    hparams=[
        Hp("moe_layers", list, "encoder layers (0-based) whose FFN becomes MoE",
           items=Hp("layer", int), unique=True, min_items=1),
        Hp("fc2_bias", str, "each expert's fc2 bias: 'divide' by the expert slots (authors) "
           "or 'keep'", choices=("divide", "keep")),
        Hp("expert_dropout", float, "dropout inside each expert before GELU (authors 0.1)",
           min=0, max=1, max_open=True),
        Hp("route_padding", bool, "route padding tokens too (authors: true)"),
        Hp("num_experts", int, "experts per MoE layer", min=1),
        Hp("top_k", int, "experts per token", min=1, max="num_experts"),
        Hp("capacity_factor", float, "expert capacity factor (0 = dropless)", min=0),
        Hp("gate_noise", float, "training noise on the router logits (x N(0,1)/E)", min=0),
        Hp("aux_weight", float, "weight of the importance + load balancing loss", min=0),
    ])
AUX_LOSS = "importance_load"   # Tutel load_importance_loss (GMoE: is_gshard_loss=False)


def surgery_options(hparams: dict[str, Any]) -> dict[str, Any]:
    """The MoESpec keywords shared by the MoE methods (layers and the authors' quirks)."""
    return {"layers": tuple(int(i) for i in hparams["moe_layers"]),
            "fc2_bias": str(hparams["fc2_bias"]),
            "expert_dropout": float(hparams["expert_dropout"]),
            "route_padding": bool(hparams["route_padding"])}


class GMoE(Dense):
    """Dense fine-tuning of the converted model plus the weighted balancing loss."""

    NAME: ClassVar[str] = "gmoe"

    def moe_spec(self) -> MoESpec:
        h = self.hparams
        return MoESpec(num_experts=int(h["num_experts"]), router="cosine_topk",
                       k=int(h["top_k"]), capacity_factor=float(h["capacity_factor"]),
                       gate_noise=float(h["gate_noise"]), batch_prioritized=True,
                       **surgery_options(h))

    def convert(self, hf: nn.Module) -> nn.Module:
        return apply_moe(hf, self.moe_spec(), upcycle=True)

    def aux_loss(self) -> Optional[Tensor]:
        return aux_loss_sum(self.model, {AUX_LOSS: float(self.hparams["aux_weight"])})
