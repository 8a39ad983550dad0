# The supernet study, part 1 (HAT / Mixture-of-Supernets): corpus -> SentencePiece ->
# one supernet per FFN variant x experts x seed (sandwich rule) -> valid loss and BLEU of the
# largest, smallest and a fixed set of sampled subnets -> results/supernet/tables + figure.
# Params: config["supernet"] (params/supernet/*.yaml), checked here before any job starts.
import shlex
from pathlib import Path

from moebench.config import check_section, load_schema
from moebench.errors import MoebenchError
from moebench.supernet import train_params as SN_PARAMS
from moebench.supernet.space import Space as _SNSpace

try:
    check_section(config, "supernet", load_schema(SCHEMAS, "supernet"), PARAM_FILES)
    SN = config["supernet"]
    SN_PARAMS.check(SN)
    _SNSpace.from_params(SN["space"])
except (MoebenchError, ValueError) as exc:
    fail(exc)

SN_RUNS = [k.name for k in SN_PARAMS.run_grid(SN)]
SN_DATA = SN["data"]
SN_DIR = SN_DATA["dir"]
SN_DING = SN_DATA["corpus"] == "ding"
SN_SPM = f"{SN_DIR}/spm.model" if SN_DING else None
SN_SECTION = shlex.quote(SN_PARAMS.section_json(SN))
SN_EVAL = shlex.quote(SN_PARAMS.section_json(SN["eval"]))
SN_CORPUS_ARGS = (f"--corpus-kind {SN_DATA['corpus']} --data-dir {SN_DIR}"
                  + (f" --spm-model {SN_SPM}" if SN_DING else ""))
SN_DEVICE = SN["device"]
STUDY_TABLES["supernet"] = ["results/supernet/tables"]  # part 2 appends its tables
STUDY_FIGURES["supernet"] = [f"results/figures/supernet_subnets.{e}" for e in ("png", "pdf", "csv")]
STUDY_TARGETS["data"]["supernet"] = [f"{SN_DIR}/corpus.json"] + ([SN_SPM] if SN_DING else [])
STUDY_TARGETS["train"]["supernet"] = [f"results/supernet/runs/{r}.json" for r in SN_RUNS]

localrules: supernet_all, supernet_tables


def _sn_data_args():
    if SN_DING:
        d = SN_DATA.get("ding") or {}
        args = f"--corpus ding --valid-size {SN_DATA['valid_size']} --test-size {SN_DATA['test_size']}"
        for flag, key in (("--ding-path", "path"), ("--ding-url", "url"), ("--ding-sha256", "sha256")):
            if d.get(key):
                args += f" {flag} {shlex.quote(str(d[key]))}"
        return args
    f = SN_DATA["fairseq"]
    args = f"--corpus fairseq --src-lang {f['src_lang']} --tgt-lang {f['tgt_lang']}"
    for flag, key in (("--url", "url"), ("--sha256", "sha256")):
        if f.get(key):
            args += f" {flag} {shlex.quote(str(f[key]))}"
    return args


rule supernet_data:
    output:
        f"{SN_DIR}/corpus.json",
    params:
        args=_sn_data_args(),
    log:
        "results/logs/supernet/data.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{PY} moebench.cli.supernet.data --out {SN_DIR} {params.args} --progress off > {log} 2>&1"


rule supernet_spm:
    input:
        f"{SN_DIR}/corpus.json",
    output:
        f"{SN_DIR}/spm.model",
    params:
        prefix=f"{SN_DIR}/spm",
        vocab=SN_DATA["spm"]["vocab_size"],
        kind=SN_DATA["spm"].get("model_type", "unigram"),
    log:
        "results/logs/supernet/spm.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{PY} moebench.cli.supernet.spm --data-dir {SN_DIR} --vocab-size {params.vocab} "
        "--model-type {params.kind} --out {params.prefix} > {log} 2>&1"


rule supernet_train:
    input:
        [f"{SN_DIR}/corpus.json"] + ([SN_SPM] if SN_DING else []),
    output:
        "results/supernet/runs/{run}.json",
    wildcard_constraints:
        run=r"(hat|mos_layer|mos_neuron)(-e\d+)?-s\d+",
    log:
        "results/logs/supernet/train/{run}.log",
    threads: 1
    # before the scoring jobs: with 3 supernets on 2 cores the third starts as soon as a
    # core frees, and the scoring of the first two runs beside it
    priority: 30
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0 if SN_DEVICE == "cpu" else 1,
    shell:
        "{PY} moebench.cli.supernet.train --section {SN_SECTION} --run {wildcards.run} "
        "{SN_CORPUS_ARGS} --marker {output} --progress off > {log} 2>&1"


rule supernet_eval:
    input:
        "results/supernet/runs/{run}.json",
    output:
        "results/supernet/eval/{run}.json",
    wildcard_constraints:
        run=r"(hat|mos_layer|mos_neuron)(-e\d+)?-s\d+",
    params:
        n=SN["eval"]["sampled_archs"],
        seed=SN["eval"]["arch_seed"],
        ls=SN["train"]["label_smoothing"],
    log:
        "results/logs/supernet/eval/{run}.log",
    threads: 1
    resources:
        mem_mb=4000,
        gpu=0 if SN_DEVICE == "cpu" else 1,
    shell:
        "{PY} moebench.cli.supernet.bleu --marker {input} --standard {params.n} "
        "--arch-seed {params.seed} --eval {SN_EVAL} --label-smoothing {params.ls} "
        "{SN_CORPUS_ARGS} --device {SN_DEVICE} --threads {SN[threads]} --out {output} > {log} 2>&1"


# BLEU of any architecture (a YAML/JSON file with HAT's keys) of a trained supernet:
#   snakemake --cores 1 results/supernet/bleu/hat-s1/my_arch.json   (reads archs/my_arch.yaml)
rule supernet_bleu:
    input:
        marker="results/supernet/runs/{run}.json",
        arch="archs/{arch}.yaml",
    output:
        "results/supernet/bleu/{run}/{arch}.json",
    params:
        ls=SN["train"]["label_smoothing"],
    log:
        "results/logs/supernet/bleu/{run}/{arch}.log",
    threads: 1
    shell:
        "{PY} moebench.cli.supernet.bleu --marker {input.marker} --arch {input.arch} "
        "--eval {SN_EVAL} --label-smoothing {params.ls} {SN_CORPUS_ARGS} "
        "--device {SN_DEVICE} --threads {SN[threads]} --out {output} > {log} 2>&1"


rule supernet_tables:
    input:
        expand("results/supernet/eval/{run}.json", run=SN_RUNS),
    output:
        directory("results/supernet/tables"),
        STUDY_FIGURES["supernet"],
    log:
        "results/logs/supernet/tables.log",
    shell:
        "{PY} moebench.cli.supernet.tables --evals {input} --out-dir {output[0]} "
        "--figure-prefix results/figures/supernet_ > {log} 2>&1"


rule supernet_all:
    input:
        "results/supernet/tables",
        STUDY_FIGURES["supernet"],


# part 2 of the study (latency, predictor, evolutionary search, retraining)
if Path(workflow.basedir, "workflow/rules/supernet_search.smk").exists():

    include: "supernet_search.smk"
