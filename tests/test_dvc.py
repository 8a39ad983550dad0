"""DVC around the workflow (all three studies) on tiny params: repro offline, status clean, push to a local
remote, pull into a fresh clone (the procedure the README documents)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny_studies import all_studies

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
def sh(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MOEBENCH_SNAKEMAKE_ARGS": "--configfile=tiny.yaml", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_repro_status_push_and_pull_into_a_fresh_clone(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Snakefile", "dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo)
    for name in ("workflow", "params", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "profiles").symlink_to("workflow/profiles")
    (repo / "tiny.yaml").write_text(yaml.safe_dump(all_studies(tmp_path / "inputs")))
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)

    sh("dvc", "repro", cwd=repo)
    tables = (repo / "results" / "tables" / "results.txt").read_text()
    assert "leave-one-domain-out" in tables and (repo / "results" / "figures").is_dir()
    assert "up to date" in sh("dvc", "status", cwd=repo)
    metrics = sh("dvc", "metrics", "show", cwd=repo)
    for row in ("dg_rotated_digits_erm", "glue_mass", "supernet_hat", "search_hat-s1"):
        assert f"results/tables/metrics/{row}" in metrics, metrics
    for name in ("glue.txt", "supernet.txt", "search.txt"):
        assert (repo / "results" / "tables" / name).is_file(), name
    assert max(len(line) for line in metrics.splitlines()) <= 120, metrics

    store = tmp_path / "store"
    sh("dvc", "remote", "add", "-d", "--local", "store", str(store), cwd=repo)
    sh("dvc", "push", cwd=repo)
    sh("git", "add", "dvc.lock", cwd=repo)
    sh("git", "commit", "-qm", "results", cwd=repo)

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    sh("dvc", "remote", "add", "-d", "--local", "store", str(store), cwd=clone)
    sh("dvc", "pull", cwd=clone)
    assert (clone / "results" / "tables" / "results.txt").read_text() == tables
    assert (clone / "data" / "rotated_digits.npz").exists()
    assert "up to date" in sh("dvc", "status", cwd=clone)
