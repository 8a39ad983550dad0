"""The resumable training loop (records through :class:`moebench.runs.RunState`).

:func:`run_training` trains any model on token batches: the architectures of each update
come from ``archs_for(update)`` (the sandwich rule for a supernet, ``[None]`` for a
standalone Transformer), and every ``eval_every`` updates and at the end one record is
appended (train losses of the interval, ``evaluate()``'s metrics, timings) and a checkpoint
is written. A run killed at any point resumes from its last checkpoint with the same
records (timing fields aside): the data order is a function of (seed, epoch), the
architectures of (seed, update), and the RNG states travel in the checkpoint.
"""
from __future__ import annotations

import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from moebench.runs import RunState, diverged_record, is_finite, rng_state, set_rng_state
from moebench.supernet.data import Parallel, batch_indices, collate
from moebench.supernet.train import ArchList, TrainConfig, lr_at, make_optimizer, train_step

log = logging.getLogger(__name__)
TIMING_KEYS = ("step_time", "wall_time", "mem_gb", "tokens_per_s")


def mem_gb(device: torch.device) -> float:
    """Peak CUDA memory on a GPU, peak RSS of the process on CPU (GiB)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 4)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(rss / 2**20, 4)


def epoch_groups(data: Parallel, cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """The batches (sentence ids) of ``epoch`` in their shuffled order."""
    seed = cfg.seed * 100_003 + epoch
    groups = batch_indices(data, cfg.max_tokens, seed)
    perm = np.random.default_rng(seed + 1).permutation(len(groups))
    return [groups[i] for i in perm]


class _Interval:
    """Sums over the updates since the last record."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.n, self.time, self.tokens = names, 0, 0.0, 0
        self.loss = [0.0] * len(names)

    def add(self, losses: list[float], seconds: float, tokens: int) -> None:
        self.n += 1
        self.time += seconds
        self.tokens += tokens
        self.loss = [a + b for a, b in zip(self.loss, losses)]

    def summary(self) -> dict[str, Any]:
        per = [v / max(self.n, 1) for v in self.loss]
        out = {f"train_loss_{n}": round(v, 6) for n, v in zip(self.names, per)}
        out["loss"] = round(float(np.mean(per)), 6) if per else float("nan")
        out["step_time"] = round(self.time / max(self.n, 1), 5)
        out["tokens_per_s"] = round(self.tokens / max(self.time, 1e-9), 1)
        return out


def _resume(state: RunState, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, int]:
    ck = state.load()
    if ck is None:
        return 0, 0, 0
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    set_rng_state(ck["rng"])
    return int(ck["step"]), int(ck["epoch"]), int(ck["pos"])


def _record(state: RunState, rec: dict, model: nn.Module, opt: torch.optim.Optimizer,
            epoch: int, pos: int) -> None:
    """Append the record, then checkpoint at its step (a kill in between rewrites it)."""
    state.append(rec)
    log.info("update %d: %s", rec["step"], {k: v for k, v in rec.items() if "loss" in k})
    state.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "rng": rng_state(), "epoch": epoch, "pos": pos}, rec["step"])


def run_training(run_dir: str | Path, identity: Mapping[str, Any], model: nn.Module,
                 train: Parallel, cfg: TrainConfig, pad: int,
                 archs_for: Callable[[int], ArchList], arch_names: list[str],
                 evaluate: Callable[[], dict], save_final: Callable[[Path], None],
                 base_record: Mapping[str, Any], progress: Optional[bool] = None) -> list[dict]:
    """Train until ``cfg.max_updates`` (or divergence); returns the run's records.

    ``archs_for(u)`` gives the architectures of update u (named ``arch_names`` in the
    records); ``evaluate()`` the record's validation metrics; ``save_final(dir)`` writes the
    final model before the run is marked done; ``base_record`` holds ``args``, ``hparams``,
    ``moe_backend`` and the other constant keys.
    """
    state = RunState(run_dir)
    if state.is_done():
        return state.records()
    state.start(identity)
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg)
    update, epoch, pos = _resume(state, model, opt)
    groups = epoch_groups(train, cfg, epoch)
    acc, start = _Interval(arch_names), time.time()
    bar = tqdm(total=cfg.max_updates, initial=update, desc="updates", leave=False,
               disable=None if progress is None else not progress, file=sys.stderr)
    while update < cfg.max_updates:
        if pos >= len(groups):
            epoch, pos = epoch + 1, 0
            groups = epoch_groups(train, cfg, epoch)
        micro = [collate(train, g).to(device) for g in groups[pos:pos + cfg.update_freq]]
        pos += cfg.update_freq
        t0 = time.perf_counter()
        losses = train_step(model, opt, micro, archs_for(update), cfg, pad, lr_at(update, cfg))
        acc.add(losses, time.perf_counter() - t0, sum(b.ntokens for b in micro) * len(losses))
        update += 1
        bar.update(1)
        ep = epoch + min(pos, len(groups)) / len(groups)
        if not all(is_finite(v) for v in losses):
            state.append(diverged_record({**base_record, "epoch": ep}, update,
                                         next(v for v in losses if not is_finite(v))))
            break
        if update % cfg.eval_every == 0 or update == cfg.max_updates:
            rec = {**base_record, "step": update, "epoch": round(ep, 4),
                   "lr": lr_at(update - 1, cfg), **acc.summary(), **evaluate(),
                   "mem_gb": mem_gb(device), "wall_time": round(time.time() - start, 2)}
            _record(state, rec, model, opt, epoch, pos)
            bar.set_postfix(loss=rec["loss"])
            acc = _Interval(arch_names)
    bar.close()
    state.finish(save=save_final)
    return state.records()


def comparable(records: list[dict]) -> list[dict]:
    """Records without their timing fields (kill-and-resume comparisons)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not (
        isinstance(v, float) and math.isnan(v))} for r in records]
