"""Latency of supernet subnets as the search measures them (HAT's protocol; CUDA events on
CUDA): the largest and the smallest subnet of a paper space, each as the freshly initialised
standalone Transformer the latency dataset times (``search_io.standalone``), through
:func:`moebench.supernet.latency.measure_latency` with the params' protocol (batch 1, 30
source tokens, beam 5, 30 incremental decoder steps, 5 warm-up + 20 timed runs, trimmed).

  python benchmarks/subnet_latency.py --device cuda --json out.json
  python benchmarks/subnet_latency.py --smoke --json out.json          # tiny space, CPU
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from moebench.io import atomic_write_json  # noqa: E402

PARAMS = ROOT / "params/paper/hat_wmt14_en_de.yaml"
SMOKE_SPACE = {
    "encoder_embed_dim": [16], "encoder_layer_num": [1], "encoder_ffn_embed_dim": [32, 16],
    "encoder_self_attention_heads": [2], "decoder_embed_dim": [16], "decoder_layer_num": [2, 1],
    "decoder_ffn_embed_dim": [32, 16], "decoder_self_attention_heads": [2],
    "decoder_ende_attention_heads": [2], "decoder_arbitrary_ende_attn": [-1], "qkv_dim": 16}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda | cpu | cuda:N")
    p.add_argument("--params", default=str(PARAMS), help="YAML with supernet.space")
    p.add_argument("--vocab", type=int, default=32768, help="joined vocabulary size")
    p.add_argument("--runs", type=int, default=20, help="timed runs (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while timing")
    p.add_argument("--smoke", action="store_true", help="tiny space on CPU, 3 short runs")
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.vocab, a.runs, a.warmup = "cpu", 64, 3, 1
    return a


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """{subnet: measure_latency's result} for the space's largest and smallest subnets."""
    import torch

    from moebench.device import resolve_device
    from moebench.supernet.latency import LatencySpec, measure_latency
    from moebench.supernet.search_io import standalone
    from moebench.supernet.space import Space

    device = resolve_device(a.device)
    if a.smoke:
        space = Space.from_params(SMOKE_SPACE)
        spec = LatencySpec(src_len=5, decode_steps=3, beam=2, warmup=a.warmup, runs=a.runs,
                           threads=a.threads)
    else:
        space = Space.from_params(yaml.safe_load(Path(a.params).read_text())["supernet"]["space"])
        spec = LatencySpec(warmup=a.warmup, runs=a.runs, threads=a.threads)
    out = {}
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        torch.manual_seed(0)
        model = standalone(arch, space, a.vocab, device)
        out[name] = {**measure_latency(model, spec), "arch": arch}
        del model
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    subnets = measure(a)
    print(f"{'subnet':<10}{'latency ms':>12}{'encoder ms':>12}{'decoder ms':>12}  device")
    for name, r in subnets.items():
        print(f"{name:<10}{r['latency_ms']:>12.2f}{r['encoder_ms']:>12.2f}"
              f"{r['decoder_ms']:>12.2f}  {r['device']}")
    if a.json:
        atomic_write_json(a.json, {"device": a.device, "vocab": a.vocab, "smoke": a.smoke,
                                   "params": None if a.smoke else str(a.params),
                                   "subnets": subnets})
    return 0


if __name__ == "__main__":
    sys.exit(main())
