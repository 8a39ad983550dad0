"""The real Snakemake workflow on tiny params: end to end, and bad params stopping it early."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "sweep": {"datasets": ["colored_digits"], "algorithms": ["erm", "gmoe"], "trial_seeds": [0, 1],
              "runs_per_job": 12},
    "datasets": {"colored_digits": {"path": "data/colored_digits.npz", "steps": 4, "checkpoint_freq": 2,
                                    "build": {"seed": 0, "image_size": 8, "max_images": 300}}},
    "hparams": {"defaults": {"embed_dim": 16, "depth": 4, "num_heads": 2, "batch_size": 8}},
}


def workflow_copy(tmp_path: Path) -> Path:
    """The workflow files of the repo in a scratch folder (outputs land there, not in the repo)."""
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work)
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "params", work / "params")
    (work / "profiles").symlink_to("workflow/profiles")
    return work


def snakemake(work: Path, overrides: dict, *targets: str, dry: bool = False,
              pythonpath: str = "") -> subprocess.CompletedProcess:
    (work / "override.yaml").write_text(yaml.safe_dump(overrides))
    cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", "override.yaml"]
    if dry:
        cmd.append("-n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_end_to_end_tables_on_tiny_params(tmp_path):
    work = workflow_copy(tmp_path)
    proc = snakemake(work, TINY, "results/tables")
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = work / "results" / "figures"
    for stem in ("accuracy_iid_colored_digits", "bubble_iid", "curves_colored_digits",
                 "expert_load_iid_colored_digits"):
        for ext in ("png", "pdf", "csv"):
            assert (figures / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    assert (work / "results" / "tables" / "ours_vs_paper.csv").exists()
    tables = work / "results" / "tables"
    text = (tables / "results.txt").read_text()
    for method in ("training-domain validation set", "leave-one-domain-out cross-validation",
                   "test-domain validation set (oracle)"):
        assert f"model selection method: {method}" in text
    for slug in ("iid", "lodo", "oracle"):
        rows = (tables / f"{slug}_colored_digits.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["erm", "gmoe"]
        assert "X" not in rows[1] and ",," not in rows[1], rows  # every cell filled
    records = [json.loads(x) for x in (work / "results" / "dg" / "records.jsonl").read_text().splitlines()]
    # 2 algorithms x 2 trial seeds x (3 singles + 3 pairs) runs x checkpoints at steps 0, 2, 3
    assert len(records) == 2 * 2 * 6 * 3
    assert {r["step"] for r in records} == {0, 2, 3}
    assert (work / "results" / "logs" / "dg" / "tables.log").exists()
    summary = json.loads((tables / "summary.json").read_text())
    assert summary["diverged_runs"] == {}
    metrics = {p.stem: json.loads(p.read_text()) for p in (tables / "metrics").glob("*.json")}
    assert set(metrics) == {"dg_colored_digits_erm", "dg_colored_digits_gmoe"}
    assert set(metrics["dg_colored_digits_gmoe"]) == {"iid", "lodo", "oracle"}
    assert {r["moe_backend"] for r in records if r["algorithm"] == "gmoe"} <= {"native", "torch"}
    assert {r["moe_backend"] for r in records if r["algorithm"] == "erm"} == {"none"}
    # nothing left to do afterwards
    again = snakemake(work, TINY, "results/tables", dry=True)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"sweep": {"algorithms": ["erm", "gmoee"]}}, "override.yaml: sweep.algorithms[1]: unknown algorithm 'gmoee'"),
    ({"sweep": {"foo": 1}}, "override.yaml: sweep.foo: unknown key 'foo'"),
    ({"datasets": {"colored_digits": {"stepz": 3}}}, "override.yaml: datasets.colored_digits.stepz: unknown key 'stepz'"),
    ({"hparams": {"datasets": {"colored_digits": {"lrr": 0.1}}}}, "override.yaml: hparams.datasets.colored_digits.lrr: unknown hparam 'lrr'"),
    ({"sweep": {"holdout_fraction": 1.5}}, "override.yaml: sweep.holdout_fraction: 1.5 is invalid"),
    # the three cases of the issue that used to pass the parse and a dry run
    ({"hparams": {"algorithms": {"gmoe": {"top_k": 0}}}},
     "override.yaml: hparams.algorithms.gmoe.top_k: 0 is below the minimum 1"),
    ({"hparams": {"algorithms": {"mass": {"mass_tau": 2.0}}}},
     "override.yaml: hparams.algorithms.mass.mass_tau: 2.0 is above the maximum 1"),
    ({"hparams": {"algorithms": {"gmoe": {"lr": "fast"}}}},
     "override.yaml: hparams.algorithms.gmoe.lr: 'fast' must be a number"),
    ({"studies": ["dg", "vision"]}, "override.yaml: studies[1]: unknown study 'vision'"),
    ({"plugins": ["no_such_module_anywhere"]}, "plugin module 'no_such_module_anywhere' cannot be found"),
])
def test_bad_params_stop_before_any_job_with_one_line(tmp_path, overrides, message):
    work = workflow_copy(tmp_path)
    proc = snakemake(work, overrides, "results/tables")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "params error" in ln]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (work / "results").exists() and not (work / "data" / "colored_digits.npz").exists()


TOY_MODULE = '''"""A toy DomainBed algorithm: ERM whose logits are scaled (a plugin in one module)."""
from moebench.declare import Hp, declare
from moebench.dg.algorithms.erm import ERM

DECLARATION = declare(
    "toy", study="dg", cls="Toy", extends="erm", help="ERM with scaled logits",
    hparams=[Hp("toy_scale", float, "logit scale", min=0, min_open=True)])


class Toy(ERM):
    NAME = "toy"

    def predict(self, x):
        return self.network(x) * float(self.hparams["toy_scale"])
'''


@pytest.mark.slow
def test_a_plugin_algorithm_in_one_module_runs_through_the_workflow(tmp_path):
    """One module in a temporary package plus params entries; no file of the repo touched."""
    package = tmp_path / "plugins" / "toypkg"
    package.mkdir(parents=True)
    (package / "toy.py").write_text(TOY_MODULE)
    work = workflow_copy(tmp_path)
    tiny = {**TINY, "plugins": ["toypkg.toy"],
            "sweep": {**TINY["sweep"], "algorithms": ["erm", "toy"], "test_envs": "singles"},
            "hparams": {**TINY["hparams"], "algorithms": {"toy": {"toy_scale": 2.0}}}}
    bad = {**tiny, "hparams": {**tiny["hparams"], "algorithms": {"toy": {"toy_scale": 0}}}}
    proc = snakemake(work, bad, "results/tables", pythonpath=str(tmp_path / "plugins"))
    assert "override.yaml: hparams.algorithms.toy.toy_scale: 0 must be above 0" in proc.stderr
    proc = snakemake(work, tiny, "results/tables", pythonpath=str(tmp_path / "plugins"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (work / "results" / "tables" / "iid_colored_digits.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["erm", "toy"]
    records = [json.loads(x) for x in (work / "results" / "dg" / "records.jsonl").read_text().splitlines()]
    assert {r["hparams"]["toy_scale"] for r in records if r["algorithm"] == "toy"} == {2.0}
