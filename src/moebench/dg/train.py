"""DomainBed training protocol for one run: splits, sampling, update loop, evaluation, records.

Per run directory: ``spec.json`` (the run identity), ``results.jsonl`` (one DomainBed record per
checkpoint, written line by line), ``checkpoint.pt`` (resume point, atomic) and ``done``.
A run killed at any point and started again resumes from its last checkpoint and produces
the same records (timing fields aside) as an uninterrupted run. The batches come from
:mod:`moebench.dg.loader` (DataLoader workers for image folders); the records do not depend
on the number of workers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from moebench.device import autocast, peak_memory_gb
from moebench.distributed import World, average_gradients
from moebench.dg.loader import EVAL_BATCH_SIZE, Loader, RunStream, Splits, fetch, resolve_workers, split_env
from moebench.dg.sweep import RunSpec
from moebench.errors import RunError
from moebench.io import atomic_write
from moebench.moe import backend
from moebench.runs import RunState, diverged_record, is_finite, rng_state, set_rng_state

log = logging.getLogger(__name__)
__all__ = ["EVAL_BATCH_SIZE", "RunOptions", "Splits", "fetch", "split_env", "train_batch", "train_run"]


def run_args(spec: RunSpec, run_dir: Path, data_path: str) -> dict[str, Any]:
    """DomainBed's ``args`` dict for a record (paths included here, never in the identity)."""
    return {
        "dataset": spec.dataset, "algorithm": spec.algorithm, "test_envs": list(spec.test_envs),
        "hparams_seed": spec.hparams_seed, "trial_seed": spec.trial_seed, "seed": spec.seed,
        "steps": spec.steps, "checkpoint_freq": spec.checkpoint_freq,
        "holdout_fraction": spec.holdout_fraction, "task": "domain_generalization",
        "output_dir": str(run_dir), "data_dir": str(data_path), "run_id": spec.run_id,
    }


def build_algorithm(spec: RunSpec, dataset: Any, device: torch.device,
                    plugins: Sequence[str] = ()) -> Any:
    """Seed everything from the run seed and construct the declared algorithm."""
    from moebench.dg.algorithms import algorithm_class

    bad = [e for e in spec.test_envs if not 0 <= e < len(dataset.envs)]
    if bad:
        raise RunError(f"test env {bad[0]} out of range for {spec.dataset} "
                       f"({len(dataset.envs)} environments)")
    np.random.seed(spec.seed % 2**32)
    torch.manual_seed(spec.seed)
    cls = algorithm_class(spec.algorithm, plugins)
    n_domains = len(dataset.envs) - len(spec.test_envs)
    algorithm = cls(dataset.input_shape, dataset.num_classes, n_domains, dict(spec.hparams),
                    n_steps=spec.steps)
    return algorithm.to(device)


@dataclass(frozen=True)
class RunOptions:
    """How (not what) to train: these never change a run's identity.

    world: data-parallel ranks (see moebench.distributed); save_model: keep ``model.pt``
    (the trained network's state dict) when the run is done; progress: tqdm bar
    (None = only on a terminal); plugins: extra algorithm modules (params ``plugins``);
    loader_workers: DataLoader workers decoding the batches ("auto": 0 for in-memory
    datasets, else from the cores and ``jobs_per_node``; 0 = in this process);
    eval_batch_size: images per evaluation batch (DomainBed: 64; GMoE's expert capacity is
    per batch, so other values can change its accuracies); prefetch: batches queued per worker.
    """

    world: World = World()
    save_model: bool = False
    progress: bool | None = None
    plugins: tuple[str, ...] = ()
    loader_workers: int | str = "auto"
    jobs_per_node: int = 1
    eval_batch_size: int = EVAL_BATCH_SIZE
    prefetch: int = 2

    def loader(self, envs: Sequence[Any], device: torch.device) -> Loader:
        """The input pipeline of one dataset under these options."""
        workers = resolve_workers(self.loader_workers, envs, self.jobs_per_node)
        return Loader(envs, workers, self.prefetch, pin=device.type == "cuda")


def checkpoint_record(algorithm: Any, spec: RunSpec, splits: Splits, stream: RunStream,
                      window: Mapping[str, list[float]], step: int, device: torch.device,
                      extra: Mapping[str, Any]) -> dict[str, Any]:
    """The DomainBed record of one checkpoint (averages over the window since the last one);
    ``eval_time`` is the seconds its evaluation took."""
    record: dict[str, Any] = {key: float(np.mean(vals)) for key, vals in window.items()}
    t0 = time.perf_counter()
    with autocast(spec.precision, device):
        record.update(stream.evaluate(algorithm, step))
    record["eval_time"] = time.perf_counter() - t0
    batch_size = int(spec.hparams["batch_size"])
    record.update(step=step, epoch=step / splits.steps_per_epoch(batch_size),
                  mem_gb=peak_memory_gb(device), hparams=dict(spec.hparams),
                  test_envs=list(spec.test_envs), routing=algorithm.routing_stats(reset=True),
                  moe_backend=backend.used(), **extra)
    return record


def _restore(state: RunState, algorithm: Any, truncate: bool) -> int:
    """Load the run's checkpoint into ``algorithm`` (and the RNGs); the first step to run."""
    saved = state.load(truncate=truncate)
    if saved is None:
        return 0
    algorithm.load_checkpoint_state(saved["algorithm"])
    set_rng_state(saved["rng"])
    return int(saved["step"]) + 1


def _progress(spec: RunSpec, start: int, options: RunOptions) -> Any:
    from tqdm import tqdm

    disable = True if not options.world.is_main else (
        None if options.progress is None else not options.progress)
    return tqdm(range(start, spec.steps), desc=f"{spec.algorithm}/{spec.dataset} "
                f"{list(spec.test_envs)}", disable=disable, leave=False)


def train_run(spec: RunSpec, dataset: Any, data_path: str, run_dir: str | Path,
              device: torch.device, options: RunOptions = RunOptions(),
              loader: Loader | None = None) -> Path:
    """Train one run under the DomainBed protocol; returns its run directory.

    Skips a run that is already ``done``; resumes one that has a checkpoint. A non-finite
    loss ends the run at that step with a record holding ``"diverged": true`` (and ``done``).
    ``loader``: the dataset's input pipeline (shared by the runs of a batch; default: one
    of ``options``, closed at the end). Per record ``step_time`` is the mean update time
    (s/step) and ``data_time`` the mean wait for the step's minibatches, on the device.
    """
    run_dir, world = Path(run_dir), options.world
    state = RunState(run_dir)
    if state.is_done():
        log.info("done already: %s", run_dir)
        return run_dir
    if world.is_main:
        state.start(spec.identity())
    world.barrier()
    algorithm = build_algorithm(spec, dataset, device, options.plugins)
    average_gradients(algorithm.optimizer, world)
    start = _restore(state, algorithm, truncate=world.is_main)
    splits = Splits(dataset.envs, spec)
    own = loader is None
    loader = options.loader(dataset.envs, device) if loader is None else loader
    try:
        stream = RunStream(loader, splits, spec, start, device, world, options.eval_batch_size)
        _loop(algorithm, spec, splits, stream, state, start, device, options, {
            "args": run_args(spec, run_dir, data_path), "dataset": spec.dataset,
            "algorithm": spec.algorithm, "environments": list(dataset.environments),
            "loader": {"workers": loader.workers, "eval_batch_size": options.eval_batch_size}})
    finally:
        if own:
            loader.close()
    if world.is_main:
        state.finish(_model_saver(algorithm) if options.save_model else None)
    world.barrier()
    return run_dir


def _loop(algorithm: Any, spec: RunSpec, splits: Splits, stream: RunStream, state: RunState,
          start: int, device: torch.device, options: RunOptions, extra: Mapping[str, Any]) -> None:
    """Steps ``start`` .. ``spec.steps - 1``: wait for the minibatches, update, checkpoint."""
    world = options.world
    backend.used(reset=True)                # count only this run's expert kernels
    window: dict[str, list[float]] = {}
    for step in _progress(spec, start, options):
        t0 = time.perf_counter()
        minibatches = stream.minibatches(step)
        t1 = time.perf_counter()
        with autocast(spec.precision, device):
            out = algorithm.update(minibatches)
        window.setdefault("step_time", []).append(time.perf_counter() - t1)
        window.setdefault("data_time", []).append(t1 - t0)
        for key, value in out.items():
            window.setdefault(key, []).append(float(value))
        if not is_finite(out.get("loss")):
            if world.is_main:
                record = checkpoint_record(algorithm, spec, splits, stream, window, step, device,
                                           extra)
                state.append(diverged_record(record, step, out.get("loss")))
            return
        if step % spec.checkpoint_freq == 0 or step == spec.steps - 1:
            if world.is_main:
                _checkpoint(state, algorithm, spec, splits, stream, window, step, device, extra)
            world.barrier()
            window = {}


def _checkpoint(state: RunState, algorithm: Any, spec: RunSpec, splits: Splits, stream: RunStream,
                window: Mapping[str, list[float]], step: int, device: torch.device,
                extra: Mapping[str, Any]) -> None:
    """Evaluate, append the record, save the resume point, log one line."""
    record = checkpoint_record(algorithm, spec, splits, stream, window, step, device, extra)
    state.append(record)
    state.save({"algorithm": algorithm.checkpoint_state(), "rng": rng_state()}, step)
    log.info("%s step %d loss %.4f %s", state.dir.name, step, record.get("loss", float("nan")),
             " ".join(f"{k[:-4]}={v:.3f}" for k, v in record.items() if k.endswith("_acc")))


def _model_saver(algorithm: Any) -> Any:
    net = getattr(algorithm, "network", algorithm)
    return lambda run_dir: atomic_write(run_dir / "model.pt",
                                        lambda fh: torch.save(net.state_dict(), fh))


def train_batch(plan: Mapping[str, Any], batch_key: str, device: torch.device,
                options: RunOptions = RunOptions()) -> list[Path]:
    """Train every run of one plan batch in this process (loading its dataset once)."""
    from dataclasses import replace

    from moebench.dg.datasets import load_dataset

    if batch_key not in plan["batches"]:
        raise RunError(f"batch {batch_key!r} is not in the sweep plan")
    if plan.get("plugins") and not options.plugins:
        options = replace(options, plugins=tuple(plan["plugins"]))
    entries = plan["batches"][batch_key]
    dirs = []
    datasets: dict[str, Any] = {}
    loaders: dict[str, Loader] = {}          # one set of persistent workers per dataset
    try:
        for n, entry in enumerate(entries, 1):
            spec = RunSpec.from_dict(entry["spec"])
            data_path = plan["data_paths"][spec.dataset]
            if spec.dataset not in datasets:
                datasets[spec.dataset] = load_dataset(spec.dataset, data_path)
                loaders[spec.dataset] = options.loader(datasets[spec.dataset].envs, device)
            log.info("run %d/%d of %s: %s test_envs=%s trial=%d", n, len(entries), batch_key,
                     entry["run_id"], list(spec.test_envs), spec.trial_seed)
            dirs.append(train_run(spec, datasets[spec.dataset], data_path, entry["run_dir"],
                                  device, options, loaders[spec.dataset]))
    finally:
        for loader in loaders.values():
            loader.close()
    return dirs
