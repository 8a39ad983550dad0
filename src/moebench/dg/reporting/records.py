"""Load run records — ours and those written by DomainBed's ``train.py`` — into one form.

A *raw* record is one line of a run's ``results.jsonl`` (one line per checkpoint). Ours carry
top-level ``dataset``, ``algorithm``, ``test_envs``, ``environments`` and ``routing``;
DomainBed's carry only ``args`` (dataset, algorithm, test_envs, trial_seed, hparams_seed, ...),
``hparams``, ``step`` and the ``env{i}_in_acc`` / ``env{i}_out_acc`` accuracies.

A *normalised* record keeps every raw key and guarantees these top-level keys:
``dataset`` (str), ``algorithm`` (str), ``test_envs`` (list[int]), ``trial_seed`` (int),
``hparams_seed`` (int), ``step`` (int), ``environments`` (list[str], one label per env) and
``routing`` (dict, ``{}`` for dense models or DomainBed records). Identity always comes from
the record itself (``args`` first), never from its path. Normalising is idempotent, so a
collected ``records.jsonl`` loads through the same code.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from moebench.errors import DataError
from moebench.runs import RecordError, read_jsonl  # noqa: F401 (re-exported)
from moebench.dg.selection import count_envs

logger = logging.getLogger(__name__)

Record = dict[str, Any]

RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"

#: Environment labels (table column headers) of DomainBed's datasets, in env-index order.
DOMAINBED_ENVIRONMENTS: dict[str, tuple[str, ...]] = {
    "Debug28": ("0", "1", "2"),
    "Debug224": ("0", "1", "2"),
    "ColoredMNIST": ("+90%", "+80%", "-90%"),
    "RotatedMNIST": ("0", "15", "30", "45", "60", "75"),
    "VLCS": ("C", "L", "S", "V"),
    "PACS": ("A", "C", "P", "S"),
    "OfficeHome": ("A", "C", "P", "R"),
    "TerraIncognita": ("L100", "L38", "L43", "L46"),
    "DomainNet": ("clip", "info", "paint", "quick", "real", "sketch"),
}

_IDENTITY_KEYS = ("dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed")


def env_labels(dataset: str, record: Mapping[str, Any]) -> list[str]:
    """Env labels: the record's ``environments``, else DomainBed's labels, else ``env0..``."""
    n = count_envs(record)
    given = record.get("environments")
    if given is not None:
        labels = [str(label) for label in given]
        if len(labels) != n:
            raise RecordError(
                f"'environments' has {len(labels)} labels but the record has {n} env accuracies"
            )
        return labels
    known = DOMAINBED_ENVIRONMENTS.get(dataset)
    if known is not None and len(known) == n:
        return list(known)
    return [f"env{i}" for i in range(n)]


def _identity_value(raw: Mapping[str, Any], key: str, source: str) -> Any:
    """Read an identity key from ``args`` (DomainBed's place) or else from the top level."""
    args = raw.get("args") or {}
    if key in args and args[key] is not None:
        value = args[key]
        top = raw.get(key)
        if top is not None and top != value:
            logger.warning("%s: top-level %s=%r differs from args.%s=%r; using args",
                           source, key, top, key, value)
        return value
    if raw.get(key) is not None:
        return raw[key]
    raise RecordError(f"{source}: record has no {key!r} (neither in 'args' nor at top level)")


def normalise_record(raw: Mapping[str, Any], source: str = "<record>") -> Record:
    """Return a normalised copy of one raw record (see the module docstring)."""
    if not isinstance(raw, Mapping):
        raise RecordError(f"{source}: a record must be a JSON object, got {type(raw).__name__}")
    ident = {key: _identity_value(raw, key, source) for key in _IDENTITY_KEYS}
    test_envs = ident["test_envs"]
    if isinstance(test_envs, int):
        test_envs = [test_envs]
    if not isinstance(test_envs, list) or not test_envs:
        raise RecordError(f"{source}: 'test_envs' must be a non-empty list, got {test_envs!r}")
    if "step" not in raw:
        raise RecordError(f"{source}: record has no 'step'")
    n_envs = count_envs(raw)
    if n_envs == 0:
        raise RecordError(f"{source}: record has no 'env0_out_acc' accuracy")
    for i in range(n_envs):
        if f"env{i}_in_acc" not in raw:
            raise RecordError(f"{source}: record has no 'env{i}_in_acc'")
    record = dict(raw)
    record.update(
        dataset=str(ident["dataset"]), algorithm=str(ident["algorithm"]),
        test_envs=[int(t) for t in test_envs], trial_seed=int(ident["trial_seed"]),
        hparams_seed=int(ident["hparams_seed"]), step=int(raw["step"]),
    )
    try:
        record["environments"] = env_labels(record["dataset"], raw)
    except RecordError as exc:
        raise RecordError(f"{source}: {exc}") from None
    record["routing"] = dict(raw.get("routing") or {})
    return record


def load_results_file(path: str | os.PathLike[str]) -> list[Record]:
    """Load and normalise every record of one ``results.jsonl`` (or collected records file)."""
    rows = read_jsonl(path)
    return [normalise_record(row, f"{path}:{i}") for i, row in enumerate(rows, start=1)]


def find_results_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``results.jsonl`` under ``root`` (recursively, ``root`` included), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"input directory not found: {root}")
    return sorted(root.rglob(RESULTS_FILE))


def _results_of_run(run: Path) -> Path:
    """The results file of a run given as a directory or as the results file itself."""
    if run.is_file():
        return run
    if run.is_dir():
        path = run / RESULTS_FILE
        if path.is_file():
            return path
        raise DataError(f"run directory has no {RESULTS_FILE}: {run}")
    raise DataError(f"run directory not found: {run}")


def load_runs(runs: Iterable[str | os.PathLike[str]], *, require_done: bool = False) -> list[Record]:
    """Load the records of the given run directories (or ``results.jsonl`` paths), in order.

    With ``require_done`` a run whose directory has no ``done`` marker is skipped (logged). A
    run given twice is read once (duplicates would break leave-one-domain-out selection).
    """
    records: list[Record] = []
    seen: set[Path] = set()
    for run in runs:
        path = _results_of_run(Path(run))
        if path.resolve() in seen:
            logger.warning("run given more than once, read once: %s", path.parent)
            continue
        seen.add(path.resolve())
        if require_done and not (path.parent / DONE_FILE).exists():
            logger.info("skipping unfinished run (no %s marker): %s", DONE_FILE, path.parent)
            continue
        records.extend(load_results_file(path))
    return records


def load_sweep(input_dir: str | os.PathLike[str], *, require_done: bool = False) -> list[Record]:
    """Load every run under a sweep directory: DomainBed's ``SWEEP/<hash>/results.jsonl`` or our
    nested ``results/runs/<dataset>/<algorithm>/<id>/results.jsonl`` (searched recursively)."""
    return load_runs(find_results_files(input_dir), require_done=require_done)


def read_runs_file(path: str | os.PathLike[str]) -> list[Path]:
    """Run directories listed in a text file, one per line (blank lines and ``#`` comments
    ignored); relative paths are taken relative to the current directory."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"runs file not found: {path}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Path(line) for line in lines if line and not line.startswith("#")]


def load_records_input(records: str | None, input_dir: str | None) -> list[Record]:
    """Records for a reporting CLI: a collected records file, or a sweep directory.

    Raises FileNotFoundError / ValueError (one line) when the file is missing or empty.
    """
    if records:
        if not Path(records).is_file():
            raise DataError(f"records file not found: {records}")
        loaded = load_results_file(records)
    else:
        loaded = load_sweep(input_dir)
    if not loaded:
        raise DataError(f"no records in {records or input_dir}")
    return loaded
