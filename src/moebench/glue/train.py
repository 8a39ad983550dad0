"""The authors' GLUE fine-tuning protocol for one run, with resumable records.

Per epoch: the training split in a seeded shuffled order, batches of ``batch_size`` with
dynamic padding, one optimizer step each (AdamW, linear schedule over the planned
T = epochs x ceil(N / batch_size) steps); then evaluation on the reported validation split
(batches of ``eval_batch_size``), one record, one checkpoint. The best epoch is the highest
task score (mean of the metric's values) on that split, starting from 0 as the authors;
training stops after ``early_stop`` evaluations without improvement.

Records (``results.jsonl``, see ``moebench.runs``): ``args``, ``hparams``, ``step``, ``epoch``,
``loss``, ``loss_aux``, ``step_time``, ``mem_gb``, ``moe_backend``, ``routing`` (per MoE layer:
load, dropped, tokens, mean_k, num_experts K; MASS adds active_experts, expansion_stopped,
the cumulative expansion events), ``trace`` (per MoE layer ``[step, K, mean k since the last
point]``), ``metric``, ``val`` (the metric's values, 0-1), ``val_score``, ``val_loss``,
``best_score``, ``best_epoch``. A non-finite loss ends the run with a ``"diverged": true``
record; the run is still marked done.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from moebench.device import peak_memory_gb
from moebench.glue.batches import Encoded, batch_slices, collate, epoch_order
from moebench.glue.metrics import metric_values, task_score
from moebench.glue.params import GlueRun, declarations
from moebench.moe import backend
from moebench.runs import RunState, diverged_record, is_finite, rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How (not what) to train: never part of a run's identity."""

    progress: Optional[bool] = False
    trace_points: int = 10         # trace points per epoch


@dataclass
class Tracker:
    """Best epoch and early stopping (best starts at 0, as the authors' ``best_metric``)."""

    best: float = 0.0
    best_epoch: int = 0
    bad: int = 0

    def update(self, epoch: int, score: float) -> None:
        if score > self.best:
            self.best, self.best_epoch, self.bad = score, epoch, 0
        else:
            self.bad += 1


def plan_steps(n_train: int, hparams: Mapping[str, Any]) -> tuple[int, int]:
    """(steps per epoch, planned steps T)."""
    per_epoch = math.ceil(n_train / int(hparams["batch_size"]))
    return per_epoch, per_epoch * int(hparams["epochs"])


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_method(run: GlueRun, num_labels: int, n_steps: int, device: torch.device,
                 hf: Optional[torch.nn.Module] = None) -> Any:
    """Seed from the run, load the pretrained classifier (or use ``hf``), build the method."""
    from moebench.glue.model import load_classifier

    cls = declarations()[run.method].load()
    seed_all(run.seed)
    if hf is None:
        hf = load_classifier(run.model, num_labels, run.revision)
    return cls(hf, run.hparams, n_steps).to(device)


@torch.no_grad()
def evaluate(method: Any, enc: Encoded, metric: str, batch_size: int,
             device: torch.device) -> dict[str, Any]:
    """{"val": metric values, "val_score", "val_loss"} on a split (eval mode)."""
    method.model.eval()
    preds, loss = [], 0.0
    try:
        for idx in batch_slices(np.arange(len(enc)), batch_size):
            batch = collate(enc, idx, device)
            logits = method.predict(batch)
            loss += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
            preds.append(logits.argmax(1).cpu())
    finally:
        method.model.train()
    values = metric_values(metric, enc.labels.tolist(), torch.cat(preds).tolist())
    return {"val": values, "val_score": task_score(values), "val_loss": loss / len(enc)}


class KTrace:
    """Per MoE layer ``[step, K, mean k since the previous point]`` during training."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[float, int]] = {}
        self.points: dict[str, list[list[float]]] = {}

    def reset(self, method: Any) -> None:
        self.points = {}
        self.last = {n: (0.0, 0) for n in method.routing_stats(reset=False)}

    def point(self, method: Any, step: int) -> None:
        for name, s in method.routing_stats(reset=False).items():
            choices, tokens = s["mean_k"] * s["tokens"], s["tokens"]
            c0, t0 = self.last.get(name, (0.0, 0))
            k = (choices - c0) / (tokens - t0) if tokens > t0 else float("nan")
            self.points.setdefault(name, []).append([int(step), int(s["num_experts"]), k])
            self.last[name] = (choices, tokens)


def train_epoch(method: Any, enc: Encoded, run: GlueRun, epoch: int, device: torch.device,
                trace: KTrace, options: RunOptions) -> dict[str, Any]:
    """One epoch of updates: {"loss", "loss_aux", "step_time"} means, or {"diverged": loss}."""
    from tqdm import tqdm

    batches = batch_slices(epoch_order(len(enc), run.seed, epoch), int(run.hparams["batch_size"]))
    every = max(1, len(batches) // max(1, options.trace_points))
    method.model.train()          # from_pretrained returns a model in eval mode
    trace.reset(method)
    sums = {"loss": 0.0, "loss_aux": 0.0, "step_time": 0.0}
    for i, idx in enumerate(tqdm(batches, desc=f"{run.task}/{run.method} s{run.seed} e{epoch}",
                                 disable=not options.progress, leave=False)):
        t0 = time.perf_counter()
        out = method.update(collate(enc, idx, device))
        sums["step_time"] += time.perf_counter() - t0
        if not is_finite(out["loss"]):
            return {"diverged": out["loss"]}
        sums["loss"] += out["loss"]
        sums["loss_aux"] += out["loss_aux"]
        if (i + 1) % every == 0 or i == len(batches) - 1:
            trace.point(method, method.step)
    return {k: v / len(batches) for k, v in sums.items()}


def run_args(run: GlueRun, run_dir: Path, data_dir: str, per_epoch: int, n_steps: int) -> dict:
    """The ``args`` of a record (paths here, never in the identity)."""
    return {"task": run.task, "method": run.method, "seed": run.seed, "model": run.model,
            "revision": run.revision, "run_id": run.run_id, "output_dir": str(run_dir),
            "data_dir": str(data_dir), "steps_per_epoch": per_epoch, "n_steps": n_steps}


def train_run(run: GlueRun, inputs: Any, run_dir: str | Path, device: torch.device,
              options: RunOptions = RunOptions(), hf: Optional[torch.nn.Module] = None) -> Path:
    """Fine-tune one run under the protocol; skips a done run, resumes a killed one.

    ``inputs``: a :class:`moebench.glue.driver.TaskInputs` (the task's tokenised splits and
    cached features); ``hf``: a classifier to use instead of loading ``run.model``.
    """
    run_dir = Path(run_dir)
    state = RunState(run_dir)
    if state.is_done():
        log.info("done already: %s", run_dir)
        return run_dir
    state.start(run.identity())
    meta = inputs.meta
    per_epoch, n_steps = plan_steps(inputs.n_train, run.hparams)
    method = build_method(run, int(meta["num_labels"]), n_steps, device, hf)
    train, val = inputs.splits(run, method.model, device)
    ckpt = state.load(truncate=True)
    tracker, first = Tracker(), 0
    if ckpt is not None:
        method.load_state_dict(ckpt["method"])
        set_rng_state(ckpt["rng"])
        tracker, first = Tracker(**ckpt["tracker"]), int(ckpt["epoch"]) + 1
    base = {"study": "glue", "task": run.task, "method": run.method, "seed": run.seed,
            "labels": meta.get("labels", "real"),
            "run_id": run.run_id,
            "args": run_args(run, run_dir, inputs.folder, per_epoch, n_steps),
            "hparams": dict(run.hparams), "metric": meta["metric"]}
    for epoch in range(first, int(run.hparams["epochs"])):
        if tracker.bad >= int(run.hparams["early_stop"]):
            break
        if not _epoch(method, train, val, run, epoch, device, state, base, tracker, options):
            break
    state.finish()
    return run_dir


def _epoch(method: Any, train: Encoded, val: Encoded, run: GlueRun, epoch: int,
           device: torch.device, state: RunState, base: dict, tracker: Tracker,
           options: RunOptions) -> bool:
    """Train, evaluate, record and checkpoint one epoch; False when the run diverged."""
    trace = KTrace()
    out = train_epoch(method, train, run, epoch, device, trace, options)
    if "diverged" in out:
        state.append(diverged_record({**base, "epoch": epoch + 1}, method.step, out["diverged"]))
        return False
    ev = evaluate(method, val, base["metric"], int(run.hparams["eval_batch_size"]), device)
    tracker.update(epoch + 1, ev["val_score"])
    record = {**base, **out, **ev, "step": method.step, "epoch": epoch + 1,
              "mem_gb": peak_memory_gb(device), "moe_backend": backend.used(),
              "routing": method.routing_stats(reset=True), "trace": trace.points,
              "best_score": tracker.best, "best_epoch": tracker.best_epoch}
    state.append(record)
    state.save({"method": method.state_dict(), "rng": rng_state(), "epoch": epoch,
                "tracker": asdict(tracker)}, method.step)
    log.info("%s/%s seed %d epoch %d: loss %.4f %s %.4f (best %.4f @ %d)", run.task, run.method,
             run.seed, epoch + 1, out["loss"], base["metric"], ev["val_score"], tracker.best,
             tracker.best_epoch)
    return True
