"""Aux losses equal hand-computed values (plain Python arithmetic)."""
from __future__ import annotations

import math

import pytest
import torch

from moebench.moe import MoELayer
from moebench.moe import losses

LOGITS = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [0.0, 3.0, 1.0], [-1.0, 0.2, 0.1]]


def _softmax(row):
    m = max(row)
    ex = [math.exp(v - m) for v in row]
    return [v / sum(ex) for v in ex]


def _cv2(v):
    mean = sum(v) / len(v)
    var = sum((a - mean) ** 2 for a in v) / (len(v) - 1)
    return var / (mean ** 2 + 1e-10)


def test_cv_squared():
    assert float(losses.cv_squared(torch.tensor([1.0, 2.0, 3.0]))) == pytest.approx(_cv2([1, 2, 3]))
    assert float(losses.cv_squared(torch.tensor([4.0]))) == 0.0


def test_gshard_loss_by_hand():
    probs = [_softmax(r) for r in LOGITS]
    top1 = [max(range(3), key=lambda e: p[e]) for p in probs]
    want = sum(sum(p[e] for p in probs) * top1.count(e) for e in range(3)) * 3 / 16
    got = losses.gshard_loss(torch.tensor(probs), torch.tensor(top1))
    assert float(got) == pytest.approx(want, rel=1e-6)
    uniform = torch.full((6, 3), 1 / 3)
    assert float(losses.gshard_loss(uniform, torch.tensor([0, 1, 2, 0, 1, 2]))) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 2])
def test_importance_load_loss_by_hand(k):
    noise = [[0.1, -0.2, 0.05], [0.0, 0.3, -0.1], [0.2, 0.2, 0.2], [-0.3, 0.1, 0.0]]
    noisy = [[a + b for a, b in zip(r, n)] for r, n in zip(LOGITS, noise)]
    gate_noise, E = 1.0, 3
    clean_p = [_softmax(r) for r in LOGITS]
    imp = [sum(p[e] for p in clean_p) for e in range(E)]
    std = gate_noise / E
    load = [0.0] * E
    for p, nrow in zip(clean_p, noisy):
        thr = sorted(nrow, reverse=True)[k - 1]            # k-th largest noisy logit
        for e in range(E):
            load[e] += 0.5 * (1 + math.erf((p[e] - thr) / (std * math.sqrt(2))))
    want = (_cv2(imp) + _cv2(load)) / 2
    noisy_t = torch.tensor(noisy)
    topk = torch.topk(noisy_t, k, 1).values
    got = losses.importance_load_loss(torch.tensor(LOGITS), topk, gate_noise, E)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(losses.importance_load_loss(torch.tensor(LOGITS), topk, 0.0, E)) == 0.0


def test_z_loss_by_hand():
    want = sum(math.log(sum(math.exp(v) for v in r)) ** 2 for r in LOGITS) / len(LOGITS)
    assert float(losses.router_z_loss(torch.tensor(LOGITS))) == pytest.approx(want, rel=1e-6)


def test_layer_aux_losses_use_router_logits_and_noise():
    torch.manual_seed(0)
    layer = MoELayer(8, 16, num_experts=4, router="topk", k=2, gate_noise=1.0).train()
    x = torch.randn(30, 8)
    torch.manual_seed(5)
    layer(x)
    logits = layer.router.compute_logits(x)
    torch.manual_seed(5)
    noisy = logits + torch.randn_like(logits) / 4
    scores = torch.softmax(noisy, 1)
    top = torch.topk(scores, 2, 1).indices
    aux = layer.aux_losses
    torch.testing.assert_close(aux["gshard"], losses.gshard_loss(scores, top[:, 0]))
    torch.testing.assert_close(aux["importance_load"], losses.importance_load_loss(
        logits, noisy.gather(1, top), 1.0, 4))
    torch.testing.assert_close(aux["z_loss"], losses.router_z_loss(logits))
    assert aux["importance_load"].requires_grad
