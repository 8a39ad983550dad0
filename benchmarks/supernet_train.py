"""Training throughput of the largest subnet under hat / mos_layer / mos_neuron against a plain
torch.nn.Transformer of the same shape (the floor), and inference latency of the exported
standalone subnet against the same plain Transformer.

    PYTHONPATH=src python benchmarks/supernet_train.py --threads 1 --json out.json

Shape: encoder/decoder width ``--embed`` (= qkv_dim, as nn.Transformer needs), ``--ffn``,
``--heads``, ``--layers`` each side, vocabulary ``--vocab``; the subnet is the largest of a
space around that shape with encoder-decoder attention to the last encoder layer only
(nn.Transformer cannot attend to several). Each training step = forward + backward + Adam
step on the same token batch (label-smoothed CE; dropout ``--dropout`` after every sublayer,
on the attention weights and after the FFN activation, as nn.Transformer's single dropout
does); the variants run side by
side in one process, interleaved in turns of one untimed + one timed step, median over turns.
Targets: hat <= 1.15 x the floor's step time, MoS <= 1.3 x; exported inference within 5 %.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from moebench.supernet import model_layers as L
from moebench.supernet.export import export
from moebench.supernet.model import ModelConfig, SuperTransformer
from moebench.supernet.space import Space

VARIANTS = ("hat", "mos_layer", "mos_neuron")


def _space(a) -> Space:
    small = lambda x: [x, max(a.heads, x * 3 // 4)]  # noqa: E731
    return Space.from_params({
        "encoder_embed_dim": small(a.embed), "encoder_layer_num": [a.layers],
        "encoder_ffn_embed_dim": small(a.ffn), "encoder_self_attention_heads": [a.heads],
        "decoder_embed_dim": small(a.embed), "decoder_layer_num": [a.layers],
        "decoder_ffn_embed_dim": small(a.ffn), "decoder_self_attention_heads": [a.heads],
        "decoder_ende_attention_heads": [a.heads], "decoder_arbitrary_ende_attn": [-1],
        "qkv_dim": a.embed})


class PlainFloor(nn.Module):
    """nn.Transformer (post-norm, no final norms) with a shared embedding and tied output."""

    def __init__(self, a) -> None:
        super().__init__()
        d, p = a.embed, a.dropout
        self.embed = nn.Embedding(a.vocab, d, padding_idx=1)
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, a.heads, a.ffn, p,
                                                               batch_first=True), a.layers,
                                    enable_nested_tensor=False)
        dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(d, a.heads, a.ffn, p,
                                                               batch_first=True), a.layers)
        self.tf = nn.Transformer(d, a.heads, a.layers, a.layers, a.ffn, p, batch_first=True,
                                 custom_encoder=enc, custom_decoder=dec)
        self.p, self.masks = p, {}

    def forward(self, src, prev):
        """The encoder and decoder stacks called directly with a cached causal mask
        (nn.Transformer.forward re-derives the mask's causality on every call)."""
        w, t = self.embed.weight, prev.shape[1]
        if t not in self.masks:
            self.masks[t] = nn.Transformer.generate_square_subsequent_mask(t, device=src.device)
        mem = self.tf.encoder(L.embed(src, w, 1, self.p, self.training))
        x = self.tf.decoder(L.embed(prev, w, 1, self.p, self.training), mem,
                            tgt_mask=self.masks[t], tgt_is_causal=True)
        return x @ w.t()


def _batch(a, g):
    src = torch.randint(4, a.vocab, (a.batch, a.src_len), generator=g)
    tgt = torch.randint(4, a.vocab, (a.batch, a.tgt_len), generator=g)
    prev = torch.cat([torch.full((a.batch, 1), 2), tgt[:, :-1]], 1)
    return src.to(a.device), prev.to(a.device), tgt.to(a.device)


def _timed(fn, device: torch.device) -> float:
    """Seconds of ``fn()`` (CUDA: synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _train_step(fn, params, opt, tgt):
    opt.zero_grad(set_to_none=True)
    loss, _, _ = L.label_smoothed_nll(fn(), tgt, 1, 0.1)
    (loss / tgt.numel()).backward()
    opt.step()


def bench_train(a, space, arch) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    src, prev, tgt = _batch(a, g)
    runs = {}
    torch.manual_seed(0)
    floor = PlainFloor(a).to(a.device).train()
    runs["floor"] = (lambda: floor(src, prev), floor)
    for v in VARIANTS:
        m = SuperTransformer(space, ModelConfig(vocab_size=a.vocab, ffn=v, num_experts=a.experts,
                                                router_hidden=a.router_hidden,
                                                dropout=a.dropout, attention_dropout=a.dropout,
                                                activation_dropout=a.dropout)).to(a.device)
        runs[v] = ((lambda m=m.train(): m(src, prev, arch)), m)
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.98))
            for k, (_, m) in runs.items()}
    times = {k: [] for k in runs}
    for _ in range(a.turns):
        for k, (fn, m) in runs.items():
            _train_step(fn, m.parameters(), opts[k], tgt)  # untimed
            times[k].append(_timed(lambda: _train_step(fn, m.parameters(), opts[k], tgt),
                                   a.device))
    return {k: statistics.median(v) for k, v in times.items()}


@torch.inference_mode()
def bench_infer(a, space, arch) -> dict[str, float]:
    torch.manual_seed(0)
    floor = PlainFloor(a).to(a.device).eval()
    sup = SuperTransformer(space, ModelConfig(vocab_size=a.vocab, ffn="mos_neuron",
                                              num_experts=a.experts,
                                              router_hidden=a.router_hidden))
    sub = export(sup, arch).to(a.device).eval()
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, a.vocab, (1, a.infer_len), generator=g).to(a.device)
    prev = torch.randint(4, a.vocab, (1, a.infer_len), generator=g).to(a.device)

    def steps():
        enc, cache = sub.encode(src), {}
        tok = prev[:, :1]
        for _ in range(a.infer_len):
            sub.decode_step(tok, enc, cache)

    runs = {"floor": lambda: floor(src, prev), "exported": lambda: sub(src, prev),
            "exported_incremental": steps}
    times = {k: [] for k in runs}
    for _ in range(a.infer_turns):
        for k, fn in runs.items():
            fn()
            times[k].append(_timed(fn, a.device))
    return {k: statistics.median(v) for k, v in times.items()}


def report(a, train: dict, infer: dict) -> list[dict]:
    """Print the table; returns its rows."""
    tokens = a.batch * a.tgt_len
    targets = {"hat": 1.15, "mos_layer": 1.3, "mos_neuron": 1.3}
    print(f"# torch {torch.__version__}, {a.device}, {a.threads} thread(s); d={a.embed} ffn={a.ffn} "
          f"heads={a.heads} layers={a.layers}+{a.layers} V={a.vocab} E={a.experts}; "
          f"{a.batch}x{a.tgt_len} target tokens per step")
    print(f"{'training':<22}{'step ms':>9}{'tokens/s':>10}{'x floor':>9}{'target':>8}")
    rows = []
    for k, t in train.items():
        ratio, tgt = t / train["floor"], targets.get(k)
        rows.append({"what": k, "step_s": t, "tokens_per_s": tokens / t, "ratio": ratio,
                     "target": tgt, "met": None if tgt is None else ratio <= tgt})
        print(f"{k:<22}{t * 1e3:>9.2f}{tokens / t:>10.0f}{ratio:>9.3f}"
              f"{'' if tgt is None else f'<= {tgt}':>8}")
    print(f"{'inference (batch 1)':<22}{'ms':>9}{'':>10}{'x floor':>9}{'target':>8}")
    for k, t in infer.items():
        ratio, tgt = t / infer["floor"], (1.05 if k == "exported" else None)
        rows.append({"what": f"infer_{k}", "seconds": t, "ratio": ratio, "target": tgt,
                     "met": None if tgt is None else abs(ratio - 1) <= 0.05})
        print(f"{k:<22}{t * 1e3:>9.3f}{'':>10}{ratio:>9.3f}{'' if tgt is None else '+-5%':>8}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--ffn", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--experts", type=int, default=2)
    p.add_argument("--router-hidden", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=112, help="sentences per batch")
    p.add_argument("--src-len", type=int, default=17)
    p.add_argument("--tgt-len", type=int, default=18)
    p.add_argument("--turns", type=int, default=15)
    p.add_argument("--infer-len", type=int, default=30)
    p.add_argument("--infer-turns", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda (timed with synchronisation)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.device = torch.device(a.device)
    space = _space(a)
    arch = space.largest()
    train = bench_train(a, space, arch)
    infer = bench_infer(a, space, arch)
    rows = report(a, train, infer)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": {**vars(a), "device": str(a.device)}, "torch": torch.__version__,
                       "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
