"""The sweep grid: one tested function enumerates every training run.

A run is identified by a path-free dict (dataset, its build params, algorithm, test envs,
hparams seed, trial seed, resolved hparams, steps, ...); its directory name is a hash of that
identity, so the same run lands in the same place on every machine. Runs are grouped into
batches that one process trains one after another (``runs_per_job``), which keeps the
per-job start-up cost (importing torch) small.
"""
from __future__ import annotations

import functools
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from moebench.errors import ParamsError, RunError
from moebench.hparams import resolve_hparams, seed_hash
from moebench.runs import run_hash

TEST_ENV_MODES = ("singles_and_pairs", "singles")
PRECISIONS = ("fp32", "bf16")
# build params that say where data comes from, not what it is: kept out of run identities
SOURCE_PARAMS = frozenset({"existing_dir", "mirror", "cache_dir", "keep_archives", "retries", "progress"})


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run (DomainBed's train.py arguments)."""

    dataset: str
    algorithm: str
    test_envs: tuple[int, ...]
    hparams_seed: int
    trial_seed: int
    seed: int
    steps: int
    checkpoint_freq: int
    holdout_fraction: float
    hparams: Mapping[str, Any] = field(hash=False)
    data: Mapping[str, Any] = field(hash=False, default_factory=dict)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ParamsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def identity(self) -> dict[str, Any]:
        """Path-free identity; its hash names the run directory."""
        ident = asdict(self)
        ident["test_envs"] = list(self.test_envs)
        return ident

    @functools.cached_property
    def run_id(self) -> str:
        return run_hash(self.identity())

    def run_dir(self, root: str | Path) -> Path:
        return Path(root) / self.dataset / self.algorithm / self.run_id

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        d = dict(d)
        d["test_envs"] = tuple(d["test_envs"])
        return cls(**d)


def enumerate_test_envs(n_envs: int, mode: Any) -> list[tuple[int, ...]]:
    """Every single test env, plus every pair (what leave-one-domain-out needs).

    ``mode`` is "singles_and_pairs", "singles", or an explicit list of lists.
    Pairs need at least 3 environments (DomainBed's rule).
    """
    if isinstance(mode, str):
        if mode not in TEST_ENV_MODES:
            raise ParamsError(f"sweep.test_envs must be one of {TEST_ENV_MODES} or a list, got {mode!r}")
        sets = [(i,) for i in range(n_envs)]
        if mode == "singles_and_pairs" and n_envs >= 3:
            sets += list(itertools.combinations(range(n_envs), 2))
        return sets
    sets = [tuple(sorted(int(i) for i in s)) for s in mode]
    for s in sets:
        if not s or min(s) < 0 or max(s) >= n_envs:
            raise ParamsError(f"sweep.test_envs entry {list(s)} is out of range for {n_envs} environments")
    return sets


def enumerate_runs(config: Mapping[str, Any], env_counts: Callable[[str], int] | None = None,
                   tables: Optional[Mapping[str, Mapping[str, Any]]] = None,
                   study_keys: Optional[set[str]] = None) -> list[RunSpec]:
    """All runs of the sweep described by the merged params ``config``.

    Order: dataset, algorithm, trial seed, hparams seed, test envs (stable).
    ``env_counts(dataset)`` gives the number of environments (default: the study's table).
    With ``tables`` ({algorithm: declared hparams}) every resolved value, random draws
    included, is checked against the declarations (``HparamsError`` naming the key).
    """
    sweep, datasets = config["sweep"], config["datasets"]
    env_counts = env_counts or _study_env_count
    runs = []
    for ds_name in sweep["datasets"]:
        ds = datasets[ds_name]
        envs = enumerate_test_envs(env_counts(ds_name), sweep["test_envs"])
        resolved: dict[tuple[str, int, int], dict[str, Any]] = {}  # hparams do not depend on test envs
        for algorithm, trial, hseed, tenvs in itertools.product(
            sweep["algorithms"], sweep["trial_seeds"], range(sweep["n_hparams"]), envs
        ):
            key = (algorithm, trial, hseed)
            if key not in resolved:
                table = None if tables is None else tables[algorithm]
                resolved[key] = resolve_hparams(config["hparams"], ds_name, algorithm, hseed, trial,
                                                table=table, study_keys=study_keys)
            hparams = dict(resolved[key])
            runs.append(
                RunSpec(
                    dataset=ds_name, algorithm=algorithm, test_envs=tenvs,
                    hparams_seed=hseed, trial_seed=trial,
                    seed=seed_hash(ds_name, algorithm, list(tenvs), hseed, trial),
                    steps=int(ds["steps"]), checkpoint_freq=int(ds["checkpoint_freq"]),
                    holdout_fraction=float(sweep["holdout_fraction"]),
                    hparams=hparams,
                    data={k: v for k, v in (ds.get("build") or {}).items() if k not in SOURCE_PARAMS},
                    precision=sweep.get("precision", "fp32"),
                )
            )
    return runs


def batch_runs(runs: Sequence[RunSpec], runs_per_job: int) -> dict[str, list[RunSpec]]:
    """Group runs into batches ``<dataset>/<algorithm>/b<k>`` of at most ``runs_per_job``."""
    if runs_per_job < 1:
        raise ParamsError(f"sweep.runs_per_job must be >= 1, got {runs_per_job}")
    batches: dict[str, list[RunSpec]] = {}
    keyfn = lambda r: (r.dataset, r.algorithm)  # noqa: E731
    for (ds, algo), group in itertools.groupby(sorted(runs, key=keyfn), key=keyfn):
        group = list(group)
        for k in range(0, len(group), runs_per_job):
            batches[f"{ds}/{algo}/b{k // runs_per_job:03d}"] = group[k : k + runs_per_job]
    return batches


def write_plan(batches: Mapping[str, Iterable[RunSpec]], runs_root: str, data_paths: Mapping[str, str],
               path: str | Path, plugins: Sequence[str] = ()) -> None:
    """Write the plan: every batch with its runs' specs and directories (atomic), and the
    plugin modules the algorithms may come from."""
    from moebench.io import atomic_write_text

    plan = {
        "runs_root": runs_root,
        "data_paths": dict(data_paths),
        "plugins": list(plugins),
        "batches": {
            key: [{"run_id": r.run_id, "run_dir": str(r.run_dir(runs_root)), "spec": r.identity()} for r in runs]
            for key, runs in batches.items()
        },
    }
    atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True) + "\n")


def read_plan(path: str | Path) -> dict[str, Any]:
    """Load a plan written by :func:`write_plan` (one-line error if unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read sweep plan {path}: {exc}") from None


def _study_env_count(dataset: str) -> int:
    from moebench.dg.study import DATASET_ENV_COUNTS  # no torch import at DAG time

    if dataset not in DATASET_ENV_COUNTS:
        raise ParamsError(f"unknown dataset {dataset!r}; valid: {', '.join(sorted(DATASET_ENV_COUNTS))}")
    return DATASET_ENV_COUNTS[dataset]
