# One rule per dataset of the sweep: build (or download) it under data/.
import json
import shlex


def build_flags(dataset):
    build = config["datasets"][dataset].get("build") or {}
    return " ".join(shlex.quote(f"--param={k}={json.dumps(v)}") for k, v in sorted(build.items()))


for _ds in SWEEP["datasets"]:

    rule:
        name:
            f"data_{_ds}"
        output:
            config["datasets"][_ds]["path"],
        params:
            dataset=_ds,
            build=build_flags(_ds),
        log:
            f"results/logs/data/{_ds}.log",
        shell:
            "{PY} moebench.cli.data --dataset {params.dataset} --out {output} "
            "{params.build} > {log} 2>&1"


rule data_all:
    input:
        list(DATA_PATHS.values()),
