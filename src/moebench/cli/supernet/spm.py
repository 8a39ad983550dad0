"""Train the joint SentencePiece model of the Ding corpus (source and target training text).

    python -m moebench.cli.supernet.spm --data-dir data/supernet/ding \\
        --vocab-size 2000 --out data/supernet/ding/spm
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from moebench.cli.common import OneLineParser, run_parser

PROG = "moebench.cli.supernet.spm"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with train.en / train.de")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-type", default="unigram", choices=("unigram", "bpe"))
    p.add_argument("--out", required=True, help="model prefix (writes PREFIX.model / .vocab)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from moebench.supernet.corpus import read_split
    from moebench.supernet.spm import train_spm

    en, de = read_split(args.data_dir, "train")
    train_spm(en + de, args.out, args.vocab_size, args.model_type)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
