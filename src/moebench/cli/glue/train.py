"""Train one batch of GLUE-study runs from the plan (skips done runs, resumes killed ones)::

    python -m moebench.cli.glue.train --plan results/glue/plan.json --batch cola/b0
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from moebench.cli.glue import Parser, quiet_transformers, run
from moebench.errors import RunError


def parser() -> Parser:
    p = Parser(prog="moebench.cli.glue.train", description=__doc__.split("::")[0])
    p.add_argument("--plan", required=True)
    p.add_argument("--batch", required=True, help="a batch key of the plan, e.g. cola/b0")
    p.add_argument("--marker", help="file written when every run of the batch is done")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--moe-backend", default="auto", choices=("auto", "torch", "native"),
                   help="expert GEMM kernels (written into every record)")
    p.add_argument("--progress", choices=("on", "off"), default="off")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def body(args: argparse.Namespace) -> int:
    import json

    import torch

    from moebench.device import resolve_device
    from moebench.glue.driver import train_batch
    from moebench.glue.train import RunOptions
    from moebench.io import atomic_write_text
    from moebench.moe import backend

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    backend.set_backend(args.moe_backend)
    quiet_transformers()
    try:
        plan = json.loads(Path(args.plan).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read the plan {args.plan}: {exc}") from None
    start, cpu = time.perf_counter(), time.process_time()
    dirs = train_batch(plan, args.batch, resolve_device(args.device),
                       RunOptions(progress=args.progress == "on"))
    logging.getLogger("moebench.cli.glue.train").info(
        "batch %s: %d runs in %.1f s wall, %.1f s CPU", args.batch, len(dirs),
        time.perf_counter() - start, time.process_time() - cpu)
    if args.marker:
        atomic_write_text(args.marker, "".join(f"{d}\n" for d in dirs))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv, parser(), body)


if __name__ == "__main__":
    raise SystemExit(main())
