"""Train one supernet of the grid (FFN variant x experts x seed) with the sandwich rule.

    python -m moebench.cli.supernet.train --section @supernet.json --run mos_layer-e2-s1 \\
        --data-dir data/supernet/ding --spm-model data/supernet/ding/spm.model \\
        --marker results/supernet/runs/mos_layer-e2-s1.json

``--section`` is the merged ``supernet`` params section (JSON or @FILE). Records go to
``<runs_root>/<variant>/<run_hash>/``; a killed run resumes from its checkpoint. The marker
names the run directory and holds the final record.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser
from moebench.io import atomic_write_json
from moebench.device import resolve_device
from moebench.supernet import search_io

PROG = "moebench.cli.supernet.train"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--section", required=True, help="the supernet params section (JSON or @FILE)")
    p.add_argument("--run", required=True, help="hat-s1 | mos_layer-e2-s1 | mos_neuron-e6-s2 ...")
    search_io.add_corpus_args(p)
    p.add_argument("--runs-root", help="instead of supernet.runs_root")
    p.add_argument("--marker", help="JSON written when the run is done")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: supernet.device)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: supernet.threads)")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from moebench.supernet import train_params as tp
    from moebench.supernet.model import ModelConfig
    from moebench.supernet.space import Space
    from moebench.supernet.train import TrainConfig
    from moebench.supernet.train_supernet import identity, run_dir_for, train_supernet

    sec = search_io.json_arg(args.section, "--section")
    tp.check(sec)
    key = tp.parse_run_name(args.run)
    threads = args.threads if args.threads is not None else sec.get("threads", 0)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(args.device or sec.get("device", "auto"))
    corpus = search_io.load_corpus_args(args)
    space = Space.from_params(sec["space"])
    v = corpus.vocab
    mcfg = ModelConfig(vocab_size=len(v), pad=v.pad, eos=v.eos, **tp.model_kwargs(sec, key))
    tcfg = TrainConfig(**tp.train_kwargs(sec, key))
    ident = identity(key.variant, key.seed, space, mcfg, tcfg, tp.data_identity(sec))
    run_dir = run_dir_for(args.runs_root or sec["runs_root"], ident)
    log.info("%s -> %s (%d train pairs, vocabulary %d, device %s)", args.run, run_dir,
             len(corpus.splits["train"]), len(v), device)
    progress = None if args.progress == "auto" else args.progress == "on"
    records = train_supernet(run_dir, ident, corpus, space, mcfg, tcfg, device,
                             sec["train"]["valid_max_tokens"], sec["data"]["max_len"], progress)
    if args.marker:
        atomic_write_json(args.marker, {"run": args.run, "run_dir": str(run_dir),
                                        "final": records[-1] if records else None})
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
