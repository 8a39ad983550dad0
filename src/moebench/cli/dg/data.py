"""Build a dataset file: ``python -m moebench.cli.dg.data --dataset NAME --out PATH [options]``.

Options left out keep the dataset's defaults; ``--param KEY=VALUE`` (JSON value) passes any
other build parameter. Bad input gives one ``error:`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

from moebench.cli.common import ArgumentError, OneLineParser

log = logging.getLogger("moebench.cli.dg.data")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m moebench.cli.dg.data", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="DATASETS name, e.g. rotated_digits")
    p.add_argument("--out", required=True, help="output .npz path (written atomically)")
    p.add_argument("--seed", type=int, default=None, help="shuffle/colour seed")
    p.add_argument("--image-size", type=int, default=None, help="side length S of [C,S,S]")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--label-noise", type=float, default=None, help="label noise (coloured sets)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other build parameter; VALUE parsed as JSON when possible")
    return p


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """Build parameters given on the command line (left-out options are not passed)."""
    params: dict[str, Any] = {
        key: value for key, value in (("seed", args.seed), ("image_size", args.image_size),
                                      ("max_images", args.max_images),
                                      ("label_noise", args.label_noise)) if value is not None}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ArgumentError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.replace("-", "_")] = raw
    return params


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input or unreadable/unwritable file)."""
    from moebench.dg.datasets import build_dataset
    from moebench.errors import MoebenchError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = _parser().parse_args(argv)
        build_dataset(args.dataset, args.out, **_params(args))
    except (MoebenchError, OSError) as exc:  # OSError: an unreadable or unwritable path
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    log.info("built %s -> %s", args.dataset, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
