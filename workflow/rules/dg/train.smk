# Training: the plan lists every run; each job trains one batch of runs in one process.
# Run directories are named by a hash of the run's identity and a run with a `done` marker is
# skipped, so when params change and the batches re-run, only new or changed runs train.


rule dg_plan:
    input:
        DG_PARAM_FILES,
    output:
        PLAN,
    run:
        dg_sweep.write_plan(BATCHES, RUNS_ROOT, DATA_PATHS, output[0], PLUGINS)


rule dg_train:
    input:
        data=lambda wc: DATA_PATHS[wc.dataset],
        plan=PLAN,
    output:
        f"{RUNS_ROOT}/{{dataset}}/{{algorithm}}/{{batch}}.done",
    params:
        runs=batch_run_ids,
        device=SWEEP["device"],
        threads=SWEEP["threads"],
        jobs_per_gpu=SWEEP["jobs_per_gpu"],
        moe_backend=SWEEP["moe_backend"],
        loader_workers=SWEEP["loader_workers"],
        eval_batch_size=SWEEP["eval_batch_size"],
        # keep model.pt of the batches holding a run drawn as attention maps (report.smk)
        save=lambda wc: "--save-model" if f"{wc.dataset}/{wc.algorithm}/{wc.batch}" in SAVE_MODEL_BATCHES else "",
    wildcard_constraints:
        batch=r"b\d+",
    log:
        "results/logs/dg/train/{dataset}/{algorithm}/{batch}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        # local: `--resources gpu=N` caps concurrent GPU jobs at N (N = GPUs x jobs_per_gpu);
        # Slurm: sbatch --gpus=1. Each job then claims its own device (moebench.gpu).
        gpu=0 if SWEEP["device"] == "cpu" else 1,
    shell:
        "{PY} moebench.cli.dg.train --plan {input.plan} "
        "--batch {wildcards.dataset}/{wildcards.algorithm}/{wildcards.batch} "
        "--marker {output} --device {params.device} --threads {params.threads} "
        "--jobs-per-gpu {params.jobs_per_gpu} --moe-backend {params.moe_backend} "
        "--loader-workers {params.loader_workers} --eval-batch-size {params.eval_batch_size} "
        "--progress off {params.save} > {log} 2>&1"


rule dg_train_all:
    input:
        [batch_marker(key) for key in BATCHES],
