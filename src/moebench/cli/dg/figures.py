"""Figures from collected records (PNG + PDF + the CSV each is drawn from).

    python -m moebench.cli.dg.figures --records results/records.jsonl --out results/figures \
        [--selection iid|lodo|oracle] [--kinds accuracy bubble curves expert_load] \
        [--algorithm-order erm gmoe ...]
    python -m moebench.cli.dg.figures --model RUN_DIR/model.pt --data data/rotated_digits.npz \
        --out results/figures [--n-images 4] [--env E] [--stem attention_rotated_digits_gmoe]

Record figures (``--records`` or ``--input_dir``), under ``--out``:
``accuracy_<selection>_<dataset>``, ``bubble_<selection>``, ``curves_<dataset>``,
``expert_load_<selection>_<dataset>``, each ``.png``, ``.pdf`` and ``.csv``. With
``--model`` (a ``model.pt`` written by ``moebench.dg.reporting.attention.save_model_file``) and
``--data`` it draws the last block's class-token attention maps per head on sample images of
the run's test domain: ``attention_<dataset>_<algorithm>.png/.pdf/.csv``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from moebench.errors import UsageError
from moebench.cli.common import add_records_source, run_cli

logger = logging.getLogger("moebench.cli.dg.figures")
PROG = "moebench.cli.dg.figures"
KINDS = ("accuracy", "bubble", "curves", "expert_load")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    from moebench.dg.reporting.tables import DEFAULT_ALGORITHM_ORDER

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    src = add_records_source(p)
    src.add_argument("--model", metavar="FILE", help="model.pt of a trained run: attention maps")
    p.add_argument("--out", required=True, help="output directory for the figures")
    p.add_argument("--selection", default="iid", choices=["iid", "lodo", "oracle"],
                   help="model selection behind the accuracies (default: iid)")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, metavar="KIND",
                   help=f"record figures to draw (default: all of {', '.join(KINDS)})")
    p.add_argument("--algorithm-order", nargs="+", default=list(DEFAULT_ALGORITHM_ORDER),
                   metavar="NAME", help="preferred algorithm order (colours, legends)")
    p.add_argument("--data", metavar="FILE", help="with --model: the run's dataset file")
    p.add_argument("--n-images", type=int, default=4, help="with --model: images to show")
    p.add_argument("--env", type=int, default=None,
                   help="with --model: environment to sample (default: the run's test env)")
    p.add_argument("--seed", type=int, default=0, help="with --model: image sampling seed")
    p.add_argument("--stem", help="with --model: output file name without extension")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _records(args: argparse.Namespace) -> list:
    from moebench.dg.reporting.records import load_records_input

    records = load_records_input(args.records, args.input_dir)
    return records


def figures(args: argparse.Namespace) -> int:
    """Draw the requested figures; errors are raised as ValueError/FileNotFoundError."""
    if args.model:
        from moebench.dg.reporting.attention import write_attention

        if not args.data:
            raise UsageError("--model needs --data (the run's dataset file)")
        written = write_attention(args.model, args.data, args.out, n_images=args.n_images,
                                  env=args.env, seed=args.seed, stem=args.stem)
    else:
        from moebench.dg.reporting.figures import write_figures

        written = write_figures(_records(args), args.out, selection=args.selection,
                                kinds=args.kinds, algorithm_order=args.algorithm_order)
    logger.info("wrote %d files under %s", len(written), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error on bad input)."""
    return run_cli(argv, parse, figures, PROG)


if __name__ == "__main__":
    sys.exit(main())
