"""Gold latency on this machine: the latency dataset, the gold check of the search results,
and the final retrained models.

    python -m moebench.cli.supernet.latency dataset --space JSON --latency JSON \\
        --data-dir data/supernet/ding --spm-model data/supernet/ding/spm.model \\
        --work results/supernet/latency/dataset.partial.csv \\
        --out results/supernet/latency/dataset.csv --summary results/supernet/latency/summary.json
    python -m moebench.cli.supernet.latency check --summary .../summary.json --space JSON \\
        --found results/supernet/search_raw/hat-s1/q25.json ... --out-root results/supernet/search
    python -m moebench.cli.supernet.latency final --summary .../summary.json \\
        --retrain results/supernet/retrain/hat-s1/inherited.json ... --out .../final.json

``dataset``: rows go to ``--work`` as they are measured (a killed job keeps them; the next run
continues); the finished CSV is copied to ``--out``; ``--summary`` gets the machine, the
protocol, the latency distribution and the run-to-run spread of the re-measured rows.
``check``: for each search result, its candidates best-first until one is within the limit
by gold latency, written to ``<out-root>/<run>/<limit>.json``. ``final``: the gold latency of
every retrained model. ``check`` and ``final`` refuse another machine than the dataset's.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from moebench.cli.common import OneLineParser, run_parser
from moebench.io import atomic_write, atomic_write_json
from moebench.device import resolve_device
from moebench.supernet import search_io
from moebench.supernet.search_params import check_latency, resolve_measure
from moebench.supernet.space import Space

PROG = "moebench.cli.supernet.latency"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    d = sub.add_parser("dataset", help="measure the latency dataset")
    d.add_argument("--space", required=True, help="supernet.space as JSON (or @FILE)")
    d.add_argument("--latency", required=True, help="supernet.latency as JSON (or @FILE)")
    search_io.add_corpus_args(d)
    d.add_argument("--vocab-size", type=int, help="instead of the corpus' vocabulary")
    d.add_argument("--work", required=True, help="CSV the rows are appended to (kept)")
    d.add_argument("--out", required=True, help="the finished dataset CSV")
    d.add_argument("--summary", required=True, help="JSON summary")
    c = sub.add_parser("check", help="gold check of search results")
    c.add_argument("--found", nargs="+", required=True, help="search result JSON files")
    c.add_argument("--space", required=True, help="supernet.space as JSON (or @FILE)")
    c.add_argument("--out-root", required=True, help="writes <out-root>/<run>/<limit>.json")
    f = sub.add_parser("final", help="gold latency of retrained models")
    f.add_argument("--retrain", nargs="+", required=True, help="retrain command line outputs")
    f.add_argument("--out", required=True)
    for q in (c, f):
        q.add_argument("--summary", required=True, help="the latency dataset's summary.json")
        q.add_argument("--latency-device", default="cpu")
    for q in (d, c, f):
        q.add_argument("-v", "--verbose", action="store_true")
    return p


def _dataset_setup(args: argparse.Namespace):
    space = Space.from_params(search_io.json_arg(args.space, "--space"))
    lat = check_latency(search_io.json_arg(args.latency, "--latency"))
    needs_corpus = args.vocab_size is None or "mean" in (lat["measure"].get("src_len"),
                                                         lat["measure"].get("decode_steps"))
    means, vocab = (None, None), args.vocab_size
    if needs_corpus:
        corpus = search_io.load_corpus_args(args)
        means, vocab = search_io.mean_lengths(corpus), vocab or len(corpus.vocab)
    return space, lat, resolve_measure(lat["measure"], *means), vocab, means


def dataset(args: argparse.Namespace) -> int:
    from moebench.supernet.latency import machine_info, measure_latency
    from moebench.supernet.latency_dataset import (build_latency_dataset, calibration_ms,
                                                   dataset_archs, dataset_arrays,
                                                   measurement_spread)

    space, lat, spec, vocab, means = _dataset_setup(args)
    device = resolve_device(lat["device"])
    ds = lat["dataset"]
    archs = dataset_archs(space, ds["size"], ds["seed"])
    log.info("measuring %d architectures (+%d repeats) on %s: src_len %d, %d decoder steps, "
             "beam %d, %d warm-up + %d timed runs, %d thread(s)", len(archs), ds["repeats"],
             device, spec.src_len, spec.decode_steps, spec.beam, spec.warmup, spec.runs,
             spec.threads)
    machine = machine_info(device, spec.threads)
    ref_arch = None if spec.reference is None else search_io.reference_arch(space, spec.reference)
    ref = None if ref_arch is None else search_io.standalone(ref_arch, space, vocab, device)
    rows = build_latency_dataset(
        args.work, space, archs, ds["repeats"],
        lambda a: measure_latency(search_io.standalone(a, space, vocab, device), spec, ref),
        machine, reference=ref is not None)
    _, _, latency = dataset_arrays(rows)
    spread = measurement_spread(rows)
    reference = None if ref_arch is None else {
        "subnet": spec.reference, "arch": ref_arch, "calibration_ms": calibration_ms(rows)}
    atomic_write(args.out, lambda fh: fh.write(Path(args.work).read_bytes()))
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    atomic_write_json(args.summary, {
        **machine, "protocol": spec.__dict__, "vocab_size": vocab, "qkv_dim": space.qkv_dim,
        "mean_src_len": means[0], "mean_tgt_len": means[1], "rows": len(latency),
        "repeats": spread["pairs"], "spread": spread, "reference": reference,
        "latency_quantiles_ms": {f"{q:g}": float(np.quantile(latency, q)) for q in qs},
        "latency_mean_ms": float(latency.mean())})
    log.info("latency %.2f-%.2f ms (median %.2f); run-to-run spread MAPD %s %% over %d pairs%s",
             latency.min(), latency.max(), float(np.median(latency)),
             "n/a" if spread["mapd"] is None else f"{spread['mapd']:.2f}", spread["pairs"],
             "" if "mapd_uncorrected" not in spread else
             f" ({spread['mapd_uncorrected']:.2f} % without the drift correction)")
    return 0


def _gold_setup(args: argparse.Namespace):
    """(summary, spec, device) of the dataset's machine; another machine is refused."""
    from moebench.supernet.latency import machine_info
    from moebench.supernet.search_run import check_machine

    summary = json.loads(Path(args.summary).read_text(encoding="utf-8"))
    device = resolve_device(args.latency_device)
    timer = search_io.GoldLatency.from_summary(summary, device)
    check_machine(summary, machine_info(device, timer.spec.threads), args.summary)
    return summary, timer, device


def check(args: argparse.Namespace) -> int:
    from moebench.supernet.search_run import gold_select

    summary, timer, device = _gold_setup(args)
    space = Space.from_params(search_io.json_arg(args.space, "--space"))

    def gold(arch) -> float:
        model = search_io.standalone(arch, space, summary["vocab_size"], device)
        return timer.measure(model)["latency_ms"]

    for path in args.found:
        found = search_io.json_arg(f"@{path}", "--found")
        chosen = gold_select(found, gold, found.get("latency", "predictor"))
        atomic_write_json(Path(args.out_root) / found["run"] / f"{found['limit']}.json", chosen)
        log.info("%s %s: candidate %d, gold %.3f ms, limit %.3f ms%s", found["run"],
                 found["limit"], chosen["gold_rank"], chosen["gold_ms"], found["limit_ms"],
                 "" if chosen["within_limit"] else " (OVER THE LIMIT)")
    return 0


def final(args: argparse.Namespace) -> int:
    from moebench.supernet.retrain import load_model

    _, timer, device = _gold_setup(args)
    out: dict = {}
    for path in args.retrain:
        res = search_io.json_arg(f"@{path}", "--retrain")
        for limit, r in res["limits"].items():
            m = timer.measure(load_model(Path(r["model"]), device))
            out.setdefault(res["run"], {}).setdefault(res["mode"], {})[limit] = {
                k: m[k] for k in ("latency_ms", "raw_ms", "encoder_ms", "decoder_ms", "device",
                                  "threads", "torch") if k in m} | {
                "limit_ms": r["limit_ms"], "within_limit": bool(m["latency_ms"] <= r["limit_ms"])}
    atomic_write_json(args.out, out)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    commands = {"dataset": dataset, "check": check, "final": final}
    return run_parser(argv, parser(), lambda a: commands[a.command](a))


if __name__ == "__main__":
    sys.exit(main())
