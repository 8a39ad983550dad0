"""params/paper/*.yaml: valid params, the paper's grid and values, and the Slurm profile.

The dry runs build the real DAG of the full sweeps (no job runs, nothing is downloaded).
"""
import importlib.util
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from moebench.dg.params import validate
from moebench.dg.study import declarations, hparam_tables
from moebench.dg.sweep import batch_runs

ROOT = Path(__file__).resolve().parents[2]
BASE = [ROOT / "params" / "studies.yaml"] + [
    ROOT / "params" / "dg" / f"{s}.yaml" for s in ("sweep", "datasets", "hparams")] + [
    ROOT / "params" / "report.yaml"]
# the DomainBed study's paper files (the other studies' paper files have no `sweep`)
PAPER = sorted(p for p in (ROOT / "params" / "paper").glob("*.yaml")
               if "sweep" in (yaml.safe_load(p.read_text()) or {}))
N_ENVS = {"pacs": 4, "vlcs": 4, "office_home": 4, "terra_incognita": 4, "domain_net": 6}
# (datasets, algorithms, test-env sets per (dataset, algorithm, trial), runs) per file
GRIDS = {
    "gmoe_domainbed": (list(N_ENVS), ["erm", "gmoe"], 22 + 39, 2 * 61 * 3),
    "mass_domainbed": (list(N_ENVS)[:4], ["erm", "gmoe", "mass"], 16 + 24, 3 * 40 * 3),
    "reduced": (["pacs"], ["erm", "gmoe"], 4, 2 * 4 * 3),
}
GMOE_LR_WD = {"pacs": (3e-5, 1e-6), "vlcs": (3e-5, 1e-6), "office_home": (1e-5, 1e-6),
              "terra_incognita": (5e-5, 1e-4), "domain_net": (5e-5, 0.0)}
MASS_LR_WD_DELTA = {"pacs": (2e-5, 1e-6, 0.002), "vlcs": (3e-5, 1e-6, 0.002),
                    "office_home": (2e-5, 1e-6, 0.001), "terra_incognita": (4e-5, 1e-4, 0.001)}
DEIT_S = {"backbone": "deit_small_patch16_224", "patch_size": 16, "embed_dim": 384, "depth": 12,
          "num_heads": 6, "mlp_ratio": 4.0, "drop_path_rate": 0.1, "pretrained": "timm",
          "moe_init": "upcycle", "batch_size": 32}


def merged(path: Path) -> dict:
    """params/*.yaml deep-merged with one paper file, as `snakemake --configfile` does."""
    config: dict = {}
    for f in BASE + [path]:
        update_config(config, yaml.safe_load(f.read_text()))
    return config


def runs_of(name: str) -> list:
    config = merged(ROOT / "params" / "paper" / f"{name}.yaml")
    return validate(config, ROOT / "workflow" / "schemas", [str(f) for f in BASE])


def needs_algorithms(name: str) -> None:
    missing = [a for a in GRIDS[name][1] if a not in declarations()]
    assert not missing, f"algorithm(s) {missing} not declared"


def test_every_paper_file_is_known_and_named():
    assert [p.stem for p in PAPER] == sorted(GRIDS)
    names = [yaml.safe_load(p.read_text())["sweep"]["name"] for p in PAPER]
    assert len(set(names)) == len(names)
    assert yaml.safe_load((ROOT / "params/paper/reduced.yaml").read_text())["sweep"]["name"] == "reduced-pacs"


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_grid_counts_and_common_values(name):
    needs_algorithms(name)
    datasets, algorithms, sets, total = GRIDS[name]
    runs = runs_of(name)
    assert len(runs) == total and len({r.run_id for r in runs}) == total
    per = Counter((r.dataset, r.algorithm, r.trial_seed) for r in runs)
    assert set(per) == {(d, a, t) for d in datasets for a in algorithms for t in (0, 1, 2)}
    assert sum(per[(d, algorithms[0], 0)] for d in datasets) == sets
    for r in runs:
        assert r.hparams_seed == 0 and r.holdout_fraction == 0.2
        assert {k: r.hparams[k] for k in DEIT_S} == DEIT_S
        if name != "reduced":
            assert (r.steps, r.checkpoint_freq) == ((15001, 500) if r.dataset == "domain_net" else (5001, 300))
    if name == "reduced":
        assert {(r.steps, r.checkpoint_freq) for r in runs} == {(1001, 100)}
        assert {len(r.test_envs) for r in runs} == {1}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_per_dataset_hparams_match_the_specs(name):
    needs_algorithms(name)
    for r in runs_of(name):
        assert set(hparam_tables()[r.algorithm]) == set(r.hparams)
        if r.algorithm == "mass":
            lr, wd, delta = MASS_LR_WD_DELTA[r.dataset]
            assert r.hparams["mass_similarity_threshold"] == delta
            assert (r.hparams["num_experts"], r.hparams["mass_max_experts"], r.hparams["mass_tau"]) == (6, 8, 0.3)
        else:
            lr, wd = GMOE_LR_WD[r.dataset]
        assert (r.hparams["lr"], r.hparams["weight_decay"]) == (lr, wd), r.identity()
        if r.algorithm == "gmoe":
            assert (r.hparams["num_experts"], r.hparams["top_k"], r.hparams["router"]) == (6, 1, "cosine_topk")


def test_mass_sweep_reuses_the_gmoe_sweeps_erm_and_gmoe_runs():
    needs_algorithms("mass_domainbed")
    gmoe = {r.run_id for r in runs_of("gmoe_domainbed")}
    shared = [r for r in runs_of("mass_domainbed") if r.algorithm != "mass"]
    assert len(shared) == 240 and all(r.run_id in gmoe for r in shared)
    # same batch keys too, so the gmoe sweep's job markers count as done
    ids = {k: [r.run_id for r in v] for k, v in batch_runs(runs_of("gmoe_domainbed"), 1).items()}
    for key, batch in batch_runs(shared, 1).items():
        assert ids[key] == [r.run_id for r in batch]


def workflow_copy(tmp_path: Path) -> Path:
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work)
    for d in ("workflow", "params"):
        shutil.copytree(ROOT / d, work / d)
    (work / "profiles").symlink_to("workflow/profiles")
    return work


def dry_run(work: Path, paper: str, *extra: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-n", "results/tables",
           "--configfile", f"params/paper/{paper}.yaml", *extra]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def job_counts(out: str) -> dict[str, int]:
    table = out.split("Job stats:")[-1].split("Reasons:")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_dry_run_lists_the_full_paper_sweep(tmp_path):
    counts = job_counts(dry_run(workflow_copy(tmp_path), "gmoe_domainbed", "--quiet", "rules"))
    data = {f"dg_data_{d}": 1 for d in N_ENVS}
    assert counts == {**data, "dg_plan": 1, "dg_train": 366, "dg_collect": 1, "dg_tables": 1,
                      "dg_figures": 1, "dg_paper_table": 1, "tables": 1, "total": 377}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="needs snakemake-executor-plugin-slurm (pip install it to test the Slurm profile)")
def test_slurm_profile_dry_run_resources(tmp_path):
    out = dry_run(workflow_copy(tmp_path), "gmoe_domainbed", "--workflow-profile", "workflow/profiles/slurm")
    jobs = {}
    for block in out.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        wc = re.search(r"wildcards: dataset=(\w+)", block)
        res = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block)[1]))
        jobs.setdefault((rule, wc[1] if wc else None), []).append(res)
    assert len(jobs[("dg_train", "pacs")]) == 60 and len(jobs[("dg_train", "domain_net")]) == 126
    for (rule, ds), found in jobs.items():
        for res in found:
            if rule == "dg_train":
                runtime = "1440" if ds == "domain_net" else "240"
                assert res | {"gpu": "1", "cpus_per_task": "8", "mem_mb": "32000", "runtime": runtime} == res
            else:  # data, plan, collect, tables: CPU only
                assert "gpu" not in res and res["cpus_per_task"] in {"1", "2", "4"}
    assert jobs[("dg_data_domain_net", None)][0]["runtime"] == "480"
