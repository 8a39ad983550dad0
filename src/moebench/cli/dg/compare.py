"""Ours vs paper: published numbers next to our results, with the difference.

    python -m moebench.cli.dg.compare --records results/records.jsonl \
        --paper params/dg/paper_numbers.yaml --out results/dg/paper \
        [--reduced-label "PACS only, 1000 steps"] [--selections iid lodo oracle] [--only-ours]

Writes, atomically, ``ours_vs_paper.csv`` (every field, full sources), ``ours_vs_paper.md``
and ``ours_vs_paper.tex`` (a booktabs tabular fragment) under ``--out``. Every published
number is listed (ours blank when we have no such run); datasets we ran without published
numbers get ``n/a`` rows. Our number for a paper row uses only the records whose hparams
match the row's ``match`` filter (e.g. the backbone). Reduced runs are marked: records with
``reduced: true`` (or a sweep name containing ``reduced``), or all rows with
``--reduced-label``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from moebench.cli.common import add_records_source, run_cli

logger = logging.getLogger("moebench.cli.dg.compare")
PROG = "moebench.cli.dg.compare"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_records_source(p)
    p.add_argument("--paper", required=True, metavar="FILE",
                   help="published numbers (params/dg/paper_numbers.yaml)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--reduced-label", metavar="TEXT",
                   help="mark every number of ours as a reduced run with this label")
    p.add_argument("--selections", nargs="+", default=["iid", "lodo", "oracle"],
                   choices=["iid", "lodo", "oracle"], help="selection methods to list")
    p.add_argument("--only-ours", action="store_true",
                   help="list only rows where we have a number")
    p.add_argument("--quiet", action="store_true", help="do not print the markdown table")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Load records and paper numbers, compare, write the three files."""
    from moebench.dg.reporting.paper import compare, load_paper_numbers
    from moebench.dg.reporting.paper_render import comparison_markdown, write_comparison
    from moebench.dg.reporting.records import load_records_input

    numbers, names = load_paper_numbers(args.paper)
    records = load_records_input(args.records, args.input_dir)
    rows = compare(records, numbers, dataset_names=names, reduced_label=args.reduced_label,
                   selections=args.selections, only_ours=args.only_ours)
    written = write_comparison(rows, args.out)
    n_ours = sum(r.ours_mean is not None and r.paper is not None for r in rows)
    logger.info("%d rows (%d with ours and paper) written to %s", len(rows), n_ours,
                ", ".join(str(p) for p in written))
    if not args.quiet:
        sys.stdout.write(comparison_markdown(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error on bad input)."""
    return run_cli(argv, parse, run, PROG)


if __name__ == "__main__":
    sys.exit(main())
