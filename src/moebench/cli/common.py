"""Shared CLI plumbing: logging set-up, thread count, and one-line errors."""
from __future__ import annotations

import logging
import sys
from typing import Callable


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(body: Callable[[], int], prog: str) -> int:
    """Run a CLI body; expected errors become one line on stderr and exit code 2."""
    try:
        return body()
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
