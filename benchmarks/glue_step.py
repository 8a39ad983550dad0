"""Benchmark of one GLUE-study training step: dense vs gmoe vs mass, and mass vs its floor.

One process, the variants side by side on the same batch, taking turns of one untimed and one
timed ``update`` (forward, backward, MASS's hooks, fused AdamW, schedule), median over
``--iters`` timed steps per variant. Sizes:
  default  the embedded default as trained: MiniLM-L6 (d 384, FFN 1536) with the lower 5
           layers frozen and cached, the top layer trained (MoE there), batch 16 x 28 tokens
           (the default data's mean padded length), params/glue/glue.yaml's hparams
  base     BERT-base (12 layers, d 768, FFN 3072; random weights), everything fine-tuned,
           MoE in layer 10, batch 8 x 64 tokens, the paper's MASS/GMoE settings
Variants: dense, gmoe, mass (out of the expansion phase), mass_phase (a step inside the
expansion phase: drift statistics and the redundancy backward included), mass_nodrop
(``expert_dropout`` 0: the core's fused expert path; mass itself runs the authors' dropout
before GELU on the study's fused path, glue/experts.py), ffn (the dense FFN of the MoE layer
alone, forward + backward, on all B x L tokens) and ffn_drop (the same with the experts'
dropout before GELU). Padding tokens are routed (the authors' default), so every token counts.

mass's floor: the dense model with its MoE-layer FFN applied mean-k times (k measured on the
timed steps), the FFN computed as the experts compute it: floor = dense - ffn + k x ffn_drop,
where ffn_drop is the dense FFN with the experts' dropout before GELU (torch's dropout; the
authors' experts have it, dense BERT does not); for mass_nodrop (and "mass/plain floor",
which counts the authors' dropout as overhead) floor = dense + (k - 1) x ffn.
Target mass / floor <= 1.15.

  python benchmarks/glue_step.py [--sizes default,base] [--iters 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from moebench.glue.model import GlueModel, load_classifier  # noqa: E402
from moebench.glue.params import declarations, enumerate_runs  # noqa: E402
from moebench.glue.surgery import moe_ffns  # noqa: E402
from moebench.io import atomic_write_json  # noqa: E402

TARGET = 1.15
SIZES = {
    "default": {"B": 16, "L": 28, "model": "minilm-l6", "overrides": {}, "config": None},
    "base": {"B": 8, "L": 64, "model": "minilm-l6",
             "config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                        "intermediate_size": 3072},
             "overrides": {"freeze_layers": 0, "moe_layers": [10], "lr": 2e-5,
                           "mass_warmup_min": 30, "mass_window_min": 60,
                           "mass_similarity_threshold": 0.001}},
}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="default,base")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--params", default=str(ROOT / "params/glue/glue.yaml"))
    p.add_argument("--json", default=None, help="write the table as JSON to this path")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def method_hparams(params: str, overrides: dict) -> dict[str, dict]:
    """{method: resolved hparams of the first task's first seed} with ``overrides``."""
    cfg = yaml.safe_load(Path(params).read_text())
    runs = enumerate_runs(cfg)
    first = {}
    for run in runs:
        first.setdefault(run.method, dict(run.hparams))
    return {m: {**h, **{k: v for k, v in overrides.items() if k in h}}
            for m, h in first.items()}


def build(method: str, hparams: dict, size: dict, device: torch.device, n_steps: int) -> Any:
    torch.manual_seed(0)
    hf = load_classifier(size["model"], 2, random_init=size["config"] is not None,
                         config_overrides=size["config"])
    return declarations()[method].load()(hf, hparams, n_steps).to(device)


def make_batch(model: GlueModel, size: dict, device: torch.device) -> dict:
    """One batch: random ids with lengths in [L/3, L] (padded to L), features when frozen."""
    g = torch.Generator().manual_seed(0)
    b, length = size["B"], size["L"]
    lengths = torch.randint(length // 3, length + 1, (b,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), vocab, (b, length), generator=g) * mask
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "labels": torch.randint(0, 2, (b,), generator=g)}
    batch = {k: v.to(device) for k, v in batch.items()}
    if model.freeze_layers:
        batch = {"features": model.lower(batch["input_ids"], batch["attention_mask"]),
                 "attention_mask": batch["attention_mask"], "labels": batch["labels"]}
    return batch


def ffn_step(method: Any, batch: dict, dropout: float = 0.0) -> Callable[[], None]:
    """Forward + backward of the MoE layer's FFN shape on every token (dense, one copy), with
    ``dropout`` before GELU as the authors' experts (train mode)."""
    layer = moe_ffns(method.model)[0].moe
    fc1 = torch.nn.Linear(layer.in_features, layer.experts.hidden_features).to(
        batch["attention_mask"].device)
    fc2 = torch.nn.Linear(layer.experts.hidden_features, layer.out_features).to(fc1.weight.device)
    tokens = batch["attention_mask"].numel()
    x = torch.randn(tokens, layer.in_features, device=fc1.weight.device, requires_grad=True)

    def fn() -> None:
        for p in (*fc1.parameters(), *fc2.parameters()):
            p.grad = None
        x.grad = None
        h = torch.nn.functional.dropout(fc1(x), dropout, True) if dropout else fc1(x)
        fc2(torch.nn.functional.gelu(h)).sum().backward()
    return fn


def time_turns(fns: dict[str, Callable[[], Any]], iters: int, warmup: int,
               device: torch.device) -> dict[str, float]:
    """Median ms per call of each fn; turns of one untimed + one timed call."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    while min(map(len, times.values())) < iters:
        for name, fn in fns.items():
            fn()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def run_size(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    size = SIZES[name]
    hp = method_hparams(args.params, size["overrides"])
    n_steps = 10_000                      # long run: the expansion phase is the first 1000
    methods = {m: build(m, hp[m], size, device, n_steps) for m in ("dense", "gmoe", "mass")}
    methods["mass_nodrop"] = build("mass", {**hp["mass"], "expert_dropout": 0.0}, size, device,
                                  n_steps)
    methods["mass_phase"] = build("mass", hp["mass"], size, device, n_steps)
    batch = make_batch(methods["dense"].model, size, device)
    for key in ("mass", "mass_nodrop"):
        methods[key].step = n_steps // 2            # out of the expansion phase

    def update(m: Any, key: str) -> Callable[[], None]:
        def fn() -> None:
            if key == "mass_phase":
                m.step = 0                          # every timed step in the phase
            m.update(batch)
        return fn
    fns = {k: update(m, k) for k, m in methods.items()}
    fns["ffn"] = ffn_step(methods["mass"], batch)
    fns["ffn_drop"] = ffn_step(methods["mass"], batch, float(hp["mass"]["expert_dropout"]))
    for m in methods.values():
        m.routing_stats(reset=True)
    ms = time_turns(fns, args.iters, args.warmup, device)
    stats = next(iter(methods["mass"].routing_stats(reset=True).values()))
    k = stats["mean_k"]
    floor = ms["dense"] - ms["ffn"] + k * ms["ffn_drop"]
    floor_nodrop = ms["dense"] + (k - 1.0) * ms["ffn"]
    return {"size": name, "B": size["B"], "L": size["L"], **{f"{n}_ms": v for n, v in ms.items()},
            "mass_k": k, "mass_floor_ms": floor, "mass_over_floor": ms["mass"] / floor,
            "mass_nodrop_floor_ms": floor_nodrop,
            "mass_nodrop_over_floor": ms["mass_nodrop"] / floor_nodrop,
            "mass_over_plain_floor": ms["mass"] / floor_nodrop, "target": TARGET}


def format_table(rows: list[dict]) -> str:
    cols = [("size", "size", "{}"), ("BxL", None, "{}"), ("dense ms", "dense_ms", "{:.0f}"),
            ("gmoe ms", "gmoe_ms", "{:.0f}"), ("mass ms", "mass_ms", "{:.0f}"),
            ("mass phase ms", "mass_phase_ms", "{:.0f}"),
            ("mass nodrop ms", "mass_nodrop_ms", "{:.0f}"), ("ffn ms", "ffn_ms", "{:.1f}"),
            ("ffn+drop ms", "ffn_drop_ms", "{:.1f}"),
            ("k", "mass_k", "{:.2f}"), ("floor ms", "mass_floor_ms", "{:.0f}"),
            ("mass/floor", "mass_over_floor", "{:.3f}"),
            ("nodrop/floor", "mass_nodrop_over_floor", "{:.3f}"),
            ("mass/plain floor", "mass_over_plain_floor", "{:.3f}")]
    lines = [[c[0] for c in cols]]
    for r in rows:
        lines.append([f"{r['B']}x{r['L']}" if key is None else fmt.format(r[key])
                      for _, key, fmt in cols])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device)
    rows = [run_size(name, args, device) for name in args.sizes.split(",")]
    print(format_table(rows))
    print(f"floor = dense - ffn + k x ffn+drop (mass), dense + (k - 1) x ffn (nodrop); "
          f"target mass/floor <= {TARGET}; "
          f"{args.threads} thread(s), median of {args.iters} timed steps per column")
    if args.json:
        atomic_write_json(args.json, {"threads": args.threads, "iters": args.iters,
                                      "device": args.device, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
