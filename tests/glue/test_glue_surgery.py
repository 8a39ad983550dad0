"""MoE surgery on transformers BERT: exact equivalences, the authors' quirks, round trips."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from moebench.glue.batches import cache_features, collate, encode
from moebench.glue.model import GlueModel, load_classifier, load_tokenizer
from moebench.glue.surgery import (BertMoEFFN, MoESpec, apply_moe, load_converted,
                                   moe_ffns, save_converted)
from moebench.moe import collect_routing_stats

QUIRKS_OFF = {"fc2_bias": "keep", "expert_dropout": 0.0, "route_padding": True}
SPECS = {  # identical experts + combine weights summing to 1 (dropless)
    "mintau": MoESpec(layers=(1,), num_experts=8, router="mintau",
                      router_kwargs={"tau": 0.9, "num_active": 6}, **QUIRKS_OFF),
    "cosine_topk": MoESpec(layers=(0, 2), num_experts=4, router="cosine_topk", k=2,
                           capacity_factor=0.0, **QUIRKS_OFF),
}


def _batch(seed: int = 0, b: int = 4, length: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, 7:] = 0
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.mark.parametrize("router", sorted(SPECS))
def test_identical_experts_reproduce_dense_logits(tiny_bert, router):
    dense = load_classifier(str(tiny_bert), 2).eval()
    moe = apply_moe(load_classifier(str(tiny_bert), 2), SPECS[router]).eval()
    ids, mask = _batch()
    ref = dense(input_ids=ids, attention_mask=mask).logits
    out = moe(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    moe.train()
    moe(input_ids=ids, attention_mask=mask)
    stats = collect_routing_stats(moe)
    assert len(stats) == len(SPECS[router].layers)
    assert all(s["mean_k"] > 1 for s in stats.values())    # several experts really combined


def test_fc2_bias_divided_by_slots_as_the_authors(tiny_bert):
    hf = load_classifier(str(tiny_bert), 2)
    layer = hf.bert.encoder.layer[1]
    fc1, fc2 = layer.intermediate.dense, layer.output.dense
    x = torch.randn(3, 5, 32)
    dense_ffn = fc2(nn.functional.gelu(fc1(x)))
    spec = MoESpec(layers=(1,), num_experts=8, router="mintau",
                   router_kwargs={"tau": 0.9, "num_active": 6}, fc2_bias="divide",
                   expert_dropout=0.0)
    apply_moe(hf, spec)
    ffn = layer.intermediate.eval()
    assert isinstance(ffn, BertMoEFFN) and isinstance(layer.output.dense, nn.Identity)
    torch.testing.assert_close(ffn(x), dense_ffn - (1 - 1 / 8) * fc2.bias, rtol=1e-5, atol=1e-5)


def test_expert_dropout_comes_before_gelu(tiny_bert):
    hf = apply_moe(load_classifier(str(tiny_bert), 2),
                   MoESpec(layers=(1,), num_experts=2, router="mintau", expert_dropout=0.1))
    experts = moe_ffns(hf)[0].moe.experts
    assert experts.drop_first and experts.drop.p == 0.1 and isinstance(experts.act, nn.GELU)
    act = experts._hidden
    h = torch.linspace(-3, 3, 4001)
    experts.train()
    torch.manual_seed(0)
    y = act(h)
    torch.manual_seed(0)
    kept = nn.functional.dropout(torch.ones_like(h), 0.1, True) > 0
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept]))          # GELU(0) = 0
    torch.testing.assert_close(y[kept], nn.functional.gelu(h[kept] / 0.9))  # scaled, then GELU
    experts.eval()
    torch.testing.assert_close(act(h), nn.functional.gelu(h))
    plain = apply_moe(load_classifier(str(tiny_bert), 2),
                      MoESpec(layers=(1,), num_experts=2, router="mintau", expert_dropout=0.0))
    assert not moe_ffns(plain)[0].moe.experts.drop_first


@pytest.mark.parametrize("route_padding", [True, False])
def test_route_padding_switch(tiny_bert, route_padding):
    spec = MoESpec(layers=(2,), num_experts=4, router="mintau", fc2_bias="keep",
                   expert_dropout=0.0, route_padding=route_padding)
    model = GlueModel(apply_moe(load_classifier(str(tiny_bert), 2), spec)).train()
    ids, mask = _batch()
    model({"input_ids": ids, "attention_mask": mask})
    tokens = collect_routing_stats(model)["hf.bert.encoder.layer.2.intermediate.moe"]["tokens"]
    assert tokens == (mask.numel() if route_padding else int(mask.sum()))
    ffn = moe_ffns(model)[0]
    ffn.token_mask = mask.bool()
    out = ffn(torch.randn(*mask.shape, 32))
    assert bool((out[mask == 0] == 0).all()) is (not route_padding)


def test_bad_layers_and_double_conversion(tiny_bert):
    hf = load_classifier(str(tiny_bert), 2)
    with pytest.raises(ValueError, match="MoE layer index 3 out of range for an encoder of 3"):
        apply_moe(hf, MoESpec(layers=(3,), num_experts=2, router="mintau"))
    apply_moe(hf, MoESpec(layers=(-1,), num_experts=2, router="mintau"))
    with pytest.raises(ValueError, match="already an MoE layer"):
        apply_moe(hf, MoESpec(layers=(2,), num_experts=2, router="mintau"))
    with pytest.raises(ValueError, match="not a BERT-family encoder"):
        apply_moe(nn.Linear(2, 2), MoESpec(layers=(0,), num_experts=2, router="mintau"))


def test_save_and_load_round_trip(tiny_bert, tmp_path):
    spec = MoESpec(layers=(1,), num_experts=8, router="mintau",
                   router_kwargs={"tau": 0.5, "num_active": 4})
    model = apply_moe(load_classifier(str(tiny_bert), 2), spec)
    layer = moe_ffns(model)[0].moe
    with torch.no_grad():
        layer.experts.fc1_weight[0].mul_(1.5)
    layer.duplicate_expert(0, 4)                     # an expansion: slot 4 now active
    model.eval()
    path = save_converted(model, tmp_path / "converted.pt")
    again = load_converted(path).eval()
    ids, mask = _batch(1)
    torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits,
                               model(input_ids=ids, attention_mask=mask).logits)
    mask2 = moe_ffns(again)[0].moe.router.active_mask
    assert mask2.tolist() == [True] * 5 + [False] * 3
    assert again.moe_spec == spec


def test_cached_lower_layers_equal_the_whole_forward(tiny_bert):
    """freeze_layers + cached features + dynamic padding == the model run on the batch."""
    spec = MoESpec(layers=(2,), num_experts=4, router="mintau",
                   router_kwargs={"tau": 0.6, "num_active": 3})
    torch.manual_seed(0)
    whole = GlueModel(apply_moe(load_classifier(str(tiny_bert), 2), spec), freeze_layers=0)
    split = GlueModel(apply_moe(load_classifier(str(tiny_bert), 2), spec), freeze_layers=2)
    split.load_state_dict(whole.state_dict())
    whole.eval(), split.eval()
    tok = load_tokenizer(str(tiny_bert))
    rows = [{"sentence": s, "label": i % 2} for i, s in enumerate(
        ["the cat sat on the mat", "a dog", "big red computer code bug is very bad and sad",
         "she runs", "it was good", "he eats food"])]
    enc = encode(rows, ["sentence"], tok, 16)
    plain = encode(rows, ["sentence"], tok, 16)
    cache_features(split, enc, torch.device("cpu"), chunk=4)
    for idx in ([0, 1], [2, 3, 5], [1, 3]):      # batch maxima below the cached length
        a = whole(collate(plain, idx, torch.device("cpu")))
        b = split(collate(enc, idx, torch.device("cpu")))
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in split.hf.bert.embeddings.parameters())
    assert all(p.requires_grad for p in split.hf.bert.encoder.layer[2].parameters())
