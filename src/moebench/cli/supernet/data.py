"""Build the supernet study's corpus: the Ding en-de sentence pairs (default) or HAT's
preprocessed WMT data.

    python -m moebench.cli.supernet.data --corpus ding --out data/supernet/ding \\
        --ding-path /usr/share/trans/de-en --ding-url URL --valid-size 500 --test-size 500
    python -m moebench.cli.supernet.data --corpus fairseq --out data/supernet/wmt16_en_de \\
        --url URL --sha256 HEX --src-lang en --tgt-lang de
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser
from moebench.errors import UsageError

PROG = "moebench.cli.supernet.data"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--corpus", choices=("ding", "fairseq"), default="ding")
    p.add_argument("--out", required=True, help="folder written (atomically per file)")
    p.add_argument("--ding-path", default="/usr/share/trans/de-en",
                   help="the Ding dictionary file (Debian's trans-de-en)")
    p.add_argument("--ding-url", help="download URL when --ding-path is absent")
    p.add_argument("--ding-sha256", help="sha256 of the download")
    p.add_argument("--valid-size", type=int, default=500)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--url", help="HAT's preprocessed .tgz (fairseq)")
    p.add_argument("--sha256", help="its sha256")
    p.add_argument("--src-lang", default="en")
    p.add_argument("--tgt-lang", default="de")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    if args.corpus == "ding":
        from moebench.supernet.corpus import build_ding

        manifest = build_ding(args.out, args.ding_path, args.ding_url, args.ding_sha256 or None,
                              args.valid_size, args.test_size)
        print(json.dumps(manifest["sizes"]))
        return 0
    from moebench.supernet.wmt import fetch_preprocessed

    if not args.url:
        raise UsageError("--url is needed for --corpus fairseq (supernet.data.fairseq.url)")
    progress = None if args.progress == "auto" else args.progress == "on"
    fetch_preprocessed(args.url, args.sha256 or None, args.out, args.src_lang, args.tgt_lang,
                       progress)  # writes <out>/corpus.json with the archive's sha256
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
