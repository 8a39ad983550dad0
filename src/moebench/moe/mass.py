"""MASS's training-step logic for any model with mintau :class:`MoELayer` slots (Park & Park,
AAAI 2026; psmiz/MASS ``update_mass`` in the vision and language training loops).

One step, per MoE layer in model order, after ``loss.backward()`` and before
``optimizer.step()`` (during the expansion phase only):

1. record the fc1 gradient norms of the active experts (drift detector);
2. if an expert drifts (p < alpha and |cos(W1, dW1)| < delta) and the layer has expanded at
   least ``review_after`` times, mask its most recent child, re-run the batch without
   gradients and remove the child when ``loss_masked - loss <= 0`` (patience, then stop);
3. copy the drifting expert into the first free slot and split this step's gradients.

Then the weighted redundancy penalty ``sum_pairs cos(wg_i, wg_j)^2`` gets its own backward.
The authors validate after the first expansion on DomainBed (``expansion_count > 0``) and after
the second on GLUE (``> 1``): ``review_after`` is 1 or 2. Both studies use this class.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from moebench.moe.expansion import DriftConfig, LayerExpander, Trigger
from moebench.moe.layer import MoELayer


@contextlib.contextmanager
def validation_pass(model: nn.Module) -> Iterator[None]:
    """For the masked re-run: no grad, RNG forked (the run's stream is untouched) and MoE
    routing stats paused (MoELayer records only while its own ``training`` flag is set; the
    flag is cleared on the MoELayer modules alone, so experts keep their train-mode dropout)."""
    layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    modes = [m.training for m in layers]
    param = next(model.parameters())
    devices = [param.device.index or 0] if param.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        for m in layers:
            m.training = False
        try:
            yield
        finally:
            for m, mode in zip(layers, modes):
                m.training = mode


@torch.no_grad()
def activate_slots(model: nn.Module, tau: float, num_active: int) -> None:
    """Set every mintau MoELayer of ``model`` to threshold ``tau`` with the first
    ``num_active`` slots active (the others are pre-allocated, never selected)."""
    for m in model.modules():
        if isinstance(m, MoELayer):
            m.router.tau = float(tau)
            m.router.active_mask.copy_(torch.arange(m.num_experts) < num_active)


class MassExpansion:
    """Expansion controller over every MoELayer of ``model`` (see the module docstring)."""

    def __init__(self, model: nn.Module, config: DriftConfig, patience: int,
                 redundancy_weight: float, review_after: int = 1) -> None:
        if review_after < 1:
            raise ValueError(f"review_after must be >= 1, got {review_after}")
        self.model = model
        self.redundancy_weight = float(redundancy_weight)
        self.review_after = int(review_after)
        self.expanders: dict[str, LayerExpander] = {
            name: LayerExpander(m, config, patience)
            for name, m in model.named_modules() if isinstance(m, MoELayer)}
        if not self.expanders:
            raise ValueError("MASS needs at least one MoELayer in the model")
        self.expansions = {name: 0 for name in self.expanders}

    def after_backward(self, step: int, loss: float, masked_loss: Callable[[], float]) -> None:
        """Detector update, validation of the previous expansion and at most one expansion per
        layer (layers in model order; a later layer sees an earlier layer's expansion).

        ``loss``: this step's task loss; ``masked_loss()``: the same batch's task loss under
        the current masks, computed without side effects (wrap it in :func:`validation_pass`).
        """
        for name, ctl in self.expanders.items():
            if ctl.stopped:
                continue
            ctl.observe()
            trigger = ctl.check()
            if trigger is None:
                continue
            if ctl.pairs and self.expansions[name] >= self.review_after and \
                    not self._review(ctl, trigger, step, loss, masked_loss):
                continue
            ctl.expand(trigger, step)
            self.expansions[name] += 1

    @staticmethod
    def _review(ctl: LayerExpander, trigger: Trigger, step: int, loss: float,
                masked_loss: Callable[[], float]) -> bool:
        """Mask the layer's last child, re-run the batch; keep it only if the loss rises."""
        slot = ctl.pairs[-1][1]
        ctl.mask[slot] = False
        try:
            masked = float(masked_loss())
        finally:
            ctl.mask[slot] = True
        return ctl.review_last(masked - loss, step, trigger.p_value)

    def redundancy_backward(self) -> float:
        """Backward of the weighted redundancy penalty over all layers; returns its value."""
        terms = [ctl.redundancy() for ctl in self.expanders.values() if ctl.pairs]
        if not terms or self.redundancy_weight == 0:
            return 0.0
        total = self.redundancy_weight * torch.stack(terms).sum()
        total.backward()
        return float(total.detach())

    def add_stats(self, stats: dict[str, dict]) -> dict[str, dict]:
        """Per layer: ``active_experts`` (int), ``expansion_stopped`` and the cumulative
        ``events`` list, added to routing ``stats`` (returned)."""
        for name, ctl in self.expanders.items():
            layer_stats = stats.setdefault(name, {})
            layer_stats["active_experts"] = ctl.num_active
            layer_stats["expansion_stopped"] = ctl.stopped
            layer_stats["events"] = [dict(e) for e in ctl.events]
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Every layer's expander state (detector, pairs, patience, events)."""
        return {"layers": {name: ctl.state_dict() for name, ctl in self.expanders.items()},
                "expansions": dict(self.expansions)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (missing layers are an error)."""
        layers = state.get("layers", {})
        missing = sorted(set(self.expanders) - set(layers))
        if missing:
            raise ValueError(f"MASS checkpoint lacks expander state for layers {missing}")
        for name, ctl in self.expanders.items():
            ctl.load_state_dict(layers[name])
        counts = state.get("expansions")
        self.expansions = ({name: int(counts[name]) for name in self.expanders} if counts else
                           {name: sum(e["kind"] == "expand" for e in ctl.events)
                            for name, ctl in self.expanders.items()})

    def __iter__(self) -> Iterator[tuple[str, LayerExpander]]:
        return iter(self.expanders.items())

