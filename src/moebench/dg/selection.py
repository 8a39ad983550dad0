"""Model selection under the DomainBed protocol (Gulrajani & Lopez-Paz, 2021).

Records (normalised, see :mod:`moebench.dg.reporting.records`; one per checkpoint) are grouped by
``(trial_seed, dataset, algorithm, test_env)``; a run with two test envs belongs to both of its
groups. Inside a group, the records of each ``hparams_seed`` form one candidate; a method turns
a candidate into a ``RunAcc`` (the chosen checkpoint's validation and test accuracy, or ``None``)
and the candidate with the highest validation accuracy wins. Test accuracy is always the
``env{t}_in_acc`` of the single-test-env run.

Tie rules (kept from DomainBed): between checkpoints the earliest step wins; between hparams
the highest ``hparams_seed`` wins. A NaN validation accuracy ranks below every number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from moebench.errors import DataError

Record = Mapping[str, Any]
GroupKey = tuple[int, str, str, int]  # (trial_seed, dataset, algorithm, test_env)


@dataclass(frozen=True)
class RunAcc:
    """Validation and test accuracy (fractions) of the checkpoint chosen inside one candidate."""

    val_acc: float
    test_acc: float
    step: int
    record: Record = field(compare=False, repr=False)  # the single-test-env record chosen


@dataclass(frozen=True)
class Selection:
    """The outcome of model selection for one ``(trial_seed, dataset, algorithm, test_env)``."""

    trial_seed: int
    dataset: str
    algorithm: str
    test_env: int
    hparams_seed: int
    step: int
    val_acc: float
    test_acc: float
    record: Record = field(compare=False, repr=False)


def _rank(value: float) -> float:
    """Sort key for a validation accuracy: NaN ranks lowest."""
    return -math.inf if value is None or math.isnan(value) else float(value)


def is_single(record: Record) -> bool:
    """True for a record of a run with exactly one test environment."""
    return len(record["test_envs"]) == 1


def count_envs(record: Record) -> int:
    """Number of environments, from the contiguous ``env{i}_out_acc`` keys."""
    n = 0
    while f"env{n}_out_acc" in record:
        n += 1
    return n


def group_records(records: Iterable[Record]) -> dict[GroupKey, list[Record]]:
    """Group records by ``(trial_seed, dataset, algorithm, test_env)`` (keys sorted); a record
    with several test envs is put in the group of each of them."""
    groups: dict[GroupKey, list[Record]] = {}
    for record in records:
        for test_env in record["test_envs"]:
            key = (record["trial_seed"], record["dataset"], record["algorithm"], test_env)
            groups.setdefault(key, []).append(record)
    return dict(sorted(groups.items()))


def _by_key(records: Iterable[Record], key: str) -> list[tuple[Any, list[Record]]]:
    """Partition records by ``record[key]``; partitions sorted by key, order kept inside."""
    parts: dict[Any, list[Record]] = {}
    for record in records:
        parts.setdefault(record[key], []).append(record)
    return sorted(parts.items(), key=lambda item: item[0])


def _first_best(candidates: Sequence[RunAcc]) -> RunAcc | None:
    """The candidate with the highest validation accuracy; the first one among equals."""
    if not candidates:
        return None
    return max(candidates, key=lambda acc: _rank(acc.val_acc))


class SelectionMethod:
    """A strategy choosing (hparams, checkpoint) per group; subclasses define ``run_acc``."""

    name: ClassVar[str] = ""
    slug: ClassVar[str] = ""

    def __init__(self) -> None:
        raise TypeError("selection methods are used through their classmethods")

    @classmethod
    def run_acc(cls, records: Sequence[Record]) -> RunAcc | None:
        """Best checkpoint of one candidate (records of one group and one hparams_seed)."""
        raise NotImplementedError

    @classmethod
    def hparams_accs(cls, records: Sequence[Record]) -> list[tuple[int, RunAcc]]:
        """``(hparams_seed, RunAcc)`` of every usable candidate in a group, best first
        (higher val first; equal val: higher hparams_seed first)."""
        accs = [(seed, cls.run_acc(part)) for seed, part in _by_key(records, "hparams_seed")]
        usable = [(seed, acc) for seed, acc in accs if acc is not None]
        return sorted(usable, key=lambda item: (_rank(item[1].val_acc), item[0]), reverse=True)

    @classmethod
    def best(cls, records: Sequence[Record]) -> tuple[int, RunAcc] | None:
        """The winning ``(hparams_seed, RunAcc)`` of a group, or None when nothing is usable."""
        ranked = cls.hparams_accs(records)
        return ranked[0] if ranked else None

    @classmethod
    def sweep_acc(cls, records: Sequence[Record]) -> float | None:
        """Test accuracy of the selected model of a group (a fraction), or None."""
        chosen = cls.best(records)
        return None if chosen is None else chosen[1].test_acc


class IIDAccuracySelectionMethod(SelectionMethod):
    """Training-domain validation: per checkpoint, val = mean ``env{i}_out_acc`` over the
    training envs (i != t); the checkpoint with the highest val is chosen (early stopping)."""

    name = "training-domain validation set"
    slug = "iid"

    @classmethod
    def step_acc(cls, record: Record) -> RunAcc:
        """Validation/test accuracy of one single-test-env checkpoint."""
        test_env = record["test_envs"][0]
        val_envs = [i for i in range(count_envs(record)) if i != test_env]
        val = float(np.mean([record[f"env{i}_out_acc"] for i in val_envs])) if val_envs else math.nan
        return RunAcc(val, float(record[f"env{test_env}_in_acc"]), int(record["step"]), record)

    @classmethod
    def run_acc(cls, records: Sequence[Record]) -> RunAcc | None:
        singles = sorted((r for r in records if is_single(r)), key=lambda r: r["step"])
        return _first_best([cls.step_acc(r) for r in singles])


class LeaveOneOutSelectionMethod(SelectionMethod):
    """Leave-one-domain-out cross-validation: at a step, for every env v != t the run trained
    without {t, v} gives val_v = ``env{v}_in_acc``; val = sum(val_v) / (n_envs - 1). A step
    lacking any pair run, or without exactly one single-test-env record, is discarded."""

    name = "leave-one-domain-out cross-validation"
    slug = "lodo"

    @classmethod
    def step_acc(cls, records: Sequence[Record]) -> RunAcc | None:
        """Validation/test accuracy of one step's records (single + pair runs), or None."""
        singles = [r for r in records if is_single(r)]
        if len(singles) != 1:
            return None
        test_env = singles[0]["test_envs"][0]
        n_envs = count_envs(records[0])
        held_out: dict[int, float] = {}
        for record in records:
            if len(record["test_envs"]) == 2:
                other = [e for e in record["test_envs"] if e != test_env]
                if len(other) == 1:
                    held_out[other[0]] = float(record[f"env{other[0]}_in_acc"])
        needed = [v for v in range(n_envs) if v != test_env]
        if not needed or any(v not in held_out for v in needed):
            return None
        val = float(np.sum([held_out[v] for v in needed]) / (n_envs - 1))
        test = float(singles[0][f"env{test_env}_in_acc"])
        return RunAcc(val, test, int(singles[0]["step"]), singles[0])

    @classmethod
    def run_acc(cls, records: Sequence[Record]) -> RunAcc | None:
        steps = [cls.step_acc(part) for _, part in _by_key(records, "step")]
        return _first_best([acc for acc in steps if acc is not None])


class OracleSelectionMethod(SelectionMethod):
    """Test-domain validation (oracle): the single-test-env run's *last* checkpoint only (no
    early stopping); val = ``env{t}_out_acc``, test = ``env{t}_in_acc``."""

    name = "test-domain validation set (oracle)"
    slug = "oracle"

    @classmethod
    def run_acc(cls, records: Sequence[Record]) -> RunAcc | None:
        singles = sorted((r for r in records if is_single(r)), key=lambda r: r["step"])
        if not singles:
            return None
        last = singles[-1]
        test_env = last["test_envs"][0]
        return RunAcc(float(last[f"env{test_env}_out_acc"]), float(last[f"env{test_env}_in_acc"]),
                      int(last["step"]), last)


SELECTION_METHODS: tuple[type[SelectionMethod], ...] = (
    IIDAccuracySelectionMethod,
    LeaveOneOutSelectionMethod,
    OracleSelectionMethod,
)


def get_selection_method(slug: str) -> type[SelectionMethod]:
    """The selection method with this slug (``iid``, ``lodo``, ``oracle``)."""
    for method in SELECTION_METHODS:
        if method.slug == slug:
            return method
    valid = ", ".join(m.slug for m in SELECTION_METHODS)
    raise DataError(f"unknown selection method {slug!r}; valid: {valid}")


def select_all(records: Iterable[Record], method: type[SelectionMethod]) -> list[Selection]:
    """Run ``method`` on every group; groups with no usable candidate are left out."""
    selections = []
    for (trial_seed, dataset, algorithm, test_env), group in group_records(records).items():
        chosen = method.best(group)
        if chosen is None:
            continue
        hparams_seed, acc = chosen
        selections.append(Selection(trial_seed, dataset, algorithm, test_env, hparams_seed,
                                    acc.step, acc.val_acc, acc.test_acc, acc.record))
    return selections
