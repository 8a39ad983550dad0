"""Shared CLI plumbing: logging set-up, thread count, and one-line errors."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, NoReturn, Sequence

from moebench.errors import UsageError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(body: Callable[[], int], prog: str) -> int:
    """Run a CLI body; a user-facing error (:class:`~moebench.errors.MoebenchError`) becomes
    one line on stderr and exit code 2; every other exception is a bug and keeps its
    traceback."""
    from moebench.errors import MoebenchError

    try:
        return body()
    except MoebenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def run_cli(argv: Sequence[str] | None, parse: Callable[[Any], argparse.Namespace],
            body: Callable[[argparse.Namespace], int], prog: str) -> int:
    """The usual ``main``: parse, set up logging (``-v``), run ``body(args)`` via run_main."""
    args = parse(argv)
    setup_logging(args.verbose)
    return run_main(lambda: body(args), prog)


class ArgumentError(UsageError):
    """A bad command line, reported as one line instead of argparse's usage + exit."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`ArgumentError` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message)


def add_records_source(parser: argparse.ArgumentParser) -> Any:
    """``--records FILE | --input_dir DIR`` (required, exclusive); returns the group so a CLI
    can add more alternatives. Read them with ``moebench.dg.reporting.records.load_records_input``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--records", metavar="FILE", help="records.jsonl written by cli.collect")
    src.add_argument("--input_dir", "--input-dir", dest="input_dir", metavar="DIR",
                     help="read a sweep directory directly (ours or one written by DomainBed)")
    return src
