"""dvc.yaml: every Python module a stage runs is under one of the stage's deps.

A stage runs its Snakemake target's jobs (minus those of the stages before it) and parses the
workflow. The modules are the CLIs in those jobs' shell commands plus the modules the rule
files import, closed over every ``moebench`` import found anywhere in their source (also the
imports inside functions, which run lazily), plus their parent packages.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from import_graph import ROOT, closure

STAGE_ORDER = ("data", "train", "search", "report")


def smk_imports() -> set[str]:
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *ROOT.glob("workflow/rules/**/*.smk")])
    return set(re.findall(r"^\s*(?:from|import) (moebench[\w.]*)", text, re.M))


def dry_run_clis(work: Path, target: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", target],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(re.findall(r"-m (moebench\.cli\.[\w.]+)", proc.stdout))


def stage_target(cmd: str) -> str:
    return cmd.split("--cores 2", 1)[1].split("$MOEBENCH")[0].strip()


@pytest.mark.slow
def test_every_module_a_stage_runs_is_one_of_its_deps(tmp_path):
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work)
    for d in ("workflow", "params"):
        shutil.copytree(ROOT / d, work / d)
    parse_time = closure(smk_imports())
    seen: set[str] = set()
    for name in [s for s in STAGE_ORDER if s in stages]:
        clis = dry_run_clis(work, stage_target(stages[name]["cmd"]))
        mine, seen = clis - seen, seen | clis
        deps = [ROOT / d for d in stages[name]["deps"] if isinstance(d, str)]
        for path in sorted(parse_time | closure(mine)):
            assert any(path == d or d in path.parents for d in deps), \
                f"stage {name}: {path.relative_to(ROOT)} is imported but not in its deps"
        for d in deps:  # outputs of earlier stages aside, every dep is a file of the repo
            if d.relative_to(ROOT).parts[0] not in ("data", "results"):
                assert d.exists(), f"stage {name}: dep {d.relative_to(ROOT)} does not exist"
    assert {"data", "train", "report"} <= set(stages)
