"""MASS adaptive expert expansion (spec mass_mode_mos_tutel.md §1.3), as testable pieces.

* :class:`DriftConfig` / :func:`DriftConfig.for_run` — warm-up and window scaled to the run.
* :class:`DriftDetector` — per-expert one-sided drift test on the gradient-norm history of
  the FIRST expert matrix (fc1), vectorised over experts (ring buffers [E, W]).
* :func:`weight_grad_cosine`, :func:`split_gradients`, :func:`redundancy_loss` — pure ops.
* :class:`LayerExpander` — one MoE layer's expansion state (detector, duplicated pairs,
  patience, stop flag, event log) and its expand / remove operations.

Scaling rule (documented choice). The authors use, for a run of N steps,
``t_warmup = max(100, int(0.05 N))`` and ``W = max(200, int(0.09 N))`` on vision (N = 5001 ->
250 / 450, expansion phase ends at 0.1 N = 500, so checks can fire in steps ~449-499). We keep
the fractions 0.05 / 0.09 and make the floors (100 / 200) parameters: at paper scale pass
100 / 200 and get the authors' numbers; the tiny default (N = 120) uses small floors (5 / 8),
so the fractions rule: t_warmup = 6, W = 10, phase = steps 0-11, checks can fire in steps
9-11 — the same proportions of the expansion phase as in the paper's runs.

Statistic (authors' code, one bug fixed). After each backward, for every active expert i:
``g = ||dL/dW1_i||_F`` is appended to a window of the last W values; once the expert has
``count >= t_warmup`` observations since its last reset, ``z = (g - mean) / (std + eps)``
(mean and unbiased std over the window *including* g) is appended to a z-window (last W
values). The authors add ``1e-12`` after the division (a constant z = 0/0 gives NaN); we add
``eps`` to the std. ``S = sum(z-window) / sqrt(W)`` (divided by sqrt(W) even while the
z-window is shorter, as in the code), ``p = 1 - Phi(S)``. An expert is eligible when
``count >= t_warmup`` and its window is full; it triggers when ``p < p_threshold`` and
``|cos(W1_i, dW1_i)| < similarity_threshold``; the first triggering expert in index order
wins (at most one expansion per layer per step).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from moebench.moe.layer import MoELayer

log = logging.getLogger(__name__)
EventDict = dict[str, Any]


@dataclass(frozen=True)
class DriftConfig:
    """Detector settings: ``warmup`` observations before z-scores, rolling ``window`` W,
    significance ``p_threshold`` (alpha), alignment ``similarity_threshold`` (delta) and the
    ``eps`` added to the window std."""

    warmup: int
    window: int
    p_threshold: float = 0.01
    similarity_threshold: float = 0.002
    eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {self.warmup}")
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if not 0.0 < self.p_threshold < 1.0:
            raise ValueError(f"p_threshold must be in (0, 1), got {self.p_threshold}")
        if self.similarity_threshold < 0:
            raise ValueError(f"similarity_threshold must be >= 0, got {self.similarity_threshold}")

    @classmethod
    def for_run(cls, n_steps: int, *, warmup_min: int = 100, window_min: int = 200,
                warmup_frac: float = 0.05, window_frac: float = 0.09,
                **kwargs: Any) -> "DriftConfig":
        """Authors' rule ``warmup = max(warmup_min, int(warmup_frac*N))``,
        ``window = max(window_min, int(window_frac*N))``; defaults give the paper's values."""
        warmup = max(int(warmup_min), int(warmup_frac * n_steps))
        window = max(int(window_min), int(window_frac * n_steps))
        return cls(warmup=warmup, window=window, **kwargs)


class DriftDetector:
    """One-sided drift test for ``E`` experts at once (float64, on the CPU).

    State (all tensors, see :meth:`state_dict`): ``grads``/``zs`` [E, W] ring buffers,
    ``n_grads``/``n_zs`` [E] values appended since the expert's statistics were reset (the
    write position is ``n % W``; unused entries are 0), ``count`` [E] observations since the
    last warm-up reset.
    """

    def __init__(self, num_experts: int, config: DriftConfig) -> None:
        self.config = config
        self.num_experts = int(num_experts)
        e, w = self.num_experts, config.window
        self.grads = torch.zeros(e, w, dtype=torch.float64)
        self.zs = torch.zeros(e, w, dtype=torch.float64)
        self.n_grads = torch.zeros(e, dtype=torch.long)
        self.n_zs = torch.zeros(e, dtype=torch.long)
        self.count = torch.zeros(e, dtype=torch.long)

    def observe(self, norms: Tensor, active: Tensor) -> None:
        """Record ``norms`` [E] (||dW1_i||_F) for the experts where ``active`` [E] is True."""
        idx = active.cpu().nonzero().flatten()
        if idx.numel() == 0:
            return
        g = norms.detach().to("cpu", torch.float64)[idx]
        w = self.config.window
        self.count[idx] += 1
        self.grads[idx, self.n_grads[idx] % w] = g
        self.n_grads[idx] += 1
        n = self.n_grads[idx].clamp(max=w)
        buf = self.grads[idx]
        valid = torch.arange(w).unsqueeze(0) < n.unsqueeze(1)
        mean = (buf * valid).sum(1) / n
        var = ((buf - mean.unsqueeze(1)) ** 2 * valid).sum(1) / (n - 1).clamp(min=1)
        z = (g - mean) / (var.sqrt() + self.config.eps)
        ok = (self.count[idx] >= self.config.warmup) & (n >= 2)
        upd = idx[ok]
        self.zs[upd, self.n_zs[upd] % w] = z[ok]
        self.n_zs[upd] += 1

    def statistic(self) -> Tensor:
        """S [E] = sum of the z-window / sqrt(W)."""
        return self.zs.sum(1) / math.sqrt(self.config.window)

    def p_values(self) -> Tensor:
        """p [E] = 1 - Phi(S) (computed as Phi(-S) for accuracy in the tail)."""
        return torch.special.ndtr(-self.statistic())

    def eligible(self, active: Tensor) -> Tensor:
        """[E] bool: active, warmed up (``count >= warmup``) and window full."""
        return active.cpu() & (self.count >= self.config.warmup) & \
            (self.n_grads >= self.config.window)

    def candidates(self, active: Tensor) -> Tensor:
        """[E] bool: eligible experts whose drift p-value is below ``p_threshold``."""
        return self.eligible(active) & (self.p_values() < self.config.p_threshold)

    def reset_warmup(self, expert: int) -> None:
        """Restart expert's warm-up count (its windows are kept; authors' parent reset)."""
        self.count[expert] = 0

    def reset_expert(self, expert: int) -> None:
        """Forget everything about ``expert`` (fresh slot)."""
        for t in (self.grads, self.zs, self.n_grads, self.n_zs, self.count):
            t[expert] = 0

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of the state tensors."""
        return {k: getattr(self, k).clone() for k in ("grads", "zs", "n_grads", "n_zs", "count")}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (shapes must match)."""
        for key, value in state.items():
            mine = getattr(self, key)
            if tuple(mine.shape) != tuple(value.shape):
                raise ValueError(f"detector state {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(mine.shape)}")
            mine.copy_(value)


def fc1_grad_norms(layer: MoELayer) -> Tensor:
    """[E] Frobenius norms of the fc1 gradient per expert slot (0 when there is no grad)."""
    grad = layer.experts.fc1_weight.grad
    if grad is None:
        return torch.zeros(layer.num_experts, dtype=torch.float64)
    return grad.detach().flatten(1).norm(dim=1)


def weight_grad_cosine(weight: Tensor, grad: Tensor, experts: Tensor) -> Tensor:
    """cos(W_i, dW_i) over flattened slices for each ``experts`` index; weight/grad [E, ...]."""
    w = weight.detach()[experts].flatten(1)
    g = grad.detach()[experts].flatten(1)
    return F.cosine_similarity(w.float(), g.float(), dim=1)


@torch.no_grad()
def split_gradients(layer: MoELayer, parent: int, child: int, eps: float = 1e-12) -> None:
    """MASS gradient decomposition in the expansion step (in place on ``.grad``).

    fc1 [E, H, D]: each hidden row r of the parent gets ``(<g_r, w_r> / (|w_r|^2 + eps)) w_r``
    (the part of its gradient along its own weights); the child gets the parent's full original
    gradient. Router rows [E, D]: the same with the row vector. fc2 and biases are not edited.
    """
    for weight in (layer.experts.fc1_weight, layer.router.weight):
        if weight.grad is None:
            continue
        w = weight.detach()[parent]
        g = weight.grad[parent].clone()
        coef = (g * w).sum(-1, keepdim=True) / ((w * w).sum(-1, keepdim=True) + eps)
        weight.grad[parent] = coef * w
        weight.grad[child] = g


def redundancy_loss(router_weight: Tensor, pairs: Sequence[tuple[int, int]]) -> Tensor:
    """sum over duplicated pairs (i, j) of cos(wg_i, wg_j)^2; router_weight [E, D] -> scalar.

    The authors' code SUMS over pairs (the paper writes a mean); we follow the code. 0 (with no
    graph) when there are no pairs.
    """
    if not pairs:
        return router_weight.new_zeros(())
    idx = torch.tensor(list(pairs), device=router_weight.device, dtype=torch.long)
    a = F.normalize(router_weight[idx[:, 0]].float(), dim=1)
    b = F.normalize(router_weight[idx[:, 1]].float(), dim=1)
    return ((a * b).sum(1) ** 2).sum()


@dataclass(frozen=True)
class Trigger:
    """A detected drift: ``expert`` (parent slot), its p-value and weight/grad cosine."""

    expert: int
    p_value: float
    cos: float


class LayerExpander:
    """MASS expansion state of one :class:`MoELayer` with a mintau router (``active_mask``).

    ``observe`` (after backward) -> ``check`` -> optionally ``review_last(gap)`` (validation of
    the previous expansion) -> ``expand``. Events are JSON-ready dicts
    ``{"step", "kind": "expand"|"remove", "parent", "slot", "p_value", ...}``.
    """

    def __init__(self, layer: MoELayer, config: DriftConfig, patience: int = 3) -> None:
        if getattr(layer.router, "active_mask", None) is None:
            raise ValueError(f"MASS needs a router with an active_mask (mintau), "
                             f"got {layer.router_name!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.layer = layer
        self.detector = DriftDetector(layer.num_experts, config)
        self.pairs: list[tuple[int, int]] = []
        self.patience = int(patience)
        self.stopped = bool(self.num_active >= layer.num_experts)
        self.events: list[EventDict] = []

    @property
    def mask(self) -> Tensor:
        """[E] bool active-expert mask of the router (live buffer)."""
        return self.layer.router.active_mask

    @property
    def num_active(self) -> int:
        return int(self.mask.sum())

    def first_free_slot(self) -> Optional[int]:
        """Lowest inactive slot index, or None when all slots are active."""
        free = (~self.mask).nonzero().flatten()
        return int(free[0]) if free.numel() else None

    def observe(self) -> None:
        """Feed this step's fc1 gradient norms of the active experts to the detector."""
        self.detector.observe(fc1_grad_norms(self.layer), self.mask)

    def check(self) -> Optional[Trigger]:
        """The first active expert (index order) with p < alpha and |cos(W1, dW1)| < delta."""
        if self.stopped:
            return None
        cand = self.detector.candidates(self.mask).nonzero().flatten()
        grad = self.layer.experts.fc1_weight.grad
        if cand.numel() == 0 or grad is None:
            return None
        weight = self.layer.experts.fc1_weight
        cos = weight_grad_cosine(weight, grad, cand.to(weight.device)).cpu()
        hits = (cos.abs() < self.detector.config.similarity_threshold).nonzero().flatten()
        if hits.numel() == 0:
            return None
        i = int(hits[0])
        e = int(cand[i])
        return Trigger(expert=e, p_value=float(self.detector.p_values()[e]), cos=float(cos[i]))

    def expand(self, trigger: Trigger, step: int) -> int:
        """Copy the parent (FFN + router row) into the first free slot, activate it, split
        this step's gradients, reset statistics; returns the new slot."""
        slot = self.first_free_slot()
        if slot is None:
            raise ValueError("no free expert slot to expand into")
        parent = trigger.expert
        self.layer.duplicate_expert(parent, slot)
        split_gradients(self.layer, parent, slot)
        self.pairs.append((parent, slot))
        self.detector.reset_warmup(parent)
        self.detector.reset_expert(slot)
        self.events.append({"step": int(step), "kind": "expand", "parent": parent,
                            "slot": slot, "p_value": trigger.p_value, "cos": trigger.cos})
        if self.first_free_slot() is None:
            self.stopped = True
        log.debug("MASS step %d: expert %d -> slot %d (p=%.3g, cos=%.3g)", step, parent, slot,
                  trigger.p_value, trigger.cos)
        return slot

    @torch.no_grad()
    def remove_last(self, step: int, p_value: Optional[float] = None,
                    loss_gap: Optional[float] = None) -> int:
        """Deactivate the most recent child slot (mask off), drop its pair and statistics."""
        if not self.pairs:
            raise ValueError("no expansion to remove")
        parent, slot = self.pairs.pop()
        self.mask[slot] = False
        self.detector.reset_expert(slot)
        self.events.append({"step": int(step), "kind": "remove", "parent": parent, "slot": slot,
                            "p_value": p_value, "loss_gap": loss_gap})
        log.debug("MASS step %d: removed slot %d (loss gap %s)", step, slot, loss_gap)
        return slot

    def review_last(self, loss_gap: float, step: int, p_value: Optional[float] = None) -> bool:
        """Validation of the previous expansion, ``loss_gap = loss_masked - loss_full``.

        gap > 0: the last expert helps, keep it -> True (go on expanding). Otherwise remove it;
        with patience left spend one -> True; with none left stop expanding -> False. (Authors'
        quirk fixed: at patience 0 they leave the expert masked but still counted.)
        """
        if loss_gap > 0:
            return True
        self.remove_last(step, p_value, loss_gap)
        if self.patience > 0:
            self.patience -= 1
            return True
        self.stopped = True
        return False

    def redundancy(self) -> Tensor:
        """:func:`redundancy_loss` of this layer's router rows over its duplicated pairs."""
        return redundancy_loss(self.layer.router.weight, self.pairs)

    def state_dict(self) -> dict[str, Any]:
        """Detector tensors and the bookkeeping (plain Python values, deep-copied)."""
        return {"detector": self.detector.state_dict(), "pairs": [list(p) for p in self.pairs],
                "patience": self.patience, "stopped": self.stopped,
                "events": [dict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the active mask lives in the model's state dict)."""
        self.detector.load_state_dict(state["detector"])
        self.pairs = [(int(a), int(b)) for a, b in state["pairs"]]
        self.patience = int(state["patience"])
        self.stopped = bool(state["stopped"])
        self.events = [dict(e) for e in state["events"]]
