# One rule per dataset of the sweep: build (or download) it under data/.
import json
import shlex

from moebench.dg.study import FOLDER_DATASETS


def build_flags(dataset):
    build = config["datasets"][dataset].get("build") or {}
    return " ".join(shlex.quote(f"--param={k}={json.dumps(v)}") for k, v in sorted(build.items()))


def data_output(dataset):
    # DomainBed image sets are folders: directory() makes Snakemake treat (and, on a forced
    # re-run, delete) the folder as one output; a path that is a symlink (build param
    # existing_dir) is only unlinked, never emptied.
    path = config["datasets"][dataset]["path"]
    return directory(path) if dataset in FOLDER_DATASETS else path


for _ds in SWEEP["datasets"]:

    rule:
        name:
            f"dg_data_{_ds}"
        output:
            data_output(_ds),
        params:
            dataset=_ds,
            build=build_flags(_ds),
        log:
            f"results/logs/dg/data/{_ds}.log",
        shell:
            "{PY} moebench.cli.dg.data --dataset {params.dataset} --out {output} "
            "{params.build} > {log} 2>&1"


rule dg_data_all:
    input:
        list(DATA_PATHS.values()),
