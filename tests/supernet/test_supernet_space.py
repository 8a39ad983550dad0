"""HAT's design space: params, sampling, genes, features, validation, enumeration."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from moebench.errors import ParamsError
from moebench.supernet.space import ARCH_KEYS, SPACE0_FEATURE_NORM, Space

ROOT = Path(__file__).resolve().parents[2]

SPACE0 = {  # HAT's configs/wmt14.en-de/supertransformer/space0.yml
    "encoder_embed_dim": [640, 512], "encoder_layer_num": [6],
    "encoder_ffn_embed_dim": [3072, 2048, 1024], "encoder_self_attention_heads": [8, 4],
    "decoder_embed_dim": [640, 512], "decoder_layer_num": [6, 5, 4, 3, 2, 1],
    "decoder_ffn_embed_dim": [3072, 2048, 1024], "decoder_self_attention_heads": [8, 4],
    "decoder_ende_attention_heads": [8, 4], "decoder_arbitrary_ende_attn": [-1, 1, 2],
    "qkv_dim": 512, "feature_norm": list(SPACE0_FEATURE_NORM),
}
TINY = {
    "encoder_embed_dim": [8], "encoder_layer_num": [1],
    "encoder_ffn_embed_dim": [16, 8], "encoder_self_attention_heads": [2],
    "decoder_embed_dim": [8, 4], "decoder_layer_num": [2, 1],
    "decoder_ffn_embed_dim": [16, 8], "decoder_self_attention_heads": [2],
    "decoder_ende_attention_heads": [2, 1], "decoder_arbitrary_ende_attn": [-1],
    "qkv_dim": 4,
}


@pytest.fixture
def space0():
    return Space.from_params(SPACE0)


def test_default_params_space_is_valid():
    d = yaml.safe_load((ROOT / "params/supernet/search.yaml").read_text())
    space = Space.from_params(d["supernet"]["space"])
    assert space.validate(space.largest()) and space.validate(space.smallest())


def test_space0_largest_smallest_and_super_dims(space0):
    big, small = space0.largest(), space0.smallest()
    assert big["decoder_arbitrary_ende_attn"] == [1] * 6  # HAT's largest: arbitrary attention 1
    assert big["encoder_ffn_embed_dim"] == [3072] * 6 and big["decoder_layer_num"] == 6
    assert small["decoder_layer_num"] == 1 and small["decoder_ffn_embed_dim"] == [1024] * 6
    assert small["encoder_embed_dim"] == 512 and small["decoder_ende_attention_heads"] == [4] * 6
    assert space0.super_dims() == {
        "encoder_embed_dim": 640, "encoder_layer_num": 6, "encoder_ffn_embed_dim": 3072,
        "encoder_self_attention_heads": 8, "decoder_embed_dim": 640, "decoder_layer_num": 6,
        "decoder_ffn_embed_dim": 3072, "decoder_self_attention_heads": 8,
        "decoder_ende_attention_heads": 8, "qkv_dim": 512}


def test_features_as_hat(space0):
    arch = space0.largest()
    arch.update(decoder_layer_num=2, decoder_arbitrary_ende_attn=[-1, 2, 1, 1, 1, 1],
                decoder_ffn_embed_dim=[1024, 2048, 3072, 3072, 3072, 3072],
                encoder_self_attention_heads=[8, 4, 8, 4, 8, 4])
    raw = space0.raw_features(arch)
    # means over the active layers only; arbitrary attention -1 / 2 -> 1 / 3
    assert raw.tolist() == [640, 6, 3072, 6, 640, 2, 1536, 8, 8, 2]
    np.testing.assert_allclose(space0.features(arch), raw / np.array(SPACE0_FEATURE_NORM))
    other = dict(arch, decoder_ffn_embed_dim=[1024, 2048, 1024, 1024, 1024, 1024])
    np.testing.assert_array_equal(space0.features(other), space0.features(arch))
    assert space0.features_matrix([arch, other]).shape == (2, 10)


def test_gene_layout_roundtrip(space0):
    keys = space0.gene_keys()
    assert len(keys) == 40  # 2 + 6 + 6 + 2 + 4 x 6, HAT's layout
    assert keys[:3] == [("encoder_embed_dim", None), ("encoder_layer_num", None),
                        ("encoder_ffn_embed_dim", 0)]
    assert keys[14:16] == [("decoder_embed_dim", None), ("decoder_layer_num", None)]
    assert keys[-1] == ("decoder_arbitrary_ende_attn", 5)
    arch = space0.sample(np.random.default_rng(3))
    assert space0.from_genes(space0.genes(arch)) == arch
    with pytest.raises(ValueError, match="40 values"):
        space0.from_genes([1, 2])


def test_sample_seeded_valid_and_covers_choices(space0):
    archs = [space0.sample(np.random.default_rng(7)) for _ in range(2)]
    assert archs[0] == archs[1]
    rng = np.random.default_rng(0)
    many = [space0.sample(rng) for _ in range(300)]
    for a in many:
        space0.validate(a)
        assert list(a) == list(ARCH_KEYS)
        assert all(type(v) is int for v in space0.genes(a))
    assert {a["decoder_layer_num"] for a in many} == {1, 2, 3, 4, 5, 6}
    assert {a["decoder_arbitrary_ende_attn"][0] for a in many} == {-1, 1, 2}


def test_mutate_and_crossover(space0):
    rng = np.random.default_rng(1)
    a, b = space0.sample(rng), space0.sample(rng)
    assert space0.mutate(a, rng, 0.0) == a
    changed = [np.mean(np.array(space0.genes(space0.mutate(a, rng, 1.0))) != space0.genes(a))
               for _ in range(50)]
    assert 0.3 < np.mean(changed) < 0.8  # every gene resampled: changes unless redrawn same
    ga, gb = space0.genes(a), space0.genes(b)
    for _ in range(20):
        child = space0.genes(space0.crossover(a, b, rng))
        assert all(c in (x, y) for c, x, y in zip(child, ga, gb))
    mixed = [space0.genes(space0.crossover(a, b, rng)) for _ in range(50)]
    diff = [i for i, (x, y) in enumerate(zip(ga, gb)) if x != y]
    share = np.mean([[g[i] == ga[i] for i in diff] for g in mixed])
    assert 0.35 < share < 0.65


def test_arch_key_ignores_inactive_layers(space0):
    a = space0.largest()
    a["decoder_layer_num"] = 2
    b = dict(a, decoder_ffn_embed_dim=[3072, 3072, 1024, 1024, 2048, 1024])
    assert space0.arch_key(a) == space0.arch_key(b)
    assert space0.canonical(b) == space0.canonical(a)
    c = dict(a, decoder_ffn_embed_dim=[1024, 3072, 3072, 3072, 3072, 3072])
    assert space0.arch_key(c) != space0.arch_key(a)


@pytest.mark.parametrize("change, message", [
    ({"decoder_ffn_embed_dim": [3072, 999, 3072, 3072, 3072, 3072]},
     "architecture: decoder_ffn_embed_dim[1] = 999 is not in the space (3072, 2048, 1024)"),
    ({"encoder_embed_dim": 600}, "encoder_embed_dim = 600 is not in the space"),
    ({"decoder_layer_num": 7}, "decoder_layer_num = 7 is not in the space"),
    ({"encoder_self_attention_heads": [8, 8]}, "encoder_self_attention_heads must be a list of 6"),
    ({"sample-encoder_embed_dim": 640}, "unknown key 'sample-encoder_embed_dim'"),
    ({"decoder_embed_dim": True}, "decoder_embed_dim = True is not in the space"),
])
def test_validate_refuses_with_one_line(space0, change, message):
    arch = {**space0.largest(), **change}
    with pytest.raises(ParamsError) as err:
        space0.validate(arch)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validate_ignores_inactive_entries_and_checks_arbitrary_depth(space0):
    arch = space0.largest()
    arch.update(decoder_layer_num=1, decoder_ffn_embed_dim=[1024, 5, 5, 5, 5, 5])
    assert space0.validate(arch) == arch
    tiny = Space.from_params({**TINY, "encoder_layer_num": [2, 1],
                              "decoder_arbitrary_ende_attn": [-1]})
    with pytest.raises(ParamsError, match="missing"):
        tiny.validate({k: v for k, v in tiny.largest().items() if k != "encoder_layer_num"})


@pytest.mark.parametrize("change, message", [
    ({"decoder_layer_num": []}, "supernet.space.decoder_layer_num: [] must be a non-empty list"),
    ({"encoder_ffn_embed_dim": [512, 0]}, "encoder_ffn_embed_dim: [512, 0] must be a non-empty"),
    ({"encoder_embed_dim": [640, 640]}, "lists a choice twice"),
    ({"qkv_dim": 500}, "supernet.space.encoder_self_attention_heads: 8 heads do not divide qkv_dim = 500"),
    ({"decoder_arbitrary_ende_attn": [3]}, "3 is not one of -1, 1, 2"),
    ({"encoder_layer_num": [2], "decoder_arbitrary_ende_attn": [-1, 2]},
     "2 attends to 3 encoder layers but encoder_layer_num allows 2"),
    ({"feature_norm": [1, 2]}, "feature_norm: [1, 2] must be a list of 10 positive numbers"),
    ({"embed": [1]}, "supernet.space.embed: unknown key"),
])
def test_from_params_refuses_with_one_line(change, message):
    with pytest.raises(ParamsError) as err:
        Space.from_params({**SPACE0, **change})
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ParamsError, match="decoder_embed_dim: is missing"):
        Space.from_params({k: v for k, v in SPACE0.items() if k != "decoder_embed_dim"})


def test_params_roundtrip_and_default_norm():
    space = Space.from_params(TINY)
    assert Space.from_params(space.to_params()) == space
    assert space.feature_norm == (8, 1, 16, 2, 8, 2, 16, 2, 2, 1)
    np.testing.assert_allclose(space.features(space.largest()), np.ones(10))


def test_enumerate_tiny_space():
    space = Space.from_params(TINY)
    archs = space.enumerate()
    # encoder: 2 FFN; decoder embed 2 x (2 FFN x 2 enc-dec heads)^L for L in {1, 2}
    assert len(archs) == space.count() == 2 * 2 * (4 ** 2 + 4)
    assert len({space.arch_key(a) for a in archs}) == len(archs)
    for a in archs:
        assert space.validate(a) == a and space.canonical(a) == a
    rng = np.random.default_rng(0)
    keys = {space.arch_key(a) for a in archs}
    assert all(space.arch_key(space.sample(rng)) in keys for _ in range(100))
    with pytest.raises(ValueError, match="more than the enumeration limit"):
        Space.from_params(SPACE0).enumerate()
