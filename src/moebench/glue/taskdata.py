"""The on-disk form of a prepared task, shared by every loader and by training.

A task folder holds ``train.jsonl`` and ``<validation split>.jsonl`` (one example per line:
the task's text columns and an integer ``label``) and ``meta.json`` (task, columns,
num_labels, label names, metric, the reported split, where the data came from and which
labels are real). It is written into a staging folder and renamed into place, so a folder
that exists is complete.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from moebench.errors import DataError
from moebench.fetch import publish, staging
from moebench.glue.study import TaskInfo
from moebench.io import atomic_write_json

Example = dict[str, Any]


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its meta.json and its two splits."""

    meta: Mapping[str, Any]
    train: list[Example]
    validation: list[Example]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.meta["columns"])

    @property
    def num_labels(self) -> int:
        return int(self.meta["num_labels"])


def check_examples(rows: Sequence[Example], info: TaskInfo, split: str, num_labels: int,
                   where: str) -> None:
    """Every row has the task's text columns (strings) and a label in [0, num_labels)."""
    for i, row in enumerate(rows):
        for col in (*info.columns, "label"):
            if col not in row:
                raise DataError(f"{where}: {split} example {i} has no column {col!r} "
                                f"(has: {', '.join(sorted(row))})")
        if not all(isinstance(row[c], str) for c in info.columns):
            raise DataError(f"{where}: {split} example {i}: text columns must be strings")
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_labels:
            raise DataError(f"{where}: {split} example {i}: label {label!r} is not in "
                            f"[0, {num_labels}) (unlabelled test split?)")
    if not rows:
        raise DataError(f"{where}: split {split!r} is empty")


def write_task(target: str | Path, info: TaskInfo, splits: Mapping[str, Sequence[Example]],
               meta: Mapping[str, Any]) -> Path:
    """Check and write a task folder atomically (``splits``: train + info.validation)."""
    target = Path(target)
    num_labels = int(meta["num_labels"])
    for split in ("train", info.validation):
        if split not in splits:
            raise DataError(f"{target}: split {split!r} is missing")
        check_examples(splits[split], info, split, num_labels, str(target))
    keep = (*info.columns, "label")
    with staging(target) as stage:
        for split in ("train", info.validation):
            with open(stage / f"{split}.jsonl", "w", encoding="utf-8") as fh:
                for row in splits[split]:
                    fh.write(json.dumps({k: row[k] for k in keep}, ensure_ascii=False) + "\n")
        full = {"task": info.name, "columns": list(info.columns), "metric": info.metric,
                "validation": info.validation, "labels": info.labels,
                "sizes": {s: len(splits[s]) for s in ("train", info.validation)}, **meta}
        atomic_write_json(stage / "meta.json", full)
        publish(stage, target)
    return target


def read_task(folder: str | Path) -> TaskData:
    """Load a task folder written by :func:`write_task`."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: not a prepared task folder (no meta.json); run the "
                        f"glue data rule first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))

    def rows(split: str) -> list[Example]:
        path = folder / f"{split}.jsonl"
        if not path.exists():
            raise DataError(f"{path}: missing")
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    return TaskData(meta, rows("train"), rows(meta["validation"]))
