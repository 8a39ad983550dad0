"""Gather every study's tables into results/tables/ and write the compact DVC metrics.

    python -m moebench.cli.assemble --sources results/dg/tables results/dg/paper \
        --out results/tables

Headline files among the sources (``headline.json``, ``*_headline.json``) become the compact
DVC metrics ``results/tables/metrics/*.json`` instead of being copied.
"""
from __future__ import annotations

import argparse
import logging
import sys

from moebench.cli.common import run_cli

PROG = "moebench.cli.assemble"
log = logging.getLogger(PROG)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--sources", nargs="+", required=True, help="table folders or files")
    p.add_argument("--headlines", nargs="*", default=[], help="more headline JSON files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def body(args: argparse.Namespace) -> int:
    from moebench.assemble import assemble

    out = assemble(args.sources, args.out, args.headlines)
    log.info("wrote %s", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(argv, parse, body, PROG)


if __name__ == "__main__":
    sys.exit(main())
