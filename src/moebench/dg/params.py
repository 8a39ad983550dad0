"""Parse-time validation of the DomainBed study's params (torch-free; the workflow calls
:func:`validate` while Snakemake parses, before any job starts).

Sections ``sweep``, ``datasets``, ``hparams`` and ``report`` are checked against their JSON
schemas (the algorithm and dataset enums come from the declarations, not from a hand-kept
list), every random-search range against the declared bounds, and every run's resolved
hyperparameters (random draws included) against the algorithm's declaration. The first
problem is raised as one line naming the params file and the key, e.g.
``my.yaml: hparams.algorithms.gmoe.top_k: 0 is below the minimum 1``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from moebench.config import _defined_in, check_section, load_schema, locate
from moebench.dg import study
from moebench.errors import ParamsError
from moebench.hparams import HparamsError, check_ranges

SECTIONS = ("sweep", "datasets", "hparams", "report")


def schema(schema_dir: str | Path, section: str, algorithms: Sequence[str]) -> dict[str, Any]:
    """The section's JSON schema with the algorithm / dataset enums of the declarations."""
    out = copy.deepcopy(load_schema(schema_dir, section))
    props = out.get("properties", {})
    if section == "sweep":
        props["algorithms"]["items"]["enum"] = list(algorithms)
        props["datasets"]["items"]["enum"] = sorted(study.DATASET_ENV_COUNTS)
    if section == "report":
        props["algorithm_order"]["items"]["enum"] = list(algorithms)
    return out


def check_names(config: Mapping[str, Any], files: Sequence[str | Path],
                algorithms: Sequence[str]) -> None:
    """Every algorithm and dataset of the sweep is declared / known and configured."""
    for i, name in enumerate(config["sweep"]["algorithms"]):
        if name not in algorithms:
            raise ParamsError(f"{_defined_in(files, ['sweep', 'algorithms'])}: "
                              f"sweep.algorithms[{i}]: unknown algorithm {name!r}; "
                              f"valid: {', '.join(sorted(algorithms))}")
    for i, name in enumerate(config["sweep"]["datasets"]):
        if name not in study.DATASET_ENV_COUNTS:
            raise ParamsError(f"{_defined_in(files, ['sweep', 'datasets'])}: "
                              f"sweep.datasets[{i}]: unknown dataset {name!r}; "
                              f"valid: {', '.join(sorted(study.DATASET_ENV_COUNTS))}")
        if name not in config["datasets"]:
            raise ParamsError(f"{_defined_in(files, ['datasets'])}: datasets has no entry "
                              f"for {name!r}")


def validate(config: Mapping[str, Any], schema_dir: str | Path,
             files: Sequence[str | Path]) -> list:
    """Check the DomainBed sections and return every run of the sweep (``RunSpec`` list)."""
    from moebench.dg.sweep import enumerate_runs

    plugins = config.get("plugins") or []
    tables = study.hparam_tables(plugins)
    algorithms = list(tables)
    for section in SECTIONS:
        if section not in config:
            raise ParamsError(f"params: section {section!r} is missing")
    check_names(config, files, algorithms)
    for section in SECTIONS:
        check_section(config, section, schema(schema_dir, section, algorithms), files)
    try:
        check_ranges(config["hparams"], tables)
        return enumerate_runs(config, tables=tables, study_keys=study.study_keys(plugins))
    except HparamsError as err:
        raise ParamsError(locate(err, files)) from None


def algorithm_order(config: Mapping[str, Any]) -> list[str]:
    """The report's row order: ``report.algorithm_order`` if given, else the sweep's order."""
    return list(config["report"].get("algorithm_order") or config["sweep"]["algorithms"])
