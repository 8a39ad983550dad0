"""Validation of the merged params against JSON schemas, with one-line errors.

Snakemake merges ``params/*.yaml`` (and any ``--configfile``) into one config; each file owns
top-level sections (``sweep``, ``datasets``, ``hparams``, ``report``). Before any job starts we
check every section against ``workflow/schemas/<section>.schema.yaml`` and the registries, and
report the first problem as one line naming the key and the params file it came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jsonschema
import yaml

SECTIONS = ("sweep", "datasets", "hparams", "report")


class ParamsError(ValueError):
    """A bad params value; ``str()`` is one line naming key and file."""


def _defined_in(files: Sequence[str | Path], path: Sequence[Any]) -> str:
    """The last params file (later files override earlier) that defines ``path``."""
    found = "params"
    for f in files:
        try:
            node: Any = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            found = str(f)
    return found


def _describe(err: jsonschema.ValidationError) -> tuple[list[Any], str]:
    """(key path, short reason) of a schema error."""
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        return path + [extra[0]], f"unknown key {extra[0]!r}"
    if err.validator == "required":
        return path, err.message.replace("'", "").replace("is a required property", "is missing")
    return path, f"{err.instance!r} is invalid ({err.message.split(chr(10))[0]})"


def check_section(config: Mapping[str, Any], section: str, schema: Mapping[str, Any],
                  files: Sequence[str | Path]) -> None:
    """Validate ``config[section]`` against ``schema``; raise ParamsError on the first error."""
    if section not in config:
        raise ParamsError(f"params: section {section!r} is missing (looked in {', '.join(map(str, files))})")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config[section]),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        path, reason = _describe(errors[0])
        full = [section] + path
        where = _defined_in(files, full if "unknown" in reason else full[:-1] or full)
        raise ParamsError(f"{where}: {'.'.join(map(str, full))}: {reason}")


def check_names(config: Mapping[str, Any], files: Sequence[str | Path],
                algorithms: Iterable[str], datasets: Iterable[str]) -> None:
    """Every algorithm and dataset named in the sweep must be registered and configured."""
    algorithms, datasets = set(algorithms), set(datasets)
    for i, name in enumerate(config["sweep"]["algorithms"]):
        if name not in algorithms:
            where = _defined_in(files, ["sweep", "algorithms"])
            raise ParamsError(f"{where}: sweep.algorithms[{i}]: unknown algorithm {name!r}; valid: {', '.join(sorted(algorithms))}")
        if name not in (config["hparams"].get("algorithms") or {}):
            raise ParamsError(f"{_defined_in(files, ['hparams'])}: hparams.algorithms has no entry for {name!r}")
    for i, name in enumerate(config["sweep"]["datasets"]):
        if name not in datasets:
            where = _defined_in(files, ["sweep", "datasets"])
            raise ParamsError(f"{where}: sweep.datasets[{i}]: unknown dataset {name!r}; valid: {', '.join(sorted(datasets))}")
        if name not in config["datasets"]:
            raise ParamsError(f"{_defined_in(files, ['datasets'])}: datasets has no entry for {name!r}")


def load_schema(schema_dir: str | Path, section: str) -> dict[str, Any]:
    return yaml.safe_load((Path(schema_dir) / f"{section}.schema.yaml").read_text())


def validate_params(config: Mapping[str, Any], schema_dir: str | Path, files: Sequence[str | Path]) -> None:
    """Schema + registry checks of the whole config (raises ParamsError, one line)."""
    from moebench.catalog import ALGORITHM_NAMES, DATASET_ENV_COUNTS  # no torch import

    for section in SECTIONS:
        check_section(config, section, load_schema(schema_dir, section), files)
    check_names(config, files, ALGORITHM_NAMES, DATASET_ENV_COUNTS)
