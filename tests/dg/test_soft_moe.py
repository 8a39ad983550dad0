"""Soft-MoE: the layer wrapper (paper math, sums, any layer), ``moe_layer_index`` semantics,
the timm-registered presets (parameter counts of the paper's table, on the meta device),
and the ``soft_moe`` algorithm."""
from __future__ import annotations

import math
from typing import Any

import pytest
import timm
import torch
from helpers_hparams import tiny_hparams
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from moebench.dg.algorithms import algorithm_class, HparamsError
from moebench.dg.algorithms.soft_moe_vit import (
    PRESETS,
    SoftMoEVisionTransformer,
    apply_soft_moe,
    soft_moe_block_indices,
)
from moebench.moe import MoELayer
from moebench.moe.soft_moe import SoftMoELayerWrapper

JFT_CLASSES = 29_593  # the head that makes ViT-S/16 33M and ViT-H/14 669M in the paper's table


def reference(layer: SoftMoELayerWrapper, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations with einsum (normalised logits only, unnormalised slots)."""
    phi = layer.phi                                                    # [d, n, p]
    xn, phin = x, phi
    if layer.normalize:
        xn = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        phin = layer.scale * phi / (phi.norm(dim=0, keepdim=True) + 1e-6)
    logits = torch.einsum("bmd,dnp->bmnp", xn, phin)
    dispatch = logits.softmax(dim=1)
    b, m, n, p = logits.shape
    combine = logits.reshape(b, m, n * p).softmax(dim=-1).reshape(b, m, n, p)
    slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
    ys = torch.stack([layer.experts[i](slots[:, i]) for i in range(n)], dim=1)
    return torch.einsum("bnpd,bmnp->bmd", ys, combine)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("n_exp, slots", [(1, 1), (4, 1), (3, 2)])
def test_wrapper_with_linear_matches_paper_and_sums(normalize: bool, n_exp: int,
                                                   slots: int) -> None:
    torch.manual_seed(0)
    layer = SoftMoELayerWrapper(16, n_exp, slots, nn.Linear, normalize=normalize,
                                in_features=16, out_features=8)
    x = torch.randn(3, 7, 16)
    y = layer(x)
    assert y.shape == (3, 7, 8)
    assert torch.allclose(y, reference(layer, x), atol=1e-5)
    res = layer.routing(x)
    assert res.dispatch.shape == res.combine.shape == (3, 7, n_exp * slots)
    assert torch.allclose(res.dispatch.sum(dim=1), torch.ones(3, n_exp * slots))  # over tokens
    assert torch.allclose(res.combine.sum(dim=2), torch.ones(3, 7))             # over slots
    assert layer.phi.shape == (16, n_exp, slots) and len(layer.experts) == n_exp
    assert (layer.scale is not None) == normalize
    if normalize:
        assert float(layer.scale.detach()) == 1.0


def test_wrapper_init_gradients_and_sequence_properties() -> None:
    torch.manual_seed(0)
    layer = SoftMoELayerWrapper(64, 32, 4, nn.Linear, in_features=64, out_features=64)
    assert float(layer.phi.detach().std()) == pytest.approx(64 ** -0.5, rel=0.05)
    x = torch.randn(4, 9, 64)
    y = layer(x)
    perm = torch.randperm(9)
    assert torch.allclose(layer(x[:, perm]), y[:, perm], atol=1e-5)   # permutation-equivariant
    assert torch.allclose(layer(x[1:2]), y[1:2], atol=1e-5)           # sequences independent
    y.square().sum().backward()
    assert layer.router.phi.grad.abs().sum() > 0 and layer.scale.grad.abs() > 0
    assert all(e.weight.grad.abs().sum() > 0 for e in layer.experts)


def test_wrapper_with_transformer_encoder_layer_batch_first() -> None:
    torch.manual_seed(0)
    layer = SoftMoELayerWrapper(16, 3, 4, nn.TransformerEncoderLayer, d_model=16, nhead=2,
                                dim_feedforward=32, dropout=0.0, batch_first=True)
    seen: list[tuple[int, ...]] = []
    for expert in layer.experts:
        expert.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    layer.eval()
    x = torch.randn(2, 10, 16)
    y = layer(x)
    assert y.shape == (2, 10, 16) and torch.isfinite(y).all()
    assert seen == [(2, 4, 16)] * 3               # each expert sees its p slots as a sequence
    assert torch.allclose(y, reference(layer, x), atol=1e-5)


def test_wrapper_errors() -> None:
    layer = SoftMoELayerWrapper(8, 2, 1, nn.Linear, in_features=8, out_features=8)
    with pytest.raises(ValueError, match=r"expects x \[batch, length, 8\]"):
        layer(torch.randn(4, 8))
    with pytest.raises(ValueError, match="slots_per_expert must be >= 1"):
        SoftMoELayerWrapper(8, 2, 0, nn.Linear, in_features=8, out_features=8)


@pytest.mark.parametrize("index, expected", [
    (6, [6, 7, 8, 9, 10, 11]), (0, list(range(12))), (11, [11]),
    ([8, 9, 10, 11], [8, 9, 10, 11]), ([11, 5], [5, 11]), ((2,), [2])])
def test_moe_layer_index_semantics(index: Any, expected: list[int]) -> None:
    assert soft_moe_block_indices(12, index) == expected


@pytest.mark.parametrize("index, match", [
    (12, r"out of range \[0, 12\)"), (-1, "out of range"), ([], "is empty"),
    ([3, 12], r"invalid block indices \[12\]"), ([1, 1], "duplicate"),
    ([2.0], "invalid block indices"), ("6", "must be an int or a list"),
    (True, "must be an int or a list"), (None, "must be an int or a list")])
def test_moe_layer_index_validation(index: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        soft_moe_block_indices(12, index)


def small_vit(**kwargs: Any) -> SoftMoEVisionTransformer:
    torch.manual_seed(0)
    args = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 4, "num_heads": 2,
            "mlp_ratio": 2.0, "num_classes": 5, "num_experts": 3, "slots_per_expert": 2}
    return SoftMoEVisionTransformer(**{**args, **kwargs})


@pytest.mark.parametrize("index, blocks", [(2, [2, 3]), ([0, 3], [0, 3])])
def test_vit_places_soft_moe_in_chosen_blocks(index: Any, blocks: list[int]) -> None:
    model = small_vit(moe_layer_index=index)
    assert model.moe_layer_indices == blocks
    kinds = [type(b.mlp) for b in model.blocks]
    assert [i for i, k in enumerate(kinds) if k is MoELayer] == blocks
    assert all(k is Mlp for i, k in enumerate(kinds) if i not in blocks)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(ValueError, match="moe_layer_index 4 is out of range"):
        small_vit(moe_layer_index=4)


def test_batched_and_wrapper_experts_compute_the_same_function() -> None:
    fast, slow = small_vit(moe_layer_index=2), small_vit(moe_layer_index=2, expert_impl="wrapper")
    assert type(slow.blocks[2].mlp) is SoftMoELayerWrapper
    dense = {k: v for k, v in fast.state_dict().items() if ".mlp." not in k or "blocks.0" in k
             or "blocks.1" in k}
    slow.load_state_dict(dense, strict=False)
    for i in (2, 3):
        moe, wrap = fast.blocks[i].mlp, slow.blocks[i].mlp
        wrap.router.load_state_dict(moe.router.state_dict())
        for e, expert in enumerate(wrap.experts):
            with torch.no_grad():
                expert.fc1.weight.copy_(moe.experts.fc1_weight[e])
                expert.fc1.bias.copy_(moe.experts.fc1_bias[e])
                expert.fc2.weight.copy_(moe.experts.fc2_weight[e])
                expert.fc2.bias.copy_(moe.experts.fc2_bias[e])
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(fast.eval()(x), slow.eval()(x), atol=1e-5)
    # fresh experts follow timm's ViT init (trunc normal .02, zero bias), not nn.Linear's
    fc1 = fast.blocks[2].mlp.experts.fc1_weight.detach()
    assert float(fc1.std()) == pytest.approx(0.02, rel=0.2)
    assert float(slow.blocks[2].mlp.experts[0].fc1.bias.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("impl", ["batched", "wrapper"])
def test_upcycled_experts_copy_the_dense_mlp(impl: str) -> None:
    torch.manual_seed(0)
    dense = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                              num_classes=3)
    mlp = {k: v.clone() for k, v in dense.blocks[1].mlp.state_dict().items()}
    names = apply_soft_moe(dense, 1, 4, upcycle=True, expert_impl=impl)
    assert names == ["blocks.1.mlp"]
    layer = dense.blocks[1].mlp
    for e in range(4):
        if impl == "wrapper":
            got = layer.experts[e].state_dict()
        else:
            got = {f"{fc}.{p}": getattr(layer.experts, f"{fc}_{p}")[e]
                   for fc in ("fc1", "fc2") for p in ("weight", "bias")}
        assert all(torch.equal(got[k], mlp[k]) for k in mlp)


def _count(name: str, **kwargs: Any) -> int:
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def test_small_preset_body_matches_spec() -> None:
    assert _count("soft_moe_vit_small", num_classes=0) == 922_315_398


@pytest.mark.parametrize("name, kwargs, paper", [
    ("soft_moe_vit_small", {}, 933e6), ("soft_moe_vit_base", {}, 3.7e9),
    ("soft_moe_vit_large", {}, 13.1e9), ("vit_small_patch16_224", {}, 33e6),
    ("vit_huge_patch14_224", {}, 669e6)])
def test_preset_parameter_counts_match_paper_table(name: str, kwargs: dict,
                                                   paper: float) -> None:
    assert _count(name, num_classes=JFT_CLASSES, **kwargs) == pytest.approx(paper, rel=0.01)


def test_huge_has_over_40x_the_parameters_of_vit_huge() -> None:
    soft = _count("soft_moe_vit_huge", patch_size=14, num_classes=JFT_CLASSES)
    assert soft / _count("vit_huge_patch14_224", num_classes=JFT_CLASSES) > 40


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_timm_vit_plus_experts(name: str) -> None:
    cfg = PRESETS[name]
    d, depth, n_moe = cfg["embed_dim"], cfg["depth"], cfg["depth"] - cfg["moe_layer_index"]
    mlp = 2 * d * 4 * d + 4 * d + d                            # fc1 + fc2 of one dense MLP
    dense = _count("vit_base_patch16_224", embed_dim=d, depth=depth,
                   num_heads=cfg["num_heads"], num_classes=10)
    assert _count(name, num_classes=10) == dense + n_moe * (127 * mlp + d * 128 + 1)
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=10)
    assert model.moe_layer_indices == list(range(cfg["moe_layer_index"], depth))
    assert model.blocks[-1].mlp.num_experts == 128 and name in timm.list_models("soft_moe*")


def test_create_model_passes_kwargs_and_refuses_pretrained() -> None:
    torch.manual_seed(0)
    model = timm.create_model("soft_moe_vit_tiny", img_size=32, patch_size=16, num_classes=7,
                              num_experts=4, slots_per_expert=2, moe_layer_index=[10, 11])
    assert model.moe_layer_indices == [10, 11]
    assert model.blocks[11].mlp.router.num_slots == 8
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="no pretrained weights for 'soft_moe_vit_small'"):
        timm.create_model("soft_moe_vit_small", pretrained=True)


def make(**overrides: Any):
    torch.manual_seed(0)
    return algorithm_class("soft_moe")((1, 16, 16), 10, 3, tiny_hparams("soft_moe", **overrides),
                                      n_steps=10)


def test_soft_moe_algorithm_structure_and_routing_stats() -> None:
    alg = make()
    layers = {n: m for n, m in alg.network.named_modules() if isinstance(m, MoELayer)}
    assert sorted(layers) == ["blocks.2.mlp", "blocks.3.mlp"]
    assert all(m.router_name == "soft" and m.router.num_slots == 8 for m in layers.values())
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(4, 1, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(3)]
    out = alg.update(data)
    assert set(out) == {"loss"} and math.isfinite(out["loss"])
    stats = alg.routing_stats()
    assert sorted(stats) == sorted(layers)
    for s in stats.values():
        assert s["dropped"] == 0.0 and s["tokens"] == 12 * 17 and len(s["load"]) == 4
        assert math.isclose(sum(s["load"]), 1.0)


@pytest.mark.parametrize("overrides, match", [
    ({"moe_layer_index": 4}, "moe_layer_index: 4 must be below depth = 4"),
    ({"moe_layer_index": []}, r"moe_layer_index: \[\] needs at least 1 element"),
    ({"slots_per_expert": 0}, "slots_per_expert: 0 is below the minimum 1"),
    ({"soft_normalize": "yes"}, "soft_normalize: 'yes' must be true or false"),
    ({"moe_init": "copy"}, "moe_init: 'copy' is not one of 'random', 'upcycle'")])
def test_bad_soft_moe_hparams_one_line(overrides: dict, match: str) -> None:
    with pytest.raises(HparamsError, match=match) as err:
        make(**overrides)
    assert "\n" not in str(err.value)


def test_identical_linear_experts_reduce_to_a_token_mixing_of_the_dense_map() -> None:
    """Upcycled identical *linear* experts: y = lin(C Dᵀ x) (combine rows sum to 1, so the
    expert bias passes through unchanged) — Soft-MoE mixes tokens, it is not the dense map."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 8)
    layer = SoftMoELayerWrapper(8, 3, 2, nn.Linear, in_features=8, out_features=8)
    for expert in layer.experts:
        expert.load_state_dict(lin.state_dict())
    x = torch.randn(2, 5, 8)
    y = layer(x)
    res = layer.routing(x)
    mixed = torch.bmm(res.combine, torch.bmm(res.dispatch.transpose(1, 2), x))
    assert torch.allclose(y, lin(mixed), atol=1e-5)
    assert not torch.allclose(y, lin(x), atol=1e-3)   # tokens are mixed, not passed through
