# Figures (PNG + PDF + the CSV each is drawn from), attention maps and the ours-vs-paper
# table. PNGs and the comparison CSV go into `snakemake --report results/report.html`.
import shlex

FIG = "results/figures"
FIG_SEL = config["report"]["figures_selection"]
FIG_DATASETS = list(SWEEP["datasets"])
FIG_KINDS = {"accuracy": "Accuracy per test domain", "curves": "Accuracy vs step",
             "expert_load": "Expert load"}


def fig_stem(kind, dataset):
    return f"{FIG}/curves_{dataset}" if kind == "curves" else f"{FIG}/{kind}_{FIG_SEL}_{dataset}"


def fig_png(kind, dataset):
    return report(fig_stem(kind, dataset) + ".png", caption=f"../../report/{kind}.rst",
                  category="Figures", subcategory=FIG_KINDS[kind],
                  labels={"figure": FIG_KINDS[kind], "dataset": dataset})


def attention_run(entry):
    """(batch key, run) drawn for {dataset, algorithm}: test env 0 alone, first trial seed,
    hparams seed 0."""
    want = (entry["dataset"], entry["algorithm"], (0,), SWEEP["trial_seeds"][0], 0)
    for key, runs in BATCHES.items():
        for run in runs:
            if (run.dataset, run.algorithm, tuple(run.test_envs), run.trial_seed,
                    run.hparams_seed) == want:
                return key, run
    _fail(f"report.attention: the sweep has no {entry['algorithm']} run on "
          f"{entry['dataset']} with test env 0 alone")


# entries for datasets or algorithms outside this sweep are skipped (paper configs set theirs)
ATTENTION = {f"{a['dataset']}/{a['algorithm']}": attention_run(a)
             for a in config["report"]["attention"]
             if a["dataset"] in SWEEP["datasets"] and a["algorithm"] in SWEEP["algorithms"]}
SAVE_MODEL_BATCHES = {key for key, _ in ATTENTION.values()}


rule dg_figures:
    input:
        f"{DG}/records.jsonl",
    output:
        png=[fig_png(kind, ds) for kind in FIG_KINDS for ds in FIG_DATASETS],
        bubble=report(f"{FIG}/bubble_{FIG_SEL}.png", caption="../../report/bubble.rst",
                      category="Figures", subcategory="Accuracy vs cost",
                      labels={"figure": "Accuracy vs step time and memory", "dataset": "all"}),
        other=[f"{fig_stem(kind, ds)}.{ext}" for kind in FIG_KINDS for ds in FIG_DATASETS
               for ext in ("pdf", "csv")]
        + [f"{FIG}/bubble_{FIG_SEL}.{ext}" for ext in ("pdf", "csv")],
    params:
        order=" ".join(ALGORITHM_ORDER),
    log:
        "results/logs/dg/figures.log",
    shell:
        "{PY} moebench.cli.dg.figures --records {input} --out {FIG} --selection {FIG_SEL} "
        "--algorithm-order {params.order} > {log} 2>&1"


rule dg_attention:
    input:
        marker=lambda wc: batch_marker(ATTENTION[f"{wc.dataset}/{wc.algorithm}"][0]),
        data=lambda wc: DATA_PATHS[wc.dataset],
    output:
        png=report(FIG + "/attention_{dataset}_{algorithm}.png",
                   caption="../../report/attention.rst", category="Figures",
                   subcategory="Attention maps",
                   labels={"figure": "Attention maps", "dataset": "{dataset}",
                           "algorithm": "{algorithm}"}),
        pdf=FIG + "/attention_{dataset}_{algorithm}.pdf",
        csv=FIG + "/attention_{dataset}_{algorithm}.csv",
    params:
        model=lambda wc: ATTENTION[f"{wc.dataset}/{wc.algorithm}"][1].run_dir(RUNS_ROOT) / "model.pt",
    wildcard_constraints:
        dataset="|".join(FIG_DATASETS),
        algorithm="|".join(SWEEP["algorithms"]),
    log:
        "results/logs/dg/attention_{dataset}_{algorithm}.log",
    shell:
        "{PY} moebench.cli.dg.figures --model {params.model} --data {input.data} --out {FIG} "
        "> {log} 2>&1"


rule dg_paper_table:
    input:
        records=f"{DG}/records.jsonl",
        paper=config["report"]["paper_numbers"],
    output:
        csv=report(f"{DG}/paper/ours_vs_paper.csv", caption="../../report/paper.rst",
                   category="Tables", labels={"table": "ours vs paper"}),
        md=f"{DG}/paper/ours_vs_paper.md",
        tex=f"{DG}/paper/ours_vs_paper.tex",
    params:
        # records carry no sweep name yet: a sweep named *reduced* marks every row of ours
        reduced=(f"--reduced-label {shlex.quote(SWEEP['name'])}"
                 if "reduced" in SWEEP["name"].lower() else ""),
    log:
        "results/logs/dg/paper_table.log",
    shell:
        "{PY} moebench.cli.dg.compare --records {input.records} --paper {input.paper} "
        "--out {DG}/paper --quiet {params.reduced} > {log} 2>&1"


rule dg_figures_all:
    input:
        rules.dg_figures.output,
        [f"{FIG}/attention_{key.replace('/', '_')}.png" for key in ATTENTION],
        rules.dg_paper_table.output,


# what the final `results/tables` rule (workflow/rules/report.smk) gathers from this study
STUDY_TABLES["dg"] = [f"{DG}/tables", *rules.dg_paper_table.output]
STUDY_FIGURES["dg"] = list(rules.dg_figures_all.input)
STUDY_TARGETS["data"]["dg"] = list(rules.dg_data_all.input)
STUDY_TARGETS["train"]["dg"] = list(rules.dg_train_all.input)
