# The GLUE study (MASS on BERT vs dense and GMoE-style MoE; params/glue/*.yaml, section
# `glue`): task data -> train (task x method x seed, one job per batch of runs of a task)
# -> collect -> tables (results/glue/tables) and the experts figure (results/figures).
# Validation runs while Snakemake parses: bad params stop with one line before any job.
import json
import shlex

from snakemake.utils import validate as _glue_schema_defaults

from moebench.config import files_setting as glue_files_setting
from moebench.errors import MoebenchError
from moebench.glue import params as glue_params

try:
    glue_params.validate(config, SCHEMAS, PARAM_FILES)
    _glue_schema_defaults(config["glue"], "../schemas/glue.schema.yaml")  # fills defaults
    GLUE_RUNS = glue_params.enumerate_runs(config, PARAM_FILES)
except MoebenchError as exc:
    fail(exc)

GLUE = config["glue"]
GLUE_DIR = "results/glue"
GLUE_DATA = GLUE["data_root"]
GLUE_RUNS_ROOT = GLUE["runs_root"]
GLUE_PLAN = f"{GLUE_DIR}/plan.json"
GLUE_BATCHES = glue_params.batch_runs(GLUE_RUNS, GLUE["runs_per_job"])
GLUE_TASKS = list(GLUE["tasks"])
GLUE_MARKERS = [f"{GLUE_RUNS_ROOT}/{key}.done" for key in GLUE_BATCHES]
GLUE_TABLE_FILES = [f"{GLUE_DIR}/tables/{name}.{ext}" for name in ("glue", "glue_experts")
                    for ext in ("txt", "md", "csv", "tex")] + [
                    f"{GLUE_DIR}/tables/glue_vs_paper.{ext}" for ext in ("csv", "md")]
GLUE_HEADLINE = f"{GLUE_DIR}/tables/headline.json"
GLUE_FIGURE = [f"results/figures/glue_experts.{ext}" for ext in ("png", "pdf", "csv")]


def _glue_json(value):
    return shlex.quote(json.dumps(value, sort_keys=True))


localrules: glue_plan, glue_collect, glue_tables, glue_all


rule glue_data:
    output:
        directory(f"{GLUE_DATA}/{{task}}"),
    wildcard_constraints:
        task="|".join(GLUE_TASKS),
    params:
        spec=lambda wc: _glue_json(GLUE["data"][wc.task]),
        corpora=_glue_json(GLUE.get("corpora") or {}),
    log:
        "results/logs/glue/data_{task}.log",
    threads: 1
    shell:
        "{PY} moebench.cli.glue.data --task {wildcards.task} --spec {params.spec} "
        "--corpora {params.corpora} --out {output} --cache-dir {GLUE_DATA}/.corpora "
        "--progress off > {log} 2>&1"


rule glue_plan:
    input:
        glue_files_setting(PARAM_FILES, ["glue", "studies", "plugins"]),
    output:
        GLUE_PLAN,
    run:
        glue_params.write_plan(GLUE_BATCHES, GLUE_RUNS_ROOT, GLUE_DATA, output[0])


rule glue_train:
    input:
        data=f"{GLUE_DATA}/{{task}}",
        plan=GLUE_PLAN,
    output:
        f"{GLUE_RUNS_ROOT}/{{task}}/{{batch}}.done",
    wildcard_constraints:
        task="|".join(GLUE_TASKS),
        batch=r"b\d+",
    params:
        device=GLUE["device"],
        threads=GLUE["threads"],
        backend=GLUE["moe_backend"],
        progress="on" if GLUE["progress"] else "off",
    log:
        "results/logs/glue/train/{task}/{batch}.log",
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=0 if GLUE["device"] == "cpu" else 1,
    shell:
        "{PY} moebench.cli.glue.train --plan {input.plan} "
        "--batch {wildcards.task}/{wildcards.batch} "
        "--marker {output} --device {params.device} --threads {params.threads} "
        "--moe-backend {params.backend} --progress {params.progress} > {log} 2>&1"


rule glue_collect:
    input:
        markers=GLUE_MARKERS,
        plan=GLUE_PLAN,
    output:
        summary=f"{GLUE_DIR}/summary.json",
        records=f"{GLUE_DIR}/records.jsonl",
    log:
        "results/logs/glue/collect.log",
    shell:
        "{PY} moebench.cli.glue.collect --plan {input.plan} --out {GLUE_DIR} > {log} 2>&1"


rule glue_tables:
    input:
        rules.glue_collect.output.summary,
    output:
        GLUE_TABLE_FILES,
        GLUE_HEADLINE,
    params:
        report=_glue_json(GLUE.get("report") or {}),
    log:
        "results/logs/glue/tables.log",
    shell:
        "{PY} moebench.cli.glue.tables --summary {input} --out {GLUE_DIR}/tables "
        "--report {params.report} > {log} 2>&1"


rule glue_figures:
    input:
        rules.glue_collect.output.summary,
    output:
        GLUE_FIGURE,
    log:
        "results/logs/glue/figures.log",
    threads: 1
    shell:
        "{PY} moebench.cli.glue.figures --summary {input} --out results/figures/glue_experts "
        "> {log} 2>&1"


rule glue_all:
    input:
        GLUE_TABLE_FILES,
        GLUE_HEADLINE,
        GLUE_FIGURE,


# what the final `results/tables` rule (workflow/rules/common.smk) gathers from this study
# (the headline becomes results/tables/metrics/glue_*.json)
STUDY_TABLES["glue"] = [*GLUE_TABLE_FILES, GLUE_HEADLINE]
STUDY_FIGURES["glue"] = GLUE_FIGURE
STUDY_TARGETS["data"]["glue"] = [f"{GLUE_DATA}/{task}" for task in GLUE_TASKS]
STUDY_TARGETS["train"]["glue"] = GLUE_MARKERS
