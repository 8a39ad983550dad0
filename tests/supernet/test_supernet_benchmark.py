"""The training benchmark runs on tiny shapes and reports every variant against the floor
(no timing is asserted)."""
import json
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_reports_all_rows(tmp_path, capsys):
    mod = runpy.run_path(str(ROOT / "benchmarks/supernet_train.py"))
    out = tmp_path / "b.json"
    assert mod["main"](["--embed", "16", "--ffn", "32", "--heads", "2", "--layers", "1",
                        "--vocab", "50", "--batch", "4", "--src-len", "5", "--tgt-len", "6",
                        "--turns", "1", "--infer-len", "4", "--infer-turns", "1",
                        "--router-hidden", "4", "--json", str(out)]) == 0
    torch.set_num_threads(1)
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["floor", "hat", "mos_layer", "mos_neuron", "infer_floor",
                                         "infer_exported", "infer_exported_incremental"]
    assert [r["target"] for r in rows][:4] == [None, 1.15, 1.3, 1.3]
    assert all(r["ratio"] > 0 for r in rows)
    assert "x floor" in capsys.readouterr().out


def test_the_floor_computes_what_our_transformer_computes():
    """Same weights, same function: the floor is the same network, not a different one."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import argparse

    mod = runpy.run_path(str(ROOT / "benchmarks/supernet_train.py"))
    a = argparse.Namespace(embed=16, ffn=32, heads=2, layers=2, vocab=40, dropout=0.0)
    floor = mod["PlainFloor"](a).eval()
    from moebench.supernet.model_plain import PlainConfig, Transformer

    cfg = PlainConfig(vocab_size=40, encoder_embed_dim=16, encoder_ffn_embed_dim=(32, 32),
                      encoder_self_attention_heads=(2, 2), decoder_embed_dim=16,
                      decoder_ffn_embed_dim=(32, 32), decoder_self_attention_heads=(2, 2),
                      decoder_ende_attention_heads=(2, 2), decoder_arbitrary_ende_attn=(-1, -1),
                      qkv_dim=16)
    ours = Transformer(cfg).eval()
    with torch.no_grad():
        ours.embed.weight.copy_(floor.embed.weight)
        for a_, b in zip(floor.tf.encoder.layers, ours.encoder):
            b.self_attn.in_proj.weight.copy_(a_.self_attn.in_proj_weight)
            b.self_attn.in_proj.bias.copy_(a_.self_attn.in_proj_bias)
            for x, y in ((a_.self_attn.out_proj, b.self_attn.out_proj), (a_.linear1, b.ffn.fc1),
                         (a_.linear2, b.ffn.fc2), (a_.norm1, b.norm1), (a_.norm2, b.norm2)):
                y.weight.copy_(x.weight)
                y.bias.copy_(x.bias)
        for a_, b in zip(floor.tf.decoder.layers, ours.decoder):
            b.self_attn.in_proj.weight.copy_(a_.self_attn.in_proj_weight)
            b.self_attn.in_proj.bias.copy_(a_.self_attn.in_proj_bias)
            w, bias = a_.multihead_attn.in_proj_weight, a_.multihead_attn.in_proj_bias
            b.cross_attn.q_proj.weight.copy_(w[:16])
            b.cross_attn.q_proj.bias.copy_(bias[:16])
            b.cross_attn.kv_proj.weight.copy_(w[16:])
            b.cross_attn.kv_proj.bias.copy_(bias[16:])
            for x, y in ((a_.self_attn.out_proj, b.self_attn.out_proj),
                         (a_.multihead_attn.out_proj, b.cross_attn.out_proj),
                         (a_.linear1, b.ffn.fc1), (a_.linear2, b.ffn.fc2), (a_.norm1, b.norm1),
                         (a_.norm2, b.norm2), (a_.norm3, b.norm3)):
                y.weight.copy_(x.weight)
                y.bias.copy_(x.bias)
        src, prev = torch.randint(4, 40, (2, 6)), torch.randint(4, 40, (2, 5))
        torch.testing.assert_close(floor(src, prev), ours(src, prev), rtol=0, atol=1e-5)
