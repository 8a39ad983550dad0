"""Run identity, resumable run state and record writing, shared by every study.

A run directory is named by a hash of the run's path-free identity and holds::

    spec.json       the identity (written when the run starts)
    results.jsonl   one record per evaluation, appended line by line
    checkpoint.pt   the resume point (atomic; removed when the run is done)
    done            written last: the run is finished (normally or diverged)

A run killed at any point and started again resumes from its last checkpoint; records after
that checkpoint are dropped first, so the resumed run writes the same records (timings aside)
as an uninterrupted one. Records of all studies share the keys ``args``, ``hparams``,
``step``, ``epoch``, ``loss``, ``step_time``, ``mem_gb``, ``moe_backend`` and ``routing``; a
run whose loss became non-finite ends with a record holding ``"diverged": true``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from moebench.errors import DataError, RunError
from moebench.io import atomic_write, atomic_write_jsonl, atomic_write_text

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def run_hash(identity: Mapping[str, Any], length: int = 16) -> str:
    """md5 of the identity as sorted JSON, first ``length`` hex digits."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.md5(blob.encode("utf-8")).hexdigest()[:length]


class RecordError(DataError):
    """A record or records file that cannot be used; the message names the file and key."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file; a truncated *last* line (a run killed mid-write) is skipped
    with a warning, a bad line anywhere else is an error."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s: skipping truncated last line %d (%s)", path, number, exc.msg)
                break
            raise RecordError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    return rows


def rng_state() -> dict[str, Any]:
    """torch (+ CUDA), numpy and python RNG states."""
    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state` (keys absent from old checkpoints are left alone)."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_finite(value: Any) -> bool:
    """False for nan / inf losses (a diverged run)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class RunState:
    """Where a run stands on disk: fresh, resumable from a checkpoint, or done."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.results = self.dir / "results.jsonl"
        self.checkpoint = self.dir / CHECKPOINT
        self.done = self.dir / "done"

    def is_done(self) -> bool:
        return self.done.exists()

    def start(self, identity: Mapping[str, Any]) -> None:
        """Create the directory and write ``spec.json`` (atomic)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "spec.json",
                          json.dumps(dict(identity), indent=1, sort_keys=True, default=str) + "\n")

    def load(self, truncate: bool = True) -> Optional[dict[str, Any]]:
        """The checkpoint's state dict (with ``"step"``), or None for a fresh run.

        ``truncate``: drop records past the checkpoint's step (a fresh run drops all), so the
        resumed run rewrites them; only the writing rank of a data-parallel run does this.
        """
        if not self.checkpoint.exists():
            if truncate:
                self.results.unlink(missing_ok=True)
            return None
        import torch

        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear line
            raise RunError(f"cannot load checkpoint {self.checkpoint}: {exc} "
                           f"(delete it to restart the run)") from None
        if truncate:
            kept = read_jsonl(self.results) if self.results.exists() else []
            atomic_write_jsonl(self.results, [r for r in kept if r["step"] <= state["step"]])
        log.info("resuming %s from step %d", self.dir, state["step"])
        return state

    def save(self, state: Mapping[str, Any], step: int) -> None:
        """Write ``state`` (plus ``"step"``) as the checkpoint, atomically."""
        import torch

        payload = {**state, "step": int(step)}
        atomic_write(self.checkpoint, lambda fh: torch.save(payload, fh))

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record (a line of sorted-key JSON), flushed."""
        with open(self.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.results) if self.results.exists() else []

    def finish(self, save: Optional[Callable[[Path], None]] = None) -> None:
        """Mark the run done (``save(dir)`` first writes any final artefact) and drop the
        checkpoint."""
        if save is not None:
            save(self.dir)
        atomic_write_text(self.done, "done\n")
        self.checkpoint.unlink(missing_ok=True)


def diverged_record(base: Mapping[str, Any], step: int, loss: Any, what: str = "loss") -> dict:
    """The final record of a run whose ``what`` became non-finite at ``step``."""
    log.warning("run diverged: %s = %s at step %d; stopping it (marked done, diverged)",
                what, loss, step)
    return {**base, "step": int(step), "diverged": True, "diverged_step": int(step),
            "loss": float("nan") if not is_finite(loss) else float(loss)}
