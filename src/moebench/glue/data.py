"""Preparing a task folder (``taskdata.py``) from real GLUE data or from the embedded corpora.

Sources (``glue.data.<task>.source``):

* ``hub``: the parquet files of the Hugging Face dataset ``nyu-mll/glue`` at a pinned
  revision, ``{endpoint}/datasets/nyu-mll/glue/resolve/{revision}/{task}/{split}-00000-of-
  00001.parquet``, read with ``datasets.load_dataset("parquet", data_files=...)`` (the same
  files ``load_dataset("nyu-mll/glue", task, revision=...)`` reads; columns ``task_to_keys``
  + ``label`` + ``idx``).
* ``parquet``: a local copy of that layout, ``{local}/{task}/{split}-*.parquet`` (or
  ``{local}/{split}-*.parquet``).
* ``tsv``: the original GLUE files of ``download_glue_data.py`` (``{local}/CoLA/train.tsv``,
  ``dev.tsv``; MNLI ``dev_matched.tsv``): CoLA has no header (label in column 1, sentence in
  column 3), MRPC files start with a byte-order mark, string labels are mapped to the hub's
  label ids, quotes are literal (``QUOTE_NONE``).
* ``embedded``: built from a Debian corpus (``embedded.py``).

Every problem (missing split, missing column, unlabelled rows, server error) is one
:class:`DataError` line; the task folder is written only when everything loaded.
"""
from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from moebench.errors import DataError
from moebench.glue.study import HUB_DATASET, HUB_REVISION, TaskInfo, task_info
from moebench.glue.taskdata import Example, write_task

log = logging.getLogger(__name__)
HUB_ENDPOINT = "https://huggingface.co"


def hub_url(task: str, split: str, revision: str = HUB_REVISION,
            endpoint: str = HUB_ENDPOINT) -> str:
    """URL of one split's parquet file of ``nyu-mll/glue`` at ``revision``."""
    return (f"{endpoint.rstrip('/')}/datasets/{HUB_DATASET}/resolve/{revision}/"
            f"{task}/{split}-00000-of-00001.parquet")


def _rows_from_table(table: Any, info: TaskInfo, split: str, where: str) -> list[Example]:
    """Rows of a pandas DataFrame / datasets Dataset with the task's columns + label."""
    names = list(table.column_names if hasattr(table, "column_names") else table.columns)
    for col in (*info.columns, "label"):
        if col not in names:
            raise DataError(f"{where}: {split} has no column {col!r} (has: {', '.join(names)})")
    data = {c: list(table[c]) for c in (*info.columns, "label")}
    return [{c: (int(data[c][i]) if c == "label" else data[c][i]) for c in data}
            for i in range(len(data["label"]))]


def _load_parquet_files(files: Mapping[str, str], cache_dir: Optional[str]) -> Any:
    import datasets

    datasets.logging.set_verbosity_error()
    if not sys.stderr.isatty():
        datasets.disable_progress_bars()
    return datasets.load_dataset("parquet", data_files=dict(files), cache_dir=cache_dir)


def _probe(url: str, split: str, task: str, timeout: float = 30.0) -> None:
    """One HEAD request, so that a missing split and a failing server read differently."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise DataError(f"{task}: split {split!r} not found at {url} (HTTP 404)") from None
        if exc.code != 405:    # a server that refuses HEAD: let the download speak
            raise DataError(f"{task}: cannot download {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"{task}: cannot download {url}: {reason}") from None


def load_hub(info: TaskInfo, revision: str = HUB_REVISION, endpoint: str = HUB_ENDPOINT,
             cache_dir: Optional[str] = None) -> dict[str, list[Example]]:
    """Train and validation rows of ``info`` from the hub's parquet files."""
    splits = {}
    for split in ("train", info.validation):
        url = hub_url(info.name, split, revision, endpoint)
        _probe(url, split, info.name)
        try:
            table = _load_parquet_files({split: url}, cache_dir)[split]
        except OSError as exc:   # FileNotFoundError, connection and HTTP errors of the clients
            reason = " ".join(str(exc).split())[:200]
            raise DataError(f"{info.name}: cannot load {url}: {reason}") from None
        splits[split] = _rows_from_table(table, info, split, url)
    return splits


def load_local_parquet(info: TaskInfo, root: str | Path) -> dict[str, list[Example]]:
    """Train and validation rows from a local copy of the hub's parquet layout."""
    import pandas as pd

    root = Path(root)
    base = root / info.name if (root / info.name).is_dir() else root
    splits = {}
    for split in ("train", info.validation):
        files = sorted(base.glob(f"{split}-*.parquet"))
        if not files:
            raise DataError(f"{base}: split {split!r} not found (no {split}-*.parquet)")
        table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        splits[split] = _rows_from_table(table, info, split, str(files[0]))
    return splits


def _tsv_label(value: str, names: Optional[tuple], where: str) -> int:
    if names is None:
        try:
            return int(value)
        except ValueError:
            raise DataError(f"{where}: label {value!r} is not an integer") from None
    if value not in names:
        raise DataError(f"{where}: label {value!r} is not one of {', '.join(names)}")
    return names.index(value)


def _tsv_rows(path: Path, info: TaskInfo, split: str) -> list[Example]:
    layout = info.tsv
    with open(path, encoding="utf-8-sig", newline="") as fh:
        lines = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if layout["header"]:
        header, lines = lines[0], lines[1:]
        missing = [c for c in (*layout["text"], layout["label"]) if c not in header]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (has: {', '.join(header)})")
        cols = [header.index(c) for c in layout["text"]], header.index(layout["label"])
    else:
        cols = list(layout["text"]), layout["label"]
    rows = []
    for n, line in enumerate(lines, 2 if layout["header"] else 1):
        if not line:
            continue
        if len(line) <= max(*cols[0], cols[1]):
            raise DataError(f"{path}:{n}: {len(line)} fields, expected more")
        row = {c: line[i] for c, i in zip(info.columns, cols[0])}
        row["label"] = _tsv_label(line[cols[1]], layout.get("names"), f"{path}:{n}")
        rows.append(row)
    return rows


def load_tsv(info: TaskInfo, root: str | Path) -> dict[str, list[Example]]:
    """Train and validation rows from the original GLUE TSV folder of the task."""
    if info.tsv is None:
        raise DataError(f"task {info.name!r} has no TSV layout")
    files = {"train": "train.tsv", "validation": "dev.tsv", **info.tsv.get("files", {})}
    folder = Path(root) / info.tsv["dir"]
    splits = {}
    for split in ("train", info.validation):
        path = folder / files[split]
        if not path.is_file():
            raise DataError(f"{path}: not found (split {split!r} of {info.name})")
        splits[split] = _tsv_rows(path, info, split)
    return splits


def prepare_task(task: str, spec: Mapping[str, Any], out: str | Path,
                 corpora: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 cache_dir: str | Path = "data/glue/.corpora",
                 progress: Optional[bool] = None) -> Path:
    """Build the task folder ``out`` from ``spec`` (one ``glue.data.<task>`` entry)."""
    info = task_info(task)
    source = spec.get("source")
    meta: dict[str, Any] = {"num_labels": info.num_labels, "source": source}
    if source == "hub":
        revision = spec.get("revision") or HUB_REVISION
        endpoint = spec.get("endpoint") or HUB_ENDPOINT
        splits = load_hub(info, revision, endpoint, spec.get("cache_dir"))
        meta.update(dataset=HUB_DATASET, revision=revision)
    elif source == "parquet":
        splits = load_local_parquet(info, spec["local"])
    elif source == "tsv":
        splits = load_tsv(info, spec["local"])
    elif source == "embedded":
        splits, extra = _embedded(info, spec, corpora or {}, cache_dir, progress)
        meta.update(extra)
    else:
        raise DataError(f"glue.data.{task}.source: {source!r} is not one of hub, parquet, "
                        f"tsv, embedded")
    if source != "embedded":
        meta["label_names"] = None
    return write_task(out, info, splits, meta)


def _embedded(info: TaskInfo, spec: Mapping[str, Any], corpora: Mapping[str, Any],
              cache_dir: str | Path, progress: Optional[bool]
              ) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    from moebench.glue.corpora import corpus_path, corpus_source
    from moebench.glue.embedded import build_embedded

    name = "fortunes" if info.name == "fortunes_topic" else "ding"
    source = corpus_source(name, corpora.get(name))
    path, where = corpus_path(source, cache_dir, progress)
    log.info("%s: corpus %s (%s)", info.name, path, where)
    splits, meta = build_embedded(info.name, path, dict(spec.get("build") or {}))
    meta.update(corpus=name, corpus_from=where, corpus_license=source.license)
    return splits, meta
