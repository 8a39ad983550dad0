"""``dense``: the unmodified pretrained classifier fine-tuned with the authors' protocol
(AdamW, linear schedule, cross-entropy); also the base class of the MoE methods."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.declare import declare
from moebench.glue.model import GlueModel
from moebench.moe import collect_routing_stats

DECLARATION = declare(
    "dense", study="glue", cls="Dense",
    help="the pretrained model fine-tuned as is (no MoE layer)",
    hparams=[])


def linear_schedule(optimizer: torch.optim.Optimizer, n_steps: int, warmup_ratio: float
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear schedule: lr x step/warm-up, then linear decay to 0 at n_steps."""
    warm = int(warmup_ratio * n_steps)

    def factor(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        return max(0.0, (n_steps - step) / max(1, n_steps - warm))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Dense:
    """One fine-tuning run's model, optimizer and schedule.

    ``hf``: a transformers sequence classifier (pretrained, loaded by the caller);
    ``hparams``: the resolved hparams of the run; ``n_steps``: the planned number of
    optimizer steps T (the schedule and MASS's windows are computed from it).
    """

    NAME: ClassVar[str] = "dense"

    def __init__(self, hf: nn.Module, hparams: Mapping[str, Any], n_steps: int) -> None:
        self.hparams = dict(hparams)
        self.n_steps = int(n_steps)
        self.model = GlueModel(self.convert(hf), int(self.hparams["freeze_layers"]))
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Any = None
        self.step = 0

    def convert(self, hf: nn.Module) -> nn.Module:
        """Model surgery before training (dense: none)."""
        return hf

    def to(self, device: torch.device) -> "Dense":
        """Move the model, then build the optimizer over its trainable parameters."""
        device = torch.device(device)
        self.model.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: the same AdamW update in one kernel (10x faster on CPU for the 16 x FFN
        # expert tensors of MASS than the per-tensor loop)
        fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=float(self.hparams["lr"]),
                                           weight_decay=float(self.hparams["weight_decay"]),
                                           fused=fused or None)
        self.scheduler = linear_schedule(self.optimizer, self.n_steps,
                                         float(self.hparams["warmup_ratio"]))
        return self

    def task_loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Cross-entropy of the model on ``batch`` (labels [B])."""
        return F.cross_entropy(self.model(batch), batch["labels"])

    def aux_loss(self) -> Optional[Tensor]:
        """The weighted auxiliary loss of the last forward (dense: none)."""
        return None

    def update(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        """One optimizer step; {"loss": task + aux, "loss_aux": aux}."""
        assert self.optimizer is not None, "call .to(device) first"
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task_loss(batch)
        aux = self.aux_loss()
        total = loss if aux is None else loss + aux
        total.backward()
        extra = self.after_backward(batch, loss)
        clip = self.hparams.get("max_grad_norm")
        if clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        aux_value = (0.0 if aux is None else float(aux.detach())) + extra
        return {"loss": float(loss.detach()) + aux_value, "loss_aux": aux_value}

    def after_backward(self, batch: Mapping[str, Tensor], loss: Tensor) -> float:
        """Hook between backward and the optimizer step; returns an extra loss value."""
        return 0.0

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits [B, C] (the caller sets eval mode)."""
        return self.model(batch)

    def routing_stats(self, reset: bool = True) -> dict[str, dict]:
        """Per MoE layer: load, dropped, tokens, mean_k and the number of experts K."""
        stats = collect_routing_stats(self.model, reset=reset)
        for name, module in self.model.named_modules():
            if name in stats:
                mask = getattr(module.router, "active_mask", None)
                stats[name]["num_experts"] = int(mask.sum()) if mask is not None \
                    else module.num_experts
        return stats

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds: trainable weights, optimizer, schedule, step."""
        return {"model": self.model.trainable_state(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_trainable_state(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
