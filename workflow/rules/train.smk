# Training: the plan lists every run; each job trains one batch of runs in one process.


rule plan:
    input:
        PARAM_FILES,
    output:
        PLAN,
    run:
        write_plan(BATCHES, RUNS_ROOT, DATA_PATHS, output[0])


rule train:
    input:
        data=lambda wc: DATA_PATHS[wc.dataset],
        plan=ancient(PLAN),
    output:
        f"{RUNS_ROOT}/{{dataset}}/{{algorithm}}/{{batch}}.done",
    params:
        runs=batch_run_ids,  # a change in a batch's runs re-runs just that batch
        device=SWEEP["device"],
        threads=SWEEP["threads"],
    wildcard_constraints:
        batch=r"b\d+",
    log:
        "results/logs/train/{dataset}/{algorithm}/{batch}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{PY} moebench.cli.train --plan {input.plan} "
        "--batch {wildcards.dataset}/{wildcards.algorithm}/{wildcards.batch} "
        "--marker {output} --device {params.device} --threads {params.threads} "
        "--progress off > {log} 2>&1"


rule train_all:
    input:
        [batch_marker(key) for key in BATCHES],
