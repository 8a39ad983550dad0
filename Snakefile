# moebench workflow: dataset -> train -> collect -> tables -> figures and ours-vs-paper.
# Run: snakemake --cores 2 results/tables    (params/*.yaml; override with --configfile)
configfile: "params/sweep.yaml"
configfile: "params/datasets.yaml"
configfile: "params/hparams.yaml"
configfile: "params/report.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/tables",
        rules.figures_all.input,
