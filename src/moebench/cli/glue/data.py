"""Prepare one GLUE-study task folder (real GLUE from the hub or local files, or an embedded
task from the Debian corpora)::

    python -m moebench.cli.glue.data --task cola --spec '{"source": "hub"}' --out data/glue/cola
"""
from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from moebench.cli.glue import Parser, run
from moebench.errors import UsageError


def parser() -> Parser:
    p = Parser(prog="moebench.cli.glue.data", description=__doc__.split("::")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--spec", required=True, help="the glue.data.<task> entry as JSON")
    p.add_argument("--corpora", default="{}", help="glue.corpora as JSON")
    p.add_argument("--out", required=True, help="the task folder to write")
    p.add_argument("--cache-dir", default="data/glue/.corpora",
                   help="where downloaded corpora are kept")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: must be a JSON object")
    return value


def body(args: argparse.Namespace) -> int:
    from moebench.glue.data import prepare_task

    progress = {"auto": None, "on": True, "off": False}[args.progress]
    prepare_task(args.task, _json(args.spec, "--spec"), args.out,
                 corpora=_json(args.corpora, "--corpora"), cache_dir=args.cache_dir,
                 progress=progress)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv, parser(), body)


if __name__ == "__main__":
    raise SystemExit(main())
