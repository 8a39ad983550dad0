"""End to end: the real workflow (data -> train -> collect -> tables, figure -> results/tables)
of the GLUE study on tiny params: a locally saved tiny BERT and tiny generated corpora."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glue_testlib import DING, FORTUNES, read_jsonl, save_tiny_bert

ROOT = Path(__file__).resolve().parents[2]


def _override(tmp_path: Path) -> dict:
    fortunes = tmp_path / "corpora" / "fortunes"
    fortunes.mkdir(parents=True)
    for name, text in FORTUNES.items():
        (fortunes / name).write_text(text * 3)
    ding = tmp_path / "corpora" / "de-en"
    ding.write_text(DING)
    model = save_tiny_bert(tmp_path / "tiny_bert", num_labels=2, layers=3)
    return {"studies": ["glue"], "glue": {
        "seeds": [0, 1], "model": {"name": str(model)}, "runs_per_job": 3,
        "corpora": {"fortunes": {"installed": str(fortunes)}, "ding": {"installed": str(ding)}},
        "data": {"fortunes_topic": {"build": {"topics": ["computers", "love"], "min_words": 3,
                                              "max_words": 12, "per_topic": 10}},
                 "ding_paraphrase": {"build": {"min_words": 3, "max_words": 10}}},
        "hparams": {"defaults": {"epochs": 2, "batch_size": 4, "eval_batch_size": 4,
                                 "max_length": 24, "freeze_layers": 1, "moe_layers": [2],
                                 "lr": 1.0e-3},
                    "methods": {"gmoe": {"num_experts": 4},
                                "mass": {"num_experts": 4, "mass_max_experts": 8,
                                         "mass_warmup_min": 1, "mass_window_min": 2,
                                         "mass_expansion_end": 0.5}}}}}


@pytest.mark.slow
def test_glue_study_end_to_end(tmp_path):
    for name in ("Snakefile", "workflow", "params"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(_override(tmp_path)))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "override.yaml",
           "--", "results/tables"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = tmp_path / "results" / "tables"
    for name in ("glue.txt", "glue.md", "glue.csv", "glue.tex", "glue_experts.txt",
                 "glue_vs_paper.csv", "glue_vs_paper.md"):
        assert (tables / name).is_file(), name
    text = (tables / "glue.txt").read_text().splitlines()
    assert text[1].split() == ["Method", "Fortunes-topic", "Ding-para", "Avg", "K", "k"]
    assert [line.split()[0] for line in text[3:]] == ["dense", "gmoe", "mass"]
    metrics = {p.name for p in (tables / "metrics").iterdir()}
    assert {"glue_dense.json", "glue_gmoe.json", "glue_mass.json"} <= metrics
    for ext in ("png", "pdf", "csv"):
        assert (tmp_path / f"results/figures/glue_experts.{ext}").is_file()
    summary = json.loads((tmp_path / "results/glue/summary.json").read_text())
    assert len(summary) == 2 * 3 * 2
    runs = list((tmp_path / "results/glue/runs").glob("*/*/*/done"))
    assert len(runs) == 12
    rec = read_jsonl(runs[0].parent / "results.jsonl")[-1]
    assert rec["epoch"] == 2 and rec["study"] == "glue"
    again = subprocess.run(cmd[:3] + ["-n"] + cmd[3:], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
