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

from typing import Any, ClassVar, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from moebench.declare import Hp, declare
from moebench.dg.algorithms.base import Minibatches, concat_minibatches
from moebench.dg.algorithms.gmoe import GMoE, build_moe_network
from moebench.moe.expansion import DriftConfig
from moebench.moe.mass import MassExpansion, activate_slots, validation_pass

DECLARATION = declare(
    "mass", study="dg", cls="MASS",
    help="MASS: MinTau routing + adaptive expert expansion from gradient drift",
    shares={"gmoe": ["moe_blocks", "expert_drop"]},
    hparams=[
        Hp("num_experts", int, "active experts at the start", min=1, max="mass_max_experts"),
        Hp("mass_max_experts", int, "pre-allocated expert slots per MoE layer", min=1),
        Hp("mass_tau", float, "MinTau: smallest expert set whose softmax mass reaches tau",
           min=0, min_open=True, max=1),
        Hp("mass_p_threshold", float, "drift test significance alpha", min=0, min_open=True,
           max=1, max_open=True),
        Hp("mass_similarity_threshold", float, "expand only if |cos(W1, dW1)| < delta",
           min=0, max=1),
        Hp("mass_patience", int, "failed validations of an expansion before stopping", min=0),
        Hp("mass_redundancy_weight", float, "weight of sum cos(wg_i, wg_j)^2 over pairs",
           min=0),
        Hp("mass_warmup_min", int, "floor of the detector warm-up max(floor, 0.05 N)", min=1),
        Hp("mass_window_min", int, "floor of the detector window max(floor, 0.09 N)", min=2),
        Hp("mass_expansion_end", float, "expansion phase: the first fraction of training",
           min=0, max=1),
    ])


def drift_config(hparams: Mapping[str, Any], n_steps: int) -> DriftConfig:
    """The detector settings for a run of ``n_steps`` (see ``DriftConfig.for_run``)."""
    return DriftConfig.for_run(
        n_steps, warmup_min=int(hparams["mass_warmup_min"]),
        window_min=int(hparams["mass_window_min"]),
        p_threshold=float(hparams["mass_p_threshold"]),
        similarity_threshold=float(hparams["mass_similarity_threshold"]))


class MASS(GMoE):
    """MinTau-routed MoE ViT with MASS expansion (see the module docstring)."""

    NAME: ClassVar[str] = "mass"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, num_domains: int,
                 hparams: Mapping[str, Any], *, n_steps: int) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams, n_steps=n_steps)
        config = drift_config(self.hparams, self.n_steps)
        self.expansion_steps = int(float(self.hparams["mass_expansion_end"]) * self.n_steps)
        self.mass = MassExpansion(self.network, config, int(self.hparams["mass_patience"]),
                                  float(self.hparams["mass_redundancy_weight"]),
                                  review_after=1)  # DomainBed: validate after the first expansion
        self.step = 0

    def build_network(self) -> nn.Module:
        """GMoE's network with ``mass_max_experts`` mintau slots, ``num_experts`` active."""
        max_e = int(self.hparams["mass_max_experts"])
        start = int(self.hparams["num_experts"])
        tau = float(self.hparams["mass_tau"])
        fixed = {"num_experts": max_e, "router": "mintau", "top_k": 1, "capacity_factor": 0.0,
                 "gate_noise": 0.0, "batch_prioritized": True}
        model = build_moe_network({**self.hparams, **fixed}, self.input_shape, self.num_classes)
        activate_slots(model, tau, start)
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
            self.mass.after_backward(self.step, float(loss.detach()),
                                     lambda: self.masked_loss(x, y))
            aux = self.mass.redundancy_backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()) + aux, "loss_aux": aux}

    def masked_loss(self, x: Tensor, y: Tensor) -> float:
        """Task loss of the current (masked) network on the step's batch, no side effects."""
        with validation_pass(self.network):
            return float(self.task_loss(x, y))

    def routing_stats(self, reset: bool = True) -> dict[str, dict]:
        """GMoE's per-layer stats plus ``active_experts`` (int), ``expansion_stopped`` and the
        cumulative ``events`` list of each layer."""
        return self.mass.add_stats(super().routing_stats(reset=reset))

    def extra_state(self) -> dict[str, Any]:
        """Step counter and every layer's expander state (detector, pairs, patience, events)."""
        return {"step": self.step, **self.mass.state_dict()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`extra_state` (missing layers are an error)."""
        self.step = int(state.get("step", 0))
        self.mass.load_state_dict(state)
