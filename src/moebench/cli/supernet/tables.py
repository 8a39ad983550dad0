"""The supernet table (HAT vs MoS layer-wise vs MoS neuron-wise on the same subnets), the
headline numbers and the figure.

    python -m moebench.cli.supernet.tables --evals results/supernet/eval/*.json \\
        --out-dir results/supernet/tables --figure-prefix results/figures/supernet_
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser

PROG = "moebench.cli.supernet.tables"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--evals", nargs="+", required=True, help="evaluation JSONs (cli.supernet.bleu)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--figure-prefix", help="e.g. results/figures/supernet_")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from moebench.supernet.tables import load_evals, write_figure, write_tables

    ev = load_evals(args.evals)
    write_tables(ev, args.out_dir)
    if args.figure_prefix:
        write_figure(ev, args.figure_prefix)
    with open(f"{args.out_dir}/supernet.txt", encoding="utf-8") as fh:
        print(fh.read(), end="")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
