"""Valid loss and BLEU / chrF (beam and greedy) of architectures of a trained supernet, with
their inherited weights.

    python -m moebench.cli.supernet.bleu --marker results/supernet/runs/hat-s1.json \\
        --eval @eval.json --standard 3 --arch-seed 0 --data-dir ... --spm-model ... \\
        --out results/supernet/eval/hat-s1.json
    python -m moebench.cli.supernet.bleu --model RUN_DIR/model.pt --arch arch.yaml ...

``--standard N`` scores the largest, the smallest and N seeded samples (the table's set);
``--arch FILE`` one architecture (YAML or JSON, HAT's keys).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from moebench.cli.common import OneLineParser, run_parser
from moebench.errors import UsageError
from moebench.io import atomic_write_json
from moebench.device import resolve_device
from moebench.supernet import search_io

PROG = "moebench.cli.supernet.bleu"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--marker", help="the training marker JSON (names the run directory)")
    src.add_argument("--model", help="a model.pt of a trained supernet")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--standard", type=int, metavar="N",
                       help="largest, smallest and N sampled architectures")
    which.add_argument("--arch", help="one architecture file (YAML / JSON)")
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--eval", default="{}", help="the supernet.eval section (JSON or @FILE)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    search_io.add_corpus_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON of the scores")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _model_path(args: argparse.Namespace) -> tuple[Path, dict]:
    if args.model:
        return Path(args.model), {}
    marker = search_io.json_arg(f"@{args.marker}", "--marker")
    return Path(marker["run_dir"]) / "model.pt", marker


def _archs(args: argparse.Namespace, space) -> dict:
    from moebench.supernet.decode_eval import standard_archs

    if args.standard is not None:
        return standard_archs(space, args.standard, args.arch_seed)
    try:
        arch = yaml.safe_load(Path(args.arch).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--arch {args.arch}: cannot be read ({exc})") from None
    return {Path(args.arch).stem: space.validate(arch, where=str(args.arch))}


def run(args: argparse.Namespace) -> int:
    import torch

    from moebench.supernet.decode_eval import EvalConfig, evaluate_arch
    from moebench.supernet.train_supernet import load_supernet

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    path, marker = _model_path(args)
    model = load_supernet(path, device)
    corpus = search_io.load_corpus_args(args)
    cfg = EvalConfig.from_params(search_io.json_arg(args.eval, "--eval"), args.label_smoothing)
    results = {name: evaluate_arch(model, arch, corpus, cfg, device)
               for name, arch in _archs(args, model.space).items()}
    atomic_write_json(args.out, {"run": marker.get("run"), "variant": model.cfg.ffn,
                                 "num_experts": model.cfg.num_experts, "model": str(path),
                                 "final_record": marker.get("final"), "eval": cfg.__dict__,
                                 "archs": results})
    print(json.dumps({k: round(r["beam"]["bleu"], 2) for k, r in results.items()}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
