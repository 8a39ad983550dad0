"""Backbones: timm ViT builders, pretrained-file loading, block choice and MoE surgery."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_hparams import tiny_hparams
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer

from moebench.dg.backbones import (
    BACKBONES,
    PretrainedLoadError,
    apply_moe,
    build_backbone,
    moe_block_indices,
)
from moebench.moe import MoELayer

SHAPE = (1, 16, 16)


def _vit(seed: int = 0, shape: tuple[int, int, int] = SHAPE, **overrides: Any) -> VisionTransformer:
    torch.manual_seed(seed)
    return build_backbone(tiny_hparams("erm", **overrides), shape, 10).eval()


def test_vit_digits_dims() -> None:
    model = _vit(shape=(2, 16, 16))
    assert isinstance(model, VisionTransformer) and len(model.blocks) == 4
    assert model.patch_embed.proj.weight.shape == (32, 2, 4, 4)
    assert model.pos_embed.shape == (1, 16 + 1, 32) and model.cls_token is not None
    assert model.blocks[0].mlp.fc1.out_features == 64 and model.global_pool == "token"
    assert model(torch.rand(3, 2, 16, 16)).shape == (3, 10)


def test_registry_entries() -> None:
    assert BACKBONES.names() == ["deit_small_patch16_224", "vit_digits"]
    with pytest.raises(ValueError, match="patch_size=4 conflicts"):
        build_backbone(tiny_hparams("erm", backbone="deit_small_patch16_224"), (3, 32, 32), 2)
    with pytest.raises(ValueError, match="no hub weights"):
        _vit(pretrained="timm")
    with pytest.raises(ValueError, match="null, 'timm' or a file path"):
        _vit(pretrained=3)
    with pytest.raises(ValueError, match=r"patch_size=5 does not divide the image size \(16, 16\)"):
        _vit(patch_size=5)
    with pytest.raises(ValueError, match="embed_dim=32 is not divisible by num_heads=3"):
        _vit(num_heads=3)


@pytest.mark.parametrize("depth, rule, expected", [
    (12, "last_two_even", [8, 10]), (4, "last_two_even", [0, 2]), (5, "last_two_even", [2, 4]),
    (1, "last_two_even", [0]), (12, "every_two", [0, 2, 4, 6, 8, 10]),
    (7, "every_two", [0, 2, 4, 6]),
    (12, [11, 3], [3, 11]), (4, [], []), (4, "none", []),
])
def test_moe_block_indices(depth: int, rule: Any, expected: list[int]) -> None:
    assert moe_block_indices(depth, rule) == expected


@pytest.mark.parametrize("rule, match", [
    ([12], "invalid block indices"), ([-1], "invalid block indices"),
    ([2, 2], "duplicate"), ("last_two", "unknown moe_blocks rule"), ([1.0], "invalid"),
])
def test_moe_block_indices_errors(rule: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        moe_block_indices(12, rule)


def test_apply_moe_upcycles_chosen_blocks() -> None:
    model = _vit()
    dense = [blk.mlp for blk in model.blocks]
    names = apply_moe(model, [1, 3], upcycle=True, num_experts=3)
    assert names == ["blocks.1.mlp", "blocks.3.mlp"]
    for i, blk in enumerate(model.blocks):
        if i in (1, 3):
            ex = blk.mlp.experts
            assert isinstance(blk.mlp, MoELayer) and blk.mlp.num_experts == 3
            for e in range(3):
                assert torch.equal(ex.fc1_weight[e], dense[i].fc1.weight)
                assert torch.equal(ex.fc2_weight[e], dense[i].fc2.weight)
                assert torch.equal(ex.fc1_bias[e], dense[i].fc1.bias)
                assert torch.equal(ex.fc2_bias[e], dense[i].fc2.bias)
            proj = blk.mlp.router.cosine_projector
            assert proj.weight.std() < 0.03 and torch.all(proj.bias == 0)  # GMoE ViT init
        else:
            assert type(blk.mlp) is Mlp and blk.mlp is dense[i]


def test_apply_moe_random_experts_differ() -> None:
    model = _vit()
    dense = model.blocks[2].mlp
    apply_moe(model, [2], upcycle=False, num_experts=2)
    assert not torch.equal(model.blocks[2].mlp.experts.fc1_weight[0], dense.fc1.weight)


def _capture_router(layer: MoELayer) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    layer.router.register_forward_hook(lambda mod, inp, out: seen.__setitem__("res", out))
    return seen


def test_upcycled_layer_is_gate_times_dense_mlp() -> None:
    """GMoE config (k=1, BPR, capacity 1.5): out = top-1 prob * MLP(x), 0 for dropped tokens."""
    model = _vit()
    dense = model.blocks[0].mlp
    apply_moe(model, [0], upcycle=True, num_experts=4, k=1, capacity_factor=1.5)
    layer = model.blocks[0].mlp.eval()
    seen = _capture_router(layer)
    x = torch.randn(200, 32)
    with torch.no_grad():
        out, ref = layer(x), dense(x)
    res = seen["res"]
    kept = out.abs().sum(1) > 0
    gate = res.weights[:, 0:1]
    assert torch.allclose(out[kept], gate[kept] * ref[kept], atol=1e-5)
    cap = int(1.5 * -(-200 // 4))
    routed = torch.bincount(res.indices[:, 0], minlength=4)
    assert int(kept.sum()) == int(routed.clamp(max=cap).sum())


def test_upcycled_dropless_normalised_layer_equals_dense() -> None:
    model = _vit()
    dense = model.blocks[2].mlp
    apply_moe(model, [2], num_experts=4, k=1, capacity_factor=0.0,
              router_kwargs={"normalize_gate": True})
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        assert torch.allclose(model.blocks[2].mlp.eval()(x), dense(x), atol=1e-6)


def test_pretrained_file_round_trip_drops_head(tmp_path: Path) -> None:
    source = _vit(seed=1)
    path = tmp_path / "dense.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)  # DeiT-style file
    loaded = _vit(seed=2, pretrained=str(path))
    fresh = _vit(seed=2)
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        feats = [m.forward_head(m.forward_features(x), pre_logits=True) for m in (source, loaded)]
    assert torch.allclose(feats[0], feats[1], atol=1e-6)
    assert torch.equal(loaded.head.weight, fresh.head.weight)  # head not taken from the file
    assert not torch.equal(loaded.head.weight, source.head.weight)


def test_pretrained_file_resampled_and_adapted(tmp_path: Path) -> None:
    """A 3-channel 16px checkpoint with a 1000-class head loads into a 1-channel 24px model."""
    source = _vit(seed=1, shape=(3, 16, 16))
    path = tmp_path / "in1k_style.pth"
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    state.update({"head.weight": torch.zeros(1000, 32), "head.bias": torch.zeros(1000)})
    torch.save(state, path)
    model = _vit(shape=(1, 24, 24), pretrained=str(path))
    assert model.pos_embed.shape == (1, 36 + 1, 32)
    assert torch.equal(model.blocks[3].mlp.fc2.weight, source.blocks[3].mlp.fc2.weight)
    assert torch.allclose(model.patch_embed.proj.weight[:, 0],
                          source.patch_embed.proj.weight.sum(1), atol=1e-6)


@pytest.mark.parametrize("kind", ["missing", "garbage", "not_state_dict", "wrong_dims"])
def test_bad_pretrained_file_names_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pth"
    if kind == "garbage":
        path.write_bytes(b"\x00 definitely not a checkpoint")
    elif kind == "not_state_dict":
        torch.save({"model": [1, 2, 3]}, path)
    elif kind == "wrong_dims":
        torch.save(_vit(embed_dim=16).state_dict(), path)
    with pytest.raises(PretrainedLoadError) as err:
        _vit(pretrained=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_timm_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import moebench.dg.backbones.vit as vit

    def offline(*args: Any, **kwargs: Any) -> None:
        raise OSError("cannot reach\nhuggingface.co")

    monkeypatch.setattr(vit.timm, "create_model", offline)
    hp = {"backbone": "deit_small_patch16_224", "drop_path_rate": 0.1, "pretrained": "timm"}
    with pytest.raises(PretrainedLoadError, match="cannot fetch timm hub weights") as err:
        build_backbone(hp, (3, 224, 224), 7)
    assert "\n" not in str(err.value)


def test_deit_small_builds_and_loads_local_checkpoint(tmp_path: Path) -> None:
    hp = {"backbone": "deit_small_patch16_224", "drop_path_rate": 0.1, "pretrained": None,
          "patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0}
    torch.manual_seed(0)
    source = build_backbone(hp, (3, 32, 32), 7).eval()
    assert len(source.blocks) == 12 and source.embed_dim == 384 and source.head.out_features == 7
    path = tmp_path / "deit_small_patch16_224-tiny.pth"
    torch.save({"model": source.state_dict()}, path)
    loaded = build_backbone({**hp, "pretrained": str(path)}, (3, 32, 32), 7).eval()
    for name in ("blocks.11.mlp.fc1.weight", "pos_embed", "norm.weight"):
        assert torch.equal(loaded.state_dict()[name], source.state_dict()[name])
