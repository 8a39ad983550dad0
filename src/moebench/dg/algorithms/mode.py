"""MoDE (Xie et al., AAAI 2024; spec mass_mode_mos_tutel §2; docs/mode.md): a mixture of
classifier experts with mutual distillation among the experts.

Network: the dense ViT backbone (``hparams['backbone']``, pretrained weights when asked)
whose classifier head is a :class:`~moebench.dg.algorithms.mode_distill.MoDEHead` — a dense softmax gate
over ``num_experts`` FFN classifier experts (D -> expert_hidden -> C) on the pooled
features, logits h(x) = sum_i g_i(x) e_i(x). Every expert's output is computed once per
sample and reused for both the mixture and the distillation term.

Objective (additive, as the paper's "distillation strength" suggests):
    L = CE(h(x), y) + distill_alpha * KD,
    KD = T^2 * mean_{samples, ordered pairs i != j} KL(sg(p_j) || p_i),  p_i = softmax(e_i / T)
computed in O(E) closed form. Teachers are detached (deep mutual learning), so every expert
is pulled towards every other expert's prediction on *every* sample, also those the gate
sends elsewhere — the remedy for the paper's "narrow vision".
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from torch import Tensor, nn

from moebench.declare import Hp, declare
from moebench.dg.algorithms.erm import ERM
from moebench.dg.algorithms.mode_distill import MoDEHead, mutual_distillation_loss
from moebench.dg.backbones import build_backbone
from moebench.errors import ParamsError

DECLARATION = declare(
    "mode", study="dg", cls="MoDE",
    help="MoDE: mixture of classifier experts with mutual distillation",
    hparams=[
        Hp("num_experts", int, "classifier experts of the MoDE head", min=1),
        Hp("expert_drop", float, "dropout inside each classifier expert (null = none)", min=0,
           max=1, max_open=True, nullable=True),
        Hp("expert_hidden", int, "hidden width of each classifier expert", min=1),
        Hp("distill_alpha", float, "distillation strength: loss = CE + alpha * KD", min=0),
        Hp("distill_temperature", float, "softmax temperature of the distillation",
           min=0, min_open=True),
    ])


def _validated(hparams: dict[str, Any]) -> dict[str, Any]:
    """MoDEHead keywords and loss settings from the flat (declared, checked) hparams."""
    drop = hparams["expert_drop"]
    return {"num_experts": int(hparams["num_experts"]), "hidden": int(hparams["expert_hidden"]),
            "drop": 0.0 if drop is None else float(drop),
            "alpha": float(hparams["distill_alpha"]),
            "temperature": float(hparams["distill_temperature"])}


def build_mode_network(hparams: dict[str, Any], input_shape: tuple[int, ...],
                       num_classes: int) -> nn.Module:
    """Dense backbone whose ``head`` is a MoDEHead: x [B, C, H, W] -> logits [B, num_classes]."""
    cfg = _validated(hparams)
    model = build_backbone(hparams, input_shape, num_classes)
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ParamsError(f"backbone {hparams['backbone']!r} has no Linear classifier head")
    weight = head.weight
    model.head = MoDEHead(head.in_features, num_classes, cfg["num_experts"], cfg["hidden"],
                          drop=cfg["drop"], device=weight.device, dtype=weight.dtype)
    return model


class MoDE(ERM):
    """ERM on a ViT with a MoDE head; loss = CE + distill_alpha * mutual-distillation KL.

    ``update`` returns {"loss": total, "loss_aux": distill_alpha * KD}.
    """

    NAME: ClassVar[str] = "mode"

    def build_network(self) -> nn.Module:
        """The backbone with a :class:`MoDEHead` classifier."""
        cfg = _validated(self.hparams)
        self.distill_alpha, self.distill_temperature = cfg["alpha"], cfg["temperature"]
        return build_mode_network(self.hparams, self.input_shape, self.num_classes)

    @property
    def head(self) -> MoDEHead:
        """The MoDE classifier head."""
        return self.network.head

    def aux_loss(self) -> Optional[Tensor]:
        """distill_alpha * KD over the last training forward's expert logits [E, B, C]."""
        outs = self.head.expert_logits
        if outs is None:
            raise RuntimeError("MoDE.aux_loss needs a forward with autograd enabled first")
        self.head.expert_logits = None          # release the graph reference after use
        if self.distill_alpha == 0.0:
            return outs.new_zeros(())
        kd = mutual_distillation_loss(outs, "kl", self.distill_temperature, detach_teacher=True)
        return self.distill_alpha * kd

    def routing_stats(self, reset: bool = True) -> dict[str, dict]:
        """{"head": gate-mass load per expert, samples seen, ...} since the last reset."""
        return {"head": self.head.routing_stats(reset)}
