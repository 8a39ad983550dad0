"""One training job: every run of a plan batch (one task) in one process.

The task folder is read and tokenised once per ``max_length``; with a frozen lower encoder
its features are computed once per (``max_length``, ``freeze_layers``) from the first run's
model (the frozen part is the pretrained model, the same for every method and seed).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from moebench.errors import RunError
from moebench.glue.batches import Encoded, cache_features, encode
from moebench.glue.params import GlueRun
from moebench.glue.taskdata import TaskData, read_task
from moebench.glue.train import RunOptions, train_run

log = logging.getLogger(__name__)


class TaskInputs:
    """A task's tokenised splits (and cached features), shared by the runs of a job."""

    def __init__(self, data: TaskData, folder: str | Path, tokenizer: Any) -> None:
        self.data, self.folder, self.tokenizer = data, str(folder), tokenizer
        self._enc: dict[tuple, tuple[Encoded, Encoded]] = {}

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.data.meta

    @property
    def n_train(self) -> int:
        return len(self.data.train)

    def splits(self, run: GlueRun, model: Any, device: torch.device) -> tuple[Encoded, Encoded]:
        """(train, validation) encodings for ``run`` (features filled when frozen)."""
        length, freeze = int(run.hparams["max_length"]), int(run.hparams["freeze_layers"])
        key = (length, freeze)
        if key not in self._enc:
            enc = tuple(encode(rows, self.data.columns, self.tokenizer, length)
                        for rows in (self.data.train, self.data.validation))
            if freeze:
                log.info("caching the features of %d frozen layers (%d + %d examples)",
                         freeze, len(enc[0]), len(enc[1]))
                for e in enc:
                    cache_features(model, e, device)
            self._enc[key] = enc
        return self._enc[key]


def train_batch(plan: Mapping[str, Any], key: str, device: torch.device,
                options: RunOptions = RunOptions(), only: Optional[set[str]] = None) -> list[Path]:
    """Train every run of batch ``key`` of ``plan`` (``only``: a subset of run ids)."""
    from moebench.glue.model import load_tokenizer

    if key not in plan["batches"]:
        raise RunError(f"batch {key!r} is not in the plan (valid: {', '.join(plan['batches'])})")
    entries = [e for e in plan["batches"][key] if only is None or e["run_id"] in only]
    dirs: list[Path] = []
    inputs: Optional[TaskInputs] = None
    for n, entry in enumerate(entries, 1):
        run = GlueRun.from_dict(entry["run"])
        if inputs is None:
            folder = Path(plan["data_root"]) / run.task
            inputs = TaskInputs(read_task(folder), folder, load_tokenizer(run.model, run.revision))
        log.info("run %d/%d of %s: %s %s seed %d (%s)", n, len(entries), key, run.task,
                 run.method, run.seed, entry["run_id"])
        dirs.append(train_run(run, inputs, entry["run_dir"], device, options))
    return dirs
