"""HAT's evolutionary search on one trained supernet variant, for every latency limit.

    python -m moebench.cli.supernet.search --run hat-s1 \\
        --marker results/supernet/runs/hat-s1.json --search JSON --space JSON \\
        --predictor results/supernet/latency/predictor.pt \\
        --latency-dataset results/supernet/latency/dataset.csv \\
        --latency-summary results/supernet/latency/summary.json --latency-device cpu \\
        --data-dir data/supernet/ding --spm-model data/supernet/ding/spm.model \\
        --state-dir results/supernet/search_state/hat-s1 \\
        --out-dir results/supernet/search_raw/hat-s1 \\
        [--compare-out results/supernet/search/compare/hat-s1.json]

Writes ``<out-dir>/<limit>.json`` per limit (the best candidates with their valid loss and
predicted latency, the search's best, the per-generation history; the gold check,
``moebench.cli.supernet.latency check``, picks among the candidates); the per-generation
state lives under ``--state-dir`` so a killed search resumes. ``--compare-out``: evolution
vs random search at equal evaluations over the ``compare`` seeds.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser
from moebench.errors import RunError, UsageError
from moebench.io import atomic_write_json
from moebench.device import resolve_device
from moebench.supernet import search_io
from moebench.supernet.search_params import check_search
from moebench.supernet.space import Space

PROG = "moebench.cli.supernet.search"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="the supernet run's name (hat-s1, ...)")
    search_io.add_supernet_args(p)
    p.add_argument("--space", required=True, help="supernet.space as JSON (checked against "
                                                   "the supernet's)")
    p.add_argument("--search", required=True, help="supernet.search as JSON (or @FILE)")
    p.add_argument("--predictor", required=True)
    p.add_argument("--latency-dataset", required=True)
    p.add_argument("--latency-summary", required=True)
    p.add_argument("--latency-device", default="cpu")
    search_io.add_corpus_args(p)
    p.add_argument("--device", default="auto", help="where the supernet runs (fitness)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--out-dir", help="where <limit>.json go (needed unless --only-compare)")
    p.add_argument("--compare-out")
    p.add_argument("--only-compare", action="store_true",
                   help="run only the evolution vs random comparison")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_context(args: argparse.Namespace, search: dict):
    """The supernet, its fitness, the predictor, gold latency and the measured latencies."""
    from moebench.supernet.data import token_batches
    from moebench.supernet.latency import machine_info
    from moebench.supernet.latency_dataset import dataset_arrays, read_rows
    from moebench.supernet.predictor import Predictor
    from moebench.supernet.search_run import (SearchContext, check_machine, memoised,
                                              valid_subset)
    from moebench.supernet.train import valid_loss
    from moebench.supernet.train_supernet import load_supernet

    path = search_io.supernet_path(args)
    supernet = load_supernet(path, resolve_device(args.device))
    space = supernet.space
    if space != Space.from_params(search_io.json_arg(args.space, "--space")):
        raise RunError(f"{path}: trained on another design space than supernet.space")
    corpus = search_io.load_corpus_args(args)
    device = next(supernet.parameters()).device
    valid = [b.to(device) for b in token_batches(valid_subset(
        corpus, search["fitness"]["valid_sentences"]), search["fitness"]["max_tokens"])]
    summary = json.loads(Path(args.latency_summary).read_text(encoding="utf-8"))
    lat_device = resolve_device(args.latency_device)
    timer = search_io.GoldLatency.from_summary(summary, lat_device)
    check_machine(summary, machine_info(lat_device, timer.spec.threads), args.latency_summary)
    predictor = Predictor.load(args.predictor)
    _, _, latencies = dataset_arrays(read_rows(args.latency_dataset))

    def fitness(arch):
        return valid_loss(supernet, arch, valid, 0.1, supernet.cfg.pad)

    def gold(arch):
        model = search_io.standalone(arch, space, summary["vocab_size"], lat_device)
        return timer.measure(model)["latency_ms"]

    ctx = SearchContext(space, memoised(space, fitness),
                        lambda a: float(predictor.predict(space.features(a)[None])[0]),
                        gold, latencies, search["latency"])
    return ctx, supernet.cfg.ffn


def run(args: argparse.Namespace) -> int:
    import torch

    from moebench.supernet.search_run import compare_with_random, search_limit

    torch.set_num_threads(max(1, args.threads))
    search = check_search(search_io.json_arg(args.search, "--search"))
    ctx, variant = build_context(args, search)
    if variant not in search["variants"]:
        raise RunError(f"{args.run}: variant {variant!r} is not in supernet.search.variants")
    base = {"study": "supernet", "variant": variant, "run": args.run,
            "supernet": search_io.file_digest(search_io.supernet_path(args)),
            "predictor": search_io.file_digest(args.predictor),
            "fitness": search["fitness"]}
    if args.only_compare and not args.compare_out:
        raise UsageError("--only-compare needs --compare-out")
    if not args.only_compare and not args.out_dir:
        raise UsageError("--out-dir is needed (or --only-compare)")
    for limit in ([] if args.only_compare else search["limits"]):
        result = search_limit(ctx, limit, search["evolution"], search["seed"],
                              search["gold_check"], Path(args.state_dir), base)
        atomic_write_json(Path(args.out_dir) / f"{limit.name}.json", result)
        best = result["candidates"][0]
        log.info("%s %s: best valid loss %.4f, predicted %.3f ms (limit %.3f ms), %d evaluations",
                 args.run, limit.name, best["valid_loss"], best["predicted_ms"],
                 result["limit_ms"], result["evaluations"])
    if args.compare_out:
        cmp = search["compare"]
        if cmp is None:
            raise RunError("--compare-out given but supernet.search.compare is not set")
        limit = next(lim for lim in search["limits"] if lim.name == cmp["limit"])
        out = compare_with_random(ctx, limit, search["evolution"], cmp["seeds"])
        atomic_write_json(args.compare_out, {"variant": variant, "run": args.run, **out})
        log.info("evolution <= random in %d of %d seeds", out["wins"], out["of"])
    log.info("%d distinct subnets scored", len(getattr(ctx.fitness, "memo", {})))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
