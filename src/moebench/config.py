"""Validation of the merged params against JSON schemas, with one-line errors (every study).

Snakemake merges ``params/**/*.yaml`` (and any ``--configfile``) into one config; each file
owns top-level sections (``studies``, ``sweep``, ``datasets``, ``hparams``, ``report``,
``glue``, ``supernet``). Before any job starts each study checks its sections against
``workflow/schemas/<section>.schema.yaml`` and its declarations, and reports the first problem
as one line naming the params file and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import jsonschema
import yaml

from moebench.errors import ParamsError

STUDIES = ("dg", "glue", "supernet")


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


def load_schema(schema_dir: str | Path, section: str) -> dict[str, Any]:
    return yaml.safe_load((Path(schema_dir) / f"{section}.schema.yaml").read_text())


def locate(err: Exception, files: Sequence[str | Path]) -> str:
    """``"<params file>: <error>"`` for an error with a ``key_path`` (HparamsError)."""
    path = getattr(err, "key_path", ())
    return f"{_defined_in(files, list(path))}: {err}" if path else str(err)


def check_studies(config: Mapping[str, Any], files: Sequence[str | Path]) -> list[str]:
    """The ``studies`` list (every entry a known study, no repeats) and ``plugins`` list."""
    studies = config.get("studies")
    where = _defined_in(files, ["studies"])
    if not isinstance(studies, list) or not studies:
        raise ParamsError(f"{where}: studies: must be a non-empty list of {', '.join(STUDIES)}")
    for i, name in enumerate(studies):
        if name not in STUDIES:
            raise ParamsError(f"{where}: studies[{i}]: unknown study {name!r}; "
                              f"valid: {', '.join(STUDIES)}")
    if len(set(studies)) != len(studies):
        raise ParamsError(f"{where}: studies: {studies} repeats a study")
    plugins = config.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ParamsError(f"{_defined_in(files, ['plugins'])}: plugins: must be a list of "
                          f"module names, got {plugins!r}")
    return list(studies)


def files_setting(files: Sequence[str | Path], sections: Sequence[str]) -> list[str]:
    """The params files among ``files`` that set any of the top-level ``sections`` (a rule
    that plans one study lists only these as inputs, so another study's params never
    re-plan it); an unreadable file counts."""
    out = []
    for f in files:
        try:
            data = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError):
            data = None
        if not isinstance(data, Mapping) or set(data) & set(sections):
            out.append(str(f))
    return out
