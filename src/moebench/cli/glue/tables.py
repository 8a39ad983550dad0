"""The GLUE-study tables and headline from ``summary.json``::

    python -m moebench.cli.glue.tables --summary results/glue/summary.json \
        --out results/glue/tables --report '{"method_order": ["dense", "gmoe", "mass"]}'
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from moebench.cli.glue import Parser, run
from moebench.errors import RunError, UsageError


def parser() -> Parser:
    p = Parser(prog="moebench.cli.glue.tables", description=__doc__.split("::")[0])
    p.add_argument("--summary", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--report", default="{}", help="glue.report as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def read_summary(path: str) -> list:
    try:
        summaries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from None
    if not summaries:
        raise RunError(f"{path}: no run to tabulate")
    return summaries


def body(args: argparse.Namespace) -> int:
    from moebench.glue.tables import write_tables

    try:
        report = json.loads(args.report)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--report: not JSON ({exc})") from None
    write_tables(read_summary(args.summary), args.out, report)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv, parser(), body)


if __name__ == "__main__":
    raise SystemExit(main())
