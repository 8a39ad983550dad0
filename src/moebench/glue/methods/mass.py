"""``mass``: MASS on BERT (Park & Park, AAAI 2026; psmiz/MASS ``Language/``): the FFN of the
chosen layers becomes ``mass_max_experts`` pre-allocated expert slots (full copies of the
pretrained FFN), ``num_experts`` of them active, routed by the MinTau gate (per token the
smallest expert set whose softmax mass reaches ``mass_tau``; dropless; no balancing loss).

During the first ``mass_expansion_end`` fraction of the T planned steps each step runs, after
``backward()`` and before ``optimizer.step()``, :class:`moebench.moe.mass.MassExpansion`: drift
detection on every active expert's fc1 gradient norm, validation of the previous expansion
(only once a layer has expanded twice: ``review_after=2``, the authors' GLUE loop tests
``expansion_count > 1``), duplication of the drifting expert with the gradient split, and the
redundancy loss ``mass_redundancy_weight x sum_pairs cos(wg_i, wg_j)^2`` with its own backward.

Windows (authors, GLUE): ``t_warmup = max(30, int(0.05 T))``, ``W = max(60, int(0.09 T))``;
the floors are the hparams ``mass_warmup_min`` / ``mass_window_min`` so that short runs
can scale them (params/glue: see docs/glue.md); the authors' values at paper scale.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from torch import Tensor, nn

from moebench.declare import Hp, declare
from moebench.glue.methods.dense import Dense
from moebench.glue.methods.gmoe import surgery_options
from moebench.glue.surgery import MoESpec, apply_moe
from moebench.moe.expansion import DriftConfig
from moebench.moe.mass import MassExpansion, validation_pass

DECLARATION = declare(
    "mass", study="glue", cls="Mass",
    help="MASS: MinTau routing over pre-allocated slots with adaptive expert expansion",
    shares={"gmoe": ["moe_layers", "fc2_bias", "expert_dropout", "route_padding"]},
    hparams=[
        Hp("num_experts", int, "experts active at the start", min=1, max="mass_max_experts"),
        Hp("mass_max_experts", int, "pre-allocated expert slots per layer (K_max)", min=1),
        Hp("mass_tau", float, "MinTau threshold tau (authors: 0.5 on GLUE)", min=0, max=1,
           min_open=True),
        Hp("mass_p_threshold", float, "drift test significance alpha", min=0, max=1,
           min_open=True, max_open=True),
        Hp("mass_similarity_threshold", float, "alignment threshold delta on |cos(W1, dW1)|",
           min=0, max=1),
        Hp("mass_patience", int, "failed validations tolerated per layer (gamma)", min=0),
        Hp("mass_redundancy_weight", float, "weight of the redundancy loss", min=0),
        Hp("mass_expansion_end", float, "expansion phase: the first fraction of T", min=0,
           max=1),
        Hp("mass_warmup_min", int, "floor of t_warmup = max(floor, int(0.05 T))", min=1),
        Hp("mass_window_min", int, "floor of W = max(floor, int(0.09 T))", min=2),
    ])
REVIEW_AFTER = 2   # authors' GLUE loop: validate the previous expansion if expansion_count > 1


class Mass(Dense):
    """MinTau-routed MoE BERT with MASS expansion (see the module docstring)."""

    NAME: ClassVar[str] = "mass"

    def __init__(self, hf: nn.Module, hparams: Mapping[str, Any], n_steps: int) -> None:
        super().__init__(hf, hparams, n_steps)
        h = self.hparams
        config = DriftConfig.for_run(
            self.n_steps, warmup_min=int(h["mass_warmup_min"]),
            window_min=int(h["mass_window_min"]), p_threshold=float(h["mass_p_threshold"]),
            similarity_threshold=float(h["mass_similarity_threshold"]))
        self.drift = config
        self.expansion_steps = int(float(h["mass_expansion_end"]) * self.n_steps)
        self.mass = MassExpansion(self.model, config, int(h["mass_patience"]),
                                  float(h["mass_redundancy_weight"]), review_after=REVIEW_AFTER)

    def moe_spec(self) -> MoESpec:
        h = self.hparams
        return MoESpec(num_experts=int(h["mass_max_experts"]), router="mintau",
                       router_kwargs={"tau": float(h["mass_tau"]),
                                      "num_active": int(h["num_experts"])},
                       **surgery_options(h))

    def convert(self, hf: nn.Module) -> nn.Module:
        return apply_moe(hf, self.moe_spec(), upcycle=True)

    def in_expansion_phase(self) -> bool:
        return self.step < self.expansion_steps

    def after_backward(self, batch: Mapping[str, Tensor], loss: Tensor) -> float:
        """MASS's step logic in the expansion phase; returns the redundancy loss value."""
        if not self.in_expansion_phase():
            return 0.0
        self.mass.after_backward(self.step, float(loss.detach()),
                                 lambda: self.masked_loss(batch))
        return self.mass.redundancy_backward()

    def masked_loss(self, batch: Mapping[str, Tensor]) -> float:
        """Task loss of the current (masked) model on ``batch``, without side effects."""
        with validation_pass(self.model):
            return float(self.task_loss(batch))

    def routing_stats(self, reset: bool = True) -> dict[str, dict]:
        """Dense's stats plus ``active_experts``, ``expansion_stopped`` and ``events``."""
        return self.mass.add_stats(super().routing_stats(reset))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mass": self.mass.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.mass.load_state_dict(state["mass"])
