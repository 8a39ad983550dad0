"""DomainBed training protocol for one run: splits, sampling, update loop, evaluation, records.

Per run directory: ``spec.json`` (the run identity), ``results.jsonl`` (one DomainBed record per
checkpoint, written line by line), ``checkpoint.pt`` (resume point, atomic) and ``done``.
A run killed at any point and started again resumes from its last checkpoint and produces
the same records (timing fields aside) as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from moebench.distributed import World, average_gradients
from moebench.hparams import seed_hash
from moebench.io import atomic_write, atomic_write_jsonl, atomic_write_text
from moebench.reporting.records import read_jsonl
from moebench.sweep import RunSpec

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 64
CHECKPOINT = "checkpoint.pt"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def split_env(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DomainBed's split_dataset: a seeded permutation; first ``int(n*f)`` are 'out', rest 'in'."""
    perm = np.random.RandomState(seed).permutation(n)
    n_out = int(n * holdout_fraction)
    return perm[n_out:], perm[:n_out]


def fetch(dataset: torch.utils.data.Dataset, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of an env as (x [B, C, H, W], y [B]); fast path for TensorDatasets."""
    if isinstance(dataset, torch.utils.data.TensorDataset):
        t = torch.as_tensor(idx, dtype=torch.long)
        return dataset.tensors[0][t], dataset.tensors[1][t]
    items = [dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


class Splits:
    """Per-environment in/out index splits and deterministic minibatch sampling."""

    def __init__(self, envs: Sequence[torch.utils.data.Dataset], spec: RunSpec) -> None:
        self.envs = list(envs)
        self.spec = spec
        self.ins, self.outs = [], []
        for i, env in enumerate(self.envs):
            idx_in, idx_out = split_env(len(env), spec.holdout_fraction, seed_hash(spec.trial_seed, i))
            self.ins.append(idx_in)
            self.outs.append(idx_out)
        self.train_envs = [i for i in range(len(self.envs)) if i not in spec.test_envs]

    def minibatches(self, step: int, batch_size: int, device: torch.device,
                    world: World = World()) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One minibatch per training env, sampled with replacement, seeded by (seed, env, step).

        Under data parallelism rank r takes rows r, r + size, ... of each minibatch.
        """
        batches = []
        for i in self.train_envs:
            rng = np.random.RandomState(seed_hash(self.spec.seed, i, step))
            idx = self.ins[i][rng.randint(len(self.ins[i]), size=batch_size)][world.rank :: world.size]
            x, y = fetch(self.envs[i], idx)
            batches.append((x.to(device), y.to(device)))
        return batches

    def steps_per_epoch(self, batch_size: int) -> float:
        return min(len(idx) / batch_size for idx in self.ins)


@torch.no_grad()
def accuracy(algorithm: Any, env: torch.utils.data.Dataset, idx: np.ndarray, device: torch.device, seed: int) -> float:
    """Accuracy on rows ``idx``, evaluated in a seeded shuffled order, batches of 64."""
    if len(idx) == 0:
        return float("nan")
    order = idx[np.random.RandomState(seed).permutation(len(idx))]
    correct = 0
    algorithm.eval()
    for k in range(0, len(order), EVAL_BATCH_SIZE):
        x, y = fetch(env, order[k : k + EVAL_BATCH_SIZE])
        logits = algorithm.predict(x.to(device))
        correct += int((logits.argmax(1).cpu() == y).sum())
    algorithm.train()
    return correct / len(order)


def peak_memory_gb(device: torch.device) -> float:
    """Peak CUDA memory allocated on CUDA; the process's peak RSS on CPU (in GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_args(spec: RunSpec, run_dir: Path, data_path: str) -> dict[str, Any]:
    """DomainBed's ``args`` dict for a record (paths included here, never in the identity)."""
    return {
        "dataset": spec.dataset, "algorithm": spec.algorithm, "test_envs": list(spec.test_envs),
        "hparams_seed": spec.hparams_seed, "trial_seed": spec.trial_seed, "seed": spec.seed,
        "steps": spec.steps, "checkpoint_freq": spec.checkpoint_freq,
        "holdout_fraction": spec.holdout_fraction, "task": "domain_generalization",
        "output_dir": str(run_dir), "data_dir": str(data_path), "run_id": spec.run_id,
    }


class RunState:
    """Where a run stands on disk: fresh, resumable from a checkpoint, or done."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.results = run_dir / "results.jsonl"
        self.checkpoint = run_dir / CHECKPOINT
        self.done = run_dir / "done"

    def restore(self, algorithm: Any, truncate: bool = True) -> int:
        """Load the checkpoint if any; returns the first step to run.

        ``truncate``: drop records past the checkpoint (only the writing rank does this).
        """
        if not self.checkpoint.exists():
            if truncate:
                self.results.unlink(missing_ok=True)
            return 0
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear line
            raise RuntimeError(f"cannot load checkpoint {self.checkpoint}: {exc}") from None
        algorithm.load_checkpoint_state(state["algorithm"])
        set_rng_state(state["rng"])
        if truncate:
            kept = read_jsonl(self.results) if self.results.exists() else []  # skips a cut last line
            atomic_write_jsonl(self.results, [r for r in kept if r["step"] <= state["step"]])
        log.info("resuming %s from step %d", self.dir, state["step"])
        return int(state["step"]) + 1

    def save(self, algorithm: Any, step: int) -> None:
        state = {"algorithm": algorithm.checkpoint_state(), "rng": rng_state(), "step": step}
        atomic_write(self.checkpoint, lambda fh: torch.save(state, fh))

    def append(self, record: Mapping[str, Any]) -> None:
        with open(self.results, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()


def evaluate_all(algorithm: Any, splits: Splits, device: torch.device, seed: int) -> dict[str, float]:
    """``env{i}_in_acc`` and ``env{i}_out_acc`` for every environment."""
    accs = {}
    for i, env in enumerate(splits.envs):
        accs[f"env{i}_in_acc"] = accuracy(algorithm, env, splits.ins[i], device, seed_hash(seed, i, "in"))
        accs[f"env{i}_out_acc"] = accuracy(algorithm, env, splits.outs[i], device, seed_hash(seed, i, "out"))
    return accs


def build_algorithm(spec: RunSpec, dataset: Any, device: torch.device) -> Any:
    """Seed everything from the run seed and construct the registered algorithm."""
    import moebench.algorithms  # noqa: F401  (registers the algorithms)
    from moebench.registry import ALGORITHMS

    bad = [e for e in spec.test_envs if not 0 <= e < len(dataset.envs)]
    if bad:
        raise ValueError(f"test env {bad[0]} out of range for {spec.dataset} ({len(dataset.envs)} environments)")
    np.random.seed(spec.seed % 2**32)
    torch.manual_seed(spec.seed)
    cls = ALGORITHMS.get(spec.algorithm)
    n_domains = len(dataset.envs) - len(spec.test_envs)
    algorithm = cls(dataset.input_shape, dataset.num_classes, n_domains, dict(spec.hparams), n_steps=spec.steps)
    return algorithm.to(device)


@dataclass(frozen=True)
class RunOptions:
    """How (not what) to train: these never change a run's identity.

    world: data-parallel ranks (see moebench.distributed); save_model: keep ``model.pt``
    (the trained network's state dict) when the run is done; progress: tqdm bar
    (None = only on a terminal).
    """

    world: World = World()
    save_model: bool = False
    progress: bool | None = None


def autocast(spec: RunSpec, device: torch.device) -> Any:
    """The run's precision: "bf16" autocasts the update and evaluation forwards."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.precision == "bf16")


def checkpoint_record(algorithm: Any, spec: RunSpec, splits: Splits, window: Mapping[str, list[float]],
                      step: int, device: torch.device, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The DomainBed record of one checkpoint (averages over the window since the last one)."""
    record: dict[str, Any] = {key: float(np.mean(vals)) for key, vals in window.items()}
    record.update(evaluate_all(algorithm, splits, device, spec.seed))
    batch_size = int(spec.hparams["batch_size"])
    record.update(step=step, epoch=step / splits.steps_per_epoch(batch_size), mem_gb=peak_memory_gb(device),
                  hparams=dict(spec.hparams), test_envs=list(spec.test_envs),
                  routing=algorithm.routing_stats(reset=True), **extra)
    return record


def train_run(spec: RunSpec, dataset: Any, data_path: str, run_dir: str | Path,
              device: torch.device, options: RunOptions = RunOptions()) -> Path:
    """Train one run under the DomainBed protocol; returns its run directory.

    Skips a run that is already ``done``; resumes one that has a checkpoint.
    """
    from tqdm import tqdm

    run_dir, world = Path(run_dir), options.world
    state = RunState(run_dir)
    if state.done.exists():
        log.info("done already: %s", run_dir)
        return run_dir
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "spec.json", json.dumps(spec.identity(), indent=1, sort_keys=True) + "\n")
    world.barrier()
    algorithm = build_algorithm(spec, dataset, device)
    average_gradients(algorithm.optimizer, world)
    start = state.restore(algorithm, truncate=world.is_main)
    splits = Splits(dataset.envs, spec)
    extra = {"args": run_args(spec, run_dir, data_path), "dataset": spec.dataset,
             "algorithm": spec.algorithm, "environments": list(dataset.environments)}
    window: dict[str, list[float]] = {}
    bar = tqdm(range(start, spec.steps), desc=f"{spec.algorithm}/{spec.dataset} {list(spec.test_envs)}",
               disable=True if not world.is_main else (None if options.progress is None else not options.progress),
               leave=False)
    for step in bar:
        t0 = time.time()
        with autocast(spec, device):
            out = algorithm.update(splits.minibatches(step, int(spec.hparams["batch_size"]), device, world))
        window.setdefault("step_time", []).append(time.time() - t0)
        for key, value in out.items():
            window.setdefault(key, []).append(float(value))
        if step % spec.checkpoint_freq == 0 or step == spec.steps - 1:
            if world.is_main:
                with autocast(spec, device):
                    record = checkpoint_record(algorithm, spec, splits, window, step, device, extra)
                state.append(record)
                state.save(algorithm, step)
                log.info("%s step %d loss %.4f %s", run_dir.name, step, record.get("loss", float("nan")),
                         " ".join(f"{k[:-4]}={v:.3f}" for k, v in record.items() if k.endswith("_acc")))
            world.barrier()
            window = {}
    if world.is_main:
        if options.save_model:
            net = getattr(algorithm, "network", algorithm)
            atomic_write(run_dir / "model.pt", lambda fh: torch.save(net.state_dict(), fh))
        atomic_write_text(state.done, "done\n")
        state.checkpoint.unlink(missing_ok=True)
    world.barrier()
    return run_dir


def train_batch(plan: Mapping[str, Any], batch_key: str, device: torch.device,
                options: RunOptions = RunOptions()) -> list[Path]:
    """Train every run of one plan batch in this process (loading its dataset once)."""
    from moebench.datasets import load_dataset

    if batch_key not in plan["batches"]:
        raise ValueError(f"batch {batch_key!r} is not in the sweep plan")
    entries = plan["batches"][batch_key]
    dirs = []
    datasets: dict[str, Any] = {}
    for n, entry in enumerate(entries, 1):
        spec = RunSpec.from_dict(entry["spec"])
        data_path = plan["data_paths"][spec.dataset]
        if spec.dataset not in datasets:
            datasets[spec.dataset] = load_dataset(spec.dataset, data_path)
        log.info("run %d/%d of %s: %s test_envs=%s trial=%d", n, len(entries), batch_key,
                 entry["run_id"], list(spec.test_envs), spec.trial_seed)
        dirs.append(train_run(spec, datasets[spec.dataset], data_path, entry["run_dir"], device, options))
    return dirs
