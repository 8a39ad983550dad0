"""Retrain the subnets one supernet run's searches found (each mode), then BLEU / chrF on the
test split (the final models' gold latency: ``moebench.cli.supernet.latency final``).

    python -m moebench.cli.supernet.retrain --run hat-s1 --modes inherited,scratch \\
        --marker results/supernet/runs/hat-s1.json --search-dir results/supernet/search/hat-s1 \\
        --limits q25,q50,q75 --retrain JSON --train JSON --eval JSON \\
        --data-dir data/supernet/ding --spm-model data/supernet/ding/spm.model \\
        --state-dir results/supernet/retrain_runs/hat-s1 --out-dir results/supernet/retrain/hat-s1

``--train``: the supernet's optimiser settings (``supernet.train``), overridden by the mode's
``steps`` / ``lr`` / ``warmup`` / ``max_tokens`` / ``eval_every``; ``--eval``: the test-set
decoding (``supernet.eval``: beam, length penalty, sentences).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser
from moebench.errors import UsageError
from moebench.io import atomic_write_json
from moebench.runs import run_hash
from moebench.device import resolve_device
from moebench.supernet import search_io
from moebench.supernet.search_params import check_retrain

PROG = "moebench.cli.supernet.retrain"
log = logging.getLogger(PROG)
TRAIN_FIELDS = ("lr", "warmup_init_lr", "min_lr", "adam_betas", "adam_eps", "weight_decay",
                "clip_norm", "label_smoothing", "max_tokens")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="the supernet run's name (hat-s1, ...)")
    p.add_argument("--modes", required=True, help="comma-separated: inherited, scratch")
    search_io.add_supernet_args(p)
    p.add_argument("--search-dir", required=True, help="the run's <limit>.json search results")
    p.add_argument("--limits", required=True, help="comma-separated limit names (q25,200ms)")
    p.add_argument("--retrain", required=True, help="supernet.retrain as JSON (or @FILE)")
    p.add_argument("--train", default="{}", help="supernet.train as JSON (or @FILE)")
    p.add_argument("--eval", default="{}", help="supernet.eval as JSON (or @FILE)")
    search_io.add_corpus_args(p)
    p.add_argument("--max-len", type=int, default=256, help="longest training pair kept")
    p.add_argument("--valid-sentences", type=int, help="valid losses on the first N valid pairs")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--out-dir", required=True, help="writes <mode>.json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _base_train(text: str):
    from moebench.supernet.train import TrainConfig

    d = search_io.json_arg(text, "--train")
    kw = {k: d[k] for k in TRAIN_FIELDS if k in d}
    if "adam_betas" in kw:
        kw["adam_betas"] = tuple(kw["adam_betas"])
    return TrainConfig(**kw)


def _scorer(args: argparse.Namespace, corpus, device):
    """bleu(model) -> scores on the test split, and the eval config."""
    from moebench.supernet.decode import DecodeConfig
    from moebench.supernet.decode_eval import EvalConfig, bleu_of

    ecfg = EvalConfig.from_params(search_io.json_arg(args.eval, "--eval"))
    decode = DecodeConfig(ecfg.beam, ecfg.lenpen, ecfg.max_len_a, ecfg.max_len_b)

    def bleu(model):
        out = bleu_of(model, corpus, ecfg, decode, device)
        return {k: out[k] for k in ("bleu", "chrf", "bleu_signature", "chrf_signature",
                                    "sentences", "decode_seconds")}

    return bleu, ecfg


def _retrain_mode(args: argparse.Namespace, mode: str, params: dict, supernet, path: Path,
                  corpus, bleu, ecfg) -> dict:
    """Every limit's subnet retrained in ``mode``; the command line's JSON for that mode."""
    from moebench.supernet.retrain import retrain_config, retrain_subnet

    cfg = retrain_config(_base_train(args.train), params[mode], args.seed)
    out = {"run": args.run, "variant": supernet.cfg.ffn, "mode": mode,
           "train": cfg.to_dict(), "eval": ecfg.__dict__, "limits": {}}
    for name in [n for n in args.limits.split(",") if n]:
        found = search_io.json_arg(f"@{Path(args.search_dir) / f'{name}.json'}", "--search-dir")
        arch = supernet.space.validate(found["arch"], where=f"{args.search_dir}/{name}.json")
        ident = {"study": "supernet", "stage": "retrain", "run": args.run, "mode": mode,
                 "variant": supernet.cfg.ffn, "limit": name, "arch": supernet.space.canonical(arch),
                 "supernet": search_io.file_digest(path), "train": cfg.to_dict(),
                 "eval": ecfg.__dict__, "valid_sentences": args.valid_sentences}
        res = retrain_subnet(Path(args.state_dir) / mode / name / run_hash(ident), ident,
                             supernet, arch, mode, corpus, cfg, bleu,
                             valid_sentences=args.valid_sentences)
        res["limit_ms"] = found["limit_ms"]
        out["limits"][name] = res
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from moebench.supernet.train_supernet import load_supernet

    torch.set_num_threads(max(1, args.threads))
    params = check_retrain(search_io.json_arg(args.retrain, "--retrain"))
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in params["modes"]]
    if bad or not modes:
        raise UsageError(f"--modes {args.modes!r}: each must be one of supernet.retrain.modes "
                         f"({', '.join(params['modes'])})")
    device = resolve_device(args.device)
    path = search_io.supernet_path(args)
    supernet = load_supernet(path, device)
    corpus = search_io.load_corpus_args(args)
    corpus.splits["train"] = corpus.splits["train"].filter_length(args.max_len)
    bleu, ecfg = _scorer(args, corpus, device)
    for mode in modes:
        out = _retrain_mode(args, mode, params, supernet, path, corpus, bleu, ecfg)
        atomic_write_json(Path(args.out_dir) / f"{mode}.json", out)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
