# The supernet study, part 2: hardware-aware search (HAT / Mixture-of-Supernets).
#   latency dataset (random subnets timed on this machine) -> latency predictor ->
#   evolutionary search per trained supernet x latency limit (+ evolution vs random) ->
#   gold check of the found subnets -> retraining (inherited | scratch) and BLEU ->
#   gold latency of the final models -> search tables + figures.
# Every gold-latency job (dataset, check, final) takes all of the workflow's cores, so no
# other job of the workflow runs while latency is timed.
# Included at the end of workflow/rules/supernet.smk (needs its SN, SN_RUNS, SN_CORPUS_ARGS,
# SN_SPM, SN_DIR, SN_DEVICE, SN_DING). Params: supernet.{space, latency, predictor, search,
# retrain} (params/supernet/search.yaml), checked here before any job starts.
import json as _sns_json
import shlex as _sns_shlex

from moebench.errors import MoebenchError as _SNSError
from moebench.supernet import search_params as SNS_PARAMS
from moebench.supernet import train_params as _SNS_TP

try:
    SNS = SNS_PARAMS.check_search_params(SN)
except (_SNSError, ValueError) as exc:
    fail(exc)


def _sns_q(obj):
    return _sns_shlex.quote(_sns_json.dumps(obj, sort_keys=True, separators=(",", ":")))


_SNS_SEARCH = SNS["search"]
_SNS_SEED = SN["model"]["seeds"][0]
# the searched supernets: one run per variant of supernet.search.variants (first seed, each
# number of experts of the MoS variants)
SNS_RUNS = [k.name for k in _SNS_TP.run_grid(SN)
            if k.variant in _SNS_SEARCH["variants"] and k.seed == _SNS_SEED]
if not SNS_RUNS:
    fail(f"supernet.search.variants: {_SNS_SEARCH['variants']} has no trained supernet in "
         f"supernet.model.variants {SN['model']['variants']} (seed {_SNS_SEED})")
SNS_LIMITS = _SNS_SEARCH["limit_names"]
SNS_MODES = SNS["retrain"]["modes"]
_SNS_CMP = _SNS_SEARCH["compare"]
SNS_COMPARE_RUN = None if _SNS_CMP is None else next(
    (r for r in SNS_RUNS if _SNS_TP.parse_run_name(r).variant == _SNS_CMP["variant"]), None)
SNS_LAT = "results/supernet/latency"
SNS_TABLES = "results/supernet/search_tables"
SNS_FIGURES = [f"results/figures/supernet_{n}.{e}" for n in ("frontier", "predictor")
               for e in ("png", "pdf", "csv")]
_SNS_LAT_DEVICE = SNS["latency"]["device"]
# search params without the published numbers and the task label (editing those re-runs only
# the tables)
_SNS_SEARCH_ARG = _sns_q({k: v for k, v in SN["search"].items() if k not in ("published", "task")})
_SNS_CORPUS_INPUT = [f"{SN_DIR}/corpus.json"] + ([SN_SPM] if SN_DING else [])

localrules: supernet_search_tables, supernet_search_all


rule supernet_latency_dataset:
    input:
        _SNS_CORPUS_INPUT,
    output:
        csv=f"{SNS_LAT}/dataset.csv",
        summary=f"{SNS_LAT}/summary.json",
    params:
        space=_sns_q(SN["space"]),
        latency=_sns_q(SN["latency"]),
        work=f"{SNS_LAT}/dataset.partial.csv",  # kept across kills: measuring resumes there
    log:
        "results/logs/supernet/latency_dataset.log",
    benchmark:
        "results/benchmarks/supernet/latency_dataset.tsv"
    # all of the workflow's cores: no other job of this workflow runs while latency is timed
    # (the measurement itself uses supernet.latency.measure.threads); first when it can, while
    # both cores are still free (it needs only the corpus)
    threads: workflow.cores
    priority: 50
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=1 if _SNS_LAT_DEVICE == "cuda" else 0,
    shell:
        "{PY} moebench.cli.supernet.latency dataset --space {params.space} "
        "--latency {params.latency} "
        "{SN_CORPUS_ARGS} --work {params.work} --out {output.csv} --summary {output.summary} "
        "> {log} 2>&1"


rule supernet_predictor:
    input:
        f"{SNS_LAT}/dataset.csv",
    output:
        model=f"{SNS_LAT}/predictor.pt",
        report=f"{SNS_LAT}/predictor.json",
        predictions=f"{SNS_LAT}/predictions.csv",
    params:
        space=_sns_q(SN["space"]),
        predictor=_sns_q(SN["predictor"]),
    log:
        "results/logs/supernet/predictor.log",
    benchmark:
        "results/benchmarks/supernet/predictor.tsv"
    threads: 1
    priority: 50  # ready before the first supernet is trained, so its search can start then
    resources:
        mem_mb=2000,
    shell:
        "{PY} moebench.cli.supernet.predictor --space {params.space} "
        "--predictor {params.predictor} --dataset {input} --model {output.model} "
        "--report {output.report} --predictions {output.predictions} > {log} 2>&1"


_SNS_SEARCH_INPUT = dict(
    marker="results/supernet/runs/{run}.json",
    predictor=f"{SNS_LAT}/predictor.pt",
    dataset=f"{SNS_LAT}/dataset.csv",
    summary=f"{SNS_LAT}/summary.json",
    corpus=_SNS_CORPUS_INPUT,
)
_SNS_SEARCH_CMD = (
    "{PY} moebench.cli.supernet.search --run {wildcards.run} --marker {input.marker} "
    "--space {params.space} --search {params.search} --predictor {input.predictor} "
    "--latency-dataset {input.dataset} --latency-summary {input.summary} "
    f"--latency-device {_SNS_LAT_DEVICE} {SN_CORPUS_ARGS} --device {SN_DEVICE} "
    "--threads {SN[threads]} --state-dir results/supernet/search_state/{wildcards.run} ")


rule supernet_search:
    input:
        **_SNS_SEARCH_INPUT,
    output:
        [f"results/supernet/search_raw/{{run}}/{lim}.json" for lim in SNS_LIMITS],
    wildcard_constraints:
        run=r"(hat|mos_layer|mos_neuron)(-e\d+)?-s\d+",
    params:
        space=_sns_q(SN["space"]),
        search=_SNS_SEARCH_ARG,
    log:
        "results/logs/supernet/search/{run}.log",
    benchmark:
        "results/benchmarks/supernet/search_{run}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0 if SN_DEVICE == "cpu" else 1,
    shell:
        _SNS_SEARCH_CMD + "--out-dir results/supernet/search_raw/{wildcards.run} > {log} 2>&1"


# evolution vs random search on the compare run, a job of its own: it runs beside the per-run
# searches (on another core) instead of delaying that run's search results, so the gold check
# and the retraining start as soon as the searches are done
if SNS_COMPARE_RUN is not None:

    rule supernet_search_compare:
        input:
            **{k: (v.format(run=SNS_COMPARE_RUN) if isinstance(v, str) else v)
               for k, v in _SNS_SEARCH_INPUT.items()},
        output:
            compare=f"results/supernet/search/compare/{SNS_COMPARE_RUN}.json",
        params:
            space=_sns_q(SN["space"]),
            search=_SNS_SEARCH_ARG,
            run=SNS_COMPARE_RUN,
        log:
            f"results/logs/supernet/search/compare_{SNS_COMPARE_RUN}.log",
        benchmark:
            f"results/benchmarks/supernet/search_compare_{SNS_COMPARE_RUN}.tsv"
        threads: 1
        priority: 40  # the longest search job: first
        resources:
            mem_mb=4000,
            runtime=120,
            gpu=0 if SN_DEVICE == "cpu" else 1,
        shell:
            _SNS_SEARCH_CMD.replace("{wildcards.run}", "{params.run}")
            + "--only-compare --compare-out {output.compare} > {log} 2>&1"


rule supernet_gold_check:
    input:
        found=expand("results/supernet/search_raw/{run}/{limit}.json", run=SNS_RUNS,
                     limit=SNS_LIMITS),
        summary=f"{SNS_LAT}/summary.json",
    output:
        expand("results/supernet/search/{run}/{limit}.json", run=SNS_RUNS, limit=SNS_LIMITS),
    params:
        space=_sns_q(SN["space"]),
    log:
        "results/logs/supernet/gold_check.log",
    benchmark:
        "results/benchmarks/supernet/gold_check.tsv"
    threads: workflow.cores
    resources:
        mem_mb=2000,
        gpu=1 if _SNS_LAT_DEVICE == "cuda" else 0,
    shell:
        "{PY} moebench.cli.supernet.latency check --found {input.found} --space {params.space} "
        f"--summary {{input.summary}} --latency-device {_SNS_LAT_DEVICE} "
        "--out-root results/supernet/search > {log} 2>&1"


rule supernet_retrain:
    input:
        _SNS_CORPUS_INPUT,
        marker="results/supernet/runs/{run}.json",
        found=[f"results/supernet/search/{{run}}/{lim}.json" for lim in SNS_LIMITS],
    output:
        # one job per supernet run: every mode of supernet.retrain.modes (inherited | scratch)
        # (one job per run and mode was measured no faster: 6 process start-ups instead of 3)
        [f"results/supernet/retrain/{{run}}/{mode}.json" for mode in SNS_MODES],
    wildcard_constraints:
        run=r"(hat|mos_layer|mos_neuron)(-e\d+)?-s\d+",
    params:
        retrain=_sns_q(SN["retrain"]),
        train=_sns_q(SN["train"]),
        # the test sentences BLEU is computed on: supernet.retrain.test_sentences if set
        eval=_sns_q({**SN["eval"], **({"test_sentences": SNS["retrain"]["test_sentences"]}
                                      if SNS["retrain"]["test_sentences"] else {})}),
        limits=",".join(SNS_LIMITS),
        modes=",".join(SNS_MODES),
        max_len=SN["data"]["max_len"],
        valid=(f"--valid-sentences {_SNS_SEARCH['fitness']['valid_sentences']}"
               if _SNS_SEARCH["fitness"]["valid_sentences"] else ""),
    log:
        "results/logs/supernet/retrain/{run}.log",
    benchmark:
        "results/benchmarks/supernet/retrain_{run}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0 if SN_DEVICE == "cpu" else 1,
    shell:
        "{PY} moebench.cli.supernet.retrain --run {wildcards.run} --modes {params.modes} "
        "--marker {input.marker} --search-dir results/supernet/search/{wildcards.run} "
        "--limits {params.limits} --retrain {params.retrain} --train {params.train} "
        f"--eval {{params.eval}} {SN_CORPUS_ARGS} --max-len {{params.max_len}} {{params.valid}} "
        "--device {SN_DEVICE} --threads {SN[threads]} "
        "--state-dir results/supernet/retrain_runs/{wildcards.run} "
        "--out-dir results/supernet/retrain/{wildcards.run} > {log} 2>&1"


rule supernet_final_latency:
    input:
        retrain=expand("results/supernet/retrain/{run}/{mode}.json", run=SNS_RUNS,
                       mode=SNS_MODES),
        summary=f"{SNS_LAT}/summary.json",
    output:
        f"{SNS_LAT}/final.json",
    log:
        "results/logs/supernet/final_latency.log",
    benchmark:
        "results/benchmarks/supernet/final_latency.tsv"
    threads: workflow.cores
    resources:
        mem_mb=2000,
        gpu=1 if _SNS_LAT_DEVICE == "cuda" else 0,
    shell:
        "{PY} moebench.cli.supernet.latency final --retrain {input.retrain} "
        f"--summary {{input.summary}} --latency-device {_SNS_LAT_DEVICE} "
        "--out {output} > {log} 2>&1"


_SNS_COMPARE_FILE = [] if SNS_COMPARE_RUN is None else [
    f"results/supernet/search/compare/{SNS_COMPARE_RUN}.json"]


rule supernet_search_tables:
    input:
        search=expand("results/supernet/search/{run}/{limit}.json", run=SNS_RUNS,
                      limit=SNS_LIMITS),
        retrain=expand("results/supernet/retrain/{run}/{mode}.json", run=SNS_RUNS,
                       mode=SNS_MODES),
        latency=[f"{SNS_LAT}/summary.json", f"{SNS_LAT}/predictor.json",
                 f"{SNS_LAT}/predictions.csv"] + ([f"{SNS_LAT}/final.json"] if SNS_MODES else []),
        compare=_SNS_COMPARE_FILE,
    output:
        directory(SNS_TABLES),
        SNS_FIGURES,
    params:
        runs=",".join(SNS_RUNS),
        limits=",".join(SNS_LIMITS),
        modes=",".join(SNS_MODES),
        published=_sns_q(SN["search"].get("published", {})),
        task=_sns_shlex.quote(_SNS_SEARCH["task"]),
        compare=f"--compare {_SNS_COMPARE_FILE[0]}" if _SNS_COMPARE_FILE else "",
    log:
        "results/logs/supernet/search_tables.log",
    shell:
        "{PY} moebench.cli.supernet.search_tables --runs {params.runs} "
        "--limits {params.limits} --modes {params.modes} "
        "--search-root results/supernet/search --retrain-root results/supernet/retrain "
        f"--latency-dir {SNS_LAT} {{params.compare}} --published {{params.published}} "
        "--task {params.task} --tables-dir {output[0]} --figures-dir results/figures "
        "> {log} 2>&1"


rule supernet_search_all:
    input:
        SNS_TABLES,
        SNS_FIGURES,


# registered for the final results/tables rule and DVC's search stage
_sns_tables = STUDY_TABLES["supernet"]
STUDY_TABLES["supernet"] = ([_sns_tables] if isinstance(_sns_tables, str) else list(_sns_tables)
                            ) + [SNS_TABLES]
STUDY_FIGURES["supernet"] = list(STUDY_FIGURES["supernet"]) + SNS_FIGURES
# DVC's search stage ends with what the search tables read (tables and figures: report stage)
STUDY_TARGETS["search"]["supernet"] = list(rules.supernet_search_tables.input)
