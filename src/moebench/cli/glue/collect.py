"""Collect the GLUE-study runs of a plan: one summary per run (``summary.json``) and every
record (``records.jsonl``)::

    python -m moebench.cli.glue.collect --plan results/glue/plan.json --out results/glue
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from moebench.cli.glue import Parser, run
from moebench.errors import RunError


def parser() -> Parser:
    p = Parser(prog="moebench.cli.glue.collect", description=__doc__.split("::")[0])
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True, help="folder for summary.json and records.jsonl")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def body(args: argparse.Namespace) -> int:
    from moebench.glue.collect import all_records, collect
    from moebench.io import atomic_write_json, atomic_write_jsonl

    try:
        plan = json.loads(Path(args.plan).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read the plan {args.plan}: {exc}") from None
    out = Path(args.out)
    atomic_write_json(out / "summary.json", collect(plan))
    atomic_write_jsonl(out / "records.jsonl", list(all_records(plan)))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv, parser(), body)


if __name__ == "__main__":
    raise SystemExit(main())
