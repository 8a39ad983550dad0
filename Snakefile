# moebench workflow: every study's data -> train -> collect -> tables and figures.
# Run: snakemake --cores 2 results/tables    (params/*.yaml; override with --configfile)
# Studies (params/studies.yaml): dg = DomainBed (GMoE, MASS, MoDE, Soft-MoE, ERM);
# glue = MASS on BERT vs dense and GMoE-style MoE; supernet = HAT / Mixture-of-Supernets
# machine translation (supernet training, latency, predictor, evolutionary search, retraining).
configfile: "params/studies.yaml"
configfile: "params/dg/sweep.yaml"
configfile: "params/dg/datasets.yaml"
configfile: "params/dg/hparams.yaml"
configfile: "params/report.yaml"
configfile: "params/glue/glue.yaml"
configfile: "params/supernet/search.yaml"
configfile: "params/supernet/supernet.yaml"


include: "workflow/rules/common.smk"


for _study in STUDIES:

    include: f"workflow/rules/{_study}.smk"


include: "workflow/rules/report.smk"


rule all:
    input:
        "results/tables",
