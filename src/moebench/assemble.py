"""Gather every study's tables into one folder, and the studies' headline numbers into
compact DVC metrics files.

A study's headline file (``headline.json`` or ``<name>_headline.json`` in its tables folder)
is a flat JSON dict ``{"<row>/<column>": number}`` (a key may have
more slashes: everything before the last one names the row). Each row becomes one metrics
file ``metrics/<row with / as _>.json`` holding ``{column: number}``, so ``dvc metrics show``
prints one line per row with a few short columns instead of one line of every table cell.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from moebench.errors import DataError


def metrics_rows(headline: Mapping[str, Any], where: str) -> dict[str, dict[str, float]]:
    """{row: {column: value}} of one headline dict (non-numbers are an error)."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in headline.items():
        if "/" not in key:
            raise DataError(f"{where}: headline key {key!r} needs a '/' (row/column)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{where}: headline {key!r} is not a number: {value!r}")
        row, column = key.rsplit("/", 1)
        rows.setdefault(row.replace("/", "_"), {})[column] = (
            None if isinstance(value, float) and math.isnan(value) else value)
    return rows


def is_headline(path: Path) -> bool:
    """A study's headline file: ``headline.json`` or ``<name>_headline.json``."""
    return path.name == "headline.json" or path.name.endswith("_headline.json")


def _copy_into(source: Path, out: Path, seen: dict[str, Path]) -> list[Path]:
    """Copy ``source`` (a folder's items, or a file) into ``out``; returns the headline files
    found (read into metrics, not copied)."""
    items = sorted(source.iterdir()) if source.is_dir() else [source]
    headlines = []
    for item in items:
        if item.name.startswith("."):
            continue
        if is_headline(item):
            headlines.append(item)
            continue
        if item.name in seen:
            raise DataError(f"{item.name} is in both {seen[item.name]} and {source}")
        seen[item.name] = source
        target = out / item.name
        shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
    return headlines


def assemble(sources: Iterable[str | Path], out: str | Path,
             headlines: Iterable[str | Path] = ()) -> Path:
    """Copy ``sources`` (folders or files) into ``out`` and write ``out/metrics/*.json`` from
    the headline files among them (and ``headlines``); built in a temporary folder and renamed
    into place, so ``out`` is never half-written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        seen: dict[str, Path] = {}
        found = list(map(Path, headlines))
        for source in map(Path, sources):
            if not source.exists():
                raise DataError(f"table source {source} does not exist")
            found += _copy_into(source, tmp, seen)
        (tmp / "metrics").mkdir(exist_ok=True)
        for path in found:
            try:
                headline = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(f"cannot read headline file {path}: {exc}") from None
            for row, values in metrics_rows(headline, str(path)).items():
                (tmp / "metrics" / f"{row}.json").write_text(
                    json.dumps(values, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
