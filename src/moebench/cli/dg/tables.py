"""Model selection and result tables from collected records.

    python -m moebench.cli.dg.tables --records results/records.jsonl --out results/tables \
        [--algorithm-order erm gmoe ...]
    python -m moebench.cli.dg.tables --input_dir DOMAINBED_SWEEP --out tables/

Writes, atomically, under ``--out``: ``results.txt`` and ``results.tex`` (DomainBed layout),
``<method>_<dataset>.csv/.md`` and ``<method>_averages.csv/.md`` for the methods ``iid``,
``lodo`` and ``oracle``, ``<method>_selection.csv``, ``routing.csv/.md`` and ``summary.json``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from moebench.cli.common import add_records_source, run_cli

logger = logging.getLogger("moebench.cli.dg.tables")
PROG = "moebench.cli.dg.tables"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    from moebench.dg.reporting.tables import DEFAULT_ALGORITHM_ORDER

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_records_source(p)
    p.add_argument("--out", required=True, help="output directory for the tables")
    p.add_argument("--algorithm-order", nargs="+", default=list(DEFAULT_ALGORITHM_ORDER),
                   metavar="NAME", help="preferred row order; other algorithms follow sorted")
    p.add_argument("--no-routing", action="store_true", help="skip routing.csv/.md")
    p.add_argument("--quiet", action="store_true", help="do not print results.txt to stdout")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def tables(args: argparse.Namespace) -> int:
    """Load records, select models, write every table file."""

    from moebench.dg.reporting import render
    from moebench.dg.reporting.records import load_records_input
    from moebench.dg.reporting.tables import build_report
    from moebench.dg.reporting.write import write_report

    records = load_records_input(args.records, args.input_dir)
    report = build_report(records, algorithm_order=args.algorithm_order)
    written = write_report(report, args.out, routing=not args.no_routing)
    logger.info("wrote %d files under %s", len(written), args.out)
    if not args.quiet:
        sys.stdout.write(render.render_text(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error on bad input)."""
    return run_cli(argv, parse, tables, PROG)


if __name__ == "__main__":
    sys.exit(main())
