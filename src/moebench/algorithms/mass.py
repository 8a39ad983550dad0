"""MASS (Park & Park, AAAI 2026; spec mass_mode_mos_tutel.md §1): a GMoE-style ViT whose MoE
layers use the MinTau gate (per token the smallest expert set whose softmax mass reaches
``mass_tau``; dropless; no aux loss) and grow experts during the first ``mass_expansion_end``
fraction of training from gradient drift (``moebench.moe.expansion``).

Slots: every MoE layer holds ``mass_max_experts`` experts from the start; the first
``num_experts`` are active. One training step (authors' ``update_mass``, vision branch):

1. CE loss, ``backward()``.
2. Expansion phase only (``step < int(mass_expansion_end * n_steps)``), per MoE layer in
   order: record fc1 gradient norms; if an expert drifts (p < alpha, |cos| < delta) and the
   layer has expanded before, mask its most recent child, re-run the batch under ``no_grad``
   (train mode, RNG forked so the run's random stream is untouched, routing stats paused) and
   remove the child when ``loss_masked - loss <= 0`` (patience 3, then stop); then copy the
   drifting expert into the first free slot and split this step's gradients.
   Then ``(mass_redundancy_weight * sum_layers sum_pairs cos(wg_i, wg_j)^2).backward()``.
3. ``optimizer.step()`` (Adam; parameters never change shape, so no optimizer surgery).

Tiny defaults (embedded 8x8 digits, ViT embed 64, N = 120 steps): warm-up/window floors 5 / 8
(the 0.05 N / 0.09 N fractions rule: t_warmup 6, W 10, phase 12 steps; paper scale: 100 / 200)
and delta = 0.02: the authors' 0.002 (DeiT-S, fc1 384 x 1536) scaled by
sqrt(#fc1 entries DeiT-S / tiny 64 x 128) = 8.5, i.e. the same multiple of the |cos| of a
random direction (~1/sqrt(#entries)); p threshold 0.01, patience 3, redundancy 0.01, tau 0.3.

Records: ``routing[layer]`` gains ``active_experts`` (int) and ``events`` (every expansion /
removal so far, cumulative: ``{"step", "kind", "parent", "slot", "p_value", ...}``).
"""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.algorithms.base import HparamsError, Minibatches, concat_minibatches
from moebench.algorithms.erm import ERM
from moebench.algorithms.gmoe import GMoE, build_moe_network
from moebench.moe import MoELayer
from moebench.moe.expansion import DriftConfig, LayerExpander, Trigger
from moebench.registry import ALGORITHMS

MASS_HPARAMS: tuple[str, ...] = (
    "moe_init", "num_experts", "moe_blocks", "expert_drop", "mass_max_experts", "mass_tau",
    "mass_p_threshold", "mass_similarity_threshold", "mass_patience",
    "mass_redundancy_weight", "mass_warmup_min", "mass_window_min", "mass_expansion_end")


def _check_range(hparams: Mapping[str, Any], key: str, low: float, high: float,
                 low_open: bool = False, high_open: bool = False) -> float:
    """hparams[key] as float, checked to lie in [low, high] (open ends when asked)."""
    value = float(hparams[key])
    if not (low < value if low_open else low <= value) or \
            not (value < high if high_open else value <= high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise HparamsError(f"hparam {key} must be in {interval}, got {hparams[key]!r}")
    return value


def drift_config(hparams: Mapping[str, Any], n_steps: int) -> DriftConfig:
    """The detector settings for a run of ``n_steps`` (see ``DriftConfig.for_run``)."""
    p = _check_range(hparams, "mass_p_threshold", 0.0, 1.0, low_open=True, high_open=True)
    sim = _check_range(hparams, "mass_similarity_threshold", 0.0, 1.0)
    warm = int(_check_range(hparams, "mass_warmup_min", 1, float("inf")))
    win = int(_check_range(hparams, "mass_window_min", 2, float("inf")))
    return DriftConfig.for_run(n_steps, warmup_min=warm, window_min=win,
                               p_threshold=p, similarity_threshold=sim)


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


@ALGORITHMS.register("mass")
class MASS(GMoE):
    """MinTau-routed MoE ViT with MASS expansion (see the module docstring)."""

    NAME: ClassVar[str] = "mass"
    REQUIRED_HPARAMS: ClassVar[tuple[str, ...]] = ERM.REQUIRED_HPARAMS + MASS_HPARAMS

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, num_domains: int,
                 hparams: Mapping[str, Any], *, n_steps: int) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams, n_steps=n_steps)
        config = drift_config(self.hparams, self.n_steps)
        patience = int(_check_range(self.hparams, "mass_patience", 0, float("inf")))
        self.redundancy_weight = _check_range(self.hparams, "mass_redundancy_weight", 0,
                                              float("inf"))
        end = _check_range(self.hparams, "mass_expansion_end", 0.0, 1.0)
        self.expansion_steps = int(end * self.n_steps)
        self.expanders: dict[str, LayerExpander] = {
            name: LayerExpander(m, config, patience)
            for name, m in self.network.named_modules() if isinstance(m, MoELayer)}
        self.step = 0

    def build_network(self) -> nn.Module:
        """GMoE's network with ``mass_max_experts`` mintau slots, ``num_experts`` active."""
        max_e = int(self.hparams["mass_max_experts"])
        start = int(self.hparams["num_experts"])
        if not 1 <= start <= max_e:
            raise HparamsError(f"hparam num_experts must be in [1, mass_max_experts={max_e}], "
                               f"got {self.hparams['num_experts']!r}")
        tau = _check_range(self.hparams, "mass_tau", 0.0, 1.0, low_open=True)
        fixed = {"num_experts": max_e, "router": "mintau", "top_k": 1, "capacity_factor": 0.0,
                 "gate_noise": 0.0, "batch_prioritized": True}
        model = build_moe_network({**self.hparams, **fixed}, self.input_shape, self.num_classes)
        for m in model.modules():
            if isinstance(m, MoELayer):
                m.router.tau = tau
                m.router.active_mask.copy_(torch.arange(max_e) < start)
        return model

    def aux_loss(self) -> None:
        """MinTau has no balancing loss (MASS: none)."""
        return None

    def task_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy of the network on x [B, C, H, W], y [B] (also used for validation)."""
        return F.cross_entropy(self.predict(x), y)

    def in_expansion_phase(self) -> bool:
        """True during the first ``mass_expansion_end`` fraction of ``n_steps``."""
        return self.step < self.expansion_steps

    def update(self, minibatches: Minibatches, unlabeled: Any = None) -> dict[str, float]:
        """One MASS step; returns {"loss": CE + weighted redundancy, "loss_aux": weighted
        redundancy (0 outside the expansion phase)}."""
        x, y = concat_minibatches(minibatches)
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task_loss(x, y)
        loss.backward()
        aux = 0.0
        if self.in_expansion_phase():
            self._expansion_step(x, y, float(loss.detach()))
            aux = self._redundancy_backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()) + aux, "loss_aux": aux}

    def _expansion_step(self, x: Tensor, y: Tensor, loss: float) -> None:
        """Detector update, validation of the previous expansion and at most one expansion per
        layer (layers in model order; a later layer sees an earlier layer's expansion)."""
        for ctl in self.expanders.values():
            if ctl.stopped:
                continue
            ctl.observe()
            trigger = ctl.check()
            if trigger is None:
                continue
            if ctl.pairs and not self._review(ctl, trigger, x, y, loss):
                continue
            ctl.expand(trigger, self.step)

    def _review(self, ctl: LayerExpander, trigger: Trigger, x: Tensor, y: Tensor,
                loss: float) -> bool:
        """Mask the layer's last child, re-run the batch; keep it only if the loss rises."""
        slot = ctl.pairs[-1][1]
        ctl.mask[slot] = False
        try:
            masked = self.masked_loss(x, y)
        finally:
            ctl.mask[slot] = True
        return ctl.review_last(masked - loss, self.step, trigger.p_value)

    def masked_loss(self, x: Tensor, y: Tensor) -> float:
        """Task loss of the current (masked) network on the step's batch, no side effects."""
        with validation_pass(self.network):
            return float(self.task_loss(x, y))

    def _redundancy_backward(self) -> float:
        """Backward of the weighted redundancy penalty over all layers; returns its value."""
        terms = [ctl.redundancy() for ctl in self.expanders.values() if ctl.pairs]
        if not terms or self.redundancy_weight == 0:
            return 0.0
        total = self.redundancy_weight * torch.stack(terms).sum()
        total.backward()
        return float(total.detach())

    def routing_stats(self, reset: bool = True) -> dict[str, dict]:
        """GMoE's per-layer stats plus ``active_experts`` (int), ``expansion_stopped`` and the
        cumulative ``events`` list of each layer."""
        stats = super().routing_stats(reset=reset)
        for name, ctl in self.expanders.items():
            layer_stats = stats.setdefault(name, {})
            layer_stats["active_experts"] = ctl.num_active
            layer_stats["expansion_stopped"] = ctl.stopped
            layer_stats["events"] = [dict(e) for e in ctl.events]
        return stats

    def extra_state(self) -> dict[str, Any]:
        """Step counter and every layer's expander state (detector, pairs, patience, events)."""
        return {"step": self.step,
                "layers": {name: ctl.state_dict() for name, ctl in self.expanders.items()}}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`extra_state` (missing layers are an error)."""
        self.step = int(state.get("step", 0))
        layers = state.get("layers", {})
        missing = sorted(set(self.expanders) - set(layers))
        if missing:
            raise ValueError(f"MASS checkpoint lacks expander state for layers {missing}")
        for name, ctl in self.expanders.items():
            ctl.load_state_dict(layers[name])
