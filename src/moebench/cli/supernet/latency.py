"""Measure the latency dataset: random architectures of the space, timed on this machine.

    python -m moebench.cli.supernet.latency --space JSON --latency JSON \\
        --data-dir data/supernet/ding --spm-model data/supernet/spm.model \\
        --work results/supernet/latency/dataset.partial.csv \\
        --out results/supernet/latency/dataset.csv --summary results/supernet/latency/summary.json

Rows go to ``--work`` as they are measured (a killed job keeps them; the next run continues);
the finished CSV is copied to ``--out`` and ``--summary`` gets the machine, the protocol, the
latency distribution and the run-to-run spread of the re-measured rows.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from moebench.cli.common import OneLineParser
from moebench.io import atomic_write, atomic_write_json
from moebench.supernet import search_io
from moebench.supernet.search_params import check_latency, resolve_measure
from moebench.supernet.space import Space

PROG = "moebench.cli.supernet.latency"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, help="supernet.space as JSON (or @FILE)")
    p.add_argument("--latency", required=True, help="supernet.latency as JSON (or @FILE)")
    search_io.add_corpus_args(p)
    p.add_argument("--vocab-size", type=int, help="instead of the corpus' vocabulary")
    p.add_argument("--work", required=True, help="CSV the rows are appended to (kept)")
    p.add_argument("--out", required=True, help="the finished dataset CSV")
    p.add_argument("--summary", required=True, help="JSON summary")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _setup(args: argparse.Namespace):
    space = Space.from_params(search_io.json_arg(args.space, "--space"))
    lat = check_latency(search_io.json_arg(args.latency, "--latency"))
    needs_corpus = args.vocab_size is None or "mean" in (lat["measure"].get("src_len"),
                                                         lat["measure"].get("decode_steps"))
    means, vocab = (None, None), args.vocab_size
    if needs_corpus:
        corpus = search_io.load_corpus_args(args)
        means, vocab = search_io.mean_lengths(corpus), vocab or len(corpus.vocab)
    return space, lat, resolve_measure(lat["measure"], *means), vocab, means


def run(args: argparse.Namespace) -> int:
    from moebench.supernet.latency import machine_info, measure_latency
    from moebench.supernet.latency_dataset import (build_latency_dataset, dataset_archs,
                                                   dataset_arrays, measurement_spread)

    space, lat, spec, vocab, means = _setup(args)
    device = search_io.pick_device(lat["device"])
    ds = lat["dataset"]
    archs = dataset_archs(space, ds["size"], ds["seed"])
    log.info("measuring %d architectures (+%d repeats) on %s: src_len %d, %d decoder steps, "
             "beam %d, %d warm-up + %d timed runs, %d thread(s)", len(archs), ds["repeats"],
             device, spec.src_len, spec.decode_steps, spec.beam, spec.warmup, spec.runs,
             spec.threads)
    machine = machine_info(device, spec.threads)
    rows = build_latency_dataset(
        args.work, space, archs, ds["repeats"],
        lambda a: measure_latency(search_io.standalone(a, space, vocab, device), spec), machine)
    _, _, latency = dataset_arrays(rows)
    spread = measurement_spread(rows)
    atomic_write(args.out, lambda fh: fh.write(Path(args.work).read_bytes()))
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    atomic_write_json(args.summary, {
        **machine, "protocol": spec.__dict__, "vocab_size": vocab,
        "mean_src_len": means[0], "mean_tgt_len": means[1], "rows": len(latency),
        "repeats": spread["pairs"], "spread": spread,
        "latency_quantiles_ms": {f"{q:g}": float(np.quantile(latency, q)) for q in qs},
        "latency_mean_ms": float(latency.mean())})
    log.info("latency %.2f-%.2f ms (median %.2f); run-to-run spread MAPD %s %% over %d pairs",
             latency.min(), latency.max(), float(np.median(latency)),
             "n/a" if spread["mapd"] is None else f"{spread['mapd']:.2f}", spread["pairs"])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return search_io.run_cli(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
