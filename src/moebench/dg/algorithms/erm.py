"""ERM with a dense timm ViT: cross-entropy on the concatenated minibatches, Adam, constant LR."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.dg.algorithms.base import Algorithm, Minibatches, concat_minibatches
from moebench.declare import declare
from moebench.dg.backbones import build_backbone

DECLARATION = declare(
    "erm", study="dg", cls="ERM",
    help="ERM: dense ViT, cross-entropy, Adam (DomainBed's baseline)")


def make_adam(params: Any, hparams: Mapping[str, Any]) -> torch.optim.Adam:
    """Adam(lr, weight_decay) with a constant learning rate (GMoE/DomainBed default)."""
    return torch.optim.Adam(params, lr=float(hparams["lr"]),
                            weight_decay=float(hparams["weight_decay"]))


class ERM(Algorithm):
    """Empirical risk minimisation on a dense ViT (``hparams['backbone']``)."""

    NAME: ClassVar[str] = "erm"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, num_domains: int,
                 hparams: Mapping[str, Any], *, n_steps: int) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams, n_steps=n_steps)
        self.network: nn.Module = self.build_network()
        self.optimizer = make_adam(self.network.parameters(), self.hparams)

    def build_network(self) -> nn.Module:
        """The dense backbone (pretrained weights loaded when ``hparams['pretrained']``)."""
        return build_backbone(self.hparams, self.input_shape, self.num_classes)

    def aux_loss(self) -> Optional[Tensor]:
        """Weighted auxiliary loss of the last forward (None for dense models)."""
        return None

    def update(self, minibatches: Minibatches, unlabeled: Any = None) -> dict[str, float]:
        """CE(+aux) on x [sum B_d, C, H, W]; one Adam step; {"loss"(, "loss_aux")}."""
        x, y = concat_minibatches(minibatches)
        loss = F.cross_entropy(self.predict(x), y)
        aux = self.aux_loss()
        if aux is not None:
            loss = loss + aux
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        out = {"loss": float(loss.detach())}
        if aux is not None:
            out["loss_aux"] = float(aux.detach())
        return out

    def predict(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.network(x)
