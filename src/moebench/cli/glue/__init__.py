"""The GLUE study's command lines, one module per workflow stage: ``data``, ``train``,
``collect``, ``tables``, ``figures`` (each ``main(argv=None) -> int``)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Optional, Sequence

from moebench.cli.common import setup_logging
from moebench.errors import MoebenchError, UsageError


class Parser(argparse.ArgumentParser):
    """argparse that raises a one-line UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run(argv: Optional[Sequence[str]], parser: Parser,
        body: Callable[[argparse.Namespace], int]) -> int:
    """Parse, set up logging, run ``body``; a MoebenchError is one line and exit code 2
    (every other exception is a bug and keeps its traceback)."""
    try:
        args = parser.parse_args(argv)
        setup_logging(getattr(args, "verbose", False))
        return body(args)
    except MoebenchError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


def quiet_transformers() -> None:
    """No weight-loading progress bars and load reports in the job logs."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
