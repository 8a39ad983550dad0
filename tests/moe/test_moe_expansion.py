"""MASS's core (moebench.moe.expansion): drift detector, window rule, expansion and removal
of a mintau layer's experts, gradient split and redundancy loss."""
from __future__ import annotations

import math
import statistics
from collections import deque

import pytest
import torch

from moebench.moe import MoELayer
from moebench.moe.expansion import (
    DriftConfig,
    DriftDetector,
    LayerExpander,
    Trigger,
    redundancy_loss,
    split_gradients,
)


def reference_p(seq: list[float], warmup: int, window: int, eps: float = 1e-12) -> float:
    """Straight transcription of the test with deques (authors' code, eps on the std)."""
    grads, zs = deque(maxlen=window), deque(maxlen=window)
    for count, g in enumerate(seq, 1):
        grads.append(g)
        if count >= warmup and len(grads) >= 2:
            zs.append((g - statistics.mean(grads)) / (statistics.stdev(grads) + eps))
    s = sum(zs) / math.sqrt(window)
    return 1.0 - 0.5 * (1.0 + math.erf(s / math.sqrt(2.0)))


def run_detector(seqs: list[list[float]], warmup: int = 5, window: int = 20) -> DriftDetector:
    det = DriftDetector(len(seqs), DriftConfig(warmup=warmup, window=window))
    for values in zip(*seqs):
        det.observe(torch.tensor(values, dtype=torch.float64),
                    torch.ones(len(seqs), dtype=torch.bool))
    return det


def test_detector_p_values_on_synthetic_sequences() -> None:
    g = torch.Generator().manual_seed(0)
    noise = (0.02 * torch.randn(60, generator=g)).tolist()
    constant = [1.0 + n for n in noise]
    step_up = [1.0 + n + (2.0 if i >= 50 else 0.0) for i, n in enumerate(noise)]
    ramp = [1.0 + n + 0.05 * i for i, n in enumerate(noise)]
    flat = [3.0] * 60
    det = run_detector([constant, step_up, ramp, flat])
    p = det.p_values()
    assert p[0] > 0.05 and p[1] < 0.01 and p[2] < 0.01
    assert p[3] == 0.5                      # std 0: z = 0 / (0 + eps), no NaN (authors' bug)
    for i, seq in enumerate([constant, step_up, ramp]):
        assert float(p[i]) == pytest.approx(reference_p(seq, 5, 20), rel=1e-9, abs=1e-12)
    assert det.candidates(torch.ones(4, dtype=torch.bool)).tolist() == [False, True, True, False]


def test_detector_warmup_window_and_inactive_experts() -> None:
    det = DriftDetector(2, DriftConfig(warmup=3, window=4))
    for i in range(3):
        det.observe(torch.tensor([1.0 + i, 5.0]), torch.tensor([True, False]))
        assert not det.eligible(torch.tensor([True, True])).any()
    det.observe(torch.tensor([9.0, 5.0]), torch.tensor([True, False]))
    assert det.eligible(torch.tensor([True, True])).tolist() == [True, False]
    assert det.count.tolist() == [4, 0] and det.n_zs.tolist() == [2, 0]
    det.reset_warmup(0)
    assert not det.eligible(torch.tensor([True, True])).any() and det.n_grads[0] == 4


def test_window_scaling_rule() -> None:
    paper = DriftConfig.for_run(5001)
    assert (paper.warmup, paper.window) == (250, 450)
    assert (DriftConfig.for_run(1000).warmup, DriftConfig.for_run(1000).window) == (100, 200)
    tiny = DriftConfig.for_run(120, warmup_min=5, window_min=8)
    assert (tiny.warmup, tiny.window) == (6, 10)
    assert DriftConfig.for_run(40, warmup_min=5, window_min=8).window == 8


# ---------------------------------------------------------------- expansion ops
def mintau_layer(num_experts: int = 4, active: int = 2) -> MoELayer:
    torch.manual_seed(0)
    return MoELayer(8, 16, num_experts=num_experts, router="mintau",
                    router_kwargs={"tau": 0.5, "num_active": active})


def test_expand_copies_exactly_and_removal_restores_the_mask() -> None:
    layer = mintau_layer()
    before = layer.router.active_mask.clone()
    ctl = LayerExpander(layer, DriftConfig(warmup=1, window=2), patience=1)
    ctl.detector.observe(torch.tensor([1.0, 2.0, 0, 0]), before)
    slot = ctl.expand(Trigger(expert=1, p_value=0.001, cos=0.0), step=5)
    assert slot == 2 and layer.router.active_mask.tolist() == [True, True, True, False]
    ex = layer.experts
    for p in (ex.fc1_weight, ex.fc1_bias, ex.fc2_weight, ex.fc2_bias, layer.router.weight):
        assert torch.equal(p[2], p[1]) and not torch.equal(p[2], p[3])
    assert ctl.pairs == [(1, 2)] and ctl.detector.count.tolist() == [1, 0, 0, 0]
    assert ctl.remove_last(step=6) == 2
    assert torch.equal(layer.router.active_mask, before) and ctl.pairs == []
    assert [e["kind"] for e in ctl.events] == ["expand", "remove"]
    assert ctl.events[0] == {"step": 5, "kind": "expand", "parent": 1, "slot": 2,
                             "p_value": 0.001, "cos": 0.0}


def test_review_patience_then_stop() -> None:
    ctl = LayerExpander(mintau_layer(num_experts=6), DriftConfig(warmup=1, window=2), patience=1)
    trig = Trigger(expert=0, p_value=0.001, cos=0.0)
    ctl.expand(trig, 0)
    assert ctl.review_last(0.3, step=1) and ctl.num_active == 3          # helps: kept
    assert ctl.review_last(-0.1, step=2) and ctl.num_active == 2 and ctl.patience == 0
    ctl.expand(trig, 2)
    assert not ctl.review_last(0.0, step=3) and ctl.stopped and ctl.num_active == 2
    assert ctl.check() is None
    assert [(e["kind"], e["slot"]) for e in ctl.events] == [
        ("expand", 2), ("remove", 2), ("expand", 2), ("remove", 2)]


def test_gradient_split_projects_parent_and_gives_child_the_full_gradient() -> None:
    layer = mintau_layer()
    layer(torch.randn(20, 8)).square().sum().backward()
    g1 = layer.experts.fc1_weight.grad[0].clone()
    gr = layer.router.weight.grad[0].clone()
    g2 = layer.experts.fc2_weight.grad.clone()
    layer.duplicate_expert(0, 2)
    split_gradients(layer, 0, 2)
    w1, wr = layer.experts.fc1_weight[0].detach(), layer.router.weight[0].detach()
    proj = (g1 * w1).sum(1, keepdim=True) / (w1 * w1).sum(1, keepdim=True) * w1
    assert torch.allclose(layer.experts.fc1_weight.grad[0], proj, atol=1e-7)
    assert torch.equal(layer.experts.fc1_weight.grad[2], g1)
    assert torch.allclose(layer.router.weight.grad[0], (gr @ wr) / (wr @ wr) * wr, atol=1e-7)
    assert torch.equal(layer.router.weight.grad[2], gr)
    assert torch.equal(layer.experts.fc2_weight.grad, g2)   # fc2 untouched


def test_redundancy_loss_equals_hand_computation() -> None:
    w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 2.0], [1.0, 1.0, 0.0], [0.0, 3.0, 4.0]],
                     requires_grad=True)
    pairs = [(0, 2), (1, 3)]
    expected = (1 / math.sqrt(2)) ** 2 + ((6 + 8) / (3 * 5)) ** 2
    loss = redundancy_loss(w, pairs)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert w.grad[0].abs().sum() > 0 and redundancy_loss(w, []).item() == 0.0


# ---------------------------------------------------------------- algorithm
