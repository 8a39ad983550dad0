"""The DomainBed study's input pipeline: splits, minibatch sampling, and one stream of batches
(training minibatches, then each checkpoint's evaluation batches) decoded in DataLoader workers.

What a run sees never depends on the number of workers: the rows of every training minibatch
are drawn as in DomainBed's ``InfiniteDataLoader`` replacement here (seeded by
(seed, env, step), with replacement), every evaluation follows DomainBed's order (a seeded
permutation of each split, cut into batches), and the augmentation of sample ``k`` of the
minibatch of (env, step) draws from ``torch.manual_seed`` of a seed derived from
(seed, env, step, k), set in whichever process decodes it; the main process's RNG state is
restored afterwards, so resuming from ``rng_state()`` replays the same run. DomainBed decodes
in ``N_WORKERS = 8`` DataLoader workers per loader (domainbed/scripts/train.py); here one
stream of ``workers`` processes serves training and evaluation, each task a whole batch.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate
from torchvision import transforms as T

from moebench.distributed import World
from moebench.hparams import seed_hash

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 64     # DomainBed's eval loaders (batch_size=64); GMoE's capacity sees it
MAX_AUTO_WORKERS = 8     # DomainBed's N_WORKERS
Task = tuple[tuple, int, np.ndarray, Optional[np.ndarray]]   # (tag, env, rows, sample seeds)


def split_env(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DomainBed's split_dataset: a seeded permutation; first ``int(n*f)`` are 'out', rest 'in'."""
    perm = np.random.RandomState(seed).permutation(n)
    n_out = int(n * holdout_fraction)
    return perm[n_out:], perm[:n_out]


def sample_seeds(base: int, n: int) -> np.ndarray:
    """``n`` per-sample augmentation seeds (int64 [n], in [0, 2^63)) from one batch seed."""
    k = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = np.uint64(base) * np.uint64(0x9E3779B97F4A7C15) + k * np.uint64(0xBF58476D1CE4E5B9)
    return (mixed >> np.uint64(1)).astype(np.int64)


def _decodes(env: Dataset) -> bool:
    """An image folder (torchvision ImageFolder): decode ``samples[i]`` with its loader."""
    return hasattr(env, "samples") and hasattr(env, "loader") and callable(getattr(env, "transform", None))


def _split_tail(transform: Any) -> tuple[Any, Any, torch.Tensor, torch.Tensor] | None:
    """``Compose([..., ToTensor(), Normalize(mean, std)])`` -> (the PIL part, the tensor
    part, mean [1, C, 1, 1], std [1, C, 1, 1]); None for any other transform."""
    steps = getattr(transform, "transforms", None)
    if (not isinstance(transform, T.Compose) or len(steps) < 2 or type(steps[-2]) is not T.ToTensor
            or type(steps[-1]) is not T.Normalize):
        return None
    mean = torch.as_tensor(steps[-1].mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(steps[-1].std, dtype=torch.float32).view(1, -1, 1, 1)
    return T.Compose(steps[:-2]), T.Compose(steps[-2:]), mean, std


def _to_normalized(images: list, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor | None:
    """ToTensor + Normalize of equal-sized RGB PIL images, once for the batch: float32
    [B, 3, H, W], bit for bit what the per-image transforms give (x / 255 - mean) / std
    (None if the images are not all RGB of one size)."""
    if any(im.mode != "RGB" or im.size != images[0].size for im in images):
        return None
    w, h = images[0].size
    u8 = torch.from_numpy(np.stack([np.asarray(im) for im in images]))      # [B, H, W, 3]
    if torch.utils.data.get_worker_info() is not None:   # as default_collate: shared memory
        storage = torch.empty(0)._typed_storage()._new_shared(len(images) * 3 * h * w)
        out = torch.empty(0).new(storage).view(len(images), 3, h, w)
    else:
        out = torch.empty(len(images), 3, h, w)
    out.copy_(u8.permute(0, 3, 1, 2))
    return out.div_(255).sub_(mean).div_(std)


def fetch(env: Dataset, idx: np.ndarray, seeds: Optional[np.ndarray] = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of an env as (x [B, C, H, W], y int64 [B]).

    TensorDatasets are indexed (no transforms). Image folders decode each file; with
    ``seeds`` (training) sample ``k`` gets the env's ``augment_transform`` (when it has one)
    under ``torch.default_generator.manual_seed(seeds[k])``, else its (eval) ``transform``;
    a trailing ToTensor + Normalize runs once per batch. The caller's torch RNG state is
    left as it was.
    """
    if isinstance(env, TensorDataset):
        t = torch.as_tensor(idx, dtype=torch.long)
        return env.tensors[0][t], env.tensors[1][t]
    decodes = _decodes(env)
    transform = (getattr(env, "augment_transform", None) if seeds is not None else None) or (
        env.transform if decodes else None)
    split = _split_tail(transform) if decodes else None
    per_image = split[0] if split else transform
    state = torch.get_rng_state() if seeds is not None else None
    xs, ys = [], []
    try:
        for k, i in enumerate(idx):
            if seeds is not None:
                torch.default_generator.manual_seed(int(seeds[k]))
            if decodes:
                path, y = env.samples[int(i)]
                x = per_image(env.loader(path))
            else:
                x, y = env[int(i)]
            xs.append(x)
            ys.append(int(y))
    finally:
        if state is not None:
            torch.set_rng_state(state)
    labels = torch.tensor(ys, dtype=torch.long)
    if split:
        batch = _to_normalized(xs, split[2], split[3])
        if batch is not None:
            return batch, labels
        xs = [split[1](x) for x in xs]           # mixed modes / sizes: image by image
    # default_collate stacks straight into shared memory inside a worker (no extra copy)
    return default_collate(xs), labels


class Splits:
    """Per-environment in/out index splits and deterministic minibatch sampling."""

    def __init__(self, envs: Sequence[Dataset], spec: Any) -> None:
        self.envs = list(envs)
        self.spec = spec
        self.ins, self.outs = [], []
        for i, env in enumerate(self.envs):
            idx_in, idx_out = split_env(len(env), spec.holdout_fraction, seed_hash(spec.trial_seed, i))
            self.ins.append(idx_in)
            self.outs.append(idx_out)
        self.train_envs = [i for i in range(len(self.envs)) if i not in spec.test_envs]

    def minibatch_rows(self, step: int, batch_size: int, world: World = World()
                       ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per training env: (env, rows, augmentation seeds) of the minibatch of ``step``.

        Rows are sampled with replacement, seeded by (seed, env, step); under data
        parallelism rank r takes rows r, r + size, ... (and their seeds).
        """
        out = []
        for i in self.train_envs:
            rng = np.random.RandomState(seed_hash(self.spec.seed, i, step))
            idx = self.ins[i][rng.randint(len(self.ins[i]), size=batch_size)]
            seeds = sample_seeds(seed_hash(self.spec.seed, i, step, "augment"), batch_size)
            out.append((i, idx[world.rank :: world.size], seeds[world.rank :: world.size]))
        return out

    def minibatches(self, step: int, batch_size: int, device: torch.device,
                    world: World = World()) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (x, y) minibatch per training env, in this process (see :meth:`minibatch_rows`)."""
        return [tuple(t.to(device) for t in fetch(self.envs[i], idx, seeds))  # type: ignore[misc]
                for i, idx, seeds in self.minibatch_rows(step, batch_size, world)]

    def eval_plan(self, seed: int, batch_size: int) -> list[tuple[str, int, list[np.ndarray]]]:
        """(``env{i}_in_acc`` / ``env{i}_out_acc``, env, row batches) in DomainBed's order:
        each split in a seeded shuffled order, cut into batches of ``batch_size``."""
        plan = []
        for i in range(len(self.envs)):
            for split, rows in (("in", self.ins[i]), ("out", self.outs[i])):
                order = rows[np.random.RandomState(seed_hash(seed, i, split)).permutation(len(rows))]
                plan.append((f"env{i}_{split}_acc", i,
                             [order[k : k + batch_size] for k in range(0, len(order), batch_size)]))
        return plan

    def steps_per_epoch(self, batch_size: int) -> float:
        return min(len(idx) / batch_size for idx in self.ins)


def resolve_workers(option: int | str | None, envs: Sequence[Dataset], jobs_per_node: int = 1) -> int:
    """DataLoader workers: an int as given; ``auto``/None = 0 for in-memory (TensorDataset)
    envs, else the cores this process may use / the jobs per node - 1, in [1, 8]."""
    if option not in (None, "auto"):
        return int(option)  # type: ignore[arg-type]
    if all(isinstance(env, TensorDataset) for env in envs):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(min(MAX_AUTO_WORKERS, max(1, cores // max(1, jobs_per_node) - 1)))


class _Tasks(Dataset):
    """Dataset over tasks: ``self[(tag, env, rows, seeds)]`` = (tag, x, y), a whole batch."""

    def __init__(self, envs: Sequence[Dataset]) -> None:
        self.envs = list(envs)

    def __getitem__(self, task: Task) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        tag, env, rows, seeds = task
        return (tag, *fetch(self.envs[env], rows, seeds))

    def __len__(self) -> int:  # the sampler decides; DataLoader never asks
        raise TypeError("a task stream has no length")


class _Source(torch.utils.data.Sampler):
    """The sampler of the persistent loader: the task iterator of the current stream."""

    def __init__(self) -> None:
        self.tasks: Iterator[Task] = iter(())

    def __iter__(self) -> Iterator[Task]:
        return self.tasks


class Loader:
    """One dataset's batches, decoded in ``workers`` persistent DataLoader workers (0 = here).

    ``stream(tasks)`` yields ``(tag, x, y)`` for an iterator of tasks, in order, prefetching
    ``prefetch`` tasks per worker; batches are pinned when ``pin`` (CUDA). Reused across the
    runs of a batch; the workers start with the first stream and end with :meth:`close`.
    """

    def __init__(self, envs: Sequence[Dataset], workers: int = 0, prefetch: int = 2,
                 pin: bool = False) -> None:
        self.envs, self.workers = list(envs), int(workers)
        self._source = _Source()
        self._loader = None if self.workers == 0 else DataLoader(
            _Tasks(self.envs), sampler=self._source, batch_size=None, num_workers=self.workers,
            persistent_workers=True, prefetch_factor=prefetch, pin_memory=pin,
            # an own generator: creating the iterator never draws from the global torch RNG
            generator=torch.Generator().manual_seed(0))
        self._iter: Any = None

    def stream(self, tasks: Iterator[Task]) -> Iterator[tuple[tuple, torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            return ((tag, *fetch(self.envs[env], rows, seeds)) for tag, env, rows, seeds in tasks)
        self._source.tasks = iter(tasks)
        self._iter = iter(self._loader)   # persistent workers: a reset, not a restart
        return self._iter

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._iter is not None and hasattr(self._iter, "_shutdown_workers"):
            self._iter._shutdown_workers()
        self._iter = None
        self._loader = None


class RunStream:
    """The batches of one run from step ``start`` on, in one prefetched stream: per step the
    training minibatches (:meth:`minibatches`) and, on the main rank, after each checkpoint
    step the evaluation batches of :meth:`Splits.eval_plan` (:meth:`evaluate`)."""

    def __init__(self, loader: Loader, splits: Splits, spec: Any, start: int,
                 device: torch.device, world: World = World(),
                 eval_batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.splits, self.spec, self.device, self.world = splits, spec, device, world
        self.loader = loader
        self.batch_size = int(spec.hparams["batch_size"])
        self.plan = splits.eval_plan(spec.seed, eval_batch_size)
        last = spec.steps - 1
        self.eval_steps = frozenset(s for s in range(start, spec.steps)
                                    if world.is_main and (s % spec.checkpoint_freq == 0 or s == last))
        self._it = loader.stream(self._tasks(start))

    def _tasks(self, start: int) -> Iterator[Task]:
        for step in range(start, self.spec.steps):
            for i, rows, seeds in self.splits.minibatch_rows(step, self.batch_size, self.world):
                yield ("train", step, i), i, rows, seeds
            if step in self.eval_steps:
                for key, i, batches in self.plan:
                    for b, rows in enumerate(batches):
                        yield ("eval", step, key, b), i, rows, None

    def _next(self, tag: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        got, x, y = next(self._it)
        if tuple(got) != tag:
            raise RuntimeError(f"input stream out of order: expected {tag}, got {got}")
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def minibatches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (x [B, C, H, W], y [B]) per training env for ``step`` (on the device)."""
        return [self._next(("train", step, i)) for i in self.splits.train_envs]

    def evaluate(self, algorithm: Any, step: int) -> dict[str, float]:
        """``env{i}_in_acc`` / ``env{i}_out_acc`` of every env (DomainBed's ``accuracy``:
        argmax of ``algorithm.predict`` over each split, in eval mode, under inference_mode).

        At a scheduled checkpoint the batches come from the stream; at any other step (a
        diverged run) they are decoded here, in the same order.
        """
        def batch(key: str, i: int, b: int, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            if step in self.eval_steps:
                return self._next(("eval", step, key, b))
            x, y = fetch(self.splits.envs[i], rows)
            return x.to(self.device), y.to(self.device)

        accs: dict[str, float] = {}
        algorithm.eval()
        try:
            with torch.inference_mode():
                for key, i, batches in self.plan:
                    correct = total = 0
                    for b, rows in enumerate(batches):
                        x, y = batch(key, i, b, rows)
                        correct += int((algorithm.predict(x).argmax(1) == y).sum())
                        total += len(y)
                    accs[key] = correct / total if total else float("nan")
        finally:
            algorithm.train()
        return accs
