"""Benchmark of the DomainBed study's input pipeline (images per second, no model).

On a generated PACS-shaped JPEG folder (4 environments x 7 classes, ``--per-env`` images of
227 x 227 per environment, JPEG quality 90, written to a temporary folder), side by side in
one process, for training minibatches (32 per training env, test env 0, DomainBed's
augmentation) and for evaluation (every env's in and out split, batches of 64, the test-time
transform):
  inproc    the path this pipeline replaced: every image decoded in the training process,
            one by one (``ImageFolder.__getitem__``; training: the augmenting transform)
  ours_N    moebench.dg.loader with N DataLoader workers: training tasks from
            ``Splits.minibatch_rows`` and evaluation tasks from ``Splits.eval_plan`` through
            ``Loader.stream`` (whole batches per task, per-sample seeded augmentation)
  dbed_N    DomainBed's recipe, written here: torchvision ImageFolder + its transforms +
            a DataLoader with N workers (training: a RandomSampler with replacement, batch 32,
            over the training envs; evaluation: the splits in order, batch 64)
Each case is timed after a warm-up (its workers started, their first batches decoded:
``--warmup`` steps, one evaluation batch) and its workers are stopped before the next case
runs; the cases take turns for ``--rounds`` rounds and the best round counts. Ratios: ours / dbed at equal
workers (target >= 0.95) and ours_2 / inproc (target >= 1.7).

  python benchmarks/input_pipeline.py [--per-env 300] [--steps 8] [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import ConcatDataset, DataLoader, RandomSampler, Subset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from moebench.dg.datasets.domainbed import PACS
from moebench.dg.loader import Loader, Splits
from moebench.dg.sweep import RunSpec
from moebench.io import atomic_write_json

TRAIN_TARGET, INPROC_TARGET = 0.95, 1.7
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-env", type=int, default=300, help="images per environment")
    p.add_argument("--steps", type=int, default=8, help="timed training steps (3 envs x 32)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps / batches first")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--data", default=None, help="reuse / write the JPEG folder here")
    p.add_argument("--json", default=None, help="write the table as JSON to this path")
    return p.parse_args(argv)


def make_pacs(root: Path, per_env: int, seed: int = 0) -> None:
    """PACS's layout with random structured 227 x 227 JPEGs (gradient, shapes, noise)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:227, 0:227]
    for e, folder in enumerate(PACS.FOLDERS):
        for k in range(per_env):
            c = k % len(PACS.CLASSES)
            out = root / folder / PACS.CLASSES[c]
            out.mkdir(parents=True, exist_ok=True)
            a, b = rng.uniform(0.2, 1.0, size=2)
            base = np.stack([(xx * a + yy * b + 40 * c) % 256, (xx * b - yy * a) % 256,
                             np.full_like(xx, 60 * e)], axis=-1)
            noise = rng.randint(0, 40, size=(227, 227, 3))
            img = Image.fromarray(((base + noise) % 256).astype(np.uint8))
            draw = ImageDraw.Draw(img)
            for _ in range(6):
                x0, y0 = rng.randint(0, 180, size=2)
                w, h = rng.randint(10, 47, size=2)
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
            img.save(out / f"{k:04d}.jpg", quality=90)


def domainbed_transforms() -> tuple[T.Compose, T.Compose]:
    """DomainBed's datasets.py transforms (augment, test), as the upstream repository has them."""
    augment = T.Compose([T.RandomResizedCrop(224, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                         T.ColorJitter(0.3, 0.3, 0.3, 0.3), T.RandomGrayscale(), T.ToTensor(),
                         T.Normalize(mean=MEAN, std=STD)])
    test = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])
    return augment, test


def count(batches: Iterator, n: Optional[int]) -> int:
    """Consume ``n`` batches (None: all); the number of images they held."""
    if n is None:
        return sum(len(batch[-1]) for batch in batches)
    return sum(len(next(batches)[-1]) for _ in range(n))


def stop(it: Iterator) -> None:
    """End a DataLoader iterator's workers (so no prefetching runs into the next case)."""
    if hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()


class Case:
    """A batch source timed in rounds: ``make()`` -> (iterator, closer), ``n`` batches per
    round after ``warmup`` (workers start and fill their queues in the warm-up)."""

    def __init__(self, name: str, kind: str, make: Callable[[], tuple], n: Optional[int],
                 warmup: int):
        self.name, self.kind, self.n, self.warmup = name, kind, n, warmup
        self.make, self.best = make, 0.0

    def round(self) -> None:
        it, close = self.make()
        count(it, self.warmup)
        t0 = time.perf_counter()
        images = count(it, self.n)
        self.best = max(self.best, images / (time.perf_counter() - t0))
        close(it)


def build_cases(root: Path, args: argparse.Namespace) -> list[Case]:
    ds = PACS.load(root)
    spec = RunSpec(dataset="pacs", algorithm="erm", test_envs=(0,), hparams_seed=0, trial_seed=0,
                   seed=0, steps=10**6, checkpoint_freq=10**6, holdout_fraction=0.2,
                   hparams={"batch_size": 32})
    splits = Splits(ds.envs, spec)
    n_train = len(splits.train_envs)
    plan = splits.eval_plan(spec.seed, 64)
    steps = args.warmup + args.steps

    def train_tasks(step0: int):
        for step in range(step0, step0 + 10**6):
            for i, rows, seeds in splits.minibatch_rows(step, 32):
                yield (step, i), i, rows, seeds

    def eval_tasks():
        for key, i, batches in plan:
            for b, rows in enumerate(batches):
                yield (key, b), i, rows, None

    augment, test = domainbed_transforms()
    envs_aug = [ImageFolder(str(root / f), transform=augment) for f in sorted(PACS.FOLDERS)]
    envs_test = [ImageFolder(str(root / f), transform=test) for f in sorted(PACS.FOLDERS)]
    train_set = ConcatDataset([envs_aug[i] for i in splits.train_envs])
    eval_set = ConcatDataset([Subset(envs_test[i], batch.tolist()) for _, i, batches in plan
                              for batch in batches])

    def inproc(envs, tasks):
        def gen():
            for _, i, rows, _ in tasks:
                items = [envs[i][int(r)] for r in rows]
                yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
        return gen()

    def ours(n: int, tasks: Callable[[], Iterator]) -> Callable[[], tuple]:
        def make() -> tuple:
            loader = Loader(ds.envs, n)
            return loader.stream(tasks()), lambda _: loader.close()
        return make

    def dbed(loader: DataLoader) -> Callable[[], tuple]:
        return lambda: (iter(loader), stop)

    warm, timed = args.warmup * n_train, args.steps * n_train
    cases = [Case("inproc", "train", lambda: (inproc(envs_aug, train_tasks(0)), stop), timed, warm),
             Case("inproc", "eval", lambda: (inproc(envs_test, eval_tasks()), stop), None, 1)]
    for n in args.workers:
        sampler = RandomSampler(train_set, replacement=True, num_samples=32 * (steps + 4 * n) * n_train)
        cases += [
            Case(f"ours_{n}", "train", ours(n, lambda: train_tasks(0)), timed, warm),
            Case(f"dbed_{n}", "train", dbed(DataLoader(train_set, batch_size=32, num_workers=n,
                                                       sampler=sampler)), timed, warm),
            Case(f"ours_{n}", "eval", ours(n, eval_tasks), None, 1),
            Case(f"dbed_{n}", "eval", dbed(DataLoader(eval_set, batch_size=64, num_workers=n)),
                 None, 1)]
    return cases


def table(cases: list[Case], workers: list[int]) -> list[dict]:
    rows = []
    for kind in ("train", "eval"):
        rate = {c.name: c.best for c in cases if c.kind == kind}
        row = {"kind": kind, **{f"{k}_img_s": round(v, 1) for k, v in rate.items()}}
        for n in workers:
            row[f"ours_{n}/dbed_{n}"] = round(rate[f"ours_{n}"] / rate[f"dbed_{n}"], 3)
        if 2 in workers:
            row["ours_2/inproc"] = round(rate["ours_2"] / rate["inproc"], 3)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    width = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, width))]
    lines += ["  ".join(str(r[k]).rjust(w) for k, w in zip(keys, width)) for r in rows]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp) / "PACS"
        if not root.exists():
            t0 = time.perf_counter()
            make_pacs(root, args.per_env)
            print(f"wrote {4 * args.per_env} JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
        cases = build_cases(root, args)
        for _ in range(args.rounds):       # the cases take turns
            for case in cases:
                case.round()
    rows = table(cases, args.workers)
    print(f"cores={len(__import__('os').sched_getaffinity(0))} per_env={args.per_env} "
          f"steps={args.steps} rounds={args.rounds}\n" + format_table(rows))
    ok = all(r[f"ours_{n}/dbed_{n}"] >= TRAIN_TARGET for r in rows for n in args.workers)
    ok &= all(r.get("ours_2/inproc", INPROC_TARGET) >= INPROC_TARGET for r in rows)
    print(f"targets (ours/dbed >= {TRAIN_TARGET}, ours_2/inproc >= {INPROC_TARGET}): "
          f"{'met' if ok else 'NOT met'}")
    if args.json:
        meta = {"per_env": args.per_env, "steps": args.steps, "rounds": args.rounds,
                "workers": args.workers, "targets": {"ours/dbed": TRAIN_TARGET,
                                                     "ours_2/inproc": INPROC_TARGET}}
        atomic_write_json(args.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
