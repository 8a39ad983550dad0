# Every study's tables in one folder: results/tables/ (what `snakemake results/tables`
# builds), with the compact DVC metrics of each study under results/tables/metrics/.
# It depends on every study's figures too, so the one target builds the whole product.


def _listed(value):
    return [value] if isinstance(value, str) else list(value)


rule tables:
    input:
        tables=[p for study in STUDIES for p in _listed(STUDY_TABLES[study])],
        figures=[f for study in STUDIES for f in _listed(STUDY_FIGURES.get(study, []))],
    output:
        directory("results/tables"),
    log:
        "results/logs/tables.log",
    shell:
        "{PY} moebench.cli.assemble --sources {input.tables} --out {output} > {log} 2>&1"


# the coarse stages DVC runs (dvc.yaml): every study's data, training, supernet search
rule data_all:
    input:
        [f for study in STUDIES for f in STUDY_TARGETS["data"].get(study, [])],


rule train_all:
    input:
        [f for study in STUDIES for f in STUDY_TARGETS["train"].get(study, [])],


rule search_all:
    input:
        [f for study in STUDIES for f in STUDY_TARGETS["search"].get(study, [])],


localrules: tables, data_all, train_all, search_all
