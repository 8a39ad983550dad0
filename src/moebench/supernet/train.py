"""Supernet training with the sandwich rule, and a resumable training loop reusable for a
standalone subnet (part of the search stage's retraining).

Per update (HAT / MoS ``train.py`` + ``trainer.train_step``): the architectures of the update
are a random subnet (sampled with a generator seeded by the update number) plus, with the
sandwich rule, the largest and the smallest; for each of them every micro-batch of the
update (``update_freq``) runs forward and backward, the gradients add up and are divided by
the total number of target tokens (fairseq's ``grad_denom``), then one Adam step. Loss:
label-smoothed cross-entropy (0.1). Learning rate: linear warm-up from ``warmup_init_lr`` to
``lr`` over ``warmup_updates``, then a cosine to ``min_lr`` at ``max_updates`` (fairseq's
cosine schedule without restarts).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from moebench.supernet.data import Batch
from moebench.supernet.model_layers import label_smoothed_nll
from moebench.supernet.space import Arch, Space

ArchList = Sequence[Optional[Arch]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run."""

    max_updates: int = 100
    lr: float = 1e-3
    warmup_updates: int = 10
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    label_smoothing: float = 0.1
    max_tokens: int = 1024
    update_freq: int = 1
    sandwich: bool = True
    eval_every: int = 50
    seed: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


def lr_at(update: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``update`` (0-based)."""
    if update < cfg.warmup_updates:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * update / cfg.warmup_updates
    span = max(1, cfg.max_updates - cfg.warmup_updates)
    t = min(1.0, (update - cfg.warmup_updates) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def sandwich_archs(space: Space, update: int, seed: int, sandwich: bool = True) -> list[Arch]:
    """[random, largest, smallest] (sandwich rule) or [random] for update ``update``."""
    rng = np.random.default_rng([seed, update])
    archs = [space.sample(rng)]
    return archs + [space.largest(), space.smallest()] if sandwich else archs


def _logits(model: nn.Module, b: Batch, arch: Optional[Arch]) -> torch.Tensor:
    return model(b.src, b.prev) if arch is None else model(b.src, b.prev, arch)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the run's betas, eps and weight decay."""
    return torch.optim.Adam(model.parameters(), lr=cfg.warmup_init_lr, betas=cfg.adam_betas,
                            eps=cfg.adam_eps, weight_decay=cfg.weight_decay)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[Batch],
               archs: ArchList, cfg: TrainConfig, pad: int, lr: float) -> list[float]:
    """One update over ``batches`` (the micro-batches) for every arch of ``archs`` (None =
    a standalone model called as ``model(src, prev)``); returns the label-smoothed loss per
    target token of each arch (nats)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    denom = float(sum(b.ntokens for b in batches) * len(archs))
    losses = []
    for arch in archs:
        total = 0.0
        for b in batches:
            loss, _, n = label_smoothed_nll(_logits(model, b, arch), b.target, pad,
                                            cfg.label_smoothing)
            (loss / denom).backward()
            total += float(loss.detach())
        losses.append(total / sum(b.ntokens for b in batches))
    if cfg.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return losses


@torch.no_grad()
def valid_loss(model: nn.Module, arch: Optional[Arch], batches: Sequence[Batch],
               epsilon: float = 0.1, pad: int = 1, nll: bool = False) -> float:
    """Label-smoothed cross-entropy per target token (nats) of ``arch`` on ``batches``
    (eval mode; the search's fitness). ``nll=True``: the plain negative log-likelihood."""
    was = model.training
    model.eval()
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    try:
        for b in batches:
            b = b.to(device)
            loss, nll_sum, n = label_smoothed_nll(_logits(model, b, arch), b.target, pad, epsilon)
            total += float(nll_sum if nll else loss)
            tokens += n
    finally:
        model.train(was)
    return total / max(tokens, 1)

