# Records -> model selection -> tables (text, LaTeX, CSV, markdown, summary.json).


rule dg_collect:
    input:
        markers=[batch_marker(key) for key in BATCHES],
        plan=PLAN,
    output:
        f"{DG}/records.jsonl",
    log:
        "results/logs/dg/collect.log",
    shell:
        "{PY} moebench.cli.dg.collect --plan {input.plan} --out {output} > {log} 2>&1"


rule dg_tables:
    input:
        f"{DG}/records.jsonl",
    output:
        directory(f"{DG}/tables"),
    params:
        order=" ".join(ALGORITHM_ORDER),
    log:
        "results/logs/dg/tables.log",
    shell:
        "{PY} moebench.cli.dg.tables --records {input} --out {output} "
        "--algorithm-order {params.order} > {log} 2>&1"
