"""Tutel-compatible front: gate/expert dicts, l_aux, overrides, seeds, backend selection."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moebench.moe import MoELayer, aux_loss_sum, moe_layer, tutel_available
from moebench.moe.reference import naive_moe_forward

GMOE_GATE = {"type": "cosine_top", "k": 1, "fp32_gate": True, "gate_noise": 1.0,
             "capacity_factor": 1.5}


def _gmoe(**kw):
    return moe_layer(gate_type=GMOE_GATE, model_dim=16,
                     experts={"type": "ffn", "count_per_node": 6, "hidden_size_per_expert": 32,
                              "activation_fn": lambda x: F.dropout(F.gelu(x), 0.1)},
                     batch_prioritized_routing=True, is_gshard_loss=False, **kw)


def test_gmoe_configuration_maps_onto_core():
    layer = _gmoe()
    assert isinstance(layer, MoELayer)
    assert layer.router_name == "cosine_topk" and layer.num_experts == 6 and layer.k == 1
    assert layer.capacity_factor == 1.5 and layer.gate_noise == 1.0 and layer.batch_prioritized
    assert layer.num_global_experts == 6
    layer.train()
    y = layer(torch.randn(2, 9, 16))
    assert y.shape == (2, 9, 16)
    torch.testing.assert_close(y.l_aux, layer.aux_losses["importance_load"])
    assert layer.l_aux is y.l_aux
    assert float(aux_loss_sum(layer, {"importance_load": 1.0}).detach()) == pytest.approx(
        float(y.l_aux.detach()))


def test_gshard_loss_default_and_result_func():
    layer = moe_layer(gate_type={"type": "top", "k": 2}, model_dim=8,
                      experts={"type": "ffn", "num_experts_per_device": 4,
                               "hidden_size_per_expert": 16},
                      result_func=lambda y: (y, y.l_aux))
    y, l_aux = layer(torch.randn(10, 8))
    torch.testing.assert_close(l_aux, layer.aux_losses["gshard"])
    assert layer.gate_noise == 0.0 and not layer.batch_prioritized


def test_relu_default_activation_and_output_dim():
    layer = moe_layer(gate_type={"type": "top", "k": 1, "capacity_factor": 0.0}, model_dim=8,
                      experts={"type": "ffn", "count_per_node": 1, "hidden_size_per_expert": 16,
                               "output_dim": 5, "has_fc2_bias": False})
    x = torch.randn(7, 8)
    e = layer.experts
    want = F.relu(x @ e.fc1_weight[0].T + e.fc1_bias[0]) @ e.fc2_weight[0].T
    torch.testing.assert_close(layer(x), want)
    assert e.fc2_bias is None


def test_forward_overrides_capacity_and_top_k():
    torch.manual_seed(0)
    layer = moe_layer(gate_type={"type": "top", "k": 1, "capacity_factor": 0.25}, model_dim=8,
                      experts={"type": "ffn", "count_per_node": 4, "hidden_size_per_expert": 16})
    x = torch.randn(64, 8)
    layer.train()
    layer(x)
    assert layer.routing_stats()["dropped"] > 0
    layer(x, capacity_factor=-100.0)            # negative: min(needed, bound) -> no drop here
    assert layer.routing_stats()["dropped"] == 0
    layer(x, top_k=2, capacity_factor=-100.0)
    assert layer.routing_stats()["mean_k"] == 2.0 and layer.router.k == 1


def test_prescore_matches_naive_loop():
    torch.manual_seed(0)
    layer = moe_layer(gate_type={"type": "top", "k": 2, "capacity_factor": 1.0}, model_dim=8,
                      experts={"type": "ffn", "count_per_node": 3, "hidden_size_per_expert": 16},
                      is_postscore=False)
    x = torch.randn(30, 8)
    torch.testing.assert_close(layer(x), naive_moe_forward(layer, x))


def test_seeds_make_construction_reproducible_and_scan_expert_func():
    seen = []
    a = _gmoe(seeds=(1, 2, 3), scan_expert_func=lambda n, p: seen.append(n))
    b = _gmoe(seeds=(1, 2, 3))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert "fc1_weight" in seen and all(p._tutel_expert for p in a.experts.parameters())


def test_mintau_gate_type():
    layer = moe_layer(gate_type={"type": "mintau", "tau": 0.5}, model_dim=8,
                      experts={"type": "ffn", "count_per_node": 4, "hidden_size_per_expert": 16})
    y = layer(torch.randn(12, 8))
    assert layer.router_name == "mintau" and float(y.l_aux) == 0.0


@pytest.mark.parametrize("bad,match", [
    ({"gate_type": {"type": "nope"}}, "nope"),
    ({"gate_type": {"type": "top", "wat": 1}}, "wat"),
    ({"experts": {"type": "custom"}}, "ffn"),
    ({"backend": "other"}, "other"),
])
def test_bad_arguments_raise_one_line_errors(bad, match):
    kw = {"gate_type": {"type": "top"}, "model_dim": 8,
          "experts": {"type": "ffn", "count_per_node": 2, "hidden_size_per_expert": 4}}
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        moe_layer(**kw)


def test_legacy_string_gate():
    layer = moe_layer(gate_type="Top2Gate", model_dim=8,
                      experts={"type": "ffn", "count_per_node": 3, "hidden_size_per_expert": 4})
    assert layer.k == 2


@pytest.mark.skipif(tutel_available(), reason="tutel is installed")
def test_tutel_backend_without_tutel_raises_import_error():
    with pytest.raises(ImportError, match="tutel"):
        _gmoe(backend="tutel")


@pytest.mark.skipif(not tutel_available(), reason="needs the tutel package")
def test_tutel_backend_builds_real_tutel_layer():
    layer = _gmoe(backend="tutel")
    assert not isinstance(layer, MoELayer)
    y = layer(torch.randn(2, 9, 16))
    assert y.shape == (2, 9, 16) and hasattr(y, "l_aux")
