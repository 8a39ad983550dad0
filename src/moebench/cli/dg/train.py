"""Train runs under the DomainBed protocol.

Two ways in:

* a batch of a sweep plan (what the workflow does; several runs per process)::

    python -m moebench.cli.dg.train --plan results/sweep/plan.json --batch rotated_digits/gmoe/b000

* one run, DomainBed style::

    python -m moebench.cli.dg.train --dataset rotated_digits --data-path data/rotated_digits.npz \
        --algorithm gmoe --test-envs 0 --hparams-file params/hparams.yaml --output-dir out/
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from moebench.errors import UsageError
from moebench.cli.common import run_main, setup_logging


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="moebench.cli.dg.train", description=__doc__.split("\n")[0])
    p.add_argument("--plan", help="sweep plan JSON (with --batch)")
    p.add_argument("--batch", help="batch key in the plan, e.g. rotated_digits/gmoe/b000")
    p.add_argument("--marker", help="file written when the whole batch is done")
    p.add_argument("--dataset")
    p.add_argument("--data-path")
    p.add_argument("--algorithm")
    p.add_argument("--test-envs", type=int, nargs="+", default=[0])
    p.add_argument("--hparams-file", help="YAML with an 'hparams' section (params/hparams.yaml)")
    p.add_argument("--hparams", default="{}", help="JSON overrides of single hparams")
    p.add_argument("--hparams-seed", type=int, default=0)
    p.add_argument("--trial-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--checkpoint-freq", type=int, default=20)
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--output-dir")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--jobs-per-gpu", type=int, default=1,
                   help="runs sharing a GPU; with several GPUs visible each process claims one")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 = autocast of the forwards (a run's precision is part of its identity)")
    p.add_argument("--save-model", action="store_true", help="keep model.pt when a run is done")
    p.add_argument("--moe-backend", choices=["auto", "torch", "native"], default="auto",
                   help="expert GEMM kernels (written into every record)")
    p.add_argument("--loader-workers", default="auto", metavar="auto|N",
                   help="DataLoader workers decoding images (auto: 0 for in-memory datasets, else "
                        "cores / jobs per node - 1, at most 8; 0 = in this process)")
    p.add_argument("--eval-batch-size", type=int, default=64,
                   help="images per evaluation batch (DomainBed: 64)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="extra algorithm module with a DECLARATION (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def single_run_spec(args: argparse.Namespace):
    """Build the RunSpec of a stand-alone run from CLI flags."""
    from moebench.dg.study import hparam_tables, study_keys
    from moebench.dg.sweep import RunSpec
    from moebench.hparams import check_values, resolve_hparams, seed_hash

    for flag in ("dataset", "data_path", "algorithm", "hparams_file", "output_dir"):
        if getattr(args, flag) is None:
            raise UsageError(f"--{flag.replace('_', '-')} is required without --plan")
    section = yaml.safe_load(Path(args.hparams_file).read_text()).get("hparams")
    if not section:
        raise UsageError(f"{args.hparams_file} has no 'hparams' section")
    tables = hparam_tables(args.plugin)
    if args.algorithm not in tables:
        raise UsageError(f"--algorithm: unknown algorithm {args.algorithm!r}; "
                         f"valid: {', '.join(sorted(tables))}")
    table = tables[args.algorithm]
    hparams = resolve_hparams(section, args.dataset, args.algorithm, args.hparams_seed,
                              args.trial_seed, table=table, study_keys=study_keys(args.plugin))
    overrides = json.loads(args.hparams)
    unknown = sorted(set(overrides) - set(hparams))
    if unknown:
        raise UsageError(f"--hparams: unknown hparam {unknown[0]!r} for {args.algorithm}")
    hparams.update(overrides)
    check_values(overrides, table, ["--hparams"], context=hparams)
    test_envs = tuple(sorted(args.test_envs))
    return RunSpec(
        dataset=args.dataset, algorithm=args.algorithm, test_envs=test_envs,
        hparams_seed=args.hparams_seed, trial_seed=args.trial_seed,
        seed=seed_hash(args.dataset, args.algorithm, list(test_envs), args.hparams_seed, args.trial_seed),
        steps=args.steps, checkpoint_freq=args.checkpoint_freq, holdout_fraction=args.holdout_fraction,
        hparams=hparams, precision=args.precision,
    )


def loader_workers(value: str) -> int | str:
    """``--loader-workers``: "auto" or a count >= 0 (one-line UsageError otherwise)."""
    if value == "auto":
        return value
    if not value.isdigit():
        raise UsageError(f"--loader-workers must be auto or a count >= 0, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    setup_logging(args.verbose)

    def body() -> int:
        workers = loader_workers(args.loader_workers)
        if args.eval_batch_size < 1:
            raise UsageError(f"--eval-batch-size must be >= 1, got {args.eval_batch_size}")
        jobs_per_node = 1
        if args.device in ("auto", "cuda") and "LOCAL_RANK" not in os.environ:
            from moebench.gpu import claim_gpu, visible_gpus

            jobs_per_node = max(1, len(visible_gpus()) * args.jobs_per_gpu)
            claim_gpu(args.jobs_per_gpu)  # before anything initialises CUDA
        import torch

        from moebench.device import resolve_device
        from moebench.dg import train
        from moebench.io import atomic_write_text
        from moebench.dg.sweep import read_plan

        if args.threads:
            torch.set_num_threads(args.threads)
        from moebench.distributed import init_world, local_device

        device = local_device(resolve_device(args.device))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        from moebench.moe import backend

        backend.set_backend(args.moe_backend)
        options = train.RunOptions(
            world=init_world(device), save_model=args.save_model,
            progress={"auto": None, "on": True, "off": False}[args.progress],
            plugins=tuple(args.plugin), loader_workers=workers, jobs_per_node=jobs_per_node,
            eval_batch_size=args.eval_batch_size)
        if args.plan:
            if not args.batch:
                raise UsageError("--plan needs --batch")
            dirs = train.train_batch(read_plan(args.plan), args.batch, device, options)
            if args.marker:
                atomic_write_text(args.marker, "".join(f"{d}\n" for d in dirs))
            return 0
        from moebench.dg.datasets import load_dataset

        spec = single_run_spec(args)
        dataset = load_dataset(spec.dataset, args.data_path)
        train.train_run(spec, dataset, args.data_path, args.output_dir, device, options)
        return 0

    return run_main(body, "moebench.cli.dg.train")


if __name__ == "__main__":
    sys.exit(main())
