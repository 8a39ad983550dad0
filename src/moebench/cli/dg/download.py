"""Fetch a DomainBed dataset into ``<data-dir>/<DomainBed folder>``.

``python -m moebench.cli.dg.download --dataset NAME --data-dir DIR [--mirror URL]
[--existing-dir DIR] [--cache-dir DIR] [--keep-archives] [--retries N] [--progress/--no-progress]``

NAME: pacs, vlcs, office_home, terra_incognita, domain_net, mnist. Writes ``DIR/PACS``,
``DIR/VLCS``, ``DIR/office_home``, ``DIR/terra_incognita``, ``DIR/domain_net`` or
``DIR/MNIST`` only once complete; ``--existing-dir`` validates a copy you already have and
links to it. A failure prints ONE ``error: ...`` line on stderr and exits 1 (2 for bad
arguments); an interrupted download resumes from its ``.part`` file in the cache folder.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from moebench.cli.common import ArgumentError, OneLineParser
from moebench.errors import MoebenchError

log = logging.getLogger("moebench.cli.dg.download")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m moebench.cli.dg.download", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="pacs, vlcs, office_home, "
                   "terra_incognita, domain_net or mnist")
    p.add_argument("--data-dir", required=True, type=Path, help="parent of the dataset folder")
    p.add_argument("--mirror", default=None, help="URL root replacing the original hosts")
    p.add_argument("--existing-dir", type=Path, default=None,
                   help="use this existing copy (validated, then linked) instead of downloading")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="archives and resumable .part files (default DATA_DIR/.downloads)")
    p.add_argument("--keep-archives", action="store_true", help="keep archives after extraction")
    p.add_argument("--retries", type=int, default=2, help="automatic resumes per file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    return p


def run(args: argparse.Namespace) -> Path:
    """Build the requested dataset; returns its folder."""
    from moebench.dg.datasets.domainbed import DOWNLOADABLE

    if args.dataset not in DOWNLOADABLE:
        raise ArgumentError(f"unknown dataset {args.dataset!r}; valid: "
                             f"{', '.join(sorted(DOWNLOADABLE))}")
    spec = DOWNLOADABLE[args.dataset]
    out = Path(args.data_dir) / spec.DIR_NAME
    spec.build(out, existing_dir=args.existing_dir, mirror=args.mirror,
               cache_dir=args.cache_dir, keep_archives=args.keep_archives,
               retries=args.retries, progress=args.progress)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 ok, 1 download/extract/validation failure, 2 bad arguments."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = run(_parser().parse_args(argv))
    except ArgumentError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (MoebenchError, OSError) as exc:  # DownloadError is a MoebenchError
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    log.info("dataset ready at %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
