"""GLUE params: parse-time validation with one line naming the file, the run grid, the
paper config."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moebench.errors import ParamsError
from moebench.glue.params import batch_runs, enumerate_runs, validate

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "params/glue/glue.yaml"
PAPER = ROOT / "params/paper/mass_glue.yaml"
SCHEMAS = ROOT / "workflow/schemas"


def _config(tmp_path: Path, change) -> tuple[dict, list[str]]:
    """The default params with ``change(glue)`` applied, written to a file of its own."""
    cfg = yaml.safe_load(DEFAULT.read_text())
    change(cfg["glue"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, [str(path)]


def _set(*keys, value):
    def change(glue):
        node = glue
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("tasks", value=["fortunes_topic", "colaa"]),
     "glue.tasks: [1] unknown task 'colaa'; valid: cola, rte, mnli"),
    (_set("methods", value=["dense", "moe"]), "glue.methods: [1] unknown method 'moe'"),
    (_set("hparams", "defaults", "moe_layers", value=[6]),
     "glue.hparams.defaults.moe_layers: layer index 6 out of range for a model of 6 layers "
     "(0..5)"),
    (_set("hparams", "task_method", "ding_paraphrase", "mass", value={"moe_layers": [-7]}),
     "glue.hparams.task_method.ding_paraphrase.mass.moe_layers: layer index -7 out of range"),
    (_set("hparams", "defaults", "moe_layers", value=[3]),
     "glue.hparams.defaults.moe_layers: layer 3 is frozen (freeze_layers = 5)"),
    (_set("hparams", "defaults", "freeze_layers", value=6),
     "glue.hparams.defaults.freeze_layers: 6 leaves no trainable layer of the model's 6"),
    (_set("hparams", "methods", "mass", "mass_tau", value=2.0),
     "glue.hparams.methods.mass.mass_tau: 2.0 is above the maximum 1"),
    (_set("hparams", "methods", "mass", "num_experts", value=17),
     "glue.hparams.methods.mass.num_experts: 17 is above the maximum mass_max_experts = 16"),
    (_set("hparams", "methods", "gmoe", "tau", value=0.5),
     "glue.hparams.methods.gmoe.tau: unknown hparam 'tau'"),
    (_set("hparams", "defaults", "moe_layers", value=[5, 5]),
     "glue.hparams.defaults.moe_layers: [5, 5] has repeated elements"),
    (_set("colour", value="red"), "glue.colour: unknown key 'colour'"),
    (_set("data", "cola", value={"source": "parquet"}), None),
])
def test_bad_params_stop_with_one_line(tmp_path, change, message):
    cfg, files = _config(tmp_path, change)
    if message is None:       # cola is not run: its data entry is not checked beyond schema
        validate(cfg, SCHEMAS, files)
        return
    with pytest.raises(ParamsError) as err:
        validate(cfg, SCHEMAS, files)
    text = str(err.value)
    assert text.startswith(f"{files[0]}: ") and message in text and "\n" not in text


def test_data_entries_must_fit_the_tasks(tmp_path):
    cfg, files = _config(tmp_path, _set("tasks", value=["cola"]))
    cfg["glue"]["data"]["cola"] = {"source": "embedded"}
    with pytest.raises(ParamsError, match="glue.data.cola.source: 'embedded' does not fit"):
        validate(cfg, SCHEMAS, files)
    cfg["glue"]["data"]["cola"] = {"source": "tsv"}
    with pytest.raises(ParamsError, match="glue.data.cola: source 'tsv' needs 'local'"):
        validate(cfg, SCHEMAS, files)
    del cfg["glue"]["data"]["cola"]
    with pytest.raises(ParamsError, match="glue.data: no entry for task 'cola'"):
        validate(cfg, SCHEMAS, files)


def test_the_default_grid():
    cfg = yaml.safe_load(DEFAULT.read_text())
    validate(cfg, SCHEMAS, [str(DEFAULT)])
    runs = enumerate_runs(cfg)
    assert [(r.task, r.method, r.seed) for r in runs[:4]] == [
        ("fortunes_topic", "dense", 0), ("fortunes_topic", "dense", 1),
        ("fortunes_topic", "gmoe", 0), ("fortunes_topic", "gmoe", 1)]
    assert len(runs) == 12 and len({r.run_id for r in runs}) == 12
    assert "moe_layers" not in runs[0].hparams and runs[-1].hparams["moe_layers"] == [5]
    batches = batch_runs(runs, 6)
    assert list(batches) == ["fortunes_topic/b0", "ding_paraphrase/b0"]
    local = copy.deepcopy(cfg)
    local["glue"]["data"]["fortunes_topic"]["local"] = "/somewhere"   # where, not what
    assert enumerate_runs(local)[0].run_id == runs[0].run_id


def test_the_paper_config_lists_the_whole_grid():
    cfg = yaml.safe_load(DEFAULT.read_text())
    paper = yaml.safe_load(PAPER.read_text())
    cfg["glue"] = _merge(cfg["glue"], paper["glue"])
    validate(cfg, SCHEMAS, [str(DEFAULT), str(PAPER)])
    runs = enumerate_runs(cfg)
    assert len(runs) == 5 * 3 * 3
    assert {r.model for r in runs} == {"bert-large-cased"}
    mass = {r.task: r.hparams for r in runs if r.method == "mass"}
    assert {t: h["moe_layers"] for t, h in mass.items()} == {
        "cola": [10], "rte": [10], "mnli": [10], "qnli": [10], "mrpc": [11]}
    assert {t: h["epochs"] for t, h in mass.items()} == {
        "cola": 10, "rte": 10, "mnli": 3, "qnli": 3, "mrpc": 10}
    h = mass["rte"]
    assert (h["lr"], h["batch_size"], h["eval_batch_size"], h["max_length"], h["freeze_layers"],
            h["mass_tau"], h["num_experts"], h["mass_max_experts"], h["mass_warmup_min"],
            h["mass_window_min"], h["mass_similarity_threshold"]) == (
        2e-5, 32, 8, 128, 0, 0.5, 8, 16, 30, 60, 0.001)


def _merge(base, over):
    """Snakemake's configfile merge: nested dicts update, everything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _workflow_copy(tmp_path: Path) -> Path:
    for name in ("Snakefile", "workflow", "params"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


@pytest.mark.slow
def test_snakemake_parse_fails_with_one_line(tmp_path):
    wf = _workflow_copy(tmp_path)
    (wf / "override.yaml").write_text(yaml.safe_dump(
        {"studies": ["glue"], "glue": {"hparams": {"defaults": {"moe_layers": [9]}}}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                           "--configfile", "override.yaml"], cwd=wf, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.splitlines() if x.startswith("moebench:")]
    assert len(lines) == 1 and lines[0].startswith("moebench: params error: ")
    assert lines[0].endswith("override.yaml: glue.hparams.defaults.moe_layers: layer index 9 "
                             "out of range for a model of 6 layers (0..5)")


@pytest.mark.slow
def test_snakemake_dry_run_lists_the_paper_grid(tmp_path):
    wf = _workflow_copy(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet",
                           "rules", "--configfile", "params/paper/mass_glue.yaml"], cwd=wf,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["glue_train"] == 45 and counts["glue_data"] == 5
    assert counts["tables"] == 1 and "dg_train" not in counts
