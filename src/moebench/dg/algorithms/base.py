"""The DomainBed algorithm contract shared by every ALGORITHMS entry.

``update(minibatches)`` takes one ``(x [B_d, C, H, W], y [B_d])`` minibatch per training
domain and does one optimiser step; ``predict(x [B, C, H, W]) -> logits [B, num_classes]``.
``checkpoint_state`` / ``load_checkpoint_state`` cover the whole module (network, buffers)
and the optimiser, so a resumed run continues bit-identically provided the caller also
restores the RNG streams (torch/numpy/python) and the data order.
"""
from __future__ import annotations

import sys
from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from moebench.declare import Hp, hparam_table
from moebench.hparams import HparamsError, check_values

Minibatches = Sequence[tuple[Tensor, Tensor]]


def declared_hparams(cls: type) -> Optional[dict[str, Hp]]:
    """The hyperparameters ``cls`` declares (its module's ``DECLARATION`` plus the study's
    common ones), or None for a class whose module declares nothing."""
    from moebench.dg.study import COMMON_HPARAMS, declarations

    decl = getattr(sys.modules.get(cls.__module__), "DECLARATION", None)
    if decl is None:
        return None
    return hparam_table(decl, {**declarations(), decl.name: decl}, COMMON_HPARAMS)


def check_hparams(algorithm: str, hparams: Mapping[str, Any], table: Mapping[str, Hp]) -> None:
    """Every declared hparam present (one line naming the missing keys) and valid (the same
    checks the workflow runs at parse time, for algorithms built directly)."""
    missing = [key for key in table if key not in hparams]
    if missing:
        raise HparamsError(f"algorithm {algorithm!r} is missing hparams: {', '.join(missing)}")
    check_values({k: v for k, v in hparams.items() if k in table}, table, ["hparams"],
                 context=hparams)


def concat_minibatches(minibatches: Minibatches) -> tuple[Tensor, Tensor]:
    """[(x [B_d, ...], y [B_d])] per domain -> (x [sum B_d, ...], y [sum B_d])."""
    if not minibatches:
        raise ValueError("update() needs at least one (x, y) minibatch")
    return torch.cat([x for x, _ in minibatches]), torch.cat([y for _, y in minibatches])


class Algorithm(nn.Module):
    """Base class: hparams check, bookkeeping and checkpointing; subclasses set ``self.network``
    and ``self.optimizer`` and implement ``update`` / ``predict``. The hyperparameters a
    subclass reads are those its module's ``DECLARATION`` declares."""

    NAME: ClassVar[str] = "algorithm"

    def __init__(self, input_shape: Sequence[int], num_classes: int, num_domains: int,
                 hparams: Mapping[str, Any], *, n_steps: int) -> None:
        super().__init__()
        table = declared_hparams(type(self))
        if table is not None:
            check_hparams(self.NAME, hparams, table)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.num_domains = int(num_domains)
        self.hparams = dict(hparams)
        self.n_steps = int(n_steps)
        self.optimizer: Optional[torch.optim.Optimizer] = None

    def update(self, minibatches: Minibatches, unlabeled: Any = None) -> dict[str, float]:
        """One optimiser step on the concatenated minibatches; returns {"loss": ..., ...}."""
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        raise NotImplementedError

    def routing_stats(self, reset: bool = True) -> dict[str, dict]:
        """Per-MoE-layer routing stats since the last reset ({} for dense models)."""
        from moebench.moe import MoELayer, collect_routing_stats

        if not any(isinstance(m, MoELayer) for m in self.modules()):
            return {}
        return collect_routing_stats(getattr(self, "network", self), reset=reset)

    def extra_state(self) -> dict[str, Any]:
        """Algorithm state beyond parameters/buffers/optimiser (override when needed)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    def checkpoint_state(self) -> dict[str, Any]:
        """{"model", "optimizer", "algorithm"} state dicts (live tensors: torch.save or copy)."""
        return {"model": self.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "algorithm": self.extra_state()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` returned (strict: same architecture)."""
        self.load_state_dict(state["model"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.load_extra_state(state.get("algorithm") or {})
