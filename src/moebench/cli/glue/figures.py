"""The GLUE-study figure of K and mean k over training steps::

    python -m moebench.cli.glue.figures --summary results/glue/summary.json \
        --out results/figures/glue_experts
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from moebench.cli.glue import Parser, run
from moebench.cli.glue.tables import read_summary


def parser() -> Parser:
    p = Parser(prog="moebench.cli.glue.figures", description=__doc__.split("::")[0])
    p.add_argument("--summary", required=True)
    p.add_argument("--out", required=True, help="file stem: writes .png, .pdf and .csv")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def body(args: argparse.Namespace) -> int:
    from moebench.glue.figures import write_figure

    write_figure(read_summary(args.summary), args.out)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv, parser(), body)


if __name__ == "__main__":
    raise SystemExit(main())
