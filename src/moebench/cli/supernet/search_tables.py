"""The search tables, headline numbers and figures of the supernet study.

    python -m moebench.cli.supernet.search_tables --runs hat-s1,mos_layer-e2-s1 \\
        --limits q25,q50,q75 --modes inherited,scratch --search-root results/supernet/search \\
        --retrain-root results/supernet/retrain --latency-dir results/supernet/latency \\
        --compare results/supernet/search/compare.json --published JSON --task ding.en-de \\
        --tables-dir results/supernet/search_tables --figures-dir results/figures

Writes ``search.{txt,md,csv,tex}``, ``search_vs_paper.{csv,md}``, ``search_predictor.*``,
``search_compare.*`` and ``search_headline.json`` under ``--tables-dir``, and
``supernet_frontier.{png,pdf,csv}`` / ``supernet_predictor.{png,pdf,csv}`` under
``--figures-dir``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser
from moebench.errors import RunError
from moebench.io import atomic_write_json
from moebench.supernet import search_io

PROG = "moebench.cli.supernet.search_tables"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="comma-separated supernet run names")
    p.add_argument("--limits", required=True, help="comma-separated limit names")
    p.add_argument("--modes", default="", help="comma-separated retraining modes")
    p.add_argument("--search-root", required=True)
    p.add_argument("--retrain-root", required=True)
    p.add_argument("--latency-dir", required=True,
                   help="holds summary.json, predictor.json, predictions.csv (and final.json "
                        "with --modes)")
    p.add_argument("--compare", help="evolution vs random JSON")
    p.add_argument("--published", default="{}", help="supernet.published as JSON (or @FILE)")
    p.add_argument("--task", default="", help="our corpus' task name (e.g. wmt14.en-de)")
    p.add_argument("--headline-limit", help="limit whose BLEU goes into the headline")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--figures-dir", required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _read(path: Path):
    from moebench.supernet.search_tables import read_json

    if not path.exists():
        raise RunError(f"{path}: missing (run the search rules first)")
    return read_json(path)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from moebench.supernet import search_figures as figs
    from moebench.supernet import search_tables as st

    runs, limits, modes = _names(args.runs), _names(args.limits), _names(args.modes)
    search = {r: {lim: _read(Path(args.search_root) / r / f"{lim}.json") for lim in limits}
              for r in runs}
    retrain = {r: {m: _read(Path(args.retrain_root) / r / f"{m}.json") for m in modes}
               for r in runs}
    lat = Path(args.latency_dir)
    summary, report = _read(lat / "summary.json"), _read(lat / "predictor.json")
    final = _read(lat / "final.json") if modes else {}
    rows = st.search_rows(search, retrain, final)
    for r in rows:
        r["hardware"] = summary["device"]
    out = Path(args.tables_dir)
    st.write_table(out, "search", rows, st.SEARCH_COLUMNS)
    published = search_io.json_arg(args.published, "--published")
    st.write_table(out, "search_vs_paper", st.paper_rows(published, rows, args.task),
                   st.PAPER_COLUMNS, kinds=("csv", "md"))
    st.write_table(out, "search_predictor", st.predictor_rows(report), st.PREDICTOR_COLUMNS)
    compare = _read(Path(args.compare)) if args.compare else None
    if compare:
        st.write_table(out, "search_compare", compare["seeds"], st.COMPARE_COLUMNS)
    limit = args.headline_limit or limits[len(limits) // 2]
    atomic_write_json(out / "search_headline.json", st.headline(rows, limit))
    fig_dir = Path(args.figures_dir)
    figs.frontier_figure(rows, fig_dir / "supernet_frontier",
                         f"searched subnets on {summary['device']}")
    figs.predictor_figure(pd.read_csv(lat / "predictions.csv"), fig_dir / "supernet_predictor",
                          f"latency predictor ({summary['device']})")
    log.info("%d searched subnets, %d within their limit by gold latency", len(rows),
             sum(r["within_limit"] for r in rows))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
