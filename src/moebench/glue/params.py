"""The GLUE study's params: validation (one line, naming the file) and the run grid.

Torch-free: the workflow calls :func:`validate` and :func:`enumerate_runs` while it parses.
A run is (task, method, seed) with its resolved hparams; its identity (model, data source,
hparams, ...) is path-free and its hash names the run directory
``<runs_root>/<task>/<method>/<run_hash>``. Runs are trained in batches of ``runs_per_job``
runs of one task (one process loads the task and its cached features once).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from moebench.config import _defined_in, check_section, load_schema
from moebench.declare import Declaration, Hp, hparam_table, package_declarations
from moebench.errors import ParamsError
from moebench.glue.study import (KNOWN_DEPTHS, LAYOUT, METHODS_PACKAGE, STUDY, STUDY_HPARAMS,
                                 TASKS)
from moebench.hparams import HparamsError, resolve_hparams
from moebench.io import atomic_write_json
from moebench.runs import run_hash

# data-spec keys that say where data comes from, not what it is (kept out of identities)
SOURCE_KEYS = frozenset({"local", "endpoint", "cache_dir"})


@dataclass(frozen=True)
class GlueRun:
    """One fine-tuning run."""

    task: str
    method: str
    seed: int
    model: str
    revision: Optional[str]
    hparams: Mapping[str, Any] = field(hash=False)
    data: Mapping[str, Any] = field(hash=False, default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """Path-free identity (its hash names the run directory)."""
        return {"study": STUDY, **asdict(self),
                "data": {k: v for k, v in self.data.items() if k not in SOURCE_KEYS}}

    @property
    def run_id(self) -> str:
        return run_hash(self.identity())

    def run_dir(self, root: str | Path) -> Path:
        return Path(root) / self.task / self.method / self.run_id

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GlueRun":
        return cls(**{k: v for k, v in d.items() if k != "study"})


def declarations() -> dict[str, Declaration]:
    """{name: declaration} of the study's methods (read without importing them)."""
    return {d.name: d for d in package_declarations(METHODS_PACKAGE) if d.study == STUDY}


def hparam_tables(decls: Mapping[str, Declaration]) -> dict[str, dict[str, Hp]]:
    return {name: hparam_table(d, decls, STUDY_HPARAMS) for name, d in decls.items()}


def _fail(files: Sequence[str], path: Sequence[Any], message: str) -> ParamsError:
    return ParamsError(f"{_defined_in(files, path)}: {'.'.join(map(str, path))}: {message}")


def model_depth(name: str) -> Optional[int]:
    """Encoder layers of ``glue.model.name`` when known without a download (None otherwise)."""
    if name in KNOWN_DEPTHS:
        return KNOWN_DEPTHS[name]
    config = Path(name) / "config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("num_hidden_layers", 0)) or None
    return None


def _check_names(glue: Mapping[str, Any], files: Sequence[str], methods: Sequence[str]) -> None:
    for i, task in enumerate(glue["tasks"]):
        if task not in TASKS:
            raise _fail(files, ["glue", "tasks"], f"[{i}] unknown task {task!r}; valid: "
                        f"{', '.join(TASKS)}")
        if task not in glue["data"]:
            raise _fail(files, ["glue", "data"], f"no entry for task {task!r}")
        source = glue["data"][task]["source"]
        if (source == "embedded") != (TASKS[task].kind == "embedded"):
            raise _fail(files, ["glue", "data", task, "source"],
                        f"{source!r} does not fit task {task!r} (a {TASKS[task].kind} task)")
        if source in ("parquet", "tsv") and "local" not in glue["data"][task]:
            raise _fail(files, ["glue", "data", task], f"source {source!r} needs 'local'")
    for i, method in enumerate(glue["methods"]):
        if method not in methods:
            raise _fail(files, ["glue", "methods"], f"[{i}] unknown method {method!r}; "
                        f"valid: {', '.join(sorted(methods))}")


def _where(glue: Mapping[str, Any], task: str, method: str, key: str) -> list[Any]:
    """Key path of the layer that sets ``key`` for (task, method) (pair > task > method >
    defaults, the resolution order)."""
    hp = glue.get("hparams") or {}
    layers = ((["task_method", task, method], ((hp.get("task_method") or {}).get(task) or {})
               .get(method)), (["tasks", task], (hp.get("tasks") or {}).get(task)),
              (["methods", method], (hp.get("methods") or {}).get(method)),
              (["defaults"], hp.get("defaults")))
    for path, layer in layers:
        if key in (layer or {}):
            return ["glue", "hparams", *path, key]
    return ["glue", "hparams", "defaults", key]


def _check_layers(glue: Mapping[str, Any], task: str, method: str, hparams: Mapping[str, Any],
                  depth: Optional[int], files: Sequence[str]) -> None:
    """moe_layers: a non-empty list of integers in range, above the frozen layers."""
    freeze = int(hparams["freeze_layers"])
    if depth is not None and freeze >= depth:
        raise _fail(files, _where(glue, task, method, "freeze_layers"),
                    f"{freeze} leaves no trainable layer of the model's {depth}")
    layers = hparams.get("moe_layers")
    if layers is None:
        return
    path = _where(glue, task, method, "moe_layers")
    if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise _fail(files, path, f"{layers!r} must be a non-empty list of integers")
    if len(set(layers)) != len(layers):
        raise _fail(files, path, f"{layers!r} names a layer twice")
    for i in layers:
        if depth is not None and not -depth <= i < depth:
            raise _fail(files, path, f"layer index {i} out of range for a model of {depth} "
                        f"layers (0..{depth - 1})")
        if depth is not None and i % depth < freeze:
            raise _fail(files, path, f"layer {i} is frozen (freeze_layers = {freeze}): MoE "
                        f"layers must be trained")


def resolve(glue: Mapping[str, Any], task: str, method: str, tables: Mapping[str, Any],
            files: Sequence[str]) -> dict[str, Any]:
    """The resolved hparams of (task, method); errors name the params file."""
    study_keys = {k for t in tables.values() for k in t}
    try:
        return resolve_hparams(glue.get("hparams") or {}, task, method, table=tables[method],
                               study_keys=study_keys, layout=LAYOUT)
    except HparamsError as err:
        path = [*str(err.key_path[0]).split("."), *err.key_path[1:]] if err.key_path else []
        raise ParamsError(f"{_defined_in(files, path)}: {err}") from None


def validate(config: Mapping[str, Any], schema_dir: str | Path, files: Sequence[str]) -> None:
    """Schema, names, hparams of every (task, method) and the layer indices (ParamsError)."""
    check_section(config, "glue", load_schema(schema_dir, "glue"), files)
    enumerate_runs(config, files)


def enumerate_runs(config: Mapping[str, Any], files: Sequence[str] = ()) -> list[GlueRun]:
    """Every run of the grid: tasks x methods x seeds, in that order (validated)."""
    glue = config["glue"]
    decls = declarations()
    _check_names(glue, files, list(decls))
    tables = hparam_tables(decls)
    model = glue["model"]
    depth = model_depth(model["name"])
    runs = []
    for task in glue["tasks"]:
        data = dict(glue["data"][task])
        for method in glue["methods"]:
            hparams = resolve(glue, task, method, tables, files)
            _check_layers(glue, task, method, hparams, depth, files)
            runs += [GlueRun(task, method, int(seed), model["name"], model.get("revision"),
                             hparams, data) for seed in glue["seeds"]]
    return runs


def batch_runs(runs: Sequence[GlueRun], runs_per_job: int) -> dict[str, list[GlueRun]]:
    """{"<task>/b<i>": runs}: consecutive runs of one task, at most ``runs_per_job`` each."""
    by_task: dict[str, list[GlueRun]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    return {f"{task}/b{i // runs_per_job}": rs[i:i + runs_per_job]
            for task, rs in by_task.items() for i in range(0, len(rs), runs_per_job)}


def write_plan(batches: Mapping[str, Sequence[GlueRun]], runs_root: str, data_root: str,
               path: str | Path) -> Path:
    """The plan the training jobs read: every batch's runs and their run directories."""
    plan = {"study": STUDY, "data_root": data_root, "batches": {
        key: [{"run": asdict(r), "run_id": r.run_id, "run_dir": str(r.run_dir(runs_root))}
              for r in runs] for key, runs in batches.items()}}
    return atomic_write_json(path, plan)
