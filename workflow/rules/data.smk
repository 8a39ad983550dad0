# One rule per dataset of the sweep: build (or download) it under data/.
import json

for _ds in SWEEP["datasets"]:

    rule:
        name:
            f"data_{_ds}"
        output:
            config["datasets"][_ds]["path"],
        params:
            dataset=_ds,
            build=json.dumps(config["datasets"][_ds].get("build") or {}, sort_keys=True),
        log:
            f"results/logs/data/{_ds}.log",
        shell:
            "{PY} moebench.cli.data --dataset {params.dataset} --out {output} "
            "--params '{params.build}' > {log} 2>&1"


rule data_all:
    input:
        list(DATA_PATHS.values()),
